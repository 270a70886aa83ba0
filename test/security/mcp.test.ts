/**
 * Attacks on the MCP path (SPEC §7): tool names with tricks, batches that mix allowed and denied
 * calls, `_meta` Mission references that conflict with the token, ambiguous JSON-RPC. A denied call
 * must never reach the MCP server.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { gatewayClientKey, newAgent, type Agent } from '../helpers/agent.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { raw, type RawResponse } from '../helpers/http.js';
// @ts-expect-error plain JS example without types
import { startExampleServer } from '../../examples/mcp-server/server.js';

const BASE = 'https://tools.example.com';
const MCP = `${BASE}/mcp`;

let dev: DevAuthority;
let server: { url: string; close(): Promise<void> };
const calls: { tool?: string; name?: string }[] = [];
let gw: TestGateway;
let agent: Agent;
let token: string;
let missionId: string;
let session = '';

async function rpc(body: unknown, extraHeaders: Record<string, string> = {}): Promise<RawResponse> {
  return raw(gw.url, {
    method: 'POST',
    path: '/mcp',
    headers: {
      authorization: `DPoP ${token}`,
      dpop: await agent.proof('POST', MCP, token),
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      ...(session === '' ? {} : { 'mcp-session-id': session }),
      ...extraHeaders,
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

const call = (id: number, name: unknown, args: Record<string, unknown> = {}, meta?: unknown) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name, arguments: args, ...(meta === undefined ? {} : { _meta: meta }) },
});

function reached(): string[] {
  return calls.map((c) => String(c.tool ?? c.name ?? ''));
}

beforeAll(async () => {
  dev = await startDevAuthority({ port: 0, quiet: true });
  server = await startExampleServer({ jsonResponse: true, log: (e: Record<string, unknown>) => calls.push(e as never) });
  const folder = mkdtempSync(join(tmpdir(), 'mgw-sec-mcp-'));
  const keyFile = await gatewayClientKey(dev, folder);
  gw = await startGateway(
    `public_base_url: ${BASE}
resource: ${BASE}
upstream: { url: ${new URL(server.url).origin} }
issuers: [{ issuer: ${dev.url} }]
mission: { client: { client_id: gw-api, private_key_file: ${keyFile} } }
mcp: { path: /mcp, resource: ${MCP} }
`,
    { folder },
  );
  agent = await newAgent();
  const m = (await dev.missions.create({
    subject: 'user_1',
    client_id: 'agent-1',
    purpose: 'pay invoices',
    authorization_details: [
      { type: 'mission_resource_access', resource: MCP, actions: ['get_invoice'] },
      { type: 'mission_resource_access', resource: MCP, actions: ['pay_invoice'], constraints: { max_amount: { amount: '100.00', currency: 'USD' } } },
    ],
  })) as { id: string };
  missionId = m.id;
  token = await agent.token(dev, missionId, MCP);
  const init = await rpc({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'attacker', version: '1' } } });
  expect(init.status).toBe(200);
  session = String(init.headers['mcp-session-id']);
  await rpc({ jsonrpc: '2.0', method: 'notifications/initialized' });
});

afterAll(async () => {
  await gw.close();
  await server.close();
  await dev.close();
});

describe('tool names with tricks', () => {
  for (const name of ['send_email', 'SEND_EMAIL', 'get_invoice ', ' get_invoice', 'get_invoice\u0000', 'get_invoice/../send_email', 'get\u0131nvoice', 'get_invoice\nsend_email', 'pay_invoice.*', '*']) {
    it(`${JSON.stringify(name)} is denied per call and never reaches the server`, async () => {
      const before = calls.length;
      const r = await rpc(call(7, name, { invoice_id: 'inv_1001', to: 'x@evil.example' }));
      expect(r.status).toBe(200);
      const body = r.json<{ id: number; result: { isError: boolean; structuredContent: { ok: boolean; denial_reason: string } } }>();
      expect(body.id).toBe(7);
      expect(body.result.isError).toBe(true);
      expect(body.result.structuredContent).toMatchObject({ ok: false, denial_reason: 'out_of_authority' });
      expect(calls.length).toBe(before);
    });
  }

  for (const name of [42, null, ['get_invoice'], { toString: 'get_invoice' }]) {
    it(`a non-string tool name (${JSON.stringify(name)}) never reaches the server`, async () => {
      const before = calls.length;
      const r = await rpc(call(8, name));
      expect([200, 400]).toContain(r.status);
      if (r.status === 200) expect(r.json<{ result?: { isError: boolean }; error?: unknown }>().result?.isError ?? r.json<{ error?: unknown }>().error !== undefined).toBe(true);
      expect(calls.length).toBe(before);
    });
  }
});

describe('batches', () => {
  it('answers denied calls itself and forwards only the allowed ones', async () => {
    const before = calls.length;
    const r = await rpc([call(1, 'get_invoice', { invoice_id: 'inv_1001' }), call(2, 'send_email', { to: 'a@b.c', subject: 's', body: 'b' }), call(3, 'pay_invoice', { invoice_id: 'inv_1001', amount: '1000.00', currency: 'USD' }), call(4, 'pay_invoice', { invoice_id: 'inv_1001', amount: '99.99', currency: 'USD' })]);
    expect(r.status).toBe(200);
    const answers = r.json<{ id: number; result: { isError?: boolean; structuredContent?: { denial_reason?: string } } }[]>();
    const byId = new Map(answers.map((a) => [a.id, a]));
    expect([...byId.keys()].sort()).toEqual([1, 2, 3, 4]);
    expect(byId.get(2)!.result.structuredContent!.denial_reason).toBe('out_of_authority');
    expect(byId.get(3)!.result.structuredContent!.denial_reason).toBe('parameter_violation');
    expect(byId.get(1)!.result.isError, JSON.stringify(byId.get(1))).toBeFalsy();
    expect(byId.get(4)!.result.isError).toBeFalsy();
    expect(reached().slice(before).sort()).toEqual(['get_invoice', 'pay_invoice']);
  });

  it('a batch of only denied calls never reaches the server', async () => {
    const before = calls.length;
    const r = await rpc([call(1, 'send_email'), call(2, 'pay_invoice', { amount: '1e9', currency: 'USD' })]);
    expect(r.status).toBe(200);
    expect(r.json<unknown[]>()).toHaveLength(2);
    expect(calls.length).toBe(before);
  });
});

describe('_meta Mission references', () => {
  it('a _meta reference naming another Mission than the token is denied per call (mission_reference_conflict)', async () => {
    const before = calls.length;
    const r = await rpc(call(5, 'get_invoice', { invoice_id: 'inv_1001' }, { 'com.karlmcguinness.mission/reference': { mission_id: 'msn_other', issuer: dev.url } }));
    expect(r.json<{ result: { structuredContent: { denial_reason: string } } }>().result.structuredContent.denial_reason).toBe('mission_reference_conflict');
    expect(calls.length).toBe(before);
  });

  it('a _meta reference naming the token\'s own Mission is accepted', async () => {
    const r = await rpc(call(6, 'get_invoice', { invoice_id: 'inv_1001' }, { 'com.karlmcguinness.mission/reference': { mission_id: missionId, issuer: dev.url } }));
    expect(r.json<{ result: { isError?: boolean } }>().result.isError).toBeFalsy();
  });
});

describe('ambiguous JSON-RPC', () => {
  it('duplicate members (method tools/list then tools/call) are refused, not guessed', async () => {
    const before = calls.length;
    const r = await rpc('{"jsonrpc":"2.0","id":9,"method":"tools/list","method":"tools/call","params":{"name":"send_email","arguments":{}}}');
    expect(r.status).toBe(400);
    expect(calls.length).toBe(before);
  });

  // A Go MCP server (encoding/json binds members case-insensitively, last one wins: mcp-go, the
  // go-sdk before 1.3.1, CVE-2026-27896) would run each of these as a call the gateway never gated.
  for (const [name, body] of [
    ['a lone Method: tools/call', '{"jsonrpc":"2.0","id":9,"Method":"tools/call","params":{"name":"send_email","arguments":{}}}'],
    ['Method beside method: ping', '{"jsonrpc":"2.0","id":9,"method":"ping","Method":"tools/call","params":{"name":"send_email","arguments":{}}}'],
    ['Name beside name', '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"get_invoice","arguments":{"invoice_id":"inv_1001"},"Name":"send_email"}}'],
    ['Arguments beside arguments', '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"pay_invoice","arguments":{"invoice_id":"inv_1","amount":"10.00","currency":"USD"},"Arguments":{"invoice_id":"inv_1","amount":"99999.00","currency":"USD"}}}'],
    ['paramſ (long s) beside params', '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"get_invoice","arguments":{}},"param\u017f":{"name":"send_email","arguments":{}}}'],
    ['AMOUNT beside amount', '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"pay_invoice","arguments":{"invoice_id":"inv_1","amount":"10.00","AMOUNT":"99999.00","currency":"USD"}}}'],
  ]) {
    it(`members named like the gated ones but for case are refused, not forwarded: ${name}`, async () => {
      const before = calls.length;
      const r = await rpc(body!);
      expect(r.status).toBe(400);
      expect(r.json<{ denial_reason: string }>().denial_reason).toMatch(/^(parameter_unparseable|request_malformed)$/);
      expect(calls.length).toBe(before);
    });
  }

  it('a message sent other than by POST (PUT, PATCH, a GET or DELETE with a body) is refused, not forwarded ungated', async () => {
    const body = JSON.stringify(call(9, 'send_email', { to: 'x@evil.example' }));
    for (const [method, status, reason] of [['PUT', 403, 'no_route'], ['PATCH', 403, 'no_route'], ['GET', 400, 'request_malformed'], ['DELETE', 400, 'request_malformed']] as const) {
      const before = calls.length;
      const r = await raw(gw.url, {
        method,
        path: '/mcp',
        // Content-Length given: Node's client frames no body of its own for GET and DELETE.
        headers: { authorization: `DPoP ${token}`, dpop: await agent.proof(method, MCP, token), 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'mcp-session-id': session },
        body,
      });
      expect(r.status, method).toBe(status);
      expect(r.json<{ denial_reason: string }>().denial_reason, method).toBe(reason);
      expect(calls.length, method).toBe(before);
    }
  });

  it('broken JSON is 400 parameter_unparseable', async () => {
    const r = await rpc('{"jsonrpc":"2.0","id":1,"method":"tools/call",');
    expect(r.status).toBe(400);
    expect(r.json()).toMatchObject({ denial_reason: 'parameter_unparseable' });
  });
});
