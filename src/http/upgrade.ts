/**
 * WebSocket upgrades (SPEC section 6): authorized by the same pipeline as any request, then
 * tunneled with http-proxy-3 (the maintained TypeScript successor of http-proxy, whose upstream
 * has been unmaintained since 2020). The upstream sees the same header policy as for HTTP.
 */
import { createHash } from 'node:crypto';
import { ServerResponse, type ClientRequest, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Agent as HttpsAgent } from 'node:https';
import { createProxyServer, type ProxyServer } from 'http-proxy-3';
import { Denial } from '../errors.js';
import type { Holder, MissionHolds, Ticket } from '../mission/holds.js';
import type { Logger } from '../observability/logger.js';
import type { RequestContext } from '../pipeline/context.js';
import { writeDenial } from '../pipeline/respond.js';
import type { Pipeline } from '../pipeline/run.js';
import { hasBody } from './body.js';
import { closeAfterAnswer, upstreamServername } from './forward.js';
import { clientHeaders, upstreamHeaders } from './headers.js';

/** An admitted upgrade whose upstream has not answered yet. */
interface Pending {
  readonly ctx: RequestContext;
  readonly pipeline: Pipeline;
  /** The Mission that admitted the upgrade: the tunnel is held under it (cut when it ends). */
  readonly ticket: Ticket | null;
  /** The Sec-WebSocket-Accept the upstream's 101 must carry (RFC 6455 section 4.2.2). */
  readonly accept: string;
  /** performance.now() when the upgrade was admitted: the upstream's time is counted from it. */
  readonly decided: number;
  timedOut: boolean;
  recorded: boolean;
}

const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/**
 * Why a 101 is not the WebSocket handshake that was asked for, or null when it is: RFC 6455 section
 * 4.1 (the client fails the connection otherwise) and RFC 9110 section 7.8 (no switch to a protocol
 * the request did not name). A tunnel opened on an `Upgrade: h2c` 101, or on one whose upstream
 * keeps speaking HTTP, would carry requests the gateway never decided on.
 */
function notTheHandshake(res: IncomingMessage, accept: string): string | null {
  const upgrade = res.headers['upgrade'];
  if (typeof upgrade !== 'string' || upgrade.trim().toLowerCase() !== 'websocket') return 'the upstream switched to a protocol other than websocket';
  if (res.headers['sec-websocket-accept'] !== accept) return 'the upstream answered the upgrade without the matching Sec-WebSocket-Accept';
  return null;
}

/** Socket errors a tunnel's peer causes by going away: not the operator's concern. */
const ROUTINE_SOCKET_ERRORS: ReadonlySet<string> = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

export class WebSocketTunnel {
  private readonly proxy: ProxyServer;
  private readonly pending = new WeakMap<IncomingMessage, Pending>();

  constructor(
    target: string,
    private readonly logger: Logger,
    /** Bound on the wait for the upstream's answer to the upgrade (`upstream.timeout_s`). */
    private readonly timeoutMs: number,
    private readonly holds: MissionHolds | null,
    /**
     * The client sockets of open tunnels, shared by every config's tunnel: a reload retires this
     * tunnel (close()) but its open tunnels keep flowing; the gateway destroys them on shutdown.
     */
    private readonly sockets: Set<Socket>,
    /** Bound on open tunnels (`upstream.websocket_tunnels`), over `sockets`. */
    private readonly maxTunnels: number,
    /** `upstream.preserve_host`: the Host upstreamHeaders chose goes as it is (else the target's). */
    preserveHost: boolean,
  ) {
    // Node's https client takes the TLS server name from the Host header: with the public one, the
    // upstream is still asked for its own name (an agent's options win over the request's).
    const servername = upstreamServername(new URL(target), preserveHost);
    const agent = servername === undefined ? undefined : new HttpsAgent({ servername });
    this.proxy = createProxyServer({ target, ws: true, xfwd: false, changeOrigin: !preserveHost, ...(agent === undefined ? {} : { agent }) });
    // Errors come through each request's callback (handle); this only keeps an unexpected one from
    // being an unhandled 'error' event. A peer that resets an open tunnel (a client gone away, most
    // often, which anyone can do on an `auth: none` route) is routine: debug, as any client that
    // goes away (r18c 4).
    this.proxy.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== undefined && ROUTINE_SOCKET_ERRORS.has(err.code)) this.logger.debug({ err: err.message }, 'websocket tunnel reset');
      else this.logger.warn({ err: err.message }, 'websocket proxy error');
    });
    this.proxy.on('proxyReqWs', (proxyReq: ClientRequest, req: IncomingMessage, socket: Socket) => {
      const p = this.pending.get(req);
      if (p === undefined) return;
      // No answer to the upgrade within the timeout: 504, and the upstream request is dropped.
      const timer = setTimeout(() => {
        p.timedOut = true;
        proxyReq.destroy(new Error('the upstream did not answer the upgrade in time'));
      }, this.timeoutMs);
      // A client whose end arrives before the answer has gone (nothing of a handshake is sent
      // half-closed). Node keeps an upgraded socket half-open, so without this it would hold its
      // place under upstream.websocket_tunnels, and the upstream request, until the timeout.
      const gone = (): void => void socket.destroy();
      socket.once('end', gone);
      proxyReq.once('upgrade', (res: IncomingMessage, proxySocket: Socket) => {
        socket.off('end', gone);
        clearTimeout(timer);
        const wrong = notTheHandshake(res, p.accept);
        if (wrong !== null) {
          // 502 before the proxy's own handler (registered after this one) writes the 101: it
          // then finds the upstream socket destroyed and the client's ended, and relays nothing.
          proxySocket.destroy();
          this.fail(p, socket, new Error(wrong));
          socket.end();
          return;
        }
        this.answered(p);
        this.record(p, 101);
        // Once either side is gone the other goes too, whatever it still holds or never reads.
        socket.once('close', () => proxySocket.destroy());
        if (p.ticket !== null && this.holds !== null) this.hold(p.ticket, this.holds, socket, proxySocket);
      });
      // The upstream answered with plain HTTP (not a WebSocket endpoint): relayed under the same
      // response policy as any answer, then the connection closes (r19f 3).
      proxyReq.once('response', (res: IncomingMessage) => {
        socket.off('end', gone);
        clearTimeout(timer);
        this.relayAnswer(p, socket, res);
      });
      // http-proxy's own relay of that answer (registered next) writes it raw, with the upstream's
      // reason phrase, hop-by-hop and Connection-named fields, and any transfer coding: not registered.
      const on = proxyReq.on.bind(proxyReq) as (event: string | symbol, listener: (...args: unknown[]) => void) => ClientRequest;
      proxyReq.on = ((event: string | symbol, listener: (...args: unknown[]) => void) => (event === 'response' ? proxyReq : on(event, listener))) as ClientRequest['on'];
      // A client that goes away before the answer: the upstream request is dropped with it.
      socket.once('close', () => {
        clearTimeout(timer);
        if (!p.recorded) {
          proxyReq.destroy();
          this.record(p, 499);
        }
      });
    });
  }

  async handle(pipeline: Pipeline, req: IncomingMessage, res: ServerResponse, socket: Socket, head: Buffer): Promise<void> {
    const ctx = pipeline.context(req, res);
    if (ctx === null) {
      // Answered 400 (the request line or head): the connection closes with it, as after any denial.
      closeAfterAnswer(res, socket);
      return;
    }
    const upgrade = req.headers['upgrade'];
    try {
      if (typeof upgrade !== 'string' || upgrade.toLowerCase() !== 'websocket') {
        throw new Denial('request_malformed', { description: 'only WebSocket upgrades are supported' });
      }
      // RFC 6455 section 4.1: the opening handshake is a GET (the tunnel would drop any other silently).
      if (req.method !== 'GET') throw new Denial('request_malformed', { description: 'a WebSocket upgrade is a GET' });
      // ... without a body: one would be relayed into the tunnel after the 101, as frames.
      if (hasBody(req)) throw new Denial('request_malformed', { description: 'a WebSocket upgrade has no body' });
      // ... with the key the upstream's 101 must answer (RFC 6455 section 4.1).
      const key = req.headers['sec-websocket-key'];
      if (typeof key !== 'string' || key.length === 0) throw new Denial('request_malformed', { description: 'a WebSocket upgrade carries a Sec-WebSocket-Key' });
      await pipeline.admit(ctx);
      const decided = pipeline.decided(ctx);
      // The client went away while it was decided (a Status query, a key fetch): no tunnel, and
      // no slot taken (its 'close' came before any listener here; r19f 2).
      if (socket.destroyed || !socket.readable) {
        socket.destroy();
        recordPermit(pipeline, ctx, 499);
        return;
      }
      // Each tunnel holds a client and an upstream socket, outside the upstream pool, for as long
      // as it is open: past `upstream.websocket_tunnels` (the count includes upgrades still waiting
      // for the upstream's answer), a permitted upgrade is answered 503, as a full pool answers 504.
      if (this.sockets.size >= this.maxTunnels) {
        writeDenial(res, new Denial('tunnels_full', { retryAfter: 1 }), ctx.id, null, null);
        closeAfterAnswer(res, socket);
        recordPermit(pipeline, ctx, 503);
        this.logger.debug({ decision_id: ctx.id, tunnels: this.sockets.size }, 'websocket tunnel limit reached');
        return;
      }
      const identity = ctx.token === null ? [] : pipeline.identityHeaders(ctx);
      const flat = upstreamHeaders(req, ctx.clientIp, pipeline.deps.headers.strip, { decisionId: ctx.id, mission: identity });
      // Each field stays a field of its own, as on any forwarded request: joined with ", " two
      // Cookie fields would read as one cookie whose value holds the other.
      const headers: Record<string, string | string[]> = {};
      for (let i = 0; i < flat.length; i += 2) {
        const k = flat[i]!.toLowerCase();
        const had = headers[k];
        const v = flat[i + 1]!;
        headers[k] = had === undefined ? v : typeof had === 'string' ? [had, v] : [...had, v];
      }
      headers['connection'] = 'Upgrade';
      headers['upgrade'] = upgrade;
      req.headers = headers;
      req.url = ctx.path + ctx.search;
      res.detachSocket(socket);
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      // The permit record waits for the upstream's answer, so it carries what the client got.
      const accept = createHash('sha1').update(key + WEBSOCKET_GUID).digest('base64');
      const p: Pending = { ctx, pipeline, ticket: pipeline.ticket(ctx), accept, decided, timedOut: false, recorded: false };
      this.pending.set(req, p);
      this.proxy.ws(req, socket, head, (err: Error) => this.fail(p, socket, err));
    } catch (err) {
      pipeline.deny(ctx, err);
      closeAfterAnswer(res, socket);
    }
  }

  /** The upstream could not be reached, or did not answer in time: 502 or 504 with the SPEC body. */
  private fail(p: Pending, socket: Socket, err: Error): void {
    if (p.recorded) return;
    const denial = new Denial(p.timedOut ? 'gateway_timeout' : 'bad_gateway', { cause: err });
    this.logger.warn({ decision_id: p.ctx.id, err: err.message }, 'websocket upstream failed');
    if (socket.writable) writeDenial(socketResponse(p.ctx.req, socket), denial, p.ctx.id, null, null);
    else socket.destroy();
    this.record(p, denial.spec.status);
  }

  /**
   * An answer other than 101: its status and body, with the fields relayHeaders would relay (no
   * hop-by-hop or Connection-named ones) and the standard reason phrase; in a transfer coding other
   * than chunked, a 502 as on any request. The connection closes after it.
   */
  private relayAnswer(p: Pending, socket: Socket, res: IncomingMessage): void {
    this.answered(p);
    // Node's client parser takes any three digits: one under 200 (a final answer, not 101) or over
    // 599 is no HTTP status (RFC 9110 section 15), a broken upstream answered as one; writeHead
    // would throw on one under 100, in a listener, and end the process (r21d 4, 5).
    const status = res.statusCode ?? 502;
    const te = res.headers['transfer-encoding'];
    const broken = status < 200 || status > 599 ? `upstream answered the upgrade with status ${status}` : te !== undefined && te.toLowerCase() !== 'chunked' ? 'upstream response in a transfer coding other than chunked' : null;
    if (broken !== null) {
      res.on('error', () => undefined);
      res.resume();
      this.fail(p, socket, new Error(broken));
      socket.end();
      return;
    }
    // Held under its Mission like any forwarded answer (an event stream, say, answering an upgrade
    // its upstream does not support), cut when the Mission ends (r20a 1); one cut already is 499.
    if (p.ticket !== null && this.holds !== null && !this.hold(p.ticket, this.holds, socket, res)) {
      this.record(p, 499);
      return;
    }
    this.record(p, status);
    if (!socket.writable) {
      res.resume();
      return;
    }
    const out = socketResponse(p.ctx.req, socket);
    out.once('finish', () => socket.end());
    if (status === 204 || status === 304) {
      // No body by definition (RFC 9110 sections 15.3.5, 15.4.5): complete now. One the upstream
      // sends anyway fails its parser, which must not cut the client's answer (as forward.ts).
      const headers = clientHeaders(res.headers);
      delete headers['content-length'];
      out.writeHead(status, headers);
      out.end();
      res.on('error', () => undefined);
      res.resume();
      return;
    }
    out.writeHead(status, clientHeaders(res.headers));
    res.once('error', () => socket.destroy());
    // A client that goes away takes the upstream request with it, as on any forwarded request (r20a 3).
    socket.once('close', () => res.destroy());
    res.pipe(out);
  }

  private answered(p: Pending): void {
    p.pipeline.deps.metrics.observeUpstream((performance.now() - p.decided) / 1000);
  }

  /**
   * Holds an open tunnel, or a plain answer to the upgrade, under its Mission until the client
   * socket closes: when the Mission stops being active both sides are destroyed. False (both
   * destroyed now) when it ended while the upstream was answering: for a tunnel, before the proxy's
   * own 'upgrade' handler (registered after this one) writes the 101 and starts relaying what the
   * upstream sent with it; that handler then finds both sockets destroyed and relays nothing.
   */
  private hold(ticket: Ticket, holds: MissionHolds, socket: Socket, upstream: { destroy(): unknown }): boolean {
    const holder: Holder = {
      cut: () => {
        socket.destroy();
        upstream.destroy();
      },
    };
    if (!holds.hold(ticket, holder)) {
      holder.cut();
      return false;
    }
    socket.once('close', () => holds.release(ticket, holder));
    return true;
  }

  private record(p: Pending, status: number): void {
    if (p.recorded) return;
    p.recorded = true;
    recordPermit(p.pipeline, p.ctx, status);
  }

  /** Takes no new upgrades; tunnels already open are left to run (their sockets are the gateway's). */
  async close(): Promise<void> {
    this.proxy.close();
  }
}

/** The permit record of an upgrade, with the status its client got (the upstream's, or the gateway's own). */
function recordPermit(pipeline: Pipeline, ctx: RequestContext, status: number): void {
  ctx.upstreamStatus = status;
  pipeline.record(ctx, 'permit', null);
}

/**
 * A response written straight to a socket Node handed over (an upgrade, a CONNECT): one answer,
 * then the connection closes.
 */
export function socketResponse(req: IncomingMessage, socket: Socket): ServerResponse {
  const res = new ServerResponse(req);
  res.assignSocket(socket);
  res.shouldKeepAlive = false;
  return res;
}
