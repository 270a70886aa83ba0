/**
 * Attacks on the access token (RFC 8725, RFC 9068), through the gateway on real sockets. Every
 * forged token is refused 401 invalid_token and the upstream never sees the request.
 */
import { createHmac, createPublicKey, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen } from '../helpers/gateway.js';
import { API, b64u, startTarget, type Target } from './fixture.js';

let t: Target;
let claims: Record<string, unknown>;
let header: Record<string, unknown>;

beforeAll(async () => {
  t = await startTarget();
  const [h, p] = t.token.split('.');
  header = JSON.parse(Buffer.from(h!, 'base64url').toString()) as Record<string, unknown>;
  claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
});
afterAll(() => t.close());

/** Sends `token` with a proof correctly bound to it (so only the token can be at fault). */
async function sendToken(token: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const before = t.echo.requests.length;
  const r = await t.send({ authorization: `DPoP ${token}`, dpop: await t.agent.proof('GET', `${API}/invoices/1`, token) });
  if (r.status !== 200) expect(t.echo.requests.length).toBe(before);
  return { status: r.status, body: r.status === 200 ? {} : r.json() };
}

async function expectInvalid(token: string): Promise<void> {
  const r = await sendToken(token);
  expect(r.status).toBe(401);
  expect(r.body).toMatchObject({ error: 'invalid_token', denial_reason: 'token_invalid' });
}

describe('RFC 8725 §3.1 / §2.1: algorithm attacks', () => {
  it('the genuine token is accepted (control)', async () => {
    expect((await sendToken(t.token)).status).toBe(200);
  });

  it('alg "none" with an empty signature is refused', async () => {
    await expectInvalid(`${b64u({ ...header, alg: 'none' })}.${b64u({ ...claims, jti: randomUUID() })}.`);
  });

  it('alg "none" in other spellings is refused', async () => {
    for (const alg of ['None', 'NONE', 'nOnE']) await expectInvalid(`${b64u({ ...header, alg })}.${b64u(claims)}.`);
  });

  it('RS256/ES256 → HS256 confusion with the public key as the HMAC secret is refused', async () => {
    const jwks = (await (await fetch(t.dev.endpoints.jwks)).json()) as { keys: Record<string, unknown>[] };
    const pub = createPublicKey({ key: jwks.keys[0]! as never, format: 'jwk' });
    for (const secret of [pub.export({ type: 'spki', format: 'pem' }), JSON.stringify(jwks.keys[0]), pub.export({ type: 'spki', format: 'der' })]) {
      const h = b64u({ ...header, alg: 'HS256' });
      const p = b64u({ ...claims, jti: randomUUID() });
      const sig = createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url');
      await expectInvalid(`${h}.${p}.${sig}`);
    }
  });

  it('an algorithm outside the issuer allowlist is refused even with a valid signature', async () => {
    // A header naming an algorithm the key cannot make, over a genuine signature:
    const [, p, s] = t.token.split('.');
    await expectInvalid(`${b64u({ ...header, alg: 'PS256' })}.${p}.${s}`);
  });

  it('a header with duplicate alg members (last one "none") is refused', async () => {
    const h = Buffer.from(`{"alg":"ES256","typ":"at+jwt","kid":${JSON.stringify(header['kid'])},"alg":"none"}`).toString('base64url');
    await expectInvalid(`${h}.${b64u(claims)}.`);
  });
});

describe('RFC 8725 §3.10: keys named by the token are never trusted', () => {
  it('an embedded jwk header with the attacker key is ignored', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = await exportJWK(publicKey);
    const forged = await new SignJWT({ ...claims, jti: randomUUID() }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: header['kid'] as string, jwk }).sign(privateKey);
    await expectInvalid(forged);
  });

  it('jku and x5u pointing at an attacker key set are never fetched', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    let fetched = 0;
    const server = createServer(async (_req, res) => {
      fetched++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'evil' }] }));
    });
    const evil = await listen(server);
    try {
      for (const extra of [{ jku: `${evil}/jwks` }, { x5u: `${evil}/cert` }]) {
        const forged = await new SignJWT({ ...claims, jti: randomUUID() }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'evil', ...extra }).sign(privateKey);
        await expectInvalid(forged);
      }
      expect(fetched).toBe(0);
    } finally {
      server.close();
    }
  });

  it('kid injection and path tricks are treated as unknown keys', async () => {
    const [, p, s] = t.token.split('.');
    for (const kid of ['../../../../dev/null', "' OR '1'='1", 'http://evil.example/key', '\u0000', 'x'.repeat(5000)]) {
      const r = await sendToken(`${b64u({ ...header, kid })}.${p}.${s}`);
      expect(r.status).toBe(401);
    }
  });
});

describe('RFC 7515 §4.1.11 / RFC 9068 §2.1: header and payload shape', () => {
  it('an unknown crit extension is refused', async () => {
    await expectInvalid(t.forge({ alg: 'ES256', typ: 'at+jwt', crit: ['exp_v2'], exp_v2: 1 }, { ...claims, jti: randomUUID() }));
    // control: the same forge without crit is accepted, so only crit is at fault
    expect((await sendToken(t.forge({ alg: 'ES256', typ: 'at+jwt' }, { ...claims, jti: randomUUID() }))).status).toBe(200);
  });

  it('a nested JWS (cty: JWT) is refused', async () => {
    const forged = await t.dev.signJwt({ ...claims, jti: randomUUID() }, 'at+jwt', { cty: 'JWT' });
    await expectInvalid(forged);
  });

  it('typ other than at+jwt is refused (RFC 9068 §4: no ID tokens or other JWTs as access tokens)', async () => {
    for (const typ of ['JWT', 'dpop+jwt', 'secevent+jwt', 'mission-status-response+jwt']) {
      await expectInvalid(await t.dev.signJwt({ ...claims, jti: randomUUID() }, typ));
    }
  });

  it('a payload that is not a JSON object is refused', async () => {
    for (const payload of ['hello', '[1,2]', '"str"', '12', 'null']) {
      await expectInvalid(t.forge({ alg: 'ES256', typ: 'at+jwt' }, payload));
    }
  });

  it('a huge token is refused without being parsed', async () => {
    // The HTTP layer refuses it (431) before any parsing; the JWS size cap is a second line.
    const big = await sendToken(await t.dev.signJwt({ ...claims, jti: randomUUID(), pad: 'x'.repeat(20_000) }, 'at+jwt')).catch(() => ({ status: 431, body: {} }));
    expect(big.status).toBe(431);
  });

  it('missing required claims are refused, one at a time', async () => {
    for (const k of ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti']) {
      const c: Record<string, unknown> = { ...claims, jti: randomUUID() };
      delete c[k];
      await expectInvalid(await t.dev.signJwt(c, 'at+jwt'));
    }
  });

  it('wrong audience, wrong issuer, expired and not-yet-valid tokens are refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    for (const patch of [{ aud: 'https://other.example.com' }, { iss: 'https://evil.example.com' }, { exp: now - 120 }, { nbf: now + 600 }, { iat: now + 600 }]) {
      await expectInvalid(await t.dev.signJwt({ ...claims, jti: randomUUID(), ...patch }, 'at+jwt'));
    }
  });

  it('a token signed by another key with the same kid is refused', async () => {
    const { privateKey } = await generateKeyPair('ES256');
    const forged = await new SignJWT({ ...claims, jti: randomUUID() }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: header['kid'] as string }).sign(privateKey);
    await expectInvalid(forged);
  });

  it('malformed Authorization values are refused without a crash', async () => {
    for (const v of ['DPoP', 'DPoP ', 'DPoP a.b', 'DPoP a.b.c.d', 'DPoP ....', 'Basic dXNlcjpwYXNz', 'DPoP \u00ff\u00fe', `DPoP ${'a'.repeat(70_000)}`]) {
      const r = await t.send({ authorization: v, dpop: await t.agent.proof('GET', `${API}/invoices/1`) }).catch(() => ({ status: 431 }));
      expect([400, 401, 431]).toContain(r.status);
    }
  });
});
