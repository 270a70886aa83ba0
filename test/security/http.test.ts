/**
 * Attacks on the HTTP layer: smuggling, header tricks, path normalization bypasses of route rules,
 * spoofed identity headers. Routes: /public/** open, /admin/** needs an action the agent lacks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawSocket } from '../helpers/http.js';
import { API, startTarget, type Target } from './fixture.js';

let t: Target;
beforeAll(async () => {
  t = await startTarget();
});
afterAll(() => t.close());

const smuggled = (): boolean => t.echo.requests.some((r) => r.url.startsWith('/admin'));

describe('request smuggling (RFC 9112 §6.3)', () => {
  const attempts: Record<string, string> = {
    'Content-Length with Transfer-Encoding': 'POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: a\r\n\r\n',
    'Transfer-Encoding with Content-Length': 'POST /public/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n',
    'two different Content-Length values': 'POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: a\r\n\r\n',
    'an obfuscated Transfer-Encoding': 'POST /public/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n',
    'a Transfer-Encoding folded over two lines': 'POST /public/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n',
  };
  for (const [name, bytes] of Object.entries(attempts)) {
    it(`refuses ${name} with 400 and forwards nothing smuggled`, async () => {
      const out = await rawSocket(t.gw.url, bytes);
      expect(out).toMatch(/^HTTP\/1\.1 400/);
      expect(smuggled()).toBe(false);
    });
  }
});

describe('header tricks', () => {
  it('refuses a request with two Host headers', async () => {
    const out = await rawSocket(t.gw.url, 'GET /public/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1\.1 400/);
  });

  it('refuses a Host value that is not a host [":" port] (RFC 9112 §3.2): it would reach the upstream as X-Forwarded-Host (r14a 4)', async () => {
    const before = t.echo.requests.length;
    for (const host of ['api.example.com, evil.example', 'api.example.com:443@evil.example', 'evil.example/reset?next=x', 'a b', '', 'a.example:80:80', '[::1']) {
      const out = await rawSocket(t.gw.url, `GET /public/a HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      expect(out, host).toMatch(/^HTTP\/1\.1 400[^]*request_malformed/);
    }
    expect(t.echo.requests.length).toBe(before);
    for (const host of ['api.example.com', 'api.example.com:8443', '127.0.0.1:1', '[::1]:443', 'my_host.internal', 'API.Example.COM.']) {
      const out = await rawSocket(t.gw.url, `GET /public/a HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      expect(out, host).toMatch(/^HTTP\/1\.1 200/);
      expect(t.echo.requests.at(-1)!.headers['x-forwarded-host']).toBe(host);
    }
  });

  it("holds an absolute-form target's authority, which stands for Host, to the same form (r14d 4)", async () => {
    const before = t.echo.requests.length;
    for (const authority of ['api.example.com,evil.example', 'a b', 'api.example.com;evil', '%61pi.example.com']) {
      for (const version of ['1.1', '1.0']) {
        const out = await rawSocket(t.gw.url, `GET http://${authority}/public/a HTTP/${version}\r\nHost: api.example.com\r\nConnection: close\r\n\r\n`);
        expect(out, `${authority} ${version}`).toMatch(/^HTTP\/1\.1 400[^]*request_malformed/);
      }
    }
    expect(t.echo.requests.length).toBe(before);
    const out = await rawSocket(t.gw.url, 'GET http://api.example.com:8443/public/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1\.1 200/);
    expect(t.echo.requests.at(-1)!.headers['x-forwarded-host']).toBe('api.example.com:8443');
  });

  it('refuses a request without Host (HTTP/1.1) with the SPEC denial; HTTP/1.0 may omit it', async () => {
    const out = await rawSocket(t.gw.url, 'GET /public/a HTTP/1.1\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1\.1 400/);
    expect(out).toMatch(/\r\nmission-decision: dec_/i);
    expect(JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: 'invalid_request', denial_reason: 'request_malformed' });
    expect(await rawSocket(t.gw.url, 'GET /public/a HTTP/1.0\r\n\r\n')).toMatch(/^HTTP\/1\.1 200/);
  });

  it('a well-known document, a SET push or a WebSocket upgrade without Host (HTTP/1.1) is refused too', async () => {
    const doc = 'GET /.well-known/oauth-protected-resource HTTP/1.1\r\n';
    expect(await rawSocket(t.gw.url, `${doc}Host: a\r\n\r\n`)).toMatch(/^HTTP\/1\.1 200/);
    expect(await rawSocket(t.gw.url, `${doc}\r\n`)).toMatch(/^HTTP\/1\.1 400[^]*request_malformed/);
    expect(await rawSocket(t.gw.url, 'POST /.well-known/ssf/push HTTP/1.1\r\nContent-Type: application/secevent+jwt\r\nContent-Length: 2\r\n\r\nxx')).toMatch(/^HTTP\/1\.1 400[^]*request_malformed/);
    const upgrade = 'GET /public/ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';
    expect(await rawSocket(t.gw.url, upgrade)).toMatch(/^HTTP\/1\.1 400[^]*request_malformed/);
  });

  it('CONNECT is denied with the SPEC body, not dropped', async () => {
    for (const target of ['127.0.0.1:3990', 'api.example.com:443']) {
      const out = await rawSocket(t.gw.url, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
      expect(out).toMatch(/^HTTP\/1\.1 400[^]*\r\nmission-decision: dec_[^]*request_malformed/i);
    }
  });

  it('refuses CR/LF injected into a header value', async () => {
    const out = await rawSocket(t.gw.url, 'GET /public/a HTTP/1.1\r\nHost: a\r\nX-A: b\rX-Mission-Id: msn_evil\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1\.1 400/);
  });

  it('refuses absurd header counts and sizes', async () => {
    const many = Array.from({ length: 3000 }, (_, i) => `X-H${i}: v\r\n`).join('');
    expect(await rawSocket(t.gw.url, `GET /public/a HTTP/1.1\r\nHost: a\r\n${many}\r\n`)).toMatch(/^HTTP\/1\.1 (400|431)/);
    expect(await rawSocket(t.gw.url, `GET /public/a HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(100_000)}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 431/);
  });

  it('spoofed X-Mission-* and X-Forwarded-* never reach the upstream on a protected route', async () => {
    const r = await t.send({
      authorization: `DPoP ${t.token}`,
      dpop: await t.agent.proof('GET', `${API}/invoices/1`, t.token),
      headers: { 'X-Mission-Id': 'msn_evil', 'x-mission-subject': 'root', 'X-MISSION-ACTION': 'admin.all', 'x-forwarded-for': '10.1.1.1', 'x-forwarded-host': 'evil', 'mission-decision': 'dec_evil' },
    });
    expect(r.status).toBe(200);
    const h = r.json()['headers'] as Record<string, string>;
    expect(h['x-mission-id']).toBe(t.missionId);
    expect(h['x-mission-subject']).toBe('user_1');
    expect(h['x-mission-action']).toBe('invoices.read');
    expect(h['x-forwarded-for']).toBe('127.0.0.1');
    expect(h['x-forwarded-host']).not.toBe('evil');
    expect(h['mission-decision']).not.toBe('dec_evil');
  });

  it('never forwards a Mission reference header upstream', async () => {
    const r = await t.send({
      authorization: `DPoP ${t.token}`,
      dpop: await t.agent.proof('GET', `${API}/invoices/1`, t.token),
      headers: { 'mission-reference': `id="${t.missionId}", issuer="${t.dev.url}"` },
    });
    expect(r.status).toBe(200);
    expect((r.json()['headers'] as Record<string, string>)['mission-reference']).toBeUndefined();
  });
});

describe('path normalization bypasses of route rules', () => {
  const bypasses = [
    '/public/../admin/x',
    '/public/%2e%2e/admin/x',
    '/public/%2E%2e/admin/x',
    '/public/.%2E/admin/x',
    '/public/..%2Fadmin/x',
    '/public/..%2fadmin/x',
    '/public/..%5Cadmin/x',
    '/public/..\\admin/x',
    '/public/..;/admin/x',
    '/public/.;/../admin/x',
    '//public/../admin/x',
    '/./public/../admin/x',
    '/public/%252e%252e/admin/x',
    '/public/%E2%80%A5/admin/x',
    '/public/%EF%BC%8E%EF%BC%8E/admin/x',
    '/admin;jsessionid=1/x',
    '/ADMIN/x',
    '/admin%2Fx',
  ];
  for (const path of bypasses) {
    it(`${JSON.stringify(path)} never reaches /admin without the admin action`, async () => {
      const r = await t.send({ path, authorization: `DPoP ${t.token}`, dpop: await t.agent.proof('GET', `${API}/admin/x`, t.token) });
      if (r.status === 200) {
        // Forwarded only under the open prefix, with exactly the normalized path the route matched.
        const url = String(r.json()['url']);
        expect(url.startsWith('/public/')).toBe(true);
        expect(url.split('?')[0]!.split('/')).not.toContain('..');
        expect(url.split('?')[0]!.split('/')).not.toContain('.');
      } else {
        expect([400, 401, 403]).toContain(r.status);
      }
      expect(smuggled()).toBe(false);
    });
  }

  it('the admin route itself is out of authority for this Mission (control)', async () => {
    const r = await t.good('/admin/x');
    expect(r.status).toBe(403);
    expect(r.json()).toMatchObject({ denial_reason: 'out_of_authority' });
  });
});
