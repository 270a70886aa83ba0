/**
 * `upstream.connections` bounds the gateway's connections to the upstream, and a long-lived stream
 * (SSE, an MCP GET stream) holds one for as long as it flows. With every connection held, a further
 * request waits for one; that wait is bounded by `upstream.timeout_s` like any wait for response
 * headers (SPEC section 5: 504 `gateway_timeout`), and a request answered so is never sent late.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';

let echo: Awaited<ReturnType<typeof startEcho>>;
let gw: TestGateway;
const streams: { end(): void }[] = [];
let upstreamConnections = 0;

beforeAll(async () => {
  // /public/sse/*: a stream that stays open until the test ends it; anything else: the echo.
  echo = await startEcho((req, res) => {
    if (req.url?.startsWith('/public/sse/')) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: open\n\n');
      streams.push({ end: () => res.end() });
      return;
    }
    res.end('ok');
  });
  echo.server.on('connection', () => upstreamConnections++);
  gw = await startGateway(`
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: ${echo.url}, connections: 2, timeout_s: 1 }
routes:
  - match: { path: /public/** }
    auth: none
`);
});

afterAll(async () => {
  for (const s of streams) s.end();
  await gw.close();
  await echo.close();
});

/** A request through the gateway: status, the time to the response head, and the first body chunk. */
function get(path: string): Promise<{ status: number; ms: number; first: string; decision: string }> {
  const u = new URL(gw.url);
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const r = request({ host: u.hostname, port: u.port, path, agent: false }, (res) => {
      res.once('data', (c: Buffer) => resolve({ status: res.statusCode ?? 0, ms: Date.now() - t0, first: c.toString(), decision: String(res.headers['mission-decision']) }));
    });
    r.on('error', reject);
    r.end();
  });
}

describe('every upstream connection held by a long-lived stream', () => {
  it('a further request waits at most upstream.timeout_s, then gets 504 gateway_timeout, and is never sent to the upstream afterwards', async () => {
    expect((await get('/public/sse/1')).first).toContain('data: open');
    expect((await get('/public/sse/2')).first).toContain('data: open');

    const waited = await get('/public/waits');
    expect(waited.status).toBe(504);
    expect(JSON.parse(waited.first)).toMatchObject({ error: 'gateway_timeout', denial_reason: null, decision_id: waited.decision });
    expect(waited.ms).toBeGreaterThanOrEqual(900);
    expect(waited.ms).toBeLessThan(3000);
    const rec = await eventually(() => gw.evidence().find((r) => r['decision_id'] === waited.decision));
    expect(rec).toMatchObject({ decision: 'permit', upstream_status: 504, path: '/public/waits' });

    // A stream ends: its connection serves the next request, and the one answered 504 is dropped.
    streams.shift()!.end();
    const next = await get('/public/next');
    expect(next).toMatchObject({ status: 200, first: 'ok' });
    await new Promise((r) => setTimeout(r, 200));
    expect(echo.requests.map((r) => r.url)).not.toContain('/public/waits');
    expect(echo.requests.map((r) => r.url)).toContain('/public/next');
    // Dropping it did not cost the freed connection: the next request went out on it.
    expect(upstreamConnections).toBe(2);
  });
});
