/**
 * `limits.max_connections` (r21j 7): client connections to the proxy listener are capped, so that
 * idle connections any client can open cannot take every file descriptor of the process and with
 * them the admin listener (`/healthz`: the liveness probe would restart the pod), Mission Status,
 * JWKS, upstream connections and evidence. Not set, the cap is derived from the open-file limit.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { derivedMaxConnections, FIXED_RESERVE, openFileLimit } from '../../src/http/connections.js';
import { eventually, startCli, startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const CONFIG = (upstream: string, extra = ''): string => `
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: ${upstream} }
routes: [{ match: { path: /public/** }, auth: none }]
${extra}`;

/** Opens `n` idle TCP connections to `url`; each resolves once connected, reporting when it is closed. */
async function idle(url: string, n: number): Promise<{ sockets: Socket[]; closed: () => number }> {
  const u = new URL(url);
  const sockets: Socket[] = [];
  let closed = 0;
  await Promise.all(
    Array.from({ length: n }, () => {
      const s = connect(Number(u.port), u.hostname);
      sockets.push(s);
      s.on('error', () => {});
      s.once('close', () => closed++);
      return new Promise<void>((r) => {
        s.once('connect', () => r());
        s.once('close', () => r());
      });
    }),
  );
  cleanups.push(() => {
    for (const s of sockets) s.destroy();
  });
  return { sockets, closed: () => closed };
}

/** An in-process gateway with `limits` in front of an echo upstream. */
async function gatewayWith(limits: string): Promise<TestGateway> {
  const echo = await startEcho();
  cleanups.push(() => echo.close());
  const gw = await startGateway(CONFIG(echo.url, `limits: ${limits}`));
  cleanups.push(() => gw.close());
  return gw;
}

/** The head of the answer to a GET of /public/x sent on the connection `s` already holds. */
function getOn(s: Socket): Promise<string> {
  const answer = new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString())));
  s.write('GET /public/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n');
  return answer;
}

const metric = async (adminUrl: string, name: string): Promise<number> => {
  const text = (await raw(adminUrl, { path: '/metrics' })).text();
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
  return m === null ? NaN : Number(m[1]);
};

describe('limits.max_connections', () => {
  it('the open-file limit is read from /proc/self/limits (soft), and the cap derived from it', () => {
    const limits = (soft: string) => `Limit                     Soft Limit           Hard Limit           Units\nMax cpu time              unlimited            unlimited            seconds\nMax open files            ${soft}                 1048576              files\n`;
    expect(openFileLimit(() => limits('1024'))).toBe(1024);
    expect(openFileLimit(() => limits('unlimited'))).toBeNull();
    expect(openFileLimit(() => 'no such line')).toBeNull();
    expect(
      openFileLimit(() => {
        throw new Error('ENOENT');
      }),
    ).toBeNull();
    expect(FIXED_RESERVE).toBe(128);
    // The reserve, and one upstream socket per client connection up to the pool and the tunnels...
    expect(derivedMaxConnections(1_048_576, 128, 1024)).toBe(1_048_576 - 128 - 128 - 1024);
    // ...or, when those are more than what is left, half of what is left (each client with its upstream socket).
    expect(derivedMaxConnections(1024, 128, 1024)).toBe(448);
    expect(derivedMaxConnections(256, 128, 1024)).toBe(64);
    expect(derivedMaxConnections(100, 128, 1024)).toBe(16);
    expect(derivedMaxConnections(null, 128, 1024)).toBe(0);
    // Whatever the limit, the reserve and every client's upstream socket fit in it.
    for (const n of [256, 1000, 1024, 2000, 2560, 4096, 20_000]) {
      const c = derivedMaxConnections(n, 128, 1024);
      expect(FIXED_RESERVE + c + Math.min(c, 128 + 1024)).toBeLessThanOrEqual(n);
    }
  });

  it('past the cap a new connection is closed at once (counted); /healthz and the connections open are served; room again once some close', async () => {
    const gw = await gatewayWith('{ max_connections: 20 }');
    const held = await idle(gw.url, 20);
    expect(held.closed()).toBe(0);
    const over = await idle(gw.url, 5);
    await eventually(() => over.closed() === 5, 3000);
    expect(held.closed()).toBe(0);
    expect(await metric(gw.adminUrl, 'mission_gateway_connections_dropped_total')).toBe(5);
    expect((await raw(gw.adminUrl, { path: '/healthz' })).status).toBe(200);
    // A held connection still carries a request.
    expect(await getOn(held.sockets[0]!)).toMatch(/^HTTP\/1\.1 200 /);
    for (const c of held.sockets.slice(0, 3)) c.destroy();
    await eventually(async () => (await raw(gw.url, { path: '/public/x' })).status === 200, 3000);
  });

  it('0: no cap', async () => {
    const gw = await gatewayWith('{ max_connections: 0 }');
    const held = await idle(gw.url, 300);
    await new Promise((r) => setTimeout(r, 200));
    expect(held.closed()).toBe(0);
    expect(await metric(gw.adminUrl, 'mission_gateway_connections_dropped_total')).toBe(0);
  });

  it('not set, under a 256 open-file limit: 400 idle connections leave /healthz and the upstream working (r21j 7)', async () => {
    const echo = await startEcho();
    cleanups.push(() => echo.close());
    const folder = mkdtempSync(join(tmpdir(), 'mgw-nofile-'));
    const file = join(folder, 'gw.yaml');
    writeFileSync(file, `listen: { host: 127.0.0.1, port: 0 }\nadmin: { host: 127.0.0.1, port: 0 }\nevidence: { sink: ${join(folder, 'evidence.jsonl')} }\n${CONFIG(echo.url)}`);
    const gw = await startCli(file, undefined, ['prlimit', '--nofile=256:256', '--']);
    cleanups.push(() => void gw.proc.kill('SIGKILL'));
    expect(JSON.parse(gw.logs().split('\n').find((l) => l.includes('mission-gateway listening'))!)).toMatchObject({ max_connections: 64 });
    const flood = await idle(gw.url, 400);
    await eventually(() => flood.closed() >= 400 - 64, 5000);
    for (let i = 0; i < 10; i++) expect((await raw(gw.adminUrl, { path: '/healthz' })).status).toBe(200);
    // The admin port and the upstream pool have descriptors: a request on a held connection is forwarded.
    expect(await getOn(flood.sockets.find((x) => !x.destroyed && x.readyState === 'open')!)).toMatch(/^HTTP\/1\.1 200 /);
    expect(await metric(gw.adminUrl, 'mission_gateway_connections_dropped_total')).toBeGreaterThanOrEqual(400 - 64);
  });
});
