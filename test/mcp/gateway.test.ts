/**
 * SPEC sections 3, 6, 7 and 9 on the MCP path of the whole gateway (real stages, real Mission
 * Status at the development authority), with Bearer tokens minted by the authority
 * (dpop.required: false) so each test states only what it is about.
 */
import { mkdtempSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Logger } from '../../src/observability/logger.js';
import type { DevAuthority } from '../../src/dev-authority/index.js';
import { parameterDigest } from '../../src/authority/params.js';
import { eventually, type TestGateway } from '../helpers/gateway.js';
import { devAuthority, example, freePort, gatewayClientKey, mcpGateway } from './gateway.js';

const META = 'com.karlmcguinness.mission/reference';
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Setup {
  dev: DevAuthority;
  gw: TestGateway;
  mcpUrl: string;
  upstreamUrl: string;
}

async function setup(opts: { upstream?: string; mission?: string; json?: boolean; logger?: Logger; mcp?: string } = {}): Promise<Setup> {
  const folder = mkdtempSync(join(tmpdir(), 'mgw-mcpgw-'));
  const dev = await devAuthority();
  cleanups.push(() => dev.close());
  let upstreamUrl = opts.upstream;
  if (upstreamUrl === undefined) {
    const ex = await example(opts.json ?? true);
    cleanups.push(() => ex.close());
    upstreamUrl = new URL(ex.url).origin;
  }
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const keyFile = gatewayClientKey(dev, folder);
  const gw = await mcpGateway(
    `
listen: { host: 127.0.0.1, port: ${port} }
public_base_url: ${base}
resource: ${base}
upstream: { url: ${upstreamUrl}, timeout_s: 2 }
max_body_bytes: 4096
issuers:
  - issuer: ${dev.url}
    algorithms: [ES256]
dpop: { required: false }
mission:
  required: true
  client: { client_id: gw-mcp, private_key_file: ${keyFile} }
  ${opts.mission ?? ''}
routes: []
mcp: { path: /mcp, resource: ${base}/mcp, ${opts.mcp ?? 'tool_actions: { get_invoice: invoices.read }'} }
`,
    folder,
    opts.logger,
  );
  cleanups.push(() => gw.close());
  return { dev, gw, mcpUrl: `${base}/mcp`, upstreamUrl };
}

async function mission(s: Setup, authority: Record<string, unknown>[], subject = 'agent_1'): Promise<string> {
  const m = await s.dev.missions.create({ subject, client_id: 'agent_1', purpose: 'invoices', authorization_details: authority });
  return m.id;
}

const post = (url: string, token: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

/** A POST written by hand, for header fields fetch would merge (two of one name). */
async function rawPost(url: string, token: string, body: unknown, fields: string[]): Promise<string> {
  const { rawSocket } = await import('../helpers/http.js');
  const u = new URL(url);
  const text = JSON.stringify(body);
  const head = [`POST ${u.pathname} HTTP/1.1`, `Host: ${u.host}`, `Authorization: Bearer ${token}`, 'Content-Type: application/json', 'Accept: application/json, text/event-stream', `Content-Length: ${Buffer.byteLength(text)}`, 'Connection: close', ...fields];
  return rawSocket(u.origin, `${head.join('\r\n')}\r\n\r\n${text}`, 3000);
}

/** initialize + initialized through the gateway; returns the session headers for later requests. */
async function initialize(url: string, token: string, capabilities: Record<string, unknown> = {}): Promise<Record<string, string>> {
  const res = await post(url, token, { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities, clientInfo: { name: 'raw', version: '1' } } });
  expect(res.status).toBe(200);
  await res.text();
  const headers = { 'mcp-session-id': res.headers.get('mcp-session-id')!, 'mcp-protocol-version': '2025-06-18' };
  expect((await post(url, token, { jsonrpc: '2.0', method: 'notifications/initialized' }, headers)).status).toBe(202);
  return headers;
}

const callMsg = (id: number, name: string, args: Record<string, unknown>, meta?: unknown) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name, arguments: args, ...(meta === undefined ? {} : { _meta: { [META]: meta } }) },
});

/** An upstream that records what it receives and answers each request with `answer`. */
async function recorder(answer: (req: IncomingMessage, body: Buffer, res: import('node:http').ServerResponse) => void) {
  const seen: { headers: IncomingMessage['headers']; body: Buffer }[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      seen.push({ headers: req.headers, body });
      answer(req, body, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

describe('SPEC section 6 on the MCP path: what the upstream receives', () => {
  it('a permitted call is forwarded byte-identical, credentials stripped, identity headers set', async () => {
    const up = await recorder((_req, _body, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":1,"result":{"content":[]}}'));
    const s = await setup({ upstream: up.url });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    // Unusual but valid spacing and member order: the upstream must see these exact bytes.
    const bytes = '{ "params" : {"arguments":{"invoice_id":"inv_1001"},"name":"get_invoice"}, "method":"tools/call","id":1,"jsonrpc":"2.0" }';
    const res = await post(s.mcpUrl, token, bytes, { 'x-mission-id': 'forged', 'mcp-session-id': 'sess-1', 'mcp-protocol-version': '2025-06-18' });
    expect(res.status).toBe(200);
    expect(up.seen).toHaveLength(1);
    const got = up.seen[0]!;
    expect(got.body.toString()).toBe(bytes);
    expect(got.headers['authorization']).toBeUndefined();
    expect(got.headers['x-mission-id']).toBe(id);
    expect(got.headers['x-mission-action']).toBe('invoices.read');
    expect(got.headers['mission-decision']).toMatch(/^dec_/);
    expect(got.headers['mcp-session-id']).toBe('sess-1');
    expect(got.headers['mcp-protocol-version']).toBe('2025-06-18');
    const rec = await eventually(() => s.gw.evidence().find((r) => r['tool'] === 'get_invoice'));
    expect(rec).toMatchObject({ decision: 'permit', action: 'invoices.read', upstream_status: 200, decision_id: got.headers['mission-decision'], parameter_digest: parameterDigest({ invoice_id: 'inv_1001' }) });
  });

  it('a batch with a denied call: the upstream gets only the rest; an SSE answer is merged after the gateway\'s events', async () => {
    const up = await recorder((_req, body, res) => {
      const msgs = JSON.parse(body.toString()) as { id: number }[];
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const m of msgs) res.write(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { content: [] } })}\n\n`);
      res.end();
    });
    const s = await setup({ upstream: up.url });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const res = await post(s.mcpUrl, token, [callMsg(1, 'get_invoice', { invoice_id: 'a' }), callMsg(2, 'pay_invoice', { amount: '1' }), callMsg(3, 'get_invoice', { invoice_id: 'b' })]);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const text = await res.text();
    const ids = [...text.matchAll(/"id":(\d)/g)].map((m) => Number(m[1]));
    expect(ids).toEqual([2, 1, 3]);
    expect(text).toContain('"denial_reason":"out_of_authority"');
    expect((JSON.parse(up.seen[0]!.body.toString()) as { id: number }[]).map((m) => m.id)).toEqual([1, 3]);
    expect(up.seen[0]!.headers['x-mission-action']).toBe('invoices.read');
  });

  it('an upstream stream that starts with a byte order mark, after the gateway\'s events: the mark is dropped, however it is cut', async () => {
    for (const cut of [0, 1, 2]) {
      const up = await recorder((_req, body, res) => {
        const msgs = JSON.parse(body.toString()) as { id: number }[];
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(msgs.map((m) => `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { content: [] } })}\n\n`).join(''))]);
        if (cut > 0) res.write(bytes.subarray(0, cut));
        setTimeout(() => res.end(bytes.subarray(cut)), 20);
      });
      const s = await setup({ upstream: up.url });
      const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
      const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
      const res = await post(s.mcpUrl, token, [callMsg(1, 'get_invoice', { invoice_id: 'a' }), callMsg(2, 'pay_invoice', { amount: '1' })]);
      const text = await res.text();
      expect(text).not.toContain('\ufeff');
      expect(text).toMatch(/"id":2[^]*\n\nevent: message\ndata: \{"jsonrpc":"2.0","id":1,/);
    }
  });

  it('tools/list over SSE is filtered even when the upstream cuts events into single bytes', async () => {
    const list = { jsonrpc: '2.0', id: 9, result: { tools: [{ name: 'get_invoice', inputSchema: { type: 'object' } }, { name: 'pay_invoice', inputSchema: { type: 'object' } }] } };
    const stream = `event: message\r\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'hi' } })}\r\n\r\nid: 1\r\nevent: message\r\ndata: ${JSON.stringify(list)}\r\n\r\n`;
    const up = await recorder((_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const bytes = Buffer.from(stream);
      let i = 0;
      const tick = (): void => {
        if (i >= bytes.length) return void res.end();
        res.write(bytes.subarray(i, i + 1));
        i++;
        setImmediate(tick);
      };
      tick();
    });
    const s = await setup({ upstream: up.url });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const res = await post(s.mcpUrl, token, { jsonrpc: '2.0', id: 9, method: 'tools/list' });
    const text = await res.text();
    expect(text).toContain('notifications/message');
    expect(text).toContain('"get_invoice"');
    expect(text).not.toContain('pay_invoice');
    expect(text).toContain('id: 1\nevent: message\ndata: ');
  });

  it('no form of the answer gets a tool list past the filter (whitespace, extra answers, another id type, the stream\'s tail, another media type)', async () => {
    const full = (id: unknown) => JSON.stringify({ jsonrpc: '2.0', id, result: { tools: [{ name: 'get_invoice', inputSchema: { type: 'object' } }, { name: 'pay_invoice', inputSchema: { type: 'object' } }] } });
    const empty = JSON.stringify({ jsonrpc: '2.0', id: 9, result: { tools: [] } });
    const answers: Record<string, [string, string]> = {
      'two spaces after data:': ['text/event-stream', `data:  ${full(9)}\n\n`],
      'a tab after data:': ['text/event-stream', `data:\t${full(9)}\n\n`],
      'an empty first data line': ['text/event-stream', `data:\ndata: ${full(9)}\n\n`],
      'a second answer after the expected one': ['text/event-stream', `event: ignored\ndata: ${empty}\n\nevent: message\ndata: ${full(9)}\n\n`],
      'the id as a string (SSE)': ['text/event-stream', `data: ${full('9')}\n\n`],
      'the id as a string (JSON)': ['application/json', full('9')],
      'an event ended by CRs at the end of the stream': ['text/event-stream', `event: message\rid: e1\rdata: ${full(9)}\r\r`],
      'an unterminated last event': ['text/event-stream', `data: ${full(9)}\n`],
    };
    let current: [string, string] = ['', ''];
    let twoTypes = false;
    const up = await recorder((_req, _body, res) => {
      res.writeHead(200, twoTypes ? ['Content-Type', 'text/event-stream', 'Content-Type', 'application/json'] : { 'content-type': current[0] });
      res.end(current[1]);
    });
    const s = await setup({ upstream: up.url });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    for (const [name, answer] of Object.entries(answers)) {
      current = answer;
      const res = await post(s.mcpUrl, token, { jsonrpc: '2.0', id: 9, method: 'tools/list' });
      const text = await res.text();
      expect([name, res.status, text.includes('pay_invoice')]).toEqual([name, 200, false]);
      expect([name, text.includes('get_invoice')]).toEqual([name, true]);
    }
    // An answer the gateway cannot read as JSON or an event stream is not shown at all.
    for (const type of ['text/plain', 'application/jsonx', 'text/event-streamx']) {
      current = [type, full(9)];
      const res = await post(s.mcpUrl, token, { jsonrpc: '2.0', id: 9, method: 'tools/list' });
      const text = await res.text();
      expect([type, res.status, text.includes('pay_invoice')]).toEqual([type, 502, false]);
    }
    // Two Content-Type fields: clients differ on which one they read (r21d 6).
    twoTypes = true;
    current = ['', full(9)];
    const two = await post(s.mcpUrl, token, { jsonrpc: '2.0', id: 9, method: 'tools/list' });
    expect([two.status, (await two.text()).includes('pay_invoice')]).toEqual([502, false]);
  });

  it('upstream unreachable after a permit: 502 bad_gateway, the call\'s record stays a permit with that status', async () => {
    const port = await freePort();
    const s = await setup({ upstream: `http://127.0.0.1:${port}` });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const res = await post(s.mcpUrl, token, [callMsg(1, 'get_invoice', {}), { jsonrpc: '2.0', id: 2, method: 'tools/list' }]);
    expect(res.status).toBe(502);
    expect(await res.json()).toMatchObject({ error: 'bad_gateway', denial_reason: null });
    expect(await eventually(() => s.gw.evidence().find((r) => r['tool'] === 'get_invoice'))).toMatchObject({ decision: 'permit', upstream_status: 502 });
  });
});

describe('SPEC section 4 on the MCP path: max_amount compares a JSON-number argument as an exact decimal', () => {
  it('an amount a double cannot hold is decided by the decimal sent, and reaches the upstream as sent (also from a rebuilt batch)', async () => {
    const up = await recorder((_req, _b, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify([{ jsonrpc: '2.0', id: 1, result: { content: [] } }]));
    });
    const s = await setup({ upstream: up.url });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['pay_invoice'], constraints: { max_amount: { amount: '1000.00', currency: 'USD' } } }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const payText = (n: number, amount: string) => `{"jsonrpc":"2.0","id":${n},"method":"tools/call","params":{"name":"pay_invoice","arguments":{"invoice_id":"inv_1","amount":${amount},"currency":"USD"}}}`;

    // One call over the limit by 1e-18: denied, never forwarded (a double reads 1000).
    const over = await post(s.mcpUrl, token, payText(1, '1000.000000000000000001'));
    expect(over.status).toBe(200);
    const denial = (await over.json()) as { result: { structuredContent: { denial_reason: string } } };
    expect(denial.result.structuredContent.denial_reason).toBe('parameter_violation');
    expect(up.seen).toHaveLength(0);

    // A batch: the call under the limit by 1e-17 is permitted, the other denied; the upstream gets
    // the permitted element with the amount the client wrote, not the double it parses to.
    const batch = `[${payText(1, '999.99999999999999999')},${payText(2, '1e400')}]`;
    const res = await post(s.mcpUrl, token, batch);
    expect(res.status).toBe(200);
    const answers = (await res.json()) as { id: number; result: { structuredContent?: { denial_reason: string } } }[];
    expect(answers.find((a) => a.id === 2)!.result.structuredContent!.denial_reason).toBe('parameter_violation');
    expect(up.seen).toHaveLength(1);
    expect(up.seen[0]!.body.toString()).toBe(`[${payText(1, '999.99999999999999999')}]`);
  });
});

describe('SPEC section 3 MAS mode on the MCP path: the Mission named per call in _meta', () => {
  it('a token without a Mission passes authentication; each call names its Mission; state and subject join come from Mission Status', async () => {
    const s = await setup({ mission: 'accept_header_references: true' });
    const entry = { type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] };
    const mine = await mission(s, [entry]);
    const theirs = await mission(s, [entry], 'someone_else');
    const token = await s.dev.issueAccessToken({ clientId: 'agent_1', resource: s.mcpUrl });
    const ref = (id: string) => ({ mission_id: id, issuer: s.dev.url });
    const sh = await initialize(s.mcpUrl, token);
    const call = (body: unknown) => post(s.mcpUrl, token, body, sh);

    const list = await (await call({ jsonrpc: '2.0', id: 1, method: 'tools/list' })).json();
    expect(list).toMatchObject({ result: { tools: [] } });

    const ok = await (await call(callMsg(2, 'get_invoice', { invoice_id: 'inv_1001' }, ref(mine)))).json();
    expect(ok).toMatchObject({ id: 2, result: { structuredContent: { vendor: 'Acme Paper' } } });
    const foreign = await (await call(callMsg(3, 'get_invoice', { invoice_id: 'inv_1001' }, ref(theirs)))).json();
    expect(foreign).toMatchObject({ id: 3, result: { isError: true, structuredContent: { denial_reason: 'mission_reference_conflict' } } });
    const none = await (await call(callMsg(4, 'get_invoice', { invoice_id: 'inv_1001' }))).json();
    expect(none).toMatchObject({ result: { structuredContent: { denial_reason: 'mission_claim_missing' } } });

    await s.dev.missions.revoke(mine);
    // No event stream here: the cached state lives until its freshness ends, so ask for a new Mission.
    const other = await mission(s, [entry]);
    await s.dev.missions.revoke(other);
    const revoked = await call(callMsg(5, 'get_invoice', { invoice_id: 'inv_1001' }, ref(other)));
    expect(revoked.status).toBe(403);
    expect(await revoked.json()).toMatchObject({ error: 'mission_terminated', mission_status: 'revoked' });

    const rec = await eventually(() => s.gw.evidence().find((r) => r['jsonrpc_id'] === 2));
    expect(rec).toMatchObject({ decision: 'permit', mission: { id: mine, issuer: s.dev.url, state: 'active' } });
  });

  it('a token that carries a Mission: a _meta reference to another Mission is a per-call conflict', async () => {
    const s = await setup({ mission: 'accept_header_references: true' });
    const entry = { type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] };
    const a = await mission(s, [entry]);
    const b = await mission(s, [entry]);
    const token = await s.dev.issueAccessToken({ missionId: a, resource: s.mcpUrl });
    const sh = await initialize(s.mcpUrl, token);
    const res = await (await post(s.mcpUrl, token, [callMsg(1, 'get_invoice', { invoice_id: 'inv_1001' }, { mission_id: b, issuer: s.dev.url }), callMsg(2, 'get_invoice', { invoice_id: 'inv_1001' }, { mission_id: a, issuer: s.dev.url })], sh)).json();
    const byId = new Map((res as { id: number }[]).map((m) => [m.id, m]));
    expect(byId.get(1)).toMatchObject({ result: { structuredContent: { denial_reason: 'mission_reference_conflict' } } });
    expect(byId.get(2)).toMatchObject({ result: { structuredContent: { invoice_id: 'inv_1001' } } });
  });
});

describe('SPEC section 5 on the MCP path: bodies', () => {
  it('413 past max_body_bytes, 400 for malformed JSON, before anything reaches the upstream', async () => {
    const up = await recorder((_req, _b, res) => res.end());
    const s = await setup({ upstream: up.url });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const big = await post(s.mcpUrl, token, callMsg(1, 'get_invoice', { pad: 'x'.repeat(5000) }));
    expect(big.status).toBe(413);
    const bad = await post(s.mcpUrl, token, '[{"jsonrpc":"2.0"');
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ denial_reason: 'parameter_unparseable' });
    expect(up.seen).toHaveLength(0);
  });

  it('the debug log of a body that is not JSON says where it broke, never the text around it (a PIN or password may sit there)', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const up = await recorder((_req, _b, res) => res.end());
    const s = await setup({ upstream: up.url, logger: pino({ level: 'debug' }, sink) });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const bodies = [
      `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_invoice","arguments":{"pin":'4711-SECRET'}}}`,
      `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_invoice","arguments":{"password":"SECRET-hunter2}}}`,
      `PASSWORD=SECRET-hunter2&x=1`,
    ];
    for (const body of bodies) {
      const r = await post(s.mcpUrl, token, body);
      expect(r.status).toBe(400);
      expect(JSON.stringify(await r.json())).not.toContain('SECRET');
    }
    // V8 gives a position for some errors only ("Unexpected token 'P', "PASSWORD=S"... is not valid JSON" has none).
    const denied = await eventually(() => lines.find((l) => l.includes('parameter_unparseable')));
    expect(JSON.parse(denied)).toMatchObject({ msg: 'denied', cause: 'at position 119' });
    expect(lines.join('')).not.toContain('SECRET');
    expect(up.seen).toHaveLength(0);
  });

  it('arrays and objects nested deeper than 256 levels are refused before they are parsed (r13c F4); 250 levels pass', async () => {
    const up = await recorder((_req, _b, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":1,"result":{"content":[]}}'));
    const s = await setup({ upstream: up.url });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const nested = (depth: number) => JSON.parse('['.repeat(depth) + ']'.repeat(depth)) as unknown;
    // The envelope, params and arguments are three levels, the `x` value the rest.
    const deep = await post(s.mcpUrl, token, callMsg(1, 'get_invoice', { invoice_id: 'inv_1', x: nested(254) }));
    expect(deep.status).toBe(400);
    expect(await deep.json()).toMatchObject({ denial_reason: 'parameter_unparseable', error_description: expect.stringContaining('256 levels') });
    expect(up.seen).toHaveLength(0);
    expect((await post(s.mcpUrl, token, callMsg(1, 'get_invoice', { invoice_id: 'inv_1', x: nested(250) }))).status).toBe(200);
    expect(up.seen).toHaveLength(1);
  });

  it('a body declared in another charset than UTF-8 is refused: an upstream honouring UTF-7 would read another call (r13c F1)', async () => {
    const up = await recorder((_req, _b, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":5,"result":{"content":[]}}'));
    const s = await setup({ upstream: up.url });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    // Decoded as UTF-7, the argument closes the call and opens a second `params` naming send_email.
    const smuggled = '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get_invoice","arguments":{"invoice_id":"inv_1+ACIAfQB9-,+ACI-params+ACI-:+AHsAIg-name+ACI-:+ACI-send+AF8-email+ACI-,+ACI-arguments+ACI-:+AHsAfQB9-"}}}';
    for (const ct of ['application/json; charset=utf-7', 'application/json; charset="UTF-7"', 'application/json; charset=utf-7-imap']) {
      const r = await post(s.mcpUrl, token, smuggled, { 'content-type': ct });
      expect([ct, r.status]).toEqual([ct, 400]);
      expect(await r.json()).toMatchObject({ denial_reason: 'parameter_unparseable' });
    }
    expect(up.seen).toHaveLength(0);
    expect((await post(s.mcpUrl, token, smuggled, { 'content-type': 'application/json; charset=utf-8' })).status).toBe(200);
    expect(up.seen).toHaveLength(1);
  });

  it('a content-encoded body is refused: an upstream that decodes it would read another call than the one decided on (r19b 1)', async () => {
    const up = await recorder((_req, _b, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":5,"result":{"content":[]}}'));
    const s = await setup({ upstream: up.url });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const call = JSON.stringify(callMsg(5, 'get_invoice', { invoice_id: 'inv_1' }));
    for (const encoding of ['br', 'gzip', 'deflate']) {
      const r = await post(s.mcpUrl, token, call, { 'content-encoding': encoding });
      expect([encoding, r.status]).toEqual([encoding, 400]);
      expect(await r.json()).toMatchObject({ denial_reason: 'parameter_unparseable' });
    }
    expect(up.seen).toHaveLength(0);
    expect((await post(s.mcpUrl, token, call, { 'content-encoding': 'identity' })).status).toBe(200);
    expect(up.seen).toHaveLength(1);
  });

  it('a call whose body arrives after its Mission was revoked or narrowed is decided on that, and never forwarded (r13c F2)', async () => {
    const up = await recorder((_req, _b, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":3,"result":{"content":[]}}'));
    const s = await setup({ upstream: up.url });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    const slowCall = async (token: string): Promise<{ finish(): Promise<string> }> => {
      const body = JSON.stringify(callMsg(3, 'get_invoice', { invoice_id: 'inv_9' }));
      const u = new URL(s.mcpUrl);
      const head = `POST /mcp HTTP/1.1\r\nHost: ${u.host}\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
      const { connect } = await import('node:net');
      const socket = connect(Number(u.port), '127.0.0.1');
      let answer = '';
      socket.on('data', (d: Buffer) => (answer += d.toString()));
      socket.on('error', () => undefined);
      const closed = new Promise<void>((r) => socket.on('close', () => r()));
      socket.write(head + body.slice(0, -5));
      await new Promise((r) => setTimeout(r, 300));
      return { finish: async () => (socket.write(body.slice(-5)), await closed, answer) };
    };

    const revoked = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const first = await slowCall(await s.dev.issueAccessToken({ missionId: revoked, resource: s.mcpUrl }));
    await s.dev.missions.revoke(revoked);
    expect(await first.finish()).toMatch(/^HTTP\/1\.1 403[^]*"mission_status":"revoked"/);

    const narrowed = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read', 'reports.view'] }]);
    const second = await slowCall(await s.dev.issueAccessToken({ missionId: narrowed, resource: s.mcpUrl }));
    await s.dev.missions.changeAuthority(narrowed, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['reports.view'] }]);
    const answer = await second.finish();
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    expect(answer).toContain('out_of_authority');
    expect(up.seen).toHaveLength(0);
  });

  it('a tools/list without a usable id is refused: a lax upstream\'s answer to it would go out unfiltered', async () => {
    const up = await recorder((_req, _b, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ jsonrpc: '2.0', id: true, result: { tools: [{ name: 'get_invoice' }, { name: 'send_email' }] } }));
    });
    const s = await setup({ upstream: up.url });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    for (const body of ['{"jsonrpc":"2.0","id":true,"method":"tools/list"}', '{"jsonrpc":"2.0","id":null,"method":"tools/list"}', '[{"jsonrpc":"2.0","id":{},"method":"tools/list"}]', '{"jsonrpc":"2.0","method":"tools/list"}']) {
      const res = await post(s.mcpUrl, token, body);
      expect(res.status).toBe(400);
      const text = await res.text();
      expect(JSON.parse(text)).toMatchObject({ error: 'invalid_request', denial_reason: 'request_malformed' });
      expect(text).not.toContain('send_email');
    }
    expect(up.seen).toHaveLength(0);
  });
});

describe('SPEC section 6 and 7: streams the gateway looks into', () => {
  async function tokenFor(s: Setup): Promise<string> {
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    return s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
  }
  const listAnswer = (id: number) => ({ jsonrpc: '2.0', id, result: { tools: [{ name: 'get_invoice' }, { name: 'send_email' }] } });

  it('a resumed GET stream (Last-Event-ID) replaying a tools/list answer is filtered too', async () => {
    const up = await recorder((req, _b, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(`id: 5\ndata: ${JSON.stringify(listAnswer(3))}\n\n`);
      expect(req.headers['last-event-id']).toBe('4');
    });
    const s = await setup({ upstream: up.url });
    const token = await tokenFor(s);
    const res = await fetch(s.mcpUrl, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream', 'last-event-id': '4', 'mcp-session-id': 'x' } });
    const text = await res.text();
    expect(text).toContain('get_invoice');
    expect(text).not.toContain('send_email');
    expect(await eventually(() => s.gw.evidence().find((r) => r['method'] === 'GET'))).toMatchObject({ decision: 'permit', upstream_status: 200 });
  });

  it('progress notifications flow unbuffered while the gateway rewrites the same stream (batch with tools/list)', async () => {
    const s = await setup({ json: false });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['export_report'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const sh = await initialize(s.mcpUrl, token);
    const started = Date.now();
    const res = await post(
      s.mcpUrl,
      token,
      [
        { jsonrpc: '2.0', id: 1, method: 'tools/list' },
        { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'export_report', arguments: { steps: 3, delay_ms: 300 }, _meta: { progressToken: 'p1' } } },
      ],
      sh,
    );
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const reader = res.body!.getReader();
    const seen: { at: number; text: string }[] = [];
    let buf = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += Buffer.from(value).toString();
      let i: number;
      while ((i = buf.indexOf('\n\n')) !== -1) {
        seen.push({ at: Date.now() - started, text: buf.slice(0, i) });
        buf = buf.slice(i + 2);
      }
    }
    const progress = seen.filter((e) => e.text.includes('notifications/progress'));
    const result = seen.find((e) => e.text.includes('"id":2'))!;
    expect(progress).toHaveLength(3);
    expect(result.at - progress[0]!.at).toBeGreaterThan(400);
    const list = seen.find((e) => e.text.includes('"id":1'))!;
    expect(list.text).toContain('export_report');
    expect(list.text).not.toContain('pay_invoice');
  });

  it('no upstream headers within upstream.timeout_s: 504 gateway_timeout', async () => {
    const up = await recorder(() => {});
    const s = await setup({ upstream: up.url });
    const token = await tokenFor(s);
    const res = await post(s.mcpUrl, token, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    expect(res.status).toBe(504);
    expect(await res.json()).toMatchObject({ error: 'gateway_timeout', denial_reason: null });
  });

  it('1xx responses forever and never a final one: 504 gateway_timeout within upstream.timeout_s', async () => {
    const up = await recorder((_req, _b, res) => {
      const t = setInterval(() => res.writeProcessing(), 100);
      res.on('close', () => clearInterval(t));
    });
    const s = await setup({ upstream: up.url });
    const token = await tokenFor(s);
    const started = Date.now();
    const res = await post(s.mcpUrl, token, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    expect(res.status).toBe(504);
    expect(await res.json()).toMatchObject({ error: 'gateway_timeout', denial_reason: null });
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('a tools/list answer still streaming through the filter when the shutdown grace period ends is logged as cut at shutdown, not as a client that left', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
        done();
      },
    });
    // Answers with an SSE stream that never ends.
    const up = await recorder((_req, _b, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'listing' } })}\n\n`);
      const t = setInterval(() => res.write(': keepalive\n\n'), 50);
      res.on('close', () => clearInterval(t));
    });
    const s = await setup({ upstream: up.url, logger: pino({ level: 'debug' }, sink) });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const list = await post(s.mcpUrl, token, { jsonrpc: '2.0', id: 3, method: 'tools/list' });
    const reading = list.text().catch(() => 'cut');
    await eventually(() => up.seen.length === 1);
    await s.gw.gateway.close(200);
    await reading;
    const cut = await eventually(() => lines.find((l) => l['msg'] === 'request cut at shutdown'));
    expect(cut).toMatchObject({ decision_id: up.seen[0]!.headers['mission-decision'], code: 'shutdown' });
  });

  it('a client that goes away mid-stream aborts the upstream request', async () => {
    let upstreamClosed = false;
    const up = await recorder((req, _b, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify(listAnswer(1))}\n\n`);
      const t = setInterval(() => res.write(': keepalive\n\n'), 50);
      res.on('close', () => {
        clearInterval(t);
        upstreamClosed = true;
      });
      void req;
    });
    const s = await setup({ upstream: up.url });
    const token = await tokenFor(s);
    const abort = new AbortController();
    const res = await fetch(s.mcpUrl, {
      method: 'POST',
      signal: abort.signal,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    const reader = res.body!.getReader();
    const first = Buffer.from((await reader.read()).value!).toString();
    expect(first).toContain('get_invoice');
    expect(first).not.toContain('send_email');
    abort.abort();
    await eventually(() => upstreamClosed, 3000);
  });
});

describe('open MCP streams end with their Mission (mission/holds.ts)', () => {
  /** An upstream whose answer to anything is an SSE stream that never ends (a tools/list still listing). */
  async function listingForever(): Promise<Awaited<ReturnType<typeof recorder>> & { closed: boolean }> {
    const state = { closed: false };
    const up = await recorder((_req, _b, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'listing' } })}\n\n`);
      const t = setInterval(() => res.write(': keepalive\n\n'), 50);
      res.on('close', () => {
        clearInterval(t);
        state.closed = true;
      });
    });
    return {
      ...up,
      get closed() {
        return state.closed;
      },
    };
  }

  /** Reads SSE events from a response until it ends; `cut` when the connection broke instead. */
  function readEvents(res: Response): { events: string[]; ended: Promise<'end' | 'cut'> } {
    const events: string[] = [];
    const reader = res.body!.getReader();
    const ended = (async (): Promise<'end' | 'cut'> => {
      let buf = '';
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return 'end';
          buf += Buffer.from(value).toString();
          let i: number;
          while ((i = buf.indexOf('\n\n')) !== -1) {
            events.push(buf.slice(0, i));
            buf = buf.slice(i + 2);
          }
        }
      } catch {
        return 'cut';
      }
    })();
    return { events, ended };
  }

  /** The JSON-RPC message of a stream's last event (the tool error the gateway ended a cut stream with). */
  function lastMessage(events: readonly string[]): { id: unknown; result?: { isError?: boolean; structuredContent?: Record<string, unknown> } } {
    const data = events
      .at(-1)!
      .split('\n')
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).trim())
      .join('\n');
    return JSON.parse(data) as ReturnType<typeof lastMessage>;
  }

  it("a tool call's progress stream ends when its Mission is revoked, with the call's answer: the tool error saying so (r21c)", async () => {
    const s = await setup({ json: false });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['export_report'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const sh = await initialize(s.mcpUrl, token);
    const call = { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'export_report', arguments: { steps: 50, delay_ms: 100 }, _meta: { progressToken: 'p1' } } };
    const res = await post(s.mcpUrl, token, call, sh);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const stream = readEvents(res);
    await eventually(() => stream.events.length >= 1);
    const revokedAt = Date.now();
    await s.dev.missions.revoke(id);
    expect(await stream.ended).toBe('end');
    expect(Date.now() - revokedAt).toBeLessThan(2500);
    // The only answer to call 2 is the gateway's: the upstream's never came.
    expect(stream.events.filter((e) => e.includes('"id":2'))).toHaveLength(1);
    expect(lastMessage(stream.events)).toMatchObject({
      id: 2,
      result: { isError: true, structuredContent: { ok: false, error: 'mission_terminated', denial_reason: 'mission_inactive', mission_status: 'revoked' } },
    });
  });

  it('a stream cut in the middle of an event is cut, not ended: a tool error written there would join the event the client has part of', async () => {
    const up = await recorder((_req, _b, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(': working\n\n');
      setTimeout(() => res.write('data: {"jsonrpc":"2.0","method":"notifications/progress",'), 50);
    });
    const s = await setup({ upstream: up.url });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const res = await post(s.mcpUrl, token, callMsg(2, 'get_invoice', { invoice_id: 'inv_1' }));
    const stream = readEvents(res);
    await eventually(() => stream.events.length === 1);
    await new Promise((r) => setTimeout(r, 200)); // the partial event has been relayed
    await s.dev.missions.revoke(id);
    expect(await stream.ended).toBe('cut');
    expect(stream.events.some((e) => e.includes('isError'))).toBe(false);
  });

  /** A gateway in front of `answer`, with a Mission granting invoices.read and SETs pushed to it. */
  async function readingStack(answer: Parameters<typeof recorder>[0]) {
    const up = await recorder(answer);
    const s = await setup({ upstream: up.url });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    return { s, id, token: await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl }) };
  }

  it('a call the upstream already answered gets no second answer when its stream is cut; one not yet answered gets the tool error (r22a 1)', async () => {
    const { s, id, token } = await readingStack((_req, _b, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: 2, result: { content: [{ type: 'text', text: 'inv_1' }] } })}\n\n`);
    });
    const res = await post(s.mcpUrl, token, [callMsg(2, 'get_invoice', { invoice_id: 'inv_1' }), callMsg(3, 'get_invoice', { invoice_id: 'inv_2' })]);
    const stream = readEvents(res);
    await eventually(() => stream.events.length === 1);
    await s.dev.missions.revoke(id);
    expect(await stream.ended).toBe('end');
    expect(stream.events.filter((e) => e.includes('"id":2'))).toHaveLength(1);
    expect(stream.events[0]).not.toContain('isError');
    expect(lastMessage(stream.events)).toMatchObject({ id: 3, result: { isError: true, structuredContent: { denial_reason: 'mission_inactive' } } });
  });

  it('a stream whose every call is answered is cut as before, with nothing added (r22a 1)', async () => {
    const { s, id, token } = await readingStack((_req, _b, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ jsonrpc: '2.0', id: 2, result: { content: [] } })}\n\n`);
    });
    const res = await post(s.mcpUrl, token, callMsg(2, 'get_invoice', { invoice_id: 'inv_1' }));
    const stream = readEvents(res);
    await eventually(() => stream.events.length === 1);
    await s.dev.missions.revoke(id);
    expect(await stream.ended).toBe('cut');
    expect(stream.events).toHaveLength(1);
  });

  it('an event stream with a Content-Length is cut, never ended with more bytes than it declared (r22a 3)', async () => {
    const { s, id, token } = await readingStack((_req, _b, res) => {
      const first = ': working\n\n';
      res.writeHead(200, { 'content-type': 'text/event-stream', 'content-length': String(first.length + 200) });
      res.write(first);
    });
    const res = await post(s.mcpUrl, token, callMsg(2, 'get_invoice', { invoice_id: 'inv_1' }));
    const stream = readEvents(res);
    await eventually(() => stream.events.length === 1);
    await s.dev.missions.revoke(id);
    expect(await stream.ended).toBe('cut');
    expect(stream.events.some((e) => e.includes('isError'))).toBe(false);
  });

  it('a batch whose calls name two Missions (MAS mode) streams under both: revoking the second cuts it', async () => {
    const s = await setup({ json: false, mission: 'accept_header_references: true' });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    const entry = { type: 'mission_resource_access', resource: s.mcpUrl, actions: ['export_report'] };
    const a = await mission(s, [entry]);
    const b = await mission(s, [entry]);
    const token = await s.dev.issueAccessToken({ clientId: 'agent_1', resource: s.mcpUrl });
    const sh = await initialize(s.mcpUrl, token);
    const report = (id: number, m: string) => ({
      jsonrpc: '2.0',
      id,
      method: 'tools/call',
      params: { name: 'export_report', arguments: { steps: 50, delay_ms: 100 }, _meta: { progressToken: `p${id}`, [META]: { mission_id: m, issuer: s.dev.url } } },
    });
    const res = await post(s.mcpUrl, token, [report(1, a), report(2, b)], sh);
    expect(res.status).toBe(200);
    const stream = readEvents(res);
    await eventually(() => stream.events.length >= 2);
    await s.dev.missions.revoke(b);
    // Call 1's Mission did not end: no reason is given for it, the connection is cut.
    expect(await stream.ended).toBe('cut');
  });

  /** MAS mode: an export_report call streaming under a Mission granting it and invoices.read. */
  async function reportRunning(steps: number) {
    const s = await setup({ json: false, mission: 'accept_header_references: true' });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    const entry = { type: 'mission_resource_access', resource: s.mcpUrl, actions: ['export_report', 'invoices.read'] };
    const id = await mission(s, [entry]);
    const token = await s.dev.issueAccessToken({ clientId: 'agent_1', resource: s.mcpUrl });
    const sh = await initialize(s.mcpUrl, token);
    const ref = { mission_id: id, issuer: s.dev.url };
    const call = { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'export_report', arguments: { steps, delay_ms: 100 }, _meta: { progressToken: 'p1', [META]: ref } } };
    const res = await post(s.mcpUrl, token, call, sh);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const stream = readEvents(res);
    await eventually(() => stream.events.length >= 1);
    return { s, entry, id, token, sh, ref, stream };
  }

  it("a narrowing that still grants the running call keeps its stream: the call is decided again on its arguments, read again from its body (r21j 1)", async () => {
    const { s, entry, id, stream } = await reportRunning(8);
    await s.dev.missions.changeAuthority(id, [{ ...entry, actions: ['export_report'] }]);
    expect(await stream.ended).toBe('end');
    expect(stream.events.join('\n')).toContain('"id":2');
    const metrics = await (await fetch(`${s.gw.adminUrl}/metrics`)).text();
    expect(metrics).not.toMatch(/^mission_gateway_exchanges_cut_total\{cause="authority_changed"\} [1-9]/m);
  });

  it("a tool call's stream is cut when its Mission's authority narrows to exclude the tool (MAS mode: Status alone grants it)", async () => {
    const { s, entry, id, token, sh, ref, stream } = await reportRunning(50);

    const changedAt = Date.now();
    await s.dev.missions.changeAuthority(id, [{ ...entry, actions: ['invoices.read'] }]);
    expect(await stream.ended).toBe('end');
    expect(Date.now() - changedAt).toBeLessThan(2500);
    expect(lastMessage(stream.events)).toMatchObject({ id: 2, result: { isError: true, structuredContent: { error: 'insufficient_scope', denial_reason: 'out_of_authority' } } });
    const metrics = await (await fetch(`${s.gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/^mission_gateway_exchanges_cut_total\{cause="authority_changed"\} 1$/m);
    // The session the cut call ran in is ended (its server may wait in it for the client); the tool
    // the Mission still grants is called as before in a new one.
    expect((await post(s.mcpUrl, token, callMsg(3, 'get_invoice', { invoice_id: 'inv_1001' }, ref), sh)).status).toBe(404);
    const kept = await post(s.mcpUrl, token, callMsg(3, 'get_invoice', { invoice_id: 'inv_1001' }, ref), await initialize(s.mcpUrl, token));
    expect(kept.status).toBe(200);
    expect(await kept.text()).not.toContain('isError":true');
  });

  it("MAS mode: a batch naming two Missions is still reviewed: narrowing the Mission of its tool call cuts the stream", async () => {
    const s = await setup({ json: false, mission: 'accept_header_references: true' });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    const entry = { type: 'mission_resource_access', resource: s.mcpUrl, actions: ['export_report', 'invoices.read'] };
    const a = await mission(s, [entry]);
    const b = await mission(s, [entry]);
    const token = await s.dev.issueAccessToken({ clientId: 'agent_1', resource: s.mcpUrl });
    const sh = await initialize(s.mcpUrl, token);
    const refOf = (id: string) => ({ [META]: { mission_id: id, issuer: s.dev.url } });
    const batch = [
      { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'export_report', arguments: { steps: 50, delay_ms: 100 }, _meta: { progressToken: 'p1', ...refOf(a) } } },
      { jsonrpc: '2.0', id: 3, method: 'tools/list', params: { _meta: refOf(b) } },
    ];
    const res = await post(s.mcpUrl, token, batch, sh);
    expect(res.status).toBe(200);
    const stream = readEvents(res);
    await eventually(() => stream.events.length >= 2);
    await s.dev.missions.changeAuthority(a, [{ ...entry, actions: ['invoices.read'] }]);
    expect(await stream.ended).toBe('end');
    expect(lastMessage(stream.events)).toMatchObject({ id: 2, result: { isError: true, structuredContent: { denial_reason: 'out_of_authority' } } });
    const metrics = await (await fetch(`${s.gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/^mission_gateway_exchanges_cut_total\{cause="authority_changed"\} 1$/m);
  });

  it('MAS mode: a tools/list alone, filtered for the Mission its _meta names, streams under that Mission and is cut when it completes', async () => {
    const up = await listingForever();
    const s = await setup({ upstream: up.url, mission: 'accept_header_references: true' });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ clientId: 'agent_1', resource: s.mcpUrl });
    const res = await post(s.mcpUrl, token, { jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: { [META]: { mission_id: id, issuer: s.dev.url } } } });
    expect(res.status).toBe(200);
    const stream = readEvents(res);
    await eventually(() => stream.events.length >= 1);
    const gauge = async () => /^mission_gateway_open_exchanges (\S+)$/m.exec(await (await fetch(`${s.gw.adminUrl}/metrics`)).text())?.[1];
    expect(await gauge()).toBe('1');
    // The upstream was told which Mission the request runs under.
    expect(up.seen[0]!.headers['x-mission-id']).toBe(id);
    await s.dev.missions.complete(id);
    expect(await stream.ended).toBe('cut');
    await eventually(() => up.closed, 2000);
    expect(await gauge()).toBe('0');
  });

  it('a tools/list answer streaming through the filter is cut when its Mission is suspended', async () => {
    const up = await listingForever();
    const s = await setup({ upstream: up.url });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const res = await post(s.mcpUrl, token, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    const stream = readEvents(res);
    await eventually(() => stream.events.length >= 1);
    await s.dev.missions.suspend(id, {});
    expect(await stream.ended).toBe('cut');
    await eventually(() => up.closed, 2000);
  });

  /**
   * A stock SDK server whose `pay_invoice` asks the client to confirm (elicitation/create) on the
   * call's stream and pays only on "accept" (and `get_invoice`); which sessions were ended by DELETE.
   */
  async function confirmingUpstream(): Promise<{ url: string; paid: string[]; deleted: string[]; close(): Promise<void> }> {
    const { McpServer } = await import('@modelcontextprotocol/sdk/server/mcp.js');
    const { StreamableHTTPServerTransport } = await import('@modelcontextprotocol/sdk/server/streamableHttp.js');
    const { InMemoryTaskStore } = await import('@modelcontextprotocol/sdk/experimental/tasks');
    const { z } = await import('zod');
    const taskStore = new InMemoryTaskStore();
    const paid: string[] = [];
    const deleted: string[] = [];
    const sessions = new Map<string, InstanceType<typeof StreamableHTTPServerTransport>>();
    const server = createServer(async (req, res) => {
      const sid = req.headers['mcp-session-id'];
      if (req.method === 'DELETE' && typeof sid === 'string') deleted.push(sid);
      let transport = typeof sid === 'string' ? sessions.get(sid) : undefined;
      if (transport === undefined) {
        if (typeof sid === 'string') return void res.writeHead(404).end();
        const t = new StreamableHTTPServerTransport({ sessionIdGenerator: () => crypto.randomUUID(), onsessioninitialized: (id) => void sessions.set(id, t), onsessionclosed: (id) => void sessions.delete(id) });
        const mcp = new McpServer({ name: 'confirming', version: '1.0.0' }, { capabilities: { tasks: { requests: { tools: { call: {} } } } }, taskStore });
        mcp.registerTool('get_invoice', { inputSchema: { invoice_id: z.string() } }, async (a) => ({ content: [{ type: 'text', text: a.invoice_id }] }));
        // A task tool (MCP 2025-11-25): pays when the task is created, its result read later.
        mcp.experimental.tasks.registerToolTask('pay_later', { inputSchema: { invoice_id: z.string(), amount: z.string(), currency: z.string() }, execution: { taskSupport: 'optional' } }, {
          createTask: async (a, extra) => {
            const task = await extra.taskStore.createTask({ ttl: 60_000 });
            paid.push(a.invoice_id);
            await extra.taskStore.storeTaskResult(task.taskId, 'completed', { content: [{ type: 'text', text: 'paid' }] });
            return { task };
          },
          getTask: async (_a, extra) => (await extra.taskStore.getTask(extra.taskId))!,
          getTaskResult: async (_a, extra) => (await extra.taskStore.getTaskResult(extra.taskId)) as never,
        });
        mcp.registerTool('pay_invoice', { inputSchema: { invoice_id: z.string(), amount: z.string(), currency: z.string() } }, async (a, extra) => {
          const answer = await mcp.server.elicitInput({ message: 'confirm payment?', requestedSchema: { type: 'object', properties: { ok: { type: 'boolean' } } } }, { relatedRequestId: extra.requestId });
          if (answer.action === 'accept') paid.push(a.invoice_id);
          return { content: [{ type: 'text', text: answer.action }] };
        });
        await mcp.connect(t);
        transport = t;
      }
      await transport.handleRequest(req, res);
    });
    const url = await new Promise<string>((r) => server.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
    return {
      url,
      paid,
      deleted,
      close: async () => {
        for (const t of sessions.values()) await t.close().catch(() => undefined);
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
      },
    };
  }

  /** pay_invoice called in a fresh session, up to the server's elicitation/create on the call's stream. */
  async function waitingForConfirmation(s: Setup, token: string): Promise<{ sh: Record<string, string>; stream: ReturnType<typeof readEvents>; ask: { id: number } }> {
    const sh = await initialize(s.mcpUrl, token, { elicitation: {} });
    const res = await post(s.mcpUrl, token, callMsg(2, 'pay_invoice', { invoice_id: 'inv_9', amount: '900.00', currency: 'USD' }), sh);
    expect(res.status).toBe(200);
    const stream = readEvents(res);
    const event = await eventually(() => stream.events.find((e) => e.includes('elicitation/create')));
    return { sh, stream, ask: JSON.parse(event.slice(event.indexOf('data: ') + 6)) as { id: number } };
  }

  const READ = (resource: string) => ({ type: 'mission_resource_access', resource, actions: ['invoices.read'] });
  const payAuthority = (resource: string, max = '1000.00') => [
    READ(resource),
    { type: 'mission_resource_access', resource, actions: ['payments.create'], constraints: { max_amount: { amount: max, currency: 'USD' } } },
  ];
  const accept = (id: number) => ({ jsonrpc: '2.0', id, result: { action: 'accept', content: { ok: true } } });
  const payYaml = 'tool_actions: { get_invoice: invoices.read, pay_invoice: payments.create }';

  /** The confirming upstream behind a gateway that hears pushed lifecycle SETs, a paying Mission and its token. */
  async function confirmingStack() {
    const up = await confirmingUpstream();
    cleanups.push(() => up.close());
    const s = await setup({ upstream: up.url, mcp: payYaml });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    const id = await mission(s, payAuthority(s.mcpUrl));
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    return { up, s, id, token };
  }

  it("a session whose call was cut is ended: the client's confirmation of that call never reaches the server, which is told to end the session (r16d F1)", async () => {
    const up = await confirmingUpstream();
    cleanups.push(() => up.close());
    const s = await setup({ upstream: up.url, mcp: payYaml });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    for (const change of ['narrow', 'constrain', 'revoke', 'suspend'] as const) {
      const id = await mission(s, payAuthority(s.mcpUrl));
      const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
      const { sh, stream, ask } = await waitingForConfirmation(s, token);
      if (change === 'narrow') await s.dev.missions.changeAuthority(id, [READ(s.mcpUrl)]);
      if (change === 'constrain') await s.dev.missions.changeAuthority(id, payAuthority(s.mcpUrl, '500.00'));
      if (change === 'revoke') await s.dev.missions.revoke(id);
      if (change === 'suspend') await s.dev.missions.suspend(id, {});
      expect([change, await stream.ended]).toEqual([change, 'end']);
      // The call's answer is the tool error that says why (r21c), not a broken connection.
      const reason = change === 'narrow' || change === 'constrain' ? 'out_of_authority' : 'mission_inactive';
      const error = { narrow: 'insufficient_scope', constrain: 'insufficient_scope', revoke: 'mission_terminated', suspend: 'mission_suspended' }[change];
      expect([change, lastMessage(stream.events)]).toMatchObject([change, { id: 2, result: { isError: true, structuredContent: { denial_reason: reason, error } } }]);
      if (change === 'suspend') await s.dev.missions.resume(id);
      // The answer, with the same token or (the Mission gone) another Mission's of the same agent.
      const other = await mission(s, payAuthority(s.mcpUrl));
      const answerToken = change === 'revoke' ? await s.dev.issueAccessToken({ missionId: other, resource: s.mcpUrl }) : token;
      const answer = await post(s.mcpUrl, answerToken, accept(ask.id), sh);
      expect([change, answer.status]).toEqual([change, 404]);
      expect(await answer.json()).toMatchObject({ error: 'not_found', denial_reason: 'session_ended' });
      await eventually(() => up.deleted.includes(sh['mcp-session-id']!));
      expect(up.paid).toEqual([]);
      // A new session carries on with what the Mission still allows (a token for its new authority).
      const after = change === 'narrow' || change === 'constrain' ? await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl }) : answerToken;
      const read = await post(s.mcpUrl, after, callMsg(3, 'get_invoice', { invoice_id: 'inv_1' }), await initialize(s.mcpUrl, after));
      expect([change, read.status, await read.text()]).toEqual([change, 200, expect.not.stringContaining('isError')]);
    }
    const ended = s.gw.evidence().filter((r) => r['denial_reason'] === 'session_ended');
    expect(ended).toHaveLength(4);
  });

  it("a session outlives its calls: its Mission's end ends it, and so does a narrowing against a call made in it, a task still running included (r16d F2)", async () => {
    const deletes: string[] = [];
    const up = await recorder((req, body, res) => {
      if (req.method === 'DELETE') deletes.push(String(req.headers['mcp-session-id']));
      const msg = body.length === 0 ? null : (JSON.parse(body.toString()) as { id?: unknown; method?: string });
      if (msg?.id === undefined) return void res.writeHead(202).end();
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: msg.id, result: { content: [], task: { taskId: 't1', status: 'working' } } }));
    });
    const s = await setup({ upstream: up.url, mcp: payYaml });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    const id = await mission(s, payAuthority(s.mcpUrl));
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const inSession = (sid: string, body: unknown, t = token) => post(s.mcpUrl, t, body, { 'mcp-session-id': sid, 'mcp-protocol-version': '2025-11-25' });
    const pay = { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'pay_invoice', arguments: { invoice_id: 'inv_9', amount: '900.00', currency: 'USD' }, task: { ttl: 60000 } } };
    expect((await inSession('tasks', pay)).status).toBe(200);
    // A session that made no call yet (the client only said it is initialized).
    expect((await inSession('reads', { jsonrpc: '2.0', method: 'notifications/initialized' })).status).toBe(202);

    // Narrowed, no exchange in flight: the session where the payment task runs is ended, the other is not.
    await s.dev.missions.changeAuthority(id, [READ(s.mcpUrl)]);
    await eventually(() => deletes.includes('tasks'));
    const renewed = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const result = { jsonrpc: '2.0', id: 4, method: 'tasks/result', params: { taskId: 't1' } };
    expect((await inSession('tasks', result, renewed)).status).toBe(404);
    const again = await inSession('reads', callMsg(5, 'get_invoice', { invoice_id: 'inv_1' }), renewed);
    expect([again.status, await again.text()]).toEqual([200, expect.not.stringContaining('isError')]);
    expect(deletes).toEqual(['tasks']);

    // Revoked: every session its requests ran in ends, even for another Mission's token.
    await s.dev.missions.revoke(id);
    await eventually(() => deletes.includes('reads'));
    const other = await s.dev.issueAccessToken({ missionId: await mission(s, payAuthority(s.mcpUrl)), resource: s.mcpUrl });
    expect((await inSession('reads', result, other)).status).toBe(404);
    expect((await inSession('fresh', callMsg(6, 'get_invoice', { invoice_id: 'inv_1' }), other)).status).toBe(200);
  });

  it("a denied task-augmented call reaches the stock SDK client as the tool error, through a task the gateway made and answers for (r16d F3)", async () => {
    const { Client } = await import('@modelcontextprotocol/sdk/client/index.js');
    const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js');
    const { CallToolResultSchema } = await import('@modelcontextprotocol/sdk/types.js');
    const up = await confirmingUpstream();
    cleanups.push(() => up.close());
    const s = await setup({ upstream: up.url, mcp: 'tool_actions: { get_invoice: invoices.read, pay_later: payments.create }' });
    const id = await mission(s, payAuthority(s.mcpUrl));
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const client = new Client({ name: 'tasks', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(s.mcpUrl), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
    cleanups.push(() => client.close());
    // Listed with taskSupport: callToolStream asks for a task by itself.
    expect((await client.listTools()).tools.find((t) => t.name === 'pay_later')?.execution).toEqual({ taskSupport: 'optional' });
    const pay = async (amount: string) => {
      const out: { type: string; result?: unknown; task?: { taskId: string } }[] = [];
      for await (const m of client.experimental.tasks.callToolStream({ name: 'pay_later', arguments: { invoice_id: `inv_${amount}`, amount, currency: 'USD' } }, CallToolResultSchema)) out.push(m as never);
      return out;
    };
    const denied = await pay('5000.00');
    expect(denied.map((m) => m.type)).toEqual(['taskCreated', 'taskStatus', 'result']);
    expect(denied[2]!.result).toMatchObject({ isError: true, structuredContent: { denial_reason: 'parameter_violation', decision_id: denied[0]!.task!.taskId } });
    expect(up.paid).toEqual([]);
    // Only the caller reads the gateway's task; another agent's request goes to the upstream, which does not know it.
    const stranger = await s.dev.issueAccessToken({ missionId: await mission(s, payAuthority(s.mcpUrl), 'agent_2'), resource: s.mcpUrl });
    const peek = await post(s.mcpUrl, stranger, { jsonrpc: '2.0', id: 9, method: 'tasks/result', params: { taskId: denied[0]!.task!.taskId } }, await initialize(s.mcpUrl, stranger));
    expect(await peek.text()).not.toContain('parameter_violation');
    const permitted = await pay('10.00');
    expect(permitted.at(-1)).toMatchObject({ type: 'result', result: { content: [{ type: 'text', text: 'paid' }] } });
    expect(up.paid).toEqual(['inv_10.00']);
  });

  it("a session is bound to the agent that used it first: another agent's token naming it is 404 session_mismatch, never forwarded", async () => {
    const up = await recorder((_req, body, res) => {
      const msg = body.length === 0 ? null : (JSON.parse(body.toString()) as { id?: unknown });
      if (msg?.id === undefined) return void res.writeHead(202).end();
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: msg.id, result: { content: [] } }));
    });
    const s = await setup({ upstream: up.url, mcp: payYaml });
    const token = await s.dev.issueAccessToken({ missionId: await mission(s, payAuthority(s.mcpUrl)), resource: s.mcpUrl });
    const stranger = await s.dev.issueAccessToken({ missionId: await mission(s, payAuthority(s.mcpUrl), 'agent_2'), resource: s.mcpUrl });
    const inSession = (t: string, id: number) => post(s.mcpUrl, t, callMsg(id, 'get_invoice', { invoice_id: 'inv_1' }), { 'mcp-session-id': 'sess-1' });
    expect((await inSession(token, 1)).status).toBe(200);
    const foreign = await inSession(stranger, 2);
    expect(foreign.status).toBe(404);
    expect(await foreign.json()).toMatchObject({ error: 'not_found', denial_reason: 'session_mismatch' });
    expect(up.seen).toHaveLength(1);
    // The same agent with another token (a refreshed one, another of its Missions) carries on.
    const again = await s.dev.issueAccessToken({ missionId: await mission(s, payAuthority(s.mcpUrl)), resource: s.mcpUrl });
    expect((await inSession(again, 3)).status).toBe(200);
  });

  it('a session the client DELETEs is ended here even when the upstream refuses (405); after a reload the next Mission end still reaches the upstream; two Mcp-Session-Id fields are refused (r16e F1, F3, F4)', async () => {
    const deletes: string[] = [];
    const up = await recorder((req, body, res) => {
      if (req.method === 'DELETE') {
        deletes.push(String(req.headers['mcp-session-id']));
        return void res.writeHead(405).end();
      }
      const msg = body.length === 0 ? null : (JSON.parse(body.toString()) as { id?: unknown });
      if (msg?.id === undefined) return void res.writeHead(202).end();
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: msg.id, result: { content: [] } }));
    });
    const s = await setup({ upstream: up.url, mcp: payYaml });
    s.dev.addReceiver({ endpoint: `${new URL(s.mcpUrl).origin}/.well-known/ssf/push`, audience: new URL(s.mcpUrl).origin });
    const id = await mission(s, payAuthority(s.mcpUrl));
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const read = (sid: string, n: number) => post(s.mcpUrl, token, callMsg(n, 'get_invoice', { invoice_id: 'inv_1' }), { 'mcp-session-id': sid });
    expect((await read('a', 1)).status).toBe(200);
    const del = await fetch(s.mcpUrl, { method: 'DELETE', headers: { authorization: `Bearer ${token}`, 'mcp-session-id': 'a' } });
    expect(del.status).toBe(405);
    const after = await read('a', 2);
    expect(after.status).toBe(404);
    expect(await after.json()).toMatchObject({ denial_reason: 'session_ended' });

    expect((await read('b', 3)).status).toBe(200);
    expect(await s.gw.gateway.reload()).toBe(true);
    await s.dev.missions.revoke(id);
    await eventually(() => deletes.includes('b'));
    expect(deletes).toEqual(['a', 'b']);

    const other = await s.dev.issueAccessToken({ missionId: await mission(s, payAuthority(s.mcpUrl)), resource: s.mcpUrl });
    const twice = await rawPost(s.mcpUrl, other, callMsg(4, 'get_invoice', { invoice_id: 'inv_1' }), ['Mcp-Session-Id: c', 'Mcp-Session-Id: b']);
    expect(twice).toMatch(/^HTTP\/1\.1 400[^]*request_malformed/);
    expect(up.seen.filter((r) => r.headers['mcp-session-id']?.includes('c'))).toEqual([]);
  });

  it('a client that drops the call stream after the server asked to confirm cannot confirm it after a narrowing (r16f F1); session ids must be short visible ASCII', async () => {
    const { up, s, id, token } = await confirmingStack();
    const sh = await initialize(s.mcpUrl, token, { elicitation: {} });
    const drop = new AbortController();
    const res = await fetch(s.mcpUrl, {
      method: 'POST',
      signal: drop.signal,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...sh },
      body: JSON.stringify(callMsg(2, 'pay_invoice', { invoice_id: 'inv_9', amount: '900.00', currency: 'USD' })),
    });
    const stream = readEvents(res);
    const event = await eventually(() => stream.events.find((e) => e.includes('elicitation/create')));
    const ask = JSON.parse(event.slice(event.indexOf('data: ') + 6)) as { id: number };
    drop.abort();
    await stream.ended;
    await new Promise((r) => setTimeout(r, 100));
    await s.dev.missions.changeAuthority(id, [READ(s.mcpUrl)]);
    await eventually(() => up.deleted.includes(sh['mcp-session-id']!));
    expect((await post(s.mcpUrl, token, accept(ask.id), sh)).status).toBe(404);
    expect(up.paid).toEqual([]);

    for (const bad of ['x'.repeat(257), 'a b', 'caf\u00e9']) {
      const r = await rawPost(s.mcpUrl, token, callMsg(3, 'get_invoice', { invoice_id: 'inv_1' }), [`Mcp-Session-Id: ${bad}`]);
      expect(r).toMatch(/^HTTP\/1\.1 400[^]*request_malformed/);
    }
  });

  it('a confirmation in a session nothing cut goes through: another Mission of the agent ending ends nothing', async () => {
    const { up, s, token } = await confirmingStack();
    const unrelated = await mission(s, payAuthority(s.mcpUrl));
    const { sh, stream, ask } = await waitingForConfirmation(s, token);
    await s.dev.missions.revoke(unrelated);
    expect((await post(s.mcpUrl, token, accept(ask.id), sh)).status).toBe(202);
    expect(await stream.ended).toBe('end');
    expect(up.paid).toEqual(['inv_9']);
    expect(up.deleted).toEqual([]);
  });
});

describe('SPEC section 7: answers the gateway cannot look into', () => {
  it('the upstream is asked for an unencoded answer when it must be filtered; an encoded one anyway is 502, never an unfiltered list', async () => {
    const { gzipSync } = await import('node:zlib');
    const up = await recorder((_req, _b, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      res.end(gzipSync(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'send_email' }] } })));
    });
    const s = await setup({ upstream: up.url });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const res = await post(s.mcpUrl, token, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { 'accept-encoding': 'gzip' });
    expect(res.status).toBe(502);
    expect(up.seen[0]!.headers['accept-encoding']).toBeUndefined();
    // The record says what the client got under that decision (r13a 12: it said the upstream's 200).
    const decision = up.seen[0]!.headers['mission-decision'];
    expect(await eventually(() => s.gw.evidence().find((r) => r['decision_id'] === decision))).toMatchObject({ decision: 'permit', upstream_status: 502 });
  });
});

describe('answers read whole to be filtered or merged, and clients that do not read them (r14c 2, r14d 1-2)', () => {
  // 12 MiB: more than loopback's socket buffers take, so an unread answer stays in the process.
  const big = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'get_invoice', description: 'x'.repeat(12 * 1024 * 1024) }] } });
  const list = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' });
  const call = JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'get_invoice', arguments: { invoice_id: 'a' } } });
  /** A whole POST to /mcp, as bytes for a raw socket (so that requests can be pipelined). */
  const mcpRequest = (host: string, token: string, body: string): string =>
    `POST /mcp HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: ${body.length}\r\n\r\n${body}`;

  async function budget(max: number) {
    const { bufferedAnswers } = await import('../../src/mcp/relay.js');
    const saved = { max: bufferedAnswers.max, rate: bufferedAnswers.minSendRate };
    cleanups.push(() => {
      bufferedAnswers.max = saved.max;
      bufferedAnswers.minSendRate = saved.rate;
    });
    bufferedAnswers.max = max;
    bufferedAnswers.minSendRate = 1e12; // the send deadline is then upstream.timeout_s (2 s)
    return bufferedAnswers;
  }

  async function raw(url: string) {
    const u = new URL(url);
    const { connect } = await import('node:net');
    const socket = connect(Number(u.port), u.hostname);
    cleanups.push(() => void socket.destroy());
    socket.on('error', () => undefined);
    return { socket, host: u.host };
  }

  it('past the budget an answer is not read (502), one principal holds at most a quarter of it, and an answer its client does not take in time is cut, which frees its share', async () => {
    const answers = await budget(60 * 1024 * 1024); // a principal's quarter: 15 MiB
    const up = await recorder((_req, _b, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(big));
    const s = await setup({ upstream: up.url });
    const grant = [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }];
    const token = await s.dev.issueAccessToken({ missionId: await mission(s, grant), resource: s.mcpUrl });
    const other = await s.dev.issueAccessToken({ missionId: await mission(s, grant, 'agent_2'), resource: s.mcpUrl });
    // A client that sends the tools/list, reads the answer's first bytes, and stops reading.
    const { socket: stalled, host } = await raw(s.mcpUrl);
    let first = '';
    stalled.once('data', (d: Buffer) => {
      first = d.toString('latin1', 0, 12);
      stalled.pause();
    });
    stalled.write(mcpRequest(host, token, list));
    await eventually(() => expect(first).toBe('HTTP/1.1 200'));
    expect(answers.used).toBeGreaterThan(12 * 1024 * 1024);
    // The same agent's next such answer would take it past its quarter: not read, 502 ...
    expect((await post(s.mcpUrl, token, list)).status).toBe(502);
    // ... while another agent's is served.
    const theirs = await post(s.mcpUrl, other, list);
    expect(theirs.status).toBe(200);
    expect((await theirs.text()).length).toBe(big.length);
    // The stalled client is cut once upstream.timeout_s has passed without it taking its answer ...
    await eventually(() => expect(answers.used).toBe(0), 5000);
    // ... and its agent is served again.
    const served = await post(s.mcpUrl, token, list);
    expect(served.status).toBe(200);
    expect((await served.text()).length).toBe(big.length);
    expect(answers.used).toBe(0);
  });

  it('an answer queued behind another on a pipelined connection gives its share back when the connection drops', async () => {
    const answers = await budget(64 * 1024 * 1024);
    const up = await recorder((_req, body, res) => {
      const slow = body.toString().includes('tools/call');
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(slow ? '{"jsonrpc":"2.0","id":7,"result":{"content":[]}}' : big), slow ? 500 : 0);
    });
    const s = await setup({ upstream: up.url });
    const token = await s.dev.issueAccessToken({ missionId: await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]), resource: s.mcpUrl });
    const { socket, host } = await raw(s.mcpUrl);
    // A slow call, then a tools/list whose big answer waits behind it in Node's queue.
    socket.write(mcpRequest(host, token, call) + mcpRequest(host, token, list));
    await eventually(() => expect(answers.used).toBeGreaterThan(12 * 1024 * 1024));
    socket.destroy();
    await eventually(() => expect(answers.used).toBe(0), 3000);
  });

  it('a filtered request queued behind another on a pipelined connection has its upstream request aborted when the connection drops', async () => {
    let aborted = 0;
    const up = await recorder((_req, body, res) => {
      res.once('close', () => {
        if (!res.writableFinished) aborted++;
      });
      // Both answer within upstream.timeout_s (2 s), after the client has gone.
      const wait = body.toString().includes('tools/call') ? 1800 : 1500;
      setTimeout(() => res.writableEnded || res.writeHead(200, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}'), wait);
    });
    const s = await setup({ upstream: up.url });
    const token = await s.dev.issueAccessToken({ missionId: await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]), resource: s.mcpUrl });
    const { socket, host } = await raw(s.mcpUrl);
    socket.write(mcpRequest(host, token, call) + mcpRequest(host, token, list));
    // Both are at the upstream; the list's response waits in Node's queue behind the call's.
    await eventually(() => expect(up.seen).toHaveLength(2));
    socket.destroy();
    await eventually(() => expect(aborted).toBe(2), 1000);
  });
});

describe('SPEC section 7: tools/list answers hidden in unusual SSE shapes are still filtered', () => {
  it('a batched answer in one event, a leading BOM, a custom event type', async () => {
    const answer = (id: number) => ({ jsonrpc: '2.0', id, result: { tools: [{ name: 'get_invoice' }, { name: 'send_email' }] } });
    const up = await recorder((_req, _b, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`\ufeffdata: ${JSON.stringify(answer(1))}\n\n`);
      res.write(`data: ${JSON.stringify([answer(2)])}\n\n`);
      res.end(`event: custom\ndata: ${JSON.stringify(answer(3))}\n\n`);
    });
    const s = await setup({ upstream: up.url });
    const id = await mission(s, [{ type: 'mission_resource_access', resource: s.mcpUrl, actions: ['invoices.read'] }]);
    const token = await s.dev.issueAccessToken({ missionId: id, resource: s.mcpUrl });
    const res = await post(s.mcpUrl, token, [1, 2, 3].map((i) => ({ jsonrpc: '2.0', id: i, method: 'tools/list' })));
    const text = await res.text();
    expect(text.match(/get_invoice/g)).toHaveLength(3);
    expect(text).not.toContain('send_email');
  });
});

describe('r19f 1: a WebSocket upgrade at the MCP endpoint is never decided by a route', () => {
  it('a catch-all auth: none route does not tunnel an anonymous upgrade to the MCP server: 403 no_route, nothing reaches it', async () => {
    const folder = mkdtempSync(join(tmpdir(), 'mgw-mcpws-'));
    const dev = await devAuthority();
    cleanups.push(() => dev.close());
    let seen = 0;
    const upstream = createServer((_req, res) => res.end('plain'));
    upstream.on('upgrade', (_req, socket) => {
      seen++;
      socket.destroy();
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => upstream.close(() => r())));
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const gw = await mcpGateway(
      `
listen: { host: 127.0.0.1, port: ${port} }
public_base_url: ${base}
resource: ${base}
upstream: { url: http://127.0.0.1:${(upstream.address() as AddressInfo).port}, timeout_s: 2 }
issuers:
  - issuer: ${dev.url}
    algorithms: [ES256]
dpop: { required: false }
mission:
  required: true
  client: { client_id: gw-mcp, private_key_file: ${gatewayClientKey(dev, folder)} }
routes:
  - match: { path: "/**" }
    auth: none
mcp: { path: /mcp, resource: ${base}/mcp, tool_actions: { get_invoice: invoices.read } }
`,
      folder,
    );
    cleanups.push(() => gw.close());
    const upgrade = (path: string): Promise<string> =>
      new Promise((resolve) => {
        const socket = connect(port, '127.0.0.1');
        let got = '';
        socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
        socket.on('close', () => resolve(got));
        socket.on('error', () => resolve(got));
        socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
        setTimeout(() => socket.destroy(), 2000);
      });
    const atMcp = await upgrade('/mcp');
    expect(atMcp).toMatch(/^HTTP\/1\.1 403[^]*no_route/);
    expect(seen).toBe(0);
    // Control: elsewhere the catch-all tunnels (the upstream gets the upgrade).
    await upgrade('/elsewhere');
    expect(seen).toBe(1);
  });
});
