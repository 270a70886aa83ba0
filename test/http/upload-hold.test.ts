/**
 * A request body streamed to the upstream is held under its Mission from dispatch (forward.ts
 * holdUpload), and released however the exchange ends: here, answered 504 while it waited for an
 * upstream connection that never came free. Real sockets and a real undici pool.
 */
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Upstream, type ForwardOutcome } from '../../src/http/forward.js';
import { MissionHolds, type Ticket } from '../../src/mission/holds.js';
import { eventually } from '../helpers/gateway.js';

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.closeAllConnections(), s.close();
});

async function listen(server: Server): Promise<string> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const ISSUER = 'https://mas.example.com';
const ticket = (): Ticket => ({
  key: `${ISSUER}\nmsn_1`,
  ref: { form: 'claim', issuer: ISSUER, id: 'msn_1', s256: null, authorityHash: null },
  audience: 'https://api.example.com',
  issuer: ISSUER,
  id: 'msn_1',
  expiresAt: null,
  admittedAt: performance.now(),
  more: null,
  review: null,
});

describe('an upload held from dispatch', () => {
  it('is released when it is answered 504 while waiting for a busy upstream connection', async () => {
    // The upstream's one connection is taken by a response that never ends.
    const upstreamUrl = await listen(createServer((_req, res) => res.writeHead(200).write('streaming')));
    const holds = new MissionHolds({ logger: pino({ level: 'silent' }), counted: () => undefined });
    const upstream = new Upstream({ url: upstreamUrl, timeoutMs: 300, connections: 1, keepAliveTimeoutMs: 1000, holds, preserveHost: false });
    const outcomes: ForwardOutcome[] = [];
    const front = await listen(
      createServer((req, res) => {
        const body = req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined ? null : req;
        upstream.send({ method: req.method!, path: req.url!, headers: [], body, responseHeaders: null, sentAt: performance.now(), ticket: ticket() }, res, () => undefined, (o) => outcomes.push(o));
      }),
    );
    const u = new URL(front);
    // The first takes the connection (a stream, held from its response); the second, a chunked
    // upload, waits in the pool's queue, held from dispatch.
    const first = request({ host: u.hostname, port: u.port, path: '/stream' });
    first.on('error', () => undefined);
    first.end();
    await eventually(() => holds.size === 1);
    const second = request({ host: u.hostname, port: u.port, method: 'POST', path: '/upload', headers: { 'transfer-encoding': 'chunked' } }, (res) => res.resume());
    second.on('error', () => undefined);
    second.write('part');
    await eventually(() => holds.size === 2);
    await eventually(() => outcomes.some((o) => o.kind === 'error' && o.code === 'gateway_timeout'));
    // The 504'd upload no longer counts; the stream still does.
    expect(holds.size).toBe(1);
    first.destroy();
    second.destroy();
    await upstream.destroy();
  });
});
