/**
 * RFC 9449 through the credentials, token and DPoP stages, one negative test per check of
 * section 4.3, plus the attacks the gateway must stop.
 */
import { createHmac, randomUUID } from 'node:crypto';
import * as jose from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCredentialsStage } from '../../src/auth/credentials.js';
import { createDpopStage, normalizeHtu, verifyDpopProof, VerifyBatch } from '../../src/auth/dpop.js';
import { generateKeyPairSync, sign as cryptoSign } from 'node:crypto';
import { IssuerKeys } from '../../src/auth/keys.js';
import { NonceIssuer } from '../../src/auth/nonce.js';
import { MemoryReplayStore } from '../../src/auth/replay.js';
import { createTokenStage } from '../../src/auth/token.js';
import type { ReplayStore } from '../../src/auth/types.js';
import type { Config, ConfigInput } from '../../src/config/schema.js';
import { Denial } from '../../src/errors.js';
import type { RequestContext } from '../../src/pipeline/context.js';
import { BASE, JwksServer, logger, makeConfig, makeCtx, makeKey, mintProof, mintToken, newMetrics, outcome, thumbprint, type Key, type ProofOptions } from './helpers.js';

let jwks: JwksServer;
let issuerKey: Key;
let client: Key;
let clientJkt: string;
let issuer: string;

beforeAll(async () => {
  jwks = await new JwksServer().start();
  issuer = jwks.url;
  issuerKey = await makeKey('ES256', 'as1');
  jwks.setKeys(issuerKey);
  client = await makeKey('ES256');
  clientJkt = await thumbprint(client);
});
afterAll(() => jwks.close());

interface Gateway {
  config: Config;
  nonces: NonceIssuer | null;
  /** The context of the last run (also when it threw). */
  last: RequestContext | null;
  /** Runs credentials -> token -> dpop like the pipeline does. */
  run(headers: string[], o?: { method?: string; path?: string }): Promise<RequestContext>;
  close(): void;
}

async function gateway(extra: Partial<ConfigInput> = {}, o: { replay?: ReplayStore; clock?: () => number; openConnections?: () => number } = {}): Promise<Gateway> {
  const config = makeConfig(issuer, `${issuer}/jwks`, extra);
  const metrics = newMetrics();
  const keys = new IssuerKeys({ issuers: config.issuers, metrics, logger, refreshIntervalMs: 0 });
  await keys.start();
  const nonces = config.dpop.nonce ? new NonceIssuer({ windowSeconds: config.dpop.nonce_window_s, ...(o.clock ? { clock: o.clock } : {}) }) : null;
  const stages = [
    createCredentialsStage(),
    createTokenStage({ config, keys, metrics, logger }),
    createDpopStage({ config, replay: o.replay ?? new MemoryReplayStore({ maxEntries: 10_000, metrics }), nonces, metrics, ...(o.clock ? { clock: o.clock } : {}), ...(o.openConnections ? { openConnections: o.openConnections } : {}) }),
  ];
  const g: Gateway = {
    config,
    nonces,
    last: null,
    async run(headers, ro = {}) {
      const ctx = makeCtx(headers, ro);
      g.last = ctx;
      for (const s of stages) await s(ctx);
      return ctx;
    },
    close: () => keys.close(),
  };
  return g;
}

async function dpopHeaders(token: string, p: ProofOptions = {}, key: Key = client): Promise<string[]> {
  return ['Authorization', `DPoP ${token}`, 'DPoP', await mintProof(key, { token, ...p })];
}

let gw: Gateway;
let token: string;
beforeAll(async () => {
  gw = await gateway();
  token = await mintToken(issuerKey, issuer, { jkt: clientJkt });
});
afterAll(() => gw.close());

const code = (headers: string[] | Promise<string[]>, o?: { method?: string; path?: string }) => outcome(async () => gw.run(await headers, o));

describe('RFC 9449 §7.1: a DPoP-bound token with a valid proof', () => {
  it('is accepted and sets ctx.proof (jkt, jti, iat)', async () => {
    const ctx = await gw.run(await dpopHeaders(token));
    expect(ctx.proof?.jkt).toBe(clientJkt);
    expect(ctx.token?.jkt).toBe(clientJkt);
    expect(ctx.dpopNonce).toBeNull();
  });

  it('works for EdDSA, RS256 and PS256 proof keys too (fresh proof per request)', async () => {
    for (const alg of ['EdDSA', 'RS256', 'PS256']) {
      const k = await makeKey(alg);
      const t = await mintToken(issuerKey, issuer, { jkt: await thumbprint(k) });
      expect([alg, await code(dpopHeaders(t, {}, k))]).toEqual([alg, 'ok']);
      expect([alg, await code(dpopHeaders(t, {}, k))]).toEqual([alg, 'ok']);
    }
  });

  it('the scheme is case-insensitive (RFC 9110 §11.1)', async () => {
    expect(await code(['authorization', `dpop ${token}`, 'dpop', await mintProof(client, { token })])).toBe('ok');
  });
});

describe('RFC 9449 §4.3 checks, one by one', () => {
  it('step 1: more than one DPoP header is refused', async () => {
    const h = await dpopHeaders(token);
    expect(await code([...h, 'DPoP', await mintProof(client, { token })])).toBe('dpop_invalid');
  });

  it('step 1: a missing DPoP header with the DPoP scheme is refused', async () => {
    expect(await code(['Authorization', `DPoP ${token}`])).toBe('dpop_invalid');
  });

  it('step 2: a DPoP header that is not a JWT is refused', async () => {
    for (const v of ['', 'abc', 'a.b', 'a.b.c.d', 'eyJ.eyJ.', 'x'.repeat(9000)]) {
      expect([v.slice(0, 10), await code(['Authorization', `DPoP ${token}`, 'DPoP', v])]).toEqual([v.slice(0, 10), 'dpop_invalid']);
    }
  });

  it('step 3: each required claim (jti, htm, htu, iat) must be present', async () => {
    for (const c of ['jti', 'htm', 'htu', 'iat']) expect([c, await code(dpopHeaders(token, { omit: [c] }))]).toEqual([c, 'dpop_invalid']);
  });

  it('step 3: a proof without the jwk header is refused', async () => {
    expect(await code(dpopHeaders(token, { header: { jwk: undefined } }))).toBe('dpop_invalid');
  });

  it('step 4: typ must be dpop+jwt', async () => {
    for (const typ of ['JWT', 'at+jwt', undefined]) expect([typ, await code(dpopHeaders(token, { header: { typ } }))]).toEqual([typ, 'dpop_invalid']);
  });

  it('step 5: alg none is refused', async () => {
    const h = Buffer.from(JSON.stringify({ alg: 'none', typ: 'dpop+jwt', jwk: client.publicJwk })).toString('base64url');
    const p = Buffer.from(JSON.stringify({ jti: randomUUID(), htm: 'GET', htu: `${BASE}/invoices/1`, iat: Math.floor(Date.now() / 1000) })).toString('base64url');
    expect(await code(['Authorization', `DPoP ${token}`, 'DPoP', `${h}.${p}.`])).toBe('dpop_invalid');
    expect(await code(['Authorization', `DPoP ${token}`, 'DPoP', `${h}.${p}.AAAA`])).toBe('dpop_invalid');
  });

  it('step 5: a symmetric alg (HS256 keyed with the public JWK) is refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    const h = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'dpop+jwt', jwk: client.publicJwk })).toString('base64url');
    const p = Buffer.from(JSON.stringify({ jti: randomUUID(), htm: 'GET', htu: `${BASE}/invoices/1`, iat: now, ath: jose.base64url.encode(new Uint8Array(32)) })).toString('base64url');
    const mac = createHmac('sha256', JSON.stringify(client.publicJwk)).update(`${h}.${p}`).digest('base64url');
    expect(await code(['Authorization', `DPoP ${token}`, 'DPoP', `${h}.${p}.${mac}`])).toBe('dpop_invalid');
  });

  it('step 5: an alg outside dpop.algorithms is refused', async () => {
    const g = await gateway({ dpop: { algorithms: ['EdDSA'] } });
    expect(await outcome(async () => g.run(await dpopHeaders(token)))).toBe('dpop_invalid');
    g.close();
  });

  it('step 6: a bad signature is refused', async () => {
    const proof = await mintProof(client, { token });
    const [h, p, s] = proof.split('.') as [string, string, string];
    const flipped = `${h}.${p}.${s[0] === 'A' ? 'B' : 'A'}${s.slice(1)}`;
    expect(await code(['Authorization', `DPoP ${token}`, 'DPoP', flipped])).toBe('dpop_invalid');
  });

  it('step 6: a proof signed by a key other than its jwk is refused', async () => {
    const other = await makeKey('ES256');
    expect(await code(dpopHeaders(token, { header: { jwk: client.publicJwk } }, other))).toBe('dpop_invalid');
  });

  it('step 6: an alg that does not fit the jwk (RS256 header, EC key) is refused', async () => {
    const rsa = await makeKey('RS256');
    expect(await code(dpopHeaders(token, { header: { jwk: client.publicJwk } }, rsa))).toBe('dpop_invalid');
  });

  it('step 7: a jwk with a private member (d) is refused', async () => {
    const priv = await jose.exportJWK(client.privateKey);
    expect(priv.d).toBeDefined();
    expect(await code(dpopHeaders(token, { header: { jwk: priv } }))).toBe('dpop_invalid');
  });

  it('step 8: htm must equal the request method', async () => {
    expect(await code(dpopHeaders(token, { method: 'POST' }))).toBe('dpop_invalid');
    expect(await code(dpopHeaders(token, { method: 'get' }))).toBe('dpop_invalid');
  });

  it('step 9: htu with another host, scheme, port or path is refused', async () => {
    for (const htu of [
      'https://evil.example.com/invoices/1',
      'https://api.example.com.evil.com/invoices/1',
      'https://api.example.com@evil.com/invoices/1',
      'http://api.example.com/invoices/1',
      'https://api.example.com:8443/invoices/1',
      'https://api.example.com/invoices/2',
      'https://api.example.com/invoices',
      'https://api.example.com/invoices/1/',
      'https://api.example.com/invoices%2F1',
      'https://api.example.com/invoices/1%3Fx=1',
      '/invoices/1',
      'https://api.example.com/invoices/1\t',
    ]) {
      expect([htu, await code(dpopHeaders(token, { htu }))]).toEqual([htu, 'dpop_invalid']);
    }
  });

  it('step 9 (SPEC §2): htu is compared after RFC 3986 §6.2.2-6.2.3 normalization, without query and fragment', async () => {
    for (const htu of [
      'HTTPS://API.Example.COM/invoices/1',
      'https://api.example.com:443/invoices/1',
      'https://api.example.com/invoices/%31',
      'https://api.example.com/invoices/./1',
      'https://api.example.com/invoices/1?x=1',
      'https://api.example.com/invoices/1#frag',
      'https://api.example.com/invoices/1?',
    ]) {
      expect([htu, await code(dpopHeaders(token, { htu }))]).toEqual([htu, 'ok']);
    }
    // The request's own query string never matters: the proof is for the path.
    expect(await code(dpopHeaders(token, { htu: `${BASE}/search` }), { path: '/search' })).toBe('ok');
  });

  it('step 10: with dpop.nonce, a proof without a nonce gets use_dpop_nonce and a fresh DPoP-Nonce', async () => {
    const g = await gateway({ dpop: { nonce: true } });
    let err: unknown;
    try {
      await g.run(await dpopHeaders(token));
    } catch (e) {
      err = e;
    }
    expect((err as Denial).code).toBe('dpop_nonce_required');
    const nonce = g.nonces!.issue();
    expect(g.last?.dpopNonce).toBe(nonce); // the 401 carries DPoP-Nonce
    const ok = await g.run(await dpopHeaders(token, { claims: { nonce } }));
    expect(ok.dpopNonce).toBe(nonce);
    expect(await outcome(async () => g.run(await dpopHeaders(token, { claims: { nonce: nonce + 'x' } })))).toBe('dpop_nonce_required');
    g.close();
  });

  it('step 10: a stale nonce (two windows old) is refused; the previous window is still accepted', async () => {
    let now = Date.now();
    const g = await gateway({ dpop: { nonce: true, nonce_window_s: 60 } }, { clock: () => now });
    const old = g.nonces!.issue();
    now += 60_000;
    expect(await outcome(async () => g.run(await dpopHeaders(token, { claims: { nonce: old }, iat: Math.floor(now / 1000) })))).toBe('ok');
    now += 60_000;
    expect(await outcome(async () => g.run(await dpopHeaders(token, { claims: { nonce: old }, iat: Math.floor(now / 1000) })))).toBe('dpop_nonce_required');
    g.close();
  });

  it('step 11: an expired proof (iat older than max_age_s + skew) is refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    expect(await code(dpopHeaders(token, { iat: now - 60 - 5 - 2 }))).toBe('dpop_invalid');
    expect(await code(dpopHeaders(token, { iat: now - 50 }))).toBe('ok');
  });

  it('step 11 at its edge (fake clock): iat exactly max_age_s + clock_skew_s old is accepted, one second older is not', async () => {
    const T = Math.floor(Date.now() / 1000);
    const g = await gateway({}, { clock: () => T * 1000 });
    expect(await outcome(async () => g.run(await dpopHeaders(token, { iat: T - 60 - 5 })))).toBe('ok');
    expect(await outcome(async () => g.run(await dpopHeaders(token, { iat: T - 60 - 5 - 1 })))).toBe('dpop_invalid');
    g.close();
  });

  it('with clock_skew_s 0 the clock is read to the millisecond, not the second: a fractional iat just past is accepted, one just ahead refused (r20d 6)', async () => {
    const T = Math.floor(Date.now() / 1000) + 0.7;
    const g = await gateway({ dpop: { clock_skew_s: 0 } }, { clock: () => T * 1000 });
    expect(await outcome(async () => g.run(await dpopHeaders(token, { iat: T - 0.2 })))).toBe('ok');
    expect(await outcome(async () => g.run(await dpopHeaders(token, { iat: T + 0.2 })))).toBe('dpop_invalid');
    g.close();
  });

  it('step 11: a proof from the future (iat beyond the skew) is refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    expect(await code(dpopHeaders(token, { iat: now + 60 }))).toBe('dpop_invalid');
    expect(await code(dpopHeaders(token, { iat: now + 3 }))).toBe('ok');
    expect(await code(dpopHeaders(token, { claims: { iat: String(now) } }))).toBe('dpop_invalid');
  });

  it('a proof that carries exp or nbf is held to them, as any JWT (RFC 7519 4.1.4-4.1.5)', async () => {
    const now = Math.floor(Date.now() / 1000);
    // exp: refused on or after it (less the skew), or when it is not a NumericDate.
    expect(await code(dpopHeaders(token, { claims: { exp: now - 30 } }))).toBe('dpop_invalid');
    expect(await code(dpopHeaders(token, { iat: now - 10, claims: { exp: now - 10 } }))).toBe('dpop_invalid');
    expect(await code(dpopHeaders(token, { claims: { exp: 'tomorrow' } }))).toBe('dpop_invalid');
    expect(await code(dpopHeaders(token, { claims: { exp: now + 30 } }))).toBe('ok');
    expect(await code(dpopHeaders(token, { claims: { exp: now - 3 } }))).toBe('ok'); // inside clock_skew_s
    // nbf: refused before it (plus the skew).
    expect(await code(dpopHeaders(token, { claims: { nbf: now + 3600 } }))).toBe('dpop_invalid');
    expect(await code(dpopHeaders(token, { claims: { nbf: null } }))).toBe('dpop_invalid');
    expect(await code(dpopHeaders(token, { claims: { nbf: now - 1 } }))).toBe('ok');
  });

  it('step 12: ath must be the hash of the presented token', async () => {
    expect(await code(dpopHeaders(token, { claims: { ath: 'x' } }))).toBe('dpop_invalid');
    expect(await code(dpopHeaders(token, { omit: ['ath'] }))).toBe('dpop_invalid');
    const other = await mintToken(issuerKey, issuer, { jkt: clientJkt });
    expect(await code(['Authorization', `DPoP ${token}`, 'DPoP', await mintProof(client, { token: other })])).toBe('dpop_invalid');
  });

  it('step 13: the proof key must match cnf.jkt (a valid proof by another key is refused)', async () => {
    const other = await makeKey('ES256');
    expect(await code(dpopHeaders(token, {}, other))).toBe('dpop_invalid');
  });
});

describe('RFC 9449 §11.1: replay', () => {
  it('a proof is accepted once; the same proof again is refused', async () => {
    const h = await dpopHeaders(token);
    expect(await code(h)).toBe('ok');
    expect(await code(h)).toBe('dpop_invalid');
  });

  it('a replay at the last instant the proof is still acceptable is refused (fake clock, whole-second edges)', async () => {
    const T = Math.floor(Date.now() / 1000);
    let now = T * 1000 + 900;
    const g = await gateway({}, { clock: () => now, replay: new MemoryReplayStore({ maxEntries: 1000, clock: () => now }) });
    const h = await dpopHeaders(token, { iat: T });
    expect(await outcome(() => g.run(h))).toBe('ok');
    now = (T + 60 + 5) * 1000 + 999; // max_age_s 60 + clock_skew_s 5: the proof's iat is still in the window
    expect(await outcome(() => g.run(h))).toBe('dpop_invalid');
    now = (T + 60 + 5 + 1) * 1000; // past the window: refused by iat anyway
    expect(await outcome(() => g.run(h))).toBe('dpop_invalid');
    g.close();
  });

  it('a proof first used late in its window is remembered to the window\'s end, whatever the replay store\'s whole seconds: a replay 2.55 s later, 0.25 s before the end, is refused (r21b 11)', async () => {
    const T = Math.floor(Date.now() / 1000);
    // The store counts whole seconds from its creation, here half a second off the proof's iat: its
    // own rounding does not cover for an entry kept shorter than the proof is accepted.
    let now = T * 1000 + 500;
    const g = await gateway({}, { clock: () => now, replay: new MemoryReplayStore({ maxEntries: 1000, clock: () => now }) });
    const h = await dpopHeaders(token, { iat: T });
    now = (T + 62) * 1000 + 200; // 2.8 s of the proof's window (max_age_s 60 + clock_skew_s 5) left
    expect(await outcome(() => g.run(h))).toBe('ok');
    now = (T + 64) * 1000 + 750;
    expect(await outcome(() => g.run(h))).toBe('dpop_invalid');
    // Refused as a replay: another proof with the same iat is still accepted then.
    expect(await outcome(async () => g.run(await dpopHeaders(token, { iat: T })))).toBe('ok');
    g.close();
  });

  it('replay across keys: jti is scoped by key thumbprint, and a captured proof does not work with another key\'s token', async () => {
    const jti = randomUUID();
    const k2 = await makeKey('ES256');
    const t2 = await mintToken(issuerKey, issuer, { jkt: await thumbprint(k2) });
    expect(await code(dpopHeaders(token, { claims: { jti } }))).toBe('ok');
    expect(await code(dpopHeaders(t2, { claims: { jti } }, k2))).toBe('ok'); // another key may use the same jti
    const captured = await mintProof(client, { token: t2 });
    expect(await code(['Authorization', `DPoP ${t2}`, 'DPoP', captured])).toBe('dpop_invalid'); // jkt mismatch
  });

  it('a replay store failure fails closed with replay_store_unavailable (sync and async)', async () => {
    const throwing: ReplayStore = { claim: () => { throw new Error('down'); }, ready: () => false, close: async () => {} };
    const rejecting: ReplayStore = { claim: () => Promise.reject(new Error('down')), ready: () => false, close: async () => {} };
    for (const replay of [throwing, rejecting]) {
      const g = await gateway({}, { replay });
      expect(await outcome(async () => g.run(await dpopHeaders(token)))).toBe('replay_store_unavailable');
      g.close();
    }
    const asyncOk: ReplayStore = { claim: async () => true, ready: () => true, close: async () => {} };
    const g = await gateway({}, { replay: asyncOk });
    expect(await outcome(async () => g.run(await dpopHeaders(token)))).toBe('ok');
    g.close();
  });
});

describe('RFC 9449 §7.2 and SPEC §5: Bearer downgrade and dpop.required', () => {
  it('a cnf-bound token presented as Bearer is refused, even with a valid proof', async () => {
    expect(await code(['Authorization', `Bearer ${token}`])).toBe('token_invalid');
    expect(await code(['Authorization', `Bearer ${token}`, 'DPoP', await mintProof(client, { token })])).toBe('token_invalid');
    const lax = await gateway({ dpop: { required: false } });
    expect(await outcome(() => lax.run(['Authorization', `Bearer ${token}`]))).toBe('token_invalid');
    lax.close();
  });

  it('with dpop.required, an unbound token is refused as Bearer and as DPoP', async () => {
    const unbound = await mintToken(issuerKey, issuer, { jkt: null });
    expect(await code(['Authorization', `Bearer ${unbound}`])).toBe('token_invalid');
    expect(await code(dpopHeaders(unbound))).toBe('token_invalid');
  });

  it('with dpop.required false, an unbound token may come as Bearer (no proof needed)', async () => {
    const lax = await gateway({ dpop: { required: false } });
    const unbound = await mintToken(issuerKey, issuer, { jkt: null });
    const ctx = await lax.run(['Authorization', `Bearer ${unbound}`]);
    expect(ctx.proof).toBeNull();
    lax.close();
  });
});

describe('RFC 6750 §2.1: Authorization header parsing', () => {
  it('no Authorization, or an unsupported scheme, is token_missing (no error code, RFC 6750 §3.1)', async () => {
    expect(await code([])).toBe('token_missing');
    expect(await code(['Authorization', 'Basic dXNlcjpwYXNz'])).toBe('token_missing');
    expect(await code(['Authorization', ''])).toBe('token_missing');
  });

  it('more than one Authorization header, a bare scheme, or non-token68 syntax is token_invalid', async () => {
    expect(await code(['Authorization', `DPoP ${token}`, 'authorization', `DPoP ${token}`])).toBe('token_invalid');
    expect(await code(['Authorization', 'DPoP'])).toBe('token_invalid');
    expect(await code(['Authorization', `DPoP ${token} extra`])).toBe('token_invalid');
    expect(await code(['Authorization', `DPoP "${token}"`])).toBe('token_invalid');
    expect(await code(['Authorization', `DPoP ${'a'.repeat(20_000)}`])).toBe('token_invalid');
  });
});

describe('verifyDpopProof for token-endpoint requests (ID-JAG guard)', () => {
  it('verifies a proof without ath when no access token is given, and checks expectedJkt when given', async () => {
    const htu = normalizeHtu('https://as.example.com/oauth2/token')!;
    const proof = await mintProof(client, { method: 'POST', htu: 'https://as.example.com/oauth2/token' });
    const opts = { method: 'POST', htu, algorithms: ['ES256'], maxAgeS: 60, clockSkewS: 5 };
    expect(verifyDpopProof(proof, opts)).toMatchObject({ jkt: clientJkt });
    expect(await outcome(() => verifyDpopProof(proof, { ...opts, expectedJkt: 'other' }))).toBe('dpop_invalid');
  });
});

describe('the proof header cache (a header seen before is not parsed again)', () => {
  it('still holds the header to the algorithms of this verification', async () => {
    const ps = await makeKey('PS256');
    const htu = normalizeHtu('https://as.example.com/oauth2/token')!;
    const opts = { method: 'POST', htu, maxAgeS: 60, clockSkewS: 5 };
    const proof = () => mintProof(ps, { method: 'POST', htu: 'https://as.example.com/oauth2/token' });
    expect(await outcome(async () => verifyDpopProof(await proof(), { ...opts, algorithms: ['ES256', 'PS256'] }))).toBe('ok');
    expect(await outcome(async () => verifyDpopProof(await proof(), { ...opts, algorithms: ['ES256'] }))).toBe('dpop_invalid');
  });
});

describe('normalizeHtu', () => {
  it('lowercases scheme and host, drops default ports and query/fragment, normalizes the path', () => {
    expect(normalizeHtu('HTTP://Example.COM:80/a/%7euser/../b?q#f')).toBe('http://example.com/a/b');
    expect(normalizeHtu('https://example.com')).toBe('https://example.com/');
    expect(normalizeHtu('https://[::1]:8443/x')).toBe('https://[::1]:8443/x');
    expect(normalizeHtu('https://[::1]:443/x')).toBe('https://[::1]/x');
    expect(normalizeHtu('https://example.com/a%2fb')).toBe('https://example.com/a%2Fb');
    for (const bad of ['ftp://example.com/', 'https://user@example.com/', 'https:///x', 'https://example.com/a b', 'https://example.com/%zz', 'https://example.com:x/']) {
      expect([bad, normalizeHtu(bad)]).toEqual([bad, null]);
    }
  });
});

describe('no secrets in errors (STYLE: generic descriptions, detail without credentials)', () => {
  it('Denials from every kind of failure never carry the token or the proof in message or cause', async () => {
    const cases: string[][] = [
      ['Authorization', `Bearer ${token}`],
      ['Authorization', `DPoP ${token}`],
      ['Authorization', `DPoP ${token}x`],
      await dpopHeaders(token, { htu: 'https://evil.example.com/' }),
      await dpopHeaders(token, { claims: { ath: 'x' } }),
      await dpopHeaders(token, {}, await makeKey('ES256')),
      ['Authorization', `DPoP ${token}`, 'DPoP', 'a.b.c'],
    ];
    for (const headers of cases) {
      let err: unknown;
      try {
        await gw.run(headers);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(Denial);
      const d = err as Denial;
      const text = `${d.message} ${String(d.cause)} ${String((d.cause as Error | undefined)?.message)} ${JSON.stringify(d.extra ?? {})}`;
      const proof = headers[3];
      expect(text).not.toContain(token.slice(0, 40));
      if (proof !== undefined && proof.length > 20) expect(text).not.toContain(proof.slice(0, 40));
    }
  });
});

describe('VerifyBatch: verifications grouped under concurrency, each still decided on its own signature', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const signed = (i: number) => {
    const input = `eyJhbGciOiJFUzI1NiJ9.${Buffer.from(`payload ${i}`).toString('base64url')}`;
    return { input, sig: cryptoSign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }) };
  };

  it('below 12 open connections every verification is inline (a boolean, no promise)', () => {
    const batch = new VerifyBatch(() => 11);
    const { input, sig } = signed(1);
    expect(batch.verify('ES256', publicKey, input, sig)).toBe(true);
    expect(batch.verify('ES256', publicKey, input + 'x', sig)).toBe(false);
  });

  it('under load they wait for the end of the turn, then each gets its own answer', async () => {
    const batch = new VerifyBatch(() => 600); // batch of up to 16
    const jobs = [0, 1, 2, 3, 4].map((i) => signed(i));
    const tampered = Buffer.from(jobs[3]!.sig);
    tampered[5]! ^= 1;
    const pending = jobs.map((j, i) => batch.verify('ES256', publicKey, i === 1 ? j.input + 'x' : j.input, i === 3 ? tampered : j.sig));
    for (const p of pending) expect(p).toBeInstanceOf(Promise);
    expect(await Promise.all(pending)).toEqual([true, false, true, false, true]);
  });

  it('a full batch (connections / 6) runs at once, without waiting for the turn to end', async () => {
    const batch = new VerifyBatch(() => 12); // batch of 2
    let settled = 0;
    const a = signed(1);
    const b = signed(2);
    const p1 = Promise.resolve(batch.verify('ES256', publicKey, a.input, a.sig)).then((v) => (settled++, v));
    const p2 = Promise.resolve(batch.verify('ES256', publicKey, b.input, b.sig)).then((v) => (settled++, v));
    await Promise.resolve();
    await Promise.resolve();
    expect(settled).toBe(2); // resolved in the same turn: no setImmediate needed
    expect(await Promise.all([p1, p2])).toEqual([true, true]);
  });

  it('through the DPoP stage: concurrent requests with good, tampered and replayed proofs', async () => {
    const g = await gateway({}, { openConnections: () => 120 });
    try {
      const good = await Promise.all([1, 2, 3].map(() => dpopHeaders(token)));
      const bad = await dpopHeaders(token);
      const parts = bad[3]!.split('.');
      const sig = Buffer.from(parts[2]!, 'base64url');
      sig[0]! ^= 1;
      bad[3] = `${parts[0]}.${parts[1]}.${sig.toString('base64url')}`;
      const results = await Promise.all([...good, bad, good[0]!].map((h) => outcome(() => g.run(h))));
      // The replay of good[0] is refused whichever of the two copies is recorded first.
      expect(results.slice(3)).toEqual(['dpop_invalid', expect.any(String)]);
      expect(results.filter((r) => r === 'ok')).toHaveLength(3);
      expect([results[0], results[4]].sort()).toEqual(['dpop_invalid', 'ok']);
    } finally {
      g.close();
    }
  });
});
