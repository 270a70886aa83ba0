/**
 * A real, throwaway redis-server on a free loopback port (no persistence), that a test can kill and
 * start again on the same port. Needs `redis-server` on PATH (Debian: `apt-get install -y redis-server`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

import { freePort } from '../../src/demo/free-port.js';

export { freePort };

async function pingable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let data = '';
    socket.setTimeout(500, () => {
      socket.destroy();
      resolve(false);
    });
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      data += chunk.toString();
      if (data.includes('\r\n')) {
        socket.destroy();
        resolve(data.startsWith('+PONG'));
      }
    });
    socket.on('error', () => resolve(false));
  });
}

export class RedisServer {
  private child: ChildProcess | null = null;
  private constructor(
    readonly port: number,
    private readonly extraArgs: readonly string[],
  ) {}

  /** `args(port)` may add options (a config file first, for Sentinel) or change the defaults. */
  static async start(options: { port?: number; args?: (port: number) => { before?: string[]; after?: string[] } } = {}): Promise<RedisServer> {
    const port = options.port ?? (await freePort());
    const extra = options.args?.(port) ?? {};
    const server = new RedisServer(port, [...(extra.before ?? []), '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning', ...(extra.after ?? [])]);
    await server.start();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (this.child !== null) return;
    const child = spawn('redis-server', [...this.extraArgs], { stdio: 'ignore' });
    this.child = child;
    child.once('exit', () => {
      if (this.child === child) this.child = null;
    });
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (this.child === null) throw new Error('redis-server exited at start (is it installed?)');
      if (await pingable(this.port)) return;
      await sleep(25);
    }
    throw new Error('redis-server did not start in 10 s');
  }

  /** SIGKILL: the connection drops without a goodbye, as in a crash. */
  async kill(): Promise<void> {
    const child = this.child;
    if (child === null) return;
    this.child = null;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    this.resume();
    await this.kill();
  }

  /** SIGSTOP: the server hangs with its connections open (the kernel still accepts new ones). */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  /** SIGCONT: the server answers again, the backlog first. */
  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** Calls of each command since the server started (INFO commandstats), e.g. `{ ping: 3, evalsha: 10 }`. */
  async commandCalls(): Promise<Record<string, number>> {
    const { Redis } = await import('ioredis');
    const admin = new Redis(this.port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0 });
    try {
      await admin.connect();
      const stats = await admin.info('commandstats');
      const calls: Record<string, number> = {};
      for (const m of stats.matchAll(/cmdstat_([a-z|_-]+):calls=(\d+)/g)) calls[m[1]!] = Number(m[2]);
      return calls;
    } finally {
      admin.disconnect();
    }
  }
}

/**
 * A TCP proxy in front of a Redis that can be frozen: it keeps the connections open but stops
 * passing bytes, as a black-holed network or a hung server would.
 */
export class FreezableProxy {
  private frozen = false;
  private readonly sockets = new Set<import('node:net').Socket>();
  private constructor(
    private readonly server: import('node:net').Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<FreezableProxy> {
    let proxy: FreezableProxy | undefined;
    const server = createServer((client) => {
      const upstream = connect({ host: '127.0.0.1', port: targetPort });
      for (const s of [client, upstream]) {
        proxy?.sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => {
          proxy?.sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      client.on('data', (d) => {
        if (proxy?.frozen !== true) upstream.write(d);
      });
      upstream.on('data', (d) => {
        if (proxy?.frozen !== true) client.write(d);
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    proxy = new FreezableProxy(server, address.port);
    return proxy;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  freeze(): void {
    this.frozen = true;
  }

  thaw(): void {
    this.frozen = false;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.server.close();
    await once(this.server, 'close');
  }
}
