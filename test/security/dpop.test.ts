/**
 * Attacks on DPoP proofs (RFC 9449 §4.3, §7.1, §11), through the gateway on real sockets.
 */
import { createHash, randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newAgent } from '../helpers/agent.js';
import { API, startTarget, type Target } from './fixture.js';

let t: Target;
beforeAll(async () => {
  t = await startTarget();
});
afterAll(() => t.close());

const ath = (token: string): string => createHash('sha256').update(token).digest('base64url');

async function expectDpopInvalid(dpop: string | string[], path = '/invoices/1', method = 'GET'): Promise<void> {
  const before = t.echo.requests.length;
  const r = await t.send({ path, method, authorization: `DPoP ${t.token}`, dpop });
  expect(r.status).toBe(401);
  expect(r.json()).toMatchObject({ error: 'invalid_dpop_proof', denial_reason: 'dpop_invalid' });
  expect(String(r.headers['www-authenticate'])).toMatch(/^DPoP error="invalid_dpop_proof"/);
  expect(t.echo.requests.length).toBe(before);
}

describe('RFC 9449 §4.3: proof checks through the gateway', () => {
  it('a missing proof with a DPoP token is refused', async () => {
    const r = await t.send({ authorization: `DPoP ${t.token}` });
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({ denial_reason: 'dpop_invalid' });
  });

  it('step 1: two DPoP headers are refused', async () => {
    const p = await t.agent.proof('GET', `${API}/invoices/1`, t.token);
    await expectDpopInvalid([p, await t.agent.proof('GET', `${API}/invoices/1`, t.token)]);
  });

  it('step 9: a proof for another method is refused', async () => {
    await expectDpopInvalid(await t.agent.proof('POST', `${API}/invoices/1`, t.token));
  });

  it('step 10: a proof for another URL (host, path, scheme, port) is refused', async () => {
    for (const htu of ['https://evil.example.com/invoices/1', `${API}/invoices/2`, 'http://api.example.com/invoices/1', 'https://api.example.com:8443/invoices/1', `${API}/invoices`]) {
      await expectDpopInvalid(await t.agent.proof('GET', htu, t.token));
    }
  });

  it('step 10: htu is compared without query and fragment, after normalization (host case, default port, dot segments)', async () => {
    for (const htu of ['HTTPS://API.EXAMPLE.COM/invoices/1', 'https://api.example.com:443/invoices/1', `${API}/invoices/1?x=1`, `${API}/invoices/1#f`]) {
      const r = await t.send({ path: '/invoices/1?x=1', authorization: `DPoP ${t.token}`, dpop: await t.agent.proof('GET', htu, t.token) });
      expect(r.status).toBe(200);
    }
    // A proof for the un-normalized path of a request that the gateway normalizes still names the same resource.
    const r = await t.send({ path: '/a/../invoices/1', authorization: `DPoP ${t.token}`, dpop: await t.agent.proof('GET', `${API}/invoices/1`, t.token) });
    expect(r.status).toBe(200);
  });

  it('step 11: a proof too old, or from the future, is refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectDpopInvalid(await t.agent.proof('GET', `${API}/invoices/1`, t.token, { iat: now - 3600 }));
    await expectDpopInvalid(await t.agent.proof('GET', `${API}/invoices/1`, t.token, { iat: now + 600 }));
  });

  it('step 12 / §11.1: a replayed proof is refused, also after a token refresh', async () => {
    const p = await t.agent.proof('GET', `${API}/invoices/1`, t.token);
    expect((await t.send({ authorization: `DPoP ${t.token}`, dpop: p })).status).toBe(200);
    await expectDpopInvalid(p);
  });

  it('step 5 and 6: typ other than dpop+jwt and alg none/HS256 are refused', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = await exportJWK(publicKey);
    const base = { htm: 'GET', htu: `${API}/invoices/1`, ath: ath(t.token) };
    await expectDpopInvalid(await new SignJWT({ ...base, jti: randomUUID() }).setProtectedHeader({ alg: 'ES256', typ: 'JWT', jwk }).setIssuedAt().sign(privateKey));
    const h = Buffer.from(JSON.stringify({ alg: 'none', typ: 'dpop+jwt', jwk })).toString('base64url');
    const p = Buffer.from(JSON.stringify({ ...base, jti: randomUUID(), iat: Math.floor(Date.now() / 1000) })).toString('base64url');
    await expectDpopInvalid(`${h}.${p}.`);
  });

  it('step 7: a private key in the jwk header is refused', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const priv = await exportJWK(privateKey);
    const proof = await new SignJWT({ htm: 'GET', htu: `${API}/invoices/1`, jti: randomUUID(), ath: ath(t.token) })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: priv })
      .setIssuedAt()
      .sign(privateKey);
    await expectDpopInvalid(proof);
  });

  it('step 8: a proof signed by another key than its jwk is refused', async () => {
    const other = await generateKeyPair('ES256');
    const proof = await new SignJWT({ htm: 'GET', htu: `${API}/invoices/1`, jti: randomUUID(), ath: ath(t.token) })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: t.agent.publicJwk })
      .setIssuedAt()
      .sign(other.privateKey);
    await expectDpopInvalid(proof);
  });

  it('ath: a proof for another access token is refused', async () => {
    await expectDpopInvalid(await t.agent.proof('GET', `${API}/invoices/1`, 'another-token'));
    await expectDpopInvalid(await t.agent.proof('GET', `${API}/invoices/1`));
  });

  it('cnf.jkt: a stolen token used with the thief\'s own key is refused', async () => {
    const thief = await newAgent();
    await expectDpopInvalid(await thief.proof('GET', `${API}/invoices/1`, t.token));
  });

  it('§7.1: a DPoP-bound token downgraded to Bearer is refused', async () => {
    const r = await t.send({ authorization: `Bearer ${t.token}` });
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({ error: 'invalid_token', denial_reason: 'token_invalid' });
  });

  it('huge and malformed proofs are refused without a crash', async () => {
    for (const p of ['', 'x', 'a.b.c', 'a.b', '....', `${'a'.repeat(9000)}.b.c`, Buffer.from('{"typ":"dpop+jwt"}').toString('base64url') + '.e30.']) {
      await expectDpopInvalid(p);
    }
  });
});

describe('RFC 9449 §8: server nonces', () => {
  it('asks for a nonce with use_dpop_nonce, accepts it, and advertises a fresh one on success', async () => {
    const n = await startTarget('dpop: { nonce: true }');
    try {
      const first = await n.good();
      expect(first.status).toBe(401);
      expect(first.json()).toMatchObject({ error: 'use_dpop_nonce', denial_reason: 'dpop_nonce_required' });
      const nonce = String(first.headers['dpop-nonce']);
      expect(nonce.length).toBeGreaterThan(10);
      expect(String(first.headers['www-authenticate'])).toContain('error="use_dpop_nonce"');
      const ok = await n.good('/invoices/1', 'GET', { nonce });
      expect(ok.status).toBe(200);
      expect(ok.headers['dpop-nonce']).toBeDefined();
      const stale = await n.good('/invoices/1', 'GET', { nonce: 'not-a-nonce' });
      expect(stale.status).toBe(401);
      expect(stale.json()).toMatchObject({ denial_reason: 'dpop_nonce_required' });
      // Without dpop.nonce_secret the secret is the process's: a reload keeps issued nonces valid.
      expect(await n.gw.gateway.reload()).toBe(true);
      expect((await n.good('/invoices/1', 'GET', { nonce })).status).toBe(200);
    } finally {
      await n.close();
    }
  });

  it("an upstream's own DPoP-Nonce is replaced by the gateway's, and its Mission-Decision dropped: one nonce a client can use (r21d 1, 2)", async () => {
    const n = await startTarget('dpop: { nonce: true }', (_req, res) => {
      res.writeHead(200, { 'dpop-nonce': 'up-nonce', 'mission-decision': 'dec_FORGED', 'content-type': 'text/plain' });
      res.end('ok');
    });
    try {
      const nonce = String((await n.good()).headers['dpop-nonce']);
      const ok = await n.good('/invoices/1', 'GET', { nonce });
      expect(ok.status).toBe(200);
      const next = ok.headers['dpop-nonce'];
      expect(typeof next).toBe('string');
      expect(next).not.toContain('up-nonce');
      expect(ok.headers['mission-decision']).toBeUndefined();
      // The nonce it was given works.
      expect((await n.good('/invoices/1', 'GET', { nonce: String(next) })).status).toBe(200);
    } finally {
      await n.close();
    }
  });
});
