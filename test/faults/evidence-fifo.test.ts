/**
 * An evidence sink that is a FIFO (a log shipper's named pipe), with the compiled CLI as a real
 * process (r21j 5): with no reader yet the gateway starts and says so (unready, evidence_unavailable)
 * instead of hanging before it listens; a reader that stops reading cannot keep SIGTERM from ending
 * the process (what it did not take is logged).
 */
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { eventually, startCli, startEcho } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(): Promise<{ fifo: string; file: string }> {
  const echo = await startEcho();
  cleanups.push(() => echo.close());
  const dir = mkdtempSync(join(tmpdir(), 'mgw-fifo-'));
  const fifo = join(dir, 'evidence.fifo');
  execFileSync('mkfifo', [fifo]);
  const file = join(dir, 'gw.yaml');
  writeFileSync(file, `listen: { host: 127.0.0.1, port: 0 }\nadmin: { host: 127.0.0.1, port: 0 }\npublic_base_url: https://api.example.com\nresource: https://api.example.com\nupstream: { url: ${echo.url} }\nshutdown_grace_s: 1\nroutes: [{ match: { path: /public/** }, auth: none }]\nevidence: { sink: ${fifo} }\n`);
  return { fifo, file };
}

/** A process that holds the FIFO open for reading and never reads (a stalled shipper). */
function stalledReader(fifo: string): void {
  const reader = spawn('sh', ['-c', `exec 3<"${fifo}"; sleep 120`], { stdio: 'ignore' });
  cleanups.push(() => void reader.kill('SIGKILL'));
}

it('a FIFO nobody reads yet: the gateway listens, unready and denying evidence_unavailable, and recovers when a reader comes (r21j 5)', async () => {
  const { fifo, file } = await setup();
  const gw = await startCli(file);
  cleanups.push(() => void gw.proc.kill('SIGKILL'));
  expect((await fetch(`${gw.adminUrl}/readyz`)).status).toBe(503);
  expect((await raw(gw.url, { path: '/public/x' })).json()).toMatchObject({ error: 'temporarily_unavailable', denial_reason: 'evidence_unavailable' });
  // A reader that reads: the sink reopens within a second or two.
  const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'ignore'] });
  cleanups.push(() => void reader.kill('SIGKILL'));
  let read = '';
  reader.stdout.on('data', (c: Buffer) => (read += c.toString()));
  await eventually(async () => (await fetch(`${gw.adminUrl}/readyz`)).status === 200, 5000);
  expect((await raw(gw.url, { path: '/public/x' })).status).toBe(200);
  await eventually(() => read.includes('"path":"/public/x"'), 5000);
});

it('a reader that stopped reading does not keep SIGTERM from ending the process (r21j 5)', async () => {
  const { fifo, file } = await setup();
  stalledReader(fifo);
  const gw = await startCli(file);
  cleanups.push(() => void gw.proc.kill('SIGKILL'));
  await eventually(async () => (await fetch(`${gw.adminUrl}/readyz`)).status === 200, 5000);
  // More records than the pipe holds (64 KiB), far fewer than the 32 MiB that would deny requests.
  for (let i = 0; i < 100; i++) await raw(gw.url, { path: `/nope/${'a'.repeat(1000)}` });
  const exited = once(gw.proc, 'exit');
  const started = Date.now();
  gw.proc.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  expect(code).toBe(0);
  expect(Date.now() - started).toBeLessThan(9000);
  expect(gw.logs()).toContain('evidence sink took nothing for 5 s at shutdown');
}, 20_000);
