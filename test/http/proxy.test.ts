import { createHash } from 'node:crypto';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { eventually, startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';
import { openSocket, raw, rawSocket } from '../helpers/http.js';

const ISSUER = 'http://127.0.0.1:1'; // never contacted by these tests

function config(upstream: string, extra = ''): string {
  return `
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: ${upstream}, timeout_s: 2 }
trusted_proxies: [10.0.0.0/8]
issuers: [{ issuer: ${ISSUER} }]
routes:
  - match: { path: /public/** }
    auth: none
  - match: { method: GET, path: /invoices/* }
    action: invoices.read
${extra}`;
}

describe('SPEC §4/§5/§6: a transparent proxy on auth: none routes', () => {
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let gw: TestGateway;
  beforeAll(async () => {
    echo = await startEcho();
    gw = await startGateway(config(echo.url));
  });
  afterAll(async () => {
    await gw.close();
    await echo.close();
  });

  it('forwards an auth: none route with the normalized path and the raw query', async () => {
    const r = await raw(gw.url, { path: '/public/a/./b/../c?x=%2e%2e&y=1' });
    expect(r.status).toBe(200);
    expect(r.json()['url']).toBe('/public/a/c?x=%2e%2e&y=1');
  });

  it('keeps %2F encoded and decodes unreserved characters', async () => {
    const r = await raw(gw.url, { path: '/public/a%2fb/%7Euser' });
    expect(r.json()['url']).toBe('/public/a%2Fb/~user');
  });

  for (const escape of ['/public/../admin', '/public/%2e%2e/admin', '/public/%2E%2E/admin', '/public/.%2e/admin', '//public/../admin']) {
    it(`denies the escape ${escape} with no_route and never reaches the upstream`, async () => {
      const before = echo.requests.length;
      const r = await raw(gw.url, { path: escape });
      expect(r.status).toBe(403);
      expect(r.json()).toMatchObject({ error: 'forbidden', denial_reason: 'no_route' });
      expect(r.headers['mission-decision']).toBe(r.json()['decision_id']);
      expect(echo.requests.length).toBe(before);
    });
  }

  it('answers 400 request_malformed for matrix dot segments and bad escapes', async () => {
    for (const path of ['/public/..;/admin', '/public/%zz', '/public/a%00']) {
      const r = await raw(gw.url, { path });
      expect(r.status).toBe(400);
      expect(r.json()).toMatchObject({ error: 'invalid_request', denial_reason: 'request_malformed' });
    }
  });

  it('denies an unmatched request 403 no_route with the SPEC §5 body and header', async () => {
    const r = await raw(gw.url, { path: '/nothing-here', method: 'DELETE' });
    expect(r.status).toBe(403);
    const body = r.json();
    expect(Object.keys(body).sort()).toEqual(['decision_id', 'denial_reason', 'error', 'error_description']);
    expect(body['decision_id']).toMatch(/^dec_/);
    expect(r.headers['mission-decision']).toBe(body['decision_id']);
    expect(r.headers['content-type']).toBe('application/json');
  });

  it('denies a route that needs auth 401 token_missing with the DPoP challenge', async () => {
    const r = await raw(gw.url, { path: '/invoices/1' });
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({ error: 'unauthorized', denial_reason: 'token_missing' });
    const challenge = String(r.headers['www-authenticate']);
    expect(challenge).toMatch(/^DPoP algs="[^"]+", resource_metadata="https:\/\/api\.example\.com\/\.well-known\/oauth-protected-resource"$/);
    expect(challenge).not.toContain('error=');
  });

  it('RFC 9110 §7.6.1: removes hop-by-hop headers, including those named in Connection', async () => {
    const r = await raw(gw.url, {
      path: '/public/h',
      headers: { connection: 'keep-alive, X-Secret-Hop', 'x-secret-hop': '1', 'keep-alive': 'timeout=5', te: 'gzip', 'proxy-authorization': 'Basic x', 'x-kept': 'yes' },
    });
    const h = r.json()['headers'] as Record<string, string>;
    expect(h['x-secret-hop']).toBeUndefined();
    expect(h['keep-alive']).toBeUndefined();
    expect(h['te']).toBeUndefined();
    expect(h['proxy-authorization']).toBeUndefined();
    expect(h['x-kept']).toBe('yes');
  });

  it('SPEC §6: drops client copies of gateway-set headers whatever their case, and replaces X-Forwarded-*', async () => {
    const r = await raw(gw.url, {
      path: '/public/spoof',
      headers: { 'X-Mission-Id': 'msn_spoofed', 'x-MISSION-subject': 'admin', 'Mission-Decision': 'dec_fake', 'X-Forwarded-For': '6.6.6.6', 'X-Forwarded-Host': 'evil.example', 'X-Forwarded-Proto': 'http', host: 'api.example.com' },
    });
    const h = r.json()['headers'] as Record<string, string>;
    expect(h['x-mission-id']).toBeUndefined();
    expect(h['x-mission-subject']).toBeUndefined();
    expect(h['mission-decision']).toMatch(/^dec_/);
    expect(h['mission-decision']).not.toBe('dec_fake');
    expect(h['x-forwarded-for']).toBe('127.0.0.1');
    expect(h['x-forwarded-proto']).toBe('https');
    expect(h['x-forwarded-host']).toBe('api.example.com');
  });

  it('RFC 9110 §7.6.3: the upstream sees the gateway in Via, after the client\'s entries', async () => {
    const direct = (await raw(gw.url, { path: '/public/via' })).json()['headers'] as Record<string, string>;
    expect(direct['via']).toBe('1.1 mission-gateway');
    const behind = (await raw(gw.url, { path: '/public/via', headers: { via: '1.1 edge-cdn' } })).json()['headers'] as Record<string, string>;
    expect(behind['via']).toBe('1.1 edge-cdn, 1.1 mission-gateway');
  });

  it('SPEC §6: strips credentials and Mission references on auth: none routes too (a bound token and its proof never reach the upstream)', async () => {
    const r = await raw(gw.url, {
      path: '/public/auth',
      headers: { authorization: 'DPoP eyJhbGciOiJFUzI1NiJ9.e30.sig', dpop: 'eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.sig', 'aauth-mission': 'approver="https://as.example"; s256="abc"', 'mission-reference': 'id="msn_1", issuer="https://as.example"', 'x-kept': 'yes' },
    });
    const h = r.json()['headers'] as Record<string, string>;
    expect(r.status).toBe(200);
    for (const name of ['authorization', 'dpop', 'aauth-mission', 'mission-reference']) expect(h[name]).toBeUndefined();
    expect(h['x-kept']).toBe('yes');
  });

  it("SPEC §6: a client's other X-Forwarded-* and X-Real-IP never reach the upstream (only a trusted proxy's do)", async () => {
    const r = await raw(gw.url, {
      path: '/public/fwd',
      headers: { 'X-Forwarded-Port': '1', 'x-forwarded-prefix': '/admin', 'X-Forwarded-Ssl': 'on', 'X-Real-IP': '6.6.6.6', 'X-Forwardedness': 'kept' },
    });
    const h = r.json()['headers'] as Record<string, string>;
    for (const name of ['x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-ssl', 'x-real-ip']) expect(h[name]).toBeUndefined();
    expect(h['x-forwardedness']).toBe('kept');
    expect(h['x-forwarded-for']).toBe('127.0.0.1');
  });

  it("a client's X-Mission-* of any name, X-Original-URL and X-Rewrite-URL never reach the upstream, in any spelling (r19d 5)", async () => {
    const r = await raw(gw.url, {
      path: '/public/names',
      headers: { 'X-Mission-Tenant': 'acme', 'x-mission-scope': 'admin', 'X-Original-URL': '/admin/users/delete', 'X-Rewrite-URL': '/admin', X_Original_URL: '/admin', X_Mission_Role: 'root', 'X-Missionary': 'kept', 'X-Original-Host-Name': 'kept', 'X-HTTP-Method-Override': 'DELETE', 'X-HTTP-Method': 'PUT', 'X-Method-Override': 'PATCH', X_HTTP_Method_Override: 'DELETE' },
    });
    const h = r.json()['headers'] as Record<string, string>;
    expect(r.status).toBe(200);
    for (const name of ['x-mission-tenant', 'x-mission-scope', 'x-original-url', 'x-rewrite-url', 'x_original_url', 'x_mission_role', 'x-http-method-override', 'x-http-method', 'x-method-override', 'x_http_method_override']) expect(h[name]).toBeUndefined();
    expect(h['x-missionary']).toBe('kept');
    expect(h['x-original-host-name']).toBe('kept');
  });

  it('a query naming _method or X-HTTP-Method-Override, in any spelling a framework reads as it, is refused 400 request_malformed before routing (r19e 5, r20a 2)', async () => {
    for (const q of ['_method=DELETE', 'a=1&_method=PUT', '_METHOD=DELETE', '.method=DELETE', '%20_method=DELETE', '_method[]=DELETE', '_m%65thod=DELETE', '_method%00x=DELETE', '+_method=PATCH', 'X-HTTP-Method-Override=DELETE', 'x-http-method-override=DELETE', 'X_HTTP_Method_Override=PUT', 'x-http-method=DELETE', 'X-Method-Override=PATCH']) {
      const r = await raw(gw.url, { method: 'POST', path: `/public/x?${q}`, body: '{}', headers: { 'content-type': 'application/json' } });
      expect(r.status, q).toBe(400);
      expect(r.json(), q).toMatchObject({ error: 'invalid_request', denial_reason: 'request_malformed' });
    }
    for (const q of ['method=GET', 'http_method=x', 'methods=1', 'q=%2F_method', '__method=1', 'x=_method', 'x-http-method-overrides=1']) {
      const r = await raw(gw.url, { method: 'POST', path: `/public/x?${q}`, body: '{}', headers: { 'content-type': 'application/json' } });
      expect(r.status, q).toBe(200);
    }
  });

  it('SPEC §6: underscore spellings of identity, forwarding and credential headers are dropped (CGI, WSGI, PHP and Rack read X_Mission_Id as X-Mission-Id)', async () => {
    const r = await raw(gw.url, {
      path: '/public/underscores',
      headers: {
        X_Mission_Id: 'msn_spoof',
        X_Mission_Subject: 'root',
        Mission_Decision: 'dec_spoof',
        X_Forwarded_For: '6.6.6.6',
        'X-Forwarded_Host': 'evil.example',
        X_Real_IP: '6.6.6.6',
        Mission_Reference: 'id="msn_1", issuer="https://as.example"',
        X_Custom_Header: 'kept',
      },
    });
    const h = r.json()['headers'] as Record<string, string>;
    for (const name of ['x_mission_id', 'x_mission_subject', 'mission_decision', 'x_forwarded_for', 'x-forwarded_host', 'x_real_ip', 'mission_reference']) expect(h[name], name).toBeUndefined();
    expect(h['x_custom_header']).toBe('kept');
    expect(h['x-forwarded-for']).toBe('127.0.0.1');
    expect(h['mission-decision']).toMatch(/^dec_/);
  });

  it('Expect: 100-continue: the client gets 100 Continue from the gateway, the upstream gets the body without Expect', async () => {
    const out = await rawSocket(gw.url, 'POST /public/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhello');
    expect(out).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
    const echoed = JSON.parse(out.slice(out.indexOf('\r\n\r\n{') + 4)) as { headers: Record<string, string>; bytes: number };
    expect(echoed.headers['expect']).toBeUndefined();
    expect(echoed.bytes).toBe(5);
  });

  it('refuses a request smuggling attempt (Content-Length with Transfer-Encoding) with 400', async () => {
    const out = await rawSocket(gw.url, 'POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1\.1 400/);
    expect(out).not.toMatch(/200 OK/);
  });

  it('answers 431 to oversized headers', async () => {
    const out = await rawSocket(gw.url, `GET /public/x HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(40_000)}\r\n\r\n`);
    expect(out).toMatch(/^HTTP\/1\.1 431/);
  });
});

describe('SPEC §6: trusted proxies', () => {
  it('appends the client address to X-Forwarded-For only for a trusted proxy', async () => {
    const echo = await startEcho();
    const gw = await startGateway(config(echo.url).replace('trusted_proxies: [10.0.0.0/8]', 'trusted_proxies: [127.0.0.1]'));
    try {
      const r = await raw(gw.url, { path: '/public/x', headers: { 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'shop.example', 'x-forwarded-port': '443', 'x-real-ip': '203.0.113.7' } });
      const h = r.json()['headers'] as Record<string, string>;
      expect(h['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
      expect(h['x-forwarded-host']).toBe('shop.example');
      // The trusted proxy's other forwarding headers are its word, kept as sent.
      expect(h['x-forwarded-port']).toBe('443');
      expect(h['x-real-ip']).toBe('203.0.113.7');
    } finally {
      await gw.close();
      await echo.close();
    }
  });
});

describe('streaming both ways without buffering', () => {
  it('streams a 50 MB upload and a 50 MB download byte-identical', async () => {
    const size = 50 * 1024 * 1024;
    const echo = await startEcho((req, res, body) => {
      if (req.method === 'POST') {
        res.end(createHash('sha256').update(body).digest('hex'));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
      const chunk = Buffer.alloc(1024 * 1024, 7);
      let sent = 0;
      const pump = (): void => {
        while (sent < size) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    const gw = await startGateway(config(echo.url));
    try {
      const upload = Buffer.alloc(size, 3);
      const up = await request(`${gw.url}/public/upload`, { method: 'POST', body: upload });
      expect(await up.body.text()).toBe(createHash('sha256').update(upload).digest('hex'));
      const down = await request(`${gw.url}/public/download`);
      const hash = createHash('sha256');
      let n = 0;
      for await (const c of down.body) {
        n += (c as Buffer).length;
        hash.update(c as Buffer);
      }
      expect(n).toBe(size);
      expect(hash.digest('hex')).toBe(createHash('sha256').update(Buffer.alloc(size, 7)).digest('hex'));
    } finally {
      await gw.close();
      await echo.close();
    }
  }, 60_000);

  it('delivers an SSE stream of 100 events over 10 s event by event, with no timeout cutting it', async () => {
    const echo = await startEcho((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      let i = 0;
      const t = setInterval(() => {
        res.write(`id: ${i}\ndata: {"n":${i}}\n\n`);
        if (++i === 100) {
          clearInterval(t);
          res.end();
        }
      }, 100);
    });
    // upstream.timeout_s of 1 s bounds only the wait for headers, never the stream.
    const gw = await startGateway(config(echo.url).replace('timeout_s: 2', 'timeout_s: 1'));
    try {
      const res = await request(`${gw.url}/public/events`);
      expect(res.headers['content-type']).toBe('text/event-stream');
      const arrivals: number[] = [];
      let buf = '';
      const start = Date.now();
      for await (const c of res.body) {
        buf += (c as Buffer).toString();
        let idx: number;
        while ((idx = buf.indexOf('\n\n')) !== -1) {
          buf = buf.slice(idx + 2);
          arrivals.push(Date.now() - start);
        }
      }
      expect(arrivals.length).toBe(100);
      // Flowing, not buffered: the first event arrives long before the last.
      expect(arrivals[0]!).toBeLessThan(3000);
      expect(arrivals[99]! - arrivals[0]!).toBeGreaterThan(8000);
    } finally {
      await gw.close();
      await echo.close();
    }
  }, 30_000);
});

describe('upstream failures (SPEC §5, after a permit)', () => {
  it('answers 502 bad_gateway when the upstream is down, with a permit record', async () => {
    const gw = await startGateway(config('http://127.0.0.1:9'));
    try {
      const r = await raw(gw.url, { path: '/public/x' });
      expect(r.status).toBe(502);
      expect(r.json()).toMatchObject({ error: 'bad_gateway', denial_reason: null });
      expect(r.headers['mission-decision']).toBe(r.json()['decision_id']);
    } finally {
      await gw.close();
    }
  });

  it('answers 504 gateway_timeout when the upstream sends no headers within upstream.timeout_s', async () => {
    const echo = await startEcho(() => {
      /* never answers */
    });
    const gw = await startGateway(config(echo.url).replace('timeout_s: 2', 'timeout_s: 0.3'));
    try {
      const r = await raw(gw.url, { path: '/public/slow' });
      expect(r.status).toBe(504);
      expect(r.json()).toMatchObject({ error: 'gateway_timeout', denial_reason: null });
    } finally {
      await gw.close();
      await echo.close();
    }
  });

  it('answers 504 when the upstream sends 1xx responses and never a final one (each 1xx restarts undici\'s timer)', async () => {
    const echo = await startEcho((_req, res) => {
      const t = setInterval(() => res.writeProcessing(), 100);
      res.on('close', () => clearInterval(t));
    });
    const gw = await startGateway(config(echo.url).replace('timeout_s: 2', 'timeout_s: 0.5'));
    try {
      const started = Date.now();
      const r = await raw(gw.url, { path: '/public/processing' });
      expect(r.status).toBe(504);
      expect(r.json()).toMatchObject({ error: 'gateway_timeout', denial_reason: null });
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      await gw.close();
      await echo.close();
    }
  });

  it('a 204 with a body (or a Content-Length) reaches the client as a plain 204; a status past 599 is a 502', async () => {
    const { createServer } = await import('node:net');
    let answer = '';
    const up = createServer((sock) => sock.on('data', () => sock.write(answer)));
    await new Promise<void>((r) => up.listen(0, '127.0.0.1', () => r()));
    const gw = await startGateway(config(`http://127.0.0.1:${(up.address() as { port: number }).port}`));
    try {
      answer = 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-Kept: 1\r\n\r\nhello';
      const r = await raw(gw.url, { path: '/public/nc' });
      expect(r.status).toBe(204);
      expect(r.headers['x-kept']).toBe('1');
      expect(r.headers['content-length']).toBeUndefined();
      answer = 'HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\nok';
      const w = await raw(gw.url, { path: '/public/weird' });
      expect(w.status).toBe(502);
      expect(w.json()).toMatchObject({ error: 'bad_gateway', denial_reason: null });
      // gzip under the chunks: relayed, the client would read gzip bytes with nothing saying so.
      // (The bytes need not be gzip: the gateway never decodes them. ASCII, as the socket writes UTF-8.)
      answer = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n7\r\n{"a":1}\r\n0\r\n\r\n';
      const coded = await raw(gw.url, { path: '/public/coded' });
      expect([coded.status, coded.json()]).toEqual([502, expect.objectContaining({ error: 'bad_gateway', denial_reason: null })]);
      answer = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n';
      const plain = await raw(gw.url, { path: '/public/chunked' });
      expect([plain.status, plain.body.toString()]).toEqual([200, 'ok']);
      // Values undici does not read as chunked: its framing would reach the client as the body.
      for (const te of ['chunked,', '\tchunked\t']) {
        answer = `HTTP/1.1 200 OK\r\nTransfer-Encoding: ${te}\r\n\r\n2\r\nok\r\n0\r\n\r\n`;
        expect((await raw(gw.url, { path: '/public/odd' })).status).toBe(502);
      }
      // HEAD has no body for a coding to be on: the field is allowed (RFC 9112 section 6.1).
      answer = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nX-Kept: 1\r\n\r\n';
      const head = await raw(gw.url, { method: 'HEAD', path: '/public/head' });
      expect([head.status, head.headers['x-kept']]).toEqual([200, '1']);
    } finally {
      await gw.close();
      await new Promise<void>((r) => up.close(() => r()));
    }
  });

  it('aborts the upstream request when the client disconnects', async () => {
    let upstreamClosed = false;
    const echo = await startEcho((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first');
      res.on('close', () => {
        upstreamClosed = true;
      });
    });
    const gw = await startGateway(config(echo.url));
    try {
      const ac = new AbortController();
      const res = await request(`${gw.url}/public/long`, { signal: ac.signal });
      for await (const _ of res.body) break;
      ac.abort();
      const deadline = Date.now() + 3000;
      while (!upstreamClosed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(upstreamClosed).toBe(true);
    } finally {
      await gw.close();
      await echo.close();
    }
  });
  it('a client that goes away before the upstream answers is recorded as 499, not as an upstream failure (502)', async () => {
    let arrived = 0;
    let upstreamClosed = false;
    const echo = await startEcho((_req, res) => {
      arrived++;
      res.on('close', () => {
        upstreamClosed = true;
      }); // never answers
    });
    const gw = await startGateway(config(echo.url));
    try {
      const ac = new AbortController();
      const pending = request(`${gw.url}/public/slow`, { signal: ac.signal }).catch(() => null);
      await eventually(() => arrived === 1 || undefined);
      ac.abort();
      await pending;
      const rec = await eventually(() => gw.evidence().find((r) => r['path'] === '/public/slow'));
      expect(rec).toMatchObject({ decision: 'permit', upstream_status: 499 });
      await eventually(() => upstreamClosed || undefined);
    } finally {
      await gw.close();
      await echo.close();
    }
  });
});

describe('limits that protect the process', () => {
  it('closes a connection whose request head trickles in past limits.headers_timeout_s (slowloris)', async () => {
    const echo = await startEcho();
    const gw = await startGateway(config(echo.url) + '\nlimits: { headers_timeout_s: 1, request_timeout_s: 2 }\n');
    try {
      const started = Date.now();
      const s = await openSocket(gw.url);
      const out = await new Promise<string>((resolve) => {
        let got = '';
        s.write('GET /public/a HTTP/1.1\r\nHost: a\r\n');
        const drip = setInterval(() => s.writable && s.write('X-Slow: 1\r\n'), 300);
        s.on('data', (c: Buffer) => (got += c.toString()));
        s.on('close', () => {
          clearInterval(drip);
          resolve(got);
        });
        s.on('error', () => undefined);
      });
      expect(Date.now() - started).toBeLessThan(5000);
      expect(out === '' || /^HTTP\/1\.1 408/.test(out)).toBe(true);
      expect(echo.requests.length).toBe(0);
    } finally {
      await gw.close();
      await echo.close();
    }
  });

  it('closes a request whose body trickles in past limits.request_timeout_s', async () => {
    const echo = await startEcho();
    const gw = await startGateway(config(echo.url) + '\nlimits: { headers_timeout_s: 1, request_timeout_s: 2 }\n');
    try {
      const started = Date.now();
      const s = await openSocket(gw.url);
      await new Promise<void>((resolve) => {
        s.write('POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n');
        const drip = setInterval(() => s.writable && s.write('x'), 200);
        s.on('close', () => {
          clearInterval(drip);
          resolve();
        });
        s.on('error', () => undefined);
        s.resume();
      });
      expect(Date.now() - started).toBeLessThan(8000);
    } finally {
      await gw.close();
      await echo.close();
    }
  });

  it('bounds concurrent upstream connections (upstream.connections)', async () => {
    let open = 0;
    let peak = 0;
    const echo = await startEcho((_req, res) => {
      open++;
      peak = Math.max(peak, open);
      setTimeout(() => {
        open--;
        res.end('ok');
      }, 100);
    });
    const gw = await startGateway(config(echo.url).replace('timeout_s: 2', 'timeout_s: 5, connections: 2'));
    try {
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => raw(gw.url, { path: `/public/c${i}` })));
      expect(results.every((r) => r.status === 200)).toBe(true);
      expect(peak).toBeLessThanOrEqual(2);
    } finally {
      await gw.close();
      await echo.close();
    }
  });
});

describe("the upstream's status line", () => {
  it('relays a non-standard reason phrase as is, and a standard one as Node writes it', async () => {
    const echo = await startEcho((req, res) => {
      if (req.url === '/public/custom') res.writeHead(200, 'All Good', { 'content-length': '0' });
      else if (req.url === '/public/unknown') res.writeHead(299, 'Odd But Fine', { 'content-length': '0' });
      else res.writeHead(404, { 'content-length': '0' });
      res.end();
    });
    const gw = await startGateway(config(echo.url));
    try {
      const statusLine = async (path: string): Promise<string> =>
        (await rawSocket(gw.url, `GET ${path} HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n`)).split('\r\n')[0]!;
      expect(await statusLine('/public/custom')).toBe('HTTP/1.1 200 All Good');
      expect(await statusLine('/public/unknown')).toBe('HTTP/1.1 299 Odd But Fine');
      expect(await statusLine('/public/standard')).toBe('HTTP/1.1 404 Not Found');
    } finally {
      await gw.close();
      await echo.close();
    }
  });
});

describe("the upstream's status line, from an upstream that writes bytes Node would not", () => {
  it('a control byte in the reason phrase: the standard phrase goes out, and the client gets the status the record keeps (r14a 3)', async () => {
    const upstream = createNetServer((socket) => {
      socket.once('data', (d: Buffer) => {
        const phrase = d.toString('latin1').startsWith('GET /public/del') ? 'O\x7fK' : 'Not\x01Found';
        const status = phrase === 'O\x7fK' ? 200 : 404;
        socket.end(`HTTP/1.1 ${status} ${phrase}\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello`, 'latin1');
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const gw = await startGateway(config(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}`));
    try {
      const del = await rawSocket(gw.url, 'GET /public/del HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n');
      expect(del).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nhello$/);
      const soh = await rawSocket(gw.url, 'GET /public/soh HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n');
      expect(soh).toMatch(/^HTTP\/1\.1 404 Not Found\r\n[^]*hello$/);
      await eventually(() => expect(gw.evidence().map((r) => r['upstream_status'])).toEqual([200, 404]));
    } finally {
      await gw.close();
      await new Promise<void>((r) => upstream.close(() => r()));
    }
  });
});

describe('a body on a GET (or HEAD, DELETE, OPTIONS, TRACE) cannot become a request of its own at the upstream (r14a 1)', () => {
  it("reaches an upstream that never reads it (a CL.0 server, as python's http.server on a GET) on a connection that closes after it", async () => {
    // Reads each request's head, never its body, and takes what follows as the next request, as
    // long as the connection stays open (it honours Connection: close).
    const lines: string[] = [];
    const sockets = new Set<object>();
    const upstream = createNetServer((socket) => {
      sockets.add(socket);
      let buf = '';
      let closing = false;
      socket.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        for (let end = buf.indexOf('\r\n\r\n'); end !== -1 && !closing; end = buf.indexOf('\r\n\r\n')) {
          const head = buf.slice(0, end);
          buf = buf.slice(end + 4);
          lines.push(head.split('\r\n')[0]!);
          const close = /\r\nconnection: close/i.test(head);
          socket.write(`HTTP/1.1 200 OK\r\ncontent-length: 2\r\n${close ? 'connection: close\r\n' : ''}\r\nok`);
          if (close) {
            closing = true;
            socket.end();
          }
        }
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const gw = await startGateway(config(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}`));
    try {
      const hidden = 'GET /invoices/secret HTTP/1.1\r\nHost: api.example.com\r\n\r\n';
      for (const method of ['GET', 'DELETE', 'OPTIONS']) {
        const out = await rawSocket(gw.url, `${method} /public/x HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: ${hidden.length}\r\nConnection: close\r\n\r\n${hidden}`);
        expect(out).toMatch(/^HTTP\/1\.1 200/);
      }
      // A request without a body keeps the pooled connection.
      for (let i = 0; i < 3; i++) expect((await raw(gw.url, { path: '/public/plain' })).status).toBe(200);
      await eventually(() => expect(lines.filter((l) => l.includes('/public/plain'))).toHaveLength(3));
      expect(lines.filter((l) => l.includes('/invoices/secret'))).toEqual([]);
      expect(sockets.size).toBe(4); // one per bodied request, closed after it; one kept for the rest
    } finally {
      await gw.close();
      await new Promise<void>((r) => upstream.close(() => r()));
    }
  });
});

describe('request bodies: a small declared body is read before forwarding, a large one streams', () => {
  it('forwards a 1 KiB body only once it is complete, byte-identical, with its Content-Length', async () => {
    const echo = await startEcho();
    let arrived = 0; // requests whose head reached the upstream
    echo.server.prependListener('request', () => arrived++);
    const gw = await startGateway(config(echo.url));
    const body = Buffer.alloc(1024, 'a');
    try {
      const socket = await openSocket(gw.url);
      const response = new Promise<string>((resolve) => {
        let text = '';
        socket.on('data', (c: Buffer) => {
          text += c.toString('latin1');
          if (text.includes('"bytes"')) resolve(text);
        });
      });
      socket.write(`POST /public/upload HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`);
      socket.write(body.subarray(0, 512));
      await new Promise((r) => setTimeout(r, 300));
      expect(arrived).toBe(0); // half the body: nothing sent upstream yet
      socket.write(body.subarray(512));
      expect(await response).toContain('"bytes":1024');
      socket.destroy();
      expect(echo.requests).toHaveLength(1);
      expect(echo.requests[0]!.body.equals(body)).toBe(true);
      expect(echo.requests[0]!.headers['content-length']).toBe('1024');
    } finally {
      await gw.close();
      await echo.close();
    }
  });

  it('streams a body declared larger than 64 KiB: the upstream starts receiving it before the client has sent it all', async () => {
    let firstChunkAt = 0;
    const echo = await startEcho();
    echo.server.prependListener('request', (req: import('node:http').IncomingMessage) => {
      req.once('data', () => (firstChunkAt = Date.now()));
    });
    const gw = await startGateway(config(echo.url));
    try {
      const socket = await openSocket(gw.url);
      const size = 256 * 1024;
      socket.write(`POST /public/upload HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`);
      socket.write(Buffer.alloc(size / 2, 'b'));
      // The first half reaches the upstream while the second is not yet sent.
      await eventually(() => firstChunkAt > 0, 5000);
      const sentRestAt = Date.now();
      socket.end(Buffer.alloc(size / 2, 'b'));
      await new Promise((r) => socket.once('close', r));
      expect(firstChunkAt).toBeLessThan(sentRestAt);
      expect(echo.requests[0]!.body.length).toBe(size);
    } finally {
      await gw.close();
      await echo.close();
    }
  });
});
