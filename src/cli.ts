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
import { parseArgs } from 'node:util';
import { ConfigError, keyFileProblems, loadConfigFile } from './config/load.js';
import { Gateway } from './gateway.js';

const USAGE = `usage:
  mission-gateway [run] --config <file>       start the gateway (MISSION_GATEWAY_CONFIG may name the file)
  mission-gateway check --config <file>       validate a config file (exit 0 ok, 2 invalid)
  mission-gateway dev-authority --port <n>    start the development-only Mission Authority
  mission-gateway verify-evidence <file>      verify an evidence file's hash chain (and signatures with --key)
  mission-gateway keygen <file>               write a new private key (JWK, mode 0600) and print its public JWK
`;

function configFile(argv: string[]): string | null {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } }, allowPositionals: true, strict: false });
  const v = values['config'];
  if (typeof v === 'string' && v !== '') return v;
  return process.env['MISSION_GATEWAY_CONFIG'] ?? null;
}

function check(argv: string[]): number {
  const file = configFile(argv);
  if (file === null) {
    process.stderr.write('check: --config <file> is required\n' + USAGE);
    return 2;
  }
  try {
    const { config } = loadConfigFile(file);
    const problems = keyFileProblems(config);
    if (problems.length > 0) {
      for (const p of problems) process.stderr.write(`${p}\n`);
      return 2;
    }
    process.stdout.write(`${file}: ok (${config.routes.length} routes, ${config.issuers.length} issuers)\n`);
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) process.stderr.write(`${p}\n`);
      return 2;
    }
    throw err;
  }
}

async function run(argv: string[]): Promise<number> {
  const file = configFile(argv);
  if (file === null) {
    process.stderr.write('--config <file> (or MISSION_GATEWAY_CONFIG) is required\n' + USAGE);
    return 2;
  }
  let gateway: Gateway;
  try {
    const loaded = loadConfigFile(file);
    const problems = keyFileProblems(loaded.config);
    if (problems.length > 0) throw new ConfigError(problems);
    gateway = await Gateway.create(loaded);
    await gateway.listen();
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) process.stderr.write(`${p}\n`);
      return 2;
    }
    process.stderr.write(`mission-gateway: cannot start: ${(err as Error).message}\n`);
    return 1;
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      gateway.logger.info({ signal }, 'stopping: draining in-flight requests');
      gateway.close().then(
        () => resolve(0),
        (err: unknown) => {
          gateway.logger.error({ err }, 'error while stopping');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => void gateway.reload());
  });
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
    default:
      return run(argv);
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
