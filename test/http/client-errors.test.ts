/**
 * Connections the gateway answers at the protocol level (408 headers timeout, 400 malformed head,
 * 431): what happens to the connection afterwards, and requests the parser must not cut short.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually, startCli, startEcho, startGateway } from '../helpers/gateway.js';
import { rawSocket } from '../helpers/http.js';

const procs: ChildProcess[] = [];
const clients: Socket[] = [];
afterEach(() => {
  for (const s of clients.splice(0)) s.destroy();
  for (const p of procs.splice(0)) p.kill('SIGKILL');
});

/** A client that reads everything, never closes its end, and remembers whether it saw the FIN. */
function silentClient(url: string, bytes: string): Promise<{ socket: Socket; received: () => string; ended: () => boolean }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    let got = '';
    let ended = false;
    const socket = connect({ port: Number(u.port), host: u.hostname, allowHalfOpen: true }, () => {
      socket.write(bytes);
      resolve({ socket, received: () => got, ended: () => ended });
    });
    clients.push(socket);
    socket.on('data', (c: Buffer) => (got += c.toString('latin1')));
    socket.on('end', () => (ended = true));
    socket.once('error', reject);
  });
}

describe('connections answered with a protocol error are closed, not left half-open', () => {
  it.runIf(existsSync('/proc/self/fd'))('frees the socket and its fd after a 408 or 400, even when the client keeps its end open', async () => {
    const echo = await startEcho();
    const dir = mkdtempSync(join(tmpdir(), 'mgw-halfopen-'));
    const file = join(dir, 'gw.yaml');
    writeFileSync(
      file,
      `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
public_base_url: http://localhost:8080
resource: http://localhost:8080
upstream: { url: ${echo.url}, timeout_s: 5 }
routes:
  - match: { path: /public/** }
    auth: none
evidence: { sink: ${JSON.stringify(join(dir, 'evidence.jsonl'))} }
limits: { headers_timeout_s: 1, request_timeout_s: 2, keep_alive_timeout_s: 1 }
log: { level: info }
`,
    );
    const gw = await startCli(file);
    procs.push(gw.proc);
    try {
      const fds = (): number => readdirSync(`/proc/${gw.proc.pid}/fd`).length;
      const before = fds();
      const silent = await Promise.all(Array.from({ length: 30 }, () => silentClient(gw.url, 'GET /public/a HTTP/1.1\r\nHost: a\r\n')));
      const malformed = await Promise.all(Array.from({ length: 10 }, () => silentClient(gw.url, 'GET /public/a HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n')));
      // The silent ones are open until their headers timeout.
      await eventually(() => fds() >= before + 30, 5000);
      // Every client gets its answer and the FIN...
      await eventually(() => [...silent, ...malformed].every((c) => c.ended()), 8000);
      expect(silent.every((c) => /^HTTP\/1\.1 408 /.test(c.received()))).toBe(true);
      expect(malformed.every((c) => /^HTTP\/1\.1 400 /.test(c.received()))).toBe(true);
      // ...and the gateway lets go of the connections although none of the clients closed.
      await eventually(() => fds() <= before + 2, 4000);
      expect(echo.requests.length).toBe(0);
    } finally {
      gw.proc.kill('SIGKILL');
      await echo.close();
    }
  });
});

/** A gateway config with one `auth: none` route, /public/**, in front of `upstream`. */
function publicRoute(upstream: string): string {
  return `public_base_url: http://localhost:8080
resource: http://localhost:8080
upstream: { url: ${upstream}, timeout_s: 5 }
routes:
  - match: { path: /public/** }
    auth: none
`;
}

describe('a request head with many fields', () => {
  it('forwards every field of a head under limits.max_header_bytes, past 1000 fields: framing and body are not cut off', async () => {
    const echo = await startEcho();
    echo.server.maxHeadersCount = 0; // the test upstream must see every field too
    const gw = await startGateway(publicRoute(echo.url));
    try {
      const filler = Array.from({ length: 1100 }, (_, i) => `X-F${i}: 1\r\n`).join('');
      const body = '{"amount":"100"}';
      const head = `POST /public/many HTTP/1.1\r\nHost: a\r\n${filler}Content-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
      expect(head.length).toBeLessThan(16384);
      const out = await rawSocket(gw.url, head + body, 5000);
      expect(out).toMatch(/^HTTP\/1\.1 200 /);
      expect(echo.requests).toHaveLength(1);
      const got = echo.requests[0]!;
      expect(got.body.toString()).toBe(body);
      expect(got.headers['content-type']).toBe('application/json');
      expect(got.headers['x-f1099']).toBe('1');
    } finally {
      await gw.close();
      await echo.close();
    }
  });

  it('refuses with 431, and forwards nothing, a head of short fields past limits.max_header_bytes', async () => {
    const echo = await startEcho();
    const gw = await startGateway(publicRoute(echo.url) + 'limits: { max_header_bytes: 8192 }\n');
    try {
      const filler = Array.from({ length: 5000 }, () => 'a:1\r\n').join('');
      const body = '{"amount":"100"}';
      const out = await rawSocket(gw.url, `POST /public/many HTTP/1.1\r\nHost: a\r\n${filler}Content-Length: ${body.length}\r\n\r\n${body}`, 5000);
      expect(out).toMatch(/^HTTP\/1\.1 431 /);
      expect(echo.requests).toHaveLength(0);
    } finally {
      await gw.close();
      await echo.close();
    }
  });
});

describe('a malformed request body while the answer is already streaming', () => {
  it('does not write a protocol-level 400 into the middle of the response under way: the connection is closed instead', async () => {
    // An upstream that starts a chunked answer as soon as it has the head, and keeps reading.
    const upstream = createNetServer((s) => {
      s.on('error', () => undefined);
      s.once('data', () => s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n'));
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    const gw = await startGateway(publicRoute(`http://127.0.0.1:${(upstream.address() as { port: number }).port}`));
    try {
      const c = await silentClient(gw.url, 'POST /public/stream HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n');
      await eventually(() => c.received().includes('hello'), 5000);
      c.socket.write('zz\r\nnot a chunk\r\n'); // a chunk size that is not hex: Node's parser fails
      await eventually(() => c.ended() || c.socket.destroyed, 5000);
      const got = c.received();
      expect(got).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(got).not.toContain('HTTP/1.1 400');
      expect(got).not.toContain('malformed HTTP request');
    } finally {
      await gw.close();
      await new Promise<void>((r) => upstream.close(() => r()));
    }
  });
});

describe('a request body whose framing breaks before the upstream answered', () => {
  it('the client gets the 400, and the record says 400, not a client that went away (499)', async () => {
    const echo = await startEcho();
    const gw = await startGateway(publicRoute(echo.url));
    try {
      const c = await silentClient(gw.url, 'POST /public/broken HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n');
      await new Promise((r) => setTimeout(r, 100)); // the request is forwarded, its body streaming
      c.socket.write('zz\r\nnot a chunk\r\n');
      await eventually(() => c.ended() || c.socket.destroyed, 5000);
      expect(c.received()).toMatch(/^HTTP\/1\.1 400 /);
      const rec = await eventually(() => gw.evidence().find((r) => r['path'] === '/public/broken'));
      expect(rec).toMatchObject({ decision: 'permit', upstream_status: 400 });
      expect(echo.requests.map((r) => r.url)).not.toContain('/public/broken');
    } finally {
      await gw.close();
      await echo.close();
    }
  });
});

describe('WebSocket upgrades the gateway refuses', () => {
  const ws = (method: string, host: string) =>
    `${method} /public/ws HTTP/1.1\r\n${host}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

  it('a refused upgrade (no Host, a bad target) closes its connection, even when the client keeps its end open', async () => {
    const echo = await startEcho();
    const gw = await startGateway(publicRoute(echo.url));
    try {
      const clients = await Promise.all([silentClient(gw.url, ws('GET', '')), silentClient(gw.url, ws('GET', 'Host: a\r\nHost: b\r\n')), silentClient(gw.url, ws('GET', 'Host: a\r\n').replace('/public/ws', '/public/%zz'))]);
      await eventually(() => clients.every((c) => c.ended()), 3000);
      for (const c of clients) expect(c.received()).toMatch(/^HTTP\/1\.1 400 [^]*request_malformed/);
    } finally {
      await gw.close();
      await echo.close();
    }
  });

  it("a 101 that is not the WebSocket handshake asked for (Upgrade: h2c, a wrong or missing Sec-WebSocket-Accept) is 502, and nothing the client sends after reaches the upstream (r14a 2)", async () => {
    const RIGHT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='; // RFC 6455 section 1.3's answer to the key ws() sends
    const seen: string[] = [];
    // An upstream that answers each upgrade as its path says, then keeps reading whatever comes.
    const upstream = createNetServer((socket) => {
      let got = '';
      socket.on('data', (d: Buffer) => {
        got += d.toString('latin1');
        seen.push(d.toString('latin1'));
        if (!got.includes('\r\n\r\n') || got.includes('HTTP/1.1 101')) return;
        const path = /^GET (\S+)/.exec(got)![1]!;
        const head =
          path === '/public/h2c' ? 'Upgrade: h2c\r\n' :
          path === '/public/wrong' ? 'Upgrade: websocket\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n' :
          path === '/public/none' ? 'Upgrade: websocket\r\n' :
          `Upgrade: websocket\r\nSec-WebSocket-Accept: ${RIGHT}\r\n`;
        got = 'HTTP/1.1 101';
        socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n${head}\r\n`);
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const gw = await startGateway(publicRoute(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}`));
    try {
      for (const path of ['/public/h2c', '/public/wrong', '/public/none']) {
        const c = await silentClient(gw.url, ws('GET', 'Host: a\r\n').replace('/public/ws', path));
        await eventually(() => expect(c.received()).toMatch(/^HTTP\/1\.1 502 /), 3000);
        if (!c.socket.destroyed) c.socket.write('GET /secret HTTP/1.1\r\nHost: a\r\n\r\n');
        await eventually(() => c.ended() || c.socket.destroyed, 3000);
        expect(c.received(), path).not.toMatch(/101/);
      }
      // The handshake as asked for opens the tunnel.
      const ok = await silentClient(gw.url, ws('GET', 'Host: a\r\n').replace('/public/ws', '/public/ok'));
      await eventually(() => expect(ok.received()).toMatch(/^HTTP\/1\.1 101 [^]*sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i), 3000);
      ok.socket.write('inside the tunnel');
      await eventually(() => expect(seen.join('')).toContain('inside the tunnel'), 3000);
      expect(seen.join('')).not.toContain('/secret');
      await eventually(() => expect(gw.evidence().map((r) => r['upstream_status'])).toEqual([502, 502, 502, 101]));
    } finally {
      await gw.close();
      await new Promise<void>((r) => upstream.close(() => r()));
    }
  });

  it('an upgrade without Sec-WebSocket-Key is refused: there is nothing to check the 101 against', async () => {
    const echo = await startEcho();
    const gw = await startGateway(publicRoute(echo.url));
    try {
      const c = await silentClient(gw.url, ws('GET', 'Host: a\r\n').replace('Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n', ''));
      await eventually(() => c.ended(), 3000);
      expect(c.received()).toMatch(/^HTTP\/1\.1 400 [^]*Sec-WebSocket-Key/);
    } finally {
      await gw.close();
      await echo.close();
    }
  });

  it('an upgrade by another method than GET is refused with a record, not dropped without a word', async () => {
    const echo = await startEcho();
    const gw = await startGateway(publicRoute(echo.url));
    try {
      const c = await silentClient(gw.url, ws('POST', 'Host: a\r\n'));
      await eventually(() => c.ended(), 3000);
      expect(c.received()).toMatch(/^HTTP\/1\.1 400 [^]*a WebSocket upgrade is a GET/);
      const id = /mission-decision: (\S+)/i.exec(c.received())?.[1];
      expect(await eventually(() => gw.evidence().find((r) => r['decision_id'] === id))).toMatchObject({ decision: 'deny', denial_reason: 'request_malformed', method: 'POST' });
    } finally {
      await gw.close();
      await echo.close();
    }
  });
});

// A pipelined request whose response waits in Node's queue behind another's, when the client drops
// the connection: its upstream request must end with it (Node gives a queued response no 'close').
describe('a pipelined request queued behind another when the client drops the connection', () => {
  it('has its upstream request aborted, a stream included (it would hold an upstream connection for good)', async () => {
    const closed: string[] = [];
    const echo = await startEcho((req, res) => {
      res.once('close', () => closed.push(req.url ?? ''));
      if (req.url === '/public/slow') setTimeout(() => res.end('slow'), 3000);
      else {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: first\n\n');
      }
    });
    const gw = await startGateway(publicRoute(echo.url));
    try {
      const u = new URL(gw.url);
      const socket = connect(Number(u.port), u.hostname);
      socket.on('error', () => undefined);
      await new Promise<void>((r) => socket.once('connect', () => r()));
      socket.write('GET /public/slow HTTP/1.1\r\nHost: a\r\n\r\nGET /public/stream HTTP/1.1\r\nHost: a\r\n\r\n');
      await eventually(() => expect(echo.requests.map((r) => r.url)).toEqual(['/public/slow', '/public/stream']));
      socket.destroy();
      await eventually(() => expect(closed.sort()).toEqual(['/public/slow', '/public/stream']), 2000);
    } finally {
      await gw.close();
      await echo.close();
    }
  });
});
