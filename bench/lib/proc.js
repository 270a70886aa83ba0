/**
 * Child processes for the benchmark: every server and the load generator run in their own process,
 * pinned with taskset when it exists (servers on core 0, load generator on core 1) so that the
 * numbers measure the server and not the machine's scheduler.
 */
import { spawn, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';

export const HAS_TASKSET = spawnSync('taskset', ['-c', '0', 'true']).status === 0 && availableParallelism() >= 2;
export const SERVER_CORE = '0';
export const LOAD_CORE = '1';

/** argv prefix that pins a command to `core`, or nothing when pinning is not possible. */
export function pinned(core, cmd, args) {
  return HAS_TASKSET ? ['taskset', ['-c', core, cmd, ...args]] : [cmd, args];
}

/**
 * A node child with an IPC channel. The child sends `{ type: 'ready', ... }` once listening and
 * answers `{ type: 'stats' }` with `{ type: 'stats', cpu, rss }`.
 */
export class NodeChild {
  /** `wrap`: a command that runs node, e.g. valgrind (bench/instructions.js); empty for node itself. */
  constructor(script, { core = SERVER_CORE, args = [], env = {}, execArgv = [], wrap = [] } = {}) {
    const nodeArgv = [...execArgv, script, ...args];
    const [cmd, argv] = wrap.length === 0 ? pinned(core, process.execPath, nodeArgv) : pinned(core, wrap[0], [...wrap.slice(1), process.execPath, ...nodeArgv]);
    this.proc = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], env: { ...process.env, ...env } });
    this.stderr = '';
    this.proc.stderr.on('data', (d) => {
      if (this.stderr.length < 20_000) this.stderr += d;
    });
    this.waiters = [];
    this.proc.on('message', (m) => {
      const w = this.waiters.findIndex((x) => x.type === m.type);
      if (w !== -1) this.waiters.splice(w, 1)[0].resolve(m);
    });
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then(({ code, signal }) => {
      for (const w of this.waiters.splice(0)) w.reject(new Error(`${script} exited (${code ?? signal}): ${this.stderr.trim().slice(-2000)}`));
    });
  }

  get pid() {
    return this.proc.pid;
  }

  /** Waits for a message of `type` (after optionally sending `send`). */
  request(type, send, timeoutMs = 60_000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout waiting for ${type} from child: ${this.stderr.trim().slice(-2000)}`)), timeoutMs);
      this.waiters.push({
        type,
        resolve: (m) => (clearTimeout(timer), resolve(m)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      if (send !== undefined) this.proc.send(send);
    });
  }

  ready(timeoutMs) {
    return this.request('ready', undefined, timeoutMs);
  }

  stats() {
    return this.request('stats', { type: 'stats' });
  }

  async stop() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(t);
  }
}

/** Stats reporting for a server child: call once in the child. */
export function serveStats(extra = () => ({})) {
  process.on('message', (m) => {
    if (m?.type === 'stats') {
      const cpu = process.cpuUsage();
      process.send({ type: 'stats', cpu: cpu.user + cpu.system, rss: process.memoryUsage.rss(), ...extra() });
    }
  });
  process.on('disconnect', () => process.exit(0));
}

/** CPU microseconds and RSS bytes of a non-node process tree (nginx) from /proc. */
export async function procStats(pids) {
  const { readFile } = await import('node:fs/promises');
  let ticks = 0;
  let rss = 0;
  for (const pid of pids) {
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
      rss += Number(f[21]) * 4096;
    } catch {
      // the process is gone
    }
  }
  return { cpu: (ticks * 1e6) / 100, rss };
}
