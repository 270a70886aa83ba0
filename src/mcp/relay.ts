/**
 * Talking to the upstream MCP server when its answer must be changed on the way back: tools/list
 * answers filtered, and the gateway's own answers (denied calls of a batch) merged in. Everything
 * else goes through the pipeline's streaming forwarder untouched; this path exists only for those
 * requests.
 *
 * JSON answers are read into memory (bounded) and rewritten only when something changed; SSE is
 * rewritten event by event as it arrives (sse.ts), so progress notifications are not held back.
 * Failures before the answer starts are SPEC section 5 upstream failures (502/504); a stream that
 * breaks later is cut, so the client sees the break.
 */
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { errors } from 'undici';
import { Denial } from '../errors.js';
import { endWithLastWords, flushHead, type LastWords } from '../http/forward.js';
import { clientHeaders, dropHeader, mediaTypeOf, setHeader, upstreamHeaders } from '../http/headers.js';
import { writeJson } from '../http/json.js';
import { closedReason } from '../http/shutdown.js';
import { CUT_MESSAGE, type Holder } from '../mission/holds.js';
import type { Logger } from '../observability/logger.js';
import { principalOf, type RequestContext } from '../pipeline/context.js';
import { writeDenial } from '../pipeline/respond.js';
import type { Pipeline } from '../pipeline/run.js';
import type { DenialResult } from './denial.js';
import { messageEvent, SseRewriter } from './sse.js';
import type { ListAnswers } from './tools.js';

/** Largest upstream JSON answer the gateway will read to filter or merge (fail closed past it). */
export const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/**
 * Bytes of upstream JSON answers read whole (to filter or merge) and not yet taken by their
 * clients, process-wide. Such an answer is written in one piece: a client that stops reading would
 * keep it in memory, and a few dozen of them, each with an answer of some MiB, would take the
 * process past its memory limit (r14c 2). Past the bound an answer is not read (502), and one
 * principal (a token's issuer, subject and client, or an address) holds at most a quarter of it, so
 * that one agent that stops reading cannot take the others' tool lists away (r14d 2). An answer its
 * client does not take at MIN_SEND_RATE on average (or within upstream.timeout_s, whichever is
 * longer) is cut, which frees its share.
 */
export const MAX_BUFFERED_ANSWER_BYTES = 64 * 1024 * 1024;
export const MIN_SEND_RATE = 64 * 1024; // bytes per second

class AnswerBudget {
  used = 0;
  private readonly held = new Map<string, number>();
  /** Both settable for tests. */
  constructor(
    public max: number,
    public minSendRate: number,
  ) {}
  take(who: string, n: number): boolean {
    const mine = this.held.get(who) ?? 0;
    if (this.used + n > this.max || mine + n > this.max / 4) return false;
    this.used += n;
    this.held.set(who, mine + n);
    return true;
  }
  give(who: string, n: number): void {
    if (n === 0) return;
    this.used -= n;
    const left = (this.held.get(who) ?? 0) - n;
    if (left > 0) this.held.set(who, left);
    else this.held.delete(who);
  }
}

export const bufferedAnswers = new AnswerBudget(MAX_BUFFERED_ANSWER_BYTES, MIN_SEND_RATE);

export interface RelayPlan {
  /** The body to send (null for GET). */
  readonly body: Buffer | null;
  /** The gateway's answers to merge in (denied calls of a batch). */
  readonly answers: readonly DenialResult[];
  /** The client sent a batch: the merged reply is an array. */
  readonly batch: boolean;
  /** tools/list answers to filter, or null. */
  readonly lists: ListAnswers | null;
  /** Called once the upstream's status (or failure) is known, before the body is relayed. */
  readonly onOutcome: () => void;
  /** How an event-stream answer ends when its Mission cuts it (forward.ts LastWords), or null. */
  readonly lastWords?: LastWords | null;
}

/** Answers the client without the upstream (every gated message was denied). */
export function answerDirectly(ctx: RequestContext, pipeline: Pipeline, payload: unknown, decisionId = ctx.id): void {
  const headers: Record<string, string> = { 'mission-decision': decisionId };
  if (ctx.dpopNonce !== null) headers['dpop-nonce'] = ctx.dpopNonce;
  pipeline.deps.metrics.observeDecision(ctx.kind, (performance.now() - ctx.started) / 1000);
  writeJson(ctx.res, 200, JSON.stringify(payload), headers);
}

export async function relay(ctx: RequestContext, pipeline: Pipeline, plan: RelayPlan, logger: Logger): Promise<void> {
  const d = pipeline.deps;
  const up = d.upstream;
  const res = ctx.res;
  ctx.stage = 'forward';
  const headers = upstreamHeaders(ctx.req, ctx.clientIp, d.headers.strip, {
    decisionId: ctx.id,
    mission: ctx.token === null ? [] : pipeline.identityHeaders(ctx),
  });
  if (plan.body !== null) setHeader(headers, 'content-length', String(plan.body.length));
  // The answer is read here: ask for it unencoded (a compressed tools/list could not be filtered).
  dropHeader(headers, 'accept-encoding');
  const decided = pipeline.decided(ctx);

  const abort = new AbortController();
  // Why the connection closed under the request: the client went away, or the gateway cut it at
  // the end of the shutdown grace period (logged as such, as on the route path), or answered it itself.
  const onClose = (): void => {
    if (!res.writableFinished) abort.abort(closedReason(res));
  };
  const logCut = (): void => {
    const reason = abort.signal.reason as { code?: string; message?: string };
    if (reason?.code === 'shutdown') logger.warn({ decision_id: ctx.id, err: reason.message, code: reason.code }, 'request cut at shutdown');
  };
  res.once('close', onClose);
  // A response queued behind another on a pipelined connection emits no 'close' when it drops.
  ctx.req.socket.once('close', onClose);
  // undici bounds the wait for headers, but each 1xx response restarts its timer: this bound holds
  // from dispatch to the final status, whatever comes before it.
  let timedOut = false;
  const deadline = setTimeout(() => {
    timedOut = true;
    abort.abort(new errors.HeadersTimeoutError());
  }, up.timeoutMs);
  // Held under the Mission that admitted the request from dispatch (holds.ts): one that ends while
  // the request waits for a connection or the upstream works cuts it, unsent or unanswered (r17a 1).
  const holds = d.holds;
  const ticket = pipeline.ticket(ctx);
  /** An event-stream answer being relayed (chunked, its Content-Length dropped): its last words. */
  let lastWords: LastWords | null = null;
  /** Ended by the last words of a cut: nothing may break the answer after them. */
  let endedByCut = false;
  const holder: Holder = {
    cut: (why) => {
      endedByCut = endWithLastWords(res, lastWords, why);
      abort.abort(new Error(CUT_MESSAGE));
      if (!endedByCut) res.destroy();
    },
  };
  let held = false;
  try {
    if (ticket !== null) {
      held = holds!.hold(ticket, holder);
      if (!held) return holder.cut();
    }
    let r;
    try {
      // servername: undici reads it (Upstream.servername), its request types do not list it.
      const options = { origin: up.origin, method: ctx.method as 'POST', path: up.basePath + ctx.path + ctx.search, headers, body: plan.body, signal: abort.signal, servername: up.servername };
      r = await up.pool.request(options);
    } catch (err) {
      if (abort.signal.aborted && !timedOut) {
        ctx.upstreamStatus ??= 499;
        logCut();
        return;
      }
      const code = timedOut || (err as { code?: string }).code === 'UND_ERR_HEADERS_TIMEOUT' ? 'gateway_timeout' : 'bad_gateway';
      const denial = new Denial(code, { cause: err });
      ctx.upstreamStatus = denial.spec.status;
      plan.onOutcome();
      writeDenial(res, denial, ctx.id, null, null);
      logger.warn({ decision_id: ctx.id, err: (err as Error).message }, 'upstream failed');
      return;
    }
    clearTimeout(deadline);
    const status = r.statusCode;
    if (status > 599) {
      return await refuse(r.body, `upstream answered with status ${status}`);
    }
    ctx.upstreamStatus = status;
    d.metrics.observeUpstream((performance.now() - decided) / 1000);
    const raw = r.headers as Record<string, string | string[] | undefined>;
    const encoding = raw['content-encoding'];
    const ok = status >= 200 && status < 300;
    const type = mediaTypeOf(raw['content-type']);
    const whole = ok && plan.answers.length > 0 && (status === 202 || raw['content-length'] === '0');
    // Refused before the record is written, so that it says what the client got (502, set where
    // the refusal is answered), not the upstream's status. An encoded answer cannot be looked
    // into, and a tool list the gateway cannot read is not shown (a lenient client might still
    // take one from a body labelled otherwise): refused rather than passed on unfiltered.
    if (encoding !== undefined && encoding !== 'identity') {
      return await refuse(r.body, 'upstream answer is content-encoded');
    }
    if (ok && !whole && plan.lists !== null && Array.isArray(raw['content-type'])) {
      // Two Content-Type fields (a singleton, RFC 9110 section 8.3): clients differ on which to read (r21d 6).
      return await refuse(r.body, 'upstream answered tools/list with two Content-Type fields');
    }
    if (ok && !whole && plan.lists !== null && type !== 'application/json' && type !== 'text/event-stream') {
      return await refuse(r.body, `upstream answered tools/list as ${type === '' ? 'no media type' : type}`);
    }
    plan.onOutcome();
    const out = clientHeaders(raw);
    if (ctx.dpopNonce !== null) out['dpop-nonce'] = ctx.dpopNonce;

    if (whole) {
      // Everything forwarded was a notification or a response: the answers are the whole reply.
      await r.body.dump();
      answerDirectly(ctx, pipeline, plan.answers);
      return;
    }
    if (ok && type === 'application/json') {
      await relayJson(ctx, r.body, status, out, plan, up.timeoutMs, logger);
      return;
    }
    if (ok && type === 'text/event-stream') {
      const lists = plan.lists;
      const rewriter = lists === null ? null : new SseRewriter((m) => lists.rewrite(m));
      delete out['content-length'];
      res.writeHead(status, out);
      flushHead(res);
      lastWords = plan.lastWords ?? null;
      for (const a of plan.answers) res.write(messageEvent(a));
      // After the gateway's own events, an upstream byte order mark would sit mid-stream, where a
      // client reads it as part of a field name and loses the upstream's first event.
      await pipe(r.body, res, rewriter, abort.signal, plan.answers.length > 0, lastWords);
      return;
    }
    // Errors, and other media types where nothing is filtered, pass through as they are.
    res.writeHead(status, out);
    flushHead(res);
    await pipe(r.body, res, null, abort.signal);
  } catch (err) {
    if (!abort.signal.aborted) logger.warn({ decision_id: ctx.id, err: (err as Error).message }, 'MCP upstream answer failed');
    else logCut();
    if (!res.headersSent) {
      const denial = new Denial('bad_gateway', { cause: err });
      ctx.upstreamStatus = denial.spec.status;
      writeDenial(res, denial, ctx.id, null, null);
    } else if (!endedByCut) {
      res.destroy();
    }
  } finally {
    clearTimeout(deadline);
    res.off('close', onClose);
    ctx.req.socket.off('close', onClose);
    if (held) holds!.release(ticket!, holder);
  }
}

async function relayJson(
  ctx: RequestContext,
  body: Readable,
  status: number,
  out: Record<string, string | string[]>,
  plan: RelayPlan,
  timeoutMs: number,
  logger: Logger,
): Promise<void> {
  const res = ctx.res;
  const socket = ctx.req.socket;
  const who = principalOf(ctx);
  // The answer's share of MAX_BUFFERED_ANSWER_BYTES, held until its client has taken it or is gone.
  // Gone is the socket's 'close' too: a response queued behind another on a pipelined connection
  // emits no 'close' of its own when the connection drops (r14d 1).
  let share = 0;
  let timer: NodeJS.Timeout | undefined;
  const release = (): void => {
    bufferedAnswers.give(who, share);
    share = 0;
    clearTimeout(timer);
    res.off('close', release);
    socket.off('close', release);
  };
  res.once('close', release);
  socket.once('close', release);
  const bytes = await readLimited(body, MAX_RESPONSE_BYTES, (n) => {
    // A client already gone: its 'close' has passed, and nothing would give this share back.
    if (res.closed || socket.destroyed) throw new Error('the client went away');
    if (!bufferedAnswers.take(who, n)) throw new Error('too many MCP answers are waiting for their clients to read them');
    share += n;
  });
  const send = (data: Buffer | string): void => {
    res.writeHead(status, out);
    res.end(data);
    if (res.writableFinished) return;
    const size = typeof data === 'string' ? Buffer.byteLength(data) : data.length;
    timer = setTimeout(() => {
      logger.info({ decision_id: ctx.id, bytes: size }, 'MCP answer not read by its client in time: connection closed');
      socket.destroy();
    }, Math.max(timeoutMs, (size / bufferedAnswers.minSendRate) * 1000));
  };
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    // An answer that must be filtered but cannot be read is not shown (fail closed).
    if (plan.lists !== null) throw err;
    return send(bytes);
  }
  const replaced = plan.lists?.rewrite(doc);
  if (replaced === undefined && plan.answers.length === 0) return send(bytes);
  const next = replaced ?? doc;
  const payload = plan.answers.length > 0 || plan.batch ? [...plan.answers, ...(Array.isArray(next) ? next : [next])] : next;
  const text = JSON.stringify(payload);
  out['content-length'] = String(Buffer.byteLength(text));
  send(text);
}

/** An upstream answer the gateway will not relay: its body is discarded, and the caller answers 502. */
async function refuse(body: { dump(): Promise<void> }, why: string): Promise<never> {
  await body.dump().catch(() => {});
  throw new Error(why);
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/**
 * Streams the upstream body to the client with backpressure, through the rewriter when given;
 * with `dropBom`, without a byte order mark at the body's start (however the chunks cut it).
 */
async function pipe(body: Readable, res: RequestContext['res'], rewriter: SseRewriter | null, signal: AbortSignal, dropBom = false, lastWords: LastWords | null = null): Promise<void> {
  /** The body's first bytes, held while they may still be a byte order mark. */
  let head: Buffer | null = dropBom ? Buffer.alloc(0) : null;
  const send = async (chunk: Buffer): Promise<void> => {
    const bytes = rewriter === null ? chunk : rewriter.push(chunk);
    lastWords?.see(bytes);
    if (bytes.length > 0 && !res.write(bytes)) await once(res, 'drain', { signal });
  };
  for await (let chunk of body as AsyncIterable<Buffer>) {
    if (head !== null) {
      head = Buffer.concat([head, chunk]);
      if (head.length < BOM.length && head.equals(BOM.subarray(0, head.length))) continue;
      chunk = head.subarray(0, BOM.length).equals(BOM) ? head.subarray(BOM.length) : head;
      head = null;
    }
    if (chunk.length > 0) await send(chunk);
  }
  if (head !== null && head.length > 0) await send(head);
  const rest = rewriter?.flush() ?? null;
  if (rest !== null) res.write(rest);
  res.end();
}

async function readLimited(body: Readable, max: number, take: (n: number) => void): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new Error('upstream answer too large to filter');
    take(chunk.length);
    chunks.push(chunk);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
}
