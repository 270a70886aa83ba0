/**
 * An upstream that answers before it has read the request body it is being sent (a 401 or 413 at
 * once, as servers do for auth and size failures). undici stops sending the body when that answer
 * is complete, so the rest of it is never read from the client. The client must still get the answer
 * and then either an answer to its next request on the same connection or a prompt close, never a
 * connection that silently stops answering. A body that had fully arrived keeps the connection alive.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { openSocket } from '../helpers/http.js';

const ISSUER = 'http://127.0.0.1:1'; // never contacted

/**
 * A raw upstream. `/public/early*`: answers 401 as soon as it has the head and never reads the body.
 * `/public/reset*`: resets the connection once the head is in, without an answer. `/public/read*`:
 * reads the whole declared body, then answers 401. Anything else: 200 "ok".
 */
async function startUpstream(): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    let need = 0; // body bytes still to skip, for /public/read
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (need > 0) {
          const take = Math.min(need, buf.length);
          need -= take;
          buf = buf.subarray(take);
          if (need > 0) return;
          s.write('HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope');
        }
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.subarray(0, end).toString('latin1');
        buf = buf.subarray(end + 4);
        const target = head.split(' ')[1] ?? '';
        if (target.startsWith('/public/early')) {
          s.write('HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope');
          s.pause(); // never reads the body
          return;
        }
        if (target.startsWith('/public/reset')) {
          s.resetAndDestroy();
          return;
        }
        if (target.startsWith('/public/read')) {
          need = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? '0');
          continue;
        }
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    server,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

interface Conversation {
  /** Everything received, in order. */
  text(): string;
  /** Ms from `since` until the gateway ended (FIN) or closed the connection, or null while open. */
  endedAt(): number | null;
  until(cond: () => boolean, ms: number): Promise<boolean>;
  socket: Socket;
}

async function converse(url: string): Promise<Conversation> {
  const socket = await openSocket(url);
  let got = '';
  let ended: number | null = null;
  socket.on('data', (c: Buffer) => (got += c.toString('latin1')));
  const end = (): void => {
    ended ??= Date.now();
  };
  socket.on('end', end);
  socket.on('close', end);
  socket.on('error', () => undefined); // the client's remaining body may meet a reset
  return {
    socket,
    text: () => got,
    endedAt: () => ended,
    async until(cond, ms) {
      const deadline = Date.now() + ms;
      while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      return cond();
    },
  };
}

/**
 * Asks for another request on the connection: it must be answered, or the connection closed,
 * within 2 s (a stalled connection answers neither).
 */
async function expectNextRequestSettles(c: Conversation): Promise<void> {
  const asked = Date.now();
  if (!c.socket.destroyed) c.socket.write('GET /public/next HTTP/1.1\r\nHost: a\r\n\r\n');
  const settled = await c.until(() => c.endedAt() !== null || c.text().includes('\r\n\r\nok'), 4000);
  const waited = (c.endedAt() ?? Date.now()) - asked;
  c.socket.destroy();
  expect(settled, `no answer and no close after ${waited} ms`).toBe(true);
  expect(waited).toBeLessThan(2000);
}

function config(upstream: string): string {
  return `
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: ${upstream}, timeout_s: 5 }
issuers: [{ issuer: ${ISSUER} }]
routes:
  - match: { path: /public/** }
    auth: none
limits: { request_timeout_s: 30, keep_alive_timeout_s: 10 }
`;
}

const RESPONSE_END = /HTTP\/1\.1 (\d{3})[^]*?\r\n\r\n/g;

describe('an upstream that answers before it has read the request body', () => {
  let up: Awaited<ReturnType<typeof startUpstream>>;
  let gw: TestGateway;
  beforeAll(async () => {
    up = await startUpstream();
    gw = await startGateway(config(up.url));
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
  });

  const framings = [
    { name: 'Content-Length', head: (n: number) => `Content-Length: ${n}\r\n`, body: (b: Buffer) => [b] },
    { name: 'chunked', head: () => 'Transfer-Encoding: chunked\r\n', body: (b: Buffer) => [Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n0\r\n\r\n')] },
  ];

  for (const framing of framings) {
    it(`(${framing.name}, 8 MiB) the client gets the 401, then an answer to its next request or a prompt close, not a stalled connection`, async () => {
      const c = await converse(gw.url);
      const body = Buffer.alloc(8 * 1024 * 1024, 'a');
      c.socket.write(`POST /public/early/${framing.name} HTTP/1.1\r\nHost: a\r\n${framing.head(body.length)}\r\n`);
      for (const part of framing.body(body)) c.socket.write(part);
      expect(await c.until(() => c.text().includes('nope'), 5000)).toBe(true);
      expect(c.text()).toMatch(/^HTTP\/1\.1 401 Unauthorized\r\n[^]*\r\n\r\nnope$/);
      await expectNextRequestSettles(c);
      const rec = gw.evidence().find((r) => r['path'] === `/public/early/${framing.name}`);
      expect(rec).toMatchObject({ decision: 'permit', upstream_status: 401 });
    });
  }

  it('an upstream reset while the body streams: the 502 is followed by a close, not a stalled connection', async () => {
    const c = await converse(gw.url);
    const body = Buffer.alloc(8 * 1024 * 1024, 'b');
    c.socket.write(`POST /public/reset HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n`);
    c.socket.write(body);
    expect(await c.until(() => c.endedAt() !== null || c.text().includes('bad_gateway'), 5000)).toBe(true);
    await expectNextRequestSettles(c);
  });

  it('a streamed body the upstream read in full before answering leaves the connection open for the next request', async () => {
    const c = await converse(gw.url);
    const body = Buffer.alloc(1024 * 1024, 'c');
    c.socket.write(`POST /public/read HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n`);
    c.socket.write(body);
    expect(await c.until(() => c.text().includes('nope'), 5000)).toBe(true);
    c.socket.write('GET /public/next HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(await c.until(() => c.text().endsWith('\r\n\r\nok'), 3000)).toBe(true);
    expect([...c.text().matchAll(RESPONSE_END)].map((m) => m[1])).toEqual(['401', '200']);
    expect(c.endedAt()).toBeNull();
    c.socket.destroy();
  });

  it('the gateway keeps serving new connections afterwards', async () => {
    const c = await converse(gw.url);
    c.socket.write('GET /public/after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    expect(await c.until(() => c.text().endsWith('\r\n\r\nok'), 3000)).toBe(true);
    c.socket.destroy();
  });
});
