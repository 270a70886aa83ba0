/**
 * The `redis+sentinel://` and `redis+cluster://` URL forms against real Sentinel and Redis Cluster
 * deployments on loopback (redis-server's own `--sentinel` and `--cluster-enabled` modes).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisMissionBus, RedisReplayStore } from '../../src/cluster/index.js';
import type { MissionChange } from '../../src/mission/types.js';
import { RedisServer } from './redis-server.js';
import { eventually } from '../helpers/gateway.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'mgw-redis-'));
const servers: RedisServer[] = [];
const closers: Array<() => Promise<void>> = [];

async function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * A port whose cluster bus port (port + 10000) is free too. Both below Linux's ephemeral range
 * (32768 and up), from which the kernel hands out the ports of other tests' listeners and clients
 * while this file runs: a port found free there could be taken before redis-server binds it (a
 * clean-clone CI run lost this file so).
 */
async function clusterPort(taken: Set<number>): Promise<number> {
  for (;;) {
    const port = 10_000 + Math.floor(Math.random() * 12_000);
    if (taken.has(port) || taken.has(port + 10_000)) continue;
    if ((await isFree(port)) && (await isFree(port + 10_000))) {
      taken.add(port);
      taken.add(port + 10_000);
      return port;
    }
  }
}

const change: MissionChange = { issuer: 'https://as.example.com', id: 'msn_t', state: 'revoked', version: 2, suspendUntil: null, expiresAt: null, refetch: false, jti: 'set-t', set: 'a.b.c' };

afterAll(async () => {
  for (const close of closers) await close().catch(() => undefined);
  for (const s of servers) await s.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('redis+sentinel:// against a real Sentinel', () => {
  let url = '';
  beforeAll(async () => {
    const master = await RedisServer.start();
    servers.push(master);
    const sentinel = await RedisServer.start({
      args: (port) => {
        const conf = join(dir, `sentinel-${port}.conf`);
        writeFileSync(conf, [`port ${port}`, 'bind 127.0.0.1', `sentinel monitor mymaster 127.0.0.1 ${master.port} 1`, ''].join('\n'));
        return { before: [conf, '--sentinel'] };
      },
    });
    servers.push(sentinel);
    url = `redis+sentinel://127.0.0.1:${sentinel.port}/mymaster`;
  });

  it('the replay store finds the master through the Sentinel and claims single use', async () => {
    const a = new RedisReplayStore({ url, maxBackoffMs: 200 });
    const b = new RedisReplayStore({ url, maxBackoffMs: 200 });
    closers.push(() => a.close(), () => b.close());
    await eventually(() => a.ready() && b.ready(), 10_000);
    expect(await a.claim('sentinel:jti', 60)).toBe(true);
    expect(await b.claim('sentinel:jti', 60)).toBe(false);
  });

  it('the bus delivers between replicas through the Sentinel-discovered master', async () => {
    const a = new RedisMissionBus({ url, keyPrefix: 'sent:', maxBackoffMs: 200, blockMs: 1000 });
    const b = new RedisMissionBus({ url, keyPrefix: 'sent:', maxBackoffMs: 200, blockMs: 1000 });
    closers.push(() => a.close(), () => b.close());
    const got: MissionChange[] = [];
    b.subscribe((c) => got.push(c));
    await eventually(() => a.ready() && b.ready(), 10_000);
    await a.publish(change);
    await eventually(() => got.length === 1, 5000);
    expect(got[0]).toEqual(change);
  });
});

describe('redis+cluster:// against a real three-shard Redis Cluster', () => {
  let url = '';
  beforeAll(async () => {
    const taken = new Set<number>();
    const ports = [await clusterPort(taken), await clusterPort(taken), await clusterPort(taken)];
    for (const port of ports) {
      servers.push(
        await RedisServer.start({
          port,
          args: (p) => ({ after: ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${p}.conf`), '--cluster-node-timeout', '2000'] }),
        }),
      );
    }
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30_000 });
    await eventually(async () => {
      for (const port of ports) {
        const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 });
        try {
          await probe.connect();
          const info = (await probe.cluster('INFO')) as string;
          if (!info.includes('cluster_state:ok')) return false;
        } finally {
          probe.disconnect();
        }
      }
      return true;
    }, 20_000);
    url = `redis+cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]}`;
  }, 60_000);

  it('claims spread over the shards, single use across two stores', async () => {
    const a = new RedisReplayStore({ url, maxBackoffMs: 200 });
    const b = new RedisReplayStore({ url, maxBackoffMs: 200 });
    closers.push(() => a.close(), () => b.close());
    await eventually(() => a.ready() && b.ready(), 15_000);
    const keys = Array.from({ length: 30 }, (_, i) => `cluster:jti-${i}`);
    for (const k of keys) expect(await a.claim(k, 60)).toBe(true);
    for (const k of keys) expect(await b.claim(k, 60)).toBe(false);
  });

  it('the bus delivers between replicas on a Cluster', async () => {
    const a = new RedisMissionBus({ url, keyPrefix: 'clu:', maxBackoffMs: 200, blockMs: 1000 });
    const b = new RedisMissionBus({ url, keyPrefix: 'clu:', maxBackoffMs: 200, blockMs: 1000 });
    closers.push(() => a.close(), () => b.close());
    const got: MissionChange[] = [];
    b.subscribe((c) => got.push(c));
    await eventually(() => a.ready() && b.ready(), 15_000);
    await a.publish(change);
    await eventually(() => got.length === 1, 5000);
    expect(got[0]).toEqual(change);
  });
});
