/**
 * SPEC section 3 "never fail open": a Mission authority that is slow, failing, timing out or
 * answering garbage makes a request with no fresh cached state 503 `mission_state_unavailable`
 * (denial_reason `state_unavailable`, Retry-After) within a bounded time, and the gateway recovers
 * by itself, without a restart, when the authority answers properly again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/gateway.js';
import { breakSignature, denialOf, PASS, startFaultTarget, type Fault, type FaultTarget } from './harness.js';

const TIMEOUT_S = 0.5;
/** Bound on the 503 for a slow or hung authority: the Status timeout plus scheduling slack. */
const BOUND_MS = TIMEOUT_S * 1000 + 1000;

describe('SPEC §3/§5 Mission authority faults: fail closed, bounded wait, recovery without restart', () => {
  let t: FaultTarget;
  beforeAll(async () => {
    t = await startFaultTarget({ mission: `status_timeout_s: ${TIMEOUT_S}\nmax_stale_s: 60` });
  });
  afterAll(async () => {
    await t?.close();
  });

  const cases: [string, Fault][] = [
    ['slower than mission.status_timeout_s', { kind: 'delay', ms: 3000 }],
    ['accepting the request and never answering', { kind: 'hang' }],
    ['answering 500', { kind: 'answer', status: 500, body: '{"error":"server_error"}' }],
    ['answering 502 with an HTML page', { kind: 'answer', status: 502, headers: { 'content-type': 'text/html' }, body: '<html>bad gateway</html>' }],
    ['resetting the connection', { kind: 'reset' }],
    ['answering 200 with bytes that are not a JWT', { kind: 'answer', status: 200, headers: { 'content-type': 'application/mission-status-response+jwt' }, body: '{"mission":{"state":"active"' }],
    ['answering 200 with plain JSON (wrong content type, not opted in)', { kind: 'answer', status: 200, headers: { 'content-type': 'application/json' }, body: '{"active":true,"mission":{"state":"active","version":1}}' }],
    ['answering 200 with an empty body', { kind: 'answer', status: 200, headers: { 'content-type': 'application/mission-status-response+jwt' }, body: '' }],
    ['answering with a valid response whose signature is broken', { kind: 'rewrite', fn: breakSignature }],
  ];

  for (const [name, fault] of cases) {
    it(`authority ${name}: 503 mission_state_unavailable with Retry-After in bounded time, then recovery`, async () => {
      const m = await t.mission();
      t.proxy.set('/mission/status', fault);
      const before = t.proxy.count('/mission/status');
      const r = await t.get(m.token);
      expect(denialOf(r)).toMatchObject({ status: 503, error: 'mission_state_unavailable', reason: 'state_unavailable' });
      expect(Number(denialOf(r).retryAfter)).toBeGreaterThanOrEqual(1);
      expect(r.ms).toBeLessThan(BOUND_MS);
      expect(t.proxy.count('/mission/status')).toBeGreaterThan(before); // the authority was asked
      expect(t.echo.requests.some((q) => q.headers['x-mission-id'] === m.id)).toBe(false);

      // Still failing: still closed (nothing was cached from the bad answer).
      const again = await t.get(m.token);
      expect(again.status).toBe(503);

      t.proxy.set('/mission/status', PASS);
      const ok = await t.get(m.token);
      expect(ok.status).toBe(200);
      expect(t.echo.requests.some((q) => q.headers['x-mission-id'] === m.id)).toBe(true);

      // Records are written off the response path: wait for the third.
      const mine = (): Record<string, unknown>[] => t.gw.evidence().filter((e) => (e['mission'] as { id?: string } | null)?.id === m.id);
      await eventually(() => mine().length >= 3);
      const records = mine();
      expect(records.map((e) => [e['decision'], e['denial_reason']])).toEqual([
        ['deny', 'state_unavailable'],
        ['deny', 'state_unavailable'],
        ['permit', null],
      ]);
    });
  }

  it('the gateway process stays healthy throughout, and counts each failure by outcome', async () => {
    expect((await t.admin('/healthz')).status).toBe(200);
    const text = (await t.admin('/metrics')).text();
    for (const outcome of ['timeout', 'http_error', 'invalid_response', 'ok']) {
      expect(text).toMatch(new RegExp(`mission_gateway_mission_status_requests_total\\{[^}]*outcome="${outcome}"[^}]*\\} [1-9]`));
    }
  });
});

describe('SPEC §3 cached state across an authority outage is bounded by mission.max_stale_s', () => {
  let t: FaultTarget;
  beforeAll(async () => {
    t = await startFaultTarget({ mission: `status_timeout_s: ${TIMEOUT_S}\nmax_stale_s: 2` });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('a Mission cached before the outage is served from cache until max_stale_s, then 503, then recovers', async () => {
    const m = await t.mission();
    expect((await t.get(m.token)).status).toBe(200);
    // After the answer: its Status query started earlier, so max_stale_s from here is past its entry's end.
    const fetchedAt = Date.now();
    t.proxy.set('/mission/status', { kind: 'answer', status: 500 });
    const asked = t.proxy.count('/mission/status');
    expect((await t.get(m.token)).status).toBe(200); // cached, the authority is not asked
    expect(t.proxy.count('/mission/status')).toBe(asked);

    await new Promise((r) => setTimeout(r, Math.max(0, fetchedAt + 2100 - Date.now())));
    const stale = await t.get(m.token);
    expect(denialOf(stale)).toMatchObject({ status: 503, reason: 'state_unavailable' });

    t.proxy.set('/mission/status', PASS);
    expect((await t.get(m.token)).status).toBe(200);
  });
});

describe('SPEC §3 an authority asking to back off (503 + Retry-After) is not hammered', () => {
  let t: FaultTarget;
  beforeAll(async () => {
    t = await startFaultTarget({ mission: `status_timeout_s: ${TIMEOUT_S}` });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('503 Retry-After: 2 is passed on; requests inside the window do not reach the authority; after it, recovery', async () => {
    const m = await t.mission();
    t.proxy.set('/mission/status', { kind: 'answer', status: 503, headers: { 'retry-after': '2' }, body: '{"error":"temporarily_unavailable"}' });
    const first = await t.get(m.token);
    expect(denialOf(first)).toMatchObject({ status: 503, reason: 'state_unavailable', retryAfter: '2' });
    const asked = t.proxy.count('/mission/status');
    const second = await t.get(m.token);
    expect(second.status).toBe(503);
    expect(Number(denialOf(second).retryAfter)).toBeLessThanOrEqual(2);
    expect(t.proxy.count('/mission/status')).toBe(asked);

    t.proxy.set('/mission/status', PASS);
    await new Promise((r) => setTimeout(r, 2000));
    await eventually(async () => (await t.get(m.token)).status === 200, 3000);
  });
});

describe('SPEC §3 lifecycle events still apply while Mission Status is failing', () => {
  let t: FaultTarget;
  beforeAll(async () => {
    t = await startFaultTarget({ mission: `status_timeout_s: ${TIMEOUT_S}\nmax_stale_s: 60` });
    t.dev.addReceiver({ endpoint: `${t.gw.url}/.well-known/ssf/push`, audience: 'https://api.example.com' });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('a revocation pushed during a Status outage denies the cached Mission at once (403, not 200, not 503)', async () => {
    const m = await t.mission();
    expect((await t.get(m.token)).status).toBe(200);
    t.proxy.set('/mission/status', { kind: 'answer', status: 500 });
    const r = await t.dev.missions.revoke(m.id);
    expect(r.deliveries?.every((d) => d.ok)).toBe(true);
    const denied = await t.get(m.token);
    expect(denied.status).toBe(403);
    expect(denied.json()).toMatchObject({ error: 'mission_terminated', denial_reason: 'mission_inactive', mission_status: 'revoked' });
    t.proxy.set('/mission/status', PASS);
    expect((await t.get(m.token)).status).toBe(403);
  });
});
