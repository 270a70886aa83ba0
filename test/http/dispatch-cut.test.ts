/**
 * A request whose Mission was cut after it was admitted, and before it was handed to the upstream
 * (the window of the body read, the evidence write, a queued connection), is never sent
 * (r18a 1): `Upstream.send` acts on the hold being refused. Over real sockets, with the Mission cut
 * deterministically between the admission and the dispatch.
 */
import { once } from 'node:events';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Upstream, type ForwardOutcome } from '../../src/http/forward.js';
import { MissionHolds, type Ticket } from '../../src/mission/holds.js';

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function listen(server: Server): Promise<string> {
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function ticketAdmittedNow(key: string): Ticket {
  return {
    key,
    ref: { form: 'claim', issuer: 'https://as.example.com', id: 'msn_1', s256: null, authorityHash: null },
    audience: 'https://api.example.com',
    issuer: 'https://as.example.com',
    id: 'msn_1',
    expiresAt: null,
    admittedAt: performance.now(),
    more: null,
    review: null,
  };
}

describe('a Mission cut between admission and dispatch', () => {
  it('the request never reaches the upstream; the outcome is the cut, and the client connection closes', async () => {
    let upstreamRequests = 0;
    const upstreamUrl = await listen(createServer((_req, res) => (upstreamRequests++, res.end('paid'))));
    const cuts: string[] = [];
    const holds = new MissionHolds({ logger: pino({ level: 'silent' }), counted: (cause) => cuts.push(cause) });
    const upstream = new Upstream({ url: upstreamUrl, timeoutMs: 2000, connections: 4, keepAliveTimeoutMs: 1000, holds, preserveHost: false });
    const outcomes: ForwardOutcome[] = [];
    const front = await listen(
      createServer((req, res) => {
        const ticket = ticketAdmittedNow('msn_1');
        // Revoked while the request was between its decision and its dispatch.
        holds.cut('msn_1', 'revoked');
        upstream.send({ method: req.method!, path: '/pay', headers: ['host', 'api.example.com'], body: null, responseHeaders: null, sentAt: performance.now(), ticket }, res, () => undefined, (o) => outcomes.push(o));
      }),
    );
    try {
      const closed = await new Promise<string>((resolve) => {
        const r = request(`${front}/pay`, { method: 'POST' }, (res) => resolve(`answered ${res.statusCode}`));
        r.on('error', (err) => resolve(`closed: ${(err as NodeJS.ErrnoException).code}`));
        r.end();
      });
      expect(closed).toMatch(/^closed/);
      expect(outcomes).toHaveLength(1);
      expect(outcomes[0]).toMatchObject({ kind: 'aborted', reason: { code: 'mission_cut' } });
      expect(cuts).toEqual(['state_change']);
      // Given every chance to arrive: nothing reached the upstream.
      await new Promise((r) => setTimeout(r, 100));
      expect(upstreamRequests).toBe(0);

      // Control: a ticket admitted after the cut is held and sent.
      const sent = await new Promise<number>((resolve, reject) => {
        const s = createServer((_req, res) => upstream.send({ method: 'GET', path: '/pay', headers: ['host', 'api.example.com'], body: null, responseHeaders: null, sentAt: performance.now(), ticket: ticketAdmittedNow('msn_1') }, res, () => undefined, () => undefined));
        void listen(s).then((url) => request(`${url}/pay`, (res) => resolve(res.statusCode ?? 0)).on('error', reject).end());
      });
      expect(sent).toBe(200);
      expect(upstreamRequests).toBe(1);
    } finally {
      await upstream.destroy();
    }
  });
});
