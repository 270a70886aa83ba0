/**
 * What a tools/call costs in memory while the upstream answers (r21j 1): the parsed body, up to ~35
 * times its size for a body of many small values, is dropped once the call is decided, so calls in
 * flight hold their raw bytes only. Before, each 1 MiB call held ~20-35 MiB until its answer and a
 * few concurrent calls from one agent ended the process (heap out of memory). The compiled CLI as a
 * real process with a small heap.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { startCli } from '../helpers/gateway.js';
import { devAuthority, gatewayClientKey } from './gateway.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

it('ten 1 MiB tools/call in flight at once, with a 160 MiB heap: all answered, the process lives (r21j 1)', async () => {
  const dev = await devAuthority();
  cleanups.push(() => dev.close());
  // An MCP server that answers each call after 3 s: every call is in flight at the same time.
  const upstream = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const timer = setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":7,"result":{"content":[]}}'), 3000);
      res.on('close', () => clearTimeout(timer));
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  cleanups.push(() => {
    upstream.closeAllConnections();
    upstream.close();
  });
  const folder = mkdtempSync(join(tmpdir(), 'mgw-mcpmem-'));
  const keyFile = gatewayClientKey(dev, folder);
  const file = join(folder, 'gw.yaml');
  writeFileSync(
    file,
    `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
public_base_url: https://gw.example.com
resource: https://gw.example.com
upstream: { url: "http://127.0.0.1:${(upstream.address() as AddressInfo).port}", timeout_s: 30 }
issuers: [{ issuer: ${dev.url}, algorithms: [ES256] }]
dpop: { required: false }
mission:
  client: { client_id: gw-mcp, private_key_file: ${keyFile} }
routes: []
mcp: { path: /mcp, resource: https://gw.example.com/mcp, tool_actions: { echo: tools.echo } }
evidence: { sink: ${join(folder, 'evidence.jsonl')} }
`,
  );
  const gw = await startCli(file, { NODE_OPTIONS: '--max-old-space-size=160' });
  cleanups.push(() => void gw.proc.kill('SIGKILL'));
  const m = await dev.missions.create({ subject: 'agent_1', client_id: 'agent_1', purpose: 'echo', authorization_details: [{ type: 'mission_resource_access', resource: 'https://gw.example.com/mcp', actions: ['tools.echo'] }] });
  const token = await dev.issueAccessToken({ missionId: m.id, resource: 'https://gw.example.com/mcp' });
  // ~1 MiB of empty objects: the shape whose parse tree is largest for its size.
  const n = Math.floor((1_048_576 - 200) / 3);
  const body = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"a":[${Array(n).fill('{}').join(',')}]}}}`;
  const call = (): Promise<number> =>
    fetch(`${gw.url}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body }).then(
      async (r) => {
        await r.arrayBuffer();
        return r.status;
      },
      () => 0,
    );
  const statuses = await Promise.all(Array.from({ length: 10 }, call));
  expect(statuses).toEqual(Array(10).fill(200));
  expect(gw.proc.exitCode).toBeNull();
  expect(gw.proc.signalCode).toBeNull();
}, 60_000);
