#!/usr/bin/env node
/**
 * mission-gateway CLI (SPEC section 2).
 *
 *   mission-gateway [run] --config <file>        start the gateway (or MISSION_GATEWAY_CONFIG)
 *   mission-gateway check --config <file>        validate a config: exit 0, or 2 with every problem
 *   mission-gateway dev-authority --port <n>     development-only Mission Authority
 *   mission-gateway verify-evidence <file>       check an evidence file's chain and signatures
 *   mission-gateway keygen <file>                write a new private JWK, print its public JWK
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfigFile } from './config/load.js';
import { machineProblems, preflightProblems } from './config/preflight.js';
import type { Config } from './config/schema.js';
import { Gateway } from './gateway.js';

const VERBS = ['run', 'check', 'dev-authority', 'verify-evidence', 'keygen', 'help'] as const;

const USAGE = `usage:
  mission-gateway [run] --config <file>       start the gateway (-c <file>; MISSION_GATEWAY_CONFIG may name the file)
  mission-gateway check --config <file>       validate a config file (exit 0 ok, 2 invalid)
  mission-gateway dev-authority --port <n>    start the development-only Mission Authority (dev-authority --help for more)
  mission-gateway verify-evidence <file> [--key <public key file or JWK Set>]...
                                              verify an evidence file's hash chain (and signatures with --key)
  mission-gateway keygen <file> [--alg ES256|EdDSA] [--kid <kid>] [--force]
                                              write a new private key (JWK, mode 0600) and print its public JWK
  mission-gateway --version                   print the version
  mission-gateway <verb> --help               this text
`;

function version(): string {
  // dist/cli.js and src/cli.ts both sit one folder below package.json.
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/**
 * `run` and `check` take `--config <file>` (or `-c`) and nothing else: an unknown flag or a stray
 * word is an error (exit 2), as for the other verbs, never silently ignored. Returns the file, 'help'
 * for `--help`, or null after printing the problem.
 */
function configFile(verb: string, argv: string[]): string | 'help' | null {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: false, strict: true }));
  } catch (err) {
    process.stderr.write(`${verb}: ${(err as Error).message}\n${USAGE}`);
    return null;
  }
  if (values.help === true) return 'help';
  const v = values.config ?? process.env['MISSION_GATEWAY_CONFIG'];
  if (v !== undefined && v !== '') return v;
  process.stderr.write(`${verb}: --config <file> (or MISSION_GATEWAY_CONFIG) is required\n${USAGE}`);
  return null;
}

/**
 * The config file and what start needs from this machine (key files, the evidence file), or
 * ConfigError with every problem: `check` and start refuse the same configs, both with exit 2.
 */
function loadForStart(file: string): { config: Config; file: string; folder: string } {
  let loaded;
  try {
    loaded = loadConfigFile(file);
  } catch (err) {
    // Every problem at once: what start would refuse on this machine too, for the parts that validated.
    const more = err instanceof ConfigError && err.needs !== undefined ? machineProblems(err.needs) : [];
    if (more.length > 0) throw new ConfigError([...(err as ConfigError).problems, ...more]);
    throw err;
  }
  const problems = preflightProblems(loaded.config);
  if (problems.length > 0) throw new ConfigError(problems);
  return loaded;
}

/** Warnings that do not stop a start but mean requests will be denied (printed by `check` and start). */
function warnings(config: Config): string[] {
  const needsState = config.mission.required && (config.routes.some((r) => r.auth !== 'none') || config.mcp !== undefined || config.id_jag !== undefined);
  if (!needsState || config.mission.client !== undefined) return [];
  return [
    'warning: mission.client: not configured, so Mission Status cannot be queried: a Mission the gateway has no event for (every Mission after a start or restart) is denied 503 mission_state_unavailable',
  ];
}

function printProblems(problems: readonly string[]): void {
  for (const p of problems) process.stderr.write(`${p}\n`);
}

function check(argv: string[]): number {
  const file = configFile('check', argv);
  if (file === null) return 2;
  if (file === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  try {
    const { config } = loadForStart(file);
    printProblems(warnings(config));
    process.stdout.write(`${file}: ok (${config.routes.length} routes, ${config.issuers.length} issuers)\n`);
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      printProblems(err.problems);
      return 2;
    }
    throw err;
  }
}

async function run(argv: string[]): Promise<number> {
  const file = configFile('run', argv);
  if (file === null) return 2;
  if (file === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  // The handlers are in place before the gateway is built (it may wait up to a Redis connect
  // timeout: replay_store) and before the listeners open (and "listening" is logged): a SIGTERM at
  // any point is a graceful stop (exit 0), never the default kill. One that comes while the gateway
  // is built stops it before it listens; one while the listeners open, once they are open.
  let gateway: Gateway | null = null;
  let listening = false;
  let early: string | null = null;
  let stopping = false;
  let resolveStopped: (code: number) => void = () => undefined;
  const stopped = new Promise<number>((resolve) => (resolveStopped = resolve));
  const stop = (signal: string): void => {
    if (!listening || gateway === null) {
      early ??= signal;
      return;
    }
    if (stopping) return;
    stopping = true;
    const running = gateway;
    running.logger.info({ signal }, 'stopping: draining in-flight requests');
    running.close().then(
      () => resolveStopped(0),
      (err: unknown) => {
        running.logger.error({ err }, 'error while stopping');
        resolveStopped(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => void (listening && gateway?.reload()));
  try {
    const loaded = loadForStart(file);
    printProblems(warnings(loaded.config));
    gateway = await Gateway.create(loaded);
  } catch (err) {
    return startFailed(err);
  }
  if (early !== null) {
    gateway.logger.info({ signal: early }, 'stopped while starting');
    await gateway.close(0);
    return 0;
  }
  try {
    await gateway.listen();
  } catch (err) {
    return startFailed(err);
  }
  listening = true;
  if (early !== null) stop(early);
  return stopped;
}

function startFailed(err: unknown): number {
  if (err instanceof ConfigError) {
    for (const p of err.problems) process.stderr.write(`${p}\n`);
    return 2;
  }
  process.stderr.write(`mission-gateway: cannot start: ${(err as Error).message}\n`);
  return 1;
}

async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  switch (verb) {
    case 'check':
      return check(rest);
    case 'dev-authority': {
      const mod = (await import('./dev-authority/index.js')) as { devAuthorityCli(argv: string[]): Promise<number> };
      return mod.devAuthorityCli(rest);
    }
    case 'verify-evidence': {
      const mod = (await import('./evidence/verify.js')) as { verifyEvidenceCli(argv: string[]): Promise<number> };
      return mod.verifyEvidenceCli(rest);
    }
    case 'keygen': {
      if (rest.includes('--help') || rest.includes('-h')) {
        process.stdout.write(USAGE);
        return 0;
      }
      const mod = await import('./keys/keygen.js');
      return mod.keygenCli(rest);
    }
    case 'run':
      return run(rest);
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(USAGE);
      return 0;
    case '--version':
    case '-v':
      process.stdout.write(`${version()}\n`);
      return 0;
    default:
      // No verb: flags only (`--config f`, or nothing with MISSION_GATEWAY_CONFIG) is `run`.
      // A word that is no verb (a typo such as `chekc`) never starts a gateway.
      if (verb === undefined || verb.startsWith('-')) return run(argv);
      process.stderr.write(`mission-gateway: unknown command ${JSON.stringify(verb)}; the commands are ${VERBS.join(', ')}\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Servers are closed by now; let pending log writes flush, then leave.
    setTimeout(() => process.exit(code), 50).unref();
  },
  (err: unknown) => {
    process.stderr.write(`mission-gateway: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
