/**
 * DPoP proofs (RFC 9449) signed with node:crypto directly: fast enough to pre-generate tens of
 * thousands before a run, each with its own jti.
 */
import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign } from 'node:crypto';

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A fresh ES256 client key: { privateJwk, publicJwk, jkt }. */
export function clientKey() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pub = publicKey.export({ format: 'jwk' });
  const publicJwk = { kty: pub.kty, crv: pub.crv, x: pub.x, y: pub.y };
  const jkt = createHash('sha256').update(JSON.stringify({ crv: pub.crv, kty: pub.kty, x: pub.x, y: pub.y })).digest('base64url');
  return { privateJwk: privateKey.export({ format: 'jwk' }), publicJwk, jkt };
}

/** Returns `next()` producing proofs for (htm, htu) bound to `token` (ath). */
export function proofSigner(privateJwk, { htm, htu, token }) {
  const key = createPrivateKey({ key: privateJwk, format: 'jwk' });
  const header = b64({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: privateJwk.kty, crv: privateJwk.crv, x: privateJwk.x, y: privateJwk.y } });
  const ath = token === undefined ? undefined : createHash('sha256').update(token).digest('base64url');
  const prefix = randomBytes(6).toString('base64url');
  let n = 0;
  return () => {
    const payload = { jti: `${prefix}-${(n++).toString(36)}`, htm, htu, iat: Math.floor(Date.now() / 1000) };
    if (ath !== undefined) payload.ath = ath;
    const input = `${header}.${b64(payload)}`;
    return `${input}.${sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  };
}
