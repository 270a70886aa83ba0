/**
 * MCP sessions (`Mcp-Session-Id`) and the Missions their requests ran under. A session outlives
 * any one exchange: a server may wait in it for the client's answer to `elicitation/create` (a
 * payment's confirmation) sent on a call's stream, and a task-augmented `tools/call` (MCP
 * 2025-11-25) runs on after its `CreateTaskResult`, its result fetched later by `tasks/result` in
 * the same session. Cutting the call's stream stops neither: the client's answer, or its
 * `tasks/result`, would come later, under any token, and be passed on (r16d F1, F2).
 *
 * So the gateway ends a session (holds.ts `session` holders, not counted as exchanges) when:
 *  - a Mission a request in it ran under stops being active (revoked, suspended, expired, its
 *    state not establishable), or
 *  - that Mission's authority narrows so that a call made in the session under it would now be
 *    denied (whether its stream is still open or not: the server may wait on it), or
 *  - it goes unused for IDLE_MS, or its principal opens more than MAX_PER_PRINCIPAL sessions, or
 *    more than MAX_SESSIONS are held (the least recently used first): a session is never just
 *    forgotten, which would let it escape the first two (r16e).
 * Ending it: the upstream is sent `DELETE` with the session id (MCP Streamable HTTP's session end:
 * a stock SDK server closes the transport, which fails the requests it waits on), and every later
 * request naming the session is denied, 404 `session_ended` (MCP: a client that gets 404 for its
 * session starts a new one), whatever its token. A client's own DELETE ends it at the gateway too,
 * whatever the upstream answers (a server may refuse it and keep the session).
 *
 * A session is also bound to its principal (MCP's security best practices: bind a session to its
 * user): the one whose authenticated request created it (the upstream's answer carrying the new
 * `Mcp-Session-Id`), Mission-bound or not (MAS mode's bare `initialize`, r19e 6), or, for a
 * session created through another replica, the first whose Mission-bound request used it here.
 * Another principal naming it gets 404 `session_mismatch`, as if it did not exist. Binding at
 * creation closes the moment between its answer and the creator's next request, and a principal
 * who named an id before the upstream issued it (a guessable id) loses it to the creator (r19d 3).
 *
 * Per replica: another replica learns of a session from the requests it carries, and the
 * upstream's own end of the session covers the rest.
 */
import type { Upstream } from '../http/forward.js';
import type { MissionHolds, Review, Ticket } from '../mission/holds.js';
import type { Logger } from '../observability/logger.js';
import { principalOf, type RequestContext } from '../pipeline/context.js';

export const MAX_SESSIONS = 10_000;
export const MAX_PER_PRINCIPAL = 100;
export const IDLE_MS = 30 * 60_000;
/** Ended ids remembered (past it the oldest is forgotten; the upstream was told to end it). */
export const MAX_ENDED = 100_000;
/**
 * What a session keeps to decide its calls again on a narrowing: those of at most MAX_CALLS
 * requests, from request bodies of MAX_CALL_BYTES in all. Past either, any narrowing of its Missions
 * ends the session (fail closed) rather than the gateway keeping more.
 */
export const MAX_CALLS = 16;
export const MAX_CALL_BYTES = 64 * 1024;
/** The longest session id kept (MCP: visible ASCII); a longer one is refused. */
export const MAX_SESSION_ID_LENGTH = 256;

/** A session held under one of its Missions, until the session ends. */
class SessionHold {
  readonly session = true;
  /** How the calls made in the session under its Mission are decided again. */
  readonly reviews: Review[] = [];
  constructor(
    private readonly owner: Session,
    readonly ticket: Ticket,
  ) {}
  cut(): void {
    this.owner.end();
  }
  readonly review: Review = (view) => !this.owner.overflow && this.reviews.every((r) => r(view));
}

interface Session {
  readonly principal: string;
  readonly holds: Map<string, SessionHold>;
  lastUsed: number;
  callBytes: number;
  calls: number;
  /** Past the call bounds: any narrowing ends it. */
  overflow: boolean;
  end(): void;
}

export class McpSessions {
  /** Session id -> its state (insertion order = least recently used first). */
  private readonly live = new Map<string, Session>();
  /** Principal -> its sessions (insertion order = oldest first). */
  private readonly byPrincipal = new Map<string, Set<string>>();
  private readonly ended = new Set<string>();
  private readonly timer: NodeJS.Timeout;
  /** Ends a session at the upstream; set with each runtime's upstream (upstreamEnder). */
  terminate: (id: string) => void = () => {};

  constructor(
    private readonly holds: MissionHolds | null,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.timer = setInterval(() => this.sweep(), Math.min(IDLE_MS / 2, 60_000)).unref();
  }

  /** True when the session was ended (by the gateway or its client): requests naming it are denied. */
  isEnded(id: string): boolean {
    return this.ended.has(id);
  }

  /** The principal the session is bound to (its creator, or its first Mission-bound user here), if it is held here. */
  ownerOf(id: string): string | undefined {
    return this.live.get(id)?.principal;
  }

  /**
   * A request on session `id`, admitted under `ctx`'s Missions, is being forwarded:
   *  - while it is in flight, the session is held with the request's own review (`review`: its
   *    calls decided again), so that what cuts the exchange ends the session too;
   *  - until the session ends, it is held under each of those Missions, with `calls(key)` (the
   *    request's tools/call under that Mission decided again, null when none) added to what a
   *    narrowing of that Mission checks: a server may still wait in the session on a call whose
   *    stream is gone (its client dropped it after an `elicitation/create`, r16f F1), and a task
   *    call runs on after its answer.
   */
  use(id: string, ctx: RequestContext, review: Review | null, calls: (key: string) => Review | null): void {
    const holds = this.holds;
    if (holds === null || ctx.mission === null || ctx.missionRef === null) {
      // Not held under a Mission, but used: a session bound at creation is not idle (r20a 6).
      if (this.live.has(id)) this.touch(id, principalOf(ctx));
      return;
    }
    const during = holds.ticket(ctx, review);
    if (during === null) return;
    const exchange = { session: true, cut: () => this.end(id) };
    // One of its Missions was cut after the request was admitted: its answer will be refused too.
    if (!holds.hold(during, exchange)) return this.end(id);
    ctx.res.once('close', () => holds.release(during, exchange));

    const session = this.touch(id, principalOf(ctx));
    const tickets = holds.ticketsOf(ctx, (key) => (view) => session.holds.get(key)?.review(view) ?? true);
    let added = false;
    for (const ticket of tickets) {
      let hold = session.holds.get(ticket.key);
      if (hold === undefined) {
        hold = new SessionHold(session, ticket);
        session.holds.set(ticket.key, hold);
        holds.hold(ticket, hold);
      }
      const r = calls(ticket.key);
      if (r === null) continue;
      if (!added) {
        added = true;
        session.calls++;
        session.callBytes += ctx.body?.length ?? 0;
        if (session.calls > MAX_CALLS || session.callBytes > MAX_CALL_BYTES) session.overflow = true;
      }
      if (!session.overflow) hold.reviews.push(r);
    }
  }

  /**
   * The upstream created session `id` answering `ctx`'s authenticated request: bound to its
   * principal (held under Missions by its Mission-bound requests, `use`). Whoever named the id
   * before (the upstream did not know it then) loses it: its holds are released and it is no
   * longer ended here (it names a new session now).
   */
  created(id: string, ctx: RequestContext): void {
    if (ctx.token === null) return;
    const principal = principalOf(ctx);
    this.ended.delete(id);
    const before = this.live.get(id);
    if (before !== undefined && before.principal !== principal) this.forget(id, before);
    this.touch(id, principal);
  }

  /**
   * The client ended its session (a DELETE passed to the upstream): ended here whatever the upstream
   * answers. Only a session held here is remembered (ids never seen would only fill the set, r16f F3).
   */
  closedByClient(id: string): void {
    if (this.live.has(id)) this.markEnded(id);
  }

  /** Ends the session: no longer held, denied from now on, and the upstream told. */
  end(id: string): void {
    if (this.ended.has(id)) return;
    this.markEnded(id);
    this.logger.info('MCP session ended: a Mission it ran under is no longer active or no longer permits a call made in it, or it was idle or past its bounds');
    this.terminate(id);
  }

  close(): void {
    clearInterval(this.timer);
  }

  /** The session, bound to `principal` when new, as the most recently used; the bounds applied. */
  private touch(id: string, principal: string): Session {
    let session = this.live.get(id);
    if (session !== undefined) {
      this.live.delete(id);
    } else {
      session = { principal, holds: new Map(), lastUsed: 0, callBytes: 0, calls: 0, overflow: false, end: () => this.end(id) };
      let mine = this.byPrincipal.get(principal);
      if (mine === undefined) this.byPrincipal.set(principal, (mine = new Set()));
      mine.add(id);
      if (mine.size > MAX_PER_PRINCIPAL) this.end(mine.values().next().value!);
    }
    session.lastUsed = this.now();
    this.live.set(id, session);
    if (this.live.size > MAX_SESSIONS) this.end(this.live.keys().next().value!);
    return session;
  }

  private markEnded(id: string): void {
    const session = this.live.get(id);
    if (session !== undefined) this.forget(id, session);
    this.ended.add(id);
    if (this.ended.size > MAX_ENDED) this.ended.delete(this.ended.values().next().value!);
  }

  /** No longer held here: its principal's count and its holds released. */
  private forget(id: string, session: Session): void {
    this.live.delete(id);
    const mine = this.byPrincipal.get(session.principal);
    mine?.delete(id);
    if (mine?.size === 0) this.byPrincipal.delete(session.principal);
    for (const hold of session.holds.values()) this.holds?.release(hold.ticket, hold);
  }

  /** Ends the sessions unused for IDLE_MS (the least recently used come first); run by a timer. */
  sweep(): void {
    const before = this.now() - IDLE_MS;
    for (const [id, session] of this.live) {
      if (session.lastUsed > before) break;
      this.end(id);
    }
  }
}

/** How sessions are ended at this upstream: `DELETE <mcp.path>` with the id, the answer logged. */
export function upstreamEnder(upstream: Upstream, path: string, host: string, logger: Logger): (id: string) => void {
  return (id) => {
    void upstream.own('DELETE', path, { 'mcp-session-id': id, host, via: '1.1 mission-gateway' }).then((status) => {
      if (status === null) logger.warn('MCP session end not delivered to the upstream (no answer within upstream.timeout_s); the gateway denies the session anyway');
      else logger.info({ status }, 'MCP session end sent to the upstream');
    });
  };
}
