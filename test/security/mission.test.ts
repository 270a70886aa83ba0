/**
 * Attacks on Mission references, lifecycle events and Mission Status (SPEC §3), through the
 * gateway on real sockets.
 */
import { randomUUID } from 'node:crypto';
import { createServer, request as httpRequest } from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevAuthority } from '../../src/dev-authority/index.js';
import { gatewayClientKey, newAgent } from '../helpers/agent.js';
import { listen, startEcho, startGateway } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';
import { API, ENTRIES, startTarget, type Target } from './fixture.js';

const EVENT = 'https://schemas.karlmcguinness.com/mission/lifecycle-change';

function setPayload(t: Target, over: Record<string, unknown> = {}, event: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    iss: t.dev.url,
    aud: API,
    iat: Math.floor(Date.now() / 1000),
    jti: `set_${randomUUID()}`,
    sub_id: { format: 'opaque', id: t.missionId },
    events: {
      [EVENT]: { mission: { id: t.missionId, issuer: t.dev.url }, prior_state: 'active', state: 'revoked', version: 99, committed_at: new Date().toISOString(), expires_at: '2099-01-01T00:00:00Z', ...event },
    },
    ...over,
  };
}

async function push(t: Target, jwt: string, contentType = 'application/secevent+jwt'): Promise<{ status: number; body: string }> {
  const r = await raw(t.gw.url, { method: 'POST', path: '/.well-known/ssf/push', headers: { 'content-type': contentType }, body: jwt });
  return { status: r.status, body: r.text() };
}

describe('Mission references (SPEC §3)', () => {
  let t: Target;
  beforeAll(async () => {
    t = await startTarget();
  });
  afterAll(() => t.close());

  it('a Mission-Reference header naming another Mission than the token is a conflict (403)', async () => {
    const r = await t.send({
      authorization: `DPoP ${t.token}`,
      dpop: await t.agent.proof('GET', `${API}/invoices/1`, t.token),
      headers: { 'mission-reference': `id="msn_other", issuer="${t.dev.url}"` },
    });
    expect(r.status).toBe(403);
    expect(r.json()).toMatchObject({ error: 'mission_reference_conflict', denial_reason: 'mission_reference_conflict' });
  });

  it('a Mission-Reference naming the same Mission at another issuer is a conflict', async () => {
    const r = await t.send({
      authorization: `DPoP ${t.token}`,
      dpop: await t.agent.proof('GET', `${API}/invoices/1`, t.token),
      headers: { 'mission-reference': `id="${t.missionId}", issuer="https://evil.example.com"` },
    });
    expect(r.status).toBe(403);
  });

  for (const bad of ['id=msn_1', 'id="msn_1"', `id="msn_1", issuer="x", extra="y"`, 'id="a", issuer=1', '"unterminated', 'id="' + 'a'.repeat(300) + '", issuer="https://x"']) {
    it(`a malformed Mission-Reference header (${bad.slice(0, 30)}) fails closed with 400`, async () => {
      const r = await t.send({ authorization: `DPoP ${t.token}`, dpop: await t.agent.proof('GET', `${API}/invoices/1`, t.token), headers: { 'mission-reference': bad } });
      expect(r.status).toBe(400);
      expect(r.json()).toMatchObject({ error: 'invalid_request', denial_reason: 'mission_reference_malformed' });
    });
  }

  it('a malformed AAuth-Mission header fails closed with 400', async () => {
    const r = await t.send({ authorization: `DPoP ${t.token}`, dpop: await t.agent.proof('GET', `${API}/invoices/1`, t.token), headers: { 'aauth-mission': 'approver=; s256' } });
    expect(r.status).toBe(400);
    expect(r.json()).toMatchObject({ denial_reason: 'mission_reference_malformed' });
  });

  it('an AAuth-Mission header on a token with a Mission claim is a conflict', async () => {
    const r = await t.send({
      authorization: `DPoP ${t.token}`,
      dpop: await t.agent.proof('GET', `${API}/invoices/1`, t.token),
      headers: { 'aauth-mission': `approver="${t.dev.url}"; s256="${'A'.repeat(43)}"` },
    });
    expect(r.status).toBe(403);
    expect(r.json()).toMatchObject({ denial_reason: 'mission_reference_conflict' });
  });

  it('a token without a Mission reference is refused while mission.required (401 mission_claim_missing)', async () => {
    const bare = await t.dev.issueAccessToken({ clientId: 'agent-1', resource: API, jkt: t.agent.jkt });
    const r = await t.send({ authorization: `DPoP ${bare}`, dpop: await t.agent.proof('GET', `${API}/invoices/1`, bare) });
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({ error: 'invalid_token', denial_reason: 'mission_claim_missing' });
  });
});

describe('lifecycle events (RFC 8935 push, SPEC §3)', () => {
  let t: Target;
  beforeAll(async () => {
    t = await startTarget();
  });
  afterAll(() => t.close());

  it('a SET signed by an attacker key is rejected 400 with RFC 8935 error JSON and changes nothing', async () => {
    const { privateKey } = await generateKeyPair('ES256');
    const forged = await new SignJWT(setPayload(t)).setProtectedHeader({ alg: 'ES256', typ: 'secevent+jwt', kid: 'evil' }).sign(privateKey);
    const r = await push(t, forged);
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body)).toMatchObject({ err: expect.any(String) });
    expect((await t.good()).status).toBe(200);
  });

  it('a SET for another audience is rejected', async () => {
    const r = await push(t, await t.dev.signJwt(setPayload(t, { aud: 'https://other.example.com' }), 'secevent+jwt'));
    expect(r.status).toBe(400);
    expect((await t.good()).status).toBe(200);
  });

  it('a SET from an issuer this gateway does not trust is rejected', async () => {
    const r = await push(t, await t.dev.signJwt(setPayload(t, { iss: 'https://evil.example.com' }), 'secevent+jwt'));
    expect(r.status).toBe(400);
    expect((await t.good()).status).toBe(200);
  });

  it('a SET with the wrong typ, or not a JWT at all, is rejected', async () => {
    expect((await push(t, await t.dev.signJwt(setPayload(t), 'JWT'))).status).toBe(400);
    expect((await push(t, 'not-a-jwt')).status).toBe(400);
    expect((await push(t, await t.dev.signJwt(setPayload(t), 'secevent+jwt'), 'application/json')).status).toBe(400);
    expect((await t.good()).status).toBe(200);
  });

  it('after a revocation, a replayed older "active" SET (version regression) is accepted 202 but changes nothing', async () => {
    // A target of its own: the revocation must not reach the other tests' Mission, in any order.
    const own = await startTarget();
    try {
      await own.dev.missions.revoke(own.missionId);
      expect((await own.good()).status).toBe(403);
      const regress = await own.dev.signJwt(setPayload(own, {}, { state: 'active', prior_state: 'suspended', version: 1 }), 'secevent+jwt');
      expect((await push(own, regress)).status).toBe(202);
      const r = await own.good();
      expect(r.status).toBe(403);
      expect(r.json()).toMatchObject({ error: 'mission_terminated' });
    } finally {
      await own.close();
    }
  });
});

describe('Mission Status (SPEC §3): a response for another nonce is not trusted', () => {
  it('a replayed Status response (MITM) counts as the authority unreachable: 503, never a permit', async () => {
    // A man in the middle in front of the whole authority: it relays everything, but once it has
    // seen one Mission Status response it replays that response forever after.
    let captured: { status: number; headers: Record<string, string>; body: Buffer } | null = null;
    let replays = 0;
    let devPort = 0;
    const mitm = createServer((req, res) => {
      const isStatus = req.url === '/mission/status';
      if (isStatus && captured !== null) {
        replays++;
        req.resume();
        res.writeHead(captured.status, captured.headers);
        res.end(captured.body);
        return;
      }
      const up = httpRequest({ host: '127.0.0.1', port: devPort, path: req.url, method: req.method, headers: req.headers }, (ur) => {
        const chunks: Buffer[] = [];
        ur.on('data', (c: Buffer) => chunks.push(c));
        ur.on('end', () => {
          const body = Buffer.concat(chunks);
          const headers = { 'content-type': String(ur.headers['content-type']) };
          if (isStatus && ur.statusCode === 200) captured = { status: 200, headers, body };
          res.writeHead(ur.statusCode ?? 502, headers);
          res.end(body);
        });
      });
      req.pipe(up);
    });
    const mitmUrl = await listen(mitm);
    const dev = await startDevAuthority({ port: 0, quiet: true, issuer: mitmUrl });
    devPort = dev.port;
    const echo = await startEcho();
    const folder = mkdtempSync(join(tmpdir(), 'mgw-mitm-'));
    const keyFile = await gatewayClientKey(dev, folder);
    const gw = await startGateway(
      `public_base_url: ${API}
resource: ${API}
upstream: { url: ${echo.url} }
issuers: [{ issuer: ${mitmUrl} }]
mission:
  max_stale_s: 1
  client: { client_id: gw-api, private_key_file: ${keyFile} }
routes:
  - match: { method: GET, path: /invoices/* }
    action: invoices.read
`,
      { folder },
    );
    try {
      const agent = await newAgent();
      const m = (await dev.missions.create({ subject: 'user_1', client_id: 'agent-1', purpose: 'p', authorization_details: ENTRIES })) as { id: string };
      const token = await agent.token(dev, m.id, API);
      const call = async (): Promise<number> => (await raw(gw.url, { path: '/invoices/1', headers: { authorization: `DPoP ${token}`, dpop: await agent.proof('GET', `${API}/invoices/1`, token) } })).status;
      expect(await call()).toBe(200);
      await dev.missions.revoke(m.id); // no push receiver: only Status can tell
      await new Promise((r) => setTimeout(r, 1600)); // past max_stale_s: the cached "active" must not be trusted
      const r = await raw(gw.url, { path: '/invoices/1', headers: { authorization: `DPoP ${token}`, dpop: await agent.proof('GET', `${API}/invoices/1`, token) } });
      expect(replays).toBeGreaterThan(0);
      expect(r.status).toBe(503);
      expect(r.json()).toMatchObject({ error: 'mission_state_unavailable', denial_reason: 'state_unavailable' });
      expect(r.headers['retry-after']).toBeDefined();
    } finally {
      await gw.close();
      mitm.close();
      await echo.close();
      await dev.close();
    }
  });
});
