/**
 * End to end on real sockets: what a Mission authorized stops flowing the moment it stops being
 * active. The dev Mission Authority pushes its lifecycle SETs to the gateway; an upstream serves
 * endless SSE streams, a response it holds back, and a WebSocket echo.
 */
import { mkdtempSync } from 'node:fs';
import { request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { gatewayClientKey, newAgent, type Agent } from '../helpers/agent.js';
import { closeServer, eventually, startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';

const API = 'https://api.example.com';
const ENTRIES = [{ type: 'mission_resource_access', resource: API, actions: ['events.read'] }];

/** A client-side view of one streamed response through the gateway. */
interface Stream {
  status: number | null;
  events: number;
  /** Set when the connection ended: 'end' (complete message) or 'cut' (broken). */
  ended: 'end' | 'cut' | null;
  endedAt: number;
  close(): void;
}

describe('open exchanges end with their Mission', () => {
  let dev: DevAuthority;
  let upstream: Awaited<ReturnType<typeof startEcho>>;
  let wss: WebSocketServer;
  let gw: TestGateway;
  let agent: Agent;
  /** Upstream requests to /events still open. */
  let openUpstream = 0;
  /** /slow requests waiting for the test to let them answer. */
  const held: ServerResponse[] = [];
  /** /ws-slow upgrades waiting for the test to let the upstream accept them. */
  const slowUpgrades: (() => void)[] = [];

  const mission = async (expiresAt?: number): Promise<{ id: string; token: string }> => {
    const m = (await dev.missions.create({
      subject: 'user_1',
      client_id: 'agent-1',
      purpose: 'watch',
      authorization_details: ENTRIES,
      ...(expiresAt === undefined ? {} : { expires_at: expiresAt }),
    })) as unknown as { id: string };
    return { id: m.id, token: await agent.token(dev, m.id, API) };
  };

  const open = async (path: string, token: string, extra: Record<string, string> = {}): Promise<Stream> => {
    const s: Stream = { status: null, events: 0, ended: null, endedAt: 0, close: () => {} };
    const u = new URL(gw.url);
    const req = request({
      host: u.hostname,
      port: u.port,
      path,
      headers: { authorization: `DPoP ${token}`, dpop: await agent.proof('GET', `${API}${path}`, token), ...extra },
    });
    const end = (how: 'end' | 'cut'): void => {
      if (s.ended !== null) return;
      s.ended = how;
      s.endedAt = Date.now();
    };
    req.on('error', () => end('cut'));
    req.on('response', (res: IncomingMessage) => {
      s.status = res.statusCode ?? null;
      res.on('data', (c: Buffer) => (s.events += c.toString().split('\n\n').length - 1));
      res.on('end', () => end('end'));
      res.on('error', () => end('cut'));
      res.on('aborted', () => end('cut'));
    });
    req.end();
    s.close = () => req.destroy();
    return s;
  };

  const metric = async (name: string): Promise<number> => {
    const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'));
    return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
  };

  beforeAll(async () => {
    // The authority's own deadline sweep is off: an expiry must be the gateway's own doing.
    dev = await startDevAuthority({ port: 0, quiet: true, sweepIntervalMs: 3_600_000 });
    upstream = await startEcho((req, res) => {
      if (req.url === '/slow') {
        held.push(res);
        return;
      }
      if (req.url === '/events') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
        openUpstream++;
        let n = 0;
        const tick = setInterval(() => res.write(`data: ${n++}\n\n`), 25);
        res.on('close', () => {
          clearInterval(tick);
          openUpstream--;
        });
        return;
      }
      res.end('{}');
    });
    wss = new WebSocketServer({
      noServer: true,
      // /ws-slow: the upgrade is answered only when the test says so.
      verifyClient: (info, done) => (info.req.url === '/ws-slow' ? slowUpgrades.push(() => done(true)) : done(true)),
    });
    (upstream.server as Server).on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      if (req.url !== '/events-upgrade') return wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
      // Not a WebSocket endpoint: it answers the upgrade with its ordinary event stream.
      socket.on('error', () => undefined);
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\r\n');
      openUpstream++;
      let n = 0;
      const tick = setInterval(() => socket.write(`data: ${n++}\n\n`), 25);
      socket.on('close', () => {
        clearInterval(tick);
        openUpstream--;
      });
    });
    wss.on('connection', (ws, req) => {
      // /ws-slow greets at once: the greeting travels with the 101.
      if (req.url === '/ws-slow') ws.send('greeting');
      ws.on('message', (m, binary) => ws.send(m, { binary }));
    });
    const folder = mkdtempSync(join(tmpdir(), 'mgw-holds-'));
    const keyFile = await gatewayClientKey(dev, folder);
    gw = await startGateway(
      `
public_base_url: ${API}
resource: ${API}
upstream: { url: ${upstream.url} }
issuers: [{ issuer: ${dev.url} }]
mission:
  client: { client_id: gw-api, private_key_file: ${keyFile} }
routes:
  - match: { method: GET, path: /** }
    action: events.read
`,
      { folder },
    );
    dev.addReceiver({ endpoint: `${gw.url}/.well-known/ssf/push`, audience: API });
    agent = await newAgent();
  });

  afterAll(async () => {
    for (const c of wss?.clients ?? []) c.terminate();
    wss?.close();
    await gw?.close();
    await upstream?.close().catch(() => closeServer(upstream.server));
    await dev?.close();
  });

  it("revocation cuts the Mission's open SSE streams at once, and only its own", async () => {
    const a = await mission();
    const b = await mission();
    const a1 = await open('/events', a.token);
    const a2 = await open('/events', a.token);
    const b1 = await open('/events', b.token);
    await eventually(() => a1.events >= 2 && a2.events >= 2 && b1.events >= 2);
    expect([a1.status, a2.status, b1.status]).toEqual([200, 200, 200]);
    expect(await metric('mission_gateway_open_exchanges')).toBe(3);
    const cutBefore = await metric('mission_gateway_exchanges_cut_total{cause="state_change"}');

    const revokedAt = Date.now();
    await dev.missions.revoke(a.id); // resolves once the SET was pushed (and answered 202)
    await eventually(() => a1.ended !== null && a2.ended !== null, 2000);
    expect([a1.ended, a2.ended]).toEqual(['cut', 'cut']);
    expect(Math.max(a1.endedAt, a2.endedAt) - revokedAt).toBeLessThan(2500);
    // The upstream's side of each cut stream was closed too.
    await eventually(() => openUpstream === 1, 2000);

    // Mission B's stream still flows.
    const seen = b1.events;
    await eventually(() => b1.events > seen + 2);
    expect(b1.ended).toBeNull();
    expect(await metric('mission_gateway_exchanges_cut_total{cause="state_change"}')).toBe(cutBefore + 2);
    expect(await metric('mission_gateway_open_exchanges')).toBe(1);

    // And the next request under A is denied as before.
    const next = await open('/events', a.token);
    await eventually(() => next.status);
    expect(next.status).toBe(403);
    b1.close();
    await eventually(() => openUpstream === 0, 2000);
  });

  it('an upgrade the upstream answers with its ordinary event stream is held like any stream: the revocation cuts it (r20a 1)', async () => {
    const m = await mission();
    const s = await open('/events-upgrade', m.token, { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' });
    await eventually(() => s.events >= 2);
    expect(s.status).toBe(200);
    expect(await metric('mission_gateway_open_exchanges')).toBe(1);
    await dev.missions.revoke(m.id);
    await eventually(() => s.ended !== null, 2000);
    expect(s.ended).toBe('cut');
    await eventually(() => openUpstream === 0, 2000);
    expect(await metric('mission_gateway_open_exchanges')).toBe(0);
  });

  it('suspension closes a WebSocket tunnel the Mission authorized', async () => {
    const m = await mission();
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws`, {
      headers: { authorization: `DPoP ${m.token}`, dpop: await agent.proof('GET', `${API}/ws`, m.token) },
    });
    const closed = new Promise<number>((resolve) => ws.once('close', () => resolve(Date.now())));
    ws.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
    const echoed = new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString())));
    ws.send('ping');
    expect(await echoed).toBe('ping');

    const suspendedAt = Date.now();
    await dev.missions.suspend(m.id, {});
    expect((await closed) - suspendedAt).toBeLessThan(2500);
    await eventually(async () => (await metric('mission_gateway_open_exchanges')) === 0, 2000);
  });

  it("narrowing the Mission's authority cuts the stream and tunnel it no longer permits (the old token's authority_hash no longer matches); a new token's stream flows on", async () => {
    const m = (await dev.missions.create({
      subject: 'user_1',
      client_id: 'agent-1',
      purpose: 'watch',
      authorization_details: [{ ...ENTRIES[0], actions: ['events.read', 'other.read'] }],
    })) as unknown as { id: string };
    const token = await agent.token(dev, m.id, API);
    const stream = await open('/events', token);
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws`, {
      headers: { authorization: `DPoP ${token}`, dpop: await agent.proof('GET', `${API}/ws`, token) },
    });
    ws.on('error', () => {});
    const wsClosed = new Promise<number>((resolve) => ws.once('close', () => resolve(Date.now())));
    await new Promise<void>((resolve) => ws.once('open', () => resolve()));
    await eventually(() => stream.events >= 2);
    const cutBefore = await metric('mission_gateway_exchanges_cut_total{cause="authority_changed"}');

    const changedAt = Date.now();
    await dev.missions.changeAuthority(m.id, ENTRIES); // pushed: authority_changed, same state
    // The gateway reads the Mission's Status again at once and decides the open exchanges again.
    await eventually(() => stream.ended !== null, 2000);
    expect(stream.ended).toBe('cut');
    expect(stream.endedAt - changedAt).toBeLessThan(2500);
    expect((await wsClosed) - changedAt).toBeLessThan(2500);
    expect(await metric('mission_gateway_exchanges_cut_total{cause="authority_changed"}')).toBe(cutBefore + 2);

    // A new request with the old token is denied the same way.
    const again = await open('/events', token);
    await eventually(() => again.status);
    expect(again.status).toBe(403);
    // A token minted under the narrowed authority streams, and a later re-read does not cut it.
    const fresh = await open('/events', await agent.token(dev, m.id, API));
    await eventually(() => fresh.events >= 3);
    expect(fresh.ended).toBeNull();
    fresh.close();
    await eventually(async () => (await metric('mission_gateway_open_exchanges')) === 0, 2000);
  });

  it('a WebSocket upgrade the upstream accepts only after the revocation is closed at once, nothing relayed', async () => {
    const m = await mission();
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws-slow`, {
      headers: { authorization: `DPoP ${m.token}`, dpop: await agent.proof('GET', `${API}/ws-slow`, m.token) },
    });
    ws.on('error', () => {});
    const echoes: string[] = [];
    ws.on('message', (d) => echoes.push(d.toString()));
    ws.on('open', () => ws.send('ping'));
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    await eventually(() => slowUpgrades.length === 1);
    await dev.missions.revoke(m.id);
    slowUpgrades.shift()!();
    await closed;
    await new Promise((r) => setTimeout(r, 100));
    expect(echoes).toEqual([]);
    const record = await eventually(() => gw.evidence().find((r) => r['path'] === '/ws-slow'));
    expect(record).toMatchObject({ decision: 'permit', upstream_status: 101 });
    await eventually(async () => (await metric('mission_gateway_open_exchanges')) === 0, 2000);
  });

  it('a WebSocket tunnel outlives the retirement of the config it was opened under (a reload), and still ends with its Mission', async () => {
    const m = await mission();
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws`, {
      headers: { authorization: `DPoP ${m.token}`, dpop: await agent.proof('GET', `${API}/ws`, m.token) },
    });
    ws.on('error', () => {});
    await new Promise<void>((resolve) => ws.once('open', () => resolve()));
    let closed = false;
    ws.once('close', () => (closed = true));
    // What Gateway.reload does to the previous config's runtime 30 s after a SIGHUP.
    await (gw.gateway as unknown as { runtime: { tunnel: { close(): Promise<void> } } }).runtime.tunnel.close();
    const echoed = new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString())));
    ws.send('still here');
    expect(await echoed).toBe('still here');
    expect(closed).toBe(false);
    await dev.missions.revoke(m.id);
    await eventually(() => closed, 2000);
  });

  it('a request the upstream is still working on when its Mission is revoked is cut: its answer never reaches the client', async () => {
    const m = await mission();
    const s = await open('/slow', m.token);
    await eventually(() => held.length === 1);
    const res = held.shift()!;
    let upstreamClosed = false;
    res.on('close', () => (upstreamClosed = true));
    await dev.missions.revoke(m.id);
    // Held from dispatch: the revocation cuts the upstream request too, before any answer.
    await eventually(() => s.ended, 2000);
    expect(s.status).toBeNull();
    expect(s.ended).toBe('cut');
    await eventually(() => upstreamClosed, 2000);
    // The evidence says what happened: permitted while active, no answer relayed (499, as for an
    // upload the revocation cut).
    const record = await eventually(() => gw.evidence().find((r) => r['path'] === '/slow'));
    expect(record).toMatchObject({ decision: 'permit', upstream_status: 499 });
  });

  it("the Mission's expires_at passing cuts its stream, with no event from the authority", async () => {
    const expiresAt = Math.floor(Date.now() / 1000) + 3;
    const m = await mission(expiresAt);
    const s = await open('/events', m.token);
    await eventually(() => s.events >= 2);
    const expiredBefore = await metric('mission_gateway_exchanges_cut_total{cause="expired"}');
    await eventually(() => s.ended, 6000);
    expect(s.ended).toBe('cut');
    expect(s.endedAt).toBeGreaterThanOrEqual(expiresAt * 1000);
    expect(s.endedAt).toBeLessThan(expiresAt * 1000 + 1000);
    expect(await metric('mission_gateway_exchanges_cut_total{cause="expired"}')).toBe(expiredBefore + 1);
  });
});

describe('open exchanges end with their Mission: learned from Mission Status, with no event', () => {
  interface StatusOnly {
    readonly dev: DevAuthority;
    readonly missionId: string;
    open(path: string): Promise<{ cut: () => boolean }>;
    openUpstream(): number;
    metric(name: string): Promise<number>;
    close(): Promise<void>;
  }

  /** A gateway that learns states only from Mission Status (no SSF receiver), cached for 1 s. */
  async function statusOnly(): Promise<StatusOnly> {
    const dev = await startDevAuthority({ port: 0, quiet: true, heartbeatSeconds: 0 });
    let openUpstream = 0;
    const upstream = await startEcho((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      openUpstream++;
      const tick = setInterval(() => res.write('data: x\n\n'), 25);
      res.on('close', () => {
        clearInterval(tick);
        openUpstream--;
      });
      void req;
    });
    const folder = mkdtempSync(join(tmpdir(), 'mgw-holds-status-'));
    const keyFile = await gatewayClientKey(dev, folder);
    const gw = await startGateway(
      `
public_base_url: ${API}
resource: ${API}
upstream: { url: ${upstream.url} }
issuers: [{ issuer: ${dev.url} }]
mission:
  max_stale_s: 1
  status_timeout_s: 1
  client: { client_id: gw-api, private_key_file: ${keyFile} }
routes:
  - match: { method: GET, path: /** }
    action: events.read
`,
      { folder },
    );
    const agent = await newAgent();
    const m = (await dev.missions.create({ subject: 'user_1', client_id: 'agent-1', purpose: 'watch', authorization_details: ENTRIES })) as unknown as { id: string };
    const token = await agent.token(dev, m.id, API);
    return {
      dev,
      missionId: m.id,
      openUpstream: () => openUpstream,
      async open(path) {
        const u = new URL(gw.url);
        let cut = false;
        let received = 0;
        const req = request({ host: u.hostname, port: u.port, path, headers: { authorization: `DPoP ${token}`, dpop: await agent.proof('GET', `${API}${path}`, token) } });
        req.on('error', () => (cut = true));
        req.on('response', (res) => {
          res.on('data', () => received++);
          res.on('aborted', () => (cut = true));
        });
        req.end();
        await eventually(() => received >= 2);
        return { cut: () => cut };
      },
      async metric(name) {
        const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
        const line = text.split('\n').find((l) => l.startsWith(name + ' '));
        return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
      },
      async close() {
        await gw.close();
        await upstream.close();
        await dev.close().catch(() => undefined);
      },
    };
  }

  it('a revocation no event carries still cuts the open stream within max_stale_s, with no further request', async () => {
    const s = await statusOnly();
    try {
      const stream = await s.open('/feed');
      await s.dev.missions.revoke(s.missionId);
      const revokedAt = Date.now();
      await eventually(() => stream.cut(), 4000);
      // Cache lifetime (1 s) plus the re-check interval (1 s), plus the Status round trip.
      expect(Date.now() - revokedAt).toBeLessThan(3000);
      await eventually(() => s.openUpstream() === 0, 2000);
      expect(await s.metric('mission_gateway_exchanges_cut_total{cause="state_change"}')).toBe(1);
    } finally {
      await s.close();
    }
  });

  it('an authority that cannot be reached cuts the open stream once its state is stale (fail closed, as a request is denied)', async () => {
    const s = await statusOnly();
    try {
      const stream = await s.open('/feed');
      await s.dev.close();
      await eventually(() => stream.cut(), 5000);
      expect(await s.metric('mission_gateway_exchanges_cut_total{cause="state_unavailable"}')).toBe(1);
    } finally {
      await s.close();
    }
  });
});
