/**
 * The process as an operator runs it: the CLI, `check`, SIGHUP reload, SIGTERM drain, admin
 * endpoints, WebSocket tunnels.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { CLI, eventually, listen, startCli, startEcho, startGateway, type CliGateway, type TestGateway } from '../helpers/gateway.js';
import { raw, rawSocket } from '../helpers/http.js';
import { JwksServer, makeKey, mintToken } from '../auth/helpers.js';
import { Agent, createServer, request } from 'node:http';
import type { Socket } from 'node:net';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/observability/logger.js';


function cfg(upstream: string, routes = '  - match: { path: /public/** }\n    auth: none'): string {
  return `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
public_base_url: http://localhost:8080
resource: http://localhost:8080
upstream: { url: ${upstream}, timeout_s: 5 }
shutdown_grace_s: 5
routes:
${routes}
log: { level: info }
`;
}

const procs: ChildProcess[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) p.kill('SIGKILL');
});

describe('SPEC §2: mission-gateway check', () => {
  it('exits 0 on the example configs', () => {
    for (const f of ['config/example.yaml', 'config/minimal.yaml']) {
      const r = spawnSync(process.execPath, [CLI, 'check', '--config', f], { cwd: resolve(__dirname, '../..'), encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    }
  });

  it('exits 2 and prints every problem with its key path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgw-check-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(
      file,
      `public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: "not a url" }
unknown_key: 1
issuers: [{ issuer: http://as.example.com, algorithms: [HS256] }]
routes:
  - match: { path: invoices }
    action: invoices.read
  - match: { method: GET, path: /a }
    action: a
  - match: { method: GET, path: /a }
    action: b
  - match: { path: /b }
dpop: { max_age_s: "sixty" }
`,
    );
    const r = spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toEqual(
      expect.arrayContaining([
        'unknown_key: unknown key',
        'upstream.url: must be an absolute http(s) URL',
        'issuers[0].issuer: must use https (http is accepted only on loopback hosts)',
        expect.stringMatching(/^issuers\[0\]\.algorithms\[0\]: must be one of/),
        'routes[0].match.path: must start with "/"',
        'routes[2].match: duplicates routes[1].match',
        'routes[3].action: is required on a route that needs auth',
        'dpop.max_age_s: must be number',
      ]),
    );
  });

  it('refuses, quickly, a hostile file: 40,000 keys, a duplicate key far down, an unknown tag, over 1 MiB', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgw-hostile-'));
    const check = (name: string, text: string) => {
      const file = join(dir, name);
      writeFileSync(file, text);
      const started = Date.now();
      const r = spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8' });
      return { status: r.status, stderr: r.stderr, ms: Date.now() - started };
    };
    const base = 'public_base_url: https://api.example.com\nresource: https://api.example.com\nupstream: { url: "http://127.0.0.1:3000" }\n';
    const many = check('many.yaml', base + Array.from({ length: 40_000 }, (_, i) => `k${i}: 1`).join('\n'));
    expect(many.status).toBe(2);
    expect(many.ms).toBeLessThan(5000);
    expect(many.stderr).toContain('(and 39900 more problems)');
    expect(many.stderr.trim().split('\n').length).toBeLessThan(110);
    const dup = check('dup.yaml', base + Array.from({ length: 20_000 }, (_, i) => `  k${i}: 1`).join('\n').replace(/^/, 'limits:\n') + '\n  k7: 2\n');
    expect(dup.status).toBe(2);
    expect(dup.ms).toBeLessThan(5000);
    expect(dup.stderr).toMatch(/Map keys must be unique: "k7" at line \d+/);
    const tag = check('tag.yaml', base + 'log: !!js/function "function () {}"\n');
    expect(tag.status).toBe(2);
    expect(tag.stderr.trim().split('\n').every((l) => l.startsWith('(file): '))).toBe(true);
    const big = check('big.yaml', base + `x: "${'a'.repeat(1024 * 1024)}"\n`);
    expect(big.status).toBe(2);
    expect(big.stderr).toContain('larger than 1048576 bytes');
  });

  it('substitutes ${ENV} and reports an unset variable', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgw-env-'));
    const file = join(dir, 'env.yaml');
    writeFileSync(file, 'public_base_url: https://api.example.com\nresource: https://api.example.com\nupstream: { url: "${MGW_TEST_UPSTREAM}" }\n');
    const unset = spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8', env: { ...process.env, MGW_TEST_UPSTREAM: undefined } });
    expect(unset.status).toBe(2);
    expect(unset.stderr).toContain('upstream.url: environment variable MGW_TEST_UPSTREAM is not set');
    const set = spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8', env: { ...process.env, MGW_TEST_UPSTREAM: 'http://127.0.0.1:3000' } });
    expect(set.status).toBe(0);
  });
});

/** The CLI on `yaml`, written to gw.yaml in a new temporary folder; killed after the test. */
async function startCliOn(yaml: string, prefix: string): Promise<{ gw: CliGateway; file: string }> {
  const file = join(mkdtempSync(join(tmpdir(), prefix)), 'gw.yaml');
  writeFileSync(file, yaml);
  const gw = await startCli(file);
  procs.push(gw.proc);
  return { gw, file };
}

describe('SPEC §2: signals', () => {
  it('SIGHUP reloads a valid config and keeps the old one when the new one is invalid', async () => {
    const echo = await startEcho();
    const { gw, file } = await startCliOn(cfg(echo.url), 'mgw-reload-');
    try {
      expect((await raw(gw.url, { path: '/other/x' })).status).toBe(403);
      writeFileSync(file, cfg(echo.url, '  - match: { path: /public/** }\n    auth: none\n  - match: { path: /other/** }\n    auth: none'));
      gw.proc.kill('SIGHUP');
      await eventually(async () => (await raw(gw.url, { path: '/other/x' })).status === 200);
      writeFileSync(file, cfg(echo.url) + 'bogus: true\n');
      gw.proc.kill('SIGHUP');
      await eventually(() => gw.logs().includes('config reload failed'));
      expect((await raw(gw.url, { path: '/other/x' })).status).toBe(200);
      const metrics = (await raw(gw.adminUrl, { path: '/metrics' })).text();
      expect(metrics).toContain('mission_gateway_config_reloads_total{outcome="success"} 1');
      expect(metrics).toContain('mission_gateway_config_reloads_total{outcome="failure"} 1');
    } finally {
      await echo.close();
    }
  });

  it('SIGHUP with a changed evidence sink or log level says these wait for a restart, and keeps the running ones', async () => {
    const echo = await startEcho();
    const { gw, file } = await startCliOn(cfg(echo.url), 'mgw-reload-kept-');
    try {
      const moved = join(dirname(file), 'moved.jsonl');
      writeFileSync(file, cfg(echo.url).replace('log: { level: info }', 'log: { level: warn }') + `evidence: { sink: ${JSON.stringify(moved)} }\n`);
      gw.proc.kill('SIGHUP');
      await eventually(() => gw.logs().includes('take effect at the next restart'));
      const line = JSON.parse(gw.logs().split('\n').find((l) => l.includes('take effect at the next restart'))!) as { changed: string[] };
      expect(line.changed).toEqual(['evidence', 'log']);
      expect((await raw(gw.url, { path: '/public/x' })).status).toBe(200);
      expect(existsSync(moved)).toBe(false);
    } finally {
      await echo.close();
    }
  });

  it('SIGHUP refuses what start would refuse here (a missing key file, an evidence folder that is gone), with the key path, and keeps the running config (r17e 2)', async () => {
    const echo = await startEcho();
    const { gw, file } = await startCliOn(cfg(echo.url), 'mgw-reload-preflight-');
    try {
      const gone = join(dirname(file), 'no-such-folder', 'e.jsonl');
      writeFileSync(file, cfg(echo.url) + `evidence: { sink: ${JSON.stringify(gone)}, sign: { private_key_file: ./no-such-key.jwk } }\n`);
      gw.proc.kill('SIGHUP');
      await eventually(() => gw.logs().includes('config reload failed'));
      const line = JSON.parse(gw.logs().split('\n').find((l) => l.includes('config reload failed'))!) as { problems: string[] };
      expect(line.problems.some((p) => p.startsWith('evidence.sign.private_key_file: '))).toBe(true);
      expect(line.problems.some((p) => p.startsWith('evidence.sink: '))).toBe(true);
      expect(gw.logs()).not.toContain('config reloaded');
      // The same file fails check the same way, and the running gateway still serves.
      const checked = spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8' });
      expect(checked.status).toBe(2);
      expect((await raw(gw.url, { path: '/public/x' })).status).toBe(200);
    } finally {
      await echo.close();
    }
  });

  it('SIGHUP applies limits at once: head size (new connections), head timeout and requests per connection, with no restart warning', async () => {
    const echo = await startEcho();
    const { gw, file } = await startCliOn(cfg(echo.url), 'mgw-reload-limits-');
    const big = `GET /public/big HTTP/1.1\r\nHost: a\r\nX-Pad: ${'a'.repeat(8000)}\r\nConnection: close\r\n\r\n`;
    const two = 'GET /public/1 HTTP/1.1\r\nHost: a\r\n\r\nGET /public/2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n';
    try {
      expect(await rawSocket(gw.url, big)).toMatch(/^HTTP\/1\.1 200/);
      expect((await rawSocket(gw.url, two)).match(/HTTP\/1\.1 200/g)).toHaveLength(2);
      writeFileSync(file, cfg(echo.url) + 'limits: { max_header_bytes: 2048, headers_timeout_s: 1, request_timeout_s: 2, max_requests_per_socket: 1 }\n');
      gw.proc.kill('SIGHUP');
      await eventually(() => gw.logs().includes('config reloaded'));
      expect(await rawSocket(gw.url, big)).toMatch(/^HTTP\/1\.1 431/);
      // One request per connection now: the first answer closes it, the second request is never read.
      const answered = await rawSocket(gw.url, two);
      expect(answered.match(/HTTP\/1\.1 200/g)).toHaveLength(1);
      expect(answered).toMatch(/connection: close/i);
      // A client that sends no head is cut after the new 1 s (checked every second), not the old 10 s.
      const started = Date.now();
      expect(await rawSocket(gw.url, 'GET /public/slow HTTP/1.1\r\nHost: a\r\n', 5000)).toMatch(/^HTTP\/1\.1 408/);
      expect(Date.now() - started).toBeLessThan(3500);
      expect(gw.logs()).not.toContain('take effect at the next restart');
    } finally {
      await echo.close();
    }
  });

  it('SIGHUP while the issuer is unreachable keeps its last-good keys: tokens keep working', async () => {
    const echo = await startEcho();
    const jwks = await new JwksServer().start();
    const key = await makeKey('ES256', 'k1');
    jwks.setKeys(key);
    const { gw } = await startCliOn(cfg(echo.url, '  - match: { path: /api/** }\n    action: api.read') + `issuers:\n  - issuer: ${jwks.url}\n    jwks_uri: ${jwks.url}/jwks\n    algorithms: [ES256]\ndpop: { required: false }\nmission: { required: false }\n`, 'mgw-reload-keys-');
    try {
      const token = await mintToken(key, jwks.url, { jkt: null, claims: { aud: 'http://localhost:8080' } });
      const get = () => raw(gw.url, { path: '/api/x', headers: { authorization: `Bearer ${token}` } });
      await eventually(async () => (await get()).status === 200);
      jwks.down = true;
      gw.proc.kill('SIGHUP');
      await eventually(() => gw.logs().includes('config reloaded'));
      expect((await get()).status).toBe(200);
      expect((await raw(gw.adminUrl, { path: '/readyz' })).status).toBe(200);
    } finally {
      await echo.close();
      await jwks.close();
    }
  });

  it('SIGTERM finishes in-flight requests, then exits 0', async () => {
    let arrived = false;
    const echo = await startEcho((_req, res) => {
      arrived = true;
      setTimeout(() => res.end('done'), 700);
    });
    const { gw } = await startCliOn(cfg(echo.url), 'mgw-term-');
    try {
      const inflight = raw(gw.url, { path: '/public/slow' });
      // SIGTERM only once the request is in flight (it reached the upstream through the gateway).
      for (let i = 0; i < 200 && !arrived; i++) await new Promise((r) => setTimeout(r, 10));
      expect(arrived).toBe(true);
      const exited = new Promise<number | null>((r) => gw.proc.once('exit', (code) => r(code)));
      gw.proc.kill('SIGTERM');
      const res = await inflight;
      expect(res.status).toBe(200);
      expect(res.text()).toBe('done');
      expect(await exited).toBe(0);
    } finally {
      await echo.close();
    }
  });

  it('SIGTERM with only idle keep-alive connections exits at once and logs no cut', async () => {
    const echo = await startEcho();
    const { gw } = await startCliOn(cfg(echo.url), 'mgw-term-idle-');
    const agent = new Agent({ keepAlive: true });
    try {
      for (let i = 0; i < 2; i++) {
        await new Promise<void>((resolve) => request(`${gw.url}/public/idle`, { agent }, (res) => res.resume().on('end', () => resolve())).end());
      }
      const exited = new Promise<number | null>((r) => gw.proc.once('exit', (code) => r(code)));
      const t0 = Date.now();
      gw.proc.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(gw.logs()).not.toContain('shutdown grace period over');
    } finally {
      agent.destroy();
      await echo.close();
    }
  });

  it('SIGTERM past shutdown_grace_s cuts what is still in flight and logs it as cut at shutdown, not as a client that closed', async () => {
    const arrived: string[] = [];
    const echo = await startEcho((req, res) => {
      arrived.push(req.url ?? '');
      // Never answers /public/hang; /public/stream starts and never ends.
      if (req.url === '/public/stream') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: 1\n\n');
      }
    });
    const { gw } = await startCliOn(cfg(echo.url).replace('shutdown_grace_s: 5', 'shutdown_grace_s: 0.3'), 'mgw-term-cut-');
    try {
      const outcome = (path: string) =>
        new Promise<string>((resolve) => {
          const req = request(`${gw.url}${path}`, (res) => {
            res.resume();
            res.on('error', () => resolve(`${res.statusCode} then cut`));
            res.on('end', () => resolve(`${res.statusCode} ended`));
          });
          req.on('error', () => resolve('cut before an answer'));
          req.end();
        });
      const hang = outcome('/public/hang');
      const stream = outcome('/public/stream');
      for (let i = 0; i < 200 && arrived.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
      expect(arrived.sort()).toEqual(['/public/hang', '/public/stream']);
      const exited = new Promise<number | null>((r) => gw.proc.once('exit', (code) => r(code)));
      gw.proc.kill('SIGTERM');
      expect(await hang).toBe('cut before an answer');
      expect(await stream).toBe('200 then cut');
      expect(await exited).toBe(0);
      const lines = gw
        .logs()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines.find((l) => l['cause'] === 'shutdown')).toMatchObject({ msg: 'shutdown grace period over; cutting the connections still open', grace_ms: 300, connections: 2 });
      // The request the upstream had not answered: logged as cut at shutdown, not as an upstream failure.
      expect(lines.filter((l) => l['msg'] === 'request cut at shutdown')).toEqual([
        expect.objectContaining({ err: 'cut at shutdown: the grace period ended before the request did', code: 'shutdown', decision_id: expect.stringMatching(/^dec_/) }),
      ]);
      expect(lines.filter((l) => l['msg'] === 'upstream failed')).toEqual([]);
      expect(gw.logs()).not.toContain('client closed');
    } finally {
      await echo.close();
    }
  });
});

describe('SPEC §2: admin listener', () => {
  it('serves /healthz, /readyz and /metrics with the SPEC §9 names', async () => {
    const echo = await startEcho();
    const gw = await startGateway(`public_base_url: http://localhost:8080\nresource: http://localhost:8080\nupstream: { url: ${echo.url} }\nroutes:\n  - match: { path: /public/** }\n    auth: none\n`);
    try {
      await raw(gw.url, { path: '/public/a' });
      await raw(gw.url, { path: '/nope' });
      expect((await raw(gw.adminUrl, { path: '/healthz' })).json()).toEqual({ status: 'ok' });
      const ready = await raw(gw.adminUrl, { path: '/readyz' });
      expect(ready.status).toBe(200);
      const m = (await raw(gw.adminUrl, { path: '/metrics' })).text();
      expect(m).toContain('mission_gateway_requests_total{decision="permit",reason="none"} 1');
      expect(m).toContain('mission_gateway_requests_total{decision="deny",reason="no_route"} 1');
      for (const name of [
        'mission_gateway_decision_seconds',
        'mission_gateway_upstream_seconds',
        'mission_gateway_mission_cache_total',
        'mission_gateway_mission_status_requests_total',
        'mission_gateway_events_total',
        'mission_gateway_jwks_refresh_total',
        'mission_gateway_config_reloads_total',
      ]) {
        expect(m).toContain(`# TYPE ${name}`);
      }
    } finally {
      await gw.close();
      await echo.close();
    }
  });
});

describe('SPEC §6: WebSocket upgrades', () => {
  it('tunnels a WebSocket echo on an open route and refuses one on an unmatched path', async () => {
    const server = createServer();
    const wss = new WebSocketServer({ server });
    const seen: Record<string, string | string[] | undefined>[] = [];
    wss.on('connection', (socket, req) => {
      seen.push(req.headers);
      socket.on('message', (data) => socket.send(`echo:${data.toString()}`));
    });
    const upstream = await listen(server);
    const gw = await startGateway(`public_base_url: http://localhost:8080\nresource: http://localhost:8080\nupstream: { url: ${upstream} }\nroutes:\n  - match: { path: /ws/** }\n    auth: none\n`);
    try {
      const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws/chat`, { headers: { 'x-mission-id': 'spoofed' } });
      const reply = await new Promise<string>((resolve, reject) => {
        ws.on('open', () => ws.send('hello'));
        ws.on('message', (d) => resolve(d.toString()));
        ws.on('error', reject);
      });
      expect(reply).toBe('echo:hello');
      ws.close();
      expect(seen[0]!['x-mission-id']).toBeUndefined();
      expect(seen[0]!['mission-decision']).toMatch(/^dec_/);

      const denied = new WebSocket(`${gw.url.replace('http', 'ws')}/admin`);
      const status = await new Promise<number>((resolve) => {
        denied.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        denied.on('error', () => resolve(-1));
      });
      expect(status).toBe(403);
      const permit = gw.evidence().find((r) => r['path'] === '/ws/chat');
      expect(permit).toMatchObject({ decision: 'permit', upstream_status: 101 });
    } finally {
      await gw.close();
      wss.close();
      server.close();
    }
  });

  it('a client that resets its tunnel is routine: logged at debug, never at warn (r18c 4)', async () => {
    const server = createServer();
    const wss = new WebSocketServer({ server });
    wss.on('connection', (socket) => socket.on('message', (data) => socket.send(data)));
    const upstream = await listen(server);
    const lines: Array<{ level: number; msg: string }> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as { level: number; msg: string });
        done();
      },
    });
    const gw = await startGateway(`public_base_url: http://localhost:8080\nresource: http://localhost:8080\nupstream: { url: ${upstream} }\nroutes:\n  - match: { path: /ws/** }\n    auth: none\n`, { logger: createLogger('debug', sink) });
    try {
      for (let i = 0; i < 3; i++) {
        const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws/chat`);
        await new Promise<void>((resolve, reject) => {
          ws.on('open', () => ws.send('hello'));
          ws.on('message', () => resolve());
          ws.on('error', reject);
        });
        // A TCP reset, as a client whose process died or whose network dropped.
        (ws as unknown as { _socket: Socket })._socket.resetAndDestroy();
      }
      await eventually(() => lines.some((l) => l.msg === 'websocket tunnel reset'), 3000);
      expect(lines.filter((l) => l.level >= 40)).toEqual([]);
    } finally {
      await gw.close();
      wss.close();
      server.close();
    }
  });

  it('upstream.preserve_host: HTTP requests and upgrades carry the public Host, whatever the client sends; by default the upstream\'s', async () => {
    const server = createServer((req, res) => res.end(JSON.stringify({ host: req.headers.host, via: req.headers.via })));
    const wss = new WebSocketServer({ server });
    const upgraded: (string | undefined)[] = [];
    wss.on('connection', (socket, req) => {
      upgraded.push(req.headers.host);
      socket.close();
    });
    const upstream = await listen(server);
    const yaml = (preserve: string) => `public_base_url: http://localhost:8080\nresource: http://localhost:8080\nupstream: { url: ${upstream}${preserve} }\nroutes:\n  - match: { path: /ws/** }\n    auth: none\n`;
    const kept = await startGateway(yaml(', preserve_host: true'));
    const plain = await startGateway(yaml(''));
    const ws = (host: string) => `GET /ws/x HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;
    const seen = async (gw: TestGateway, head: string) => JSON.parse((await rawSocket(gw.url, head)).split('\r\n\r\n')[1]!) as { host: string; via: string };
    try {
      expect(await seen(kept, 'GET /ws/h HTTP/1.1\r\nHost: localhost:8080\r\nConnection: close\r\n\r\n')).toEqual({ host: 'localhost:8080', via: '1.1 mission-gateway' });
      // Another name (a virtual host the upstream also serves) never reaches it, nor does an absolute-form one.
      expect((await seen(kept, 'GET /ws/h HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n')).host).toBe('localhost:8080');
      expect((await seen(kept, 'GET http://internal.example/ws/h HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n')).host).toBe('localhost:8080');
      expect((await seen(plain, 'GET /ws/h HTTP/1.1\r\nHost: localhost:8080\r\nConnection: close\r\n\r\n')).host).toBe(new URL(upstream).host);
      expect(await rawSocket(kept.url, ws('internal.example'))).toMatch(/^HTTP\/1\.1 101/);
      expect(await rawSocket(plain.url, ws('localhost:8080'))).toMatch(/^HTTP\/1\.1 101/);
      await eventually(() => upgraded.length === 2);
      expect(upgraded).toEqual(['localhost:8080', new URL(upstream).host]);
    } finally {
      await kept.close();
      await plain.close();
      wss.close();
      server.close();
    }
  });

  it('keeps each header field of an upgrade a field of its own, and refuses an upgrade that carries a body', async () => {
    const server = createServer();
    const wss = new WebSocketServer({ server });
    const seen: string[][] = [];
    wss.on('connection', (socket, req) => {
      seen.push(req.rawHeaders);
      socket.close();
    });
    const upstream = await listen(server);
    const gw = await startGateway(`public_base_url: http://localhost:8080\nresource: http://localhost:8080\nupstream: { url: ${upstream} }\nroutes:\n  - match: { path: /ws/** }\n    auth: none\n`);
    const head = 'GET /ws/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
    try {
      // Joined with ", ", two Cookie fields would read upstream as one cookie `a` worth "1, b=2".
      expect(await rawSocket(gw.url, head + 'Cookie: a=1\r\nCookie: b=2\r\nX-Tag: one\r\nX-Tag: two\r\n\r\n')).toMatch(/^HTTP\/1\.1 101/);
      await eventually(() => seen.length === 1);
      const fields = (name: string): string[] => seen[0]!.filter((_v, i, all) => i % 2 === 1 && all[i - 1]!.toLowerCase() === name);
      expect(fields('cookie').join('; ')).toBe('a=1; b=2'); // Node's client sends them as one, RFC 6265 section 5.4's way
      expect(fields('x-tag')).toEqual(['one', 'two']);

      // A body after the handshake would be relayed into the tunnel as WebSocket frames.
      const withBody = await rawSocket(gw.url, head + 'Content-Length: 5\r\n\r\nhello');
      expect(withBody).toMatch(/^HTTP\/1\.1 400[^]*request_malformed/);
      const chunked = await rawSocket(gw.url, head + 'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
      expect(chunked).toMatch(/^HTTP\/1\.1 400[^]*request_malformed/);
      expect(await rawSocket(gw.url, head + 'Content-Length: 0\r\n\r\n')).toMatch(/^HTTP\/1\.1 101/);
      expect(seen).toHaveLength(2);
    } finally {
      await gw.close();
      wss.close();
      server.close();
    }
  });

  it('past upstream.websocket_tunnels a permitted upgrade is 503 with Retry-After and a record; a closed tunnel frees its place', async () => {
    const server = createServer();
    const wss = new WebSocketServer({ server });
    wss.on('connection', (socket) => socket.on('message', (d) => socket.send(d.toString())));
    const upstream = await listen(server);
    const gw = await startGateway(`public_base_url: http://localhost:8080\nresource: http://localhost:8080\nupstream: { url: ${upstream}, websocket_tunnels: 2 }\nroutes:\n  - match: { path: /ws/** }\n    auth: none\n`);
    const open = (): Promise<WebSocket> =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws/chat`);
        ws.on('open', () => resolve(ws));
        ws.on('error', reject);
      });
    try {
      const first = await open();
      const second = await open();
      const third = new WebSocket(`${gw.url.replace('http', 'ws')}/ws/chat`);
      const refused = await new Promise<{ status: number; retry: unknown; decision: unknown; body: string }>((resolve) => {
        third.on('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, retry: res.headers['retry-after'], decision: res.headers['mission-decision'], body }));
        });
        third.on('error', () => undefined);
      });
      expect(refused.status).toBe(503);
      expect(refused.retry).toBe('1');
      expect(JSON.parse(refused.body)).toMatchObject({ error: 'temporarily_unavailable', denial_reason: null, decision_id: refused.decision });
      await eventually(() => gw.evidence().some((r) => r['decision_id'] === refused.decision));
      expect(gw.evidence().find((r) => r['decision_id'] === refused.decision)).toMatchObject({ decision: 'permit', upstream_status: 503 });

      // The tunnels still open are untouched, and one closing makes room for the next.
      const echoed = await new Promise<string>((resolve) => {
        second.once('message', (d) => resolve(d.toString()));
        second.send('still here');
      });
      expect(echoed).toBe('still here');
      first.close();
      await eventually(async () => {
        try {
          (await open()).close();
          return true;
        } catch {
          return false;
        }
      });
      second.close();
    } finally {
      await gw.close();
      wss.close();
      server.close();
    }
  });

  it('a client that leaves before the upstream answers its upgrade frees its place under upstream.websocket_tunnels at once, recorded 499 (r13d)', async () => {
    const server = createServer();
    const wss = new WebSocketServer({ noServer: true });
    // /ws/slow is never answered; anything else is an echo.
    server.on('upgrade', (req, socket, head) => {
      socket.on('error', () => undefined);
      if (req.url === '/ws/slow') return;
      wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (d) => ws.send(d.toString())));
    });
    const upstream = await listen(server);
    const gw = await startGateway(`public_base_url: http://localhost:8080\nresource: http://localhost:8080\nupstream: { url: ${upstream}, timeout_s: 10, websocket_tunnels: 1 }\nroutes:\n  - match: { path: /ws/** }\n    auth: none\n`);
    try {
      const raw = (await import('node:net')).connect(Number(new URL(gw.url).port), '127.0.0.1');
      raw.on('error', () => undefined);
      raw.write('GET /ws/slow HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
      await new Promise((r) => setTimeout(r, 300));
      raw.end(); // gone: its FIN arrives, the socket is not reset
      const started = Date.now();
      const echoed = await eventually(async () => {
        const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws/chat`);
        try {
          return await new Promise<string>((resolve, reject) => {
            ws.on('open', () => ws.send('hi'));
            ws.on('message', (d) => resolve(d.toString()));
            ws.on('unexpected-response', (_req, res) => reject(new Error(`status ${res.statusCode ?? 0}`)));
            ws.on('error', reject);
          });
        } finally {
          ws.close();
        }
      });
      expect(echoed).toBe('hi');
      expect(Date.now() - started).toBeLessThan(3000); // not the 10 s upstream.timeout_s
      expect(gw.evidence().find((r) => r['path'] === '/ws/slow')).toMatchObject({ decision: 'permit', upstream_status: 499 });
    } finally {
      await gw.close();
      wss.close();
      server.close();
    }
  });

  it('an upgrade the upstream never answers is 504 within upstream.timeout_s, with its decision id, and releases the upstream socket', async () => {
    const { createServer: createNetServer } = await import('node:net');
    let open = 0;
    const silent = createNetServer((sock) => {
      open++;
      sock.on('close', () => open--);
      sock.resume();
    });
    const upstream = await new Promise<string>((r) => silent.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(silent.address() as { port: number }).port}`)));
    const gw = await startGateway(`public_base_url: http://localhost:8080\nresource: http://localhost:8080\nupstream: { url: ${upstream}, timeout_s: 0.5 }\nroutes:\n  - match: { path: /ws/** }\n    auth: none\n`);
    try {
      const started = Date.now();
      const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws/chat`);
      const got = await new Promise<{ status: number; decision: string | undefined; body: string }>((resolve) => {
        ws.on('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, decision: res.headers['mission-decision'] as string | undefined, body }));
        });
        ws.on('error', () => undefined);
      });
      expect(got.status).toBe(504);
      expect(Date.now() - started).toBeLessThan(3000);
      expect(JSON.parse(got.body)).toMatchObject({ error: 'gateway_timeout', decision_id: got.decision });
      expect(got.decision).toMatch(/^dec_/);
      await eventually(() => open === 0);
      expect(gw.evidence().find((r) => r['decision_id'] === got.decision)).toMatchObject({ decision: 'permit', upstream_status: 504 });

      // A client that leaves before the upstream answers takes the upstream request with it.
      const raw = (await import('node:net')).connect(Number(new URL(gw.url).port), '127.0.0.1');
      raw.write('GET /ws/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
      await eventually(() => open === 1);
      raw.destroy();
      await eventually(() => open === 0, 2000);
    } finally {
      await gw.close();
      silent.close();
    }
  });

  it('an upstream answering an upgrade with plain HTTP: relayed under the response policy, a foreign transfer coding 502; permitted upgrades are timed in the decision and upstream histograms (r19f 3, 4)', async () => {
    const { createServer: createNetServer } = await import('node:net');
    const answers: Record<string, string> = {
      '/ws/reason': 'HTTP/1.1 404 Not\x01Found\r\nContent-Length: 4\r\n\r\nnope',
      '/ws/hop': 'HTTP/1.1 403 Forbidden\r\nConnection: close, X-Internal-Token\r\nX-Internal-Token: secret-123\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nno',
      '/ws/coded': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
      '/ws/chunked': 'HTTP/1.1 426 Upgrade Required\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    };
    let streaming = 0;
    const plain = createNetServer((sock) => {
      let head = '';
      sock.on('data', (c: Buffer) => {
        head += c.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        const path = head.split(' ')[1]!;
        if (path === '/ws/stream') {
          // An event stream that never ends on its own.
          streaming++;
          sock.on('close', () => streaming--);
          sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n');
          const tick = setInterval(() => sock.write('data: x\n\n'), 20);
          sock.on('close', () => clearInterval(tick));
          return;
        }
        sock.end(answers[path] ?? 'HTTP/1.1 500 x\r\nContent-Length: 0\r\n\r\n');
      });
      sock.on('error', () => undefined);
    });
    const upstream = await new Promise<string>((r) => plain.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(plain.address() as { port: number }).port}`)));
    const gw = await startGateway(`public_base_url: http://localhost:8080\nresource: http://localhost:8080\nupstream: { url: ${upstream} }\nroutes:\n  - match: { path: /ws/** }\n    auth: none\n`);
    const upgrade = (path: string): Promise<string> => rawSocket(gw.url, `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
    const headOf = (out: string): string => out.slice(0, out.indexOf('\r\n\r\n')).toLowerCase();
    try {
      const reason = await upgrade('/ws/reason');
      expect(reason).toMatch(/^HTTP\/1\.1 404 Not Found\r\n/);
      expect(reason.endsWith('\r\n\r\nnope')).toBe(true);
      const hop = await upgrade('/ws/hop');
      expect(hop).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
      expect(headOf(hop)).toContain('x-kept: yes');
      expect(headOf(hop)).not.toContain('x-internal-token');
      expect(headOf(hop)).not.toContain('keep-alive');
      expect(headOf(hop)).not.toContain('upgrade');
      expect(headOf(hop)).toContain('connection: close');
      const coded = await upgrade('/ws/coded');
      expect(coded).toMatch(/^HTTP\/1\.1 502 /);
      expect(coded).not.toContain('abc');
      const chunked = await upgrade('/ws/chunked');
      expect(chunked).toMatch(/^HTTP\/1\.1 426 Upgrade Required\r\n/);
      expect(chunked).toContain('hello');
      await eventually(() => gw.evidence().filter((r) => r['path']?.toString().startsWith('/ws/')).length === 4);
      expect(gw.evidence().map((r) => r['upstream_status'])).toEqual([404, 403, 502, 426]);
      const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
      expect(metrics).toMatch(/^mission_gateway_decision_seconds_count\{kind="route"\} 4$/m);
      expect(metrics).toMatch(/^mission_gateway_upstream_seconds_count 4$/m);

      // A client that leaves during such an answer takes the upstream request with it (r20a 3).
      const { connect } = await import('node:net');
      const client = connect(Number(new URL(gw.url).port), '127.0.0.1');
      client.write('GET /ws/stream HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
      let got = '';
      client.on('data', (c: Buffer) => (got += c.toString('latin1')));
      await eventually(() => got.includes('data: x'));
      expect(streaming).toBe(1);
      client.destroy();
      await eventually(() => streaming === 0, 2000);
    } finally {
      await gw.close();
      plain.close();
    }
  });

  it('an upgrade answered with no HTTP status (099, 600) is 502 and the process lives; a 204 with a body reaches the client as a 204; an upstream Mission-Decision never does (r21d 2, 4, 5)', async () => {
    const { createServer: createNetServer } = await import('node:net');
    const answers: Record<string, string> = {
      '/ws/s099': 'HTTP/1.1 099 Whatever\r\nContent-Length: 0\r\n\r\n',
      '/ws/s000': 'HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n',
      '/ws/s600': 'HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nno',
      '/ws/nocontent': 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello',
      '/ws/forged': 'HTTP/1.1 403 Forbidden\r\nMission-Decision: dec_FORGED\r\nContent-Length: 2\r\n\r\nno',
    };
    const plain = createNetServer((sock) => {
      let head = '';
      sock.on('data', (c: Buffer) => {
        head += c.toString('latin1');
        if (head.includes('\r\n\r\n')) sock.end(answers[head.split(' ')[1]!] ?? 'HTTP/1.1 500 x\r\nContent-Length: 0\r\n\r\n');
      });
      sock.on('error', () => undefined);
    });
    const upstream = await new Promise<string>((r) => plain.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(plain.address() as { port: number }).port}`)));
    const gw = await startGateway(`public_base_url: http://localhost:8080\nresource: http://localhost:8080\nupstream: { url: ${upstream} }\nroutes:\n  - match: { path: /ws/** }\n    auth: none\n`);
    const upgrade = (path: string): Promise<string> => rawSocket(gw.url, `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
    try {
      for (const path of ['/ws/s099', '/ws/s000', '/ws/s600']) {
        const out = await upgrade(path);
        expect(out, path).toMatch(/^HTTP\/1\.1 502 /);
        expect(out).toContain('"error":"bad_gateway"');
      }
      const nocontent = await upgrade('/ws/nocontent');
      expect(nocontent).toMatch(/^HTTP\/1\.1 204 No Content\r\n/);
      expect(nocontent).not.toContain('hello');
      const forged = await upgrade('/ws/forged');
      expect(forged).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
      expect(forged.toLowerCase()).not.toContain('mission-decision');
      await eventually(() => gw.evidence().length === 5);
      expect(gw.evidence().map((r) => r['upstream_status'])).toEqual([502, 502, 502, 204, 403]);
      // Still serving.
      expect((await fetch(`${gw.adminUrl}/healthz`)).status).toBe(200);
    } finally {
      await gw.close();
      plain.close();
    }
  });

  it('a request read while the gateway drains is answered with Connection: close and every field of the upstream\'s answer (two Set-Cookie)', async () => {
    let release: (() => void) | null = null;
    const up = await startEcho((req, res) => {
      const answer = (): void => {
        res.writeHead(200, ['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'Content-Length', '2']);
        res.end('ok');
      };
      if (req.url === '/public/first') release = answer;
      else answer();
    });
    const gw = await startGateway(cfg(up.url));
    const { connect } = await import('node:net');
    const socket = connect(Number(new URL(gw.url).port), '127.0.0.1');
    let got = '';
    socket.on('data', (c: Buffer) => (got += c.toString('latin1')));
    socket.write('GET /public/first HTTP/1.1\r\nHost: a\r\n\r\n');
    await eventually(() => release !== null);
    const closing = gw.gateway.close(5000);
    // Read after the drain began (pipelined behind the first, which is still in flight).
    socket.write('GET /public/second HTTP/1.1\r\nHost: a\r\n\r\n');
    await new Promise((r) => setTimeout(r, 50));
    release!();
    await eventually(() => (got.match(/HTTP\/1\.1 200/g) ?? []).length === 2);
    const second = got.slice(got.lastIndexOf('HTTP/1.1 200'));
    expect(second).toMatch(/\r\nconnection: close\r\n/i);
    expect(second.match(/set-cookie: [ab]=[12]/gi)).toEqual(['Set-Cookie: a=1', 'Set-Cookie: b=2']);
    socket.destroy();
    await closing;
    await up.close();
  });

  it('timeouts in seconds that are not whole milliseconds as doubles (2.01 s) forward, and ask Mission Status, as any (r20b 3)', async () => {
    const up = await startEcho();
    const gw = await startGateway(cfg(up.url).replace('timeout_s: 5', 'timeout_s: 2.01, keep_alive_timeout_s: 4.01') + 'mission: { status_timeout_s: 2.01, max_stale_s: 60.0005 }\n');
    try {
      const r = await fetch(`${gw.url}/public/x`);
      expect(r.status).toBe(200);
    } finally {
      await gw.close();
      await up.close();
    }
  });

  it("a permit's record carries the decision's time: evaluated_at and duration_ms exclude the upstream's (r20d 2)", async () => {
    const slow = await startEcho((_req, res) => void setTimeout(() => res.end('late'), 400));
    const gw = await startGateway(cfg(slow.url));
    try {
      const sent = Date.now();
      const r = await fetch(`${gw.url}/public/slow`);
      const answered = Date.now();
      expect([r.status, await r.text()]).toEqual([200, 'late']);
      expect(answered - sent).toBeGreaterThanOrEqual(390);
      await eventually(() => gw.evidence().length === 1);
      const rec = gw.evidence()[0]!;
      expect(rec).toMatchObject({ decision: 'permit', upstream_status: 200 });
      expect(rec['duration_ms'] as number).toBeLessThan(200);
      expect(Date.parse(rec['evaluated_at'] as string) - sent).toBeLessThan(200);
    } finally {
      await gw.close();
      await slow.close();
    }
  });

  it('an upgrade to an unreachable upstream is 502 with its decision id, and the record says 502', async () => {
    const gw = await startGateway(`public_base_url: http://localhost:8080\nresource: http://localhost:8080\nupstream: { url: http://127.0.0.1:9 }\nroutes:\n  - match: { path: /ws/** }\n    auth: none\n`);
    try {
      const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws/chat`);
      const got = await new Promise<{ status: number; decision: string | undefined }>((resolve) => {
        ws.on('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0, decision: res.headers['mission-decision'] as string | undefined }));
        ws.on('error', () => undefined);
      });
      expect(got.status).toBe(502);
      expect(got.decision).toMatch(/^dec_/);
      await eventually(() => gw.evidence().some((r) => r['decision_id'] === got.decision));
      expect(gw.evidence().find((r) => r['decision_id'] === got.decision)).toMatchObject({ decision: 'permit', upstream_status: 502 });
    } finally {
      await gw.close();
    }
  });
});

describe('key files (SPEC §2: a private JWK or a PKCS#8 PEM)', () => {
  it('keygen writes a private JWK with mode 0600 and prints its public JWK; check accepts it, and a PEM', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgw-keys-'));
    const key = join(dir, 'gw.jwk');
    const gen = spawnSync(process.execPath, [CLI, 'keygen', key], { encoding: 'utf8' });
    expect(gen.status).toBe(0);
    const pub = JSON.parse(gen.stdout) as Record<string, string>;
    expect(pub).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256' });
    expect(pub['d']).toBeUndefined();
    expect(statSync(key).mode & 0o777).toBe(0o600);
    expect(spawnSync(process.execPath, [CLI, 'keygen', key], { encoding: 'utf8' }).status).toBe(2); // never overwrites
    // --force replaces a world-readable file with an owner-only one (r20b 4).
    chmodSync(key, 0o644);
    expect(spawnSync(process.execPath, [CLI, 'keygen', key, '--force'], { encoding: 'utf8' }).status).toBe(0);
    expect(statSync(key).mode & 0o777).toBe(0o600);
    const pem = join(dir, 'gw.pem');
    writeFileSync(pem, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    for (const file of [key, pem]) {
      const cfgFile = join(dir, 'gw.yaml');
      writeFileSync(cfgFile, `public_base_url: https://api.example.com\nresource: https://api.example.com\nupstream: { url: http://127.0.0.1:3000 }\nmission: { client: { client_id: gw, private_key_file: ${file} } }\n`);
      const r = spawnSync(process.execPath, [CLI, 'check', '--config', cfgFile], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    }
  });

  it('check and start refuse a missing or public key file, naming the key path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgw-keys-'));
    const pubFile = join(dir, 'pub.jwk');
    writeFileSync(pubFile, JSON.stringify(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' })));
    for (const [file, message] of [
      [join(dir, 'missing.jwk'), /mission\.client\.private_key_file: cannot read .*missing\.jwk \(ENOENT\)/],
      [pubFile, /mission\.client\.private_key_file: .*pub\.jwk is not a private JWK or a PKCS#8 PEM/],
    ] as const) {
      const cfgFile = join(dir, 'gw.yaml');
      writeFileSync(cfgFile, `public_base_url: https://api.example.com\nresource: https://api.example.com\nupstream: { url: http://127.0.0.1:3000 }\nmission: { client: { client_id: gw, private_key_file: ${file} } }\n`);
      const check = spawnSync(process.execPath, [CLI, 'check', '--config', cfgFile], { encoding: 'utf8' });
      expect(check.status).toBe(2);
      expect(check.stderr).toMatch(message);
      const start = spawnSync(process.execPath, [CLI, '--config', cfgFile], { encoding: 'utf8', timeout: 10_000 });
      expect(start.status).toBe(2);
      expect(start.stderr).toMatch(message);
    }
  });
});
