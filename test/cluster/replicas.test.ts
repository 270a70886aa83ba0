/**
 * Two gateway processes behind one Redis behave as one: a DPoP proof used at replica A is a replay
 * at replica B; a revocation pushed to A is enforced by B; Redis going away fails closed and the
 * replicas recover when it returns, without a restart.
 */
import type { ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { gatewayClientKey, newAgent, type Agent } from '../helpers/agent.js';
import { eventually, startCli, startEcho, type CliGateway } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';
import { RedisServer } from './redis-server.js';

const API = 'https://api.example.com';

describe('scale-out: two replicas sharing Redis', () => {
  let redis: RedisServer;
  let dev: DevAuthority;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let a: CliGateway;
  let b: CliGateway;
  let agent: Agent;
  let missionId: string;
  let token: string;
  const procs: ChildProcess[] = [];

  const proof = (): Promise<string> => agent.proof('GET', `${API}/invoices/1`, token);
  const call = async (gw: CliGateway, dpop?: string) => raw(gw.url, { path: '/invoices/1', headers: { authorization: `DPoP ${token}`, dpop: dpop ?? (await proof()) } });

  beforeAll(async () => {
    redis = await RedisServer.start();
    dev = await startDevAuthority({ port: 0, quiet: true, heartbeatSeconds: 0 });
    echo = await startEcho((req, res) => {
      if (req.url === '/invoices/stream') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const tick = setInterval(() => res.write('data: x\n\n'), 25);
        res.on('close', () => clearInterval(tick));
        return;
      }
      res.setHeader('content-type', 'application/json');
      res.end('{}');
    });
    const folder = mkdtempSync(join(tmpdir(), 'mgw-replicas-'));
    const keyFile = await gatewayClientKey(dev, folder);
    const file = (name: string): string => {
      const f = join(folder, `${name}.yaml`);
      writeFileSync(
        f,
        `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
public_base_url: ${API}
resource: ${API}
upstream: { url: ${echo.url} }
issuers: [{ issuer: ${dev.url} }]
mission:
  client: { client_id: gw-api, private_key_file: ${keyFile} }
routes:
  - match: { method: GET, path: /invoices/* }
    action: invoices.read
evidence: { sink: ${join(folder, `${name}.jsonl`)} }
replay_store: { type: redis, url: "${redis.url}" }
log: { level: info }
`,
      );
      return f;
    };
    a = await startCli(file('a'));
    b = await startCli(file('b'));
    procs.push(a.proc, b.proc);
    dev.addReceiver({ endpoint: `${a.url}/.well-known/ssf/push`, audience: API }); // only replica A hears events
    agent = await newAgent();
    const m = (await dev.missions.create({
      subject: 'user_1',
      client_id: 'agent-1',
      purpose: 'p',
      authorization_details: [{ type: 'mission_resource_access', resource: API, actions: ['invoices.read'] }],
    })) as { id: string };
    missionId = m.id;
    token = await agent.token(dev, missionId, API);
  }, 60_000);

  afterAll(async () => {
    for (const p of procs) p.kill('SIGKILL');
    await echo?.close();
    await dev?.close();
    await redis?.stop();
  });

  it('RFC 9449 §11.1 across replicas: a proof accepted by A is a replay at B', async () => {
    const p = await proof();
    expect((await call(a, p)).status).toBe(200);
    const replay = await call(b, p);
    expect(replay.status).toBe(401);
    expect(replay.json()).toMatchObject({ denial_reason: 'dpop_invalid' });
    expect((await call(b)).status).toBe(200);
  });

  it('Redis down: replay checks fail closed (503), the processes stay up; Redis back: both recover without restart', async () => {
    await redis.kill();
    for (const gw of [a, b]) {
      const r = await eventually(async () => {
        const res = await call(gw);
        return res.status === 503 ? res : null;
      });
      expect(r.json()).toMatchObject({ error: 'temporarily_unavailable', denial_reason: 'replay_store_unavailable' });
      expect((await raw(gw.adminUrl, { path: '/healthz' })).status).toBe(200);
      expect((await raw(gw.adminUrl, { path: '/readyz' })).status).toBe(503);
    }
    await redis.start();
    for (const gw of [a, b]) {
      await eventually(async () => (await call(gw)).status === 200, 15_000);
      await eventually(async () => (await raw(gw.adminUrl, { path: '/readyz' })).status === 200, 15_000);
    }
  }, 60_000);

  it('a revocation pushed to replica A is enforced by replica B, and cuts the stream B has open', async () => {
    expect((await call(b)).status).toBe(200);
    const u = new URL(b.url);
    let received = 0;
    let cut = false;
    const stream = request({ host: u.hostname, port: u.port, path: '/invoices/stream', headers: { authorization: `DPoP ${token}`, dpop: await agent.proof('GET', `${API}/invoices/stream`, token) } });
    stream.on('error', () => (cut = true));
    stream.on('response', (res) => {
      res.on('data', () => received++);
      res.on('aborted', () => (cut = true));
      res.on('error', () => (cut = true));
    });
    stream.end();
    await eventually(() => received >= 2);
    await dev.missions.revoke(missionId); // resolves once A answered 202
    const started = Date.now();
    await eventually(() => cut, 3000);
    const denied = await eventually(async () => {
      const r = await call(b);
      return r.status === 403 ? r : null;
    }, 4000);
    expect(denied.json()).toMatchObject({ error: 'mission_terminated', mission_status: 'revoked' });
    expect(Date.now() - started).toBeLessThan(3000);
  });
});
