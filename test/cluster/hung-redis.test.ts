/**
 * A HUNG Redis: `redis-server` under SIGSTOP keeps its TCP connections open and answers nothing
 * (the stress run .perf/fuzz/r7a, R7A-2, R7A-5, R7A-6). The replay store's breaker must take the
 * replica out of readiness, refuse claims at once instead of each waiting out a timeout, stop
 * sending commands to the hung server (and keeping them), and find Redis again after SIGCONT.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisReplayStore, ReplayStoreUnavailableError } from '../../src/cluster/index.js';
import { eventually } from '../helpers/gateway.js';
import { denialOf, startFaultTarget, type FaultTarget } from '../faults/harness.js';
import { RedisServer } from './redis-server.js';

/** Commands ioredis holds for the connection (sent, not yet answered): what a hang makes it keep. */
function held(store: RedisReplayStore): number {
  return (store.connection as unknown as { commandQueue: { length: number } }).commandQueue.length;
}

/** Settles a claim (sync throw or rejection alike) and reports how long that took. */
async function timedClaim(store: RedisReplayStore, key: string): Promise<{ ok: boolean; err: unknown; ms: number }> {
  const started = performance.now();
  try {
    await store.claim(key, 60);
    return { ok: true, err: null, ms: performance.now() - started };
  } catch (err) {
    return { ok: false, err, ms: performance.now() - started };
  }
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

describe('replay_store: redis, Redis hung (SIGSTOP, connections stay open)', () => {
  let redis: RedisServer;
  const stores: RedisReplayStore[] = [];
  const store = (options: Partial<ConstructorParameters<typeof RedisReplayStore>[0]> = {}): RedisReplayStore => {
    const s = new RedisReplayStore({ url: redis.url, keyPrefix: 'hung:', maxBackoffMs: 200, ...options });
    stores.push(s);
    return s;
  };

  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterEach(() => redis.resume());
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await redis.stop();
  });

  it('under load: not ready within the command timeout, claims refused within one timeout (not two) and then at once, a bounded number of commands sent and held; SIGCONT: ready and claiming again', async () => {
    const TIMEOUT = 300;
    const s = store({ commandTimeoutMs: TIMEOUT });
    await eventually(() => s.ready(), 5000);
    expect(await s.claim('before', 60)).toBe(true);
    const before = await redis.commandCalls();

    redis.pause();
    const pausedAt = performance.now();
    let notReadyAfter: number | null = null;
    let heldAtOpen = 0;
    const claims: Promise<{ ok: boolean; err: unknown; ms: number; at: number }>[] = [];
    // 2.5 s at ~400 claims/s, one to four per event-loop turn (so several script calls in flight).
    for (let i = 0; performance.now() - pausedAt < 2500; i++) {
      const at = performance.now() - pausedAt;
      for (let k = 0; k <= i % 4; k++) claims.push(timedClaim(s, `hung-${i}-${k}`).then((r) => ({ ...r, at })));
      if (notReadyAfter === null && !s.ready()) {
        notReadyAfter = performance.now() - pausedAt;
        heldAtOpen = held(s);
      }
      await sleep(5);
    }
    const results = await Promise.all(claims);
    const heldAtEnd = held(s);

    // Fail closed throughout.
    expect(results.every((r) => !r.ok && r.err instanceof ReplayStoreUnavailableError)).toBe(true);
    const ms = results.map((r) => r.ms);
    const late = results.filter((r) => r.at > TIMEOUT + 200).map((r) => r.ms);
    console.log(
      `hung store: ${results.length} claims; not ready after ${notReadyAfter?.toFixed(0)} ms; claim ms p50 ${percentile(ms, 50).toFixed(1)} p99 ${percentile(ms, 99).toFixed(1)} max ${Math.max(...ms).toFixed(0)}; ` +
        `after the first timeout: max ${Math.max(...late).toFixed(2)} ms; commands held when it opened ${heldAtOpen}, 2.5 s into the hang ${heldAtEnd}`,
    );
    // R7A-5: one command timeout bounds every claim (was about twice that under load). The bounds
    // leave room for a loaded machine's scheduling, not for a second timeout.
    expect(Math.max(...ms)).toBeLessThan(2 * TIMEOUT - 50);
    // Once the breaker is open a claim is refused at once: far below one timeout.
    expect(percentile(late, 99)).toBeLessThan(TIMEOUT / 6);
    // R7A-2: readiness follows the hang within the first timeout (plus scheduling).
    expect(notReadyAfter).not.toBeNull();
    expect(notReadyAfter!).toBeLessThan(2 * TIMEOUT);
    // R7A-6: ioredis keeps only what was sent before the breaker opened (one script call per turn
    // for one timeout), plus the probes; it no longer grows with the claims made during the hang.
    expect(heldAtOpen).toBeLessThan(100);
    expect(heldAtEnd - heldAtOpen).toBeLessThanOrEqual(6);

    redis.resume();
    const resumedAt = performance.now();
    await eventually(() => s.ready(), 3000);
    const recovery = performance.now() - resumedAt;
    expect(await s.claim('after', 60)).toBe(true);
    expect(await s.claim('after', 60)).toBe(false);
    const after = await redis.commandCalls();
    const pings = (after['ping'] ?? 0) - (before['ping'] ?? 0);
    // Claims of the hang that reached Redis (it ran the backlog on SIGCONT): only those sent before the breaker opened.
    const admin = new Redis(redis.port, '127.0.0.1');
    const reached = (await admin.keys('hung:r:hung-*')).length;
    admin.disconnect();
    const madeBeforeOpen = results.filter((r) => r.at <= notReadyAfter!).length;
    console.log(
      `hung store: ready again ${recovery.toFixed(0)} ms after SIGCONT; commands sent to the hung server ${heldAtEnd} (${heldAtEnd - heldAtOpen} after it opened), ` +
        `claims that reached it ${reached} of ${results.length} (${madeBeforeOpen} made before it opened), PINGs ${pings}`,
    );
    expect(recovery).toBeLessThan(1000);
    expect(reached).toBeLessThanOrEqual(madeBeforeOpen);
    // Probes: at most one per timeout + interval (300 + 250 ms) over 2.5 s, plus readiness probes.
    expect(pings).toBeLessThan(15);
  });

  it('without traffic: readiness probes the idle connection and turns false, then true after SIGCONT', async () => {
    const s = store({ commandTimeoutMs: 300 });
    await eventually(() => s.ready(), 5000);
    redis.pause();
    const pausedAt = performance.now();
    // A readiness check every 200 ms, as a load balancer would; no claims.
    await eventually(async () => {
      await sleep(200);
      return !s.ready();
    }, 3000);
    const delay = performance.now() - pausedAt;
    console.log(`idle store: not ready ${delay.toFixed(0)} ms after SIGSTOP (checks every 200 ms)`);
    expect(delay).toBeLessThan(1500);
    // Claims are refused without waiting.
    const r = await timedClaim(s, 'idle-hung');
    expect(r.err).toBeInstanceOf(ReplayStoreUnavailableError);
    expect(r.ms).toBeLessThan(50);

    redis.resume();
    await eventually(() => s.ready(), 3000);
    expect(await s.claim('idle-after', 60)).toBe(true);
  });

  it('a hang longer than reconnectAfterMs: the silent connection is dropped (nothing kept for it) and a new one is used after SIGCONT', async () => {
    const s = store({ commandTimeoutMs: 200, reconnectAfterMs: 800 });
    await eventually(() => s.ready(), 5000);
    redis.pause();
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => timedClaim(s, `long-${i}`)));
    expect(rs.every((r) => r.err instanceof ReplayStoreUnavailableError)).toBe(true);
    expect(s.ready()).toBe(false);
    // The first reconnect flushes what ioredis held; the new connection waits for its handshake.
    // Reconnect attempts come and go while Redis is stopped (each one's handshake held until the
    // breaker drops it): wait for a moment between them, which a busy machine takes longer to show.
    await eventually(() => s.connection.status !== 'ready' && held(s) === 0, 8000);
    await sleep(1000);
    expect(s.ready()).toBe(false);
    expect(held(s)).toBe(0);
    redis.resume();
    const resumedAt = performance.now();
    await eventually(() => s.ready(), 5000);
    console.log(`long hang: ready again ${(performance.now() - resumedAt).toFixed(0)} ms after SIGCONT (new connection)`);
    expect(await s.claim('long-after', 60)).toBe(true);
  });
});

describe('gateway with replay_store: redis while Redis hangs (R7A-2, R7A-5)', () => {
  let redis: RedisServer;
  let t: FaultTarget;
  beforeAll(async () => {
    redis = await RedisServer.start();
    t = await startFaultTarget({ yaml: `replay_store: { type: redis, url: "${redis.url}", connect_timeout_ms: 500 }` });
    await eventually(async () => (await t.admin('/readyz')).status === 200, 10_000);
  });
  afterEach(() => redis.resume());
  afterAll(async () => {
    await t?.close();
    await redis?.stop();
  });

  it('/readyz turns 503 (checks.replay_store false) within about the 500 ms command timeout, requests are 503 replay_store_unavailable at once, SIGCONT: /readyz 200 and requests served', async () => {
    const m = await t.mission();
    expect((await t.get(m.token)).status).toBe(200);

    redis.pause();
    const pausedAt = performance.now();
    const requests: Promise<{ r: Awaited<ReturnType<FaultTarget['get']>>; at: number }>[] = [];
    let notReadyAfter: number | null = null;
    while (performance.now() - pausedAt < 2000) {
      const at = performance.now() - pausedAt;
      for (let k = 0; k < 4; k++) requests.push(t.get(m.token).then((r) => ({ r, at })));
      if (notReadyAfter === null) {
        const ready = await t.admin('/readyz');
        if (ready.status === 503) {
          expect(ready.json<{ checks: Record<string, boolean> }>().checks['replay_store']).toBe(false);
          notReadyAfter = performance.now() - pausedAt;
        }
      }
      await sleep(20);
    }
    const done = await Promise.all(requests);
    for (const { r } of done) expect(denialOf(r)).toMatchObject({ status: 503, reason: 'replay_store_unavailable' });
    const ms = done.map((d) => d.r.ms);
    const late = done.filter((d) => d.at > 800).map((d) => d.r.ms);
    console.log(
      `gateway: /readyz 503 after ${notReadyAfter?.toFixed(0)} ms; ${done.length} requests, ms p50 ${percentile(ms, 50).toFixed(1)} max ${Math.max(...ms).toFixed(0)}; once open: p99 ${percentile(late, 99).toFixed(1)} max ${Math.max(...late).toFixed(1)}`,
    );
    expect(notReadyAfter).not.toBeNull();
    expect(notReadyAfter!).toBeLessThan(1200);
    expect(Math.max(...ms)).toBeLessThan(950); // one 500 ms timeout, never two
    expect(percentile(late, 99)).toBeLessThan(250); // refused without waiting on Redis (500 ms)

    redis.resume();
    const resumedAt = performance.now();
    await eventually(async () => (await t.admin('/readyz')).status === 200, 3000);
    const readyAgain = performance.now() - resumedAt;
    expect((await t.get(m.token)).status).toBe(200);
    console.log(`gateway: /readyz 200 ${readyAgain.toFixed(0)} ms after SIGCONT`);
    expect(readyAgain).toBeLessThan(2500);
  });

  it('with no traffic at all, /readyz alone notices the hang and the recovery', async () => {
    redis.pause();
    const pausedAt = performance.now();
    await eventually(async () => {
      await sleep(250);
      return (await t.admin('/readyz')).status === 503;
    }, 5000);
    const delay = performance.now() - pausedAt;
    redis.resume();
    const resumedAt = performance.now();
    await eventually(async () => (await t.admin('/readyz')).status === 200, 3000);
    console.log(`gateway idle: /readyz 503 ${delay.toFixed(0)} ms after SIGSTOP (checked every 250 ms), 200 ${(performance.now() - resumedAt).toFixed(0)} ms after SIGCONT`);
    expect(delay).toBeLessThan(2000);
  });
});
