/**
 * A replica with a shared replay store starts listening only after its first connection attempt
 * to Redis: a request arriving the moment it starts is served, not refused 503 because the
 * connection was still being opened. A Redis that is down at start delays the start by at most the
 * connect timeout and is then the fail-closed case (503 replay_store_unavailable, /readyz 503).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/demo/free-port.js';
import { CLI, startGateway, type TestGateway } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';
import { API, startTarget, type Target } from '../security/fixture.js';
import { RedisServer } from './redis-server.js';

describe('a replica and its first connection to the replay store', () => {
  let redis: RedisServer;
  let a: Target;
  const others: TestGateway[] = [];

  beforeAll(async () => {
    redis = await RedisServer.start();
    a = await startTarget(`replay_store: { type: redis, url: "${redis.url}" }`);
  });
  afterAll(async () => {
    for (const g of others) await g.close();
    await a?.close();
    await redis?.stop();
  });

  /** Replica A's config (its own evidence file) with the replay store at `url`. */
  const replicaOf = async (url: string): Promise<TestGateway> => {
    const text = readFileSync(a.gw.configFile, 'utf8').replace(/^(evidence|log):.*$/gm, '');
    const gw = await startGateway(text.replace(/url: "redis:\/\/[^"]*"/, `url: "${url}"`));
    others.push(gw);
    return gw;
  };

  it('is connected when it starts listening: its first request is served', async () => {
    for (let i = 0; i < 5; i++) {
      const dpop = await a.agent.proof('GET', `${API}/invoices/1`, a.token);
      const gw = await replicaOf(redis.url);
      const r = await raw(gw.url, { path: '/invoices/1', headers: { authorization: `DPoP ${a.token}`, dpop } });
      expect(r.status, r.text()).toBe(200);
    }
  });

  it('with Redis down at start, it starts within the connect timeout and fails closed: 503 replay_store_unavailable, /readyz 503', async () => {
    const port = await freePort();
    const dpop = await a.agent.proof('GET', `${API}/invoices/1`, a.token);
    const started = performance.now();
    const gw = await replicaOf(`redis://127.0.0.1:${port}`);
    expect(performance.now() - started).toBeLessThan(3000);
    const r = await raw(gw.url, { path: '/invoices/1', headers: { authorization: `DPoP ${a.token}`, dpop } });
    expect(r.status).toBe(503);
    expect(r.json()).toMatchObject({ error: 'temporarily_unavailable', denial_reason: 'replay_store_unavailable' });
    const ready = await raw(gw.adminUrl, { path: '/readyz' });
    expect(ready.status).toBe(503);
    expect(ready.json()).toMatchObject({ checks: { replay_store: false } });
  });

  it('a SIGTERM while it waits for Redis (one that accepts and never answers) stops it before it listens, exit 0', async () => {
    // A Redis that accepts connections and never answers: the first attempt waits for its timeouts.
    let connected: () => void = () => undefined;
    const reached = new Promise<void>((r) => (connected = r));
    const silent = createServer((socket) => {
      socket.on('error', () => undefined);
      connected();
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const folder = mkdtempSync(join(tmpdir(), 'mgw-sigterm-start-'));
      const file = join(folder, 'gw.yaml');
      const port = (silent.address() as AddressInfo).port;
      writeFileSync(
        file,
        readFileSync(a.gw.configFile, 'utf8')
          .replace(/^(evidence|log|listen|admin):.*$/gm, '')
          .replace(/url: "redis:\/\/[^"]*"/, `url: "redis://127.0.0.1:${port}"`) +
          `\nlisten: { host: 127.0.0.1, port: 0 }\nadmin: { host: 127.0.0.1, port: 0 }\nevidence: { sink: ${join(folder, 'evidence.jsonl')} }\n`,
      );
      const proc = spawn(process.execPath, [CLI, '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
      const exited = new Promise<{ code: number | null; signal: string | null }>((r) => proc.once('exit', (code, signal) => r({ code, signal })));
      // It is building the gateway (its handlers are in place): the replay store has connected.
      await reached;
      proc.kill('SIGTERM');
      expect(await exited).toEqual({ code: 0, signal: null });
      expect(err).not.toContain('mission-gateway listening');
      expect(err).toContain('stopped while starting');
    } finally {
      silent.close();
    }
  });
});
