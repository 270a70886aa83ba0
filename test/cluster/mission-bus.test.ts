import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMissionBus, LocalMissionBus, parseBusMessage, RedisMissionBus } from '../../src/cluster/index.js';
import type { MissionChange } from '../../src/mission/types.js';
import { Metrics } from '../../src/observability/metrics.js';
import { switchableBus } from '../../src/parts.js';
import { RedisServer } from './redis-server.js';
import { eventually } from '../helpers/gateway.js';

function change(id: string, state: string, version: number): MissionChange {
  return { issuer: 'https://as.example.com', id, state, version, suspendUntil: null, expiresAt: null, refetch: false, jti: `set-${id}-${version}`, set: `set-${id}-${version}.jws` };
}

let redis: RedisServer;
const buses: RedisMissionBus[] = [];
let prefixCounter = 0;

/** Buses of one "fleet" share a prefix; each test gets its own fleet (and stream). */
function fleet(): (options?: Partial<ConstructorParameters<typeof RedisMissionBus>[0]>) => RedisMissionBus {
  const keyPrefix = `bus${++prefixCounter}:`;
  return (options = {}) => {
    const bus = new RedisMissionBus({ url: redis.url, keyPrefix, maxBackoffMs: 200, blockMs: 1000, ...options });
    buses.push(bus);
    return bus;
  };
}

/** A publication of replica A's, written into the stream directly. */
const lost = (id: string): string => JSON.stringify({ v: 1, from: 'replica-a', change: change(id, 'revoked', 2) });

/**
 * Replica B, subscribed, having read A's publication `msn_seen` and blocked at the stream's tail
 * since; `rewrite` changes the stream under it in one transaction (as another client would).
 */
async function readerAtTail() {
  const bus = fleet();
  const a = bus();
  const b = bus({ catchUpMs: 0, blockMs: 200 });
  const state = { b, gaps: 0, got: [] as MissionChange[] };
  b.subscribe((c) => state.got.push(c), () => state.gaps++);
  await eventually(() => a.ready() && b.ready(), 5000);
  await a.publish(change('msn_seen', 'revoked', 2));
  await eventually(() => state.got.length === 1, 5000);
  await sleep(300); // B has looked at the stream since, and is blocked at its tail
  const rewrite = async (edit: (tx: ReturnType<Redis['multi']>, stream: string) => void): Promise<void> => {
    const raw = new Redis(redis.url);
    try {
      const tx = raw.multi();
      edit(tx, b.stream);
      await tx.exec();
    } finally {
      raw.disconnect();
    }
  };
  return Object.assign(state, { rewrite });
}

function collect(bus: RedisMissionBus): MissionChange[] {
  const got: MissionChange[] = [];
  bus.subscribe((c) => got.push(c));
  return got;
}

beforeAll(async () => {
  redis = await RedisServer.start();
});

afterAll(async () => {
  await Promise.all(buses.map((b) => b.close()));
  await redis.stop();
});

describe('SPEC §3 a lifecycle change reaches every replica (replica bus over Redis)', () => {
  it('a change published by replica A is delivered to replica B, and A ignores its own', async () => {
    const bus = fleet();
    const a = bus({ instanceId: 'replica-a' });
    const b = bus({ instanceId: 'replica-b' });
    const gotA = collect(a);
    const gotB = collect(b);
    await eventually(() => a.ready() && b.ready(), 5000);

    const revoked = change('msn_1', 'revoked', 3);
    await a.publish(revoked);
    await eventually(() => gotB.length === 1, 3000);
    expect(gotB[0]).toEqual(revoked);
    // A read its own publication too, and ignored it.
    await eventually(() => a.counts.own === 1, 3000);
    expect(gotA).toEqual([]);
    expect(b.counts.delivered).toBe(1);
  });

  it('delivers in publish order, and to every other replica', async () => {
    const bus = fleet();
    const a = bus();
    const b = bus();
    const c = bus();
    const gotB = collect(b);
    const gotC = collect(c);
    await eventually(() => a.ready() && b.ready() && c.ready(), 5000);
    const sent = [change('m', 'suspended', 1), change('m', 'active', 2), change('m', 'revoked', 3)];
    for (const s of sent) await a.publish(s);
    await eventually(() => gotB.length === 3 && gotC.length === 3, 3000);
    expect(gotB).toEqual(sent);
    expect(gotC).toEqual(sent);
  });

  it('a replica that starts later first reads the recent changes (catch-up window)', async () => {
    const bus = fleet();
    const a = bus();
    await eventually(() => a.ready(), 5000);
    await a.publish(change('msn_old', 'revoked', 7));
    const late = bus({ catchUpMs: 60_000 });
    const got = collect(late);
    await eventually(() => got.length === 1, 3000);
    expect(got[0]?.id).toBe('msn_old');

    const noCatchUp = bus({ catchUpMs: 0 });
    const none = collect(noCatchUp);
    await eventually(() => noCatchUp.ready(), 5000);
    await sleep(100);
    expect(none).toEqual([]);
  });

  it('a change published while the reader is reconnecting is still delivered (stream, not fire-and-forget)', async () => {
    const bus = fleet();
    const a = bus();
    const b = bus();
    const got = collect(b);
    await eventually(() => a.ready() && b.ready(), 5000);

    const admin = new Redis(redis.url);
    try {
      // Drop only the reading connections, then publish while they reconnect.
      const list = (await admin.call('CLIENT', 'LIST')) as string;
      const readers = list.split('\n').filter((l) => l.includes(' name=mgw-bus-subscribe '));
      expect(readers.length).toBeGreaterThan(0);
      for (const line of readers) await admin.call('CLIENT', 'KILL', 'ID', /id=(\d+)/.exec(line)?.[1] ?? '0');
      await eventually(() => !b.ready(), 1000);
      await a.publish(change('msn_gap', 'revoked', 2));
    } finally {
      admin.disconnect();
    }
    await eventually(() => got.length === 1, 5000);
    expect(got[0]?.id).toBe('msn_gap');
  });

  it('a replica whose position Redis trimmed past is told of the gap, once, and counts it (r18d 2)', async () => {
    const bus = fleet();
    const a = bus({ maxLength: 10 });
    await eventually(() => a.ready(), 5000);
    // Far more than the stream keeps: the oldest entries are trimmed (MAXLEN ~, whole nodes of 100).
    await Promise.all(Array.from({ length: 400 }, (_, i) => a.publish(change(`msn_${i}`, 'revoked', 2))));
    // B starts inside the catch-up window: the entries it should read first are gone.
    const b = bus({ catchUpMs: 60_000 });
    let gaps = 0;
    b.subscribe(() => undefined, () => gaps++);
    await eventually(() => gaps === 1, 5000);
    expect(b.counts.gap).toBe(1);
    await a.publish(change('msn_after', 'revoked', 2));
    await sleep(300);
    expect(gaps).toBe(1);

    // A replica whose window lost nothing hears of no gap.
    const quiet = fleet()();
    let quietGaps = 0;
    quiet.subscribe(() => undefined, () => quietGaps++);
    await eventually(() => quiet.ready(), 5000);
    await sleep(300);
    expect(quietGaps).toBe(0);
  });

  it('a trim while the reader blocks is a gap too: one transaction adds and trims past its position (r18e lead)', async () => {
    const bus = fleet();
    const b = bus({ catchUpMs: 0 });
    let gaps = 0;
    const got: MissionChange[] = [];
    b.subscribe((c) => got.push(c), () => gaps++);
    await eventually(() => b.ready(), 5000);
    await sleep(200); // B is now blocked in XREAD at the stream's tail
    const raw = new Redis(redis.url);
    try {
      // Served to the blocked reader only once the transaction is done: the first 400 are gone by then.
      const tx = raw.multi();
      for (let i = 0; i < 500; i++) tx.xadd(b.stream, 'MAXLEN', '~', 10, '*', 'm', JSON.stringify({ v: 1, from: 'replica-a', change: change(`msn_${i}`, 'revoked', 2) }));
      await tx.exec();
    } finally {
      raw.disconnect();
    }
    await eventually(() => gaps === 1, 5000);
    expect(b.counts.gap).toBe(1);
    expect(got.length).toBeLessThan(500);
    expect(got.at(-1)?.id).toBe('msn_499');
  });

  it.each([
    ['trimmed to empty (XTRIM MAXLEN 0)', (tx: ReturnType<Redis['multi']>, stream: string) => tx.xtrim(stream, 'MAXLEN', 0)],
    ['deleted (DEL, as FLUSHALL or an empty restart leaves it)', (tx: ReturnType<Redis['multi']>, stream: string) => tx.del(stream)],
  ])('a stream %s before this replica read its last entries is a gap (r20e 1), reported once however often the reader looks again (r21b 10)', async (_what, end) => {
    const t = await readerAtTail();
    await t.rewrite((tx, stream) => {
      tx.xadd(stream, '*', 'm', lost('msn_lost'));
      end(tx, stream);
    });
    await eventually(() => t.gaps === 1, 5000);
    expect(t.b.counts.gap).toBe(1);
    expect(t.got.map((c) => c.id)).toEqual(['msn_seen']);
    // Reported once: the reads after it (one each blockMs) find the same position and the same
    // emptied stream; not a gap each, every one throwing the Mission cache away (r21b 10).
    await sleep(700);
    expect(t.gaps).toBe(1);
  });

  it('a stream deleted and created again by a later publication before this replica looked is a gap (r21a 2)', async () => {
    const t = await readerAtTail();
    await t.rewrite((tx, stream) => {
      tx.xadd(stream, '*', 'm', lost('msn_lost'));
      tx.del(stream); // an empty restart, a FLUSHALL
      tx.xadd(stream, '*', 'm', lost('msn_after'));
    });
    await eventually(() => t.gaps === 1, 5000);
    expect(t.got.map((c) => c.id)).toEqual(['msn_seen', 'msn_after']);
  });

  it('the gap reaches the Mission cache through the bus the gateway builds (switchableBus; r18e 1)', async () => {
    const bus = fleet();
    const a = bus({ maxLength: 10 });
    await eventually(() => a.ready(), 5000);
    await Promise.all(Array.from({ length: 400 }, (_, i) => a.publish(change(`msn_${i}`, 'revoked', 2))));
    const wrapped = switchableBus(bus({ catchUpMs: 60_000 }));
    let gaps = 0;
    const got: MissionChange[] = [];
    wrapped.subscribe((c) => got.push(c), () => gaps++);
    await eventually(() => gaps === 1, 5000);
    await eventually(() => got.length > 0, 5000);
  });

  it('malformed messages are dropped and counted, never delivered', async () => {
    const bus = fleet();
    const metrics = new Metrics({ defaultMetrics: false });
    const b = bus({ registry: metrics.registry });
    const got = collect(b);
    await eventually(() => b.ready(), 5000);
    const raw = new Redis(redis.url);
    try {
      const good = change('msn_ok', 'revoked', 1);
      const bad = [
        'not json',
        JSON.stringify({ v: 1, from: 'x', change: { ...good, version: '1' } }),
        JSON.stringify({ v: 2, from: 'x', change: good }),
        JSON.stringify({ v: 1, change: good }),
        JSON.stringify({ v: 1, from: 'x', change: { ...good, suspendUntil: 'soon' } }),
        JSON.stringify({ v: 1, from: 'x', change: { ...good, jti: undefined } }),
        JSON.stringify({ v: 1, from: 'x', change: good, pad: 'x'.repeat(20_000) }),
      ];
      for (const m of bad) await raw.xadd(b.stream, '*', 'm', m);
      await raw.xadd(b.stream, '*', 'other', 'field');
      await raw.xadd(b.stream, '*', 'm', JSON.stringify({ v: 1, from: 'x', change: { ...good, extra: 'dropped' } }));
      await eventually(() => got.length === 1, 3000);
      expect(got[0]).toEqual(good);
      expect(b.counts.malformed).toBe(bad.length + 1);
      const text = await metrics.registry.getSingleMetricAsString('mission_gateway_bus_messages_total');
      expect(text).toContain(`mission_gateway_bus_messages_total{result="malformed"} ${bad.length + 1}`);
    } finally {
      raw.disconnect();
    }
  });

  it('a handler that throws does not stop delivery', async () => {
    const bus = fleet();
    const a = bus();
    const b = bus();
    const got: MissionChange[] = [];
    b.subscribe(() => {
      throw new Error('boom');
    });
    b.subscribe((c) => got.push(c));
    await eventually(() => a.ready() && b.ready(), 5000);
    await a.publish(change('x', 'revoked', 1));
    await a.publish(change('y', 'revoked', 1));
    await eventually(() => got.length === 2, 3000);
    expect(b.counts.handler_error).toBe(2);
  });

  it('Redis down: publish rejects quickly; Redis back: delivery resumes on the same instances', async () => {
    const bus = fleet();
    const a = bus({ commandTimeoutMs: 3000 });
    const b = bus();
    const got = collect(b);
    await eventually(() => a.ready() && b.ready(), 5000);

    await redis.kill();
    await eventually(() => !a.ready(), 2000);
    const started = performance.now();
    await expect(a.publish(change('down', 'revoked', 1))).rejects.toThrow('replica bus unavailable');
    // At once, not after the 3 s command timeout.
    expect(performance.now() - started).toBeLessThan(1500);
    expect(a.counts.publish_failed).toBe(1);

    await redis.start();
    await eventually(() => a.ready() && b.ready(), 10_000);
    await a.publish(change('back', 'revoked', 2));
    await eventually(() => got.some((c) => c.id === 'back'), 5000);
  });
});

describe('parseBusMessage', () => {
  it('accepts the exact shape and rebuilds it', () => {
    const c = change('m', 'active', 1);
    expect(parseBusMessage(JSON.stringify({ v: 1, from: 'r', change: { ...c, suspendUntil: 1700000000 } }))).toEqual({
      from: 'r',
      change: { ...c, suspendUntil: 1700000000 },
    });
  });
  it.each(['[]', 'null', '1', '{"v":1,"from":"r","change":null}', '{"v":1,"from":"r","change":{"issuer":"i"}}'])('rejects %s', (raw) => {
    expect(parseBusMessage(raw)).toBeNull();
  });
});

describe('createMissionBus', () => {
  it('type memory: a local no-op bus', async () => {
    const bus = createMissionBus({ type: 'memory' });
    expect(bus).toBeInstanceOf(LocalMissionBus);
    await expect(bus.publish(change('m', 'revoked', 1))).resolves.toBeUndefined();
    await bus.close();
  });

  it('type redis: a RedisMissionBus on `<key_prefix>mission-changes`', async () => {
    const bus = createMissionBus({ type: 'redis', url: redis.url, key_prefix: 'fac:', connect_timeout_ms: 1000 }, { instanceId: 'r1', catchUpMs: 0 });
    try {
      expect(bus).toBeInstanceOf(RedisMissionBus);
      expect((bus as RedisMissionBus).stream).toBe('fac:mission-changes');
      expect((bus as RedisMissionBus).instanceId).toBe('r1');
    } finally {
      await bus.close();
    }
  });
});

describe('RedisMissionBus.close', () => {
  it('returns promptly even while the reader is blocked in XREAD', async () => {
    const bus = new RedisMissionBus({ url: redis.url, keyPrefix: 'close:', blockMs: 10_000 });
    bus.subscribe(() => undefined);
    await eventually(() => bus.ready(), 5000);
    await sleep(100); // the reader is now inside XREAD BLOCK 10000
    const started = performance.now();
    await bus.close();
    expect(performance.now() - started).toBeLessThan(3000);
  });
});

/** A bus whose Redis user may not run `command`, and the warnings it logs. */
async function busWithout(command: string, options: Partial<ConstructorParameters<typeof RedisMissionBus>[0]> = {}): Promise<{ bus: RedisMissionBus; warnings: string[] }> {
  const user = `no_${command}`;
  const admin = new Redis(redis.url);
  await admin.call('ACL', 'SETUSER', user, 'on', '>pw', '~*', '+@all', `-${command}`);
  await admin.quit();
  const warnings: string[] = [];
  const logger = { warn: (_o: unknown, m: string) => warnings.push(m), debug: () => undefined, info: () => undefined, error: () => undefined } as unknown as NonNullable<ConstructorParameters<typeof RedisMissionBus>[0]['logger']>;
  const u = new URL(redis.url);
  u.username = user;
  u.password = 'pw';
  const bus = fleet()({ url: u.toString(), logger, ...options });
  collect(bus);
  return { bus, warnings };
}

describe('a replica that cannot follow the bus says so, once, and is not ready (readyz replica_bus)', () => {
  it.each([
    ['XREAD (r20e 3)', 'xread', 'replica bus read failed'],
    ['XINFO, so it cannot see a gap (r21a 6)', 'xinfo', 'replica bus cannot check for gaps'],
  ])('an ACL user without %s', async (_what, command, warning) => {
    const { bus, warnings } = await busWithout(command, { blockMs: 100 });
    await eventually(() => warnings.some((w) => w.startsWith(warning)), 5000);
    await sleep(500);
    expect(bus.ready()).toBe(false);
    expect(warnings.filter((w) => w.startsWith(warning))).toHaveLength(1);
  });
});

describe('a Redis that refuses the credentials is a warning, once (r20e 2)', () => {
  it('each connection says why at warn the first time, then retries quietly; the bus stays not ready', async () => {
    const lines: Array<{ msg: string; role: string; err: { message: string } }> = [];
    const logger = {
      warn: (o: { role: string; err: { message: string } }, m: string) => lines.push({ msg: m, ...o }),
      debug: () => undefined,
      info: () => undefined,
      error: () => undefined,
    } as unknown as NonNullable<ConstructorParameters<typeof RedisMissionBus>[0]['logger']>;
    const u = new URL(redis.url);
    u.username = 'nobody';
    u.password = 'wrong';
    const bus = fleet()({ url: u.toString(), logger });
    collect(bus);
    await eventually(() => lines.length >= 2, 5000);
    await sleep(1500); // several reconnect attempts
    expect(bus.ready()).toBe(false);
    const unavailable = lines.filter((l) => l.msg === 'redis unavailable; retrying');
    expect(unavailable.map((l) => l.role).sort()).toEqual(['bus_publish', 'bus_subscribe']);
    for (const l of unavailable) expect(l.err.message).toMatch(/WRONGPASS|invalid username-password/);
    expect(JSON.stringify(lines)).not.toContain('wrong');
  });
});
