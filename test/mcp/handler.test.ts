/**
 * SPEC section 7 through a real Pipeline, a real undici Upstream and the example MCP server (the
 * stock SDK server), with the stock SDK client where a client is needed. Authentication is a fixture
 * (see harness.ts); everything after it is the product.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterEach, describe, expect, it } from 'vitest';
import { parameterDigest } from '../../src/authority/params.js';
import { Denial } from '../../src/errors.js';
import { sourceDigest } from '../../src/mcp/tools.js';
import { claimRef, entry, ISSUER, startHarness, view, type Harness } from './harness.js';

const MISSION = 'msn_invoices';
const AUTHORITY = [entry(['get_invoice']), entry(['pay_invoice'], { max_amount: { amount: '1000.00', currency: 'USD' } })];

let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

async function harness(opts: Parameters<typeof startHarness>[0] = {}): Promise<Harness> {
  h = await startHarness(opts);
  h.principals.set('alice', { token: {}, ref: claimRef(MISSION), mission: view(MISSION, AUTHORITY) });
  return h;
}

async function connect(url: string, token = 'alice'): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  const client = new Client({ name: 'test', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

/** Raw POST with a session (initialize first). */
async function session(url: string, token = 'alice', onSession?: (id: string) => void): Promise<(body: unknown, headers?: Record<string, string>) => Promise<Response>> {
  const base = { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  const init = await fetch(url, {
    method: 'POST',
    headers: base,
    body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }),
  });
  expect(init.status).toBe(200);
  await init.text();
  const sid = init.headers.get('mcp-session-id')!;
  onSession?.(sid);
  const h2 = { ...base, 'mcp-session-id': sid, 'mcp-protocol-version': '2025-06-18' };
  await fetch(url, { method: 'POST', headers: h2, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) });
  return (body, headers = {}) => fetch(url, { method: 'POST', headers: { ...h2, ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

/** JSON-RPC messages from a JSON or SSE response. */
async function messages(res: Response): Promise<Record<string, unknown>[]> {
  const text = await res.text();
  if ((res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    return text
      .split(/\n\n/)
      .flatMap((e) => e.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()))
      .filter((d) => d.startsWith('{'))
      .map((d) => JSON.parse(d) as Record<string, unknown>);
  }
  const doc = JSON.parse(text) as unknown;
  return (Array.isArray(doc) ? doc : [doc]) as Record<string, unknown>[];
}

const call = (id: number, name: string, args: Record<string, unknown>, meta?: Record<string, unknown>) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name, arguments: args, ...(meta === undefined ? {} : { _meta: meta }) },
});
const pay = (amount: string) => ({ invoice_id: 'inv_1001', amount, currency: 'USD' });

for (const json of [false, true]) {
  const mode = json ? 'JSON responses' : 'SSE responses';

  describe(`SPEC section 7 with the stock SDK client and server (${mode})`, () => {
    it('tools/list is filtered to the tools the Mission allows', async () => {
      const { url } = await harness({ json });
      const { client } = await connect(url);
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name).sort()).toEqual(['get_invoice', 'pay_invoice']);
      await client.close();
    });

    it('an allowed call reaches the server; one over its amount bound is denied with the SPEC result and never reaches it', async () => {
      const hh = await harness({ json });
      const { client } = await connect(hh.url);
      const ok = await client.callTool({ name: 'pay_invoice', arguments: pay('420.00') });
      expect(ok.isError).toBeFalsy();
      expect(ok.structuredContent).toMatchObject({ status: 'paid', amount: '420.00' });

      const denied = await client.callTool({ name: 'pay_invoice', arguments: pay('1000.01') });
      expect(denied.isError).toBe(true);
      const sc = denied.structuredContent as Record<string, unknown>;
      expect(sc).toMatchObject({ ok: false, denial_reason: 'parameter_violation' });
      expect(sc['decision_id']).toMatch(/^dec_/);
      expect(JSON.parse((denied.content as { text: string }[])[0]!.text)).toEqual(sc);

      const off = await client.callTool({ name: 'send_email', arguments: { to: 'a@b.example', subject: 's', body: 'b' } });
      expect(off.structuredContent).toMatchObject({ ok: false, denial_reason: 'out_of_authority' });

      expect(hh.upstreamCalls.filter((c) => c['tool'] !== undefined)).toEqual([{ tool: 'pay_invoice', invoice_id: 'inv_1001', amount: '420.00', currency: 'USD' }]);

      // SPEC section 9: one record per call, with the tool, its digest over `arguments`, and the outcome.
      const calls = hh.records.filter((r) => r['tool'] !== undefined);
      expect(calls.map((r) => [r.decision, r.denial_reason, r.action, r.upstream_status])).toEqual([
        ['permit', null, 'pay_invoice', 200],
        ['deny', 'parameter_violation', 'pay_invoice', null],
        ['deny', 'out_of_authority', 'send_email', null],
      ]);
      expect(calls[0]!.parameter_digest).toBe(parameterDigest(pay('420.00')));
      expect(calls[1]!.decision_id).toBe(sc['decision_id']);
      expect(calls[0]!.mission).toMatchObject({ id: MISSION, issuer: ISSUER, state: 'active' });
      expect(JSON.stringify(hh.records)).not.toContain('inv_1001');
      await client.close();
    });

    it('a batch mixing allowed and denied calls: only the denied ones are answered by the gateway', async () => {
      const hh = await harness({ json });
      const post = await session(hh.url);
      const res = await post([
        call(1, 'get_invoice', { invoice_id: 'inv_1001' }),
        call(2, 'pay_invoice', pay('5000.00')),
        { jsonrpc: '2.0', id: 3, method: 'tools/list' },
        call(4, 'send_email', { to: 'x@evil.example', subject: 's', body: 'b' }),
        { jsonrpc: '2.0', method: 'notifications/roots/list_changed' },
      ]);
      expect(res.status).toBe(200);
      const byId = new Map((await messages(res)).map((m) => [m['id'], m]));
      expect([...byId.keys()].sort()).toEqual([1, 2, 3, 4]);
      expect(byId.get(1)).toMatchObject({ result: { structuredContent: { invoice_id: 'inv_1001' } } });
      expect(byId.get(2)).toMatchObject({ result: { isError: true, structuredContent: { denial_reason: 'parameter_violation' } } });
      expect(byId.get(4)).toMatchObject({ result: { isError: true, structuredContent: { denial_reason: 'out_of_authority' } } });
      expect(((byId.get(3)!['result'] as { tools: { name: string }[] }).tools.map((t) => t.name)).sort()).toEqual(['get_invoice', 'pay_invoice']);
      expect(hh.upstreamCalls.filter((c) => c['tool'] !== undefined).map((c) => c['tool'])).toEqual(['get_invoice']);

      // Each denied call's decision_id finds its own deny record and nothing else; the forwarded
      // call's record carries the request's id, the Mission-Decision the upstream received.
      const decisionOf = (id: number) => (byId.get(id)!['result'] as { structuredContent: { decision_id: string } }).structuredContent.decision_id;
      const calls = hh.records.filter((r) => r['tool'] !== undefined);
      for (const id of [2, 4]) {
        const found = calls.filter((r) => r.decision_id === decisionOf(id));
        expect(found.map((r) => [r.decision, r['jsonrpc_id']])).toEqual([['deny', id]]);
      }
      const permit = calls.find((r) => r.decision === 'permit')!;
      expect(new Set([decisionOf(2), decisionOf(4), permit.decision_id]).size).toBe(3);
      expect(decisionOf(2)).toBe(`${permit.decision_id}_1`);
    });

    it('a batch whose calls are all denied is answered without the upstream', async () => {
      const hh = await harness({ json });
      const post = await session(hh.url);
      const res = await post([call(1, 'pay_invoice', pay('5000.00')), call(2, 'send_email', { to: 'a', subject: 's', body: 'b' })]);
      expect(res.status).toBe(200);
      expect(res.headers.get('mission-decision')).toMatch(/^dec_/);
      const ms = await messages(res);
      expect(ms.map((m) => m['id'])).toEqual([1, 2]);
      expect(hh.upstreamCalls.filter((c) => c['tool'] !== undefined)).toEqual([]);
      // The header names a decision some record carries: the first denial's (SPEC section 5).
      const first = (ms[0]!['result'] as { structuredContent: { decision_id: string } }).structuredContent.decision_id;
      expect(res.headers.get('mission-decision')).toBe(first);
      expect(hh.records.filter((r) => r.decision_id === first).map((r) => [r.decision, r['jsonrpc_id']])).toEqual([['deny', 1]]);
    });

    it('a batch of one allowed and one denied call: one upstream answer (an object, not an array) merged with the denial', async () => {
      const hh = await harness({ json });
      const post = await session(hh.url);
      const res = await post([call(1, 'get_invoice', { invoice_id: 'inv_1001' }), call(2, 'pay_invoice', pay('9999.00'))]);
      const ms = await messages(res);
      expect(ms.map((m) => m['id']).sort()).toEqual([1, 2]);
      expect(ms.find((m) => m['id'] === 2)).toMatchObject({ result: { isError: true } });
      expect(ms.find((m) => m['id'] === 1)).toMatchObject({ result: { structuredContent: { vendor: 'Acme Paper' } } });
    });

    it('a batch of a denied call and a notification: the notification is forwarded (202) and the answer is the denial', async () => {
      const hh = await harness({ json });
      const post = await session(hh.url);
      const res = await post([call(1, 'send_email', { to: 'a', subject: 's', body: 'b' }), { jsonrpc: '2.0', method: 'notifications/roots/list_changed' }]);
      expect(res.status).toBe(200);
      const ms = await messages(res);
      expect(ms).toEqual([expect.objectContaining({ id: 1, result: expect.objectContaining({ isError: true }) })]);
    });

    it('a batch of one permitted call and a notification: forwarded, the answer passes through', async () => {
      const hh = await harness({ json });
      const post = await session(hh.url);
      const res = await post([call(7, 'get_invoice', { invoice_id: 'inv_1002' }), { jsonrpc: '2.0', method: 'notifications/roots/list_changed' }]);
      const ms = await messages(res);
      expect(ms).toHaveLength(1);
      expect(ms[0]).toMatchObject({ id: 7, result: { structuredContent: { vendor: 'Globex Cloud' } } });
    });
  });
}

describe('SPEC section 7: streaming, malformed input, pass-through', () => {
  it('progress notifications of a long-running call flow unbuffered (SSE)', async () => {
    const hh = await harness();
    hh.principals.set('bob', { token: {}, ref: claimRef('m2'), mission: view('m2', [entry(['export_report'])]) });
    const { client } = await connect(hh.url, 'bob');
    const started = Date.now();
    const progress: number[] = [];
    const result = await client.callTool({ name: 'export_report', arguments: { steps: 3, delay_ms: 300 } }, undefined, {
      onprogress: () => progress.push(Date.now() - started),
      timeout: 10_000,
    });
    const done = Date.now() - started;
    expect(result.structuredContent).toMatchObject({ report: 'q3-invoices.csv' });
    expect(progress).toHaveLength(3);
    // The first notification arrived while the tool was still running, not with the result.
    expect(done - progress[0]!).toBeGreaterThan(400);
    await client.close();
  });

  it('malformed JSON is 400 parameter_unparseable; an oversized body is 413; neither reaches the server', async () => {
    const hh = await harness({ maxBodyBytes: 2048 });
    const post = await session(hh.url);
    const bad = await post('{"jsonrpc":"2.0","id":1,"method":"tools/call",');
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: 'invalid_request', denial_reason: 'parameter_unparseable' });
    const dup = await post('{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"send_email","arguments":{}}}');
    expect(dup.status).toBe(400);
    const big = await post(call(1, 'get_invoice', { invoice_id: 'x'.repeat(4096) }));
    expect(big.status).toBe(413);
    expect(await big.json()).toMatchObject({ error: 'payload_too_large', denial_reason: 'body_too_large' });
    const noId = await post({ jsonrpc: '2.0', method: 'tools/call', params: { name: 'get_invoice', arguments: {} } });
    expect(noId.status).toBe(400);
    expect(hh.upstreamCalls.filter((c) => c['tool'] !== undefined)).toEqual([]);
  });

  it('a tools/call with unreadable params is denied per call; unknown methods and notifications pass through', async () => {
    const hh = await harness({ json: true });
    const post = await session(hh.url);
    const r1 = await messages(await post({ jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'get_invoice', arguments: [1] } }));
    expect(r1[0]).toMatchObject({ id: 5, result: { isError: true, structuredContent: { denial_reason: 'parameter_unparseable' } } });
    const unknown = await post({ jsonrpc: '2.0', id: 6, method: 'no/such_method' });
    expect((await messages(unknown))[0]).toMatchObject({ id: 6, error: { code: -32601 } });
    const note = await post({ jsonrpc: '2.0', method: 'notifications/roots/list_changed' });
    expect(note.status).toBe(202);
  });

  it('GET opens the session stream and DELETE ends the session, through the gateway', async () => {
    const hh = await harness();
    let sid = '';
    const post = await session(hh.url, 'alice', (id) => (sid = id));
    const headers = { authorization: 'Bearer alice', 'mcp-session-id': sid, 'mcp-protocol-version': '2025-06-18' };
    const get = await fetch(hh.url, { headers: { ...headers, accept: 'text/event-stream' } });
    expect(get.status).toBe(200);
    expect(get.headers.get('content-type')).toContain('text/event-stream');
    await get.body?.cancel();
    const del = await fetch(hh.url, { method: 'DELETE', headers });
    expect(del.status).toBe(200);
    const after = await post({ jsonrpc: '2.0', id: 1, method: 'ping' });
    expect(after.status).toBe(404);
    expect(hh.records.filter((r) => r.method === 'GET' || r.method === 'DELETE').map((r) => [r.method, r.decision, r.upstream_status])).toEqual([
      ['GET', 'permit', 200],
      ['DELETE', 'permit', 200],
    ]);
  });

  it('HTTP-level failures stay HTTP: no token is 401 with the resource_metadata challenge', async () => {
    const hh = await harness();
    const res = await fetch(hh.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer resource_metadata="https:\/\/gw\.example\.com\/\.well-known\/oauth-protected-resource\/mcp"/);
  });
});

describe('mission-capability-binding through the handler: capability_drift', () => {
  it('a pinned tool whose listed definition drifted is removed from tools/list and its calls are denied', async () => {
    const hh = await harness({ json: true, mcp: { tool_digests: { pay_invoice: 'sha-256:' + 'A'.repeat(43) } } });
    const { client } = await connect(hh.url);
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['get_invoice']);
    const r = await client.callTool({ name: 'pay_invoice', arguments: pay('1.00') });
    expect(r.structuredContent).toMatchObject({ ok: false, denial_reason: 'capability_drift' });
    await client.close();
  });

  it('a pin in the Mission entry (tool_digests) that matches keeps the tool and its calls', async () => {
    const probe = await harness({ json: true });
    const { client: c0 } = await connect(probe.url);
    const listed = (await c0.listTools()).tools.find((t) => t.name === 'pay_invoice')!;
    await c0.close();
    await probe.close();
    h = null;

    const hh = await harness({ json: true });
    const pinned = [entry(['get_invoice', 'pay_invoice'], undefined, { tool_digests: { pay_invoice: sourceDigest(listed) } })];
    hh.principals.set('pinned', { token: {}, ref: claimRef('m3'), mission: view('m3', pinned) });
    const { client } = await connect(hh.url, 'pinned');
    expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(['get_invoice', 'pay_invoice']);
    expect((await client.callTool({ name: 'pay_invoice', arguments: pay('1.00') })).isError).toBeFalsy();
    await client.close();
  });
});

describe('SPEC section 3 and 7: Mission references in _meta', () => {
  const META = 'com.karlmcguinness.mission/reference';

  it('a _meta reference naming another Mission than the token is denied per call (mission_reference_conflict)', async () => {
    const hh = await harness({ json: true });
    const post = await session(hh.url);
    const same = await messages(await post(call(1, 'get_invoice', { invoice_id: 'inv_1001' }, { [META]: { mission_id: MISSION, issuer: ISSUER } })));
    expect(same[0]!['result']).not.toHaveProperty('isError');
    const other = await messages(await post(call(2, 'get_invoice', { invoice_id: 'inv_1001' }, { [META]: { mission_id: 'msn_other', issuer: ISSUER } })));
    expect(other[0]).toMatchObject({ id: 2, result: { isError: true, structuredContent: { denial_reason: 'mission_reference_conflict' } } });
    const bad = await messages(await post(call(3, 'get_invoice', { invoice_id: 'inv_1001' }, { [META]: { mission_id: 5 } })));
    expect(bad[0]).toMatchObject({ result: { structuredContent: { denial_reason: 'mission_reference_malformed' } } });
  });

  describe('MAS mode (mission.accept_header_references: true), token without a Mission', () => {
    async function mas(): Promise<Harness> {
      const hh = await harness({ json: true, mission: { accept_header_references: true } });
      hh.principals.set('agent', { token: {}, ref: null, mission: null });
      hh.missions.set(`${ISSUER}\nmsn_mas`, view('msn_mas', AUTHORITY));
      hh.missions.set(`${ISSUER}\nmsn_someone_else`, view('msn_someone_else', AUTHORITY, { subject: 'user_2' }));
      hh.missions.set(`${ISSUER}\nmsn_revoked`, view('msn_revoked', AUTHORITY, { state: 'revoked' }));
      return hh;
    }
    const ref = (id: string) => ({ [META]: { mission_id: id, issuer: ISSUER } });

    it('the call names its Mission in _meta: state looked up, subject/client joined, authority enforced', async () => {
      const hh = await mas();
      const post = await session(hh.url, 'agent');
      const ok = await messages(await post(call(1, 'pay_invoice', pay('10.00'), ref('msn_mas'))));
      expect(ok[0]!['result']).toMatchObject({ structuredContent: { status: 'paid' } });
      const over = await messages(await post(call(2, 'pay_invoice', pay('10000.00'), ref('msn_mas'))));
      expect(over[0]).toMatchObject({ result: { structuredContent: { denial_reason: 'parameter_violation' } } });
      const foreign = await messages(await post(call(3, 'get_invoice', { invoice_id: 'inv_1001' }, ref('msn_someone_else'))));
      expect(foreign[0]).toMatchObject({ result: { structuredContent: { denial_reason: 'mission_reference_conflict' } } });
      const none = await messages(await post(call(4, 'get_invoice', { invoice_id: 'inv_1001' })));
      expect(none[0]).toMatchObject({ result: { structuredContent: { denial_reason: 'mission_claim_missing' } } });
      const untrusted = await messages(await post(call(5, 'get_invoice', { invoice_id: 'inv_1001' }, { [META]: { mission_id: 'msn_mas', issuer: 'https://evil.example' } })));
      expect(untrusted[0]).toMatchObject({ result: { structuredContent: { denial_reason: 'token_invalid' } } });
      const permit = hh.records.find((r) => r['jsonrpc_id'] === 1)!;
      expect(permit.mission).toMatchObject({ id: 'msn_mas', state: 'active' });
    });

    it('a Mission that is not active denies at the HTTP level (403 mission_terminated), as SPEC section 5', async () => {
      const hh = await mas();
      const post = await session(hh.url, 'agent');
      const res = await post(call(1, 'get_invoice', { invoice_id: 'inv_1001' }, ref('msn_revoked')));
      expect(res.status).toBe(403);
      expect(await res.json()).toMatchObject({ error: 'mission_terminated', denial_reason: 'mission_inactive', mission_status: 'revoked' });
      hh.missions.set(`${ISSUER}\nmsn_down`, new Denial('state_unavailable', { retryAfter: 5 }));
      const down = await post(call(2, 'get_invoice', { invoice_id: 'inv_1001' }, ref('msn_down')));
      expect(down.status).toBe(503);
    });

    it('tools/list without a Mission shows no tools; with a _meta reference it shows the Mission\'s', async () => {
      const hh = await mas();
      const post = await session(hh.url, 'agent');
      const none = await messages(await post({ jsonrpc: '2.0', id: 1, method: 'tools/list' }));
      expect(none[0]).toMatchObject({ result: { tools: [] } });
      const some = await messages(await post({ jsonrpc: '2.0', id: 2, method: 'tools/list', params: { _meta: ref('msn_mas') } }));
      expect(((some[0]!['result'] as { tools: { name: string }[] }).tools.map((t) => t.name)).sort()).toEqual(['get_invoice', 'pay_invoice']);
    });
  });
});

describe('SPEC section 4 recipient_domain over a tool whose argument is `to` (mcp.tool_params)', () => {
  it('maps `to` to `recipient`: an allowed domain passes, another is parameter_violation, a decoy `recipient` argument does not help', async () => {
    const hh = await startHarness({ json: true, patch: (c) => ({ ...c, mcp: { ...c.mcp!, tool_params: { send_email: { recipient: '/to' } } } as typeof c.mcp }) });
    h = hh;
    hh.principals.set('mail', { token: {}, ref: claimRef('m4'), mission: view('m4', [entry(['send_email'], { recipient_domain: 'example.com' })]) });
    const post = await session(hh.url, 'mail');
    const email = (id: number, args: Record<string, unknown>) => post(call(id, 'send_email', { subject: 's', body: 'b', ...args }));
    expect((await messages(await email(1, { to: 'cfo@example.com' })))[0]!['result']).toMatchObject({ structuredContent: { status: 'sent' } });
    expect((await messages(await email(2, { to: 'cfo@evil.example' })))[0]).toMatchObject({ result: { structuredContent: { denial_reason: 'parameter_violation' } } });
    expect((await messages(await email(3, { to: 'cfo@evil.example', recipient: 'cfo@example.com' })))[0]).toMatchObject({ result: { structuredContent: { denial_reason: 'parameter_violation' } } });
    expect(hh.upstreamCalls.filter((c) => c['tool'] === 'send_email').map((c) => c['to'])).toEqual(['cfo@example.com']);
  });
});

describe('SPEC section 7 batches (property): every request answered exactly once, denied calls never forwarded', () => {
  it('holds for random batches of allowed calls, denied calls, lists and notifications', async () => {
    const fc = (await import('fast-check')).default;
    const hh = await harness({ json: true });
    const post = await session(hh.url);
    const kinds = fc.array(fc.constantFrom('read', 'pay_ok', 'pay_over', 'email', 'list', 'note', 'ping'), { minLength: 1, maxLength: 6 });
    await fc.assert(
      fc.asyncProperty(kinds, async (ks) => {
        const before = hh.upstreamCalls.filter((c) => c['tool'] !== undefined).length;
        const batch = ks.map((k, i) => {
          const id = i + 1;
          switch (k) {
            case 'read':
              return call(id, 'get_invoice', { invoice_id: 'inv_1001' });
            case 'pay_ok':
              return call(id, 'pay_invoice', pay('1.00'));
            case 'pay_over':
              return call(id, 'pay_invoice', pay('1000.01'));
            case 'email':
              return call(id, 'send_email', { to: 'a@b.example', subject: 's', body: 'b' });
            case 'list':
              return { jsonrpc: '2.0', id, method: 'tools/list' };
            case 'ping':
              return { jsonrpc: '2.0', id, method: 'ping' };
            default:
              return { jsonrpc: '2.0', method: 'notifications/roots/list_changed' };
          }
        });
        const res = await post(batch);
        const expected = ks.flatMap((k, i) => (k === 'note' ? [] : [i + 1]));
        const got = res.status === 202 ? [] : (await messages(res)).map((m) => m['id'] as number);
        expect(got.sort((a, b) => a - b)).toEqual(expected);
        const forwarded = hh.upstreamCalls.filter((c) => c['tool'] !== undefined).length - before;
        expect(forwarded).toBe(ks.filter((k) => k === 'read' || k === 'pay_ok').length);
      }),
      { numRuns: 25 },
    );
  });
});
