/**
 * The mission_state stage and the Mission state cache (SPEC section 3).
 *
 * Sources of state, in the order they are trusted:
 *  - a lifecycle event (SET, pushed or polled, or relayed by another replica over the bus) with a
 *    higher `version` than anything applied: applied synchronously, before the push is answered;
 *  - a Mission Status response (status.ts), verified;
 *  - nothing: with no fresh state and the authority unreachable the request is denied
 *    `mission_state_unavailable` (503). Never fail open.
 *
 * Cache lifetime rules (each entry keyed by (issuer, Mission id, audience)):
 *  - an entry lives until the earliest of: the response's `fresh_until`; query start +
 *    `mission.max_stale_s`; query start + the issuer's advertised `mission_max_stale_seconds`; the
 *    moment the token whose request caused the query stops being accepted (its `exp` plus
 *    `token.clock_skew_s`); for an active Mission its `expires_at`; for a suspended one its
 *    `suspend_until` (so resumption is re-read, not guessed);
 *  - no clock-skew grace is added to any state (the token's skew is the token's own), and nothing
 *    extends a lifetime: an event changes the state an entry shows but never its deadline; a gap
 *    or `authority_changed` ends it at once;
 *  - a non-active state learned from an event is remembered for `mission.max_stale_s` from its
 *    arrival, whether or not the Mission was cached, and wins over any Status answer with a version
 *    that is not higher (the first event held for a Mission never read, unless terminal, is
 *    confirmed by one Status answer before it is served: MissionRecord.confirm);
 *  - stream liveness: once an issuer has pushed SETs (or when RFC 8936 polling is configured), if
 *    the stream is silent for `mission.max_stale_s`, entries fetched before it fell silent are stale;
 *  - high-consequence routes (`action_class` in HIGH_CONSEQUENCE) never read the cache.
 * The cache is an LRU bounded by `mission.cache_max_entries` Missions; evictions are counted.
 *
 * A hit is served synchronously (no await, no promise). Concurrent misses for one (Mission,
 * audience) share one Status request.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { LRUCache } from 'lru-cache';
import type { KeyResolver } from '../auth/types.js';
import { HIGH_CONSEQUENCE } from '../config/compile.js';
import type { Config } from '../config/schema.js';
import { Denial } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { principalOf, type AccessToken, type MissionReference, type MissionView, type RequestContext, type Stage } from '../pipeline/context.js';
import { handleSetPush, SetPoller, type PushSlots, type SetSink } from './delivery.js';
import { SetRejected, SetVerifier, type EventResult, type VerifiedSet } from './events.js';
import type { MissionHolds } from './holds.js';
import { isHeaderReference, jtiKey, recordKey, refKey, trustedMissionIssuers } from './key.js';
import { MissionStatusClient, StatusUnavailable, type StatusResult } from './status.js';
import type { MissionBus, MissionChange } from './types.js';

/** Non-active states this gateway knows by name; any other non-active state reports as 'unknown'. */
const KNOWN_TERMINAL = new Set(['revoked', 'expired', 'completed', 'superseded', 'cascaded', 'terminated']);

function isTerminal(state: string | null): boolean {
  return state !== null && KNOWN_TERMINAL.has(state);
}
/** Retry-After for a 503 when the authority gave none. */
const DEFAULT_RETRY_AFTER_S = 5;
/** Audiences per Mission are the gateway's own resource identifiers: a handful at most. */
const MAX_AUDIENCES_PER_MISSION = 8;
const JTI_MEMORY = 100_000;
const PUBLISH_TIMEOUT_MS = 2_000;
/** Changes applied here whose sharing with the other replicas waits for the bus: at most this many. */
const MAX_UNSHARED = 10_000;
const UNSHARED_RETRY_MS = 2_000;

/**
 * How often the Missions something is held under are read again: half of `max_stale_s`, within
 * 1-30 s. A read that finds the cached state fresh costs nothing; a stale one asks Mission Status,
 * as a request would.
 */
export function recheckIntervalMs(maxStaleMs: number): number {
  return Math.min(30_000, Math.max(1_000, maxStaleMs / 2));
}

/** One audience's cached view of a Mission. */
interface Entry {
  /** Served on a hit (source 'cached', or 'event' once an event changed it). */
  view: MissionView;
  /** Epoch ms after which the entry is not used. Only ever lowered. */
  deadline: number;
  /** Epoch ms when the Status query that produced it started. */
  readonly fetchedAt: number;
  /**
   * performance.now() past which the entry is stale whatever the wall clock says: `max_stale_s` (or
   * the issuer's shorter `mission_max_stale_seconds`) from the query's start is a duration, which a
   * wall clock stepped back would stretch (r21j 4). The absolute bounds stay in `deadline`.
   */
  readonly staleAt: number;
}

/** Everything known about one Mission. */
interface MissionRecord {
  readonly issuer: string;
  /** Highest version applied from any source, and the state at that version. */
  version: number | null;
  state: string | null;
  /** Epoch ms until which an event-learned non-active state is enforced, whatever is cached. */
  denyUntil: number;
  denyView: MissionView | null;
  /**
   * The remembered denial came from the first event held for a Mission never read here (a
   * suspension, say, at version 3): it is served only after one Status answer, which wins when
   * strictly newer (mission-contracts section 3: bootstrap via Status when the first event held has
   * a version above 1). An old SET replayed to a fresh replica then cannot deny a Mission resumed
   * since. Terminal states need no confirmation: nothing brings a Mission back from them.
   */
  confirm: boolean;
  /**
   * The version of the last change after which the Mission's authority is unknown (a version gap,
   * `authority_changed`): a Status answer with a lower version predates it and is not believed.
   */
  authorityVersion: number | null;
  /** How many such changes were applied: a Status query asked before one is not cached after it. */
  refetches: number;
  readonly entries: Map<string, Entry>;
  /**
   * For an AAuth record (keyed by `s256`): the governance key (issuer, id) events name it by, whose
   * entry in `aliases` leads to it. Null otherwise.
   */
  alias: string | null;
}

export interface MissionStatesDeps {
  readonly config: Config;
  readonly keys: KeyResolver;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly bus: MissionBus;
  /** Exchanges in flight under a Mission, cut when it stops being active (holds.ts). */
  readonly holds?: MissionHolds;
  /** Epoch milliseconds; injectable for tests. */
  readonly now?: () => number;
}

export interface LookupOptions {
  /** The token's `exp` (Unix seconds): a cache entry made for it lives no longer. */
  readonly tokenExp?: number;
  /** Skip the cache and ask the authority (high-consequence actions). */
  readonly fresh?: boolean;
  /** The principal of a client that named the Mission itself (see fetch). */
  readonly asker?: string;
}

/** Status queries in flight at once for Missions one client named itself (a header or `_meta`). */
export const MAX_QUERIES_PER_ASKER = 8;

const SUSPENDED = Object.freeze({ mission_status: 'suspended' });

/**
 * A token endpoint's `mission_error` (with `invalid_grant`) for a Mission in this state, where the
 * drafts name one (mission-contracts section 7): the dev authority's token endpoint and the ID-JAG
 * guard in front of another's both answer it. Other states have none (no `mission_suspended`).
 */
export function tokenEndpointMissionError(state: unknown): string | undefined {
  return state === 'revoked' || state === 'expired' || state === 'superseded' ? `mission_${state}` : undefined;
}

/** Throws the denial for a Mission that is not active (SPEC section 5). `view` is the state established. */
export function assertMissionActive(view: MissionView, nowMs: number): void {
  if (view.state === 'active') {
    // Effectively active only while now < expires_at (the `expired` transition may be lazy).
    if (view.expiresAt === null || nowMs < view.expiresAt * 1000) return;
    throw new Denial('mission_terminated', { extra: { mission_status: 'expired' } });
  }
  if (view.state === 'suspended') {
    // A suspension does not outlive the Mission: past expires_at it has expired (r21c 2), and its
    // Retry-After points no later than that.
    if (view.expiresAt !== null && nowMs >= view.expiresAt * 1000) throw new Denial('mission_terminated', { extra: { mission_status: 'expired' } });
    const until = view.suspendUntil !== null && view.expiresAt !== null ? Math.min(view.suspendUntil, view.expiresAt) : view.suspendUntil;
    const retryAfter = until !== null && until * 1000 > nowMs ? Math.ceil(until - nowMs / 1000) : undefined;
    // Named like the terminal states' (docs/decisions.md), so a client reads one member for all.
    throw new Denial('mission_suspended', retryAfter === undefined ? { extra: SUSPENDED } : { extra: SUSPENDED, retryAfter });
  }
  throw new Denial('mission_terminated', { extra: { mission_status: isTerminal(view.state) ? view.state : 'unknown' } });
}

/**
 * MAS mode: a Mission named by a header (or `_meta`) must belong to the token's subject and client,
 * as the Status response says (`mission.subject.sub`, `mission.client_id`). A `sub` is unique only
 * within its issuer (RFC 7519 section 4.1.2), so it must also be a subject of the token's issuer:
 * the one the response names (`mission.subject.iss`); without one, the gateway's only token issuer,
 * or, with several, the Mission's own issuer (r19d 1: else any issuer's "alice" is every issuer's).
 */
export function assertMissionJoin(view: MissionView, token: AccessToken | null, tokenIssuers: number): void {
  if (token === null || view.subject === null || view.clientId === null || view.subject !== token.subject || view.clientId !== token.clientId) {
    throw new Denial('mission_reference_conflict', { description: 'the named Mission does not belong to this subject and client' });
  }
  const subjectIssuer = view.subjectIssuer ?? (tokenIssuers > 1 ? view.issuer : token.issuer);
  if (subjectIssuer !== token.issuer) {
    throw new Denial('mission_reference_conflict', { description: "the named Mission's subject is not a subject of this token's issuer" });
  }
}

/** Whether a view can be joined before its state is judged: Status named its subject (see admit). */
export function joinable(view: MissionView): boolean {
  return view.state !== 'unknown' && (view.subject !== null || view.clientId !== null);
}

/**
 * A Mission the client named itself (MAS mode): joined to the caller (`join` throws
 * `mission_reference_conflict`) before its state is judged, so the state of a Mission that is not
 * the caller's is not for the caller to learn (r19d 4). A Mission Status does not know stays
 * `unknown` (SPEC section 5), joined or not; so does a state learned from a lifecycle event that
 * named no owner, which its owner must still be told (r19e 1).
 */
export function judgeNamed(view: MissionView, join: () => void, now: number): void {
  const early = joinable(view);
  if (early) join();
  assertMissionActive(view, now);
  if (!early) join();
}

/** A bus message whose SET's keys are not at hand yet is verified again this often, this many times. */
const REPLICATE_RETRY_MS = 1000;
const REPLICATE_RETRIES = 3;

export class MissionStates {
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly bus: MissionBus;
  private readonly holds: MissionHolds | null;
  private readonly now: () => number;
  private readonly status: MissionStatusClient;
  private readonly verifier: SetVerifier;
  private readonly maxStaleMs: number;
  /** token.clock_skew_s: a token is accepted until its exp plus this, and so is what its query learned. */
  private readonly tokenSkewMs: number;
  /** How many token issuers the gateway trusts (`issuers`), for MAS-mode joins. */
  private readonly tokenIssuers: number;

  private readonly records: LRUCache<string, MissionRecord>;
  /**
   * Records the LRU evicted while they held a live event-learned denial, by key, until it expires
   * (r19g 2): SPEC section 3 remembers a non-active state for `max_stale_s` whatever is cached, so
   * records made for other Missions (Status answers, a client naming made-up references) cannot
   * push it out, and a lagging Status replica cannot resurrect the Mission. Only verified events
   * make live denials, so only the authorities fill this; its own bound is counted as
   * `cache="mission_denial"`.
   */
  private readonly denials: LRUCache<string, MissionRecord>;
  /**
   * Governance key (issuer, id) -> AAuth record key, learned from Status answers to AAuth queries.
   * A hit on the record touches its alias; an evicted alias drops its record (r19g 1), since events
   * could no longer reach it.
   */
  private readonly aliases: LRUCache<string, string>;
  private readonly seenJti: LRUCache<string, true>;
  private readonly inflight = new Map<string, Promise<MissionView>>();
  /** Queries in flight per asker (fetch). */
  private readonly askers = new Map<string, number>();
  /** Issuer -> epoch ms until which its Retry-After asks us not to query. */
  private readonly cooldown = new Map<string, number>();
  /** Issuer -> epoch ms of the last verified SET pushed by it (stream liveness). */
  private readonly lastPushed = new Map<string, number>();

  private readonly cacheHit;
  private readonly cacheMiss;
  private readonly cacheStale;

  private readonly sink: SetSink;
  /** The pushes this receiver has read and not answered yet (delivery.ts). */
  private readonly pushSlots: PushSlots = { count: 0 };
  private readonly poller: SetPoller | null;
  private readonly pollSince: number;
  /** When the replica bus last lost changes before they were read: entries fetched earlier are stale. */
  private busGapAt = -Infinity;
  private readonly recheck: NodeJS.Timeout | null;
  /**
   * Changes applied here, whose polled SETs were acknowledged, that could not be shared with the
   * other replicas (the bus down): published in order once it is back (delivery.ts, SetSink.defer).
   */
  private unshared: MissionChange[] = [];
  private unsharedTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(deps: MissionStatesDeps) {
    this.metrics = deps.metrics;
    this.logger = deps.logger;
    this.bus = deps.bus;
    this.holds = deps.holds ?? null;
    this.now = deps.now ?? Date.now;
    this.maxStaleMs = deps.config.mission.max_stale_s * 1000;
    this.tokenSkewMs = deps.config.token.clock_skew_s * 1000;
    this.tokenIssuers = deps.config.issuers.length;
    this.status = new MissionStatusClient({ config: deps.config, keys: deps.keys, metrics: deps.metrics, logger: deps.logger, now: this.now });
    this.verifier = new SetVerifier(deps.config, trustedMissionIssuers(deps.config), deps.keys, this.now);

    const max = deps.config.mission.cache_max_entries;
    const evicted = deps.metrics.cacheEvictions.labels('mission');
    this.records = growingLru<MissionRecord>(max, (rec, key) => {
      evicted.inc();
      this.keepDenial(key, rec);
    });
    const denialEvicted = deps.metrics.cacheEvictions.labels('mission_denial');
    this.denials = growingLru<MissionRecord>(max, () => denialEvicted.inc());
    this.aliases = growingLru<string>(max, (target, idKey) => {
      const cached = this.records.peek(target);
      const rec = cached ?? this.denials.peek(target);
      if (rec === undefined || rec.alias !== idKey) return;
      if (cached !== undefined) {
        evicted.inc();
        this.records.delete(target);
      } else {
        this.denials.delete(target);
      }
      // Its next request asks Status, whose answer finds what events taught under the id (store()).
      rec.alias = null;
      const byId = this.records.peek(idKey);
      if (byId === undefined) this.keepDenial(idKey, rec);
      else adoptNewer(byId, rec);
    });
    const jtiEvicted = deps.metrics.cacheEvictions.labels('set_jti');
    this.seenJti = growingLru<true>(JTI_MEMORY, () => jtiEvicted.inc());

    this.cacheHit = deps.metrics.missionCacheTally.hit;
    this.cacheMiss = deps.metrics.missionCacheTally.miss;
    this.cacheStale = deps.metrics.missionCacheTally.stale;

    this.sink = {
      apply: (set, via) => {
        if (via === 'push') this.lastPushed.set(set.issuer, this.now());
        return this.applySet(set);
      },
      publish: (change) => this.publish(change),
      forget: (set) => this.seenJti.delete(jtiKey(set.issuer, set.jti)),
      defer: (change) => this.defer(change),
      isClosed: () => this.closed,
    };
    const poll = deps.config.mission.events.poll;
    const delivery = { verifier: this.verifier, sink: this.sink, metrics: deps.metrics, logger: deps.logger };
    this.poller = poll === undefined ? null : new SetPoller(poll, deps.config.mission.status_timeout_s * 1000 + 5000, delivery, this.now);
    this.pollSince = this.now();

    deps.bus.subscribe(
      (change) => this.replicate(change, 0),
      () => this.busGap(),
    );
    this.recheck = this.holds === null ? null : setInterval(() => this.recheckHeld(), recheckIntervalMs(this.maxStaleMs)).unref();
  }

  /**
   * The replica bus lost changes this replica never read (a revocation among them, maybe): every
   * cached state is asked of Mission Status again before it is used, and held streams at once.
   */
  private busGap(): void {
    this.busGapAt = this.now();
    this.recheckHeld();
  }

  /**
   * Reads the state of every Mission something is held under, as a request would (cache first):
   * an open stream is bound by `max_stale_s` like a request, even on a replica that hears no event.
   * A state other than active cuts (store() does when it asks Status); a state that cannot be
   * established (authority unreachable, nothing fresh) cuts too: fail closed, as a request is denied.
   */
  private recheckHeld(only?: readonly string[]): void {
    const holds = this.holds;
    if (holds === null || this.closed) return;
    for (const { key, ref, audience } of holds.held()) {
      if (only !== undefined && !only.includes(key)) continue;
      const settle = (view: MissionView): void => {
        if (view.state !== 'active') holds.cut(key, view.state);
      };
      const unavailable = (): void => {
        holds.cut(key, 'unavailable', 'state_unavailable');
      };
      try {
        const v = this.lookup(ref, audience);
        if (v instanceof Promise) v.then(settle, unavailable);
        else settle(v);
      } catch {
        unavailable();
      }
    }
  }

  // ---- the stage -------------------------------------------------------------------------------

  /** The mission_state stage. Sync on a cache hit; a promise only when the authority is asked. */
  stage(): Stage {
    return (ctx: RequestContext): void | Promise<void> => {
      const ref = ctx.missionRef;
      if (ref === null) {
        ctx.mission = null;
        return;
      }
      const actionClass = ctx.route?.actionClass ?? null;
      const fresh = actionClass !== null && HIGH_CONSEQUENCE.has(actionClass);
      const tokenExp = ctx.token?.exp;
      if (!fresh) {
        const hit = this.cached(ref, ctx.audience);
        if (hit !== undefined) return this.admit(ctx, ref, hit);
      }
      // A reference the client names itself (a header) may name a new Mission on every request.
      const asker = isHeaderReference(ref) ? principalOf(ctx) : undefined;
      return this.fetch(ref, ctx.audience, tokenExp, fresh, asker).then((view) => this.admit(ctx, ref, view));
    };
  }

  private admit(ctx: RequestContext, ref: MissionReference, view: MissionView): void {
    ctx.mission = view;
    if (isHeaderReference(ref)) judgeNamed(view, () => this.join(view, ctx.token), this.now());
    else assertMissionActive(view, this.now());
  }

  /** assertMissionJoin with this gateway's token issuers. */
  join(view: MissionView, token: AccessToken | null): void {
    assertMissionJoin(view, token, this.tokenIssuers);
  }

  /**
   * The Mission's state for `audience` (for the MCP `_meta` and ID-JAG paths). Does not judge it:
   * use assertMissionActive / assertMissionJoin. Throws/rejects Denial('state_unavailable').
   */
  lookup(ref: MissionReference, audience: string, opts: LookupOptions = {}): MissionView | Promise<MissionView> {
    if (opts.fresh !== true) {
      const hit = this.cached(ref, audience);
      if (hit !== undefined) return hit;
    }
    return this.fetch(ref, audience, opts.tokenExp, opts.fresh === true, opts.asker);
  }

  // ---- the cache -------------------------------------------------------------------------------

  /** A usable cached view, or undefined (and the miss/stale counted). Never awaits. */
  private cached(ref: MissionReference, audience: string): MissionView | undefined {
    const now = this.now();
    const rec = this.recordAt(refKey(ref));
    if (rec === undefined) {
      this.cacheMiss.inc();
      return undefined;
    }
    if (rec.alias !== null) this.aliases.get(rec.alias);
    if (rec.denyView !== null && rec.denyUntil > now) {
      if (rec.confirm) {
        this.cacheMiss.inc();
        return undefined;
      }
      this.cacheHit.inc();
      return rec.denyView;
    }
    const entry = rec.entries.get(audience);
    if (entry === undefined) {
      this.cacheMiss.inc();
      return undefined;
    }
    if (entry.deadline <= now || performance.now() >= entry.staleAt || entry.fetchedAt <= this.busGapAt || this.streamSilent(rec.issuer, entry.fetchedAt, now) || this.behind(rec, entry.view)) {
      this.cacheStale.inc();
      return undefined;
    }
    this.cacheHit.inc();
    return entry.view;
  }

  /**
   * True when the record knows a later version, or a terminal state, than an audience's entry: a
   * Status answer asked for another audience of the Mission (its API and its MCP endpoint) moved
   * the record on, and only its own entry (r21c 1). The entry is asked for again.
   */
  private behind(rec: MissionRecord, view: MissionView): boolean {
    if (rec.version !== null && view.version !== null && view.version < rec.version) return true;
    return isTerminal(rec.state) && !isTerminal(view.state);
  }

  /** True when the event stream covering `issuer` fell silent after the entry was fetched. */
  private streamSilent(issuer: string, fetchedAt: number, now: number): boolean {
    const pushed = this.lastPushed.get(issuer);
    if (pushed !== undefined) {
      const silentSince = pushed + this.maxStaleMs;
      if (silentSince <= now && fetchedAt < silentSince) return true;
    }
    if (this.poller !== null) {
      const silentSince = (this.poller.lastSuccess ?? this.pollSince) + this.maxStaleMs;
      if (silentSince <= now && fetchedAt < silentSince) return true;
    }
    return false;
  }

  /**
   * Asks Mission Status. `asker`: the principal (principalOf) of a client that named the Mission
   * itself (a header or `_meta` reference); it may have at most MAX_QUERIES_PER_ASKER queries of its
   * own in flight. Each new Mission is a query of its own, and the Status client's connections are
   * shared (MAX_STATUS_CONNECTIONS): one client naming a new Mission on every request would queue
   * everyone else's queries behind its own (r14d 3).
   */
  private fetch(ref: MissionReference, audience: string, tokenExp: number | undefined, fresh: boolean, asker?: string): Promise<MissionView> {
    const key = `${refKey(ref)}\n${audience}`;
    if (!fresh) {
      const pending = this.inflight.get(key);
      if (pending !== undefined) return pending;
    }
    if (asker !== undefined) {
      const mine = this.askers.get(asker) ?? 0;
      if (mine >= MAX_QUERIES_PER_ASKER) {
        this.metrics.missionStatusRequests.labels('client_limit').inc();
        return Promise.reject(this.unavailable(ref, 1, new Error('too many Mission Status queries from this client at once')));
      }
      this.askers.set(asker, mine + 1);
      const done = (): void => {
        const left = (this.askers.get(asker) ?? 1) - 1;
        if (left > 0) this.askers.set(asker, left);
        else this.askers.delete(asker);
      };
      const p = this.query(ref, audience, tokenExp, fresh, key);
      p.then(done, done);
      return p;
    }
    return this.query(ref, audience, tokenExp, fresh, key);
  }

  /** The Status query itself, shared by concurrent misses (`key`) unless `fresh`. */
  private query(ref: MissionReference, audience: string, tokenExp: number | undefined, fresh: boolean, key: string): Promise<MissionView> {
    const started = this.now();
    const startedMono = performance.now();
    const asked = this.peekRecord(refKey(ref))?.refetches ?? 0;
    const until = this.cooldown.get(ref.issuer);
    if (until !== undefined && until > started) {
      this.metrics.missionStatusRequests.labels('cooldown').inc();
      return Promise.reject(this.unavailable(ref, Math.ceil((until - started) / 1000)));
    }
    const p = this.status.query(ref, audience).then(
      (result) => this.store(ref, audience, result, started, startedMono, tokenExp, asked),
      (err: unknown) => {
        const retryAfter = err instanceof StatusUnavailable ? err.retryAfter : undefined;
        if (retryAfter !== undefined) this.cooldown.set(ref.issuer, this.now() + retryAfter * 1000);
        // An event already told us the Mission is not active: say so rather than 503.
        const rec = this.peekRecord(refKey(ref));
        if (rec !== undefined && this.denies(rec)) return rec.denyView!;
        throw this.unavailable(ref, retryAfter, err);
      },
    );
    if (!fresh) {
      this.inflight.set(key, p);
      const clear = (): void => {
        if (this.inflight.get(key) === p) this.inflight.delete(key);
      };
      p.then(clear, clear);
    }
    return p;
  }

  private unavailable(ref: MissionReference, retryAfter: number | undefined, cause?: unknown): Denial {
    return new Denial('state_unavailable', { retryAfter: retryAfter ?? DEFAULT_RETRY_AFTER_S, cause: cause ?? `authority ${ref.issuer} is cooling down` });
  }

  private record(key: string, issuer: string): MissionRecord {
    let rec = this.recordAt(key);
    if (rec === undefined) {
      rec = { issuer, version: null, state: null, denyUntil: 0, denyView: null, confirm: false, authorityVersion: null, refetches: 0, entries: new Map(), alias: null };
      this.records.set(key, rec);
    }
    return rec;
  }

  /** The record under `key`, brought back from `denials` while its denial lives. */
  private recordAt(key: string): MissionRecord | undefined {
    const rec = this.records.get(key);
    if (rec !== undefined || this.denials.size === 0) return rec;
    const kept = this.denials.get(key);
    if (kept === undefined) return undefined;
    this.denials.delete(key);
    if (!this.denies(kept)) return undefined;
    this.records.set(key, kept);
    return kept;
  }

  private peekRecord(key: string): MissionRecord | undefined {
    return this.records.peek(key) ?? this.denials.peek(key);
  }

  /** True while an event-learned non-active state is enforced for this record. */
  private denies(rec: MissionRecord): boolean {
    return rec.denyView !== null && rec.denyUntil > this.now();
  }

  /** Keeps an evicted record under `key` while its event denial lives, without its cached answers. */
  private keepDenial(key: string, rec: MissionRecord): void {
    if (!this.denies(rec)) return;
    rec.entries.clear();
    this.denials.set(key, rec);
  }

  /** Merges a verified Status answer into the record; returns the view for the waiting requests. */
  private store(ref: MissionReference, audience: string, r: StatusResult, started: number, startedMono: number, tokenExp: number | undefined, asked: number): MissionView {
    const key = refKey(ref);
    const rec = this.record(key, ref.issuer);
    // Asked before a change that made the authority unknown (the change landed while this query was
    // in flight): its answer serves the requests that were waiting for it, but is not cached, and
    // open exchanges are not decided again by it. The change's own re-read asks afresh.
    const predates = rec.refetches !== asked;
    if (!predates && r.version !== null && rec.authorityVersion !== null && r.version < rec.authorityVersion) {
      // Asked after such a change, yet answering from before it (a lagging authority): its
      // authority may be wider than the Mission's now. Fail closed, as for an unreachable authority.
      throw this.unavailable(ref, 1, new Error(`Mission Status answered version ${r.version}, behind the applied authority change (version ${rec.authorityVersion})`));
    }
    // An AAuth reference's Mission is also known by its governance id, which events name.
    const idKey = ref.s256 !== null && r.id !== null ? recordKey(r.issuer, r.id, false) : null;
    if (idKey !== null) {
      rec.alias = idKey;
      this.aliases.set(idKey, key);
      // What events taught the record under that id (they may have arrived before this answer told
      // us the id) holds for this reference too: a later version, a remembered denial, a terminal state.
      const byId = this.recordAt(idKey);
      if (byId !== undefined && byId !== rec) adoptNewer(rec, byId);
    }

    let { state, version, suspendUntil } = r;
    let source: MissionView['source'] = 'fresh';
    if (rec.version !== null && version !== null && version < rec.version) {
      // An event already applied a later version: the answer is behind it (a lagging replica).
      state = rec.state ?? state;
      version = rec.version;
      suspendUntil = rec.denyView?.suspendUntil ?? null;
      source = 'event';
    } else if (isTerminal(rec.state) && !isTerminal(state)) {
      // A terminal state is final (mission-contracts section 1): an answer saying otherwise is not
      // believed, whatever its version (a buggy or lagging authority).
      state = rec.state!;
      version = rec.version;
      suspendUntil = null;
      source = 'cached';
    } else if (version !== null) {
      if (rec.version === null || version > rec.version) {
        rec.denyUntil = 0;
        rec.denyView = null;
      }
      rec.version = version;
      rec.state = state;
    }

    const view: MissionView = {
      id: r.id,
      issuer: r.issuer,
      state,
      version,
      authorityHash: r.authorityHash,
      source,
      authority: r.authority,
      expiresAt: r.expiresAt,
      suspendUntil,
      subject: r.subject,
      subjectIssuer: r.subjectIssuer,
      clientId: r.clientId,
    };

    let deadline = started + this.maxStaleMs;
    if (r.freshUntil !== null) deadline = Math.min(deadline, r.freshUntil * 1000);
    if (r.maxStaleSeconds !== null) deadline = Math.min(deadline, started + r.maxStaleSeconds * 1000);
    // Until the token stops being accepted: its exp plus token.clock_skew_s. At exp itself, a token
    // still accepted inside the skew would ask Status on every request (r21c 4).
    if (tokenExp !== undefined) deadline = Math.min(deadline, tokenExp * 1000 + this.tokenSkewMs);
    if (state === 'active' && r.expiresAt !== null) deadline = Math.min(deadline, r.expiresAt * 1000);
    if (state === 'suspended' && suspendUntil !== null) deadline = Math.min(deadline, suspendUntil * 1000);

    if (!rec.entries.has(audience) && rec.entries.size >= MAX_AUDIENCES_PER_MISSION) {
      const oldest = rec.entries.keys().next().value;
      if (oldest !== undefined) rec.entries.delete(oldest);
    }
    const staleAt = startedMono + (r.maxStaleSeconds === null ? this.maxStaleMs : Math.min(this.maxStaleMs, r.maxStaleSeconds * 1000));
    if (!predates) rec.entries.set(audience, { view: source === 'fresh' ? { ...view, source: 'cached' } : view, deadline, fetchedAt: started, staleAt });
    // Read now: a remembered denial waiting for this confirmation stands or was superseded above.
    rec.confirm = false;
    // A remembered event denial outlives any answer that is not strictly newer (including an
    // unversioned one): fail closed on an inconsistent authority.
    const denied = this.denies(rec);
    if (denied && !joinable(rec.denyView!) && joinable(view)) {
      // The event named no owner; this answer does (r19e 4).
      rec.denyView = { ...rec.denyView!, subject: view.subject, subjectIssuer: view.subjectIssuer, clientId: view.clientId };
    }
    // Whatever this Mission still holds open, under either form of reference, stops with it (a
    // later request asked and learned); or it is active, and responses may start again.
    this.settleHolds(denied ? rec.denyView!.state : state, key, idKey);
    if (!denied && !predates && state === 'active' && this.holds !== null) {
      // Still active, with the authority just read: what it held open that this authority would not
      // admit now stops (an `authority_changed` narrowing, or any answer with other entries).
      this.holds.review(key, audience, view);
      if (idKey !== null) this.holds.review(idKey, audience, view);
    }
    return denied ? rec.denyView! : view;
  }

  // ---- lifecycle changes -----------------------------------------------------------------------

  /**
   * Applies a verified lifecycle change synchronously. Changes not from the bus are published to
   * the other replicas (fire and forget; handlePush awaits its own publication).
   */
  applyChange(change: MissionChange, fromBus = false): EventResult {
    const result = this.applyOnce(change);
    if (!fromBus && result !== 'duplicate') this.publish(change).catch(() => undefined);
    return result;
  }

  /**
   * A change another replica applied: its SET is verified here again (signature, issuer, audience)
   * and what the SET says is applied, so a message written to the bus by anyone but a replica that
   * verified a SET changes nothing. A SET whose keys cannot be had yet is tried again, a few times.
   */
  private replicate(change: MissionChange, attempt: number): void {
    if (this.closed) return;
    if (change.set === null) {
      this.metrics.events.labels('replicated_unverified').inc();
      return;
    }
    this.verifier.verify(change.set).then(
      (set) => {
        if (this.closed) return;
        if (set.kind !== 'lifecycle') {
          this.metrics.events.labels('replicated_unverified').inc();
          return;
        }
        this.metrics.events.labels(`replicated_${this.applyChange(set.change, true)}`).inc();
      },
      (err: unknown) => {
        if (this.closed) return;
        if (err instanceof SetRejected && err.transient && attempt < REPLICATE_RETRIES) {
          setTimeout(() => this.replicate(change, attempt + 1), REPLICATE_RETRY_MS).unref();
          return;
        }
        this.metrics.events.labels('replicated_unverified').inc();
        this.logger.warn({ issuer: change.issuer, mission_id: change.id, reason: err instanceof Error ? err.message : String(err) }, 'a replica bus message whose SET does not verify was dropped');
      },
    );
  }

  private applyOnce(change: MissionChange): EventResult {
    const seen = jtiKey(change.issuer, change.jti);
    if (this.seenJti.has(seen)) return 'duplicate';
    this.seenJti.set(seen, true);
    return this.applyVersioned(change);
  }

  private applyVersioned(change: MissionChange): EventResult {
    const now = this.now();
    const key = recordKey(change.issuer, change.id, false);
    const targets: MissionRecord[] = [];
    const direct = this.recordAt(key);
    if (direct !== undefined) targets.push(direct);
    const aliasKey = this.aliases.get(key);
    const aliased = aliasKey === undefined ? undefined : this.recordAt(aliasKey);
    if (aliased !== undefined) targets.push(aliased);
    // Reached only through its AAuth form: the id form (a token or header naming it by id) must
    // not be resurrected by a lagging Status answer either (r20a 4).
    if (direct === undefined && aliased !== undefined && change.state !== 'active') targets.push(this.record(key, change.issuer));

    if (targets.length === 0) {
      if (change.state === 'active') {
        // Not cached, but maybe being asked about right now: that answer may predate this change.
        if (this.forgetInflight([key])) {
          const rec = this.record(key, change.issuer);
          rec.refetches++;
          if (change.refetch) rec.authorityVersion = change.version;
        }
        return 'uncached';
      }
      // Remember a non-active state even for a Mission we never cached (SPEC section 3), confirmed
      // by Status before it is served unless final (MissionRecord.confirm).
      // Counted as applied, not `uncached` (which is an event ignored; r21e 2).
      const rec = this.record(key, change.issuer);
      const applied = this.applyTo(rec, change, now);
      if (applied !== 'stale') {
        rec.confirm = !isTerminal(change.state);
        this.settleHolds(change.state, key, null);
      }
      return applied;
    }
    let result: EventResult = 'stale';
    for (const rec of targets) {
      const r = this.applyTo(rec, change, now);
      if (r !== 'stale') result = r;
    }
    // Applied: what the Mission still holds open stops with it (or, resumed, may flow again).
    if (result !== 'stale') this.settleHolds(change.state, key, aliasKey ?? null);
    if (result === 'gap') {
      const keys = aliasKey === undefined ? [key] : [key, aliasKey];
      // Status queries already in flight were asked before the change: a request from now on asks
      // again rather than sharing one of them (their answers are not cached, store()).
      this.forgetInflight(keys);
      // Its authority changed (or what happened in between is unknown) while it stays active: what
      // it holds open is decided again once Status has been read again, now rather than at the next
      // re-read.
      if (change.state === 'active' && this.holds !== null) this.recheckHeld(keys);
    }
    return result;
  }

  /** Stops sharing the Status queries in flight for these Missions (any audience); true if there were any. */
  private forgetInflight(keys: readonly string[]): boolean {
    let found = false;
    for (const k of this.inflight.keys()) {
      if (keys.some((key) => k.startsWith(key) && k.charCodeAt(key.length) === 10 /* \n */)) {
        this.inflight.delete(k);
        found = true;
      }
    }
    return found;
  }

  /** Cuts what the Mission holds under each of its keys, or lets responses start again when active. */
  private settleHolds(state: string, key: string, other: string | null): void {
    const holds = this.holds;
    if (holds === null) return;
    for (const k of other === null ? [key] : [key, other]) {
      if (state === 'active') holds.reinstate(k);
      else holds.cut(k, state);
    }
  }

  private applyTo(rec: MissionRecord, change: MissionChange, now: number): EventResult {
    // Versions never regress: an event not above the last applied version changes nothing.
    if (rec.version !== null && change.version <= rec.version) return 'stale';
    // A terminal state is final (mission-contracts section 1): no later event brings the Mission back.
    if (isTerminal(rec.state) && !isTerminal(change.state)) return 'stale';
    const gap = change.refetch || (rec.version !== null && change.version > rec.version + 1);
    rec.version = change.version;
    rec.state = change.state;
    rec.confirm = false;
    if (gap) {
      rec.authorityVersion = change.version;
      rec.refetches++;
    }
    if (change.state === 'active') {
      rec.denyUntil = 0;
      rec.denyView = null;
    } else {
      // Its owner, when a Status answer named it: a Mission's owner does not change with its state,
      // and a view naming it is joined before its state is told (joinable; r19e 4).
      const owner = ownerOf(rec);
      rec.denyUntil = now + this.maxStaleMs;
      // A suspension ends at its suspend_until (resumed or revoked, per its on_expiry): the state
      // after it is read from Status, not guessed (r20d 1). Versions still rule out a lagging answer.
      if (change.state === 'suspended' && change.suspendUntil !== null) rec.denyUntil = Math.min(rec.denyUntil, change.suspendUntil * 1000);
      rec.denyView = {
        id: change.id,
        issuer: change.issuer,
        state: change.state,
        version: change.version,
        authorityHash: null,
        source: 'event',
        authority: null,
        expiresAt: change.expiresAt,
        suspendUntil: change.suspendUntil,
        subject: owner?.subject ?? null,
        subjectIssuer: owner?.subjectIssuer ?? null,
        clientId: owner?.clientId ?? null,
      };
    }
    for (const entry of rec.entries.values()) {
      if (gap) {
        // What happened in between is unknown (or authority narrowed): ask Status again.
        entry.deadline = Math.min(entry.deadline, now);
        continue;
      }
      entry.view = {
        ...entry.view,
        state: change.state,
        version: change.version,
        suspendUntil: change.suspendUntil,
        expiresAt: change.expiresAt ?? entry.view.expiresAt,
        source: 'event',
      };
      if (change.state === 'suspended' && change.suspendUntil !== null) entry.deadline = Math.min(entry.deadline, change.suspendUntil * 1000);
    }
    return gap ? 'gap' : 'accepted';
  }

  private publish(change: MissionChange): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('bus publish timed out')), PUBLISH_TIMEOUT_MS);
    });
    return Promise.race([this.bus.publish(change), timeout])
      .catch((err: unknown) => {
        this.logger.error({ issuer: change.issuer, mission: change.id, err: err instanceof Error ? err.message : String(err) }, 'mission change not published to replicas');
        throw err;
      })
      .finally(() => clearTimeout(timer));
  }

  private defer(change: MissionChange): void {
    if (this.unshared.length >= MAX_UNSHARED) {
      const lost = this.unshared.shift()!;
      this.logger.error({ issuer: lost.issuer, mission: lost.id, state: lost.state }, 'a Mission change waiting for the replica bus was dropped: too many are waiting; the other replicas learn it from Mission Status within max_stale_s');
    }
    this.unshared.push(change);
    this.unsharedTimer ??= setTimeout(this.shareDeferred, UNSHARED_RETRY_MS).unref();
  }

  /** Publishes the deferred changes in order; on a failure, tries again later. */
  private readonly shareDeferred = (): void => {
    this.unsharedTimer = null;
    const next = this.unshared[0];
    if (next === undefined || this.closed) return;
    this.publish(next).then(
      () => {
        if (this.unshared[0] === next) this.unshared.shift();
        this.shareDeferred();
      },
      () => {
        this.unsharedTimer ??= setTimeout(this.shareDeferred, UNSHARED_RETRY_MS).unref();
      },
    );
  };

  /** Applies one verified SET from push or poll. Sync; returns the metrics result. */
  private applySet(set: VerifiedSet): EventResult {
    if (set.kind === 'heartbeat' || set.kind === 'other') {
      const seen = jtiKey(set.issuer, set.jti);
      if (this.seenJti.has(seen)) return 'duplicate';
      this.seenJti.set(seen, true);
      return set.kind === 'heartbeat' ? 'heartbeat' : 'ignored';
    }
    return this.applyOnce(set.change);
  }

  // ---- delivery (delivery.ts) ------------------------------------------------------------------

  /** RFC 8935 receiver at `mission.events.push_path`. The change is applied before the 202. */
  handlePush(req: IncomingMessage, res: ServerResponse): void {
    handleSetPush(req, res, { verifier: this.verifier, sink: this.sink, metrics: this.metrics, logger: this.logger, pending: this.pushSlots });
  }

  /** Starts the RFC 8936 poll loop when `mission.events.poll` is configured. */
  startPolling(): void {
    if (!this.closed) this.poller?.start();
  }

  /**
   * Stops the RFC 8936 poll loop: a reload's new instance polls from now on, and what this one
   * has not acknowledged yet is delivered to it again. Without this, the retired instance would
   * take events for itself until it is closed, and a revocation it took would never reach the
   * cache requests read (r17e 1).
   */
  stopPolling(): void {
    this.poller?.stop();
  }

  /** One RFC 8936 poll now (tests, and the loop). Resolves with `moreAvailable`. */
  pollOnce(): Promise<boolean> {
    return this.poller === null ? Promise.resolve(false) : this.poller.pollOnce();
  }

  /**
   * After a config reload: keeps what the previous instance learned from events (versions applied,
   * non-active states still remembered, SET jtis seen), so a reload cannot resurrect a revoked
   * Mission or replay a duplicate. Cached Status answers are not carried over: they are refetched
   * under the new config.
   */
  adopt(previous: MissionStates): void {
    for (const entry of previous.denials.rentries()) {
      const [key, rec] = entry as [string, MissionRecord];
      this.keepDenial(key, { ...rec, refetches: 0, entries: new Map() });
    }
    for (const entry of previous.records.rentries()) {
      const [key, rec] = entry as [string, MissionRecord];
      if (rec.version === null && rec.denyView === null) continue;
      this.records.set(key, { issuer: rec.issuer, version: rec.version, state: rec.state, denyUntil: rec.denyUntil, denyView: rec.denyView, confirm: rec.confirm, authorityVersion: rec.authorityVersion, refetches: 0, entries: new Map(), alias: rec.alias });
    }
    for (const entry of previous.aliases.rentries()) {
      const [k, v] = entry as [string, string];
      this.aliases.set(k, v);
    }
    for (const k of previous.seenJti.rkeys()) this.seenJti.set(k, true);
    // Changes still waiting to be shared are shared by this instance (the previous one is closing).
    for (const c of previous.unshared.splice(0)) this.defer(c);
  }

  /** False when polling is configured and the last successful poll is older than `max_stale_s`. */
  ready(): boolean {
    if (this.poller === null) return true;
    const last = this.poller.lastSuccess;
    return last !== null && this.now() - last <= this.maxStaleMs;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.recheck !== null) clearInterval(this.recheck);
    if (this.unsharedTimer !== null) clearTimeout(this.unsharedTimer);
    this.poller?.stop();
    await this.status.close();
  }
}

/**
 * An LRU of at most `max` entries that allocates as it fills. Given `max`, lru-cache allocates all
 * its slots up front: ~1.5 MB for 100,000, so ~4.6 MB for these three caches in every runtime a
 * reload builds (r11d: 100 reloads in a row held ~500 MB until the old runtimes were closed), and in
 * the old generation each major GC walks. Bounded by size instead, each entry counting 1, it grows
 * to the same bound.
 */
function growingLru<V extends {}>(max: number, onEvict?: (value: V, key: string) => void): LRUCache<string, V> {
  return new LRUCache<string, V>({
    maxSize: max,
    sizeCalculation: () => 1,
    ...(onEvict === undefined ? {} : { dispose: (v: V, k: string, reason: LRUCache.DisposeReason) => reason === 'evict' && onEvict(v, k) }),
  });
}

/** The view that names the Mission's subject and client, if any does. */
function ownerOf(rec: MissionRecord): MissionView | null {
  if (rec.denyView !== null && joinable(rec.denyView)) return rec.denyView;
  for (const entry of rec.entries.values()) if (joinable(entry.view)) return entry.view;
  return null;
}

/** Copies into `rec` what `other` (the same Mission under its other key) knows that is newer. */

function adoptNewer(rec: MissionRecord, other: MissionRecord): void {
  const newer = other.version !== null && (rec.version === null || other.version > rec.version);
  if (!newer && !(isTerminal(other.state) && !isTerminal(rec.state))) return;
  rec.version = other.version;
  rec.state = other.state;
  rec.denyUntil = other.denyUntil;
  rec.denyView = other.denyView;
  rec.confirm = other.confirm;
  if (other.authorityVersion !== null && (rec.authorityVersion === null || other.authorityVersion > rec.authorityVersion)) rec.authorityVersion = other.authorityVersion;
}
