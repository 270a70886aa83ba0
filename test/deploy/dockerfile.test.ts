/**
 * The container image, checked from the Dockerfile text (there is no Docker engine where these tests
 * run, so the image build itself is not exercised here; see docs/deploy.md).
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const run = promisify(execFile);

interface Instruction {
  readonly op: string;
  readonly args: string;
}

interface Stage {
  readonly image: string;
  readonly name: string | null;
  readonly body: Instruction[];
}

/** Dockerfile instructions with line continuations joined and comments dropped. */
export function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (current === '' && /^\s*#/.test(line)) continue;
    if (current !== '' && /^\s*#/.test(line)) continue; // comment lines inside a continuation
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    current += line;
    if (current.trim() !== '') logical.push(current.trim());
    current = '';
  }
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const l of logical) {
    const m = /^(\S+)\s*(.*)$/s.exec(l);
    if (m === null) continue;
    const op = (m[1] ?? '').toUpperCase();
    const rest = (m[2] ?? '').replace(/\s+/g, ' ').trim();
    if (op === 'ARG' && stages.length === 0) {
      const [k, v] = rest.split('=');
      if (k !== undefined && v !== undefined) args.set(k, v);
      continue;
    }
    if (op === 'FROM') {
      const from = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
      const image = (from?.[1] ?? '').replace(/^\$\{(\w+)\}$/, (_s, name: string) => args.get(name) ?? '');
      stages.push({ image, name: from?.[2] ?? null, body: [] });
      continue;
    }
    stages.at(-1)?.body.push({ op, args: rest });
  }
  return { args, stages };
}

const dockerfile = readFileSync(join(root, 'Dockerfile'), 'utf8');
const { stages } = parseDockerfile(dockerfile);
const runtime = stages.at(-1)!;
const only = (stage: Stage, op: string): Instruction[] => stage.body.filter((i) => i.op === op);
const single = (op: string): Instruction => {
  const found = only(runtime, op);
  expect(found, `${op} in the runtime stage`).toHaveLength(1);
  return found[0]!;
};

describe('Dockerfile', () => {
  it('is multi-stage, every stage on Node 24 LTS slim', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.image).toMatch(/^node:24(\.\d+)*-(bookworm-|trixie-)?slim(@sha256:[0-9a-f]{64})?$/);
    expect(stages.map((s) => s.name)).toEqual(expect.arrayContaining(['build', 'runtime']));
  });

  it('builds with `npm ci` and `npm run build` in the build stage', () => {
    const build = stages.find((s) => s.name === 'build')!;
    const runs = only(build, 'RUN').map((i) => i.args);
    expect(runs.some((r) => /\bnpm ci\b/.test(r))).toBe(true);
    expect(runs.some((r) => /\bnpm run build\b/.test(r))).toBe(true);
  });

  it('runtime gets production dependencies only: node_modules from an `npm ci --omit=dev` stage, no dev install, no sources', () => {
    const copies = only(runtime, 'COPY').map((i) => i.args);
    const nodeModules = copies.find((c) => /node_modules/.test(c));
    const from = /--from=(\S+)/.exec(nodeModules ?? '')?.[1];
    expect(from).toBeDefined();
    const depsStage = stages.find((s) => s.name === from)!;
    const install = only(depsStage, 'RUN').map((i) => i.args).find((r) => /\bnpm ci\b/.test(r));
    expect(install).toMatch(/--omit=dev/);
    expect(install).toMatch(/--ignore-scripts/);
    // Nothing in the runtime stage installs packages or copies sources or tests from the context.
    for (const r of only(runtime, 'RUN').map((i) => i.args)) expect(r).not.toMatch(/\bnpm (ci|install|i)\b/);
    for (const c of copies.filter((c) => !c.includes('--from='))) expect(c).not.toMatch(/\b(src|test|node_modules)\b|^\. /);
    expect(copies.some((c) => /--from=build\s+\/app\/dist\b/.test(c))).toBe(true);
    // package.json carries "type": "module": without it node would load dist/*.js as CommonJS.
    expect(copies).toContain('package.json ./');
  });

  it('runs as a non-root user, set after the last RUN', () => {
    const user = single('USER').args;
    expect(user).not.toMatch(/^(root|0)(:|$)/);
    const lastRun = runtime.body.map((i) => i.op).lastIndexOf('RUN');
    const userAt = runtime.body.findIndex((i) => i.op === 'USER');
    expect(userAt).toBeGreaterThan(lastRun);
  });

  it('PID 1 semantics: exec-form ENTRYPOINT running node directly, STOPSIGNAL SIGTERM, config in /etc/mission-gateway', () => {
    expect(JSON.parse(single('ENTRYPOINT').args)).toEqual(['node', 'dist/cli.js']);
    expect(JSON.parse(single('CMD').args)).toEqual(['--config', '/etc/mission-gateway/config.yaml']);
    expect(single('STOPSIGNAL').args).toBe('SIGTERM');
    expect(only(runtime, 'RUN').map((i) => i.args).join('\n')).toContain('/etc/mission-gateway/keys');
    expect(only(runtime, 'EXPOSE').map((i) => i.args).join(' ').split(' ')).toEqual(expect.arrayContaining(['8080', '9090']));
  });

  it('puts the CLI on PATH as mission-gateway (for exec: mission-gateway check), the bin the build marks executable', () => {
    expect(only(runtime, 'RUN').map((i) => i.args).join('\n')).toMatch(/ln -s \/app\/dist\/cli\.js \/usr\/local\/bin\/mission-gateway/);
    expect(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts.build).toContain("chmodSync('dist/cli.js', 0o755)");
  });

  it('read-only root filesystem friendly: no VOLUME and nothing written at run time inside the image', () => {
    expect(only(runtime, 'VOLUME')).toEqual([]);
    expect(dockerfile).not.toMatch(/chown\s+node|--chown=node/);
  });

  describe('HEALTHCHECK probes the admin /healthz with node', () => {
    const servers: Server[] = [];
    afterAll(() => {
      for (const s of servers) s.close();
    });

    const healthcheck = single('HEALTHCHECK').args;
    const cmd = /CMD\s+(\[.*\])$/.exec(healthcheck)?.[1];

    it('is an exec-form node command against http://127.0.0.1:9090/healthz', () => {
      expect(cmd).toBeDefined();
      const argv = JSON.parse(cmd!) as string[];
      expect(argv[0]).toBe('node');
      expect(argv[1]).toBe('-e');
      expect(argv[2]).toContain('http://127.0.0.1:9090/healthz');
      expect(healthcheck).toMatch(/--timeout=\d+s/);
    });

    async function probe(status: number | null): Promise<number> {
      let url = 'http://127.0.0.1:1/healthz';
      if (status !== null) {
        const server = createServer((req, res) => {
          res.writeHead(req.url === '/healthz' ? status : 404).end();
        });
        servers.push(server);
        server.listen(0, '127.0.0.1');
        await once(server, 'listening');
        const port = (server.address() as { port: number }).port;
        url = `http://127.0.0.1:${port}/healthz`;
      }
      const argv = JSON.parse(cmd!) as string[];
      const script = argv[2]!.replace('http://127.0.0.1:9090/healthz', url);
      try {
        await run(process.execPath, ['-e', script], { timeout: 10_000 });
        return 0;
      } catch (err) {
        return (err as { code?: number }).code ?? -1;
      }
    }

    it('exits 0 when /healthz answers 200', async () => {
      expect(await probe(200)).toBe(0);
    });
    it('exits 1 when /healthz answers 503', async () => {
      expect(await probe(503)).toBe(1);
    });
    it('exits 1 when nothing listens', async () => {
      expect(await probe(null)).toBe(1);
    });
  });
});

describe('.dockerignore', () => {
  const lines = readFileSync(join(root, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));

  it('keeps node_modules, .git, tests, build output and key material out of the build context', () => {
    for (const entry of ['node_modules', '.git', 'test', 'dist', '.tools', '**/*.pem', '**/*.jwk']) expect(lines).toContain(entry);
  });

  it('by Docker\'s own matching, leaves every file the build copies in the context, and key material out', async () => {
    // @balena/dockerignore ports Docker's matcher (patterns match a path or any folder above it;
    // `**/keys` once dropped src/keys/keygen.ts, so `npm run build` failed in the image).
    // A CommonJS module whose typings say `export default`: what import() gives is module.exports.
    const dockerignore = (await import('@balena/dockerignore')).default as unknown as (options?: { ignorecase?: boolean }) => { add(patterns: string[]): { ignores(path: string): boolean } };
    const ignore = dockerignore({ ignorecase: false }).add(lines);
    const copied = stages.flatMap((s) => only(s, 'COPY').filter((i) => !i.args.includes('--from='))).flatMap((i) => i.args.split(' ').slice(0, -1));
    const tracked = (await run('git', ['ls-files'], { cwd: root })).stdout.split('\n').filter((f) => f !== '');
    const needed = tracked.filter((f) => copied.some((c) => f === c || f.startsWith(`${c}/`)));
    expect(needed).toContain('src/keys/keygen.ts');
    expect(needed.filter((f) => ignore.ignores(f))).toEqual([]);
    const keyMaterial = tracked.filter((f) => /\.(pem|key|jwk)$/.test(f) || f.startsWith('config/keys/'));
    expect(keyMaterial.length).toBeGreaterThan(0);
    expect(keyMaterial.filter((f) => !ignore.ignores(f))).toEqual([]);
    for (const f of ['keys/gw-api.jwk', 'keys/evidence-signing.pem', 'deploy/keys/client.json']) expect([f, ignore.ignores(f)]).toEqual([f, true]);
  });

  it('does not exclude what the Dockerfile copies from the context', () => {
    const copied = stages.flatMap((s) => only(s, 'COPY').filter((i) => !i.args.includes('--from='))).flatMap((i) => i.args.split(' ').slice(0, -1));
    expect(copied).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'tsconfig.json', 'src']));
    for (const path of copied) {
      expect(lines).not.toContain(path);
      expect(lines.some((l) => !l.startsWith('!') && !l.includes('*') && path.startsWith(`${l}/`))).toBe(false);
    }
  });
});
