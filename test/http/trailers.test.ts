/**
 * Trailer fields (RFC 9110 section 6.5) through the gateway: an upstream's trailers (an integrity
 * digest, a final status) reach a client that gets a chunked answer, with the `Trailer` field that
 * announces them; a client's `TE: trailers` reaches the upstream, since some servers send trailers
 * only then. Where the answer cannot carry trailers (HTTP/1.0, HEAD, 204, 304, a sized body), the
 * answer is still whole and never a 502. Also: a streamed answer's head goes out byte for byte.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { rawSocket } from '../helpers/http.js';

let upstream: Server;
let upstreamUrl: string;
/** The head of each request the upstream got. */
const heads: string[] = [];
let gw: TestGateway;

const OBS = 'attachment; filename="caf\xe9.txt"';
const TRAILERS = 'X-Checksum: sha-256=:abc=:\r\nGrpc-Status: 0\r\nKeep-Alive: timeout=5\r\n';

/**
 * A raw upstream (Node's server will not write a Trailer field beside a Content-Length or on a 204).
 * `/s/<status>`: that status, chunked, with a `Trailer` field and trailers, one of them a framing
 * field that must not pass on. `/only-te`: the same, but only when the request said `TE: trailers`.
 * `/sized`: a Content-Length body that still names a Trailer.
 */
function answer(head: string): string {
  const target = head.split(' ')[1] ?? '/';
  // A latin-1 filename (obs-text, RFC 9110 section 5.5) on a streamed answer.
  if (target === '/obs') return `HTTP/1.1 200 OK\r\nContent-Disposition: ${OBS}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`;
  if (target === '/sized') return 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTrailer: X-Checksum\r\n\r\nok';
  if (target === '/only-te' && !/\r\nte: trailers\r\n/i.test(head)) return 'HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\nno trailers asked for';
  const status = target.startsWith('/s/') ? Number(target.slice(3)) : 200;
  const body = status === 204 || status === 304 || head.startsWith('HEAD ') ? '' : '9\r\npart one,\r\n8\r\npart two\r\n';
  return `HTTP/1.1 ${status} X\r\nTrailer: X-Checksum, Grpc-Status\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n${body}0\r\n${TRAILERS}\r\n`;
}

beforeAll(async () => {
  upstream = createServer((s: Socket) => {
    let buf = '';
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end + 2);
        buf = buf.slice(end + 4);
        heads.push(head);
        s.write(answer(head), 'latin1');
      }
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  gw = await startGateway(`
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: ${upstreamUrl} }
routes:
  - match: { path: /** }
    auth: none
`);
});

afterAll(async () => {
  await gw.close();
  await new Promise((r) => upstream.close(r));
});

const get = (path: string, extra = '', version = '1.1', method = 'GET'): Promise<string> =>
  rawSocket(gw.url, `${method} ${path} HTTP/${version}\r\nHost: api.example.com\r\n${extra}Connection: close\r\n\r\n`);

describe('trailers', () => {
  it('relays the upstream\'s trailers and the Trailer field on a chunked answer, without framing fields', async () => {
    const r = await get('/s/200');
    expect(r).toMatch(/^HTTP\/1\.1 200 /);
    expect(r).toMatch(/\r\nTrailer: X-Checksum, Grpc-Status\r\n/i);
    expect(r).toMatch(/\r\nTransfer-Encoding: chunked\r\n/i);
    expect(r).toContain('part one,');
    expect(r).toContain('part two');
    // After the last chunk: the trailer section (without the upstream's Keep-Alive), then the blank line.
    expect(r.slice(r.lastIndexOf('\r\n0\r\n') + 5)).toBe('X-Checksum: sha-256=:abc=:\r\nGrpc-Status: 0\r\n\r\n');
  });

  it('passes a client\'s TE: trailers on to the upstream (and nothing for another TE)', async () => {
    const asked = await get('/only-te', 'TE: trailers\r\n');
    expect(asked).toContain('X-Checksum: sha-256=:abc=:');
    expect(heads.at(-1)).toMatch(/\r\nte: trailers\r\n/i);
    const other = await get('/only-te', 'TE: gzip;q=0.5\r\n');
    expect(other).toContain('no trailers asked for');
    expect(heads.at(-1)).not.toMatch(/\r\nte:/i);
    const none = await get('/only-te');
    expect(none).toContain('no trailers asked for');
  });

  it('keeps an obs-text byte of a streamed answer\'s header as sent (Node\'s flushHeaders wrote it as UTF-8: r17f 1)', async () => {
    const r = await get('/obs');
    expect(r).toMatch(/^HTTP\/1\.1 200 /);
    expect(r).toContain(`\r\nContent-Disposition: ${OBS}\r\n`);
    expect(r).not.toContain('caf\xc3\xa9');
  });

  it.each([
    ['an HTTP/1.0 client (no chunked coding)', '/s/200', '1.0', 'GET', /^HTTP\/1\.1 200 /],
    ['HEAD', '/s/200', '1.1', 'HEAD', /^HTTP\/1\.1 200 /],
    ['a 204', '/s/204', '1.1', 'GET', /^HTTP\/1\.1 204 /],
    ['a 304', '/s/304', '1.1', 'GET', /^HTTP\/1\.1 304 /],
    ['a sized body', '/sized', '1.1', 'GET', /^HTTP\/1\.1 200 /],
  ])('answers %s whole, with no Trailer field and no trailers', async (_what, path, version, method, status) => {
    const r = await get(path, '', version, method);
    expect(r).toMatch(status);
    expect(r).not.toMatch(/\r\nTrailer:/i);
    expect(r).not.toContain('X-Checksum');
    if (path === '/sized') expect(r.endsWith('\r\n\r\nok')).toBe(true);
    if (version === '1.0') expect(r).toContain('part one,part two');
  });
});
