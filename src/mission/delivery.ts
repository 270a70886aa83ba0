/**
 * SET delivery: the RFC 8935 push receiver and the RFC 8936 poll loop. Both verify each SET
 * (events.ts) and hand it to a sink (the state cache, state.ts), which applies it synchronously;
 * only then does the push get its 202, or the poll its acknowledgement.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { request } from 'undici';
import type { Config } from '../config/schema.js';
import { mediaTypeOf } from '../http/headers.js';
import { writeJson } from '../http/json.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { MAX_SET_BYTES, SetRejected, type EventResult, type SetErrorCode, type SetVerifier, type VerifiedSet } from './events.js';
import type { MissionChange } from './types.js';

const SET_CONTENT_TYPE = 'application/secevent+jwt';
const MAX_POLL_RESPONSE_BYTES = 4 * 1024 * 1024;

/** Where verified SETs go. */
export interface SetSink {
  /** Applies a verified SET synchronously; returns the metrics result. */
  apply(set: VerifiedSet, via: 'push' | 'poll'): EventResult;
  /** Shares a change with the other replicas. */
  publish(change: MissionChange): Promise<void>;
  /** Forgets a SET's jti, so that the transmitter's retry is applied and published again. */
  forget(set: VerifiedSet): void;
  /**
   * Shares a change with the other replicas once the bus is back: it was applied here, and its SET
   * acknowledged, while it could not be published (the poll queue must move on).
   */
  defer(change: MissionChange): void;
  isClosed(): boolean;
}

interface DeliveryDeps {
  readonly verifier: SetVerifier;
  readonly sink: SetSink;
  readonly metrics: Metrics;
  readonly logger: Logger;
}

/** The push receiver's own: its slots and bounds. */
interface PushDeps extends DeliveryDeps {
  /** The receiver's pushes being verified (one counter per receiver, not per process). */
  readonly pending: PushSlots;
  /** Pushes being verified at once, past which a push is answered 503 (default MAX_PENDING_PUSHES). */
  readonly maxPendingPushes?: number;
  /** How long a push body may take to arrive (default PUSH_BODY_TIMEOUT_MS). */
  readonly bodyTimeoutMs?: number;
}

/** The pushes a receiver has read and not answered yet, and when it last warned of a deferred one. */
export interface PushSlots {
  count: number;
  /** performance.now() of the last deferred push logged at warn (DEFERRED_WARN_EVERY_MS). */
  deferredWarnedAt?: number;
  /** Deferred pushes logged at debug since then. */
  deferredQuiet?: number;
}

/**
 * A deferred push (its issuer's key not known yet) is logged at warn at most this often: anyone
 * who can reach the push path can send SETs naming an unknown `kid`, one warn line each (r20b 5).
 * The `deferred` count in mission_gateway_events_total still counts every one.
 */
const DEFERRED_WARN_EVERY_MS = 60_000;

/**
 * SETs read and not yet answered, at most: a push is unauthenticated until verified, and a SET with
 * an unknown `kid` waits up to a second for the issuer's keys (events.ts), so a flood of forged ones
 * would otherwise hold memory without bound. A transmitter retries a 503. Bodies still arriving do
 * not count (PUSH_BODY_TIMEOUT_MS bounds them), so slow clients cannot take the slots a genuine
 * revocation needs.
 */
export const MAX_PENDING_PUSHES = 1000;

/** A SET is at most MAX_SET_BYTES: its body arrives within this, or the push is answered 408 and closed. */
export const PUSH_BODY_TIMEOUT_MS = 10_000;

type Outcome = { ok: true } | { ok: false; status: number; err: SetErrorCode | 'temporarily_unavailable'; description: string; retryAfter?: number };

/** Retry-After (s) for a SET that cannot be verified yet (its issuer's keys, SetRejected.transient). */
const KEYS_RETRY_AFTER_S = 5;
/** SETs held back from acknowledgement (not shared with the other replicas yet) that are remembered. */
const MAX_HELD_BACK = 10_000;

function sendSetError(res: ServerResponse, status: number, err: string, description: string, headers: Record<string, string> = {}): void {
  writeJson(res, status, JSON.stringify({ err, description }), headers);
}

/**
 * RFC 8935 receiver: POST, `Content-Type: application/secevent+jwt`, a bounded body. 202 (empty)
 * once the SET is verified, applied and shared with the other replicas; 400 with
 * `{"err", "description"}` when it is rejected.
 */
export function handleSetPush(req: IncomingMessage, res: ServerResponse, deps: PushDeps): void {
  if (req.method !== 'POST') {
    req.resume();
    sendSetError(res, 405, 'invalid_request', 'only POST is accepted', { allow: 'POST' });
    return;
  }
  const type = mediaTypeOf(req.headers['content-type']);
  if (type !== SET_CONTENT_TYPE) {
    req.resume();
    deps.metrics.events.labels('rejected').inc();
    sendSetError(res, 400, 'invalid_request', `the Content-Type must be ${SET_CONTENT_TYPE}`);
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  const slow = setTimeout(() => {
    tooLarge = true; // nothing more is read
    chunks.length = 0;
    deps.metrics.events.labels('rejected').inc();
    sendSetError(res, 408, 'invalid_request', 'the SET did not arrive in time', { connection: 'close' });
  }, deps.bodyTimeoutMs ?? PUSH_BODY_TIMEOUT_MS);
  res.once('close', () => clearTimeout(slow));
  req.on('data', (chunk: Buffer) => {
    if (tooLarge) return;
    size += chunk.length;
    if (size > MAX_SET_BYTES) {
      tooLarge = true;
      chunks.length = 0;
      deps.metrics.events.labels('rejected').inc();
      sendSetError(res, 400, 'invalid_request', 'the SET is too large', { connection: 'close' });
      return;
    }
    chunks.push(chunk);
  });
  req.on('error', () => undefined);
  req.on('end', () => {
    clearTimeout(slow);
    if (tooLarge) return;
    const pending = deps.pending;
    if (pending.count >= (deps.maxPendingPushes ?? MAX_PENDING_PUSHES)) {
      sendSetError(res, 503, 'temporarily_unavailable', 'too many SETs are being processed', { 'retry-after': '1' });
      return;
    }
    pending.count++;
    res.once('close', () => pending.count--);
    receive(Buffer.concat(chunks).toString('utf8').trim(), deps).then(
      (outcome) => {
        if (outcome.ok) res.writeHead(202, { 'content-length': '0', 'cache-control': 'no-store' }).end();
        else sendSetError(res, outcome.status, outcome.err, outcome.description, outcome.retryAfter === undefined ? {} : { 'retry-after': String(outcome.retryAfter) });
      },
      (err: unknown) => {
        deps.logger.error({ err: err instanceof Error ? err.message : String(err) }, 'SET receiver failed');
        sendSetError(res, 500, 'invalid_request', 'the SET could not be processed');
      },
    );
  });
}

function logDeferred(deps: PushDeps, reason: string): void {
  const slots = deps.pending;
  const now = performance.now();
  if (slots.deferredWarnedAt !== undefined && now - slots.deferredWarnedAt < DEFERRED_WARN_EVERY_MS) {
    slots.deferredQuiet = (slots.deferredQuiet ?? 0) + 1;
    deps.logger.debug({ reason }, 'SET not verifiable yet; the transmitter is asked to retry');
    return;
  }
  const quiet = slots.deferredQuiet ?? 0;
  slots.deferredWarnedAt = now;
  slots.deferredQuiet = 0;
  deps.logger.warn(quiet > 0 ? { reason, deferred_since_last_warning: quiet } : { reason }, 'SET not verifiable yet; the transmitter is asked to retry');
}

async function receive(jwt: string, deps: PushDeps): Promise<Outcome> {
  let set: VerifiedSet;
  try {
    set = await deps.verifier.verify(jwt);
  } catch (err) {
    if (err instanceof SetRejected && err.transient) {
      // Not the SET's fault: a 400 would make the transmitter drop it. It retries a 503.
      deps.metrics.events.labels('deferred').inc();
      logDeferred(deps, err.message);
      return { ok: false, status: 503, err: 'temporarily_unavailable', description: err.message, retryAfter: KEYS_RETRY_AFTER_S };
    }
    deps.metrics.events.labels('rejected').inc();
    if (err instanceof SetRejected) {
      // Anyone can send junk to the push path: only a refused SET the issuer signed is the
      // operator's concern (an authority whose revocations are being lost), at warn (r18c 3).
      if (err.signedBy !== null) deps.logger.warn({ err: err.err, reason: err.message, issuer: err.signedBy }, 'SET rejected');
      else deps.logger.debug({ err: err.err, reason: err.message }, 'SET rejected before its signature verified');
      return { ok: false, status: 400, err: err.err, description: err.message };
    }
    throw err;
  }
  if (deps.sink.isClosed()) return { ok: false, status: 503, err: 'temporarily_unavailable', description: 'the receiver is shutting down' };
  const result = deps.sink.apply(set, 'push');
  deps.metrics.events.labels(result).inc();
  if (set.kind === 'lifecycle' && result !== 'duplicate') {
    try {
      await deps.sink.publish(set.change);
    } catch {
      // Applied here, but the other replicas did not hear of it: let the transmitter retry.
      deps.sink.forget(set);
      return { ok: false, status: 503, err: 'temporarily_unavailable', description: 'the event could not be shared with every replica' };
    }
  }
  return { ok: true };
}

/** Polls made at once in a row while `moreAvailable`, before the loop waits `interval_s` once. */
export const MAX_POLL_BURST = 50;

/**
 * RFC 8936 poll loop: every `interval_s` (at once again while `moreAvailable`), POST
 * `{ack, setErrs, maxEvents, returnImmediately: true}`, apply what comes back, and acknowledge
 * (or report) each SET in the next request. The request carries no credentials.
 */
export class SetPoller {
  /** Epoch ms of the last successful poll, null before the first. */
  lastSuccess: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private abort: AbortController | null = null;
  private acks: string[] = [];
  /** Keyed by jti from the transmitter: no prototype, so a jti like `__proto__` is an entry too. */
  private errs: Record<string, { err: string; description: string }> = Object.create(null) as Record<string, { err: string; description: string }>;
  /**
   * SETs applied here but left unacknowledged because they could not be shared with the other
   * replicas: the transmitter delivers them again (to whichever replica polls), once. Delivered
   * again and still not shared, they are acknowledged and shared when the bus is back
   * (SetSink.defer), so that the oldest SETs cannot hold the queue up: the transmitter always
   * answers with the oldest unacknowledged ones.
   */
  private readonly heldBack = new Set<string>();
  private stopped = false;
  private readonly headers: Record<string, string>;

  constructor(
    private readonly poll: NonNullable<Config['mission']['events']['poll']>,
    private readonly timeoutMs: number,
    private readonly deps: DeliveryDeps,
    private readonly now: () => number,
  ) {
    this.headers = { 'content-type': 'application/json', accept: 'application/json' };
    if (poll.token !== undefined) this.headers['authorization'] = `Bearer ${poll.token}`;
  }

  /** Polls made at once in a row because more was available (MAX_POLL_BURST). */
  private burst = 0;

  start(): void {
    if (this.timer === null && !this.stopped) this.schedule(0);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    const interval = this.poll.interval_s * 1000;
    this.timer = setTimeout(() => {
      this.pollOnce().then(
        (more) => {
          // At once again while more is available, up to MAX_POLL_BURST times in a row: a
          // transmitter answering moreAvailable forever (one junk SET each time) is not polled in a loop.
          this.burst = more && this.burst < MAX_POLL_BURST ? this.burst + 1 : 0;
          this.schedule(this.burst > 0 ? 0 : interval);
        },
        () => {
          this.burst = 0;
          this.schedule(interval);
        },
      );
    }, delayMs);
    this.timer.unref();
  }

  /**
   * One poll. Resolves with whether to poll again at once: `moreAvailable` on an answer whose SETs
   * moved the queue on (one acknowledged or reported; an answer of SETs all left for redelivery
   * would otherwise be polled in a loop). Rejects when the transmitter cannot be polled.
   */
  async pollOnce(): Promise<boolean> {
    const body = JSON.stringify({ ack: this.acks, ...(Object.keys(this.errs).length > 0 ? { setErrs: this.errs } : {}), maxEvents: this.poll.max_events, returnImmediately: true });
    const abort = new AbortController();
    this.abort = abort;
    const timer = setTimeout(() => abort.abort(), this.timeoutMs);
    let parsed: { sets: Record<string, unknown>; more: boolean };
    try {
      const res = await request(this.poll.endpoint, { method: 'POST', body, headers: this.headers, signal: abort.signal });
      const text = await readLimited(res.body, MAX_POLL_RESPONSE_BYTES);
      if (res.statusCode !== 200) throw new Error(`poll answered ${res.statusCode}`);
      parsed = parsePollResponse(text);
    } catch (err) {
      this.deps.metrics.events.labels('poll_failed').inc();
      this.deps.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'SET poll failed');
      throw err;
    } finally {
      clearTimeout(timer);
      this.abort = null;
    }
    // The transmitter has our acknowledgements now.
    this.acks = [];
    this.errs = Object.create(null) as Record<string, { err: string; description: string }>;
    this.lastSuccess = this.now();
    let settled = 0;
    // Every SET of the answer is applied before any is shared: publications go out together (in
    // order on the bus's connection) and are awaited after, so a bus that hangs delays none of the
    // answer's revocations here, only their acknowledgement (r18d 1).
    const shared: { readonly jti: string; readonly set: VerifiedSet; readonly change: MissionChange; readonly published: Promise<boolean> }[] = [];
    for (const [jti, jwt] of Object.entries(parsed.sets)) {
      if (typeof jwt !== 'string') {
        this.errs[jti] = { err: 'invalid_request', description: 'the SET is not a string' };
        settled++;
        continue;
      }
      try {
        const set = await this.deps.verifier.verify(jwt);
        // Stopped meanwhile (a reload retired this poller): left unacknowledged for the next one, so
        // the running config's cache learns it, not this retired one's (r17e 1).
        if (this.stopped) break;
        const result = this.deps.sink.apply(set, 'poll');
        this.deps.metrics.events.labels(result).inc();
        if (set.kind === 'lifecycle' && result !== 'duplicate') {
          shared.push({ jti, set, change: set.change, published: this.deps.sink.publish(set.change).then(() => true, () => false) });
          continue;
        }
        this.settle(jti);
        settled++;
      } catch (err) {
        if (err instanceof SetRejected && err.transient) {
          // Left for redelivery: reporting it would make the transmitter drop it.
          this.deps.metrics.events.labels('deferred').inc();
          this.deps.logger.warn({ jti, reason: err.message }, 'polled SET not verifiable yet; left for redelivery');
          continue;
        }
        this.deps.metrics.events.labels('rejected').inc();
        const e = err instanceof SetRejected ? err : new SetRejected('invalid_request', 'the SET could not be processed');
        this.errs[jti] = { err: e.err, description: e.message };
        settled++;
      }
    }
    for (const { jti, set, change, published } of shared) {
      if (!(await published)) {
        if (!this.heldBack.has(jti)) {
          // Applied here, but the other replicas did not hear of it: not acknowledged this
          // time, so the transmitter delivers it again (as a push is answered 503).
          if (this.heldBack.size >= MAX_HELD_BACK) this.heldBack.clear();
          this.heldBack.add(jti);
          this.deps.sink.forget(set);
          continue;
        }
        this.deps.sink.defer(change);
      }
      this.settle(jti);
      settled++;
    }
    return parsed.more && settled > 0;
  }

  /** A SET done with: acknowledged at the next poll. */
  private settle(jti: string): void {
    this.heldBack.delete(jti);
    this.acks.push(jti);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.abort?.abort();
  }
}

async function readLimited(body: AsyncIterable<Buffer>, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) throw new Error('poll response too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parsePollResponse(text: string): { sets: Record<string, unknown>; more: boolean } {
  const body = JSON.parse(text) as unknown;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('poll response is not an object');
  const { sets, moreAvailable } = body as Record<string, unknown>;
  if (sets !== undefined && (sets === null || typeof sets !== 'object' || Array.isArray(sets))) throw new Error('poll response sets is not an object');
  return { sets: (sets ?? {}) as Record<string, unknown>, more: moreAvailable === true };
}
