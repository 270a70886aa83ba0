/**
 * `cors`: browser clients of the gateway (r20c 1). Preflights from an allowed origin are answered by
 * the gateway on any path (the MCP endpoint included), and every answer, the gateway's own denials
 * and documents as well as the upstream's, carries the origin and the fields a client must read.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';

const APP = 'https://app.example';
let echo: Awaited<ReturnType<typeof startEcho>>;
let gw: TestGateway;

beforeAll(async () => {
  echo = await startEcho((req, res) => {
    // An upstream with CORS of its own, for every origin, and two cookies.
    res.writeHead(200, [
      'Access-Control-Allow-Origin', '*',
      'Access-Control-Allow-Credentials', 'true',
      'Vary', 'Accept-Encoding',
      'Set-Cookie', 'a=1',
      'Set-Cookie', 'b=2',
      'Content-Type', 'text/plain',
    ]);
    res.end(`upstream ${req.method}`);
  });
  gw = await startGateway(`
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: ${echo.url} }
issuers: [{ issuer: https://as.example.com }]
cors: { allowed_origins: [${APP}, "http://localhost:5173"], expose_headers: [X-Request-Id] }
routes:
  - match: { path: /public/** }
    auth: none
  - match: { method: GET, path: /invoices/* }
    action: invoices.read
mcp: { path: /mcp, resource: https://api.example.com/mcp }
`);
});

afterAll(async () => {
  await gw?.close();
  await echo?.close();
});

describe('cors', () => {
  it('a preflight from an allowed origin is answered 204 on any path, the MCP endpoint included, with no decision record and nothing sent upstream', async () => {
    const before = echo.requests.length;
    const recorded = gw.evidence().filter((e) => e['method'] === 'OPTIONS').length;
    for (const path of ['/mcp', '/invoices/1', '/nowhere']) {
      const r = await raw(gw.url, { method: 'OPTIONS', path, headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, dpop, content-type, mcp-protocol-version' } });
      expect(r.status, path).toBe(204);
      expect(r.headers['access-control-allow-origin']).toBe(APP);
      expect(r.headers['access-control-allow-methods']).toContain('POST');
      expect(r.headers['access-control-allow-headers']).toBe('authorization, dpop, content-type, mcp-protocol-version');
      expect(r.headers['access-control-max-age']).toBe('600');
      expect(r.headers['vary']).toContain('Origin');
      expect(r.headers['access-control-allow-credentials']).toBeUndefined();
    }
    expect(echo.requests.length).toBe(before);
    expect(gw.evidence().filter((e) => e['method'] === 'OPTIONS')).toHaveLength(recorded);
  });

  it("the gateway's own answers are readable by the page: a 401 challenge and the protected-resource metadata", async () => {
    const denied = await raw(gw.url, { path: '/invoices/1', headers: { origin: APP } });
    expect(denied.status).toBe(401);
    expect(denied.headers['access-control-allow-origin']).toBe(APP);
    expect(denied.headers['access-control-expose-headers']).toBe('WWW-Authenticate, DPoP-Nonce, Mission-Decision, Retry-After, Mcp-Session-Id, X-Request-Id');
    expect(denied.headers['www-authenticate']).toMatch(/^DPoP /);
    const prm = await raw(gw.url, { path: '/.well-known/oauth-protected-resource', headers: { origin: 'http://localhost:5173' } });
    expect(prm.status).toBe(200);
    expect(prm.headers['access-control-allow-origin']).toBe('http://localhost:5173');
  });

  it("the upstream's answer carries the gateway's CORS fields, not its own; its other fields (two cookies, Vary) are kept", async () => {
    const r = await raw(gw.url, { path: '/public/x', headers: { origin: APP } });
    expect(r.status).toBe(200);
    expect(r.headers['access-control-allow-origin']).toBe(APP);
    expect(r.headers['access-control-allow-credentials']).toBeUndefined();
    expect(r.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect(r.headers['vary']).toBe('Accept-Encoding, Origin');
  });

  it('another origin gets no CORS fields, the upstream\'s included, and its preflight is decided as any request', async () => {
    const r = await raw(gw.url, { path: '/public/x', headers: { origin: 'https://evil.example' } });
    expect(r.status).toBe(200);
    expect(r.headers['access-control-allow-origin']).toBeUndefined();
    expect(r.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    const pre = await raw(gw.url, { method: 'OPTIONS', path: '/invoices/1', headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' } });
    expect(pre.status).toBe(403); // no route takes OPTIONS there
    expect(pre.json()).toMatchObject({ denial_reason: 'no_route' });
    expect(pre.headers['access-control-allow-origin']).toBeUndefined();
  });

  it("an answer to a request without Origin has no upstream CORS fields either, and varies on Origin, so no cache serves it to a page (r21a 1)", async () => {
    const plain = await raw(gw.url, { path: '/public/x' });
    expect(plain.status).toBe(200);
    expect(plain.headers['access-control-allow-origin']).toBeUndefined();
    expect(plain.headers['access-control-allow-credentials']).toBeUndefined();
    expect(plain.headers['vary']).toBe('Accept-Encoding, Origin');
    const prm = await raw(gw.url, { path: '/.well-known/oauth-protected-resource' });
    expect(prm.status).toBe(200);
    expect(prm.headers['vary']).toBe('Origin');
    expect(prm.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('origins are compared exactly: a longer host, another port or scheme, a prefix of the allowed one get nothing (r21b 6)', async () => {
    for (const origin of ['https://app.example.evil.com', 'https://app.examplex', 'https://app.example:8443', 'http://app.example', 'https://app.exampl', 'HTTPS://APP.EXAMPLE']) {
      const r = await raw(gw.url, { path: '/public/x', headers: { origin } });
      expect(r.headers['access-control-allow-origin'], origin).toBeUndefined();
      const pre = await raw(gw.url, { method: 'OPTIONS', path: '/public/x', headers: { origin, 'access-control-request-method': 'GET' } });
      expect(pre.headers['access-control-allow-origin'], origin).toBeUndefined();
    }
  });

  it('an OPTIONS that is not a preflight (no Access-Control-Request-Method) from an allowed origin goes to the upstream (r21b 7)', async () => {
    const before = echo.requests.length;
    const r = await raw(gw.url, { method: 'OPTIONS', path: '/public/x', headers: { origin: APP } });
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('upstream OPTIONS');
    expect(r.headers['access-control-allow-origin']).toBe(APP);
    expect(echo.requests.length).toBe(before + 1);
  });

  it('a preflight naming headers in a form not worth echoing gets the default list', async () => {
    const r = await raw(gw.url, { method: 'OPTIONS', path: '/mcp', headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-a;b' } });
    expect(r.status).toBe(204);
    expect(r.headers['access-control-allow-headers']).toContain('Authorization, DPoP');
  });
});

describe('cors: allowed_origins [*]', () => {
  it('allows any origin but null (sandboxed frames, file: pages: any page can produce it) (r21b 6)', async () => {
    const any = await startGateway(`
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: ${echo.url} }
cors: { allowed_origins: ["*"] }
routes: [{ match: { path: /public/** }, auth: none }]
`);
    try {
      expect((await raw(any.url, { path: '/public/x', headers: { origin: 'https://anything.example' } })).headers['access-control-allow-origin']).toBe('https://anything.example');
      expect((await raw(any.url, { path: '/public/x', headers: { origin: 'null' } })).headers['access-control-allow-origin']).toBeUndefined();
      const pre = await raw(any.url, { method: 'OPTIONS', path: '/public/x', headers: { origin: 'null', 'access-control-request-method': 'GET' } });
      expect(pre.status).not.toBe(204);
    } finally {
      await any.close();
    }
  });
});

describe('cors config', () => {
  it('allowed_origins are origins as browsers send them, or *; at least one', async () => {
    const { parseConfigText } = await import('../../src/config/load.js');
    const base = 'public_base_url: https://api.example.com\nresource: https://api.example.com\nupstream: { url: "http://127.0.0.1:3000" }\n';
    for (const bad of ['https://app.example/', 'https://App.example', 'https://app.example:443', 'app.example', 'https://app.example/path', 'null', 'ftp://app.example']) {
      expect(() => parseConfigText(`${base}cors: { allowed_origins: ["${bad}"] }\n`, process.cwd()), bad).toThrow(/cors\.allowed_origins\[0\]: must be `\*` or an origin/);
    }
    expect(() => parseConfigText(`${base}cors: { allowed_origins: [] }\n`, process.cwd())).toThrow(/cors\.allowed_origins/);
    // A pattern the URL parser accepts as a host (r21a 3): it would match nothing.
    expect(() => parseConfigText(`${base}cors: { allowed_origins: ["https://*.app.example"] }\n`, process.cwd())).toThrow(/cors\.allowed_origins\[0\]: patterns are not supported/);
    for (const good of ['*', 'https://app.example', 'http://localhost:5173', 'https://[::1]:8443']) {
      expect(parseConfigText(`${base}cors: { allowed_origins: ["${good}"] }\n`, process.cwd()).cors?.allowed_origins).toEqual([good]);
    }
  });
});
