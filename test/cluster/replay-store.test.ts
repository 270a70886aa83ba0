import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryReplayStore } from '../../src/auth/replay.js';
import { createReplayStore, RedisReplayStore, ReplayStoreUnavailableError } from '../../src/cluster/index.js';
import { FreezableProxy, RedisServer } from './redis-server.js';
import { eventually } from '../helpers/gateway.js';

let redis: RedisServer;
const stores: RedisReplayStore[] = [];

function store(options: Partial<ConstructorParameters<typeof RedisReplayStore>[0]> = {}): RedisReplayStore {
  const s = new RedisReplayStore({ url: redis.url, keyPrefix: 'test:', maxBackoffMs: 200, ...options });
  stores.push(s);
  return s;
}

beforeAll(async () => {
  redis = await RedisServer.start();
});

afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await redis.stop();
});

describe('RFC 9449 §11.1 / SPEC §8 jti single use across replicas (replay_store: redis)', () => {
  it('first claim wins, the same key again is a replay', async () => {
    const s = store();
    await eventually(() => s.ready(), 5000);
    expect(await s.claim('dpop:jkt1:jti-a', 60)).toBe(true);
    expect(await s.claim('dpop:jkt1:jti-a', 60)).toBe(false);
    expect(await s.claim('dpop:jkt1:jti-b', 60)).toBe(true);
  });

  it('writes SET NX EX with the configured prefix and a whole-second TTL rounded up', async () => {
    const s = store({ keyPrefix: 'pfx:' });
    await eventually(() => s.ready(), 5000);
    expect(await s.claim('idjag:j1', 1.2)).toBe(true);
    const probe = new Redis(redis.url);
    try {
      expect(await probe.get('pfx:r:idjag:j1')).toBe('1');
      const ttl = await probe.pttl('pfx:r:idjag:j1');
      expect(ttl).toBeGreaterThan(1000);
      expect(ttl).toBeLessThanOrEqual(2000);
    } finally {
      probe.disconnect();
    }
  });

  it('a record expires after its TTL and the key can be claimed again', async () => {
    const s = store();
    await eventually(() => s.ready(), 5000);
    expect(await s.claim('ttl-key', 1)).toBe(true);
    expect(await s.claim('ttl-key', 1)).toBe(false);
    await sleep(1100);
    expect(await s.claim('ttl-key', 1)).toBe(true);
  });

  it('an oversized key is stored hashed, still single use', async () => {
    const s = store();
    await eventually(() => s.ready(), 5000);
    const long = `dpop:${'x'.repeat(5000)}`;
    expect(s.redisKey(long)).toMatch(/^test:h:[A-Za-z0-9_-]{43}$/);
    expect(await s.claim(long, 60)).toBe(true);
    expect(await s.claim(long, 60)).toBe(false);
  });

  it('two stores (two replicas) share the jti: a proof used on replica A is a replay on replica B', async () => {
    const a = store();
    const b = store();
    await eventually(() => a.ready() && b.ready(), 5000);
    expect(await a.claim('dpop:jkt:shared', 60)).toBe(true);
    expect(await b.claim('dpop:jkt:shared', 60)).toBe(false);
    // Racing claims: exactly one replica wins each key.
    const keys = Array.from({ length: 50 }, (_, i) => `race:${i}`);
    const results = await Promise.all(keys.flatMap((k) => [a.claim(k, 60), b.claim(k, 60)]));
    for (let i = 0; i < keys.length; i++) {
      expect([results[2 * i], results[2 * i + 1]].filter(Boolean)).toHaveLength(1);
    }
  });

  it('the claims of one turn go as one script call: a key claimed twice in the batch has exactly one winner, TTLs are set', async () => {
    const s = store();
    await eventually(() => s.ready(), 5000);
    const admin = new Redis(redis.port, '127.0.0.1');
    try {
      // Script calls so far (EVALSHA, plus an EVAL the first time the script is not loaded yet).
      const scripts = async (): Promise<number> => {
        const stats = await admin.info('commandstats');
        let n = 0;
        for (const m of stats.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+)/g)) n += Number(m[1]);
        return n;
      };
      const before = await scripts();
      const keys = Array.from({ length: 40 }, (_, i) => `batch:${i % 20}`); // each key twice
      const results = await Promise.all(keys.map((k, i) => s.claim(k, 30 + (i % 3))));
      for (let i = 0; i < 20; i++) expect([results[i], results[i + 20]].filter(Boolean)).toHaveLength(1);
      const calls = (await scripts()) - before;
      expect(calls).toBeGreaterThanOrEqual(1);
      expect(calls).toBeLessThanOrEqual(2);
      const ttl = await admin.ttl(s.redisKey('batch:0'));
      expect(ttl).toBeGreaterThan(25);
      expect(ttl).toBeLessThanOrEqual(32);
    } finally {
      admin.disconnect();
    }
  });

  it('release deletes the key on every replica: the next claim wins again', async () => {
    const a = store();
    const b = store();
    await eventually(() => a.ready() && b.ready(), 5000);
    expect(await a.claim('idjag:rel', 60)).toBe(true);
    await a.release('idjag:rel');
    expect(await b.claim('idjag:rel', 60)).toBe(true);
    expect(await a.claim('idjag:rel', 60)).toBe(false);
  });

  it('a Redis user without scripting rights: claims fall back to one SET each, with the same answers', async () => {
    const admin = new Redis(redis.port, '127.0.0.1');
    try {
      await admin.call('ACL', 'SETUSER', 'noscript', 'on', '>pw', '~*', '+@all', '-@scripting');
    } finally {
      admin.disconnect();
    }
    const s = store({ url: `redis://noscript:pw@127.0.0.1:${redis.port}` });
    await eventually(() => s.ready(), 5000);
    const keys = ['ns:a', 'ns:b', 'ns:a', 'ns:c'];
    expect(await Promise.all(keys.map((k) => s.claim(k, 60)))).toEqual([true, true, false, true]);
    expect(await Promise.all(keys.map((k) => s.claim(k, 60)))).toEqual([false, false, false, false]);
  });

  it('Redis down: claims reject quickly (fail closed), the process stays up; Redis back: claims succeed on the same store', async () => {
    const s = store({ commandTimeoutMs: 3000 });
    await eventually(() => s.ready(), 5000);
    expect(await s.claim('before-outage', 60)).toBe(true);

    await redis.kill();
    await eventually(() => !s.ready(), 2000);
    expect(s.ready()).toBe(false);
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      await expect(s.claim(`during-outage-${i}`, 60)).rejects.toBeInstanceOf(ReplayStoreUnavailableError);
      // At once, not after the 3 s command timeout.
      expect(performance.now() - started).toBeLessThan(1500);
    }

    await redis.start();
    await eventually(() => s.ready(), 10_000);
    expect(await s.claim('after-outage', 60)).toBe(true);
    expect(await s.claim('after-outage', 60)).toBe(false);
  });

  it('a Redis that stops answering: claim rejects after the command timeout, not later', async () => {
    const proxy = await FreezableProxy.start(redis.port);
    const s = new RedisReplayStore({ url: proxy.url, connectTimeoutMs: 300, commandTimeoutMs: 200, maxBackoffMs: 200 });
    try {
      await eventually(() => s.ready(), 5000);
      expect(await s.claim('hang-1', 60)).toBe(true);
      proxy.freeze();
      const started = performance.now();
      await expect(s.claim('hang-2', 60)).rejects.toBeInstanceOf(ReplayStoreUnavailableError);
      const elapsed = performance.now() - started;
      expect(elapsed).toBeGreaterThanOrEqual(150);
      expect(elapsed).toBeLessThan(2000);
    } finally {
      await s.close();
      await proxy.close();
    }
  });

  it('the error never carries the URL or its password', async () => {
    const s = new RedisReplayStore({ url: 'redis://gw:hunter2-secret@127.0.0.1:1', connectTimeoutMs: 200, maxBackoffMs: 200 });
    try {
      const err = await Promise.resolve(s.claim('k', 60)).catch((e: unknown) => e as Error);
      expect(err).toBeInstanceOf(ReplayStoreUnavailableError);
      expect((err as Error).message).toBe('replay store unavailable');
      expect(JSON.stringify(err)).not.toContain('hunter2');
    } finally {
      await s.close();
    }
  });
});

describe('createReplayStore', () => {
  it('type memory builds the in-process MemoryReplayStore', async () => {
    const s = createReplayStore({ type: 'memory' }, { maxEntries: 1000 });
    expect(s).toBeInstanceOf(MemoryReplayStore);
    expect(await s.claim('m', 60)).toBe(true);
    expect(await s.claim('m', 60)).toBe(false);
    await s.close();
  });

  it('type redis builds a RedisReplayStore with the configured prefix', async () => {
    const s = createReplayStore(
      { type: 'redis', url: redis.url, key_prefix: 'cfg:', connect_timeout_ms: 1000 },
    );
    try {
      expect(s).toBeInstanceOf(RedisReplayStore);
      expect((s as RedisReplayStore).redisKey('a')).toBe('cfg:r:a');
      await eventually(() => s.ready(), 5000);
      expect(await s.claim('factory', 60)).toBe(true);
    } finally {
      await s.close();
    }
  });
});
