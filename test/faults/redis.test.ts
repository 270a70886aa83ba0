/**
 * replay_store: redis under faults. While Redis is down (killed) or hung (a black-holed link),
 * every request that needs a single-use check fails closed, 503 `replay_store_unavailable`, fast
 * (connection refused) or within the command timeout (hung); the process stays up and /readyz says
 * not ready; when Redis is back, requests succeed again without a restart.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisServer } from '../cluster/redis-server.js';
import { eventually } from '../helpers/gateway.js';
import { denialOf, StallableLink, startFaultTarget, type FaultTarget } from './harness.js';

describe('replay_store: redis dropping and returning', () => {
  let redis: RedisServer;
  let link: StallableLink;
  let t: FaultTarget;
  beforeAll(async () => {
    redis = await RedisServer.start();
    link = await StallableLink.start(redis.port);
    t = await startFaultTarget({ yaml: `replay_store: { type: redis, url: "${link.url}", connect_timeout_ms: 500 }` });
    await eventually(async () => (await t.admin('/readyz')).status === 200, 10_000);
  });
  afterAll(async () => {
    await t?.close();
    await link?.close();
    await redis?.stop();
  });

  it('Redis killed: 503 replay_store_unavailable, fast; process up, /readyz 503; back: 200 without restart', async () => {
    const m = await t.mission();
    expect((await t.get(m.token)).status).toBe(200);

    await redis.kill();
    // The first request may still find the old connection: either way it is denied, never allowed.
    for (let i = 0; i < 3; i++) {
      const r = await t.get(m.token);
      expect(denialOf(r)).toMatchObject({ status: 503, error: 'temporarily_unavailable', reason: 'replay_store_unavailable' });
      expect(r.ms).toBeLessThan(3000);
    }
    expect((await t.admin('/healthz')).status).toBe(200);
    const ready = await t.admin('/readyz');
    expect(ready.status).toBe(503);
    expect(ready.json<{ checks: Record<string, boolean> }>().checks['replay_store']).toBe(false);
    expect(await t.metric('mission_gateway_replay_store_errors_total')).toBeGreaterThanOrEqual(3);

    await redis.start();
    await eventually(async () => (await t.get(m.token)).status === 200, 10_000);
    // Ready again once the replica bus reads too (replica_bus: its reader reconnects on its own backoff).
    await eventually(async () => (await t.admin('/readyz')).status === 200, 10_000);
    const reasons = t.gw.evidence().map((e) => e['denial_reason']);
    expect(reasons).toContain('replay_store_unavailable');
  });

  it('Redis hung (the link stalls): 503 replay_store_unavailable within the command timeout; released: 200', async () => {
    const m = await t.mission();
    expect((await t.get(m.token)).status).toBe(200);
    link.stall();
    const r = await t.get(m.token);
    expect(denialOf(r)).toMatchObject({ status: 503, reason: 'replay_store_unavailable' });
    expect(r.ms).toBeLessThan(3000); // 500 ms command timeout plus slack
    link.release();
    await eventually(async () => (await t.get(m.token)).status === 200, 10_000);
  });

  it('a proof replayed during a stall and after it is never accepted', async () => {
    const m = await t.mission();
    const proof = await t.agent.proof('GET', 'https://api.example.com/invoices/1', m.token);
    const send = () => fetch(`${t.gw.url}/invoices/1`, { headers: { authorization: `DPoP ${m.token}`, dpop: proof } });
    expect((await send()).status).toBe(200);
    link.stall();
    expect((await send()).status).toBe(503);
    link.release();
    await eventually(async () => (await send()).status === 401, 10_000);
  });
});
