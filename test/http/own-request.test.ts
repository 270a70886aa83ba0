/**
 * The gateway's own requests to the upstream (Upstream.own: the DELETE that ends an MCP session
 * at the upstream, src/mcp/sessions.ts) are fire-and-forget but bounded: one the upstream never
 * answers, or one that waits for a connection the pool never frees, ends after the upstream
 * timeout with null instead of being kept. Real sockets and a real undici pool.
 */
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { Upstream } from '../../src/http/forward.js';

const servers: Server[] = [];
const upstreams: Upstream[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) s.closeAllConnections(), s.close();
  await Promise.all(upstreams.splice(0).map((u) => u.close().catch(() => undefined)));
});

async function listen(server: Server): Promise<string> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function upstream(url: string, timeoutMs: number): Upstream {
  const u = new Upstream({ url, timeoutMs, connections: 1, keepAliveTimeoutMs: 1000, holds: null, preserveHost: false });
  upstreams.push(u);
  return u;
}

describe("Upstream.own: the gateway's own request", () => {
  it('returns the status the upstream answers, with the headers given', async () => {
    let seen: string | undefined;
    const url = await listen(createServer((req, res) => ((seen = `${req.method} ${req.url} ${req.headers['mcp-session-id']}`), res.writeHead(204).end())));
    expect(await upstream(url, 1000).own('DELETE', '/mcp', { 'mcp-session-id': 's1' })).toBe(204);
    expect(seen).toBe('DELETE /mcp s1');
  });

  it('ends with null after the timeout when the upstream never answers', async () => {
    const url = await listen(createServer(() => undefined));
    const started = Date.now();
    expect(await upstream(url, 300).own('DELETE', '/mcp', { 'mcp-session-id': 's1' })).toBeNull();
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('ends with null after the timeout when it waits for a connection that never comes free', async () => {
    const url = await listen(createServer((req, res) => (req.method === 'GET' ? res.writeHead(200, { 'content-type': 'text/event-stream' }).write('data: 1\n\n') : res.writeHead(204).end())));
    const u = upstream(url, 300);
    // The pool's one connection is taken by a forwarded stream that never ends (no timeout cuts it).
    const front = await listen(createServer((_req, res) => u.send({ method: 'GET', path: '/stream', headers: [], body: null, responseHeaders: null, sentAt: performance.now(), ticket: null }, res, () => undefined, () => undefined)));
    const client = request(`${front}/stream`);
    client.on('error', () => undefined);
    client.end();
    await new Promise<void>((r) => client.on('response', () => r()));
    const started = Date.now();
    expect(await u.own('DELETE', '/mcp', { 'mcp-session-id': 's1' })).toBeNull();
    expect(Date.now() - started).toBeLessThan(3000);
    client.destroy();
  });
});
