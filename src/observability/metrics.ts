/**
 * Prometheus metrics (SPEC section 9). Names are fixed; labels may grow. Every metric is created
 * once per gateway on its own registry, and hot-path label children are precomputed.
 */
import client from 'prom-client';
import { DENIALS } from '../errors.js';

export type Outcome = string;

/** `mission_gateway_decision_seconds` bucket bounds (the gateway's own time: tens of us to ms). */
const DECISION_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5];
/** `mission_gateway_upstream_seconds` bucket bounds. */
const UPSTREAM_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30];

/** One series of a prom-client histogram as prom-client 15 keeps it (`hashMap` values). */
interface SeriesEntry {
  labels: Record<string, string | number>;
  bucketValues: Record<string, number>;
  sum: number;
  count: number;
}

/**
 * Per-request observations of one histogram series, counted per bucket here (a bucket search and
 * three additions) and added to the prom-client histogram when it is collected (a scrape, or
 * `get()`). prom-client's own observe converts, validates and hashes the labels on every call; and
 * replaying buffered values through it one by one stalled the event loop for milliseconds every
 * few thousand requests. The bucket counts go into the series prom-client keeps for these labels
 * (created with `zero`), so the exposition is prom-client's own.
 */
class BucketTally {
  private readonly counts: Float64Array;
  private sum = 0;
  private n = 0;

  constructor(
    private readonly histogram: client.Histogram<string>,
    private readonly bounds: readonly number[],
    private readonly labels: Record<string, string>,
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  add(seconds: number): void {
    // Same contract as prom-client: a non-finite value is a bug, not a sample.
    if (!Number.isFinite(seconds)) throw new TypeError('histogram value is not a finite number');
    const b = this.bounds;
    let i = 0;
    while (i < b.length && seconds > b[i]!) i++;
    this.counts[i]!++;
    this.sum += seconds;
    this.n++;
  }

  fold(): void {
    if (this.n === 0) return;
    const e = this.series();
    const b = this.bounds;
    // Past the last bound a value only counts (+Inf is the total), as prom-client does.
    for (let i = 0; i < b.length; i++) e.bucketValues[b[i]!] = (e.bucketValues[b[i]!] ?? 0) + this.counts[i]!;
    e.sum += this.sum;
    e.count += this.n;
    this.counts.fill(0);
    this.sum = 0;
    this.n = 0;
  }

  /** The series' entry, looked up at each fold (a scrape): a reset replaces it. */
  private series(): SeriesEntry {
    const h = this.histogram as unknown as { zero(labels: Record<string, string>): void; hashMap: Record<string, SeriesEntry> };
    const wanted = Object.entries(this.labels);
    const find = (): SeriesEntry | undefined => Object.values(h.hashMap).find((e) => wanted.every(([k, v]) => e.labels[k] === v) && Object.keys(e.labels).length === wanted.length);
    let e = find();
    if (e === undefined) {
      if (wanted.length > 0) h.zero(this.labels);
      e = find();
    }
    if (e === undefined) throw new Error('prom-client histogram series not found (prom-client internals changed?)');
    return e;
  }
}

/**
 * A counter series whose per-request increments are a plain addition, added to the prom-client
 * child when the counter is collected (prom-client's own inc validates and hashes the labels on
 * every call).
 */
export class Tally {
  private n = 0;
  constructor(private readonly child: { inc(value: number): void }) {
    // The series exists from the start, at 0 (so rate() over it works from the first scrape).
    child.inc(0);
  }

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
  readonly connectionsDropped: client.Counter;
  readonly exchangesCut: client.Counter<'cause'>;
  readonly openExchanges: client.Gauge<never>;
  /** What `mission_gateway_open_exchanges` reads at scrape time (set by the gateway). */
  heldExchanges: () => number = () => 0;

  /** `requests_total` series: permit, and deny by reason. */
  private readonly permitTally: Tally;
  private readonly denyTallies = new Map<string, Tally>();
  /** `mission_cache_total` series, for the Mission state cache. */
  readonly missionCacheTally: { readonly hit: Tally; readonly miss: Tally; readonly stale: Tally };
  private readonly decisionPending = new Map<string, BucketTally>();
  private readonly upstreamPending: BucketTally;

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
      buckets: DECISION_BUCKETS,
      registers,
      collect() {
        for (const p of decisionPending.values()) p.fold();
      },
    });
    let upstreamPending: BucketTally | null = null;
    this.upstreamSeconds = new client.Histogram({
      name: 'mission_gateway_upstream_seconds',
      help: 'Time to upstream response headers',
      buckets: UPSTREAM_BUCKETS,
      registers,
      collect() {
        upstreamPending?.fold();
      },
    });
    upstreamPending = new BucketTally(this.upstreamSeconds as client.Histogram<string>, UPSTREAM_BUCKETS, {});
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
    this.connectionsDropped = new client.Counter({
      name: 'mission_gateway_connections_dropped_total',
      help: 'Client connections to the proxy listener closed as soon as accepted: limits.max_connections were open',
      registers,
    });
    this.exchangesCut = new client.Counter({
      name: 'mission_gateway_exchanges_cut_total',
      help: 'Open exchanges (requests in flight, response streams, WebSocket tunnels) cut because their Mission stopped being active or no longer permits them, by cause',
      labelNames: ['cause'],
      registers,
    });
    const held = (): number => this.heldExchanges();
    this.openExchanges = new client.Gauge({
      name: 'mission_gateway_open_exchanges',
      help: 'Exchanges held open under a Mission: requests forwarded and not yet answered, response streams and WebSocket tunnels still flowing',
      registers,
      collect() {
        this.set(held());
      },
    });

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
    for (const r of ['success', 'failure']) this.configReloads.labels(r).inc(0);
    for (const c of ['state_change', 'expired', 'state_unavailable', 'authority_changed']) this.exchangesCut.labels(c).inc(0);
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
      pending = new BucketTally(this.decisionSeconds, DECISION_BUCKETS, { kind });
      this.decisionPending.set(kind, pending);
    }
    pending.add(seconds);
  }

  /** One `mission_gateway_upstream_seconds` observation (folded in on collect). */
  observeUpstream(seconds: number): void {
    this.upstreamPending.add(seconds);
  }
}
