/**
 * The CLI's verbs as an operator types them (SPEC section 2): a mistyped verb or flag never starts a
 * gateway, every verb answers --help with its usage and exit 0, --version prints the package version.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI } from '../helpers/gateway.js';

const root = resolve(__dirname, '../..');

/** A config that would start (auth: none only, ports 0): a verb that wrongly runs it stays up. */
function startable(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mgw-verbs-'));
  const file = join(dir, 'gw.yaml');
  writeFileSync(
    file,
    `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
public_base_url: http://localhost:8080
resource: http://localhost:8080
upstream: { url: http://127.0.0.1:9 }
routes: [{ match: { path: /public/** }, auth: none }]
evidence: { sink: stdout }
`,
  );
  return file;
}

/** Runs the CLI; a gateway it starts (its "listening" line) is stopped at once and reported as `started`. */
function cli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ status: number | null; stdout: string; stderr: string; started: boolean }> {
  return new Promise((done) => {
    const proc = spawn(process.execPath, [CLI, ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    let started = false;
    proc.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
      if (!started && stderr.includes('mission-gateway listening')) {
        started = true;
        proc.kill('SIGTERM');
      }
    });
    const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
    proc.once('exit', (status) => {
      clearTimeout(timer);
      done({ status, stdout, stderr, started });
    });
  });
}

describe('CLI verbs', () => {
  it('an unknown verb exits 2 naming the known verbs and starts nothing, with or without --config', async () => {
    const file = startable();
    for (const args of [['chekc', '--config', file], ['frobnicate', '--config', file], ['frobnicate']]) {
      const r = await cli(args);
      expect(r.started, args.join(' ')).toBe(false);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(`unknown command "${args[0]}"`);
      expect(r.stderr).toMatch(/run, check, dev-authority, verify-evidence, keygen/);
      expect(r.stderr).not.toContain('mission-gateway listening');
    }
  });

  it('run and check refuse an unknown flag or a stray word (exit 2, the flag named), as the other verbs do', async () => {
    const file = startable();
    for (const args of [
      ['check', '--config', file, '--bogus'],
      ['check', '--config', file, 'extra'],
      ['run', '--config', file, '--port', '4999'],
      ['--config', file, '--port', '4999'],
    ]) {
      const r = await cli(args);
      expect(r.started, args.join(' ')).toBe(false);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/Unknown option '--(bogus|port)'|Unexpected argument 'extra'/);
    }
  });

  it('--help and -h print the usage and exit 0 for every verb', async () => {
    for (const args of [['--help'], ['-h'], ['help'], ['run', '--help'], ['check', '-h'], ['check', '--help'], ['keygen', '--help'], ['dev-authority', '--help'], ['verify-evidence', '-h']]) {
      const r = await cli(args);
      expect(r.status, args.join(' ')).toBe(0);
      expect(r.stdout, args.join(' ')).toMatch(/^usage:/i);
    }
  });

  it('--version prints the package version and exits 0', async () => {
    const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
    const r = await cli(['--version']);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(version);
  });

  it('the bin runs as a program (executable, its own shebang), as npx and node_modules/.bin run it', () => {
    const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
    // A build from an empty dist/ wrote cli.js 0644, and `npx mission-gateway` in the checkout was `Permission denied`.
    expect(statSync(CLI).mode & 0o111).toBe(0o111);
    const r = spawnSync(CLI, ['--version'], { cwd: root, encoding: 'utf8' });
    expect([r.status, r.stdout.trim()]).toEqual([0, version]);
  });

  it('still runs with no verb: --config alone, or MISSION_GATEWAY_CONFIG', async () => {
    const file = startable();
    for (const [args, env] of [
      [['--config', file], process.env],
      [[], { ...process.env, MISSION_GATEWAY_CONFIG: file }],
    ] as const) {
      const r = await cli([...args], env);
      expect(r.started).toBe(true);
      expect(r.status).toBe(0); // SIGTERM: drained, exit 0
    }
  });

  it('keygen says what is wrong: no file, two files, an algorithm it does not make (exit 2, nothing written)', () => {
    const folder = mkdtempSync(join(tmpdir(), 'mgw-keygen-'));
    const cases: [string[], string][] = [
      [[], 'the key file to write is required'],
      [[join(folder, 'a.jwk'), join(folder, 'b.jwk')], 'one key file only (got 2)'],
      [[join(folder, 'c.jwk'), '--alg', 'RS256'], '--alg RS256 is not supported: ES256 (the default) or EdDSA'],
    ];
    for (const [args, message] of cases) {
      const r = spawnSync(process.execPath, [CLI, 'keygen', ...args], { encoding: 'utf8' });
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(`keygen: ${message}`);
    }
    expect(readdirSync(folder)).toEqual([]);
  });

  it('verify-evidence names an unknown option', () => {
    const r = spawnSync(process.execPath, [CLI, 'verify-evidence', 'f.jsonl', '--bogus'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('unknown option "--bogus"');
  });
});
