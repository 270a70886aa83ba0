/**
 * `mission-gateway check` refuses what would make start fail, and start refuses it the same way:
 * exit 2 and the same `key.path: message` lines (SPEC section 2). Real processes.
 */
import { generateKeyPairSync } from 'node:crypto';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfigText } from '../../src/config/load.js';
import { CLI, startGateway } from '../helpers/gateway.js';

const root = resolve(__dirname, '../..');
const BASE = 'public_base_url: https://api.example.com\nresource: https://api.example.com\nupstream: { url: "http://127.0.0.1:3000" }\nroutes: [{ match: { path: /public/** }, auth: none }]\n';

function write(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'mgw-check-'));
  const file = join(dir, 'gw.yaml');
  writeFileSync(file, text);
  return file;
}

/** `check`, then start (which must exit 2 before it listens), on the same file. */
function both(file: string): { check: SpawnSyncReturns<string>; start: SpawnSyncReturns<string> } {
  const check = spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8' });
  const start = spawnSync(process.execPath, [CLI, '--config', file], { encoding: 'utf8', timeout: 10_000 });
  return { check, start };
}

function problems(text: string): readonly string[] {
  try {
    parseConfigText(text, '/tmp', {});
  } catch (err) {
    return (err as ConfigError).problems;
  }
  return [];
}

describe('check catches what makes start fail; start exits 2 with the same message', () => {
  it('upstream.url with credentials (they would not be sent, and would be logged)', () => {
    const withCreds = BASE.replace('http://127.0.0.1:3000', 'http://svc:s3cret@127.0.0.1:3000');
    expect(problems(withCreds)).toEqual(['upstream.url: must not carry credentials (user:password@): they are not sent upstream, and would be logged']);
  });

  it("every problem at once: the schema's and what start needs of this machine, for the parts that validated (r21e 1)", () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgw-check-'));
    const file = join(dir, 'gw.yaml');
    writeFileSync(file, `${BASE}bogus: 1\nmission:\n  client: { client_id: gw, private_key_file: keys/missing.jwk }\nevidence: { sink: /nonexistent-mgw/evidence.jsonl }\n`);
    const { check, start } = both(file);
    expect(check.status).toBe(2);
    expect(check.stderr.trim().split('\n')).toEqual([
      'bogus: unknown key',
      `mission.client.private_key_file: cannot read ${join(dir, 'keys/missing.jwk')} (ENOENT); create one with \`mission-gateway keygen ${join(dir, 'keys/missing.jwk')}\``,
      'evidence.sink: folder /nonexistent-mgw does not exist; create it (the gateway does not)',
    ]);
    expect(start.status).toBe(2);
    expect(start.stderr).toBe(check.stderr);
    // A value the schema refused is not looked for on disk.
    writeFileSync(file, `${BASE}evidence: { sink: 42 }\n`);
    expect(both(file).check.stderr.trim()).toBe('evidence.sink: must be string');
  });

  it('public_base_url with credentials: check refuses it, as start does, with exit 2 (r21a 5)', () => {
    const { check, start } = both(write(`${BASE.replace('https://api.example.com\n', 'http://admin:s3cret@localhost:8080\n')}evidence: { sink: stdout }\n`));
    expect(check.status).toBe(2);
    expect(check.stderr.trim()).toBe('public_base_url: must be scheme://host[:port] with no credentials, path, query or fragment');
    expect(start.status).toBe(2);
    expect(start.stderr).toBe(check.stderr);
    expect(check.stderr + start.stderr).not.toContain('s3cret');
  });

  it('issuer, JWKS, Status and poll URLs with credentials (r20b 6: they would never be sent)', () => {
    const text = `${BASE}issuers: [{ issuer: https://as.example.com, jwks_uri: "https://:pw@as.example.com/jwks" }]\nmission:\n  authorities: [{ issuer: https://mas.example.com, status_endpoint: "https://u@mas.example.com/status" }]\n  events: { poll: { endpoint: "https://u:pw@mas.example.com/poll" } }\n`;
    const message = 'must not carry credentials (user:password@): they are never sent, and would be logged';
    expect(problems(text)).toEqual(expect.arrayContaining([`issuers[0].jwks_uri: ${message}`, `mission.authorities[0].status_endpoint: ${message}`, `mission.events.poll.endpoint: ${message}`]));
  });

  it('listen and admin on the same host:port (or a wildcard and any host on one port)', () => {
    for (const [listen, admin, message] of [
      ['{ host: 127.0.0.1, port: 18080 }', '{ host: 127.0.0.1, port: 18080 }', 'admin (127.0.0.1:18080) and listen (127.0.0.1:18080) overlap on port 18080: the same address'],
      // default hosts: 0.0.0.0 and 127.0.0.1 overlap
      ['{ port: 18080 }', '{ port: 18080 }', 'admin (127.0.0.1:18080) and listen (0.0.0.0:18080) overlap on port 18080: 0.0.0.0 is every address of this host'],
      // localhost is loopback: the second bind would fail with EADDRINUSE
      ['{ host: localhost, port: 18080 }', '{ host: 127.0.0.1, port: 18080 }', 'admin (127.0.0.1:18080) and listen (localhost:18080) overlap on port 18080: localhost is 127.0.0.1 and ::1'],
    ]) {
      const { check, start } = both(write(`${BASE}listen: ${listen}\nadmin: ${admin}\nevidence: { sink: stdout }\n`));
      expect(check.status).toBe(2);
      expect(check.stderr.trim()).toBe(`admin.port: ${message}; the admin listener needs its own port`);
      expect(start.status).toBe(2);
      expect(start.stderr).toBe(check.stderr);
    }
    // Distinct specific hosts, or port 0, do not clash.
    expect(problems(`${BASE}listen: { host: 127.0.0.1, port: 18080 }\nadmin: { host: 127.0.0.2, port: 18080 }\n`)).toEqual([]);
    expect(problems(`${BASE}listen: { host: 127.0.0.1, port: 0 }\nadmin: { host: 127.0.0.1, port: 0 }\n`)).toEqual([]);
    expect(problems(`${BASE}listen: { host: localhost, port: 0 }\nadmin: { host: 0.0.0.0, port: 0 }\n`)).toEqual([]);
    expect(problems(`${BASE}listen: { host: localhost, port: 18080 }\nadmin: { host: 127.0.0.2, port: 18080 }\n`)).toEqual([]);
    expect(problems(`${BASE}listen: { host: localhost, port: 18080 }\nadmin: { host: localhost, port: 18081 }\n`)).toEqual([]);
    expect(problems(`${BASE}listen: { host: api.internal, port: 18080 }\nadmin: { host: 127.0.0.1, port: 18080 }\n`)).toEqual([]); // no DNS lookup
  });

  it('listen and admin overlapping on one port: localhost is 127.0.0.1 and ::1, a wildcard is every host', () => {
    const clash = (listenHost: string, adminHost: string): readonly string[] => problems(`${BASE}listen: { host: "${listenHost}", port: 18080 }\nadmin: { host: "${adminHost}", port: 18080 }\n`);
    const needs = '; the admin listener needs its own port';
    expect(clash('127.0.0.1', 'localhost')).toEqual([`admin.port: admin (localhost:18080) and listen (127.0.0.1:18080) overlap on port 18080: localhost is 127.0.0.1 and ::1${needs}`]);
    expect(clash('LocalHost', '::1')).toEqual([`admin.port: admin ([::1]:18080) and listen (LocalHost:18080) overlap on port 18080: LocalHost is 127.0.0.1 and ::1${needs}`]);
    expect(clash('[::1]', 'localhost')).toEqual([`admin.port: admin (localhost:18080) and listen ([::1]:18080) overlap on port 18080: localhost is 127.0.0.1 and ::1${needs}`]);
    // An IPv4-mapped IPv6 address binds the IPv4 address (EADDRINUSE on Linux).
    expect(clash('127.0.0.1', '::ffff:127.0.0.1')).toEqual([`admin.port: admin ([::ffff:127.0.0.1]:18080) and listen (127.0.0.1:18080) overlap on port 18080: the same address${needs}`]);
    expect(clash('[::ffff:7f00:1]', 'localhost')).toEqual([`admin.port: admin (localhost:18080) and listen ([::ffff:7f00:1]:18080) overlap on port 18080: localhost is 127.0.0.1 and ::1${needs}`]);
    expect(clash('::ffff:10.0.0.1', '10.0.0.2')).toEqual([]);
    expect(clash('localhost', 'localhost')).toEqual([`admin.port: admin (localhost:18080) and listen (localhost:18080) overlap on port 18080: the same address${needs}`]);
    expect(clash('0.0.0.0', '10.1.2.3')).toEqual([`admin.port: admin (10.1.2.3:18080) and listen (0.0.0.0:18080) overlap on port 18080: 0.0.0.0 is every address of this host${needs}`]);
    expect(clash('::', '127.0.0.1')).toEqual([`admin.port: admin (127.0.0.1:18080) and listen ([::]:18080) overlap on port 18080: :: is every address of this host${needs}`]);
    expect(clash('127.0.0.1', '::')).toEqual([`admin.port: admin ([::]:18080) and listen (127.0.0.1:18080) overlap on port 18080: :: is every address of this host${needs}`]);
    expect(clash('localhost', '0.0.0.0')).toEqual([`admin.port: admin (0.0.0.0:18080) and listen (localhost:18080) overlap on port 18080: 0.0.0.0 is every address of this host${needs}`]);
    expect(clash('api.internal', '::')).toEqual([`admin.port: admin ([::]:18080) and listen (api.internal:18080) overlap on port 18080: :: is every address of this host${needs}`]);
    // One IPv6 address written two ways.
    expect(clash('0:0:0:0:0:0:0:1', '::1')).toEqual([`admin.port: admin ([::1]:18080) and listen ([0:0:0:0:0:0:0:1]:18080) overlap on port 18080: the same address${needs}`]);
    expect(clash('0:0:0:0:0:0:0:0', '127.0.0.1')).toHaveLength(1);
  });

  it('a Mission Status client key the client cannot sign with is refused by check and start alike (r20b 2)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgw-client-'));
    const key = join(dir, 'client.key');
    const file = join(dir, 'gw.yaml');
    writeFileSync(file, `${BASE}listen: { host: 127.0.0.1, port: 0 }\nadmin: { host: 127.0.0.1, port: 0 }\nmission: { client: { client_id: gw, private_key_file: ./client.key } }\n`);
    const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
    const cases: [string, RegExp][] = [
      [generateKeyPairSync('x25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, /unsupported client key type/],
      [JSON.stringify({ ...p256, alg: 'ES384' }), /JWK "alg" "ES384" cannot be used with this key \(ES256 can\)/],
      [JSON.stringify({ ...p256, alg: 'HS256' }), /JWK "alg" "HS256" cannot be used/],
      [generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, /shorter than 2048 bits/],
    ];
    for (const [text, message] of cases) {
      writeFileSync(key, text);
      const { check, start } = both(file);
      expect(check.status).toBe(2);
      expect(check.stderr).toMatch(new RegExp(`^mission\\.client\\.private_key_file: ${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
      expect(check.stderr).toMatch(message);
      expect(start.status).toBe(2);
      expect(start.stderr).toBe(check.stderr);
    }
    writeFileSync(key, JSON.stringify({ ...p256, alg: 'ES256' }));
    expect(spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8' }).status).toBe(0);
  });

  it('an evidence signing key that is not EC P-256 (an Ed25519 key from keygen --alg EdDSA), named by its path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgw-sign-'));
    const key = join(dir, 'ed.jwk');
    const gen = spawnSync(process.execPath, [CLI, 'keygen', key, '--alg', 'EdDSA'], { encoding: 'utf8' });
    expect(gen.status).toBe(0);
    const file = join(dir, 'gw.yaml');
    writeFileSync(file, `${BASE}listen: { host: 127.0.0.1, port: 0 }\nadmin: { host: 127.0.0.1, port: 0 }\nevidence: { sink: stdout, sign: { private_key_file: ./ed.jwk } }\n`);
    const { check, start } = both(file);
    expect(check.status).toBe(2);
    expect(check.stderr.trim()).toBe(`evidence.sign.private_key_file: ${key}: the evidence signing key must be an EC P-256 key (ES256), not Ed25519; \`mission-gateway keygen <file>\` makes one`);
    expect(start.status).toBe(2);
    expect(start.stderr).toBe(check.stderr);
    // A P-256 key passes.
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(key, JSON.stringify(privateKey.export({ format: 'jwk' })));
    expect(spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8' }).status).toBe(0);
  });

  it('an evidence file whose folder does not exist, or a folder named as the file', () => {
    const { check, start } = both(write(`${BASE}listen: { host: 127.0.0.1, port: 0 }\nadmin: { host: 127.0.0.1, port: 0 }\nevidence: { sink: ./missing/evidence.jsonl }\n`));
    expect(check.status).toBe(2);
    expect(check.stderr).toMatch(/^evidence\.sink: folder .*\/missing does not exist; create it \(the gateway does not\)$/m);
    expect(start.status).toBe(2);
    expect(start.stderr).toBe(check.stderr);
    const folder = both(write(`${BASE}evidence: { sink: /tmp }\n`)).check;
    expect(folder.status).toBe(2);
    expect(folder.stderr).toContain('evidence.sink: /tmp is a folder; name a file in it');
  });

  it('limits.request_timeout_s below limits.headers_timeout_s (Node refuses the pair at start)', () => {
    const { check, start } = both(write(`${BASE}listen: { host: 127.0.0.1, port: 0 }\nadmin: { host: 127.0.0.1, port: 0 }\nevidence: { sink: stdout }\nlimits: { request_timeout_s: 8 }\n`));
    expect(check.status).toBe(2);
    expect(check.stderr.trim()).toBe('limits.request_timeout_s: 8 is below limits.headers_timeout_s (10); it must be at least that, or 0 to disable it');
    expect(start.status).toBe(2);
    expect(start.stderr).toBe(check.stderr);
    expect(problems(`${BASE}limits: { headers_timeout_s: 400 }\n`)).toEqual(['limits.request_timeout_s: 300 is below limits.headers_timeout_s (400); it must be at least that, or 0 to disable it']);
    // Equal, above, or 0 (no whole-request limit) are accepted.
    expect(problems(`${BASE}limits: { request_timeout_s: 10 }\n`)).toEqual([]);
    expect(problems(`${BASE}limits: { headers_timeout_s: 2, request_timeout_s: 2.5 }\n`)).toEqual([]);
    expect(problems(`${BASE}limits: { headers_timeout_s: 400, request_timeout_s: 0 }\n`)).toEqual([]);
  });

  it('timeouts in fractional seconds that are not whole milliseconds as doubles (2.01 s is 2009.999... ms) start', async () => {
    expect(problems(`${BASE}limits: { headers_timeout_s: 2.01, request_timeout_s: 2.03, keep_alive_timeout_s: 4.03 }\n`)).toEqual([]);
    const gw = await startGateway(`${BASE}limits: { headers_timeout_s: 2.01, request_timeout_s: 2.03, keep_alive_timeout_s: 4.03 }\n`);
    try {
      expect((await fetch(`${gw.adminUrl}/healthz`)).status).toBe(200);
    } finally {
      await gw.close();
    }
  });

  it('warns (exit 0) when authenticated routes have no mission.client, and not for an auth: none-only config', () => {
    const file = write(`public_base_url: https://api.example.com\nresource: https://api.example.com\nupstream: { url: "http://127.0.0.1:3000" }\nissuers: [{ issuer: https://as.example.com }]\nroutes: [{ match: { path: /a }, action: a.read }]\nevidence: { sink: stdout }\n`);
    const r = spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^warning: mission\.client: not configured/);
    const open = spawnSync(process.execPath, [CLI, 'check', '--config', write(`${BASE}evidence: { sink: stdout }\n`)], { encoding: 'utf8' });
    expect(open.status).toBe(0);
    expect(open.stderr).toBe('');
  });
});

describe('config problems read `key.path: message`', () => {
  it('a missing required key is "is required", not a type error', () => {
    expect(problems('resource: x\nupstream: { url: http://a }\n')).toEqual(['public_base_url: is required']);
    expect(problems('public_base_url: https://a\nresource: x\nupstream: { url: http://a }\nreplay_store: { type: redis }\nid_jag: { token_path: /t }\nmission: { client: { client_id: a } }\n')).toEqual(
      expect.arrayContaining(['mission.client.private_key_file: is required', 'id_jag.trusted_issuers: is required', 'replay_store.url: is required']),
    );
    // A present value of the wrong type is still a type error.
    expect(problems('public_base_url: 5\nresource: x\nupstream: { url: http://a }\n')).toEqual(['public_base_url: must be string']);
  });

  it('an unset ${ENV} is one problem, not followed by the malformed value it left; zod wording is rephrased', () => {
    expect(problems('public_base_url: "${MGW_NOT_SET_ANYWHERE}"\nresource: x\nupstream: { url: http://a }\n')).toEqual(['public_base_url: environment variable MGW_NOT_SET_ANYWHERE is not set']);
    expect(problems('public_base_url: https://a\nresource: x\nupstream: { url: http://a, connections: 0 }\nreplay_store: { type: foo }\nissuers: [{ issuer: https://as, algorithms: [] }]\n')).toEqual(
      expect.arrayContaining(['upstream.connections: must be >= 1', "replay_store.type: must be one of 'memory', 'redis'", 'issuers[0].algorithms: must have at least 1 item']),
    );
  });
});

describe('the example configs pass check', () => {
  it('every config/*.yaml, container.yaml included, exits 0', () => {
    const files = readdirSync(join(root, 'config')).filter((f) => f.endsWith('.yaml'));
    expect(files).toContain('container.yaml');
    for (const f of files) {
      const r = spawnSync(process.execPath, [CLI, 'check', '--config', `config/${f}`], { cwd: root, encoding: 'utf8' });
      expect(r.stderr, f).toBe('');
      expect(r.status, f).toBe(0);
    }
  });
});

describe('evidence files are neither tracked nor shipped', () => {
  it('git tracks no evidence file under config/, and npm pack would ship none (even one a local run left there)', () => {
    const tracked = spawnSync('git', ['ls-files', 'config'], { cwd: root, encoding: 'utf8' });
    expect(tracked.status).toBe(0);
    expect(tracked.stdout.split('\n').filter((f) => f.endsWith('.jsonl'))).toEqual([]);
    for (const f of ['config/evidence.jsonl', 'config/evidence-mcp.jsonl']) {
      expect(spawnSync('git', ['check-ignore', '-q', '--no-index', f], { cwd: root }).status, f).toBe(0);
    }
    const pack = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' });
    expect(pack.status).toBe(0);
    const files = (JSON.parse(pack.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
    expect(files).toContain('config/example.yaml');
    expect(files).toContain('config/container.yaml');
    expect(files.filter((f) => f.endsWith('.jsonl'))).toEqual([]);
    // package.json names what config/ ships, so a file a run writes there is never packed.
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { files: string[] };
    expect(pkg.files).not.toContain('config');
  });
});

describe('a config file says what it means, or is refused (r13a)', () => {
  it('a __proto__ key, anywhere, is refused: its members would be read as keys nobody wrote (DPoP off)', () => {
    expect(problems(`${BASE}__proto__: { dpop: { required: false } }\n`)).toEqual(['(file): __proto__ is not a config key at line 5, column 1']);
    expect(problems(BASE.replace('upstream: { url: "http://127.0.0.1:3000" }', 'upstream: { url: "http://127.0.0.1:3000", __proto__: { timeout_s: 1 } }'))).toEqual([
      '(file): __proto__ is not a config key at line 3, column 43',
    ]);
  });

  it('a YAML error names its code and place, never the text there (it may be a secret written in the file)', () => {
    const secret = (value: string) => problems(`${BASE}dpop: { nonce: true, nonce_secret: ${value} }\n`);
    expect(secret('*hunter2-alias-secret')).toEqual(['(file): an alias (*name) that names no anchor (BAD_ALIAS) at line 5, column 36']);
    expect(secret('!hunter2-tag-secret')).toEqual(['(file): an unknown tag (!name) (TAG_RESOLVE_FAILED) at line 5, column 36']);
    for (const value of ['|hunter2-block', '>hunter2-folded', '@hunter2-at', '`hunter2-tick', '"hunter2\\q"']) {
      const [problem, ...rest] = secret(value);
      expect(rest).toEqual([]);
      expect(problem).toMatch(/^\(file\): .* \([A-Z_0-9]+\) at line \d+, column \d+$/);
      expect(problem).not.toContain('hunter2');
    }
  });

  it('a second YAML document is refused, not dropped unread', () => {
    const [problem] = problems(`${BASE}---\ndpop: { nonce: true }\n`);
    expect(problem).toMatch(/^\(file\): Source contains multiple documents/);
  });

  it('a file of thousands of YAML aliases is refused at once, not after a parse quadratic in them (r20b 1); a few are fine', () => {
    const many = `${BASE}x_anchor: &a 10.0.0.1\ntrusted_proxies: [${Array(12_000).fill('*a').join(', ')}]\n`;
    expect(problems(many)[0]).toMatch(/^\(file\): more than 100 YAML aliases/);
    const few = `${BASE.replace('routes:', 'trusted_proxies: [&p 10.0.0.1, *p]\nroutes:')}`;
    expect(problems(few)).toEqual([]);
  });

  it('keys that become one property name are duplicates: 1 and "1", true and "true", an alias and its key; a key that is a mapping is refused', () => {
    const mcp = (map: string) => `${BASE}issuers: [{ issuer: https://as.example.com }]\nmcp: { path: /mcp, tool_actions: ${map} }\n`;
    expect(problems(mcp('{ 1: a.b, "1": c.d }'))[0]).toMatch(/^\(file\): Map keys must be unique: "1"/);
    expect(problems(mcp('{ true: a.b, "true": c.d }'))[0]).toMatch(/^\(file\): Map keys must be unique: "true"/);
    expect(problems(BASE.replace('resource: https://api.example.com', 'resource: &r resource\n*r : https://evil.example.com'))[0]).toMatch(/^\(file\): Map keys must be unique: "resource"/);
    expect(problems(`${BASE}? { a: 1 }\n: x\n`)[0]).toMatch(/^\(file\): a key must be a plain value/);
    // A null key loads as "", as does "": one key (r13d); "null" is another.
    expect(problems(mcp('{ ~: a.b, "": c.d }'))[0]).toMatch(/^\(file\): Map keys must be unique: ""/);
    expect(problems(mcp('{ ~: a.b, "null": c.d }'))).toEqual([]);
  });

  it('a file that is not UTF-8 is refused, not read with its bytes replaced', () => {
    const file = write('');
    writeFileSync(file, Buffer.concat([Buffer.from(BASE.replace('https://api.example.com\nupstream', 'https://api.example.com/caf')), Buffer.from([0xe9]), Buffer.from('\nupstream: { url: "http://127.0.0.1:3000" }\n')]));
    const r = spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe(`(file): ${file} is not UTF-8 text`);
  });

  it('route paths, mcp.path, id_jag.token_path and mission.events.push_path are checked as requests are matched: normalizable, normalized, not duplicated after normalization', () => {
    const route = (path: string, method = '') => BASE.replace('routes: [{ match: { path: /public/** }, auth: none }]', `routes: [{ match: { path: /public/** }, auth: none }, { match: { ${method}path: ${JSON.stringify(path)} }, auth: none }]`);
    expect(problems(route('/a%zz'))).toEqual(['routes[1].match.path: cannot be normalized: invalid percent-encoding']);
    expect(problems(route('/a%00/**'))).toEqual(['routes[1].match.path: cannot be normalized: encoded NUL in path']);
    expect(problems(route('/a\tb'))).toEqual(['routes[1].match.path: cannot be normalized: control character in path']);
    for (const dup of ['/public//**', '/public/./**', '/%70ublic/**']) expect([dup, problems(route(dup))]).toEqual([dup, ['routes[1].match: duplicates routes[0].match']]);
    expect(problems(route('/other', 'method: [GET, GET], '))).toEqual(['routes[1].match.method: lists a method twice']);
    const mcp = (path: string) => `${BASE}issuers: [{ issuer: https://as.example.com }]\nmcp: { path: ${path} }\n`;
    expect(problems(mcp('/m//cp'))).toEqual(['mcp.path: must be written normalized, as /m/cp (requests are matched after normalization)']);
    expect(problems(mcp('/mcp'))).toEqual([]);
    const push = (path: string, extra = '') => `${BASE}issuers: [{ issuer: https://as.example.com }]\n${extra}mission: { events: { push_path: ${path} } }\n`;
    expect(problems(push('/ssf//push'))).toEqual(['mission.events.push_path: must be written normalized, as /ssf/push (requests are matched after normalization)']);
    expect(problems(push('/mcp', 'mcp: { path: /mcp }\n'))).toEqual(['mission.events.push_path: is also mcp.path; the SET receiver would take its requests']);
    expect(problems(push('/ssf/push', 'mcp: { path: /mcp }\n'))).toEqual([]);
  });

  it('a replay_store.url start could not parse is a problem check reports (no password in it); seconds stay within a Node timer', () => {
    const redis = (url: string) => problems(`${BASE}replay_store: { type: redis, url: "${url}" }\n`);
    expect(redis('redis://:pw@127.0.0.1:99999')).toEqual(['replay_store.url: invalid Redis URL: port must be 1-65535']);
    expect(redis('redis+sentinel://127.0.0.1:26379')).toEqual(['replay_store.url: invalid Redis URL: redis+sentinel:// needs the master name as its path']);
    expect(redis('redis://:s3cret@127.0.0.1:6379')).toEqual([]);
    const poll = (s: number) => problems(`${BASE}mission: { events: { poll: { endpoint: https://as.example.com/poll, interval_s: ${s} } } }\n`);
    expect(poll(3_000_000)).toEqual(['mission.events.poll.interval_s: must be at most 2147483 (24.8 days, the longest timer Node keeps)']);
    expect(poll(2_147_483)).toEqual([]);
  });
});
