/**
 * Builds every part of the gateway from a loaded config and owns start, reload and stop.
 *
 * Long-lived parts (metrics, evidence sink, replay store, replica bus) survive a reload; the
 * runtime (routes, upstream pool, keys, Mission state, stages) is rebuilt from the new config and
 * swapped in atomically. An invalid new config keeps the old runtime running.
 */
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { compileRoutes } from './config/compile.js';
import { ConfigError, loadConfigFile, type LoadedConfig } from './config/load.js';
import { preflightProblems } from './config/preflight.js';
import { formatListener, type Config } from './config/schema.js';
import { Denial, DENIALS } from './errors.js';
import { lingeringClose, Upstream } from './http/forward.js';
import { derivedMaxConnections, openFileLimit } from './http/connections.js';
import { hostRequired, makeDropSet, soleField, TrustedProxies, type HeaderPolicy } from './http/headers.js';
import { writeJson } from './http/json.js';
import { answeredAtProtocolLevel, cutAtShutdown } from './http/shutdown.js';
import { Cors } from './http/cors.js';
import { socketResponse, WebSocketTunnel } from './http/upgrade.js';
import { wholeMs } from './values.js';
import { upstreamEnder } from './mcp/sessions.js';
import { createLogger, type Logger } from './observability/logger.js';
import { Metrics } from './observability/metrics.js';
import { Challenges } from './pipeline/respond.js';
import { Pipeline } from './pipeline/run.js';
import { buildLongLivedParts, buildParts, type LongLived, type Parts } from './parts.js';

export interface GatewayOptions {
  /** Replaces the pino logger (tests). */
  readonly logger?: Logger;
  /** Registers process metrics on the gateway's registry (default true). */
  readonly defaultMetrics?: boolean;
}

interface Runtime {
  readonly config: Config;
  readonly pipeline: Pipeline;
  readonly parts: Parts;
  readonly upstream: Upstream;
  readonly tunnel: WebSocketTunnel;
  /** Documents served by the gateway itself (no decision record): path → JSON body. */
  readonly documents: ReadonlyMap<string, string>;
  /** `cors`: null when not configured. */
  readonly cors: Cors | null;
}

export class Gateway {
  readonly metrics: Metrics;
  readonly logger: Logger;
  private runtime: Runtime;
  private readonly longLived: LongLived;
  private proxyServer: Server | null = null;
  private adminServer: Server | null = null;
  private draining = false;
  private file: string | null;
  /** What the listeners were opened with (host as configured, port as bound): a reload compares with these. */
  private listening: { readonly listen: Address; readonly admin: Address; readonly requested: { readonly listen: number; readonly admin: number } } | null = null;

  private constructor(runtime: Runtime, longLived: LongLived, metrics: Metrics, logger: Logger, file: string | null) {
    this.runtime = runtime;
    this.startedWith = runtime.config;
    this.longLived = longLived;
    this.metrics = metrics;
    this.logger = logger;
    this.file = file;
  }

  get config(): Config {
    return this.runtime.config;
  }

  /** Builds the gateway from a config (not yet listening). */
  static async create(loaded: LoadedConfig | { config: Config; file?: string }, options: GatewayOptions = {}): Promise<Gateway> {
    const config = loaded.config;
    const logger = options.logger ?? createLogger(config.log.level);
    const metrics = new Metrics({ defaultMetrics: options.defaultMetrics ?? true });
    const longLived = await buildLongLivedParts(config, metrics, logger);
    const runtime = await buildRuntime(config, longLived, metrics, logger);
    return new Gateway(runtime, longLived, metrics, logger, loaded.file ?? null);
  }

  /** Starts both listeners; resolves with their URLs. */
  async listen(): Promise<{ url: string; adminUrl: string }> {
    const c = this.runtime.config;
    const proxy = createServer(
      {
        // Node checks the head and request timeouts on this interval (30 s by default): check often
        // enough that a slowloris connection is cut close to its deadline. Set once, at start.
        connectionsCheckingInterval: Math.min(1000, Math.max(1, Math.round(wholeMs(c.limits.headers_timeout_s) / 2))),
        // The pipeline denies a missing Host itself, with the SPEC body and an evidence record.
        requireHostHeader: false,
        joinDuplicateHeaders: false,
      },
      (req, res) => this.onRequest(req, res),
    );
    applyLimits(proxy, c);
    // Node keeps the first 1000 fields of a head and drops the rest without an error, Content-Length
    // included: the request would go upstream without its framing or body. No count limit leaves
    // limits.max_header_bytes (431) as the only bound, and a head within it arrives whole.
    proxy.maxHeadersCount = 0;
    const connections = this.longLived.connections;
    proxy.on('connection', (socket: Socket) => {
      connections.add(socket);
      socket.once('close', () => connections.delete(socket));
    });
    // Past limits.max_connections Node closes a new connection at once: counted, and said at most every 10 s.
    let lastDropLog = -Infinity;
    let droppedSinceLog = 0;
    proxy.on('drop', () => {
      this.metrics.connectionsDropped.inc();
      droppedSinceLog += 1;
      const now = performance.now();
      if (now - lastDropLog < 10_000) return;
      this.logger.warn({ max_connections: proxy.maxConnections, dropped: droppedSinceLog }, 'limits.max_connections client connections are open: new ones are closed as soon as accepted');
      lastDropLog = now;
      droppedSinceLog = 0;
    });
    proxy.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.onUpgrade(req, socket, head));
    proxy.on('connect', (req: IncomingMessage, socket: Socket) => this.onConnect(req, socket));
    proxy.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      // A response already under way on the connection (a streamed request whose body turned out
      // malformed): an answer written now would land inside it. Node's own handler guards the same way.
      const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
      if (!socket.writable || (inFlight != null && inFlight.headersSent)) return socket.destroy();
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      // A request already forwarded on this connection (its body's framing broke) is recorded with this status.
      if (inFlight != null) answeredAtProtocolLevel(socket, status);
      const body = JSON.stringify({ error: MALFORMED.error, error_description: 'malformed HTTP request', denial_reason: MALFORMED.reason, decision_id: null });
      socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]!}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
      closeWhenAnswered(socket);
    });
    const admin = createServer((req, res) => this.onAdmin(req, res));
    await Promise.all([listenOn(proxy, c.listen.host, c.listen.port), listenOn(admin, c.admin.host, c.admin.port)]);
    this.proxyServer = proxy;
    this.adminServer = admin;
    this.runtime.parts.start();
    const url = serverUrl(proxy);
    const adminUrl = serverUrl(admin);
    const bound = { listen: boundAddress(proxy, c.listen.host), admin: boundAddress(admin, c.admin.host) };
    this.listening = { ...bound, requested: { listen: c.listen.port, admin: c.admin.port } };
    // `listen`/`admin`: the addresses bound (0.0.0.0: every interface); `url`/`adminUrl`: where to reach them from this host.
    this.logger.info({ listen: socketAddress(proxy), admin: socketAddress(admin), url, adminUrl, upstream: c.upstream.url, max_connections: proxy.maxConnections === Infinity ? 0 : proxy.maxConnections }, 'mission-gateway listening');
    // A shared replay store means several replicas; nonces signed with a per-process secret work on one only.
    if (c.dpop.nonce && c.dpop.nonce_secret === undefined && c.replay_store.type === 'redis') {
      this.logger.warn('dpop.nonce without dpop.nonce_secret: this process signs nonces with its own random secret, so other replicas refuse them (use_dpop_nonce); set the same nonce_secret on every replica');
    }
    return { url, adminUrl };
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const rt = this.runtime;
    // Not setHeader('connection'): a field set so makes Node keep only the last of a repeated name
    // (two Set-Cookie) in the flat list a relayed answer is written with.
    if (this.draining) res.shouldKeepAlive = false;
    // A preflight from an allowed origin is answered here, before any document or decision.
    if (rt.cors !== null && rt.cors.handle(req, res)) return;
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const rawPath = q === -1 ? url : url.slice(0, q);
    // Documents the gateway serves itself make no decision record (SPEC section 9). A request
    // without a required Host goes on to the pipeline, which denies it (here and for SET pushes).
    if (req.method === 'GET' || req.method === 'HEAD') {
      const doc = rt.documents.get(rawPath);
      if (doc !== undefined && !hostMissing(req)) {
        // Node writes no body to a HEAD: the same head, without the document.
        writeJson(res, 200, doc, { 'cache-control': 'max-age=300' });
        return;
      }
    }
    if (rawPath === rt.pipeline.deps.pushPath && !hostMissing(req)) {
      rt.parts.missionStates.handlePush(req, res);
      return;
    }
    rt.pipeline.handle(req, res);
  }

  /** WebSocket upgrades: authorized like any request, then tunneled (SPEC section 6). */
  private onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const rt = this.runtime;
    socket.on('error', () => socket.destroy());
    void rt.tunnel.handle(rt.pipeline, req, socketResponse(req, socket), socket, head);
  }

  /**
   * CONNECT, a forward proxy's method, is denied like any request the gateway cannot route: with
   * the SPEC body and an evidence record (without this listener Node would drop the connection).
   */
  private onConnect(req: IncomingMessage, socket: Socket): void {
    socket.on('error', () => socket.destroy());
    const res = socketResponse(req, socket);
    res.once('finish', () => socket.end());
    const pipeline = this.runtime.pipeline;
    const ctx = pipeline.context(req, res);
    if (ctx !== null) pipeline.deny(ctx, new Denial('request_malformed', { description: 'CONNECT is not supported' }));
  }

  private onAdmin(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      json(res, 200, { status: 'ok' });
    } else if (path === '/readyz') {
      const checks = this.readiness();
      const ready = Object.values(checks).every(Boolean) && !this.draining;
      json(res, ready ? 200 : 503, { status: ready ? 'ready' : 'not_ready', checks, draining: this.draining });
    } else if (path === '/metrics') {
      this.metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
          res.end(text);
        },
        () => json(res, 500, { error: 'metrics unavailable' }),
      );
    } else {
      json(res, 404, { error: 'not_found' });
    }
  }

  readiness(): Record<string, boolean> {
    const p = this.runtime.parts;
    return {
      issuer_keys: p.keys.ready(),
      evidence_sink: this.longLived.evidence.healthy(),
      mission_events: p.missionStates.ready(),
      replay_store: this.longLived.replay.ready(),
      // A replica that cannot read the bus (Redis down, an ACL without XREAD) learns other
      // replicas' revocations only from Status, within max_stale_s (r20e 3).
      replica_bus: this.longLived.bus.ready(),
    };
  }

  /**
   * Reloads the config file (SIGHUP). An invalid file keeps the running config; the outcome is
   * logged and counted in mission_gateway_config_reloads_total.
   *
   * One reload runs at a time. Asked for while one runs, a reload follows it (reading the file
   * then), once for every request made meanwhile: a storm of signals (a config watcher sending one
   * per retry) costs two rebuilds, not one each, and every caller's promise settles with a reload
   * that read the file after it asked.
   */
  reload(): Promise<boolean> {
    if (this.reloading === null) {
      this.reloading = this.reloadOnce().finally(() => {
        this.reloading = null;
      });
      return this.reloading;
    }
    this.nextReload ??= this.reloading.then(() => {
      this.nextReload = null;
      return this.reload();
    });
    return this.nextReload;
  }

  private reloading: Promise<boolean> | null = null;
  private nextReload: Promise<boolean> | null = null;

  private async reloadOnce(): Promise<boolean> {
    if (this.file === null) return false;
    try {
      const loaded = loadConfigFile(this.file);
      // What start would refuse on this machine (a missing key file, an evidence folder that is
      // gone) is refused here too, with the same key-path lines: a reload that logs success must
      // not leave a config the next restart refuses (r17e 2).
      const problems = preflightProblems(loaded.config);
      if (problems.length > 0) throw new ConfigError(problems);
      const next = await buildRuntime(loaded.config, this.longLived, this.metrics, this.logger);
      const old = this.runtime;
      // Keep what events taught the old cache (revocations, seen SET ids) across the reload, and
      // the issuers' last-good keys (an issuer unreachable now must not turn every token into a 503).
      next.parts.missionStates.adopt(old.parts.missionStates);
      old.parts.missionStates.stopPolling();
      next.parts.keys.adopt(old.parts.keys);
      this.runtime = next;
      next.parts.start();
      if (this.proxyServer !== null) applyLimits(this.proxyServer, loaded.config);
      this.metrics.configReloads.labels('success').inc();
      this.logger.info({ file: this.file }, 'config reloaded');
      const moved = this.listenersMoved(loaded.config);
      if (moved.length > 0) this.logger.warn({ changed: moved }, 'listen/admin address changes need a restart; kept the current listeners');
      const kept = restartOnly(this.startedWith, loaded.config);
      if (kept.length > 0) this.logger.warn({ changed: kept }, 'these settings take effect at the next restart; the running gateway keeps the ones it started with');
      // Let requests in flight on the old runtime finish before closing its pools.
      setTimeout(() => void closeRuntime(old), 30_000).unref();
      return true;
    } catch (err) {
      this.metrics.configReloads.labels('failure').inc();
      this.logger.error({ file: this.file, problems: (err as { problems?: string[] }).problems ?? String(err) }, 'config reload failed; keeping the running config');
      return false;
    }
  }

  /** The config the gateway started with: what the parts built once (evidence, replay store, logger) run on. */
  private readonly startedWith: Config;

  /**
   * The listeners a config names that differ from those open (compared with the sockets, not the
   * last file loaded: reloading the original file after a change warns no more). A port of 0 in
   * both means "any free port" and does not differ.
   */
  private listenersMoved(next: Config): { listener: 'listen' | 'admin'; listening: string; configured: string }[] {
    const now = this.listening;
    if (now === null) return [];
    const out: { listener: 'listen' | 'admin'; listening: string; configured: string }[] = [];
    for (const name of ['listen', 'admin'] as const) {
      const open = now[name];
      const want = next[name];
      const samePort = want.port === open.port || (want.port === 0 && now.requested[name] === 0);
      if (!samePort || want.host.toLowerCase() !== open.host.toLowerCase()) {
        out.push({ listener: name, listening: formatListener(open.host, open.port), configured: formatListener(want.host, want.port) });
      }
    }
    return out;
  }

  /** Graceful stop: refuse new connections, finish in-flight requests up to the grace period. */
  async close(graceMs = this.runtime.config.shutdown_grace_s * 1000): Promise<void> {
    this.draining = true;
    const proxy = this.proxyServer;
    const closing = proxy === null ? Promise.resolve() : new Promise<void>((r) => proxy.close(() => r()));
    // Connections go idle as their in-flight requests finish: close them as they do.
    proxy?.closeIdleConnections();
    const sweep = setInterval(() => proxy?.closeIdleConnections(), 50);
    let timer: NodeJS.Timeout | undefined;
    let graceOver = false;
    await Promise.race([
      closing,
      new Promise<void>((r) => {
        timer = setTimeout(() => {
          graceOver = true;
          r();
        }, graceMs);
      }),
    ]);
    clearInterval(sweep);
    clearTimeout(timer);
    // Sockets destroyed just now (the last idle ones) leave the set only when their 'close' runs.
    const open = graceOver ? [...this.longLived.connections].filter((socket) => !socket.destroyed) : [];
    if (open.length > 0) {
      // The grace period is over: what is still open is cut, and logged as cut at shutdown (a
      // request's upstream abort too), not as clients that went away.
      for (const socket of open) cutAtShutdown(socket);
      this.logger.warn({ cause: 'shutdown', grace_ms: graceMs, connections: open.length }, 'shutdown grace period over; cutting the connections still open');
    }
    proxy?.closeAllConnections();
    await new Promise<void>((r) => (this.adminServer === null ? r() : this.adminServer.close(() => r())));
    this.adminServer?.closeAllConnections();
    await closeRuntime(this.runtime);
    await this.longLived.close();
  }
}

async function buildRuntime(config: Config, longLived: LongLived, metrics: Metrics, logger: Logger): Promise<Runtime> {
  const parts = await buildParts(config, longLived, metrics, logger);
  const upstream = new Upstream({
    url: config.upstream.url,
    timeoutMs: wholeMs(config.upstream.timeout_s),
    connections: config.upstream.connections,
    keepAliveTimeoutMs: wholeMs(config.upstream.keep_alive_timeout_s),
    holds: longLived.holds,
    preserveHost: config.upstream.preserve_host,
  });
  const trusted = new TrustedProxies(config.trusted_proxies);
  const publicUrl = new URL(config.public_base_url);
  const proto = publicUrl.protocol.slice(0, -1);
  const upstreamHost = config.upstream.preserve_host ? publicUrl.host : upstream.host;
  // Sessions the gateway ends are ended at this runtime's upstream from now on (a reload included).
  if (config.mcp !== undefined) longLived.sessions.terminate = upstreamEnder(upstream, config.mcp.path, upstreamHost, logger);
  const policy = (strip: boolean): HeaderPolicy => ({ drop: makeDropSet(strip), trusted, proto, upstreamHost });
  const algs = config.dpop.algorithms.join(' ');
  const bearerAllowed = !config.dpop.required;
  const pipeline = new Pipeline({
    resource: config.resource,
    routes: compileRoutes(config),
    stages: parts.stages,
    reviewer: parts.reviewer,
    upstream,
    evidence: longLived.evidence,
    holds: longLived.holds,
    metrics,
    logger,
    maxBodyBytes: config.max_body_bytes,
    challenges: new Challenges({ algs, resourceMetadata: parts.prm.urlFor(config.resource), bearerAllowed }),
    headers: { strip: policy(true), passCredentials: policy(false) },
    mcp:
      config.mcp === undefined || parts.mcp === null
        ? null
        : {
            path: config.mcp.path,
            resource: config.mcp.resource ?? config.resource,
            challenges: new Challenges({ algs, resourceMetadata: parts.prm.urlFor(config.mcp.resource ?? config.resource), bearerAllowed }),
            handler: parts.mcp,
          },
    idJag: config.id_jag === undefined || parts.idJag === null ? null : { path: config.id_jag.token_path, handler: parts.idJag },
    pushPath: config.mission.events.push_path,
    tokenSkewS: config.token.clock_skew_s,
  });
  return {
    config,
    pipeline,
    parts,
    upstream,
    tunnel: new WebSocketTunnel(config.upstream.url, logger, wholeMs(config.upstream.timeout_s), longLived.holds, longLived.tunnels, config.upstream.websocket_tunnels, config.upstream.preserve_host),
    documents: parts.prm.paths,
    cors: config.cors === undefined ? null : new Cors({ allowedOrigins: config.cors.allowed_origins, maxAgeS: config.cors.max_age_s, exposeHeaders: config.cors.expose_headers }),
  };
}

/** How long an answer to a protocol error (400, 408, 431) may take to flush before its connection is cut. */
const ERROR_ANSWER_FLUSH_MS = 2000;

/**
 * A connection answered at the protocol level is finished. `end()` only half-closes it: a client
 * that never closes its own end would keep the socket, and a file descriptor, for as long as it
 * likes (the slowloris defence would then only move the exhaustion from connections to fds). Once
 * the answer and the FIN are written the socket is destroyed, LINGER_MS later so that a client
 * still sending is not reset before it reads the answer (lingeringClose); one whose answer cannot
 * be flushed (a client that does not read) is destroyed after ERROR_ANSWER_FLUSH_MS.
 */
function closeWhenAnswered(socket: Socket): void {
  const timer = setTimeout(() => socket.destroy(), ERROR_ANSWER_FLUSH_MS);
  timer.unref();
  socket.once('finish', () => lingeringClose(socket));
  socket.once('close', () => clearTimeout(timer));
}

/** The answer to a request Node's parser refused (clientError): the catalogue's request_malformed. */
const MALFORMED = DENIALS.request_malformed;

async function closeRuntime(rt: Runtime): Promise<void> {
  await Promise.allSettled([rt.upstream.close(), rt.parts.close(), rt.tunnel.close()]);
}

function listenOn(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

interface Address {
  readonly host: string;
  readonly port: number;
}

/** The host as configured (a name is kept as written) and the port as bound (a port of 0 resolved). */
function boundAddress(server: Server, host: string): Address {
  return { host, port: (server.address() as AddressInfo).port };
}

/** The socket's own address, e.g. `0.0.0.0:8080` or `[::]:8080`. */
function socketAddress(server: Server): string {
  const a = server.address() as AddressInfo;
  return formatListener(a.address, a.port);
}

function serverUrl(server: Server): string {
  const a = server.address() as AddressInfo;
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address === '0.0.0.0' ? '127.0.0.1' : a.address;
  return `http://${host}:${a.port}`;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  writeJson(res, status, JSON.stringify(body));
}

/** An HTTP/1.1 request without Host (Node's own check is off: the pipeline denies it, with evidence). */
function hostMissing(req: IncomingMessage): boolean {
  return hostRequired(req) && soleField(req.rawHeaders, 'host') === null;
}

/** `limits.max_connections`, or the cap derived from the open-file limit; Infinity for none. */
function maxConnections(config: Config): number {
  const set = config.limits.max_connections ?? derivedMaxConnections(openFileLimit(), config.upstream.connections, config.upstream.websocket_tunnels);
  return set === 0 ? Infinity : set;
}

/**
 * `limits` on the proxy listener, at start and on every reload: the timeouts and the request cap
 * apply to open connections too (Node reads them as it checks), `max_header_bytes` to connections
 * opened from now on (each one's parser takes it when the connection opens).
 */
function applyLimits(server: Server, config: Config): void {
  const limits = config.limits;
  server.maxConnections = maxConnections(config);
  // createServer's maxHeaderSize option, kept on the server as this (untyped) property, which
  // Node 20 and 24 read as each connection opens (test/http/lifecycle.test.ts, SIGHUP, runs on both).
  (server as Server & { maxHeaderSize: number }).maxHeaderSize = limits.max_header_bytes;
  server.headersTimeout = wholeMs(limits.headers_timeout_s);
  server.requestTimeout = wholeMs(limits.request_timeout_s);
  server.keepAliveTimeout = wholeMs(limits.keep_alive_timeout_s);
  server.maxRequestsPerSocket = limits.max_requests_per_socket;
}

/**
 * The settings a reload cannot change, because the parts they configure are built once at start
 * (the evidence log and its chain, the replay store and replica bus, the logger): those that differ
 * between `started` and `next`, by key path.
 */
export function restartOnly(started: Config, next: Config): string[] {
  const paths: [string, (c: Config) => unknown][] = [
    ['evidence', (c) => c.evidence],
    ['replay_store', (c) => c.replay_store],
    ['dpop.replay_max_entries', (c) => c.dpop.replay_max_entries],
    ['log', (c) => c.log],
  ];
  return paths.filter(([, at]) => JSON.stringify(at(started)) !== JSON.stringify(at(next))).map(([path]) => path);
}
