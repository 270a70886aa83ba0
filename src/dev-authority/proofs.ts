/**
 * What the authority verifies from clients: DPoP proofs at the token endpoint (RFC 9449 section
 * 4.3) and `private_key_jwt` client assertions (RFC 7523 section 3, OIDC Core section 9) against
 * keys registered per client. Failures throw ProofError with a generic message; the cause stays
 * out of responses and logs.
 */
import { createPublicKey, type JsonWebKeyInput, type KeyObject } from 'node:crypto';
import {
  calculateJwkThumbprint,
  decodeJwt,
  decodeProtectedHeader,
  EmbeddedJWK,
  jwtVerify,
  type JSONWebKeySet,
  type JWK,
} from 'jose';
import { LRUCache } from 'lru-cache';

/** Asymmetric algorithms only: never `none`, never HMAC with a public key. */
export const ASYMMETRIC_ALGS = ['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512'];

export class ProofError extends Error {
  override readonly name = 'ProofError';
}

/** Single-use ids (proof and assertion `jti`s), bounded, each kept until it could no longer verify. */
export class ReplayCache {
  private readonly seen = new LRUCache<string, true>({ max: 100_000, ttlAutopurge: false });

  /** True on first use. */
  claim(key: string, ttlSeconds: number): boolean {
    if (this.seen.has(key)) return false;
    this.seen.set(key, true, { ttl: Math.max(1, ttlSeconds) * 1000 });
    return true;
  }
}

/** Scheme and host lowercased, default port dropped, no query or fragment (RFC 9449 section 4.3). */
export function normalizeHtu(url: string): string | undefined {
  if (!URL.canParse(url)) return undefined;
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname}`;
}

export interface DpopCheck {
  readonly htm: string;
  readonly htu: string;
  readonly now: () => number;
  readonly maxAgeSeconds: number;
  readonly skewSeconds: number;
  readonly replay: ReplayCache;
}

/** Verifies a DPoP proof for a token request; returns the thumbprint of its key. */
export async function verifyDpopProof(proof: string, check: DpopCheck): Promise<string> {
  let header: { jwk?: JWK };
  let payload: Record<string, unknown>;
  try {
    const r = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ASYMMETRIC_ALGS });
    header = r.protectedHeader as { jwk?: JWK };
    payload = r.payload;
  } catch (cause) {
    throw new ProofError('invalid DPoP proof', { cause });
  }
  const jwk = header.jwk;
  if (jwk === undefined || 'd' in jwk || 'p' in jwk || 'k' in jwk) throw new ProofError('DPoP proof key must be public');
  const { htm, htu, iat, jti } = payload;
  if (htm !== check.htm) throw new ProofError('DPoP proof htm mismatch');
  if (typeof htu !== 'string' || normalizeHtu(htu) !== normalizeHtu(check.htu)) throw new ProofError('DPoP proof htu mismatch');
  const nowS = Math.floor(check.now() / 1000);
  if (typeof iat !== 'number' || iat > nowS + check.skewSeconds || iat < nowS - check.maxAgeSeconds - check.skewSeconds) {
    throw new ProofError('DPoP proof iat out of range');
  }
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > 256) throw new ProofError('DPoP proof jti missing');
  const jkt = await calculateJwkThumbprint(jwk, 'sha256');
  if (!check.replay.claim(`dpop:${jkt}:${jti}`, check.maxAgeSeconds + 2 * check.skewSeconds)) {
    throw new ProofError('DPoP proof replayed');
  }
  return jkt;
}

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

export interface RegisteredClient {
  readonly clientId: string;
  readonly keys: readonly { readonly kid: string | undefined; readonly key: KeyObject }[];
  /** When set, the Mission Status audiences this client may ask about; others answer 404. */
  readonly audiences: ReadonlySet<string> | null;
}

/**
 * The public half of a JWK (a private JWK is accepted for convenience: the demo can hand the same
 * key file to the gateway and to the authority). Symmetric keys are refused.
 */
function publicKeyOf(jwk: JWK): { kid: string | undefined; key: KeyObject } {
  if (jwk.kty === 'oct' || jwk.kty === undefined) throw new ProofError('client keys must be asymmetric');
  let key: KeyObject;
  try {
    key = createPublicKey({ key: jwk as JsonWebKeyInput['key'], format: 'jwk' });
  } catch (cause) {
    throw new ProofError('client key cannot be imported', { cause });
  }
  return { kid: typeof jwk.kid === 'string' ? jwk.kid : undefined, key };
}

export class ClientRegistry {
  private readonly clients = new Map<string, RegisteredClient>();

  /** Registers (or replaces) a client's key(s): a JWK or a JWKS. */
  register(clientId: string, keys: JWK | JSONWebKeySet, audiences?: readonly string[]): void {
    if (clientId.length === 0) throw new ProofError('client_id must be a non-empty string');
    const list = 'keys' in keys && Array.isArray(keys.keys) ? keys.keys : [keys as JWK];
    if (list.length === 0) throw new ProofError('no keys');
    this.clients.set(clientId, {
      clientId,
      keys: list.map(publicKeyOf),
      audiences: audiences === undefined ? null : new Set(audiences),
    });
  }

  get(clientId: string): RegisteredClient | undefined {
    return this.clients.get(clientId);
  }

  /**
   * Verifies a private_key_jwt assertion: signed by the client's registered key, iss = sub =
   * client_id, `aud` naming one of `audiences`, exp in the future, jti single use.
   */
  async verifyAssertion(assertion: string, audiences: readonly string[], now: () => number, replay: ReplayCache, claimedClientId?: string): Promise<RegisteredClient> {
    let iss: unknown;
    try {
      iss = decodeJwt(assertion).iss;
    } catch (cause) {
      throw new ProofError('client assertion does not parse', { cause });
    }
    if (typeof iss !== 'string') throw new ProofError('client assertion has no iss');
    if (claimedClientId !== undefined && claimedClientId !== iss) throw new ProofError('client_id mismatch');
    const client = this.clients.get(iss);
    if (client === undefined) throw new ProofError('unknown client');
    let kid: unknown;
    try {
      kid = decodeProtectedHeader(assertion).kid;
    } catch (cause) {
      throw new ProofError('client assertion does not parse', { cause });
    }
    // A registered key without kid matches any assertion kid (and the reverse): dev keys often lack one.
    const candidates = client.keys.filter((k) => k.kid === undefined || kid === undefined || k.kid === kid);
    let payload: Record<string, unknown> | undefined;
    let cause: unknown;
    for (const { key } of candidates) {
      try {
        payload = (await jwtVerify(assertion, key, {
          algorithms: ASYMMETRIC_ALGS,
          issuer: iss,
          subject: iss,
          audience: [...audiences],
          requiredClaims: ['exp', 'jti'],
          currentDate: new Date(now()),
          clockTolerance: 5,
        })).payload;
        break;
      } catch (e) {
        cause = e;
      }
    }
    if (payload === undefined) throw new ProofError('client assertion does not verify', { cause });
    const exp = payload['exp'] as number;
    const jti = payload['jti'];
    if (typeof jti !== 'string' || jti.length === 0) throw new ProofError('client assertion jti missing');
    const ttl = exp - Math.floor(now() / 1000) + 5;
    if (!replay.claim(`pkjwt:${iss}:${jti}`, ttl)) throw new ProofError('client assertion replayed');
    return client;
  }
}
