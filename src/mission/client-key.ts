/**
 * The gateway's own client key for `private_key_jwt` at Mission Status endpoints (RFC 7523 section
 * 2.2). `mission.client.private_key_file` holds a private JWK (JSON) or a PKCS#8 PEM; the signing
 * algorithm follows from the key (a JWK's own `alg` wins). Loaded once, at construction.
 */
import { createPrivateKey, randomUUID, type JsonWebKeyInput, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SignJWT } from 'jose';

export interface ClientKey {
  readonly key: KeyObject;
  readonly alg: string;
  readonly kid: string | undefined;
}

const CURVE_ALGS: Readonly<Record<string, string>> = { prime256v1: 'ES256', 'P-256': 'ES256', secp384r1: 'ES384', 'P-384': 'ES384', secp521r1: 'ES512', 'P-521': 'ES512' };

function algFor(key: KeyObject): string {
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const alg = CURVE_ALGS[key.asymmetricKeyDetails?.namedCurve ?? ''];
      if (alg !== undefined) return alg;
      break;
    }
    case 'ed25519':
      return 'EdDSA';
    case 'rsa':
    case 'rsa-pss':
      // jose refuses RSA keys under 2048 bits when it signs.
      if ((key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) throw new Error('client RSA key is shorter than 2048 bits');
      return key.asymmetricKeyType === 'rsa' ? 'RS256' : 'PS256';
  }
  throw new Error('unsupported client key type (use EC P-256/384/521, Ed25519 or RSA)');
}

const RSA_ALGS: ReadonlySet<string> = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']);

/** Parses key file text. Throws a secret-free Error when it is neither a private JWK nor a PKCS#8 PEM. */
export function parseClientKey(text: string): ClientKey {
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) {
    let jwk: Record<string, unknown>;
    try {
      jwk = JSON.parse(trimmed) as Record<string, unknown>;
    } catch {
      throw new Error('client key file is not valid JSON');
    }
    if (typeof jwk['d'] !== 'string') throw new Error('client key JWK is not a private key');
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: jwk, format: 'jwk' } as JsonWebKeyInput);
    } catch {
      throw new Error('client key JWK cannot be imported');
    }
    const own = algFor(key);
    const alg = typeof jwk['alg'] === 'string' ? jwk['alg'] : own;
    // Ed25519 is RFC 9864's fully-specified name for what EdDSA names here (r21a 4).
    if (!(alg === own || (own === 'RS256' && RSA_ALGS.has(alg)) || (own === 'PS256' && alg.startsWith('PS') && RSA_ALGS.has(alg)) || (own === 'EdDSA' && alg === 'Ed25519' && key.asymmetricKeyType === 'ed25519'))) {
      throw new Error(`client key JWK "alg" ${JSON.stringify(alg).slice(0, 40)} cannot be used with this key (${own} can)`);
    }
    return { key, alg, kid: typeof jwk['kid'] === 'string' ? jwk['kid'] : undefined };
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: trimmed, format: 'pem' });
  } catch {
    throw new Error('client key file is neither a private JWK nor a PKCS#8 PEM');
  }
  return { key, alg: algFor(key), kid: undefined };
}

export function loadClientKey(file: string): ClientKey {
  return parseClientKey(readFileSync(file, 'utf8'));
}

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** Short: the assertion is used once, right away. */
const ASSERTION_TTL_S = 60;

/** iss = sub = client_id, aud = the endpoint URL, fresh jti. */
export function clientAssertion(key: ClientKey, clientId: string, audience: string, nowMs: number): Promise<string> {
  const iat = Math.floor(nowMs / 1000);
  return new SignJWT({})
    .setProtectedHeader(key.kid === undefined ? { alg: key.alg, typ: 'JWT' } : { alg: key.alg, typ: 'JWT', kid: key.kid })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(audience)
    .setJti(randomUUID())
    .setIssuedAt(iat)
    .setExpirationTime(iat + ASSERTION_TTL_S)
    .sign(key.key);
}
