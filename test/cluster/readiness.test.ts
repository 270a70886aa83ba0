/**
 * `/readyz` `replica_bus` (r20e 3, r21a 6): a replica that cannot follow the replica bus learns other
 * replicas' revocations only from Mission Status, so it is not ready, while its replay store works
 * and its requests are still served. With real redis-server ACL users.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisMissionBus } from '../../src/cluster/index.js';
import { eventually, startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';
import { RedisServer } from './redis-server.js';

let redis: RedisServer;
let echo: Awaited<ReturnType<typeof startEcho>>;

beforeAll(async () => {
  redis = await RedisServer.start();
  echo = await startEcho();
  const admin = new Redis(redis.url);
  await admin.call('ACL', 'SETUSER', 'noread', 'on', '>pw', '~*', '&*', '+@all', '-xread');
  await admin.call('ACL', 'SETUSER', 'noinfo', 'on', '>pw', '~*', '&*', '+@all', '-xinfo');
  await admin.quit();
});

afterAll(async () => {
  await echo?.close();
  await redis?.stop();
});

const readyz = async (gw: TestGateway): Promise<{ status: number; checks: Record<string, boolean> }> => {
  const r = await fetch(`${gw.adminUrl}/readyz`);
  return { status: r.status, checks: ((await r.json()) as { checks: Record<string, boolean> }).checks };
};

/** A gateway whose replay store (and replica bus) is Redis at `url`, serving /public/** without auth. */
const replicaAt = (url: string): Promise<TestGateway> =>
  startGateway(`
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: ${echo.url} }
replay_store: { type: redis, url: "${url}" }
routes: [{ match: { path: /public/** }, auth: none }]
`);

describe('a replica that cannot follow the replica bus is not ready (r21b 12)', () => {
  it.each([
    ['XREAD (it cannot read the changes)', 'noread'],
    ['XINFO (it cannot see a gap; r21a 6)', 'noinfo'],
  ])('a Redis user without %s: /readyz 503 with replica_bus false, replay_store true; requests still served', async (_what, user) => {
    const gw = await replicaAt(`redis://${user}:pw@127.0.0.1:${redis.port}`);
    try {
      await eventually(async () => {
        const r = await readyz(gw);
        return r.checks['replay_store'] === true && r.checks['replica_bus'] === false;
      }, 8000);
      expect(await readyz(gw)).toMatchObject({ status: 503, checks: { replay_store: true, replica_bus: false } });
      expect((await raw(gw.url, { path: '/public/x' })).status).toBe(200);
    } finally {
      await gw.close();
    }
  });

  it('a user with every command it needs: ready', async () => {
    const gw = await replicaAt(redis.url);
    try {
      await eventually(async () => (await readyz(gw)).status === 200, 8000);
      expect((await readyz(gw)).checks).toMatchObject({ replay_store: true, replica_bus: true });
    } finally {
      await gw.close();
    }
  });
});

describe('a bus that cannot read is never ready, not even between its retries (r22f F1, F2)', () => {
  it.each([
    ['XREAD', 'noread'],
    ['XINFO', 'noinfo'],
  ])('a Redis user without %s: ready() is false in every 1 ms sample over its first 1.5 s', async (_what, user) => {
    // The default 5 s BLOCK: a bus that claimed to be reading while its first read blocked was ready for 5 s.
    const bus = new RedisMissionBus({ url: `redis://${user}:pw@127.0.0.1:${redis.port}`, keyPrefix: `ready-${user}:` });
    bus.subscribe(() => undefined);
    try {
      let samples = 0;
      let ready = 0;
      const end = Date.now() + 1500;
      while (Date.now() < end) {
        samples++;
        if (bus.ready()) ready++;
        await new Promise((r) => setTimeout(r, 1));
      }
      expect(samples).toBeGreaterThan(300);
      expect(ready).toBe(0);
    } finally {
      await bus.close();
    }
  });

  it('a user with every command it needs is ready at once, not after a BLOCK', async () => {
    const bus = new RedisMissionBus({ url: redis.url, keyPrefix: 'ready-all:' });
    bus.subscribe(() => undefined);
    try {
      const started = performance.now();
      await eventually(() => bus.ready(), 4000);
      expect(performance.now() - started).toBeLessThan(2000);
    } finally {
      await bus.close();
    }
  });
});
