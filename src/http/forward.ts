/**
 * Forwarding to the upstream over a kept-alive undici Pool. Bodies stream both ways with
 * backpressure; only the wait for response headers is bounded (`upstream.timeout_s`): a stream that
 * has started never times out. A client that goes away aborts the upstream request.
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { buildConnector, errors, Pool, type Dispatcher } from 'undici';
import { CUT_MESSAGE, type CutWhy, type Holder, type MissionHolds, type Ticket } from '../mission/holds.js';
import { dropHeader, mediaTypeOf, relayHeaders, relayTrailerFields, soleField } from './headers.js';
import { closedReason } from './shutdown.js';

export interface UpstreamOptions {
  readonly url: string;
  readonly timeoutMs: number;
  readonly connections: number;
  readonly keepAliveTimeoutMs: number;
  /** Where an exchange a Mission authorized is held from dispatch to its end (cut when the Mission ends). */
  readonly holds: MissionHolds | null;
  /** `upstream.preserve_host`: requests carry the public Host (upstreamHeaders sets it). */
  readonly preserveHost: boolean;
}

/**
 * The TLS server name to ask an https upstream for when the Host header it gets is not its own
 * (`upstream.preserve_host`): undici and Node's https client would take it from that Host. An
 * upstream named by its IP address is asked for none (`''`): RFC 6066 section 3 allows no address
 * in SNI, and its certificate is checked against the address.
 */
export function upstreamServername(u: URL, preserveHost: boolean): string | undefined {
  if (!preserveHost || u.protocol !== 'https:') return undefined;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return isIP(host) === 0 ? host : '';
}

/** A connector that asks for no TLS server name: undici's would take each request's from its Host. */
function withoutServername(connect: buildConnector.connector): buildConnector.connector {
  return ({ servername: _, ...options }, callback) => connect(options, callback);
}

/** Methods whose request content has no generally defined semantics (RFC 9110 sections 9.3.1-9.3.8). */
const UNDEFINED_CONTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE']);

/** What Node's writeHead accepts as a reason phrase (its checkInvalidHeaderChar). */
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;

export type ForwardOutcome =
  /** `session`: the response's Mcp-Session-Id, if any (an MCP server creating a session). */
  | { readonly kind: 'response'; readonly status: number; readonly dpopNonce: boolean; readonly session: string | null }
  | { readonly kind: 'error'; readonly code: 'bad_gateway' | 'gateway_timeout'; readonly error: Error }
  /** The client connection closed first (the client went away, or the gateway cut it at shutdown): `reason` says which. */
  | { readonly kind: 'aborted'; readonly reason: Error };

export interface ForwardRequest {
  readonly method: string;
  /** Normalized path + raw query. */
  readonly path: string;
  readonly headers: string[];
  /** A buffered body, the client stream, or null when there is none. */
  readonly body: Buffer | IncomingMessage | null;
  /** Extra response headers (e.g. DPoP-Nonce). */
  readonly responseHeaders: Record<string, string> | null;
  /** When the request is handed to the upstream (performance.now()): the start of `timeoutMs`. */
  readonly sentAt: number;
  /** The Mission that admitted the request: the exchange is held under it from dispatch to its end. */
  readonly ticket: Ticket | null;
  /**
   * What ends an unsized event-stream answer cut by its Mission, instead of a broken connection (an
   * MCP tool call's result: the client learns why at once rather than waiting for its timeout).
   */
  readonly lastWords?: LastWords | null;
}

/** The end of an event-stream answer cut by its Mission (src/mcp/last-words.ts). */
export interface LastWords {
  /** The answer's bytes, as they are relayed. */
  see(chunk: Buffer): void;
  /** The bytes that end the answer cut for `why`, or null to cut the connection instead. */
  end(why: CutWhy): Buffer | null;
}

/**
 * Ends `res`, an answer cut for `why`, with `words`' last bytes when they have some: true. False
 * when there is nothing to say (or nothing to say it on), and the caller cuts the connection.
 */
export function endWithLastWords(res: ServerResponse, words: LastWords | null, why: CutWhy | undefined): boolean {
  if (why === undefined || words === null || res.destroyed || res.writableEnded) return false;
  const bytes = words.end(why);
  if (bytes === null) return false;
  res.end(bytes);
  return true;
}

export class Upstream {
  readonly pool: Pool;
  readonly origin: string;
  readonly host: string;
  /** The TLS server name to ask for when the Host header is not the upstream's (`preserveHost`). */
  readonly servername: string | undefined;
  /** The bound on the wait for the final response's headers (`upstream.timeout_s`). */
  readonly timeoutMs: number;
  private readonly holds: MissionHolds | null;

  constructor(opts: UpstreamOptions) {
    this.holds = opts.holds;
    const u = new URL(opts.url);
    this.origin = u.origin;
    this.host = u.host;
    // undici takes a TLS server name from the Host header: a preserved one names the public host,
    // not the upstream's certificate. The upstream's own name, whatever the Host.
    this.servername = upstreamServername(u, opts.preserveHost);
    this.timeoutMs = opts.timeoutMs;
    this.basePath = u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '');
    this.pool = new Pool(this.origin, {
      connections: opts.connections,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: 0,
      keepAliveTimeout: opts.keepAliveTimeoutMs,
      pipelining: 1,
      ...(this.servername === '' ? { connect: withoutServername(buildConnector({})) } : {}),
    });
  }

  /** Upstream URL path prefix ("" when the upstream URL has no path). */
  readonly basePath: string;

  /**
   * A request of the gateway's own (an MCP session's end, src/mcp/sessions.ts), bounded by
   * `upstream.timeout_s` as a whole: its answer is read and dropped. The status, or null when it
   * failed. The bound includes the wait for a connection: undici's timeouts start only once the
   * request is written, and long-lived streams may hold every connection (`upstream.connections`).
   */
  own(method: string, path: string, headers: Record<string, string>): Promise<number | null> {
    const signal = AbortSignal.timeout(this.timeoutMs);
    const answered = this.pool
      .request({ method, path: this.basePath + path, headers, signal, headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs, ...(this.servername ? { servername: this.servername } : {}) })
      .then(async (res) => (await res.body.dump(), res.statusCode))
      // A failed request or body (a timeout while the answer is read) is null, as before.
      .catch(() => null);
    // undici fails a request still queued for a connection only once it gets one: not waited for.
    const gaveUp = new Promise<null>((resolve) => signal.addEventListener('abort', () => resolve(null), { once: true }));
    return Promise.race([answered, gaveUp]);
  }

  /**
   * Sends the request and streams the response to `res`. `done` runs once, when the outcome is
   * known: at response start (status), on failure before headers, or when the client went away.
   * `onStart` runs just before headers are written to the client.
   */
  send(req: ForwardRequest, res: ServerResponse, onStart: (status: number) => void, done: (outcome: ForwardOutcome) => void): void {
    const exchange = new Exchange(req, res, this.timeoutMs, req.ticket === null ? null : this.holds, onStart, done);
    if (!exchange.holdFromDispatch()) return;
    const headers = req.headers;
    // false: no connection is free now (upstream.connections busy, long-lived streams included), so
    // the request may wait in the pool's queue, where undici's own timeout does not run.
    const body = req.body;
    // Content on a method that gives it no meaning (RFC 9110 section 9.3.1: a GET body "might lead
    // some implementations to reject the request ... because of its potential as a request smuggling
    // attack"): an upstream that never reads it (python's http.server on a GET) takes it for the
    // connection's next request, one the gateway never decided on. Forwarded, as APIs that search
    // by GET body need, on a connection that closes after it (`Connection: close`).
    const reset = body !== null && UNDEFINED_CONTENT.has(req.method) && !(Buffer.isBuffer(body) && body.length === 0);
    const opts = { origin: this.origin, method: req.method, path: this.basePath + req.path, headers, body, reset, servername: this.servername };
    if (!this.pool.dispatch(opts, exchange)) exchange.mayWait();
  }

  close(): Promise<void> {
    return this.pool.close();
  }

  destroy(): Promise<void> {
    return this.pool.destroy();
  }
}

/**
 * One forwarded exchange: undici's dispatch handler (raw-header hooks: its own HTTP/1.1 client
 * speaks them natively, so no header object is built for a response we only relay) and the
 * outcome, reported once through `done`. One object per request instead of a set of closures.
 */
class Exchange implements Dispatcher.DispatchHandler, Holder {
  private settled = false;
  /** Held under its Mission (holds.ts) from dispatch until it ends or is cut. */
  private held = false;
  private started = false;
  /** A 204 or 304: the response ended with its head; whatever the upstream adds is not relayed. */
  private ended = false;
  private abort: ((err?: Error) => void) | null = null;
  private resume: (() => void) | null = null;
  /**
   * Bounds the wait for a final status across 1xx responses, each of which restarts undici's timer,
   * and the wait for a free connection, which undici's timer does not cover.
   */
  private deadline: NodeJS.Timeout | null = null;
  /** Answered 504 while still waiting for a connection: it leaves the queue when it gets one. */
  private expired = false;
  /** An unsized event-stream answer's last words (the request's, once its answer is such a stream). */
  private words: LastWords | null = null;

  constructor(
    private readonly req: ForwardRequest,
    private readonly res: ServerResponse,
    private readonly timeoutMs: number,
    private readonly holds: MissionHolds | null,
    private readonly onStart: (status: number) => void,
    private readonly done: (outcome: ForwardOutcome) => void,
  ) {
    res.once('close', this.onClose);
    if (res.socket === null) this.watchQueued(res.req.socket);
  }

  /**
   * A response queued behind another's on a pipelined connection has no socket yet, and Node gives
   * it no 'close' when the connection drops: its upstream request (a stream, maybe) would run on for
   * nobody, holding an upstream connection for as long as the upstream streams. Watched through
   * the request's socket until the response has one.
   */
  private watchQueued(socket: Socket): void {
    const dropped = (): void => {
      if (this.res.socket === null) this.onClose();
    };
    socket.once('close', dropped);
    this.res.once('close', () => socket.off('close', dropped));
  }

  private readonly onDeadline = (): void => {
    this.deadline = null;
    if (this.started) return;
    if (this.abort !== null) {
      this.abort(new errors.HeadersTimeoutError());
      return;
    }
    if (this.settled) return;
    // Never got an upstream connection (all busy): 504 now (SPEC section 5: no response headers
    // within upstream.timeout_s); the queued request is dropped when a connection frees (onConnect).
    this.expired = true;
    this.release(); // held from dispatch (holdFromDispatch): answered now, nothing left to cut
    this.res.off('close', this.onClose);
    this.settle({ kind: 'error', code: 'gateway_timeout', error: new errors.HeadersTimeoutError('no upstream connection became free within upstream.timeout_s (upstream.connections are all busy)') });
    this.closeIfUnread();
  };

  /**
   * The pool had no free connection when the request was dispatched: unless it got one at once,
   * the whole wait for response headers (the queue's included) is bounded from now.
   */
  mayWait(): void {
    if (this.abort === null && !this.settled) this.deadline ??= setTimeout(this.onDeadline, this.timeoutMs);
  }

  private clearDeadline(): void {
    if (this.deadline !== null) {
      clearTimeout(this.deadline);
      this.deadline = null;
    }
  }

  private settle(o: ForwardOutcome): void {
    if (!this.settled) {
      this.settled = true;
      this.done(o);
    }
  }

  private readonly onClose = (): void => {
    this.clearDeadline();
    this.release();
    if (!this.res.writableFinished) this.abortClosed(this.abort);
  };

  /**
   * The client connection closed before the answer was written: the upstream request is aborted.
   * Settled first: undici reports the abort through onError at once, which would otherwise settle it
   * as an upstream failure (a 502 nobody received).
   */
  private abortClosed(abort: ((err?: Error) => void) | null): void {
    const reason = closedReason(this.res);
    this.settle({ kind: 'aborted', reason });
    abort?.(reason);
  }

  private readonly onDrain = (): void => this.resume?.();

  private release(): void {
    if (this.held) {
      this.held = false;
      this.holds!.release(this.req.ticket!, this);
    }
  }

  /**
   * An exchange under a Mission is held from dispatch, not from response start: a Mission that stops
   * being active while the request waits for a free upstream connection (r17a 1), while its body
   * still arrives, or while the upstream works cuts it, so the upstream never gets a request sent on
   * after the gateway accepted the change (its 202). A cut request still queued is never written
   * (onConnect finds its response destroyed). False, having cut it, when the Mission already ended.
   */
  holdFromDispatch(): boolean {
    if (this.holds === null) return true;
    if (!this.holds.hold(this.req.ticket!, this)) {
      this.cut();
      return false;
    }
    this.held = true;
    return true;
  }

  /**
   * The Mission that authorized this exchange is no longer active: the upstream request is aborted
   * and the client's connection closed now, or, for an event stream with last words and between
   * two events, those words end the answer.
   */
  cut(why?: CutWhy): void {
    // Before the answer started: the outcome is the cut, not the abort's 502 below.
    this.settle({ kind: 'aborted', reason: Object.assign(new Error(CUT_MESSAGE), { code: 'mission_cut' }) });
    // Out of every Mission it was held under, so another one ending later does not cut it again.
    this.release();
    const spoke = !this.ended && endWithLastWords(this.res, this.words, why);
    if (spoke) {
      // Ended here: the abort's onError below must not break the answer these words end.
      this.ended = true;
      this.res.off('close', this.onClose);
    }
    this.abort?.(new Error(CUT_MESSAGE));
    if (!spoke) this.res.destroy();
  }

  onConnect(abort: (err?: Error) => void): void {
    // Answered 504 while it waited: undici drops a request whose onConnect throws without writing it,
    // and keeps the connection (its abort would destroy the socket).
    if (this.expired) throw new errors.RequestAbortedError('answered 504 while waiting for an upstream connection');
    this.abort = abort;
    if (this.res.destroyed) this.abortClosed(abort);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (statusCode < 200) {
      // 1xx informational: wait for the final response, no longer than the timeout from dispatch.
      this.deadline ??= setTimeout(this.onDeadline, Math.max(0, this.timeoutMs - (performance.now() - this.req.sentAt)));
      if (statusCode === 103) this.relayEarlyHints(rawHeaders);
      return true;
    }
    this.clearDeadline();
    if (statusCode > 599) {
      // Not an HTTP status (RFC 9110 section 15): a broken upstream, answered as one.
      this.abort?.(new Error(`upstream answered with status ${statusCode}`));
      return false;
    }
    const { headers, sized, dpopNonce, session, coded, trailer } = relayHeaders(rawHeaders, this.req.responseHeaders);
    // HEAD, 204 and 304 have no body for a coding to be on (RFC 9112 section 6.1 allows the field).
    if (coded && statusCode !== 204 && statusCode !== 304 && this.req.method !== 'HEAD') {
      // Transfer-Encoding gzip (or another coding) under the chunks: nothing the client gets would say so.
      this.abort?.(new Error('upstream response in a transfer coding other than chunked'));
      return false;
    }
    this.started = true;
    this.resume = resume;
    this.onStart(statusCode);
    // Only an answer without a length can be ended early with more bytes: a sized one is cut (r22a 3).
    if (this.req.lastWords != null && statusCode === 200 && !sized && this.req.method !== 'HEAD' && eventStream(headers)) this.words = this.req.lastWords;
    // RFC 9110 section 8.6: no Content-Length in a 204, whatever the upstream sent.
    if (statusCode === 204 && sized) dropHeader(headers, 'content-length');
    // The fields the trailers will carry (RFC 9110 section 6.6.2), on an answer that can have them:
    // a chunked one, which is what Node writes for an unsized body to an HTTP/1.1 client.
    if (trailer !== null && !sized && statusCode !== 204 && statusCode !== 304 && this.req.method !== 'HEAD' && chunkedTo(this.res.req)) headers.push('Trailer', trailer);
    try {
      // The upstream's reason phrase when it is not the standard one (Node writes that itself,
      // without validating it again). One Node refuses to write (a control byte: undici's parser
      // lets it through) is replaced by the standard one: clients ignore it (RFC 9112 section 4),
      // and the status the record keeps is the one the client gets.
      const reason = statusText === '' || statusText === STATUS_CODES[statusCode] || !REASON_PHRASE.test(statusText) ? undefined : statusText;
      this.res.writeHead(statusCode, reason, headers);
      if (statusCode === 204 || statusCode === 304) {
        // No body by definition (RFC 9110 sections 15.3.5, 15.4.5): the response is complete. A
        // body or a Content-Length the upstream sends anyway must not cut the client's answer.
        this.ended = true;
        this.release();
        this.res.off('close', this.onClose);
        this.res.end();
      } else if (!sized) {
        // A response without a length may be a stream (SSE, long poll) whose first byte comes much
        // later: its headers must reach the client now. A sized one goes out with its body in one write.
        flushHead(this.res);
      }
    } catch (err) {
      this.abort?.(err as Error);
      return false;
    }
    this.settle({ kind: 'response', status: statusCode, dpopNonce, session });
    return true;
  }

  /**
   * A 103 Early Hints passes on to the client (RFC 9110 section 15.2: a proxy forwards 1xx), as
   * Node writes one: its `Link` fields (RFC 8297), which the client may start fetching. Not to an
   * HTTP/1.0 client, which must not get a 1xx, nor once the final response has begun.
   */
  private relayEarlyHints(rawHeaders: Buffer[]): void {
    const req = this.res.req;
    if (this.started || this.res.headersSent || this.res.destroyed || req.httpVersionMajor !== 1 || req.httpVersionMinor < 1) return;
    const links: string[] = [];
    for (let i = 0; i < rawHeaders.length; i += 2) {
      if (rawHeaders[i]!.length === 4 && rawHeaders[i]!.toString('latin1').toLowerCase() === 'link') links.push(rawHeaders[i + 1]!.toString('latin1'));
    }
    if (links.length === 0) return;
    try {
      this.res.writeEarlyHints({ link: links });
    } catch {
      // A Link value Node will not write (not a valid link): the hints are dropped, the answer is not.
    }
  }

  onData(chunk: Buffer): boolean {
    if (this.ended) return true;
    this.words?.see(chunk);
    if (this.res.write(chunk)) return true;
    this.res.once('drain', this.onDrain);
    return false;
  }

  onComplete(trailers: readonly (Buffer | string)[] | null): void {
    this.closeIfUnread();
    if (this.ended) return;
    this.release();
    this.res.off('close', this.onClose);
    if (trailers !== null && trailers.length !== 0) relayTrailers(this.res, trailers);
    this.res.end();
  }

  /**
   * The answer is complete (or failed) while the client's request body is still arriving (an early
   * 401 or 413, an upstream reset): undici stops sending it upstream and destroys the stream,
   * detached from its socket, so the rest is never read and Node parses no further request on the
   * connection. It is closed once the answer is written (closeAfterAnswer). A body that had fully arrived
   * (the usual case) costs only this check.
   */
  private closeIfUnread(): void {
    const body = this.req.body;
    if (body === null || Buffer.isBuffer(body) || body.complete) return;
    closeAfterAnswer(this.res, this.res.socket ?? (body.socket as Socket | null));
  }

  onError(err: Error): void {
    this.clearDeadline();
    if (this.ended) {
      this.closeIfUnread();
      return;
    }
    this.release();
    this.res.off('close', this.onClose);
    if (!this.started) {
      const code = (err as { code?: string }).code === 'UND_ERR_HEADERS_TIMEOUT' ? 'gateway_timeout' : 'bad_gateway';
      this.settle({ kind: 'error', code, error: err });
    } else {
      // Mid-stream failure: the status is already sent; cut the client connection so it sees the break.
      this.res.destroy(err);
    }
    this.settle({ kind: 'aborted', reason: err });
    // A 502/504 written while the body was still arriving.
    if (!this.res.destroyed) this.closeIfUnread();
  }
}

/** An answer whose one Content-Type field is text/event-stream (two fields: not known to be one). */
function eventStream(headers: readonly string[]): boolean {
  const type = soleField(headers, 'content-type');
  return typeof type === 'string' && mediaTypeOf(type) === 'text/event-stream';
}

/**
 * Writes a response's head now, as its body would: byte for byte. Node's flushHeaders() writes the
 * head as UTF-8, so a header value's obs-text byte (0x80-0xff, relayed as latin1) reached the
 * client as two bytes on every unsized answer (r17f 1). A HEAD answer has no body to write the
 * head with: it goes with end(), which the upstream's answer to a HEAD reaches at once.
 */
export function flushHead(res: ServerResponse): void {
  if (res.req.method !== 'HEAD') res.write('', 'latin1');
}

/** Whether Node answers `req` chunked when no length is given: from HTTP/1.1 on. */
function chunkedTo(req: IncomingMessage): boolean {
  return req.httpVersionMajor > 1 || (req.httpVersionMajor === 1 && req.httpVersionMinor >= 1);
}

/**
 * The upstream's trailer fields after the last chunk of the client's answer (RFC 9110 section 6.5):
 * an integrity digest, a final status. Node writes them only on a chunked answer and drops them on
 * any other.
 */
function relayTrailers(res: ServerResponse, raw: readonly (Buffer | string)[]): void {
  const fields = relayTrailerFields(raw);
  if (fields.length !== 0) res.addTrailers(fields);
}

/** How long a connection closed after an answer that left its request unread stays half-closed (Go's net/http waits as long). */
export const LINGER_MS = 500;

/**
 * Closes a connection whose input may still be arriving (RFC 9112 section 9.6): its write side at
 * once, so the client sees the end, and the socket LINGER_MS later. Destroyed with unread input, a
 * socket sends a reset, which can destroy an answer the client has not read yet.
 */
export function lingeringClose(socket: Socket): void {
  socket.end();
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}

/**
 * Closes the client's connection once `res` is written (lingeringClose): for a request whose body
 * will not be read to its end (RFC 9112 section 9.6; not drained instead: undici has destroyed the
 * request stream, and the rest may be any size), and for a refused upgrade, whose socket Node has
 * handed over. Its write side first, so a client that sends another request sees the end at once
 * instead of waiting for an answer, and the socket LINGER_MS later. Closing with unread input sends
 * a reset, which could destroy the answer before the client has read it.
 */
export function closeAfterAnswer(res: ServerResponse, socket: Socket | null): void {
  if (socket === null || socket.destroyed) return;
  if (res.writableFinished) lingeringClose(socket);
  else res.once('finish', () => lingeringClose(socket));
}
