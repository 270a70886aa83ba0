/**
 * Test helpers: real servers on port 0. A gateway is built from YAML exactly as a user writes it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { parseConfigText } from '../../src/config/load.js';
import { Gateway } from '../../src/gateway.js';
import type { Logger } from '../../src/observability/logger.js';

export interface Started {
  readonly url: string;
  close(): Promise<void>;
}

export function listen(server: Server): Promise<string> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  });
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** An upstream that answers with what it received (method, url, headers, body size and sha). */
export async function startEcho(handler?: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void): Promise<Started & { server: Server; requests: { method: string; url: string; headers: IncomingMessage['headers']; body: Buffer }[] }> {
  const requests: { method: string; url: string; headers: IncomingMessage['headers']; body: Buffer }[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      if (handler !== undefined) return handler(req, res, body);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, bytes: body.length }));
    });
  });
  const url = await listen(server);
  return { url, server, requests, close: () => closeServer(server) };
}

export interface TestGateway {
  readonly gateway: Gateway;
  readonly url: string;
  readonly adminUrl: string;
  readonly evidenceFile: string;
  readonly folder: string;
  /** The config as written out (what gateway.reload() reads again). */
  readonly configFile: string;
  evidence(): Record<string, unknown>[];
  close(): Promise<void>;
}

/** Starts a gateway from YAML (ports forced to 0, evidence to a temp file unless given). */
export async function startGateway(yaml: string, opts: { folder?: string; env?: NodeJS.ProcessEnv; logger?: Logger } = {}): Promise<TestGateway> {
  const folder = opts.folder ?? mkdtempSync(join(tmpdir(), 'mgw-'));
  const evidenceFile = join(folder, 'evidence.jsonl');
  let text = yaml;
  if (!/^listen:/m.test(text)) text += '\nlisten: { host: 127.0.0.1, port: 0 }';
  if (!/^admin:/m.test(text)) text += '\nadmin: { host: 127.0.0.1, port: 0 }';
  if (!/^evidence:/m.test(text)) text += `\nevidence: { sink: ${JSON.stringify(evidenceFile)} }`;
  if (!/^log:/m.test(text)) text += '\nlog: { level: silent }';
  const config = parseConfigText(text, folder, { ...process.env, ...opts.env });
  // Written out too, so gateway.reload() (SIGHUP) has a file to read again.
  const configFile = join(folder, 'gateway.yaml');
  writeFileSync(configFile, text);
  const gateway = await Gateway.create({ config, file: configFile }, { logger: opts.logger ?? pino({ level: 'silent' }), defaultMetrics: false });
  const { url, adminUrl } = await gateway.listen();
  return {
    gateway,
    url,
    adminUrl,
    evidenceFile,
    folder,
    configFile,
    evidence() {
      if (!existsSync(evidenceFile)) return [];
      return readFileSync(evidenceFile, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    close: () => gateway.close(1000),
  };
}

/** Waits until `fn` returns a truthy value (polling), or fails after `ms`. */
export async function eventually<T>(fn: () => T | Promise<T>, ms = 5000): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`condition not met in ${ms} ms${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const CLI = resolve(__dirname, '../../dist/cli.js');

export interface CliGateway {
  readonly proc: ChildProcess;
  readonly url: string;
  readonly adminUrl: string;
  logs(): string;
}

/**
 * Starts the compiled CLI as a real process and waits for its "listening" log line (stderr). A
 * process that never prints it in time is killed, not left running past the test.
 */
/** `under`: a command the CLI runs under (for example `prlimit --nofile=256:256 --`). */
export async function startCli(file: string, env?: NodeJS.ProcessEnv, under: readonly string[] = []): Promise<CliGateway> {
  const argv = [...under, process.execPath, CLI, '--config', file];
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...(env === undefined ? {} : { env: { ...process.env, ...env } }) });
  let err = '';
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  proc.stdout!.resume();
  const exited = new Promise<never>((_, reject) => proc.once('exit', (code) => reject(new Error(`gateway exited with ${code}: ${err}`))));
  const listening = (): string | undefined => err.split('\n').find((l) => l.includes('mission-gateway listening'));
  let line: string;
  try {
    line = await Promise.race([eventually(listening, 15_000), exited]);
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  const { url, adminUrl } = JSON.parse(line) as { url: string; adminUrl: string };
  return { proc, url, adminUrl, logs: () => err };
}
