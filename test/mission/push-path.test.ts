/**
 * The SET receiver's path (mission.events.push_path) is never forwarded (docs/missions.md): asked
 * for as written it is the receiver; any other spelling that normalizes to it is denied no_route,
 * even behind a catch-all `auth: none` route. Real sockets.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';
import { rawSocket } from '../helpers/http.js';

let echo: Awaited<ReturnType<typeof startEcho>>;
let gw: TestGateway;

beforeAll(async () => {
  echo = await startEcho();
  gw = await startGateway(`public_base_url: http://localhost:8080\nresource: http://localhost:8080\nupstream: { url: ${echo.url} }\nroutes:\n  - match: { path: /** }\n    auth: none\n`);
});

afterAll(async () => {
  await gw.close();
  await echo.close();
});

/** A path under the catch-all beside the receiver's: the one request the upstream should see (its own test). */
const PASSED = '/.well-known/ssf/pushed';
const post = (path: string) => rawSocket(gw.url, `POST ${path} HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/secevent+jwt\r\nContent-Length: 5\r\nConnection: close\r\n\r\nx.y.z`);

describe('mission.events.push_path behind a catch-all route', () => {
  it('as written: the receiver answers (a SET that does not verify is 400), nothing is forwarded', async () => {
    expect(await post('/.well-known/ssf/push')).toMatch(/^HTTP\/1\.1 400[^]*invalid_request/);
    // Another method: the receiver's RFC 8935 405, sized and never cached, its body read.
    const get = await rawSocket(gw.url, 'GET /.well-known/ssf/push HTTP/1.1\r\nHost: localhost:8080\r\nConnection: close\r\n\r\n');
    expect(get).toMatch(/^HTTP\/1\.1 405 /);
    expect(get).toMatch(/\r\nallow: POST\r\n/i);
    expect(get).toMatch(/\r\ncache-control: no-store\r\n/i);
    expect(get).toMatch(/\r\ncontent-length: \d+\r\n/i);
    expect(echo.requests.filter((r) => r.url !== PASSED)).toHaveLength(0);
  });

  it.each(['/.well-known/ssf//push', '/.well-known//ssf/push', '/.well-known/ssf/%70ush', '/.well-known/ssf/./push', '/.well-known/x/../ssf/push'])(
    '%s: 403 no_route with a record, never the upstream',
    async (path) => {
      const out = await post(path);
      expect(out).toMatch(/^HTTP\/1\.1 403[^]*"denial_reason":"no_route"/);
      const decision = /mission-decision: (\S+)/i.exec(out)![1];
      expect(gw.evidence().find((r) => r['decision_id'] === decision)).toMatchObject({ decision: 'deny', denial_reason: 'no_route', path: '/.well-known/ssf/push' });
      expect(echo.requests.filter((r) => r.url !== PASSED)).toHaveLength(0);
    },
  );

  it.each(['/.well-known/ssf/push/', '/.well-known/ssf/push//', '/.well-known/ssf/push/.', '/.well-known/ssf/push/x/..'])(
    '%s (its segments, ending the path): 403 no_route, never the upstream (r21k 2)',
    async (path) => {
      expect(await post(path)).toMatch(/^HTTP\/1\.1 403[^]*"denial_reason":"no_route"/);
      expect(echo.requests.filter((r) => r.url !== PASSED)).toHaveLength(0);
    },
  );

  it('other paths under the catch-all still go through', async () => {
    expect(await post(PASSED)).toMatch(/^HTTP\/1\.1 200/);
    expect(echo.requests.map((r) => r.url)).toEqual([PASSED]);
  });
});
