/**
 * RFC 9068 access tokens through the token stage, with keys from a real JWKS server (keys.ts).
 */
import { createHmac, generateKeyPairSync, randomUUID } from 'node:crypto';
import * as jose from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { IssuerKeys } from '../../src/auth/keys.js';
import { createTokenStage, verifyJwt } from '../../src/auth/token.js';
import type { Config } from '../../src/config/schema.js';
import { Denial } from '../../src/errors.js';
import type { RequestContext } from '../../src/pipeline/context.js';
import { JwksServer, logger, makeConfig, makeCtx, makeKey, mintToken, newMetrics, outcome, RESOURCE, type Key } from './helpers.js';

let jwks: JwksServer;
let signing: Key;
let issuer: string;
const open: IssuerKeys[] = [];

beforeAll(async () => {
  jwks = await new JwksServer().start();
  issuer = jwks.url;
  signing = await makeKey('ES256', 'k1');
});
afterAll(async () => {
  await jwks.close();
});
afterEach(() => {
  for (const k of open.splice(0)) k.close();
  jwks.down = false;
  jwks.setKeys(signing);
});

function setup(o: { config?: Config; cooldownMs?: number; clock?: () => number } = {}) {
  jwks.setKeys(signing);
  const config = o.config ?? makeConfig(issuer, `${issuer}/jwks`);
  const metrics = newMetrics();
  const keys = new IssuerKeys({ issuers: config.issuers, metrics, logger, cooldownMs: o.cooldownMs ?? 0, refreshIntervalMs: 0, ...(o.clock ? { clock: o.clock } : {}) });
  open.push(keys);
  const stage = createTokenStage({ config, keys, metrics, logger, ...(o.clock ? { clock: o.clock } : {}) });
  const run = (token: string, ctx: RequestContext = makeCtx([])): unknown => {
    ctx.credentials = { scheme: 'DPoP', token, proof: null };
    return stage(ctx);
  };
  return { config, keys, metrics, stage, run };
}

describe('RFC 9068 §4 access token validation', () => {
  it('accepts a valid at+jwt and sets ctx.token (issuer, subject, client_id, jti, cnf.jkt)', async () => {
    const { run, keys } = setup();
    await keys.start();
    const token = await mintToken(signing, issuer, { jkt: 'abc' });
    const ctx = makeCtx([]);
    await run(token, ctx);
    expect(ctx.token).toMatchObject({ raw: token, issuer, subject: 'user-1', clientId: 'agent-1', jkt: 'abc' });
  });

  it('RFC 9068 §2.1 / §4: typ must be at+jwt or application/at+jwt (case-insensitive); JWT or missing is refused', async () => {
    const { run, keys } = setup();
    await keys.start();
    for (const typ of ['application/AT+JWT', 'AT+JWT', 'at+jwt']) {
      const t = await mintToken(signing, issuer, { header: { typ } });
      expect([typ, await outcome(() => run(t))]).toEqual([typ, 'ok']);
    }
    for (const typ of ['JWT', 'at+jwt ', 'dpop+jwt', undefined]) {
      const t = await mintToken(signing, issuer, { header: { typ } });
      expect([typ, await outcome(() => run(t))]).toEqual([typ, 'token_invalid']);
    }
  });

  it('RFC 9068 §4 / RFC 8725 §3.1: an alg outside the issuer\'s list is refused', async () => {
    const config = makeConfig(issuer, `${issuer}/jwks`, { issuers: [{ issuer, jwks_uri: `${issuer}/jwks`, algorithms: ['EdDSA'] }] });
    const { run, keys } = setup({ config });
    await keys.start();
    expect(await outcome(async () => run(await mintToken(signing, issuer)))).toBe('token_invalid');
  });

  it("RFC 8725 §3.1: an issuer's algorithms bind its own keys, even when its JWK names no alg and another issuer allows the one used", async () => {
    const other = await new JwksServer().start();
    try {
      const config = makeConfig(issuer, `${issuer}/jwks`, {
        issuers: [
          { issuer, jwks_uri: `${issuer}/jwks`, algorithms: ['RS256'] },
          { issuer: other.url, jwks_uri: `${other.url}/jwks`, algorithms: ['PS256'] },
        ],
      });
      const { run, keys } = setup({ config });
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      jwks.keys = [{ ...(publicKey.export({ format: 'jwk' }) as jose.JWK), kid: 'rsa-a' }]; // no alg member
      other.setKeys(await makeKey('PS256', 'b1'));
      await keys.start();
      const signed = (alg: string) =>
        new jose.CompactSign(new TextEncoder().encode(JSON.stringify({ iss: issuer, sub: 's', aud: RESOURCE, client_id: 'c', jti: randomUUID(), iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 60 })))
          .setProtectedHeader({ alg, typ: 'at+jwt', kid: 'rsa-a' })
          .sign(privateKey);
      expect(await outcome(async () => run(await signed('RS256')))).toBe('ok');
      expect(await outcome(async () => run(await signed('PS256')))).toBe('token_invalid');
      // Each layer on its own: the key source gives issuer A no key for PS256, and the verifier
      // refuses it before asking for one.
      expect(() => keys.resolve(issuer, { alg: 'PS256', kid: 'rsa-a' })).toThrow(Denial);
      const lookups: string[] = [];
      const resolver = { resolve: (iss: string) => (lookups.push(iss), keys.resolve(iss, { alg: 'RS256', kid: 'rsa-a' })), metadata: () => Promise.reject(new Error('none')), ready: () => true };
      const verify = (t: string, o: Partial<Parameters<typeof verifyJwt>[1]> = {}) => outcome(() => verifyJwt(t, { typ: 'at+jwt', algorithms: ['RS256', 'PS256'], keys: resolver, ...o }));
      expect(await verify(await signed('PS256'), { issuerAlgorithms: new Map([[issuer, ['RS256']]]) })).toBe('token_invalid');
      expect(await verify(await signed('PS256'), { algorithms: ['RS256'] })).toBe('token_invalid');
      expect(await verify(await signed('RS256'), { issuer: [other.url] })).toBe('token_invalid');
      expect(lookups).toEqual([]);
      expect(await verify(await signed('RS256'))).toBe('ok');
    } finally {
      await other.close();
    }
  });

  it('a cached token is held to its nbf again (a clock stepped back) and to its key being current (a key gone, no event heard)', async () => {
    let now = Date.now();
    const nbf = Math.floor(now / 1000) - 10;
    // Keys whose change listeners are never told: only isCurrent can say the key is gone.
    class Deaf extends IssuerKeys {
      override onKeysChanged(): void {}
    }
    const config = makeConfig(issuer, `${issuer}/jwks`);
    jwks.setKeys(signing);
    const metrics = newMetrics();
    const keys = new Deaf({ issuers: config.issuers, metrics, logger, cooldownMs: 0, refreshIntervalMs: 0, clock: () => now });
    open.push(keys);
    const stage = createTokenStage({ config, keys, metrics, logger, clock: () => now });
    const run = (token: string): unknown => {
      const ctx = makeCtx([]);
      ctx.credentials = { scheme: 'DPoP', token, proof: null };
      return stage(ctx);
    };
    await keys.start();
    const token = await mintToken(signing, issuer, { claims: { nbf } });
    expect(await outcome(() => run(token))).toBe('ok');
    now = (nbf - 30 - 1) * 1000; // before nbf - clock_skew_s
    expect(await outcome(() => run(token))).toBe('token_invalid');
    now = Date.now();
    expect(await outcome(() => run(token))).toBe('ok');
    // The issuer rotates away from k1; a token under the new key makes the gateway fetch the set.
    const next = await makeKey('ES256', 'k2');
    jwks.setKeys(next);
    expect(await outcome(async () => run(await mintToken(next, issuer)))).toBe('ok');
    expect(await outcome(() => run(token))).toBe('token_invalid');
  });

  it('RFC 8725 §3.1: alg none is refused', async () => {
    const { run, keys } = setup();
    await keys.start();
    const t = new jose.UnsecuredJWT({ iss: issuer, sub: 's', aud: RESOURCE, client_id: 'c', jti: 'j', iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 60 }).encode();
    const withTyp = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url')}.${t.split('.')[1]}.`;
    expect(await outcome(() => run(withTyp))).toBe('token_invalid');
  });

  it('RFC 8725 §2.1: RS256→HS256 confusion with the issuer public key as HMAC secret is refused', async () => {
    const rsa = await makeKey('RS256', 'rsa1');
    const config = makeConfig(issuer, `${issuer}/jwks`, { issuers: [{ issuer, jwks_uri: `${issuer}/jwks`, algorithms: ['RS256'] }] });
    const { run, keys } = setup({ config });
    jwks.setKeys(rsa);
    await keys.start();
    const pem = await jose.exportSPKI(rsa.publicKey);
    const now = Math.floor(Date.now() / 1000);
    const h = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'at+jwt', kid: 'rsa1' })).toString('base64url');
    const p = Buffer.from(JSON.stringify({ iss: issuer, sub: 's', aud: RESOURCE, client_id: 'c', jti: 'j', iat: now, exp: now + 60 })).toString('base64url');
    for (const secret of [pem, JSON.stringify(rsa.publicJwk)]) {
      const t = `${h}.${p}.${createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url')}`;
      expect(await outcome(() => run(t))).toBe('token_invalid');
    }
    // The same key does verify a real RS256 token.
    expect(await outcome(async () => run(await mintToken(rsa, issuer)))).toBe('ok');
  });

  it('RFC 9068 §4: iss must be a configured issuer', async () => {
    const { run, keys } = setup();
    await keys.start();
    expect(await outcome(async () => run(await mintToken(signing, 'https://evil.example.com')))).toBe('token_invalid');
    expect(await outcome(async () => run(await mintToken(signing, issuer + '/')))).toBe('token_invalid');
  });

  it('RFC 9068 §4: aud must contain the resource (string or array)', async () => {
    const { run, keys } = setup();
    await keys.start();
    expect(await outcome(async () => run(await mintToken(signing, issuer, { claims: { aud: ['x', RESOURCE] } })))).toBe('ok');
    expect(await outcome(async () => run(await mintToken(signing, issuer, { claims: { aud: 'https://other.example.com' } })))).toBe('token_invalid');
    expect(await outcome(async () => run(await mintToken(signing, issuer, { omit: ['aud'] })))).toBe('token_invalid');
  });

  it('RFC 9068 §4 / RFC 7519 §4.1.4: an expired token is refused (skew bounded)', async () => {
    const { run, keys, config } = setup();
    await keys.start();
    const now = Math.floor(Date.now() / 1000);
    const skew = config.token.clock_skew_s;
    expect(await outcome(async () => run(await mintToken(signing, issuer, { claims: { exp: now - skew - 1 } })))).toBe('token_invalid');
    expect(await outcome(async () => run(await mintToken(signing, issuer, { claims: { exp: now - skew + 5 } })))).toBe('ok');
  });

  it('RFC 7519 §4.1.5: nbf in the future beyond the skew is refused', async () => {
    const { run, keys } = setup();
    await keys.start();
    expect(await outcome(async () => run(await mintToken(signing, issuer, { claims: { nbf: Math.floor(Date.now() / 1000) + 600 } })))).toBe('token_invalid');
  });

  it('RFC 9068 §4: iat in the future beyond the skew is refused', async () => {
    const { run, keys } = setup();
    await keys.start();
    expect(await outcome(async () => run(await mintToken(signing, issuer, { claims: { iat: Math.floor(Date.now() / 1000) + 600 } })))).toBe('token_invalid');
  });

  it('RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat, jti are required', async () => {
    const { run, keys } = setup();
    await keys.start();
    for (const claim of ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti']) {
      const t = await mintToken(signing, issuer, { omit: [claim] });
      expect([claim, await outcome(() => run(t))]).toEqual([claim, 'token_invalid']);
    }
    expect(await outcome(async () => run(await mintToken(signing, issuer, { claims: { exp: '9999999999' } })))).toBe('token_invalid');
  });

  it('a lone surrogate in sub, client_id or jti (a JSON \\ud800 escape) is refused: it names no one', async () => {
    const { run, keys } = setup();
    await keys.start();
    for (const [claim, value] of [['sub', '\ud800'], ['client_id', 'agent\udc00'], ['jti', 'j\udbff']] as const) {
      const t = await mintToken(signing, issuer, { claims: { [claim]: value } });
      expect([claim, await outcome(() => run(t))]).toEqual([claim, 'token_invalid']);
    }
    // A surrogate pair (an astral character) is a name like any other.
    expect(await outcome(async () => run(await mintToken(signing, issuer, { claims: { sub: 'user-\ud83d\ude00' } })))).toBe('ok');
  });

  it('RFC 8725 §3.10: jku, x5u and an embedded jwk in the token header are ignored (attacker key does not verify)', async () => {
    const { run, keys } = setup();
    await keys.start();
    const attacker = await makeKey('ES256', 'k1');
    for (const header of [{ jwk: attacker.publicJwk }, { jku: `${issuer}/evil-jwks` }, { x5u: `${issuer}/evil.pem` }]) {
      const t = await mintToken(attacker, issuer, { header });
      expect(await outcome(() => run(t))).toBe('token_invalid');
    }
  });

  it('RFC 7800 §3.1: a cnf we cannot check (x5t#S256 only, malformed) is refused, not treated as unbound', async () => {
    const { run, keys } = setup();
    await keys.start();
    expect(await outcome(async () => run(await mintToken(signing, issuer, { claims: { cnf: { 'x5t#S256': 'abc' } } })))).toBe('token_invalid');
    expect(await outcome(async () => run(await mintToken(signing, issuer, { claims: { cnf: 'abc' } })))).toBe('token_invalid');
  });

  it('a signature by a key not in the issuer set is refused', async () => {
    const { run, keys } = setup();
    await keys.start();
    const other = await makeKey('ES256', 'k1');
    expect(await outcome(async () => run(await mintToken(other, issuer)))).toBe('token_invalid');
  });

  it('huge and malformed tokens are refused without a key lookup', async () => {
    const { run, keys } = setup();
    await keys.start();
    const before = jwks.requests;
    for (const t of ['x'.repeat(20_000), 'a.b.c', 'a.b', '....', `${'e'.repeat(100)}.${'e'.repeat(100)}.`]) {
      expect(await outcome(() => run(t))).toBe('token_invalid');
    }
    expect(jwks.requests).toBe(before);
  });
});

describe('verified-token cache', () => {
  it('a cache hit is synchronous and skips the signature, but still checks exp with the clock', async () => {
    let now = Date.now();
    const { run, keys } = setup({ clock: () => now });
    await keys.start();
    const t = await mintToken(signing, issuer, { claims: { exp: Math.floor(now / 1000) + 60 } });
    await run(t);
    const ctx = makeCtx([]);
    expect(run(t, ctx)).toBeUndefined(); // no promise: served from cache
    expect(ctx.token?.raw).toBe(t);
    now += 120_000;
    expect(await outcome(() => run(t))).toBe('token_invalid');
  });

  it('a cache hit still checks aud against the request audience (mcp.resource)', async () => {
    const config = makeConfig(issuer, `${issuer}/jwks`, { mcp: { path: '/mcp', resource: 'https://api.example.com/mcp' } });
    const { run, keys } = setup({ config });
    await keys.start();
    const t = await mintToken(signing, issuer);
    await run(t);
    expect(await outcome(() => run(t, makeCtx([], { audience: 'https://api.example.com/mcp' })))).toBe('token_invalid');
  });

  it("a forged token that reuses a cached token's signature is not served from the cache, and leaves the cached one working", async () => {
    const { run, keys } = setup();
    await keys.start();
    const t = await mintToken(signing, issuer, { claims: { sub: 'user-1' } });
    await run(t);
    const [header, payload, signature] = t.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
    const forged = `${header}.${Buffer.from(JSON.stringify({ ...claims, sub: 'admin' })).toString('base64url')}.${signature}`;
    expect(await outcome(() => run(forged))).toBe('token_invalid');
    const ctx = makeCtx([]);
    expect(run(t, ctx)).toBeUndefined(); // still a synchronous hit
    expect(ctx.token?.subject).toBe('user-1');
  });
});

describe('issuer keys (JWKS)', () => {
  it('one in-flight fetch per issuer: concurrent unknown kids share one request', async () => {
    const { run } = setup();
    const before = jwks.requests;
    const t = await mintToken(signing, issuer);
    const results = await Promise.all(Array.from({ length: 20 }, () => outcome(() => run(t))));
    expect(results.every((r) => r === 'ok')).toBe(true);
    expect(jwks.requests - before).toBe(1);
  });

  it('an unknown kid refetches only after the cooldown', async () => {
    let now = Date.now();
    const { run, keys } = setup({ cooldownMs: 30_000, clock: () => now });
    await keys.start();
    const rotated = await makeKey('ES256', 'k2');
    jwks.setKeys(signing, rotated);
    const t2 = await mintToken(rotated, issuer);
    const before = jwks.requests;
    expect(await outcome(() => run(t2))).toBe('token_invalid'); // within cooldown: no fetch
    expect(jwks.requests).toBe(before);
    now += 31_000;
    expect(await outcome(() => run(t2))).toBe('ok');
    expect(jwks.requests).toBe(before + 1);
  });

  it('key rotation: a new key is picked up and a removed key stops verifying, cached tokens included', async () => {
    const { run, keys } = setup();
    await keys.start();
    const t1 = await mintToken(signing, issuer);
    expect(await outcome(() => run(t1))).toBe('ok');
    const next = await makeKey('ES256', 'k2');
    jwks.setKeys(next);
    const t2 = await mintToken(next, issuer);
    expect(await outcome(() => run(t2))).toBe('ok'); // unknown kid -> refetch -> k1 is gone now
    expect(await outcome(() => run(t1))).toBe('token_invalid');
  });

  it('issuer unreachable: last good keys keep working; an unknown kid is 503 keys_unavailable, not invalid_token', async () => {
    const { run, keys } = setup();
    await keys.start();
    jwks.down = true;
    expect(await outcome(async () => run(await mintToken(signing, issuer)))).toBe('ok');
    const unknown = await makeKey('ES256', 'k9');
    let err: unknown;
    try {
      await run(await mintToken(unknown, issuer));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(Denial);
    expect((err as Denial).code).toBe('keys_unavailable');
    expect((err as Denial).spec.status).toBe(503);
    expect((err as Denial).retryAfter).toBeGreaterThan(0);
    expect(keys.ready()).toBe(true);
  });

  it('a reload adopts the last-good keys of issuers configured the same way (issuer unreachable during the reload)', async () => {
    const before = setup();
    await before.keys.start();
    jwks.down = true;
    const after = setup();
    after.keys.adopt(before.keys);
    await after.keys.start(); // its own fetch fails: the adopted keys stay
    expect(after.keys.ready()).toBe(true);
    expect(await outcome(async () => after.run(await mintToken(signing, issuer)))).toBe('ok');
    // Another key source is another issuer configuration: nothing is adopted.
    const moved = setup({ config: makeConfig(issuer, `${issuer}/jwks-moved`) });
    moved.keys.adopt(before.keys);
    expect(moved.keys.ready()).toBe(false);
  });

  it('never loaded: ready() is false and a token gets keys_unavailable', async () => {
    const { run, keys } = setup();
    jwks.down = true;
    await keys.start(); // never throws
    expect(keys.ready()).toBe(false);
    expect(await outcome(async () => run(await mintToken(signing, issuer)))).toBe('keys_unavailable');
  });

  it('RFC 8414 §3: keys are discovered from authorization-server metadata, then OIDC discovery', async () => {
    jwks.routes.set('/.well-known/oauth-authorization-server', { issuer, jwks_uri: `${issuer}/jwks` });
    const { run, keys } = setup({ config: makeConfig(issuer, undefined) });
    await keys.start();
    expect(keys.ready()).toBe(true);
    expect(await outcome(async () => run(await mintToken(signing, issuer)))).toBe('ok');
    expect(await keys.metadata(issuer)).toMatchObject({ jwks_uri: `${issuer}/jwks` });
    jwks.routes.delete('/.well-known/oauth-authorization-server');

    jwks.routes.set('/.well-known/openid-configuration', { issuer, jwks_uri: `${issuer}/jwks` });
    const second = setup({ config: makeConfig(issuer, undefined) });
    await second.keys.start();
    expect(second.keys.ready()).toBe(true);
    jwks.routes.delete('/.well-known/openid-configuration');
  });

  it('RFC 8414 §3.3: metadata naming another issuer is refused', async () => {
    jwks.routes.set('/.well-known/oauth-authorization-server', { issuer: 'https://evil.example.com', jwks_uri: `${issuer}/jwks` });
    const { keys } = setup({ config: makeConfig(issuer, undefined) });
    await keys.start();
    expect(keys.ready()).toBe(false);
    jwks.routes.delete('/.well-known/oauth-authorization-server');
  });

  it('a redirect is not followed and an oversized or non-JSON key set is refused (metrics count failures)', async () => {
    const { keys, metrics } = setup({ config: makeConfig(issuer, `${issuer}/big`) });
    jwks.routes.set('/big', { keys: [], pad: 'x'.repeat(600 * 1024) });
    await keys.start();
    expect(keys.ready()).toBe(false);
    const m = await metrics.registry.getSingleMetricAsString('mission_gateway_jwks_refresh_total');
    expect(m).toContain('outcome="failure"');
    const redirected = setup({ config: makeConfig(issuer, `${issuer}/redirect`) });
    await redirected.keys.start();
    expect(redirected.keys.ready()).toBe(false);
    jwks.routes.set('/notjson', 'not json');
    const second = setup({ config: makeConfig(issuer, `${issuer}/notjson`) });
    await second.keys.start();
    expect(second.keys.ready()).toBe(false);
  });

  it('RFC 7517 §4.5: keys of different types may share a kid; the one fitting alg is used', async () => {
    const rsa = await makeKey('RS256', 'k1');
    const { run, keys } = setup();
    jwks.setKeys(rsa, signing);
    await keys.start();
    expect(await outcome(async () => run(await mintToken(signing, issuer)))).toBe('ok');
    expect(await outcome(async () => run(await mintToken(rsa, issuer)))).toBe('ok');
  });

  it('JWKS entries that are private, symmetric or for encryption are never used', async () => {
    const { run, keys } = setup();
    const priv = await jose.exportJWK(signing.privateKey);
    jwks.keys = [
      { ...priv, kid: 'k1', alg: 'ES256' },
      { kty: 'oct', k: 'c2VjcmV0', kid: 'k1', alg: 'HS256' },
    ];
    await keys.start();
    expect(await outcome(async () => run(await mintToken(signing, issuer)))).toBe('token_invalid');
    jwks.keys = [{ ...signing.publicJwk, kid: 'k1', use: 'enc' }];
    const second = setup();
    jwks.keys = [{ ...signing.publicJwk, kid: 'k1', use: 'enc' }];
    await second.keys.start();
    expect(await outcome(async () => second.run(await mintToken(signing, issuer)))).toBe('token_invalid');
  });
});

describe('verifyJwt (reusable)', () => {
  it('failWith replaces token_invalid for every failure, including an unknown kid; the resolver refuses algs outside the issuer list', async () => {
    const { keys } = setup();
    await keys.start();
    const now = Math.floor(Date.now() / 1000);
    const unknownKid = await makeKey('ES256', 'nope');
    const t = await new jose.SignJWT({ sub: 's' }).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: 'nope' }).setIssuer(issuer).setIssuedAt(now).setExpirationTime(now + 60).sign(unknownKid.privateKey);
    const opts = { issuer, typ: 'jwt', algorithms: ['ES256'], keys, failWith: 'state_unavailable' as const };
    expect(await outcome(() => verifyJwt(t, opts))).toBe('state_unavailable');
    expect(await outcome(() => verifyJwt('junk', opts))).toBe('state_unavailable');
    expect(await outcome(async () => keys.resolve(issuer, { alg: 'ES512', kid: 'k1' }))).toBe('token_invalid');
  });

  it('the claims of a verified token are frozen (one object is shared by every request with that token)', async () => {
    const { run, keys } = setup();
    await keys.start();
    const ctx = makeCtx([]);
    await run(await mintToken(signing, issuer, { jkt: 'abc', claims: { mission: { id: 'm1' } } }), ctx);
    expect(Object.isFrozen(ctx.token!.claims)).toBe(true);
    expect(Object.isFrozen(ctx.token!.claims.mission)).toBe(true);
  });

  it('verifies another typ with exact audience (ID-JAG style) and refuses a longer aud array', async () => {
    const { keys } = setup();
    await keys.start();
    const now = Math.floor(Date.now() / 1000);
    const mk = (aud: unknown) =>
      new jose.SignJWT({ aud: aud as string, sub: 's', jti: 'j' } as jose.JWTPayload)
        .setProtectedHeader({ alg: 'ES256', typ: 'oauth-id-jag+jwt', kid: 'k1' })
        .setIssuer(issuer)
        .setIssuedAt(now)
        .setExpirationTime(now + 60)
        .sign(signing.privateKey);
    const opts = { issuer, typ: 'oauth-id-jag+jwt', algorithms: ['ES256'], keys, audience: 'https://as.example.com', exactAudience: true, requiredClaims: ['iss', 'sub', 'jti', 'aud', 'iat', 'exp'] };
    const ok = await verifyJwt(await mk(['https://as.example.com']), opts);
    expect(ok.payload.sub).toBe('s');
    expect(await outcome(async () => verifyJwt(await mk(['https://as.example.com', 'x']), opts))).toBe('token_invalid');
    expect(await outcome(async () => verifyJwt(await mk('https://as.example.com'), { ...opts, typ: 'at+jwt' }))).toBe('token_invalid');
  });
});

describe('cross-check: the token stage agrees with jose.jwtVerify (RFC 9068 profile)', () => {
  it('every variant jose accepts the stage accepts, every variant jose rejects the stage rejects', async () => {
    const { run, keys, config } = setup();
    await keys.start();
    const skew = config.token.clock_skew_s;
    const now = Math.floor(Date.now() / 1000);
    const other = await makeKey('ES256', 'k1');
    const variants: Array<[string, Promise<string>]> = [
      ['valid', mintToken(signing, issuer)],
      ['typ application/at+jwt', mintToken(signing, issuer, { header: { typ: 'application/at+jwt' } })],
      ['typ JWT', mintToken(signing, issuer, { header: { typ: 'JWT' } })],
      ['no typ', mintToken(signing, issuer, { header: { typ: undefined } })],
      ['aud array', mintToken(signing, issuer, { claims: { aud: ['a', RESOURCE] } })],
      ['aud other', mintToken(signing, issuer, { claims: { aud: 'https://other' } })],
      ['expired', mintToken(signing, issuer, { claims: { exp: now - skew - 10 } })],
      ['exp within skew', mintToken(signing, issuer, { claims: { exp: now - skew + 10 } })],
      ['nbf future', mintToken(signing, issuer, { claims: { nbf: now + skew + 60 } })],
      ['nbf within skew', mintToken(signing, issuer, { claims: { nbf: now + skew - 10 } })],
      ['iat future', mintToken(signing, issuer, { claims: { iat: now + skew + 60 } })],
      ['iat string', mintToken(signing, issuer, { claims: { iat: String(now) } })],
      ['wrong issuer', mintToken(signing, 'https://evil.example.com')],
      ['wrong key', mintToken(other, issuer)],
      ...['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'].map((c): [string, Promise<string>] => [`no ${c}`, mintToken(signing, issuer, { omit: [c] })]),
    ];
    const jwksSet = jose.createLocalJWKSet({ keys: jwks.keys });
    for (const [name, p] of variants) {
      const t = await p;
      let viaJose = 'ok';
      try {
        await jose.jwtVerify(t, jwksSet, {
          issuer,
          audience: RESOURCE,
          typ: 'at+jwt',
          algorithms: ['ES256', 'EdDSA', 'RS256', 'PS256'],
          clockTolerance: skew,
          maxTokenAge: 86_400,
          requiredClaims: ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'],
        });
      } catch {
        viaJose = 'token_invalid';
      }
      expect([name, await outcome(() => run(t))]).toEqual([name, viaJose]);
    }
  });
});

describe('issuer keys: start-up retry of a never-loaded issuer', () => {
  it('keys that fail to load at start are retried on a backoff until they load, with no request', async () => {
    const { keys } = setup({ cooldownMs: 30_000 });
    jwks.down = true;
    jwks.requests = 0;
    await keys.start();
    expect(keys.ready()).toBe(false);
    // Retries ~0.5 s and ~1.5 s after start (500 ms doubling): at 1 s one followed the start-up fetch
    // (two when this machine delayed the timer past 1.5 s), never a tight loop.
    await new Promise((r) => setTimeout(r, 1000));
    expect(jwks.requests).toBeGreaterThanOrEqual(2);
    expect(jwks.requests).toBeLessThanOrEqual(3);
    jwks.down = false;
    const end = Date.now() + 3000;
    while (!keys.ready() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(keys.ready()).toBe(true);
    const after = jwks.requests;
    await new Promise((r) => setTimeout(r, 1200));
    expect(jwks.requests).toBe(after); // loaded: the retries stopped
  });

  it('no retry fetch happens after close()', async () => {
    const { keys } = setup({ cooldownMs: 30_000 });
    jwks.down = true;
    await keys.start();
    jwks.requests = 0;
    keys.close();
    await new Promise((r) => setTimeout(r, 800));
    expect(jwks.requests).toBe(0);
  });
});
