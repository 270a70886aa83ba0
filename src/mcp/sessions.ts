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
 *  - that Mission's authority narrows so that a call in flight in the session, or a task-augmented
 *    call made in it, would now be denied.
 * Ending it: the upstream is sent `DELETE` with the session id (MCP Streamable HTTP's session end:
 * a stock SDK server closes the transport, which fails the requests it waits on), and every later
 * request naming the session is denied, 404 `session_ended` (MCP: a client that gets 404 for its
 * session starts a new one), whatever its token.
 *
 * A session is also bound to the principal whose Mission-bound request used it first (MCP's
 * security best practices: bind a session to its user): another principal naming it gets 404
 * `session_mismatch`, as if it did not exist.
 *
 * Both maps are bounded. Past MAX_SESSIONS the session used least recently is forgotten (no longer
 * held, so no longer ended with its Mission); past MAX_ENDED the oldest ended id is forgotten (the
 * upstream was told to end it). Per replica: another replica learns of a session from the
 * requests it carries, and the upstream's own end of the session covers the rest.
 */
import type { MissionHolds, Review, Ticket } from '../mission/holds.js';
import type { Logger } from '../observability/logger.js';
import { principalOf, type RequestContext } from '../pipeline/context.js';

export const MAX_SESSIONS = 10_000;
export const MAX_ENDED = 10_000;
/** Task-augmented calls remembered per session and Missions for a narrowing's review. */
export const MAX_CALLS = 64;

/** A session held under one request's Missions, until the client ends the session. */
class SessionHold {
  readonly session = true;
  /** How the task-augmented calls made under it are decided again; past MAX_CALLS, any narrowing ends the session. */
  readonly reviews: Review[] = [];
  overflow = false;
  constructor(
    private readonly sessions: McpSessions,
    readonly id: string,
    readonly ticket: Ticket,
  ) {}
  cut(): void {
    this.sessions.end(this.id);
  }
  readonly review: Review = (view) => !this.overflow && this.reviews.every((r) => r(view));
}

export class McpSessions {
  /**
   * Session id -> the principal whose requests used it first (a token's issuer, subject and client)
   * and its holds, by the request's ticket keys (insertion order = least recently used first).
   */
  private readonly live = new Map<string, { readonly principal: string; readonly holds: Map<string, SessionHold> }>();
  private readonly ended = new Set<string>();
  /** Ends a session at the upstream; set by the MCP handler of the running config. */
  terminate: (id: string) => void = () => {};

  constructor(
    private readonly holds: MissionHolds | null,
    private readonly logger: Logger,
  ) {}

  /** True when the gateway ended this session: requests naming it are denied. */
  isEnded(id: string): boolean {
    return this.ended.has(id);
  }

  /** The principal the session is bound to (its first Mission-bound request's), if it is held here. */
  ownerOf(id: string): string | undefined {
    return this.live.get(id)?.principal;
  }

  /**
   * A request on session `id`, admitted under `ctx`'s Missions, is being forwarded:
   *  - while it is in flight, the session is held with the request's own review (`review`: its
   *    calls decided again), so that what cuts the exchange ends the session too (a server waiting
   *    in it for the client's confirmation of a call that was cut);
   *  - until the session ends, it is held under those Missions, with `taskReview` (the request's
   *    task-augmented calls decided again, null when it made none) added to what a narrowing checks.
   */
  use(id: string, ctx: RequestContext, review: Review | null, taskReview: Review | null): void {
    const holds = this.holds;
    if (holds === null || ctx.mission === null || ctx.missionRef === null) return;
    const during = holds.ticket(ctx, review);
    if (during === null) return;
    const exchange = { session: true, cut: () => this.end(id) };
    // One of its Missions was cut after the request was admitted: its answer will be refused too.
    if (!holds.hold(during, exchange)) return this.end(id);
    ctx.res.once('close', () => holds.release(during, exchange));

    let session = this.live.get(id);
    if (session !== undefined) this.live.delete(id);
    session ??= { principal: principalOf(ctx), holds: new Map() };
    this.live.set(id, session);
    const mine = session.holds;
    const key = during.more === null ? during.key : [during.key, ...during.more.map((t) => t.key)].join(' ');
    let hold = mine.get(key);
    if (hold === undefined) {
      let created: SessionHold | null = null;
      const ticket = holds.ticket(ctx, (view) => created!.review(view))!;
      created = new SessionHold(this, id, ticket);
      holds.hold(ticket, created);
      hold = created;
      mine.set(key, hold);
    }
    if (taskReview !== null) {
      if (hold.reviews.length < MAX_CALLS) hold.reviews.push(taskReview);
      else hold.overflow = true;
    }
    if (this.live.size > MAX_SESSIONS) this.forget(this.live.keys().next().value!);
  }

  /** The client ended the session (a DELETE passed to the upstream). */
  release(id: string): void {
    this.forget(id);
  }

  /** Ends the session: no longer held, denied from now on, and the upstream told. */
  end(id: string): void {
    if (this.ended.has(id)) return;
    this.forget(id);
    this.ended.add(id);
    if (this.ended.size > MAX_ENDED) this.ended.delete(this.ended.values().next().value!);
    this.logger.info('MCP session ended: a Mission it ran under stopped being active or no longer permits a call made in it');
    this.terminate(id);
  }

  private forget(id: string): void {
    const session = this.live.get(id);
    if (session === undefined) return;
    this.live.delete(id);
    for (const hold of session.holds.values()) this.holds?.release(hold.ticket, hold);
  }
}
