/**
 * A held MCP exchange decided again (its Mission's authority changed while the upstream answers)
 * reads each call's arguments from the request's body: the body is parsed once per review, however
 * many calls it carries (r21f 2). Parsing it once per call made a review of a held 1 MiB batch of
 * 100 calls cost 100 parses, stalling the event loop for seconds on every Status refresh.
 */
import { mkdtempSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it, vi } from 'vitest';
import { eventually } from '../helpers/gateway.js';
import { devAuthority, freePort, gatewayClientKey, mcpGateway } from './gateway.js';

/** Bodies parseMcpBody parsed, by size: the handler's own module, counted. */
const parses = vi.hoisted(() => ({ sizes: [] as number[] }));
vi.mock('../../src/mcp/jsonrpc.js', async (importOriginal) => {
  const mod = await importOriginal<typeof import('../../src/mcp/jsonrpc.js')>();
  return {
    ...mod,
    parseMcpBody: (body: Buffer) => {
      parses.sizes.push(body.length);
      return mod.parseMcpBody(body);
    },
  };
});

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

it('a narrowing that still grants a held batch of 40 calls parses its body once, and keeps the stream (r21f 2)', async () => {
  const dev = await devAuthority();
  cleanups.push(() => dev.close());
  // An MCP server that answers with an event stream it holds open: the batch stays in flight.
  const held: ServerResponse[] = [];
  const upstream = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      held.push(res);
      res.writeHead(200, { 'content-type': 'text/event-stream' }).write(': working\n\n');
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  cleanups.push(() => {
    upstream.closeAllConnections();
    upstream.close();
  });
  const folder = mkdtempSync(join(tmpdir(), 'mgw-review-'));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const gw = await mcpGateway(
    `listen: { host: 127.0.0.1, port: ${port} }
public_base_url: ${base}
resource: ${base}
upstream: { url: "http://127.0.0.1:${(upstream.address() as AddressInfo).port}", timeout_s: 30 }
issuers: [{ issuer: ${dev.url}, algorithms: [ES256] }]
dpop: { required: false }
mission: { accept_header_references: true, client: { client_id: gw-mcp, private_key_file: ${gatewayClientKey(dev, folder)} } }
routes: []
mcp: { path: /mcp, resource: ${base}/mcp, tool_actions: { search: tools.search } }
`,
    folder,
  );
  cleanups.push(() => gw.close());
  dev.addReceiver({ endpoint: `${base}/.well-known/ssf/push`, audience: base });
  const entry = { type: 'mission_resource_access', resource: `${base}/mcp`, actions: ['tools.search', 'tools.other'] };
  const m = await dev.missions.create({ subject: 'agent_1', client_id: 'agent_1', purpose: 'search', authorization_details: [entry] });
  // MAS mode: the token names no Mission; each call does, so a narrowing decides the calls again.
  const token = await dev.issueAccessToken({ clientId: 'agent_1', resource: `${base}/mcp` });
  const ref = { 'com.karlmcguinness.mission/reference': { mission_id: m.id, issuer: dev.url } };
  const batch = JSON.stringify(Array.from({ length: 40 }, (_, i) => ({ jsonrpc: '2.0', id: i + 1, method: 'tools/call', params: { name: 'search', arguments: { q: `query ${i}` }, _meta: ref } })));
  const abort = new AbortController();
  cleanups.push(() => abort.abort());
  const res = await fetch(`${base}/mcp`, {
    method: 'POST',
    signal: abort.signal,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: batch,
  });
  expect(res.status).toBe(200);
  await eventually(() => held.length === 1);
  const decided = parses.sizes.filter((n) => n === batch.length).length;
  expect(decided).toBe(1);

  await dev.missions.changeAuthority(m.id, [{ ...entry, actions: ['tools.search'] }]);
  // The review ran (the gateway learned of the change and kept the stream): the batch was parsed once more.
  await eventually(async () => /mission_gateway_events_total\{[^}]*\} [1-9]/.test(await (await fetch(`${gw.adminUrl}/metrics`)).text()), 5000);
  await eventually(() => parses.sizes.filter((n) => n === batch.length).length > decided, 5000);
  await new Promise((r) => setTimeout(r, 200));
  expect(parses.sizes.filter((n) => n === batch.length).length).toBe(decided + 1);
  expect(held[0]!.destroyed).toBe(false);
});
