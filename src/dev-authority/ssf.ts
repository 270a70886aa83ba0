/**
 * SSF transmitter for Mission lifecycle events (draft-mcguinness-oauth-mission-signals): one SET
 * per transition and receiver audience, delivered by RFC 8935 push (awaited, so an admin call
 * returns after delivery) and queued per audience for RFC 8936 poll.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { nowSeconds, type AuthorityContext } from './context.js';
import { HttpError, NO_STORE, readJson, sendJson } from './http.js';
import type { Transition } from './missions.js';

export const LIFECYCLE_EVENT = 'https://schemas.karlmcguinness.com/mission/lifecycle-change';
export const SET_CONTENT_TYPE = 'application/secevent+jwt';
export const SSF_VERIFICATION_EVENT = 'https://schemas.openid.net/secevent/ssf/event-type/verification';
const MAX_QUEUE = 10_000;
const MAX_EVENTS_PER_POLL = 1_000;

export interface Receiver {
  readonly endpoint: string;
  /** Expected to be the receiver's resource identifier: SETs carry it as `aud`. */
  readonly audience: string;
  /** Sent verbatim as the push request's Authorization header. */
  readonly authorizationHeader?: string | undefined;
}

export interface Delivery {
  readonly endpoint: string;
  readonly audience: string;
  readonly jti: string;
  /** HTTP status of the push; null when the receiver could not be reached. */
  readonly status: number | null;
  /** True when the receiver answered 202 (RFC 8935 section 2.2). */
  readonly ok: boolean;
  readonly err?: string;
  readonly description?: string;
}

interface PollQueue {
  readonly pending: Map<string, string>;
  readonly waiters: Set<() => void>;
}

const pollError = (status: number, err: string, description: string): HttpError => new HttpError(status, { err, description }, NO_STORE);

export class Transmitter {
  private readonly receivers: (Receiver & { readonly streamId: string })[] = [];
  private readonly queues = new Map<string, PollQueue>();
  private readonly heartbeat: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly ctx: AuthorityContext) {
    const every = ctx.settings.heartbeatSeconds;
    if (every > 0) {
      this.heartbeat = setInterval(() => void this.verify(), every * 1000);
      this.heartbeat.unref();
    }
  }

  addReceiver(r: Receiver): void {
    if (!URL.canParse(r.endpoint)) throw new Error('receiver endpoint must be an absolute URL');
    if (r.audience.length === 0) throw new Error('receiver audience is required');
    this.receivers.push({ ...r, streamId: `stream_${randomBytes(9).toString('base64url')}` });
  }

  /**
   * Pushes an SSF verification SET to every receiver: the stream liveness signal a receiver needs
   * within `mission_max_stale_seconds` to keep trusting event-maintained state.
   */
  async verify(): Promise<Delivery[]> {
    return Promise.all(this.receivers.map(async (r) => {
      const jti = `set_${randomBytes(16).toString('base64url')}`;
      const claims = { iss: this.ctx.issuer, aud: r.audience, iat: nowSeconds(this.ctx), jti, sub_id: { format: 'opaque', id: r.streamId }, events: { [SSF_VERIFICATION_EVENT]: {} } };
      return this.push(r, { jti, jwt: await this.ctx.keys.sign(claims, 'secevent+jwt') });
    }));
  }

  /** Starts queueing SETs for `audience` (events before this call are not queued). */
  addPollAudience(audience: string): string {
    this.queue(audience);
    return `${this.ctx.endpoints.ssfPoll}?aud=${encodeURIComponent(audience)}`;
  }

  /** Signs the transition's SETs, queues them for polling, pushes them, and reports each push. */
  async publish(t: Transition): Promise<Delivery[]> {
    const audiences = new Set([...this.receivers.map((r) => r.audience), ...this.queues.keys()]);
    const sets = new Map<string, { jti: string; jwt: string }>();
    for (const aud of audiences) {
      const jti = `set_${randomBytes(16).toString('base64url')}`;
      sets.set(aud, { jti, jwt: await this.ctx.keys.sign(this.claims(t, aud, jti), 'secevent+jwt') });
    }
    for (const [aud, q] of this.queues) this.enqueue(q, sets.get(aud)!);
    return Promise.all(this.receivers.map((r) => this.push(r, sets.get(r.audience)!)));
  }

  private claims(t: Transition, aud: string, jti: string): Record<string, unknown> {
    const m = t.mission;
    return {
      iss: this.ctx.issuer,
      aud,
      iat: nowSeconds(this.ctx),
      jti,
      sub_id: { format: 'opaque', id: m.id },
      events: {
        [LIFECYCLE_EVENT]: {
          mission: { id: m.id, issuer: m.issuer },
          state: m.state,
          ...(t.prior_state === null ? {} : { prior_state: t.prior_state }),
          version: m.version,
          committed_at: m.committed_at,
          expires_at: m.expires_at,
          authority_hash: m.authority_hash,
          ...(m.suspend_until === undefined ? {} : { suspend_until: m.suspend_until, on_expiry: m.on_expiry }),
          ...(m.successor === undefined ? {} : { successor: m.successor }),
          ...(t.authority_changed ? { authority_changed: true } : {}),
        },
      },
    };
  }

  private async push(r: Receiver, set: { jti: string; jwt: string }): Promise<Delivery> {
    const base = { endpoint: r.endpoint, audience: r.audience, jti: set.jti };
    try {
      const res = await fetch(r.endpoint, {
        method: 'POST',
        headers: {
          'content-type': SET_CONTENT_TYPE,
          accept: 'application/json',
          ...(r.authorizationHeader === undefined ? {} : { authorization: r.authorizationHeader }),
        },
        body: set.jwt,
        signal: AbortSignal.timeout(this.ctx.settings.pushTimeoutMs),
      });
      const text = await res.text();
      if (res.status === 202) return { ...base, status: 202, ok: true };
      let detail: { err?: unknown; description?: unknown } = {};
      try {
        detail = JSON.parse(text) as typeof detail;
      } catch {
        // Not RFC 8935 error JSON; the status alone is reported.
      }
      return {
        ...base,
        status: res.status,
        ok: false,
        ...(typeof detail.err === 'string' ? { err: detail.err } : {}),
        ...(typeof detail.description === 'string' ? { description: detail.description } : {}),
      };
    } catch {
      return { ...base, status: null, ok: false, err: 'unreachable' };
    }
  }

  private queue(audience: string): PollQueue {
    let q = this.queues.get(audience);
    if (q === undefined) {
      q = { pending: new Map(), waiters: new Set() };
      this.queues.set(audience, q);
    }
    return q;
  }

  private enqueue(q: PollQueue, set: { jti: string; jwt: string }): void {
    q.pending.set(set.jti, set.jwt);
    // Bounded: a receiver that never acknowledges loses the oldest SETs, not our memory.
    if (q.pending.size > MAX_QUEUE) q.pending.delete(q.pending.keys().next().value!);
    for (const wake of q.waiters) wake();
  }

  /** RFC 8936 poll: `{ack, setErrs, maxEvents, returnImmediately}` -> `{sets, moreAvailable}`. */
  handler(): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
    return async (req, res) => {
      const token = this.ctx.settings.pollToken;
      if (token !== undefined && req.headers.authorization !== `Bearer ${token}`) {
        throw new HttpError(401, { err: 'authentication_failed', description: 'poll authentication is required' }, { 'www-authenticate': 'Bearer' });
      }
      const url = new URL(req.url ?? '/', this.ctx.issuer);
      const body = await readJson(req);
      const aud = url.searchParams.get('aud') ?? (typeof body['audience'] === 'string' ? body['audience'] : undefined) ?? this.onlyAudience();
      if (aud === undefined) throw pollError(400, 'invalid_request', 'name the stream audience with ?aud=');
      const q = this.queue(aud);

      const ack = body['ack'] ?? [];
      if (!Array.isArray(ack)) throw pollError(400, 'invalid_request', 'ack must be an array');
      for (const jti of ack) if (typeof jti === 'string') q.pending.delete(jti);
      // A receiver's setErrs report SETs it rejected: they are not redelivered either.
      const errs = body['setErrs'];
      if (typeof errs === 'object' && errs !== null) for (const jti of Object.keys(errs)) q.pending.delete(jti);

      const max = typeof body['maxEvents'] === 'number' ? Math.max(0, Math.min(MAX_EVENTS_PER_POLL, Math.floor(body['maxEvents']))) : MAX_EVENTS_PER_POLL;
      const immediate = body['returnImmediately'] === true || max === 0;
      if (q.pending.size === 0 && !immediate && !this.closed) await this.wait(q);

      const sets: Record<string, string> = {};
      for (const [jti, jwt] of q.pending) {
        if (Object.keys(sets).length >= max) break;
        sets[jti] = jwt;
      }
      sendJson(res, 200, { sets, moreAvailable: q.pending.size > Object.keys(sets).length }, NO_STORE);
    };
  }

  private onlyAudience(): string | undefined {
    return this.queues.size === 1 ? this.queues.keys().next().value : undefined;
  }

  private wait(q: PollQueue): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        q.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, this.ctx.settings.longPollMs);
      q.waiters.add(done);
    });
  }

  /** Releases long polls so the server can close. */
  close(): void {
    this.closed = true;
    clearInterval(this.heartbeat);
    for (const q of this.queues.values()) for (const wake of [...q.waiters]) wake();
  }
}
