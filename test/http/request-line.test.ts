import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';
import { rawSocket } from '../helpers/http.js';
import { attemptedTarget } from '../../src/pipeline/run.js';

let echo: Awaited<ReturnType<typeof startEcho>>;
let gw: TestGateway;

beforeAll(async () => {
  echo = await startEcho();
  gw = await startGateway(`
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: ${echo.url} }
log: { level: warn }
routes:
  - match: { path: /** }
    auth: none
`);
});

afterAll(async () => {
  await gw.close();
  await echo.close();
});

const recordFor = (decisionId: string) => eventually(() => gw.evidence().find((r) => r['decision_id'] === decisionId));
const decisionOf = (out: string) => /mission-decision: (\S+)/i.exec(out)?.[1] ?? '';

describe('request lines and framings the gateway does not speak are refused, with evidence (SPEC section 5)', () => {
  it('HTTP/2.0 (or 1.2) on a request line is 400 request_malformed, not proxied as HTTP/1.1', async () => {
    for (const version of ['2.0', '1.2']) {
      const before = echo.requests.length;
      const out = await rawSocket(gw.url, `GET /public/v HTTP/${version}\r\nHost: a\r\nConnection: close\r\n\r\n`);
      expect(out, version).toMatch(/^HTTP\/1\.1 400/);
      expect(echo.requests.length).toBe(before);
      if (version === '2.0') {
        expect(out).toContain('"denial_reason":"request_malformed"');
        expect(await recordFor(decisionOf(out))).toMatchObject({ decision: 'deny', denial_reason: 'request_malformed', path: '/public/v' });
      }
    }
  });

  it('a transfer coding other than chunked (gzip, chunked) is refused: the upstream would get a coded body with nothing saying so', async () => {
    const before = echo.requests.length;
    const out = await rawSocket(gw.url, 'POST /public/te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1\.1 400/);
    expect(out).toContain('"denial_reason":"request_malformed"');
    expect(echo.requests.length).toBe(before);
    // chunked alone still goes through
    const ok = await rawSocket(gw.url, 'POST /public/te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
    expect(ok).toMatch(/^HTTP\/1\.1 200/);
    expect(echo.requests.at(-1)!.body.toString()).toBe('hello');
  });

  it('the record of a refused request target keeps what was asked for, not "/"', async () => {
    const out = await rawSocket(gw.url, 'GET /a/%zz/b?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1\.1 400/);
    expect(await recordFor(decisionOf(out))).toMatchObject({ decision: 'deny', path: '/a/%zz/b?' });
  });

  it('the record of a refused request target keeps no query or fragment (a credential may ride there), nor any userinfo', async () => {
    const sent: [target: string, recorded: string][] = [
      ['/api/%zz?access_token=eyJ.SECRET-1.sig', '/api/%zz?'],
      ['/public/cb/%00?state=x&code=SECRET-2', '/public/cb/%00?'],
      ['/public/f/..;/g#SECRET-3', '/public/f/..;/g#'],
      ['http://u:p@api.example.com/api/%zz?access_token=SECRET-4', 'http://***@api.example.com/api/%zz?'],
      ['http://svc:pa/SECRET-5@api.example.com/api/x', 'http://***@api.example.com/api/x'],
      ['http://svc:pa?SECRET-6@api.example.com/api/x', 'http://***@api.example.com/api/x'],
    ];
    for (const [target, recorded] of sent) {
      const out = await rawSocket(gw.url, `GET ${target} HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n`);
      expect(out).toMatch(/^HTTP\/1\.1 400/);
      const rec = await recordFor(decisionOf(out));
      expect(rec).toMatchObject({ decision: 'deny', denial_reason: 'request_malformed', path: recorded });
      expect(JSON.stringify(rec)).not.toMatch(/SECRET/);
    }
  });

  it('an absolute-form target with userinfo is refused, and its record does not keep the password', async () => {
    const before = echo.requests.length;
    const out = await rawSocket(gw.url, 'GET http://user:s3cret@api.example.com/public/x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1\.1 400/);
    expect(echo.requests.length).toBe(before);
    const rec = await recordFor(decisionOf(out));
    expect(rec).toMatchObject({ decision: 'deny', denial_reason: 'request_malformed', path: 'http://***@api.example.com/public/x' });
    expect(JSON.stringify(rec)).not.toContain('s3cret');
  });

  it("an absolute-form target's authority, not Host, is the upstream's X-Forwarded-Host (RFC 9112 section 3.2.2)", async () => {
    const out = await rawSocket(gw.url, 'GET http://other.example:8443/public/abs HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1\.1 200/);
    const got = echo.requests.find((r) => r.url === '/public/abs');
    expect(got?.headers['x-forwarded-host']).toBe('other.example:8443');
  });

  it('attemptedTarget: printable ASCII kept, quotes, backslashes, controls and other bytes percent-encoded, long targets cut', () => {
    expect(attemptedTarget('/a/%2e%2e/b')).toBe('/a/%2e%2e/b');
    expect(attemptedTarget('/a"b\\c d\x00\xe9')).toBe('/a%22b%5Cc%20d%00%E9');
    expect(attemptedTarget('/x/\u20ac\ud800')).toBe('/x/%E2%82%AC%EF%BF%BD');
    expect(attemptedTarget('')).toBe('/');
    expect(attemptedTarget('/' + 'a'.repeat(5000))).toHaveLength(2048);
  });

  it('attemptedTarget: userinfo of an absolute-form target goes whole, a password holding `@` included (r18a 9)', () => {
    expect(attemptedTarget('http://user:p@ss@h.example/x')).toBe('http://***@h.example/x');
  });
});

describe('1xx from the upstream (RFC 9110 section 15.2)', () => {
  it('a 103 Early Hints reaches an HTTP/1.1 client before the final response, with its Link fields; an HTTP/1.0 client gets none', async () => {
    const { createServer } = await import('node:net');
    const up = createServer((s) => {
      s.on('data', () => {
        s.write('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\nLink: </app.js>; rel=preload; as=script\r\n\r\n');
        setTimeout(() => s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'), 50);
      });
    });
    await new Promise<void>((r) => up.listen(0, '127.0.0.1', () => r()));
    const hgw = await startGateway(`
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: "http://127.0.0.1:${(up.address() as { port: number }).port}" }
routes:
  - match: { path: /** }
    auth: none
`);
    try {
      const out = await rawSocket(hgw.url, 'GET /page HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
      expect(out).toMatch(/^HTTP\/1\.1 103 Early Hints\r\n/);
      expect(out.slice(0, out.indexOf('\r\n\r\n'))).toContain('</style.css>; rel=preload; as=style');
      expect(out.slice(0, out.indexOf('\r\n\r\n'))).toContain('</app.js>; rel=preload; as=script');
      expect(out).toMatch(/\r\n\r\nHTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nok$/);
      const old = await rawSocket(hgw.url, 'GET /page HTTP/1.0\r\nHost: a\r\n\r\n');
      expect(old).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(old).not.toContain('103');
    } finally {
      await hgw.close();
      await new Promise<void>((r) => up.close(() => r()));
    }
  });
});
