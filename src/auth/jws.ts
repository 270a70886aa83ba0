/**
 * The synchronous compact-JWS fast path used for access tokens and DPoP proofs.
 *
 * ## How tokens and proofs are checked
 *
 * Access token (token.ts, RFC 9068 + RFC 8725): the compact string is split by hand, header and
 * payload are base64url-decoded with Buffer and JSON.parse'd. The header must carry `typ` `at+jwt`
 * (or `application/at+jwt`) and an `alg` from the issuer's configured list (never `none`, never
 * HS*); `jku`, `x5u`, `jwk`, `x5c` are ignored, so a token can never name its own key. The
 * unverified `iss` only selects which configured issuer's key set to look in (an unknown issuer is
 * rejected before any key lookup); the key comes from that issuer's JWKS (keys.ts), by `kid`. Then
 * the signature is verified with `crypto.verify` and a cached KeyObject, then the claims: `iss`,
 * `aud` contains the resource, `exp`/`nbf`/`iat` with bounded skew, `sub`, `client_id`, `jti`.
 * A verified token is cached by its exact compact string until `exp` (bounded LRU); a hit still
 * checks `exp`, `nbf`, `aud` and that the signing key is still in the issuer's current key set.
 *
 * DPoP proof (dpop.ts, RFC 9449 section 4.3): same parsing; `typ` `dpop+jwt`, an asymmetric
 * allowed `alg` that fits the embedded public `jwk` (a private member rejects), the RFC 7638
 * thumbprint computed from the required members only, `htm`, `htu` (RFC 3986 normalized, no query
 * or fragment), `iat` window, `ath` = SHA-256 of the token, thumbprint = token `cnf.jkt`, the
 * signature, an optional server nonce, and finally single use of `jti` per thumbprint.
 *
 * ## Why the fast path is safe
 *
 * - Everything jose would reject we reject: malformed base64url (strict alphabet, no padding),
 *   non-object JSON, `b64: false`, any `crit`, nested JWTs (`cty: JWT`), `alg: none`/HS*, an
 *   `alg` that does not fit the key's type/curve/size (ES256 needs P-256, RSA needs >= 2048 bits),
 *   signatures of the wrong length (ECDSA in IEEE P1363 form, as JWS requires). Size is capped.
 * - Only public asymmetric KeyObjects are ever used, so an HMAC-with-the-public-key confusion is
 *   impossible: no code path computes an HMAC over a token.
 * - A proof's header is validated once and cached by its exact base64url segment (dpop.ts,
 *   ProofKeyCache): equal segments are equal signed bytes, so a hit stands for a header that passed
 *   every check, with its thumbprint and a KeyObject imported from exactly the RFC 7638 members.
 *   The payload and the signature of every proof are still decoded and verified.
 * - A verified token is cached by its exact compact string, so a hit is the very token whose
 *   signature was verified; a hit is dropped as soon as its key leaves the issuer's set.
 * - Per request that leaves one `crypto.verify` (the proof), a base64url + JSON.parse of the proof
 *   payload, the `htu` normalization and one replay-store claim: a few microseconds on top of the
 *   single signature verification.
 * - The tests run the same inputs through jose and through this path and require the same verdict
 *   (test/auth/jws.test.ts for signatures, test/auth/token.test.ts for the RFC 9068 profile).
 * - JSON duplicate members resolve to the last one (JSON.parse), which RFC 7515 section 4 allows
 *   and which is what jose does too, so there is no parser differential with the issuer's library.
 */
import { constants, hash, verify as cryptoVerify, type KeyObject } from 'node:crypto';

/** Upper bound on a compact JWS we will even look at: bounds the parsing work an anonymous client can cause. */
export const MAX_JWS_BYTES = 16_384;

export class JwsError extends Error {
  override readonly name = 'JwsError';
}

export interface ParsedJws {
  readonly header: Readonly<Record<string, unknown>>;
  readonly payload: Readonly<Record<string, unknown>>;
  /** ASCII `header.payload`, the JWS Signing Input. */
  readonly signingInput: string;
  readonly signature: Buffer;
}

const B64URL = /^[A-Za-z0-9_-]+$/;

function decodeSegment(seg: string): Buffer {
  // Buffer.from(…, 'base64url') silently skips invalid characters: check the alphabet first.
  // A length of 1 mod 4 can never be produced by base64url encoding.
  if (!B64URL.test(seg) || seg.length % 4 === 1) throw new JwsError('malformed segment');
  return Buffer.from(seg, 'base64url');
}

function decodeJsonObject(seg: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(decodeSegment(seg).toString('utf8'));
  } catch {
    throw new JwsError('malformed JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new JwsError('not a JSON object');
  return value as Record<string, unknown>;
}

/** The three segments of a compact JWS, not yet decoded. */
export interface CompactSegments {
  readonly header: string;
  readonly payload: string;
  readonly signature: string;
  /** ASCII `header.payload`, the JWS Signing Input. */
  readonly signingInput: string;
}

/** Splits a compact JWS into exactly three non-empty segments; throws JwsError otherwise. */
export function splitCompact(compact: string, maxBytes: number = MAX_JWS_BYTES): CompactSegments {
  if (typeof compact !== 'string' || compact.length > maxBytes) throw new JwsError('oversized or not a string');
  const d1 = compact.indexOf('.');
  const d2 = d1 === -1 ? -1 : compact.indexOf('.', d1 + 1);
  if (d1 <= 0 || d2 === -1 || compact.indexOf('.', d2 + 1) !== -1) throw new JwsError('not a compact JWS');
  if (d2 === d1 + 1 || d2 === compact.length - 1) throw new JwsError('empty segment');
  return { header: compact.slice(0, d1), payload: compact.slice(d1 + 1, d2), signature: compact.slice(d2 + 1), signingInput: compact.slice(0, d2) };
}

/**
 * Decodes a protected header, refusing `crit` (we understand no extension, so RFC 7515 section
 * 4.1.11 requires rejecting it), `b64` (RFC 7797) and nested JWTs (`cty: JWT`, RFC 8725 section 2.8).
 */
export function decodeHeader(seg: string): Record<string, unknown> {
  const header = decodeJsonObject(seg);
  if (header.crit !== undefined) throw new JwsError('unsupported crit');
  if (header.b64 !== undefined) throw new JwsError('unsupported b64');
  if (typeof header.cty === 'string' && header.cty.toUpperCase() === 'JWT') throw new JwsError('nested JWT');
  return header;
}

/** Decodes a payload that must be a JSON object (RFC 7519 section 7.2 step 10). */
export function decodePayload(seg: string): Record<string, unknown> {
  return decodeJsonObject(seg);
}

export function decodeSignature(seg: string): Buffer {
  return decodeSegment(seg);
}

/**
 * Splits and decodes a compact JWS. Does not verify anything cryptographic. Throws JwsError on
 * anything malformed, oversized, nested, `b64: false`, or with a `crit` header.
 */
export function parseCompact(compact: string, maxBytes: number = MAX_JWS_BYTES): ParsedJws {
  const seg = splitCompact(compact, maxBytes);
  const header = decodeHeader(seg.header);
  const payload = decodePayload(seg.payload);
  return { header, payload, signingInput: seg.signingInput, signature: decodeSignature(seg.signature) };
}

/** Asymmetric JWS algorithms this gateway implements (RFC 7518 / RFC 8037 / RFC 9864 `Ed25519`). */
export const ASYMMETRIC_ALGS: ReadonlySet<string> = new Set(['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'EdDSA', 'Ed25519']);

interface AlgSpec {
  readonly digest: string | null;
  readonly family: 'ec' | 'rsa' | 'pss' | 'okp';
  readonly curve?: string;
  readonly sigLength?: number;
}

const ALG_SPECS: ReadonlyMap<string, AlgSpec> = new Map<string, AlgSpec>([
  ['ES256', { digest: 'sha256', family: 'ec', curve: 'prime256v1', sigLength: 64 }],
  ['ES384', { digest: 'sha384', family: 'ec', curve: 'secp384r1', sigLength: 96 }],
  ['ES512', { digest: 'sha512', family: 'ec', curve: 'secp521r1', sigLength: 132 }],
  ['RS256', { digest: 'sha256', family: 'rsa' }],
  ['RS384', { digest: 'sha384', family: 'rsa' }],
  ['RS512', { digest: 'sha512', family: 'rsa' }],
  ['PS256', { digest: 'sha256', family: 'pss' }],
  ['PS384', { digest: 'sha384', family: 'pss' }],
  ['PS512', { digest: 'sha512', family: 'pss' }],
  ['EdDSA', { digest: null, family: 'okp' }],
  ['Ed25519', { digest: null, family: 'okp', curve: 'ed25519' }],
]);

const PSS_SALT: Readonly<Record<string, number>> = { sha256: 32, sha384: 48, sha512: 64 };

/** Per-KeyObject description, computed once (asymmetricKeyDetails allocates). */
interface KeyShape {
  readonly type: string | undefined;
  readonly curve: string | undefined;
  readonly bits: number | undefined;
}
const shapes = new WeakMap<KeyObject, KeyShape>();

function shapeOf(key: KeyObject): KeyShape {
  let s = shapes.get(key);
  if (s === undefined) {
    const d = key.asymmetricKeyDetails;
    s = { type: key.asymmetricKeyType, curve: d?.namedCurve, bits: d?.modulusLength };
    shapes.set(key, s);
  }
  return s;
}

/** True when `key` is a public key usable with `alg` (type, curve, RSA size >= 2048). */
export function keyFitsAlg(alg: string, key: KeyObject): boolean {
  const spec = ALG_SPECS.get(alg);
  if (spec === undefined || key.type !== 'public') return false;
  const s = shapeOf(key);
  switch (spec.family) {
    case 'ec':
      return s.type === 'ec' && s.curve === spec.curve;
    case 'rsa':
      return s.type === 'rsa' && (s.bits ?? 0) >= 2048;
    case 'pss':
      return (s.type === 'rsa' || s.type === 'rsa-pss') && (s.bits ?? 0) >= 2048;
    case 'okp':
      return spec.curve === undefined ? s.type === 'ed25519' || s.type === 'ed448' : s.type === spec.curve;
  }
}

/**
 * Verifies a JWS signature synchronously. False on any mismatch (wrong key type for `alg`, wrong
 * signature length, bad signature); never throws for attacker-controlled input.
 */
export function verifySignature(alg: string, key: KeyObject, signingInput: string, signature: Buffer): boolean {
  const spec = ALG_SPECS.get(alg);
  if (spec === undefined || !keyFitsAlg(alg, key)) return false;
  if (spec.sigLength !== undefined && signature.length !== spec.sigLength) return false;
  const data = Buffer.from(signingInput, 'latin1');
  try {
    switch (spec.family) {
      case 'ec':
        return cryptoVerify(spec.digest, data, { key, dsaEncoding: 'ieee-p1363' }, signature);
      case 'rsa':
        return cryptoVerify(spec.digest, data, { key, padding: constants.RSA_PKCS1_PADDING }, signature);
      case 'pss':
        return cryptoVerify(spec.digest, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: PSS_SALT[spec.digest!]! }, signature);
      case 'okp':
        return cryptoVerify(null, data, key, signature);
    }
  } catch {
    return false;
  }
}

/** `typ` comparison per RFC 8725 section 3.11 / RFC 7515 section 4.1.9: case-insensitive, `application/` optional. */
export function typIs(typ: unknown, expected: string): boolean {
  if (typeof typ !== 'string') return false;
  const t = typ.toLowerCase();
  return t === expected || t === 'application/' + expected;
}

/** base64url(SHA-256(ascii)): the DPoP `ath` of an access token (RFC 9449 section 4.2). */
export function sha256b64u(value: string): string {
  return hash('sha256', value, 'base64url');
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

/** The members of a public JWK that define it (RFC 7638 section 3.2), in lexicographic order. */
export interface PublicJwkCore {
  /** RFC 7638 canonical JSON (input of the thumbprint), also a lossless cache key. */
  readonly canonical: string;
  /** JWK with only the required members, for import. */
  readonly jwk: Readonly<Record<string, string>>;
}

function str(v: unknown, max: number): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= max && B64URL.test(v);
}

/**
 * Validates an embedded public JWK and returns its RFC 7638 required members. Null when it is not
 * an object, carries a private member, has a symmetric or unknown `kty`, or malformed members.
 */
export function publicJwkCore(value: unknown): PublicJwkCore | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const jwk = value as Record<string, unknown>;
  for (const m of PRIVATE_MEMBERS) if (jwk[m] !== undefined) return null;
  switch (jwk.kty) {
    case 'EC': {
      const { crv, x, y } = jwk;
      if ((crv !== 'P-256' && crv !== 'P-384' && crv !== 'P-521') || !str(x, 100) || !str(y, 100)) return null;
      return { canonical: `{"crv":"${crv}","kty":"EC","x":"${x}","y":"${y}"}`, jwk: { kty: 'EC', crv, x, y } };
    }
    case 'OKP': {
      const { crv, x } = jwk;
      if ((crv !== 'Ed25519' && crv !== 'Ed448') || !str(x, 100)) return null;
      return { canonical: `{"crv":"${crv}","kty":"OKP","x":"${x}"}`, jwk: { kty: 'OKP', crv, x } };
    }
    case 'RSA': {
      const { e, n } = jwk;
      // 8192-bit modulus at most: 1366 base64url characters.
      if (!str(e, 12) || !str(n, 1366)) return null;
      return { canonical: `{"e":"${e}","kty":"RSA","n":"${n}"}`, jwk: { kty: 'RSA', e, n } };
    }
    default:
      return null;
  }
}

/** RFC 7638 SHA-256 thumbprint of a public JWK core. */
export function thumbprintOf(core: PublicJwkCore): string {
  return sha256b64u(core.canonical);
}

/** Unix seconds from an injectable millisecond clock. */
export type Clock = () => number;
export const systemClock: Clock = () => Date.now();
export function nowSeconds(clock: Clock): number {
  // Not floored: a whole second would give every bound up to 1 s more leeway for exp and 1 s less
  // for iat and nbf, which `clock_skew_s: 0` means to rule out (r20d 6).
  return clock() / 1000;
}

/** Returns a finite number claim or undefined. */
export function numericDate(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/**
 * Why a JWT's `exp` or `nbf`, when present, refuses it at `now` (RFC 7519 sections 4.1.4-4.1.5:
 * not on or after its exp, not before its nbf, `skew` seconds of leeway; a value that is not a
 * NumericDate refuses it too), or null.
 */
export function validityProblem(p: Readonly<Record<string, unknown>>, now: number, skew: number): 'expired' | 'not yet valid' | null {
  if (p['exp'] !== undefined) {
    const e = numericDate(p['exp']);
    if (e === undefined || now - skew >= e) return 'expired';
  }
  if (p['nbf'] !== undefined) {
    const n = numericDate(p['nbf']);
    if (n === undefined || n > now + skew) return 'not yet valid';
  }
  return null;
}
