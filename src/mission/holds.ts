/**
 * Exchanges a Mission authorized that outlive their decision: requests waiting for an upstream
 * connection or an answer, response bodies still flowing (SSE, chunked, long downloads, MCP
 * streams) and WebSocket tunnels. A Mission can stop being active at
 * any moment, and from then on nothing it authorized may keep flowing: every such exchange is cut
 * (both connections closed, the client sees a broken stream) when the gateway learns the change:
 *
 *  - a lifecycle event (pushed, polled, or relayed by another replica) with a non-active state;
 *  - a Mission Status answer with a non-active state: a later request asked, or MissionStates'
 *    own re-read of every held Mission (every max_stale_s / 2; a state that cannot be established
 *    cuts too, fail closed);
 *  - the Mission's `expires_at` passing (checked every SWEEP_MS while anything is held);
 *  - its authority narrowing while it stays active (`authority_changed`, or any Status answer with
 *    other entries): each exchange held under it is decided again against the authority just read,
 *    and cut when its request would now be denied (`review`).
 *
 * An exchange is held from the moment it is forwarded (a WebSocket tunnel from the upstream's
 * 101), under every Mission its request was admitted under (an MCP batch may name several) and,
 * for an AAuth reference, under the Mission's governance id too. One whose Mission was cut after
 * its request was admitted (the change landed between the decision and the hold) is refused: the
 * request is never sent, or for a tunnel nothing of the upstream's answer reaches the client. A
 * Mission seen active again (reinstate) lets exchanges start again.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from '../observability/logger.js';
import type { MissionReference, MissionView, RequestContext } from '../pipeline/context.js';
import { recordKey, refKey } from './key.js';

/** Why a held exchange's upstream request is aborted when it is cut. */
export const CUT_MESSAGE = 'the Mission that authorized this exchange is no longer active';

/** Why an exchange is cut: the cause, and the state its Mission is in now (`unavailable` when unknown). */
export interface CutWhy {
  readonly cause: CutCause;
  readonly state: string;
}

/** Something that can be ended now: an exchange in flight. */
export interface Holder {
  /** `why` is absent when the exchange is refused as it starts (its Mission already cut). */
  cut(why?: CutWhy): void;
  /**
   * True for what is held under a Mission without being an exchange (an MCP session its requests
   * ran in, src/mcp/sessions.ts): cut like one, but not counted as an open or cut exchange.
   */
  readonly session?: boolean;
}

/**
 * Whether the request that opened an exchange would still be permitted under `view` (its Mission,
 * with the authority just read): its action and parameters decided again. False cuts it.
 */
export type Review = (view: MissionView) => boolean;

/** What a held exchange needs to know of the decision that admitted it. */
export interface Ticket {
  readonly key: string;
  /** A reference to read the Mission's state by again (MissionStates re-checks held Missions). */
  readonly ref: MissionReference;
  /** The audience its state was read for. */
  readonly audience: string;
  readonly issuer: string;
  readonly id: string | null;
  /** The Mission's `expires_at` (epoch ms), or null. */
  readonly expiresAt: number | null;
  /** performance.now() when the request was admitted (its context's start). */
  readonly admittedAt: number;
  /** The request's other Missions (an MCP batch in MAS mode): held under each of them too. */
  readonly more: readonly Ticket[] | null;
  /** How the request is decided again when this Mission's authority changes; null: it is not. */
  readonly review: Review | null;
}

export type CutCause = 'state_change' | 'expired' | 'state_unavailable' | 'authority_changed';

interface Group {
  /** The ticket that opened the group: the Mission's issuer, id, and a reference to read it by. */
  readonly first: Ticket;
  /** Each exchange held, and the ticket it was held with (to leave its other groups when cut). */
  readonly members: Map<Holder, Ticket>;
  /** Epoch ms of the earliest `expires_at` among the members; Infinity when none has one. */
  expiresAt: number;
}

/** How often expiries are checked while something with an `expires_at` is held. */
export const SWEEP_MS = 250;
/**
 * Cut times remembered, for responses that start after their Mission was cut. Past it the oldest
 * is forgotten, and every response of a request admitted before that cut is refused (fail closed:
 * it might have been that Mission's).
 */
const MAX_REMEMBERED_CUTS = 10_000;

export interface MissionHoldsOptions {
  readonly logger: Logger;
  /** `mission_gateway_exchanges_cut_total` by cause. */
  readonly counted: (cause: CutCause, n: number) => void;
  /** Epoch milliseconds; injectable for tests. */
  readonly now?: () => number;
}

export class MissionHolds {
  private readonly groups = new Map<string, Group>();
  /**
   * Missions cut and not seen active since: key -> performance.now() of the cut (insertion order =
   * age).
   */
  private readonly lastCut = new Map<string, number>();
  /** The latest cut time forgotten to bound lastCut (performance.now()), or -Infinity. */
  private forgottenBefore = -Infinity;
  private readonly logger: Logger;
  private readonly counted: (cause: CutCause, n: number) => void;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | null = null;

  constructor(opts: MissionHoldsOptions) {
    this.logger = opts.logger;
    this.counted = opts.counted;
    this.now = opts.now ?? Date.now;
  }

  /**
   * The ticket of a request a Mission admitted, or null (no Mission: nothing to hold it to).
   * `review` decides the request again when the Mission's authority changes; the request's other
   * Missions (an MCP batch) bring their own review of the calls made under each.
   */
  ticket(ctx: RequestContext, review: Review | null = null): Ticket | null {
    const view = ctx.mission;
    const ref = ctx.missionRef;
    if (view === null || ref === null) return null;
    const others = ctx.otherMissions;
    let more = others === null ? null : others.map((o) => ticketOf(refKey(o.ref), o.ref, o.view, ctx.started, ctx.audience, null, o.review ?? null));
    const byId = governanceTicket(ref, view, ctx, review);
    if (byId !== null) more = more === null ? [byId] : [...more, byId];
    return ticketOf(refKey(ref), ref, view, ctx.started, ctx.audience, more, review);
  }

  /**
   * One ticket per Mission the request was admitted under (its own and, in an MCP batch, the
   * others), each with `reviewOf(key)`: for what is held under each Mission separately (an MCP
   * session, which gathers calls of several requests under each, src/mcp/sessions.ts).
   */
  ticketsOf(ctx: RequestContext, reviewOf: (key: string) => Review): Ticket[] {
    const out: Ticket[] = [];
    const add = (ref: MissionReference, view: MissionView): void => {
      const key = refKey(ref);
      const review = reviewOf(key);
      const byId = governanceTicket(ref, view, ctx, review);
      out.push(ticketOf(key, ref, view, ctx.started, ctx.audience, byId === null ? null : [byId], review));
    };
    if (ctx.mission !== null && ctx.missionRef !== null) add(ctx.missionRef, ctx.mission);
    for (const o of ctx.otherMissions ?? []) add(o.ref, o.view);
    return out;
  }

  /**
   * Holds `holder` until released or cut. Returns false, holding nothing, when a Mission of the
   * ticket was cut after the request was admitted or has expired: the caller must end the exchange
   * itself (counted here, like any cut).
   */
  hold(ticket: Ticket, holder: Holder): boolean {
    let refused = this.refusal(ticket);
    if (refused === null && ticket.more !== null) for (const t of ticket.more) if ((refused ??= this.refusal(t)) !== null) break;
    if (refused !== null) {
      this.counted(refused, 1);
      return false;
    }
    this.join(ticket, holder, ticket);
    if (ticket.more !== null) for (const t of ticket.more) this.join(t, holder, ticket);
    return true;
  }

  release(ticket: Ticket, holder: Holder): void {
    this.leave(ticket, holder);
    if (ticket.more !== null) for (const t of ticket.more) this.leave(t, holder);
  }

  /** Why a response under this Mission may not start now, or null. */
  private refusal(t: Ticket): CutCause | null {
    const cutAt = this.lastCut.get(t.key);
    if ((cutAt !== undefined && cutAt >= t.admittedAt) || this.forgottenBefore >= t.admittedAt) return 'state_change';
    if (t.expiresAt !== null && t.expiresAt <= this.now()) return 'expired';
    return null;
  }

  private join(t: Ticket, holder: Holder, root: Ticket): void {
    let g = this.groups.get(t.key);
    if (g === undefined) {
      g = { first: t, members: new Map(), expiresAt: Infinity };
      this.groups.set(t.key, g);
    }
    g.members.set(holder, root);
    if (t.expiresAt !== null && t.expiresAt < g.expiresAt) {
      g.expiresAt = t.expiresAt;
      this.timer ??= setInterval(this.sweep, SWEEP_MS).unref();
    }
  }

  private leave(t: Ticket, holder: Holder): void {
    const g = this.groups.get(t.key);
    if (g !== undefined && g.members.delete(holder) && g.members.size === 0) this.groups.delete(t.key);
  }

  /**
   * The Mission `key` is no longer active (`state`): cuts every exchange it holds, and any that
   * starts later for a request admitted before now. Returns how many were cut.
   */
  cut(key: string, state: string, cause: CutCause = 'state_change'): number {
    this.lastCut.delete(key);
    this.lastCut.set(key, performance.now());
    if (this.lastCut.size > MAX_REMEMBERED_CUTS) {
      const [oldest, at] = this.lastCut.entries().next().value!;
      this.lastCut.delete(oldest);
      this.forgottenBefore = at;
    }
    const g = this.groups.get(key);
    if (g === undefined) return 0;
    this.groups.delete(key);
    const why: CutWhy = { cause, state };
    for (const [h, ticket] of g.members) {
      // Out of its other groups first (another of its Missions, its other key), so it is cut once.
      this.release(ticket, h);
      try {
        h.cut(why);
      } catch (err) {
        this.logger.error({ err }, 'cutting an exchange failed');
      }
    }
    const n = exchanges(g.members.keys());
    this.counted(cause, n);
    this.logger.info({ issuer: g.first.issuer, mission: g.first.id, state, exchanges: n }, 'Mission no longer active: its open exchanges were cut');
    return n;
  }

  /**
   * The Mission `key` was read again for `audience` and is active (`view`): each exchange held under
   * it for that audience whose request its authority no longer permits is cut (cause
   * `authority_changed`). Returns how many were cut.
   */
  review(key: string, audience: string, view: MissionView): number {
    const g = this.groups.get(key);
    if (g === undefined) return 0;
    let denied: [Holder, Ticket][] | null = null;
    for (const [h, root] of g.members) {
      const t = under(root, key);
      if (t === undefined || t.review === null || t.audience !== audience) continue;
      let permitted = false;
      try {
        permitted = t.review(view);
      } catch (err) {
        this.logger.error({ err }, 'reviewing an exchange failed; cutting it');
      }
      if (!permitted) (denied ??= []).push([h, root]);
    }
    if (denied === null) return 0;
    const why: CutWhy = { cause: 'authority_changed', state: view.state };
    for (const [h, root] of denied) {
      this.release(root, h);
      try {
        h.cut(why);
      } catch (err) {
        this.logger.error({ err }, 'cutting an exchange failed');
      }
    }
    const n = exchanges(denied.map(([h]) => h));
    this.counted('authority_changed', n);
    this.logger.info({ issuer: g.first.issuer, mission: g.first.id, exchanges: n }, "Mission's authority changed: open exchanges it no longer permits were cut");
    return n;
  }

  /**
   * The Mission `key` is active again (resumed, or a Status answer says so): a response that starts
   * from now on under it is held as usual, whenever its request was admitted.
   */
  reinstate(key: string): void {
    this.lastCut.delete(key);
  }

  /**
   * The Missions something is held under now, with a reference to read each one's state by: one
   * entry per audience held (its authority, and so its review, is read per audience).
   */
  held(): { readonly key: string; readonly ref: MissionReference; readonly audience: string }[] {
    const out: { key: string; ref: MissionReference; audience: string }[] = [];
    for (const [key, g] of this.groups) {
      out.push({ key, ref: g.first.ref, audience: g.first.audience });
      const seen = new Set([g.first.audience]);
      for (const root of g.members.values()) {
        const t = under(root, key);
        if (t === undefined || seen.has(t.audience)) continue;
        seen.add(t.audience);
        out.push({ key, ref: t.ref, audience: t.audience });
      }
    }
    return out;
  }

  /** Exchanges held now (the `mission_gateway_open_exchanges` gauge; one held under several Missions counts once). */
  get size(): number {
    const all = new Set<Holder>();
    for (const g of this.groups.values()) for (const h of g.members.keys()) if (h.session !== true) all.add(h);
    return all.size;
  }

  private readonly sweep = (): void => {
    const now = this.now();
    let pending = false;
    for (const [key, g] of this.groups) {
      if (g.expiresAt <= now) this.cut(key, 'expired', 'expired');
      else if (g.expiresAt !== Infinity) pending = true;
    }
    if (!pending && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  };

  /** Stops the expiry sweep (the gateway is closing; its connections are closed separately). */
  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}

/** How many of these holders are exchanges (not sessions). */
function exchanges(holders: Iterable<Holder>): number {
  let n = 0;
  for (const h of holders) if (h.session !== true) n++;
  return n;
}

/** The ticket `root` (a request's) was held with under the Mission `key`. */
function under(root: Ticket, key: string): Ticket | undefined {
  return root.key === key ? root : root.more?.find((m) => m.key === key);
}

/**
 * An AAuth reference is held under the Mission's governance id too (what events name, and what an
 * id-form request's Status answer cuts), once Status has told it; null for any other reference. Its
 * key is built here, not memoized through refKey: the id-form reference is made for this request only.
 */
function governanceTicket(ref: MissionReference, view: MissionView, ctx: RequestContext, review: Review | null): Ticket | null {
  if (ref.s256 === null || view.id === null) return null;
  const idRef: MissionReference = { form: 'claim', issuer: view.issuer, id: view.id, s256: null, authorityHash: null };
  return ticketOf(recordKey(view.issuer, view.id, false), idRef, view, ctx.started, ctx.audience, null, review);
}

function ticketOf(key: string, ref: MissionReference, view: MissionView, admittedAt: number, audience: string, more: readonly Ticket[] | null, review: Review | null): Ticket {
  return { key, ref, audience, issuer: view.issuer, id: view.id, expiresAt: view.expiresAt === null ? null : view.expiresAt * 1000, admittedAt, more, review };
}
