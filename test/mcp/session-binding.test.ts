/**
 * A session is bound to its agent and held under its Missions by every Mission-bound request made
 * in it, not only by a tools/call (r18a 2, 4), on the whole gateway in MAS mode, in front of the
 * example MCP server (stock SDK, stateful) with the development authority pushing lifecycle SETs:
 *  - a session opened under an `AAuth-Mission` (s256) reference is held under the Mission's
 *    governance id too, so learning by id that the Mission is revoked ends it (404 session_ended,
 *    the upstream sent DELETE): from a SET once the bounded Mission cache has let go of the s256
 *    record and its id alias (while the alias is cached, a SET by id cuts the s256 key as well), and
 *    from an id-form Mission Status answer (which never cuts the s256 key);
 *  - a session whose only Mission-bound request is a notification, a GET stream, or a resumed GET
 *    stream (Last-Event-ID) is bound to that agent (another agent naming it: 404 session_mismatch)
 *    and ends with that Mission.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DevAuthority } from '../../src/dev-authority/index.js';
import { eventually, type TestGateway } from '../helpers/gateway.js';
import { devAuthority, freePort, gatewayClientKey, mcpGateway } from './gateway.js';
// @ts-expect-error plain JS example without types
import { startExampleServer } from '../../examples/mcp-server/server.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Stack {
  readonly dev: DevAuthority;
  readonly gw: TestGateway;
  readonly mcpUrl: string;
  /** The sessions the example server holds: one the upstream was sent DELETE for is gone. */
  readonly upstreamSessions: Map<string, unknown>;
}

/** MAS mode (Missions named by reference headers), pushed lifecycle SETs when `push`. */
async function stack(push = true, mission = ''): Promise<Stack> {
  const folder = mkdtempSync(join(tmpdir(), 'mgw-binding-'));
  const dev = await devAuthority();
  cleanups.push(() => dev.close());
  const ex = await startExampleServer({ jsonResponse: true });
  cleanups.push(() => ex.close() as Promise<void>);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const gw = await mcpGateway(
    `
listen: { host: 127.0.0.1, port: ${port} }
public_base_url: ${base}
resource: ${base}
upstream: { url: ${new URL(ex.url as string).origin}, timeout_s: 2 }
issuers:
  - issuer: ${dev.url}
    algorithms: [ES256]
dpop: { required: false }
mission:
  required: true
  accept_header_references: true
  client: { client_id: gw-mcp, private_key_file: ${gatewayClientKey(dev, folder)} }
  ${mission}
routes: []
mcp: { path: /mcp, resource: ${base}/mcp, tool_actions: { get_invoice: invoices.read } }
`,
    folder,
  );
  cleanups.push(() => gw.close());
  if (push) dev.addReceiver({ endpoint: `${base}/.well-known/ssf/push`, audience: base });
  return { dev, gw, mcpUrl: `${base}/mcp`, upstreamSessions: ex.sessions as Map<string, unknown> };
}

/** A Mission of `agent` (its subject and client) allowed to read invoices over MCP. */
async function missionOf(s: Stack, agent: string): Promise<{ id: string; s256: string }> {
  const m = await s.dev.missions.create({ subject: agent, client_id: agent, purpose: 'invoices', authorization_details: [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }] });
  return { id: m.id, s256: m.aauth.s256 };
}

/** A token of `agent` naming no Mission: each request names its own (MAS mode). */
const tokenOf = (s: Stack, agent: string): Promise<string> => s.dev.issueAccessToken({ clientId: agent, resource: s.mcpUrl });

const byId = (s: Stack, id: string): Record<string, string> => ({ 'mission-reference': `id="${id}", issuer="${s.dev.url}"` });
const byS256 = (s: Stack, s256: string): Record<string, string> => ({ 'aauth-mission': `approver="${s.dev.url}"; s256="${s256}"` });

function send(s: Stack, method: string, token: string, headers: Record<string, string>, body?: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(s.mcpUrl, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-06-18', ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    ...(signal === undefined ? {} : { signal }),
  });
}

const initialize = (id: number) => ({ jsonrpc: '2.0', id, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });

/** `initialize` under no Mission (MAS mode lets it through): a session the gateway has not bound yet. */
async function openSession(s: Stack, token: string): Promise<string> {
  const res = await send(s, 'POST', token, {}, initialize(0));
  expect(res.status).toBe(200);
  await res.text();
  const sid = res.headers.get('mcp-session-id')!;
  expect(s.upstreamSessions.has(sid)).toBe(true);
  return sid;
}

const ping = (id: number) => ({ jsonrpc: '2.0', id, method: 'ping' });
const getInvoice = (id: number) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'get_invoice', arguments: { invoice_id: 'inv_1001' } } });

/** The session's next request is refused as ended; the upstream was told to end it. */
async function expectEnded(s: Stack, sid: string, token: string, headers: Record<string, string>): Promise<void> {
  const next = await send(s, 'POST', token, { 'mcp-session-id': sid, ...headers }, ping(9));
  expect(next.status).toBe(404);
  expect(await next.json()).toMatchObject({ error: 'not_found', denial_reason: 'session_ended' });
  await eventually(() => !s.upstreamSessions.has(sid));
}

describe('r18a 2: a session opened under an AAuth-Mission reference ends when the Mission is revoked by id', () => {
  it('revoked by a lifecycle SET naming the Mission by id, once the bounded Mission cache has let go of the AAuth reference: the next request naming the session is 404 session_ended, the upstream gets DELETE', async () => {
    const s = await stack(true, 'cache_max_entries: 100');
    const m = await missionOf(s, 'agent_1');
    const token = await tokenOf(s, 'agent_1');
    const sid = await openSession(s, token);
    const call = await send(s, 'POST', token, { 'mcp-session-id': sid, ...byS256(s, m.s256) }, getInvoice(1));
    expect([call.status, await call.text()]).toEqual([200, expect.stringContaining('inv_1001')]);

    // A busy gateway: more AAuth references than the cache holds are looked up while the session
    // lives on, so what Status told of this one (its governance id) is evicted before the SET comes.
    for (let i = 0; i < 100; i++) {
      const busy = await missionOf(s, 'agent_1');
      const r = await send(s, 'POST', token, byS256(s, busy.s256), initialize(100 + i));
      expect(r.status).toBe(200);
      await r.text();
    }
    const metrics = await (await fetch(`${s.gw.adminUrl}/metrics`)).text();
    expect(Number(/^mission_gateway_cache_evictions_total\{cache="mission"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThan(0);

    const revoked = await s.dev.missions.revoke(m.id);
    expect(revoked.deliveries.map((d) => d.status)).toEqual([202]);
    // Under another Mission of the same agent, still active: the session is refused, not the Mission.
    await expectEnded(s, sid, token, byS256(s, (await missionOf(s, 'agent_1')).s256));
  });

  it("revoked, learned from an id-form Mission Status answer (another request naming the Mission by id): the session is ended as well", async () => {
    const s = await stack(false);
    const m = await missionOf(s, 'agent_1');
    const other = await missionOf(s, 'agent_1');
    const token = await tokenOf(s, 'agent_1');
    const sid = await openSession(s, token);
    const call = await send(s, 'POST', token, { 'mcp-session-id': sid, ...byS256(s, m.s256) }, getInvoice(1));
    expect(call.status).toBe(200);
    await call.text();

    // No SET is pushed: the gateway learns of the revocation only when Status is asked by id.
    await s.dev.missions.revoke(m.id);
    const asked = await send(s, 'POST', token, byId(s, m.id), getInvoice(2));
    expect(asked.status).toBe(403);
    expect(await asked.json()).toMatchObject({ denial_reason: 'mission_inactive' });
    await expectEnded(s, sid, token, byS256(s, other.s256));
  });
});

describe('r18a 4: a session is bound and held by its first Mission-bound request, whatever its method', () => {
  /** Each way a session can be used under a Mission without a tools/call; `open` is the only such request. */
  const uses: { name: string; open: (s: Stack, sid: string, token: string, ref: Record<string, string>, signal: AbortSignal) => Promise<Response> }[] = [
    { name: 'a notification (notifications/initialized)', open: (s, sid, token, ref) => send(s, 'POST', token, { 'mcp-session-id': sid, ...ref }, { jsonrpc: '2.0', method: 'notifications/initialized' }) },
    { name: 'a GET stream', open: (s, sid, token, ref, signal) => send(s, 'GET', token, { 'mcp-session-id': sid, accept: 'text/event-stream', ...ref }, undefined, signal) },
    { name: 'a resumed GET stream (Last-Event-ID)', open: (s, sid, token, ref, signal) => send(s, 'GET', token, { 'mcp-session-id': sid, accept: 'text/event-stream', 'last-event-id': 'ev-1', ...ref }, undefined, signal) },
  ];

  for (const use of uses) {
    it(`used only by ${use.name}: another agent naming it is 404 session_mismatch; the Mission's end ends it`, async () => {
      const s = await stack();
      const a = await missionOf(s, 'agent_1');
      const again = await missionOf(s, 'agent_1');
      const b = await missionOf(s, 'agent_2');
      const tokenA = await tokenOf(s, 'agent_1');
      const tokenB = await tokenOf(s, 'agent_2');
      const sid = await openSession(s, tokenA);
      const stream = new AbortController();
      cleanups.push(() => stream.abort());
      const opened = await use.open(s, sid, tokenA, byId(s, a.id), stream.signal);
      expect(opened.status).toBeLessThan(300);

      const foreign = await send(s, 'POST', tokenB, { 'mcp-session-id': sid, ...byId(s, b.id) }, { jsonrpc: '2.0', method: 'notifications/initialized' });
      expect(foreign.status).toBe(404);
      expect(await foreign.json()).toMatchObject({ error: 'not_found', denial_reason: 'session_mismatch' });

      await s.dev.missions.revoke(a.id);
      await expectEnded(s, sid, tokenA, byId(s, again.id));
    });
  }
});

describe('r19d 3: a session is bound to the agent whose Mission-bound initialize created it', () => {
  it('another agent naming it right after the initialize answer is 404 session_mismatch; the creator goes on in it', async () => {
    const s = await stack(false);
    const a = await missionOf(s, 'agent_1');
    const b = await missionOf(s, 'agent_2');
    const tokenA = await tokenOf(s, 'agent_1');
    const tokenB = await tokenOf(s, 'agent_2');
    const created = await send(s, 'POST', tokenA, byId(s, a.id), initialize(0));
    expect(created.status).toBe(200);
    await created.text();
    const sid = created.headers.get('mcp-session-id')!;
    expect(s.upstreamSessions.has(sid)).toBe(true);

    // Before the creator's next request: the other agent names the new session first.
    const foreign = await send(s, 'POST', tokenB, { 'mcp-session-id': sid, ...byId(s, b.id) }, getInvoice(1));
    expect(foreign.status).toBe(404);
    expect(await foreign.json()).toMatchObject({ error: 'not_found', denial_reason: 'session_mismatch' });

    const initialized = await send(s, 'POST', tokenA, { 'mcp-session-id': sid, ...byId(s, a.id) }, { jsonrpc: '2.0', method: 'notifications/initialized' });
    expect(initialized.status).toBe(202);
    const call = await send(s, 'POST', tokenA, { 'mcp-session-id': sid, ...byId(s, a.id) }, getInvoice(2));
    expect([call.status, await call.text()]).toEqual([200, expect.stringContaining('inv_1001')]);
  });

  it('MAS mode: a bare initialize (no Mission) binds the session to its creator too: another agent naming it next is 404 session_mismatch (r19e 6)', async () => {
    const s = await stack(false);
    const b = await missionOf(s, 'agent_2');
    const a = await missionOf(s, 'agent_1');
    const tokenA = await tokenOf(s, 'agent_1');
    const tokenB = await tokenOf(s, 'agent_2');
    const sid = await openSession(s, tokenA);
    const foreign = await send(s, 'POST', tokenB, { 'mcp-session-id': sid, ...byId(s, b.id) }, getInvoice(1));
    expect(foreign.status).toBe(404);
    expect(await foreign.json()).toMatchObject({ denial_reason: 'session_mismatch' });
    const initialized = await send(s, 'POST', tokenA, { 'mcp-session-id': sid, ...byId(s, a.id) }, { jsonrpc: '2.0', method: 'notifications/initialized' });
    expect(initialized.status).toBe(202);
    const call = await send(s, 'POST', tokenA, { 'mcp-session-id': sid, ...byId(s, a.id) }, getInvoice(2));
    expect([call.status, await call.text()]).toEqual([200, expect.stringContaining('inv_1001')]);
  });
});
