/**
 * SPEC section 5 `keys_unavailable` and the issuer key lifecycle (src/auth/keys.ts): a rotation is
 * picked up by refetching on an unknown `kid`; tokens signed by the old key keep working while it
 * stays in the JWKS and stop once it leaves; when the issuer vanishes, known keys keep working
 * from the last good set and an unknown `kid` is 503 `keys_unavailable`; when it returns, the
 * gateway recovers without a restart.
 *
 * An unknown `kid` refetches at most once per 30 s cooldown (like jose's remote JWKS). The clock
 * (Date only; real timers) is moved forward past it instead of waiting.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { eventually } from '../helpers/gateway.js';
import { denialOf, PASS, startFaultTarget, type FaultTarget } from './harness.js';

const COOLDOWN_MS = 30_000;
/** A key set whose entries are all malformed (no usable key, none withdrawn on purpose). */
const BROKEN_ENTRIES = '{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"},{"use":"sig"},7,null]}';

function kidOf(jwt: string): string {
  return (JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString('utf8')) as { kid: string }).kid;
}

const skip = (ms: number): void => {
  vi.setSystemTime(Date.now() + ms);
};

describe('issuer keys (JWKS) rotating, vanishing and returning', () => {
  let t: FaultTarget;
  beforeEach(async () => {
    // Fake Date before anything captures Date.now, so every party shares the moved clock.
    vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true });
    t = await startFaultTarget({ mission: 'status_timeout_s: 1' });
    // Let the gateway's start-up key fetch finish.
    await new Promise((r) => setTimeout(r, 200));
  });
  afterEach(async () => {
    await t?.close();
    vi.useRealTimers();
  });
  afterAll(() => {
    vi.useRealTimers();
  });

  it('rotation: a new kid is fetched (after the cooldown); old-key tokens work while the key is published, and fail once it is gone', async () => {
    const m = await t.mission();
    const a = m.token;
    expect((await t.get(a)).status).toBe(200);

    await t.dev.rotateKey();
    const b = await t.agent.token(t.dev, m.id, 'https://api.example.com');
    expect(kidOf(b)).not.toBe(kidOf(a));
    // Inside the cooldown after the start-up fetch the new kid is not fetched yet: 401, not a hang.
    expect(denialOf(await t.get(b))).toMatchObject({ status: 401, reason: 'token_invalid' });

    skip(COOLDOWN_MS + 1000);
    const fetches = t.proxy.count('/jwks');
    expect((await t.get(b)).status).toBe(200);
    expect(t.proxy.count('/jwks')).toBe(fetches + 1);
    expect((await t.get(a)).status).toBe(200); // the old key is still in the set

    // The old key leaves the set (the authority stops publishing it); the next fetch drops it.
    const oldKid = kidOf(a);
    t.proxy.set('/jwks', { kind: 'rewrite', fn: (body) => JSON.stringify({ keys: (JSON.parse(body) as { keys: { kid: string }[] }).keys.filter((k) => k.kid !== oldKid) }) });
    await t.dev.rotateKey();
    const c = await t.agent.token(t.dev, m.id, 'https://api.example.com');
    skip(COOLDOWN_MS + 1000);
    expect((await t.get(c)).status).toBe(200);
    expect(denialOf(await t.get(a))).toMatchObject({ status: 401, error: 'invalid_token', reason: 'token_invalid' });
    expect((await t.get(b)).status).toBe(200);
  });

  it('issuer gone: known kid keeps working on last-good keys; unknown kid is 503 keys_unavailable; recovery when it returns', async () => {
    const m = await t.mission();
    expect((await t.get(m.token)).status).toBe(200);

    // The JWKS endpoint resets; then the whole issuer refuses connections.
    t.proxy.set('/jwks', { kind: 'reset' });
    expect((await t.get(await t.agent.token(t.dev, m.id, 'https://api.example.com'))).status).toBe(200);
    await t.proxy.down();
    const sameKid = await t.dev.issueAccessToken({ missionId: m.id, resource: 'https://api.example.com', jkt: t.agent.jkt });
    expect((await t.get(sameKid)).status).toBe(200);

    // A token signed by the current key but not yet seen (so no verified-token cache entry).
    const spare = await t.dev.issueAccessToken({ missionId: m.id, resource: 'https://api.example.com', jkt: t.agent.jkt });
    await t.dev.rotateKey();
    const newKid = await t.dev.issueAccessToken({ missionId: m.id, resource: 'https://api.example.com', jkt: t.agent.jkt });
    expect(kidOf(newKid)).not.toBe(kidOf(spare));
    skip(COOLDOWN_MS + 1000);
    const denied = await t.get(newKid);
    expect(denialOf(denied)).toMatchObject({ status: 503, error: 'temporarily_unavailable', reason: 'keys_unavailable' });
    expect(Number(denialOf(denied).retryAfter)).toBeGreaterThanOrEqual(1);
    expect(denied.ms).toBeLessThan(9000);
    // The known kid still verifies from the last good keys (the Mission state is cached and fresh).
    expect((await t.get(spare)).status).toBe(200);
    expect((await t.admin('/healthz')).status).toBe(200);
    expect((await t.admin('/readyz')).json<{ checks: Record<string, boolean> }>().checks['issuer_keys']).toBe(true);

    await t.proxy.up();
    t.proxy.set('/jwks', PASS);
    skip(COOLDOWN_MS + 1000);
    expect((await t.get(newKid)).status).toBe(200);
    expect((await t.get(sameKid)).status).toBe(200);
  });

  it('JWKS answering garbage (HTML, truncated JSON, wrong shapes): the fetch counts as failed, a new kid is 503 keys_unavailable, recovery', async () => {
    const m = await t.mission();
    expect((await t.get(m.token)).status).toBe(200);
    await t.dev.rotateKey();
    const fresh = await t.dev.issueAccessToken({ missionId: m.id, resource: 'https://api.example.com', jkt: t.agent.jkt });
    const garbage: [string, string][] = [
      ['text/html', '<html>maintenance</html>'],
      ['application/json', '{"keys":[{"kty":"EC"'],
      ['application/json', '[]'],
      ['application/json', '{"keys":"none"}'],
      ['application/json', BROKEN_ENTRIES],
    ];
    for (const [type, body] of garbage) {
      t.proxy.set('/jwks', { kind: 'answer', status: 200, headers: { 'content-type': type }, body });
      skip(COOLDOWN_MS + 1000);
      expect(denialOf(await t.get(fresh)), body).toMatchObject({ status: 503, reason: 'keys_unavailable' });
      // The failed fetch is counted, and the set it would have replaced is kept (see 'issuer gone').
      const metrics = (await t.admin('/metrics')).text();
      expect(metrics).toMatch(/mission_gateway_jwks_refresh_total\{[^}]*outcome="failure"[^}]*\} [1-9]/);
    }
    t.proxy.set('/jwks', PASS);
    skip(COOLDOWN_MS + 1000);
    expect((await t.get(fresh)).status).toBe(200);
  });

  it.each([
    ['broken entries', BROKEN_ENTRIES],
    ['only entries without kty, as a truncated set may be (r21b 14)', '{"keys":[{"kid":"k1","use":"sig"},{"kid":"k2"}]}'],
  ])('a JWKS of %s does not replace the last good keys: tokens they verified keep working', async (_what, body) => {
    const m = await t.mission();
    expect((await t.get(m.token)).status).toBe(200);
    t.proxy.set('/jwks', { kind: 'answer', status: 200, headers: { 'content-type': 'application/json' }, body });
    skip(COOLDOWN_MS + 1000);
    // A kid the issuer never had makes the gateway fetch the set again.
    const b64 = (v: object): string => Buffer.from(JSON.stringify(v)).toString('base64url');
    const now = Math.floor(Date.now() / 1000);
    const stranger = `${b64({ alg: 'ES256', typ: 'at+jwt', kid: 'never-published' })}.${b64({ iss: t.proxy.url, aud: 'https://api.example.com', sub: 'user_1', client_id: 'agent-1', iat: now, exp: now + 300, jti: 'j1', cnf: { jkt: t.agent.jkt } })}.${'A'.repeat(86)}`;
    const fetches = t.proxy.count('/jwks');
    expect(denialOf(await t.get(stranger))).toMatchObject({ status: 503, reason: 'keys_unavailable' });
    expect(t.proxy.count('/jwks')).toBe(fetches + 1);
    expect((await t.get(m.token)).status).toBe(200);
  });

  it('the issuer moves its JWKS (metadata names a new jwks_uri, the old one is gone): followed on the next fetch; a key left behind stops working', async () => {
    const m = await t.mission();
    const a = m.token;
    expect((await t.get(a)).status).toBe(200);
    const oldKid = kidOf(a);
    await t.dev.rotateKey();
    const b = await t.dev.issueAccessToken({ missionId: m.id, resource: 'https://api.example.com', jkt: t.agent.jkt });
    // The new home serves the authority's current keys without the old one.
    const moved = createServer((_req, res) => {
      void fetch(`http://127.0.0.1:${t.dev.port}/jwks`)
        .then((r) => r.json() as Promise<{ keys: { kid: string }[] }>)
        .then((set) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: set.keys.filter((k) => k.kid !== oldKid) })));
    });
    await new Promise<void>((r) => moved.listen(0, '127.0.0.1', r));
    try {
      const movedUrl = `http://127.0.0.1:${(moved.address() as AddressInfo).port}/keys`;
      t.proxy.set('/.well-known', { kind: 'rewrite', fn: (body) => JSON.stringify({ ...(JSON.parse(body) as object), jwks_uri: movedUrl }) });
      t.proxy.set('/jwks', { kind: 'answer', status: 404 });
      skip(COOLDOWN_MS + 1000);
      expect((await t.get(b)).status).toBe(200);
      expect(denialOf(await t.get(a))).toMatchObject({ status: 401, reason: 'token_invalid' });
    } finally {
      moved.closeAllConnections();
      await new Promise((r) => moved.close(r));
    }
  });

  it('a Status answer signed by a new key while the JWKS endpoint hangs: 503 state_unavailable within mission.status_timeout_s', async () => {
    const m = await t.mission();
    await t.dev.rotateKey(); // Status answers are now signed with a kid the gateway has not seen
    t.proxy.set('/jwks', { kind: 'hang' });
    skip(COOLDOWN_MS + 1000);
    const r = await t.get(m.token);
    expect(denialOf(r)).toMatchObject({ status: 503, error: 'mission_state_unavailable', reason: 'state_unavailable' });
    expect(r.ms).toBeLessThan(1000 + 1000); // status_timeout_s: 1, plus slack; not the 5 s key fetch timeout
    // Recovery: once the hung key fetch gives up (its own 5 s timeout), the next request refetches.
    t.proxy.set('/jwks', PASS);
    skip(COOLDOWN_MS + 1000);
    await eventually(async () => (await t.get(m.token)).status === 200, 8000);
  });

  it('a token with a new kid while the JWKS endpoint hangs: 503 keys_unavailable within the 5 s key fetch timeout', async () => {
    const m = await t.mission();
    expect((await t.get(m.token)).status).toBe(200);
    await t.dev.rotateKey();
    const fresh = await t.dev.issueAccessToken({ missionId: m.id, resource: 'https://api.example.com', jkt: t.agent.jkt });
    t.proxy.set('/jwks', { kind: 'hang' });
    skip(COOLDOWN_MS + 1000);
    const r = await t.get(fresh);
    expect(denialOf(r)).toMatchObject({ status: 503, reason: 'keys_unavailable' });
    expect(r.ms).toBeLessThan(5000 + 1500);
    expect((await t.get(m.token)).status).toBe(200); // the known key is unaffected meanwhile
    t.proxy.set('/jwks', PASS);
    skip(COOLDOWN_MS + 1000);
    await eventually(async () => (await t.get(fresh)).status === 200, 3000);
  });
});

describe('issuer unreachable when the gateway starts', () => {
  let t: FaultTarget;
  beforeEach(async () => {
    vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true });
    t = await startFaultTarget({
      beforeGateway: (p) => {
        p.set('/.well-known', { kind: 'answer', status: 500 });
        p.set('/jwks', { kind: 'answer', status: 500 });
      },
    });
  });
  afterEach(async () => {
    await t?.close();
    vi.useRealTimers();
  });

  it('not ready, tokens 503 keys_unavailable (not 401); once the issuer is back, the first request after the cooldown loads the keys', async () => {
    const m = await t.mission();
    await eventually(async () => (await t.admin('/readyz')).json<{ checks: Record<string, boolean> }>().checks['issuer_keys'] === false);
    expect((await t.admin('/readyz')).status).toBe(503);
    const r = await t.get(m.token);
    expect(denialOf(r)).toMatchObject({ status: 503, reason: 'keys_unavailable' });

    t.proxy.clear();
    skip(COOLDOWN_MS + 1000);
    expect((await t.get(m.token)).status).toBe(200);
    expect((await t.admin('/readyz')).status).toBe(200);
  });
});
