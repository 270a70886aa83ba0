/**
 * Prometheus metrics (SPEC section 9). Names are fixed; labels may grow. Every metric is created
 * once per gateway on its own registry, and hot-path label children are precomputed.
 */
import client from 'prom-client';
import { DENIALS } from '../errors.js';

export type Outcome = string;

/** Observations kept per histogram series before they are folded in without waiting for a scrape. */
const PENDING_MAX = 4096;

/**
 * Per-request observations wait in a flat Float64Array and are folded into the prom-client
 * histogram when it is collected (a scrape, or `get()`), or when the buffer is full. prom-client's
 * own observe converts, validates and hashes the labels on every call; this is one array store.
 */
class PendingObservations {
  private readonly values = new Float64Array(PENDING_MAX);
  private n = 0;
  constructor(private readonly child: { observe(value: number): void }) {}

  add(seconds: number): void {
    // Same contract as prom-client: a non-finite value is a bug, not a sample.
    if (!Number.isFinite(seconds)) throw new TypeError('histogram value is not a finite number');
    this.values[this.n++] = seconds;
    if (this.n === PENDING_MAX) this.fold();
  }

  fold(): void {
    const n = this.n;
    this.n = 0;
    for (let i = 0; i < n; i++) this.child.observe(this.values[i]!);
  }
}

/**
 * A counter series whose per-request increments are a plain addition, added to the prom-client
 * child when the counter is collected (prom-client's own inc validates and hashes the labels on
 * every call).
 */
export class Tally {
  private n = 0;
  constructor(private readonly child: { inc(value: number): void }) {}

  inc(): void {
    this.n++;
  }

  fold(): void {
    if (this.n === 0) return;
    const n = this.n;
    this.n = 0;
    this.child.inc(n);
  }
}

export class Metrics {
  readonly registry = new client.Registry();
  readonly requests: client.Counter<'decision' | 'reason'>;
  readonly decisionSeconds: client.Histogram<'kind'>;
  readonly upstreamSeconds: client.Histogram<never>;
  readonly missionCache: client.Counter<'result'>;
  readonly missionStatusRequests: client.Counter<'outcome'>;
  readonly events: client.Counter<'result'>;
  readonly jwksRefresh: client.Counter<'issuer' | 'outcome'>;
  readonly configReloads: client.Counter<'outcome'>;
  readonly evidenceFailures: client.Counter<never>;
  readonly evidenceHealthy: client.Gauge<never>;
  readonly replayStoreErrors: client.Counter<never>;
  readonly cacheEvictions: client.Counter<'cache'>;

  /** `requests_total` series: permit, and deny by reason. */
  private readonly permitTally: Tally;
  private readonly denyTallies = new Map<string, Tally>();
  /** `mission_cache_total` series, for the Mission state cache. */
  readonly missionCacheTally: { readonly hit: Tally; readonly miss: Tally; readonly stale: Tally };
  private readonly decisionPending = new Map<string, PendingObservations>();
  private readonly upstreamPending: PendingObservations;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    const decisionPending = this.decisionPending;
    if (options.defaultMetrics !== false) client.collectDefaultMetrics({ register: this.registry });
    const requestTallies: Tally[] = [];
    this.requests = new client.Counter({
      name: 'mission_gateway_requests_total',
      help: 'Requests decided, by decision and denial reason',
      labelNames: ['decision', 'reason'],
      registers,
      collect() {
        for (const t of requestTallies) t.fold();
      },
    });
    this.decisionSeconds = new client.Histogram({
      name: 'mission_gateway_decision_seconds',
      help: "The gateway's own time per request, upstream excluded",
      labelNames: ['kind'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5],
      registers,
      collect() {
        for (const p of decisionPending.values()) p.fold();
      },
    });
    let upstreamPending: PendingObservations | null = null;
    this.upstreamSeconds = new client.Histogram({
      name: 'mission_gateway_upstream_seconds',
      help: 'Time to upstream response headers',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30],
      registers,
      collect() {
        upstreamPending?.fold();
      },
    });
    upstreamPending = new PendingObservations(this.upstreamSeconds);
    this.upstreamPending = upstreamPending;
    const cacheTallies: Tally[] = [];
    this.missionCache = new client.Counter({
      name: 'mission_gateway_mission_cache_total',
      help: 'Mission state cache lookups',
      labelNames: ['result'],
      registers,
      collect() {
        for (const t of cacheTallies) t.fold();
      },
    });
    this.missionStatusRequests = new client.Counter({ name: 'mission_gateway_mission_status_requests_total', help: 'Mission Status requests, by outcome', labelNames: ['outcome'], registers });
    this.events = new client.Counter({ name: 'mission_gateway_events_total', help: 'Mission lifecycle events (SETs), by result', labelNames: ['result'], registers });
    this.jwksRefresh = new client.Counter({ name: 'mission_gateway_jwks_refresh_total', help: 'Issuer key set fetches, by issuer and outcome', labelNames: ['issuer', 'outcome'], registers });
    this.configReloads = new client.Counter({ name: 'mission_gateway_config_reloads_total', help: 'Config reloads (SIGHUP), by outcome', labelNames: ['outcome'], registers });
    this.evidenceFailures = new client.Counter({ name: 'mission_gateway_evidence_write_failures_total', help: 'Evidence records that could not be written', registers });
    this.evidenceHealthy = new client.Gauge({ name: 'mission_gateway_evidence_sink_up', help: '1 when the evidence sink is writable', registers });
    this.replayStoreErrors = new client.Counter({ name: 'mission_gateway_replay_store_errors_total', help: 'Replay store operations that failed (requests denied)', registers });
    this.cacheEvictions = new client.Counter({ name: 'mission_gateway_cache_evictions_total', help: 'Entries evicted from bounded caches', labelNames: ['cache'], registers });

    this.requestTallies = requestTallies;
    this.permitTally = this.tally(requestTallies, this.requests.labels('permit', 'none'));
    for (const spec of Object.values(DENIALS)) {
      if (spec.reason !== null && !this.denyTallies.has(spec.reason)) this.denyTallies.set(spec.reason, this.tally(requestTallies, this.requests.labels('deny', spec.reason)));
    }
    this.missionCacheTally = {
      hit: this.tally(cacheTallies, this.missionCache.labels('hit')),
      miss: this.tally(cacheTallies, this.missionCache.labels('miss')),
      stale: this.tally(cacheTallies, this.missionCache.labels('stale')),
    };
    for (const r of ['success', 'failure']) this.configReloads.labels(r);
    this.evidenceHealthy.set(1);
  }

  private readonly requestTallies: Tally[];

  private tally(list: Tally[], child: { inc(value: number): void }): Tally {
    const t = new Tally(child);
    list.push(t);
    return t;
  }

  countDecision(decision: 'permit' | 'deny', reason: string | null): void {
    if (decision === 'permit') {
      this.permitTally.inc();
      return;
    }
    const key = reason ?? 'none';
    let t = this.denyTallies.get(key);
    if (t === undefined) {
      t = this.tally(this.requestTallies, this.requests.labels('deny', key));
      this.denyTallies.set(key, t);
    }
    t.inc();
  }

  observeDecision(kind: string, seconds: number): void {
    let pending = this.decisionPending.get(kind);
    if (pending === undefined) {
      pending = new PendingObservations(this.decisionSeconds.labels(kind));
      this.decisionPending.set(kind, pending);
    }
    pending.add(seconds);
  }

  /** One `mission_gateway_upstream_seconds` observation (folded in on collect). */
  observeUpstream(seconds: number): void {
    this.upstreamPending.add(seconds);
  }
}
