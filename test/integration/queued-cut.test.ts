/**
 * r17a 1, end to end: a permitted request that waits for a free upstream connection (all of
 * `upstream.connections` taken by streams) is held under its Mission while it waits. Revoked in
 * the meantime, it is never sent: the upstream never sees it, even once a connection frees.
 */
import { mkdtempSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { gatewayClientKey, newAgent, type Agent } from '../helpers/agent.js';
import { eventually, startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';

const API = 'https://api.example.com';
const ENTRIES = [{ type: 'mission_resource_access', resource: API, actions: ['api.use'] }];

let dev: DevAuthority;
let upstream: Awaited<ReturnType<typeof startEcho>>;
let gw: TestGateway;
let agent: Agent;
/** Paths the upstream was asked for, in order. */
const seen: string[] = [];

beforeAll(async () => {
  dev = await startDevAuthority({ port: 0, quiet: true });
  upstream = await startEcho((req, res) => {
    seen.push(req.url ?? '');
    if (req.url === '/events') {
      // An endless stream: it takes the one upstream connection until it is closed.
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: open\n\n');
      return;
    }
    res.end('{"paid":true}');
  });
  const folder = mkdtempSync(join(tmpdir(), 'mgw-queued-'));
  gw = await startGateway(
    `
public_base_url: ${API}
resource: ${API}
upstream: { url: ${upstream.url}, connections: 1 }
issuers: [{ issuer: ${dev.url} }]
mission:
  client: { client_id: gw-api, private_key_file: ${await gatewayClientKey(dev, folder)} }
routes:
  - match: { path: /** }
    action: api.use
`,
    { folder },
  );
  dev.addReceiver({ endpoint: `${gw.url}/.well-known/ssf/push`, audience: API });
  agent = await newAgent();
});

afterAll(async () => {
  await gw?.close();
  await upstream?.close();
  await dev?.close();
});

async function missionToken(): Promise<{ id: string; token: string }> {
  const m = (await dev.missions.create({ subject: 'user_1', client_id: 'agent-1', purpose: 'pay', authorization_details: ENTRIES })) as unknown as { id: string };
  return { id: m.id, token: await agent.token(dev, m.id, API) };
}

/** Sends a request through the gateway; resolves with its status, or 'cut' when the connection broke. */
async function send(method: string, path: string, token: string): Promise<{ done: Promise<number | 'cut'>; cancel(): void }> {
  const u = new URL(gw.url);
  const req = request({ host: u.hostname, port: u.port, method, path, headers: { authorization: `DPoP ${token}`, dpop: await agent.proof(method, `${API}${path}`, token) } });
  const done = new Promise<number | 'cut'>((resolve) => {
    req.on('error', () => resolve('cut'));
    req.on('response', (res: IncomingMessage) => {
      if (path === '/events') resolve(res.statusCode ?? 0);
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve('cut'));
      res.on('aborted', () => resolve('cut'));
    });
  });
  req.end();
  return { done, cancel: () => req.destroy() };
}

/** Exchanges the gateway holds under a Mission (the stream, and a request once admitted and queued). */
async function held(): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  return Number(/^mission_gateway_open_exchanges (\S+)$/m.exec(text)?.[1]);
}

describe('a request waiting for an upstream connection is held under its Mission', () => {
  it('revoked while queued behind its own stream: the revocation frees the connection, and the queued request is never sent', async () => {
    const m = await missionToken();
    const stream = await send('GET', '/events', m.token);
    expect(await stream.done).toBe(200);
    const pay = await send('POST', '/pay-own', m.token);
    // Admitted and queued (held from dispatch): the one connection is the stream's.
    await eventually(async () => (await held()) === 2);
    expect(seen).not.toContain('/pay-own');
    await dev.missions.revoke(m.id);
    expect(await pay.done).toBe('cut');
    // The stream's connection is free again; the queued request must not have used it.
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).not.toContain('/pay-own');
    const record = await eventually(() => gw.evidence().find((r) => r['path'] === '/pay-own'));
    expect(record).toMatchObject({ decision: 'permit', upstream_status: 499 });
  });

  it("revoked while queued behind another Mission's stream, which then ends: never sent", async () => {
    const other = await missionToken();
    const m = await missionToken();
    const stream = await send('GET', '/events', other.token);
    expect(await stream.done).toBe(200);
    const pay = await send('POST', '/pay-other', m.token);
    await eventually(async () => (await held()) === 2);
    await dev.missions.revoke(m.id);
    expect(await pay.done).toBe('cut');
    stream.cancel(); // the other Mission's stream ends: its connection frees
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).not.toContain('/pay-other');
    // And the connection serves the next request of an active Mission.
    const next = await send('GET', '/after', other.token);
    expect(await next.done).toBe(200);
    expect(seen.at(-1)).toBe('/after');
  });
});
