/**
 * Fault injection for the reliability tests: a small HTTP proxy that stands where the Mission
 * authority is (its issuer URL *is* the proxy, so tokens, metadata, JWKS and Mission Status all
 * go through it) and can be switched, per path prefix, between pass-through and misbehaviour.
 */
import { mkdtempSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startDevAuthority, type DevAuthority, type DevAuthorityOptions } from '../../src/dev-authority/index.js';
import { gatewayClientKey, newAgent, type Agent } from '../helpers/agent.js';
import { startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';
import { raw, type RawResponse } from '../helpers/http.js';

export type Fault =
  | { readonly kind: 'pass' }
  /** Answer after `ms` (the answer itself is the real one). */
  | { readonly kind: 'delay'; readonly ms: number }
  /** Accept the request and never answer. */
  | { readonly kind: 'hang' }
  /** Answer with this status, headers and body instead of asking the authority. */
  | { readonly kind: 'answer'; readonly status: number; readonly headers?: Record<string, string>; readonly body?: string }
  /** Destroy the connection without an answer (TCP reset after reading the request). */
  | { readonly kind: 'reset' }
  /** Pass through, then change the body (e.g. break a signature, drop a key). */
  | { readonly kind: 'rewrite'; readonly fn: (body: string) => string };

export const PASS: Fault = { kind: 'pass' };

export class FaultProxy {
  target = '';
  private readonly faults = new Map<string, Fault>();
  private readonly sockets = new Set<Socket>();
  /** Requests seen per path (query excluded), faults included. */
  readonly seen = new Map<string, number>();
  private server: Server;

  private constructor(server: Server, readonly port: number) {
    this.server = server;
  }

  static async start(): Promise<FaultProxy> {
    let proxy: FaultProxy | undefined;
    const server = createServer((req, res) => proxy!.handle(req, res));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    proxy = new FaultProxy(server, (server.address() as AddressInfo).port);
    proxy.track(server);
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Sets the fault for every path starting with `prefix` (the longest matching prefix wins). */
  set(prefix: string, fault: Fault): void {
    if (fault.kind === 'pass') this.faults.delete(prefix);
    else this.faults.set(prefix, fault);
  }

  clear(): void {
    this.faults.clear();
  }

  count(prefix: string): number {
    let n = 0;
    for (const [p, c] of this.seen) if (p.startsWith(prefix)) n += c;
    return n;
  }

  /** Stops listening and drops every connection: the authority is down (connection refused). */
  async down(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** Listens again on the same port. */
  async up(): Promise<void> {
    const server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.track(server);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    if (this.server.listening) await new Promise<void>((r) => this.server.close(() => r()));
  }

  private track(server: Server): void {
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  private faultFor(path: string): Fault {
    let best: [string, Fault] | null = null;
    for (const [p, f] of this.faults) if (path.startsWith(p) && (best === null || p.length > best[0].length)) best = [p, f];
    return best?.[1] ?? PASS;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0]!;
    this.seen.set(path, (this.seen.get(path) ?? 0) + 1);
    const fault = this.faultFor(path);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      switch (fault.kind) {
        case 'hang':
          return;
        case 'reset':
          req.socket.resetAndDestroy();
          return;
        case 'answer':
          res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
          res.end(fault.body ?? '');
          return;
        case 'delay': {
          const t = setTimeout(() => this.forward(req, res, body, null), fault.ms);
          res.on('close', () => clearTimeout(t));
          return;
        }
        case 'rewrite':
          return this.forward(req, res, body, fault.fn);
        case 'pass':
          return this.forward(req, res, body, null);
      }
    });
  }

  private forward(req: IncomingMessage, res: ServerResponse, body: Buffer, rewrite: ((b: string) => string) | null): void {
    if (res.destroyed) return;
    const t = new URL(this.target);
    const headers = { ...req.headers, host: t.host, 'content-length': String(body.length) };
    const out = httpRequest({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers }, (up) => {
      const parts: Buffer[] = [];
      up.on('data', (c: Buffer) => parts.push(c));
      up.on('end', () => {
        let answer = Buffer.concat(parts);
        if (rewrite !== null) answer = Buffer.from(rewrite(answer.toString('utf8')));
        const h = { ...up.headers, 'content-length': String(answer.length) };
        delete h['transfer-encoding'];
        res.writeHead(up.statusCode ?? 502, h);
        res.end(answer);
      });
    });
    out.on('error', () => res.destroy());
    out.end(body);
  }
}

/** Flips one character of a compact JWS's signature: same header and payload, invalid signature. */
export function breakSignature(jws: string): string {
  const trimmed = jws.trim();
  const last = trimmed.length - 2; // not the final char, whose low bits may be padding
  const c = trimmed[last] === 'A' ? 'B' : 'A';
  return trimmed.slice(0, last) + c + trimmed.slice(last + 1);
}

export const API = 'https://api.example.com';
export const ENTRIES = [{ type: 'mission_resource_access', resource: API, actions: ['invoices.read'] }];

export interface FaultTarget {
  readonly dev: DevAuthority;
  readonly proxy: FaultProxy;
  readonly echo: Awaited<ReturnType<typeof startEcho>>;
  readonly gw: TestGateway;
  readonly agent: Agent;
  /** A new active Mission (so no state is cached for it) and a token for it. */
  mission(): Promise<{ id: string; token: string }>;
  /** GET `path` as the agent with `token`; `ms` is the wall time of the exchange. */
  get(token: string, path?: string): Promise<RawResponse & { ms: number }>;
  admin(path: string): Promise<RawResponse>;
  /** One sample of a metric on the admin port (first series whose line starts with `prefix`), or null. */
  metric(prefix: string): Promise<number | null>;
  close(): Promise<void>;
}

/**
 * The dev authority behind a FaultProxy (the proxy's URL is the issuer), an echo upstream, and a
 * gateway trusting that issuer. `yaml` is appended to the gateway config (top-level keys such as
 * `replay_store`); `mission` adds keys under `mission:`.
 */
export interface FaultTargetOptions {
  /** Appended to the gateway config (top-level keys). */
  readonly yaml?: string;
  /** Added under `mission:`. In it and in `yaml`, `{{issuer}}` is replaced by the issuer (proxy) URL. */
  readonly mission?: string;
  readonly dev?: DevAuthorityOptions;
  readonly folder?: string;
  /** The upstream's handler (default: echo). */
  readonly upstream?: Parameters<typeof startEcho>[0];
  readonly upstreamTimeoutS?: number;
  /** `evidence.sink` (default: a file in the folder). */
  readonly evidenceSink?: string;
  /** Called once the proxy and authority run, before the gateway starts (e.g. to set faults for start-up). */
  readonly beforeGateway?: (proxy: FaultProxy) => void;
}

export async function startFaultTarget(opts: FaultTargetOptions = {}): Promise<FaultTarget> {
  const folder = opts.folder ?? mkdtempSync(join(tmpdir(), 'mgw-fault-'));
  const proxy = await FaultProxy.start();
  const dev = await startDevAuthority({ port: 0, quiet: true, issuer: proxy.url, ...opts.dev });
  proxy.target = `http://127.0.0.1:${dev.port}`;
  const echo = await startEcho(opts.upstream);
  const keyFile = await gatewayClientKey(dev, folder);
  opts.beforeGateway?.(proxy);
  const gw = await startGateway(
    `
public_base_url: ${API}
resource: ${API}
upstream: { url: ${echo.url}${opts.upstreamTimeoutS === undefined ? '' : `, timeout_s: ${opts.upstreamTimeoutS}`} }
issuers: [{ issuer: ${proxy.url}, algorithms: [ES256] }]${opts.evidenceSink === undefined ? '' : `\nevidence: { sink: ${JSON.stringify(opts.evidenceSink)} }`}
mission:
  client: { client_id: gw-api, private_key_file: ${keyFile} }
${(opts.mission ?? '').replace(/^/gm, '  ').replaceAll('{{issuer}}', proxy.url)}
routes:
  - match: { method: GET, path: /invoices/* }
    action: invoices.read
${(opts.yaml ?? '').replaceAll('{{issuer}}', proxy.url)}`,
    { folder },
  );
  const agent = await newAgent();
  const get: FaultTarget['get'] = async (token, path = '/invoices/1') => {
    const start = performance.now();
    const r = await raw(gw.url, { path, headers: { authorization: `DPoP ${token}`, dpop: await agent.proof('GET', `${API}${path}`, token) } });
    return Object.assign(r, { ms: performance.now() - start });
  };
  return {
    dev,
    proxy,
    echo,
    gw,
    agent,
    async mission() {
      const m = (await dev.missions.create({ subject: 'user_1', client_id: 'agent-1', purpose: 'reliability', authorization_details: ENTRIES })) as { id: string };
      return { id: m.id, token: await agent.token(dev, m.id, API) };
    },
    get,
    admin: (path) => raw(gw.adminUrl, { path }),
    async metric(prefix) {
      const text = (await raw(gw.adminUrl, { path: '/metrics' })).text();
      const line = text.split('\n').find((l) => l.startsWith(prefix));
      return line === undefined ? null : Number(line.slice(line.lastIndexOf(' ') + 1));
    },
    async close() {
      await gw.close();
      await echo.close();
      await dev.close();
      await proxy.close();
    },
  };
}

/** The denial fields a test asserts on. */
export function denialOf(r: RawResponse): { status: number; error: unknown; reason: unknown; retryAfter: string | undefined } {
  let body: Record<string, unknown> = {};
  try {
    body = r.json();
  } catch {
    // not JSON
  }
  const ra = r.headers['retry-after'];
  return { status: r.status, error: body['error'], reason: body['denial_reason'], retryAfter: Array.isArray(ra) ? ra[0] : ra };
}

/**
 * A TCP link that can stall: while stalled it holds bytes in both directions and delivers them,
 * in order, when released (as TCP does across a network stall, or a paused server), so the
 * protocol on top stays in sync.
 */
export class StallableLink {
  private stalled = false;
  private readonly held: (() => void)[] = [];
  private readonly sockets = new Set<import('node:net').Socket>();
  private constructor(
    private readonly server: import('node:net').Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<StallableLink> {
    const net = await import('node:net');
    let link: StallableLink | undefined;
    const server = net.createServer((client) => {
      const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
      for (const s of [client, upstream]) {
        link!.sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => {
          link!.sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      const pipe = (from: import('node:net').Socket, to: import('node:net').Socket): void => {
        from.on('data', (d: Buffer) => {
          if (link!.stalled) link!.held.push(() => to.write(d));
          else to.write(d);
        });
      };
      pipe(client, upstream);
      pipe(upstream, client);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    link = new StallableLink(server, (server.address() as AddressInfo).port);
    return link;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  stall(): void {
    this.stalled = true;
  }

  release(): void {
    this.stalled = false;
    for (const deliver of this.held.splice(0)) deliver();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
