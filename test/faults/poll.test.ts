/**
 * SPEC section 2 (/readyz) and section 3 (RFC 8936 poll): when the authority's poll endpoint fails,
 * /readyz turns 503 once the last successful poll is older than `mission.max_stale_s` (requests are
 * still decided, with state fetched from Mission Status), and when the endpoint answers again
 * readiness returns by itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/gateway.js';
import { API, PASS, startFaultTarget, type FaultTarget } from './harness.js';

describe('RFC 8936 poll endpoint failing and returning', () => {
  let t: FaultTarget;
  beforeAll(async () => {
    t = await startFaultTarget({ mission: `max_stale_s: 1\nevents:\n  poll: { endpoint: "{{issuer}}/ssf/poll?aud=${encodeURIComponent(API)}", interval_s: 0.2 }` });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('poll failing: /readyz 503 after max_stale_s, cached state refetched; poll back: ready again', async () => {
    expect(t.dev.addPollAudience(API)).toContain('/ssf/poll');
    await eventually(async () => (await t.admin('/readyz')).status === 200, 5000);
    const m = await t.mission();
    expect((await t.get(m.token)).status).toBe(200);

    t.proxy.set('/ssf/poll', { kind: 'answer', status: 500 });
    await eventually(async () => (await t.admin('/readyz')).status === 503, 5000);
    const ready = (await t.admin('/readyz')).json<{ checks: Record<string, boolean> }>();
    expect(ready.checks['mission_events']).toBe(false);
    // The entry is past max_stale_s (and the stream is silent): the next request asks Status again,
    // and is served from its answer, since Status itself is fine.
    const asked = t.proxy.count('/mission/status');
    expect((await t.get(m.token)).status).toBe(200);
    expect(t.proxy.count('/mission/status')).toBeGreaterThan(asked);

    t.proxy.set('/ssf/poll', PASS);
    await eventually(async () => (await t.admin('/readyz')).status === 200, 5000);
  });
});
