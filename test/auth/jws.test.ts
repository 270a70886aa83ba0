/**
 * The synchronous fast path (src/auth/jws.ts) against jose: every input jose accepts the fast path
 * accepts, every input jose rejects it rejects (RFC 7515, RFC 7518, RFC 8725).
 */
import { createHmac, createPublicKey, generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';
import * as jose from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { keyFitsAlg, parseCompact, publicJwkCore, verifySignature } from '../../src/auth/jws.js';
import { makeKey, type Key } from './helpers.js';

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function fast(compact: string, key: KeyObject, algs: readonly string[]): boolean {
  try {
    const p = parseCompact(compact);
    const alg = p.header.alg;
    return typeof alg === 'string' && algs.includes(alg) && verifySignature(alg, key, p.signingInput, p.signature);
  } catch {
    return false;
  }
}

async function viaJose(compact: string, key: KeyObject, algs: readonly string[]): Promise<boolean> {
  try {
    await jose.jwtVerify(compact, key, { algorithms: [...algs] });
    return true;
  } catch {
    return false;
  }
}

const ALGS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA', 'Ed25519'];
const keys = new Map<string, Key>();
const keyObjects = new Map<string, KeyObject>();

beforeAll(async () => {
  for (const alg of ALGS) {
    const k = await makeKey(alg);
    keys.set(alg, k);
    keyObjects.set(alg, createPublicKey({ key: k.publicJwk as never, format: 'jwk' }));
  }
});

async function signed(alg: string, header: Record<string, unknown> = {}, payload: unknown = { sub: 'x' }): Promise<string> {
  const k = keys.get(alg)!;
  return new jose.CompactSign(new TextEncoder().encode(typeof payload === 'string' ? payload : JSON.stringify(payload)))
    .setProtectedHeader({ alg, ...header } as jose.CompactJWSHeaderParameters)
    .sign(k.privateKey);
}

describe('fast path agrees with jose', () => {
  it('RFC 7518 §3: a valid signature for every supported algorithm verifies in both', async () => {
    for (const alg of ALGS) {
      const t = await signed(alg);
      const key = keyObjects.get(alg)!;
      expect([alg, fast(t, key, [alg])]).toEqual([alg, true]);
      expect([alg, await viaJose(t, key, [alg])]).toEqual([alg, true]);
    }
  });

  it('RFC 7515 §5.2: tampered payloads, tampered or truncated signatures, wrong keys are rejected by both', async () => {
    const cases: Array<[string, string, KeyObject, string[]]> = [];
    for (const alg of ALGS) {
      const t = await signed(alg);
      const [h, p, s] = t.split('.') as [string, string, string];
      const key = keyObjects.get(alg)!;
      cases.push([`${alg} payload`, `${h}.${b64({ sub: 'y' })}.${s}`, key, [alg]]);
      cases.push([`${alg} sig flip`, `${h}.${p}.${s.slice(0, 10)}${s[10] === 'A' ? 'B' : 'A'}${s.slice(11)}`, key, [alg]]);
      cases.push([`${alg} sig truncated`, `${h}.${p}.${s.slice(0, -4)}`, key, [alg]]);
      cases.push([`${alg} empty sig`, `${h}.${p}.`, key, [alg]]);
      cases.push([`${alg} not allowed`, t, key, ALGS.filter((a) => a !== alg)]);
      const other = ALGS.find((a) => a !== alg && keyObjects.get(a)!.asymmetricKeyType === key.asymmetricKeyType) ?? 'ES256';
      if (other !== alg) cases.push([`${alg} other key`, t, keyObjects.get(other)!, [alg]]);
      cases.push([`${alg} extra segment`, `${t}.${s}`, key, [alg]]);
      cases.push([`${alg} bad char`, `${h}.${p}.${s.slice(0, -1)}*`, key, [alg]]);
    }
    for (const [name, t, key, algs] of cases) {
      expect([name, fast(t, key, algs)]).toEqual([name, false]);
      expect([name, await viaJose(t, key, algs)]).toEqual([name, false]);
    }
  });

  it('RFC 7518 §3.4: an ECDSA signature in DER form (not R||S) is rejected by both', async () => {
    const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const h = b64({ alg: 'ES256' });
    const p = b64({ sub: 'x' });
    const der = cryptoSign('sha256', Buffer.from(`${h}.${p}`), { key: k.privateKey, dsaEncoding: 'der' });
    const p1363 = cryptoSign('sha256', Buffer.from(`${h}.${p}`), { key: k.privateKey, dsaEncoding: 'ieee-p1363' });
    expect(fast(`${h}.${p}.${der.toString('base64url')}`, k.publicKey, ['ES256'])).toBe(false);
    expect(await viaJose(`${h}.${p}.${der.toString('base64url')}`, k.publicKey, ['ES256'])).toBe(false);
    expect(fast(`${h}.${p}.${p1363.toString('base64url')}`, k.publicKey, ['ES256'])).toBe(true);
    expect(await viaJose(`${h}.${p}.${p1363.toString('base64url')}`, k.publicKey, ['ES256'])).toBe(true);
  });

  it('RFC 8725 §3.1: alg "none" is rejected by both, even with an empty signature', async () => {
    const t = `${b64({ alg: 'none' })}.${b64({ sub: 'x' })}.`;
    const key = keyObjects.get('ES256')!;
    expect(fast(t, key, ['ES256', 'none'])).toBe(false);
    expect(await viaJose(t, key, ['ES256'])).toBe(false);
  });

  it('RFC 8725 §2.1/§3.1: RS256→HS256 confusion (HMAC keyed with the public key PEM) is rejected by both', async () => {
    const key = keyObjects.get('RS256')!;
    const pem = key.export({ type: 'spki', format: 'pem' });
    const h = b64({ alg: 'HS256' });
    const p = b64({ sub: 'admin' });
    const mac = createHmac('sha256', pem).update(`${h}.${p}`).digest('base64url');
    const t = `${h}.${p}.${mac}`;
    expect(fast(t, key, ['RS256', 'HS256'])).toBe(false);
    expect(await viaJose(t, key, ['RS256'])).toBe(false);
    expect(await viaJose(t, key, ['HS256'])).toBe(false);
  });

  it('RFC 7515 §4.1.11: a crit header we do not understand is rejected by both', async () => {
    const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const h = b64({ alg: 'ES256', crit: ['urn:example:ext'], 'urn:example:ext': 1 });
    const p = b64({ sub: 'x' });
    const sig = cryptoSign('sha256', Buffer.from(`${h}.${p}`), { key: k.privateKey, dsaEncoding: 'ieee-p1363' });
    const t = `${h}.${p}.${sig.toString('base64url')}`;
    expect(fast(t, k.publicKey, ['ES256'])).toBe(false);
    expect(await viaJose(t, k.publicKey, ['ES256'])).toBe(false);
  });

  it('RFC 7519 §7.2: non-object payloads (array, string, number, null, invalid JSON) are rejected by both', async () => {
    for (const payload of ['[1]', '"s"', '42', 'null', '{"a":']) {
      const t = await signed('ES256', {}, payload);
      expect([payload, fast(t, keyObjects.get('ES256')!, ['ES256'])]).toEqual([payload, false]);
      expect([payload, await viaJose(t, keyObjects.get('ES256')!, ['ES256'])]).toEqual([payload, false]);
    }
  });

  it('RFC 7518 §3.3: RSA keys under 2048 bits are rejected by both', async () => {
    const k = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const h = b64({ alg: 'RS256' });
    const p = b64({ sub: 'x' });
    const sig = cryptoSign('sha256', Buffer.from(`${h}.${p}`), k.privateKey).toString('base64url');
    expect(fast(`${h}.${p}.${sig}`, k.publicKey, ['RS256'])).toBe(false);
    expect(await viaJose(`${h}.${p}.${sig}`, k.publicKey, ['RS256'])).toBe(false);
  });

  it('RFC 7518 §3.4: an ES256 header with a P-384 key (curve mismatch) is rejected by both', async () => {
    const k = keys.get('ES384')!;
    const t = await new jose.CompactSign(new TextEncoder().encode('{}')).setProtectedHeader({ alg: 'ES384' }).sign(k.privateKey);
    const [, p, s] = t.split('.');
    const forged = `${b64({ alg: 'ES256' })}.${p}.${s}`;
    expect(fast(forged, keyObjects.get('ES384')!, ['ES256'])).toBe(false);
    expect(await viaJose(forged, keyObjects.get('ES384')!, ['ES256'])).toBe(false);
  });
});

describe('fast path limits (stricter than jose where noted)', () => {
  it('RFC 8725 §2.8/§3.11: nested JWTs (cty JWT) and b64:false are refused', async () => {
    expect(() => parseCompact(`${b64({ alg: 'ES256', cty: 'JWT' })}.${b64({})}.AAAA`)).toThrow();
    expect(() => parseCompact(`${b64({ alg: 'ES256', b64: false, crit: ['b64'] })}.${b64({})}.AAAA`)).toThrow();
  });

  it('RFC 7515 §2: base64url padding is refused (jose tolerates it)', async () => {
    const t = await signed('ES256');
    expect(fast(t, keyObjects.get('ES256')!, ['ES256'])).toBe(true);
    expect(fast(`${t}==`, keyObjects.get('ES256')!, ['ES256'])).toBe(false);
  });

  it('oversized inputs are refused before any decoding', () => {
    const big = `${b64({ alg: 'ES256' })}.${b64({ pad: 'x'.repeat(20_000) })}.AAAA`;
    expect(() => parseCompact(big)).toThrow(/oversized/);
  });

  it('RFC 7515 §7.1: anything but exactly three segments is refused', () => {
    for (const t of ['', 'a', 'a.b', 'a.b.c.d', '.b.c', 'a..c']) expect(() => parseCompact(t)).toThrow();
  });

  it('keyFitsAlg: private keys and mismatched types never verify', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(keyFitsAlg('ES256', ec.privateKey)).toBe(false);
    expect(keyFitsAlg('ES256', ec.publicKey)).toBe(true);
    expect(keyFitsAlg('RS256', ec.publicKey)).toBe(false);
    expect(keyFitsAlg('EdDSA', ec.publicKey)).toBe(false);
    expect(keyFitsAlg('HS256', ec.publicKey)).toBe(false);
  });

  it('RFC 9449 §4.3 step 7: publicJwkCore refuses private members and symmetric keys', () => {
    const jwk = { kty: 'EC', crv: 'P-256', x: 'l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs', y: '9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA' };
    expect(publicJwkCore(jwk)).not.toBeNull();
    for (const m of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']) expect(publicJwkCore({ ...jwk, [m]: 'AAAA' })).toBeNull();
    expect(publicJwkCore({ kty: 'oct', k: 'AAAA' })).toBeNull();
    expect(publicJwkCore({ ...jwk, x: 'a"b' })).toBeNull();
    expect(publicJwkCore([jwk])).toBeNull();
  });
});

describe('validityProblem: the exp / nbf window at its edges (RFC 7519 4.1.4-4.1.5, with clock skew)', () => {
  it('not accepted on or after exp - skew; accepted from nbf - skew', async () => {
    const { validityProblem } = await import('../../src/auth/jws.js');
    const now = 1_000_000;
    const skew = 30;
    expect(validityProblem({ exp: now - skew }, now, skew)).toBe('expired');
    expect(validityProblem({ exp: now - skew + 1 }, now, skew)).toBeNull();
    expect(validityProblem({ nbf: now + skew }, now, skew)).toBeNull();
    expect(validityProblem({ nbf: now + skew + 1 }, now, skew)).toBe('not yet valid');
  });
});
