/**
 * Issuer key sets (JWKS) for every trusted issuer: access-token issuers, Mission authorities,
 * ID-JAG issuers.
 *
 * Keys come from the configured `jwks_uri`, else from the issuer's RFC 8414 metadata, else OIDC
 * discovery. Like jose's `jwks/remote.ts`: one in-flight fetch per issuer (single flight), an
 * unknown `kid` triggers a refetch only after a cooldown, and a failed fetch keeps the last good
 * keys. A background refresh (default every 5 minutes) notices keys that leave the set, so verified
 * tokens cached by token.ts are forgotten (see `isCurrent` and `onKeysChanged`). Discovered
 * metadata is a living document: read again once older than the refresh period (in the background,
 * its last copy served meanwhile and while discovery fails), and at once when a key set fetched
 * through it fails (the issuer may have moved its `jwks_uri`). An issuer whose
 * keys never loaded is retried on its own, on a backoff, so a gateway started while its issuer was
 * down becomes ready soon after the issuer returns, without waiting for traffic.
 *
 * Fetches: undici with connect/header/body timeouts, no redirects at all (a 3xx is a failure), a
 * response size bound, JSON validation. Discovered `jwks_uri`s must be https (http on loopback).
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { request } from 'undici';
import type { Config } from '../config/schema.js';
import { isLoopbackHost } from '../config/schema.js';
import { Denial } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { keyFitsAlg, systemClock, type Clock } from './jws.js';
import type { JwsHeader, KeyResolver } from './types.js';


/**
 * No key of the issuer fits the JWS. `current`: the key set was fetched for this very lookup, so the
 * key is not the issuer's; otherwise (inside the refetch cooldown, or the refetch failed) it may be
 * a key the issuer just rotated to, which a later lookup would find. A token is refused either way;
 * a lifecycle SET, whose lookup always refetches (`refetchAfterMs`), is left for redelivery when
 * the refetch failed (mission/events.ts).
 */
export class UnknownKey extends Error {
  constructor(readonly current: boolean) {
    super('no matching key');
    this.name = 'UnknownKey';
  }
}

export interface TrustedIssuer {
  readonly issuer: string;
  readonly jwks_uri?: string | undefined;
  readonly algorithms: readonly string[];
  /** Among `extraIssuers`: `ready()` waits for this one's keys too (an ID-JAG issuer). */
  readonly required?: boolean;
}

export interface IssuerKeysOptions {
  /** Access-token issuers: `ready()` waits for these. */
  readonly issuers: Config['issuers'];
  /** Other trusted issuers (Mission authorities, ID-JAG issuers): resolvable; needed for readiness when `required`. */
  readonly extraIssuers?: readonly TrustedIssuer[];
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly fetchTimeoutMs?: number;
  /** Minimum time between two fetches of one issuer's keys triggered by an unknown `kid`. */
  readonly cooldownMs?: number;
  /** Background refresh period; 0 disables. */
  readonly refreshIntervalMs?: number;
  readonly maxResponseBytes?: number;
  readonly clock?: Clock;
}

interface StoredKey {
  readonly kid: string | undefined;
  readonly alg: string | undefined;
  readonly key: KeyObject;
}

interface IssuerState {
  readonly spec: TrustedIssuer;
  readonly algorithms: ReadonlySet<string>;
  readonly neededForReady: boolean;
  keys: readonly StoredKey[];
  /** Several keys may share a `kid` (e.g. one EC and one RSA key): all are candidates. */
  byKid: Map<string, StoredKey[]>;
  current: Set<KeyObject>;
  loaded: boolean;
  /** Outcome of the most recent fetch: false while the issuer is unreachable. */
  lastOk: boolean;
  lastAttempt: number;
  inflight: Promise<void> | null;
  generation: number;
  metadata: Readonly<Record<string, unknown>> | null;
  /** When `metadata` was fetched, and when discovery was last tried (clock ms). */
  metadataAt: number;
  metadataTriedAt: number;
  metadataInflight: Promise<Readonly<Record<string, unknown>>> | null;
  /** Pending retry while the keys never loaded (unref'd). */
  retryTimer: NodeJS.Timeout | null;
  /** Next retry delay; reset once the keys load. */
  retryDelayMs: number;
}

export type KeysChangedListener = (issuer: string, removed: readonly KeyObject[]) => void;

class FetchError extends Error {
  override readonly name = 'FetchError';
}

const MAX_KEYS = 100;
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 30_000;

function jwksUriOf(md: Readonly<Record<string, unknown>>): string {
  if (!isTrustedUrl(md.jwks_uri)) throw new FetchError('metadata has no usable jwks_uri');
  return md.jwks_uri;
}

function isTrustedUrl(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  try {
    const u = new URL(value);
    return u.protocol === 'https:' || (u.protocol === 'http:' && isLoopbackHost(u.hostname));
  } catch {
    return false;
  }
}

/** RFC 8414 section 3.1: the well-known segment goes between host and path. */
function rfc8414Url(issuer: string): string {
  const u = new URL(issuer);
  const path = u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '');
  return `${u.origin}/.well-known/oauth-authorization-server${path}`;
}

/** OIDC Discovery 1.0 section 4: appended to the issuer. */
function oidcUrl(issuer: string): string {
  return `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
}

export class IssuerKeys implements KeyResolver {
  private readonly states = new Map<string, IssuerState>();
  private readonly listeners: KeysChangedListener[] = [];
  private readonly fetchTimeoutMs: number;
  private readonly cooldownMs: number;
  private readonly retryMaxMs: number;
  /** Discovered metadata older than this is read again. */
  private readonly metadataMaxAgeMs: number;
  private readonly maxResponseBytes: number;
  private readonly clock: Clock;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly timer: NodeJS.Timeout | null;
  private closed = false;

  constructor(opts: IssuerKeysOptions) {
    this.fetchTimeoutMs = opts.fetchTimeoutMs ?? 5000;
    this.cooldownMs = opts.cooldownMs ?? 30_000;
    // A never-loaded issuer is retried no more often than a request could trigger a fetch, within bounds.
    this.retryMaxMs = Math.min(RETRY_MAX_MS, Math.max(RETRY_FIRST_MS, this.cooldownMs));
    this.maxResponseBytes = opts.maxResponseBytes ?? 512 * 1024;
    this.clock = opts.clock ?? systemClock;
    this.metrics = opts.metrics;
    this.logger = opts.logger;
    const add = (spec: TrustedIssuer, neededForReady: boolean): void => {
      const existing = this.states.get(spec.issuer);
      if (existing !== undefined) {
        if (neededForReady && !existing.neededForReady) this.states.set(spec.issuer, { ...existing, neededForReady: true });
        return;
      }
      this.states.set(spec.issuer, {
        spec,
        algorithms: new Set(spec.algorithms),
        neededForReady,
        keys: [],
        byKid: new Map(),
        current: new Set(),
        loaded: false,
        lastOk: true,
        lastAttempt: -Infinity,
        inflight: null,
        generation: 0,
        metadata: null,
        metadataAt: -Infinity,
        metadataTriedAt: -Infinity,
        metadataInflight: null,
        retryTimer: null,
        retryDelayMs: RETRY_FIRST_MS,
      });
    };
    for (const i of opts.issuers) add(i, true);
    for (const i of opts.extraIssuers ?? []) add(i, i.required === true);
    const every = opts.refreshIntervalMs ?? 300_000;
    this.metadataMaxAgeMs = every > 0 ? every : 300_000;
    this.timer = every > 0 ? setInterval(() => void this.refreshAll(), every) : null;
    this.timer?.unref();
  }

  /** Preloads every issuer's keys. Never throws: failures are logged and counted. */
  async start(): Promise<void> {
    await this.refreshAll();
  }

  private async refreshAll(): Promise<void> {
    await Promise.all([...this.states.values()].map((s) => this.refresh(s).catch(() => undefined)));
  }

  ready(): boolean {
    for (const s of this.states.values()) if (s.neededForReady && !s.loaded) return false;
    return true;
  }

  /**
   * Takes over the keys (and metadata) the previous IssuerKeys of a reloaded config holds for every
   * issuer configured the same way (issuer, key source, algorithms): a reload while an issuer is
   * unreachable keeps its last-good keys instead of denying every token 503 (SPEC section 5).
   */
  adopt(previous: IssuerKeys): void {
    for (const [issuer, s] of this.states) {
      const p = previous.states.get(issuer);
      if (p === undefined || !p.loaded || !sameSpec(s.spec, p.spec)) continue;
      s.keys = p.keys;
      s.byKid = p.byKid;
      s.current = p.current;
      s.loaded = true;
      s.lastOk = p.lastOk;
      s.lastAttempt = p.lastAttempt;
      s.generation = p.generation;
      s.metadata = p.metadata;
      s.metadataAt = p.metadataAt;
    }
  }

  /** True when `issuer` is trusted (configured here). */
  has(issuer: string): boolean {
    return this.states.has(issuer);
  }

  /** True while `key` is in `issuer`'s current key set (verified-token caches check this on every hit). */
  isCurrent(issuer: string, key: KeyObject): boolean {
    return this.states.get(issuer)?.current.has(key) ?? false;
  }

  /** Increases every time `issuer`'s key set changes. */
  generation(issuer: string): number {
    return this.states.get(issuer)?.generation ?? -1;
  }

  /** Called with the keys that left an issuer's set after each change. */
  onKeysChanged(listener: KeysChangedListener): void {
    this.listeners.push(listener);
  }

  resolve(issuer: string, header: JwsHeader, refetchAfterMs?: number): KeyObject | Promise<KeyObject> {
    const s = this.states.get(issuer);
    if (s === undefined) throw new Denial('token_invalid', { cause: new Error('untrusted issuer') });
    const alg = typeof header.alg === 'string' ? header.alg : '';
    // Only the issuer's configured algorithms ever get a key (RFC 8725 section 3.1).
    if (!s.algorithms.has(alg)) throw new Denial('token_invalid', { cause: new Error('alg not allowed for issuer') });
    const kid = typeof header.kid === 'string' ? header.kid : undefined;
    const hit = this.pick(s, alg, kid);
    if (hit !== null) return hit;
    return this.resolveSlow(s, alg, kid, refetchAfterMs);
  }

  private async resolveSlow(s: IssuerState, alg: string, kid: string | undefined, refetchAfterMs: number | undefined): Promise<KeyObject> {
    const age = this.clock() - s.lastAttempt;
    let due = s.inflight !== null || age >= (refetchAfterMs ?? this.cooldownMs);
    let current = false;
    if (!due && refetchAfterMs !== undefined) {
      // The key set was fetched less than refetchAfterMs ago: fetch it again once it is that old,
      // unless another lookup fetched it while this one waited (its answer is this one's too: at
      // most one fetch per interval, however late the timers of the waiting lookups fire).
      const before = s.lastAttempt;
      await new Promise((r) => setTimeout(r, refetchAfterMs - age));
      due = s.lastAttempt === before || s.inflight !== null;
      if (!due) {
        current = s.lastOk;
        const found = this.pick(s, alg, kid);
        if (found !== null) return found;
      }
    }
    if (due) {
      current = await this.refresh(s).then(
        () => true,
        () => false,
      );
      const found = this.pick(s, alg, kid);
      if (found !== null) return found;
    }
    if (!s.lastOk) {
      throw new Denial('keys_unavailable', { retryAfter: Math.max(1, Math.ceil(this.cooldownMs / 1000)), cause: new Error(`keys of ${s.spec.issuer} unavailable`) });
    }
    throw new Denial('token_invalid', { cause: new UnknownKey(current) });
  }

  /** The key for `kid` (or the only fitting key when there is no `kid`), fitting `alg`; else null. */
  private pick(s: IssuerState, alg: string, kid: string | undefined): KeyObject | null {
    const candidates = kid === undefined ? s.keys : s.byKid.get(kid);
    if (candidates === undefined) return null;
    let found: KeyObject | null = null;
    for (const k of candidates) {
      if ((k.alg === undefined || k.alg === alg) && keyFitsAlg(alg, k.key)) {
        if (found !== null) return null; // ambiguous: refuse rather than guess
        found = k.key;
      }
    }
    return found;
  }

  /**
   * The issuer's RFC 8414 / OIDC metadata. A copy older than the refresh period is returned while a
   * new one is fetched in the background; `fresh` waits for a new one. While discovery fails, the
   * last copy stands (its endpoints most likely still do); with none, the failure is thrown.
   */
  async metadata(issuer: string, fresh = false): Promise<Readonly<Record<string, unknown>>> {
    const s = this.states.get(issuer);
    if (s === undefined) throw new Error('untrusted issuer');
    const cached = s.metadata;
    if (cached !== null && !fresh) {
      // In the background, and no more often than the key cooldown while discovery fails.
      const now = this.clock();
      if (now - s.metadataAt >= this.metadataMaxAgeMs && now - s.metadataTriedAt >= this.cooldownMs) this.rediscover(s).catch(() => undefined);
      return cached;
    }
    try {
      return await this.rediscover(s);
    } catch (err) {
      if (s.metadata !== null) return s.metadata;
      throw err;
    }
  }

  /** Single flight: concurrent callers share one discovery. */
  private rediscover(s: IssuerState): Promise<Readonly<Record<string, unknown>>> {
    if (s.metadataInflight === null) {
      s.metadataTriedAt = this.clock();
      s.metadataInflight = this.discover(s.spec.issuer)
        .then((md) => {
          s.metadata = md;
          s.metadataAt = this.clock();
          return md;
        })
        .finally(() => {
          s.metadataInflight = null;
        });
    }
    return s.metadataInflight;
  }

  private async discover(issuer: string): Promise<Readonly<Record<string, unknown>>> {
    let lastErr: unknown;
    for (const url of [rfc8414Url(issuer), oidcUrl(issuer)]) {
      try {
        const md = await this.fetchJson(url);
        // RFC 8414 section 3.3 / OIDC Discovery section 4.3: the document must name this issuer.
        if (md.issuer !== issuer) throw new FetchError('metadata issuer mismatch');
        return Object.freeze(md);
      } catch (err) {
        lastErr = err;
      }
    }
    throw lastErr instanceof Error ? lastErr : new FetchError('discovery failed');
  }

  /** Single flight: concurrent callers share one fetch. */
  private refresh(s: IssuerState): Promise<void> {
    if (this.closed) return Promise.reject(new FetchError('closed'));
    if (s.inflight !== null) return s.inflight;
    s.lastAttempt = this.clock();
    const p = this.load(s).finally(() => {
      s.inflight = null;
    });
    s.inflight = p;
    return p;
  }

  private async load(s: IssuerState): Promise<void> {
    const issuer = s.spec.issuer;
    try {
      const body = s.spec.jwks_uri !== undefined ? await this.fetchJson(s.spec.jwks_uri) : await this.fetchDiscovered(s);
      const keys = this.importKeys(body, s.spec.algorithms);
      this.install(s, keys);
      s.lastOk = true;
      s.loaded = true;
      this.cancelRetry(s);
      s.retryDelayMs = RETRY_FIRST_MS;
      this.metrics.jwksRefresh.labels(issuer, 'success').inc();
    } catch (err) {
      s.lastOk = false;
      this.metrics.jwksRefresh.labels(issuer, 'failure').inc();
      this.logger.warn({ issuer, err: (err as Error).message }, 'issuer keys could not be loaded; keeping the last good keys');
      if (!s.loaded) this.scheduleRetry(s);
      throw err;
    }
  }

  /**
   * The key set named by the issuer's metadata. After a failed fetch the metadata is read again
   * first; a fetch that fails through a copy not read just now is tried once more through a new
   * one, when that names another `jwks_uri` (the issuer moved its keys).
   */
  private async fetchDiscovered(s: IssuerState): Promise<Record<string, unknown>> {
    const fresh = !s.lastOk;
    const md = await this.metadata(s.spec.issuer, fresh);
    try {
      return await this.fetchJson(jwksUriOf(md));
    } catch (err) {
      if (fresh) throw err;
      const again = await this.metadata(s.spec.issuer, true);
      if (again.jwks_uri === md.jwks_uri) throw err;
      return this.fetchJson(jwksUriOf(again));
    }
  }

  /** Loaded issuers wait for the periodic refresh; one that never loaded would otherwise stay not ready. */
  private scheduleRetry(s: IssuerState): void {
    if (this.closed || s.retryTimer !== null) return;
    const delay = s.retryDelayMs;
    s.retryDelayMs = Math.min(delay * 2, this.retryMaxMs);
    s.retryTimer = setTimeout(() => {
      s.retryTimer = null;
      // A failure schedules the next retry from load().
      this.refresh(s).catch(() => undefined);
    }, delay);
    s.retryTimer.unref();
  }

  private cancelRetry(s: IssuerState): void {
    if (s.retryTimer === null) return;
    clearTimeout(s.retryTimer);
    s.retryTimer = null;
  }

  private importKeys(body: Record<string, unknown>, algorithms: readonly string[]): StoredKey[] {
    const list = body.keys;
    if (!Array.isArray(list)) throw new FetchError('JWKS has no keys array');
    const out: StoredKey[] = [];
    let malformed = 0;
    for (const jwk of list.slice(0, MAX_KEYS)) {
      if (jwk === null || typeof jwk !== 'object' || Array.isArray(jwk) || typeof (jwk as { kty?: unknown }).kty !== 'string') {
        malformed++;
        continue;
      }
      const j = jwk as Record<string, unknown>;
      if (j.use !== undefined && j.use !== 'sig') continue;
      if (j.kty !== 'EC' && j.kty !== 'RSA' && j.kty !== 'OKP') continue; // never `oct`
      if (j.d !== undefined) continue; // a private key published by mistake is not used
      if (Array.isArray(j.key_ops) && !j.key_ops.includes('verify')) continue;
      const alg = typeof j.alg === 'string' ? j.alg : undefined;
      if (alg !== undefined && !algorithms.includes(alg)) continue;
      let key: KeyObject;
      try {
        const { kty, crv, x, y, n, e } = j;
        key = createPublicKey({ key: { kty, crv, x, y, n, e } as never, format: 'jwk' });
      } catch {
        malformed++;
        continue;
      }
      if (!algorithms.some((a) => keyFitsAlg(a, key))) continue;
      out.push({ kid: typeof j.kid === 'string' ? j.kid : undefined, alg, key });
    }
    // A set of broken entries is a broken answer, not the issuer withdrawing its keys: the last good
    // ones stay. Keys it publishes for other uses or algorithms are its own choice: an empty set.
    if (out.length === 0 && malformed > 0) throw new FetchError('JWKS has no well-formed key');
    return out;
  }

  /** Replaces the key set; reuses existing KeyObjects for unchanged keys so caches stay valid. */
  private install(s: IssuerState, fresh: StoredKey[]): void {
    const previous = s.keys;
    const merged = fresh.map((k) => {
      const same = previous.find((p) => p.kid === k.kid && p.alg === k.alg && p.key.equals(k.key));
      return same ?? k;
    });
    const current = new Set(merged.map((k) => k.key));
    const removed = previous.filter((p) => !current.has(p.key)).map((p) => p.key);
    const added = merged.some((k) => !s.current.has(k.key));
    s.keys = merged;
    const byKid = new Map<string, StoredKey[]>();
    for (const k of merged) {
      if (k.kid === undefined) continue;
      const list = byKid.get(k.kid);
      if (list === undefined) byKid.set(k.kid, [k]);
      else list.push(k);
    }
    s.byKid = byKid;
    s.current = current;
    if (removed.length > 0 || added) {
      s.generation++;
      for (const l of this.listeners) {
        try {
          l(s.spec.issuer, removed);
        } catch (err) {
          this.logger.error({ err }, 'keys-changed listener failed');
        }
      }
    }
  }

  private async fetchJson(url: string): Promise<Record<string, unknown>> {
    if (!isTrustedUrl(url)) throw new FetchError('untrusted URL');
    const signal = AbortSignal.timeout(this.fetchTimeoutMs);
    const res = await request(url, {
      method: 'GET',
      headers: { accept: 'application/json, application/jwk-set+json' },
      headersTimeout: this.fetchTimeoutMs,
      bodyTimeout: this.fetchTimeoutMs,
      signal,
    });
    if (res.statusCode !== 200) {
      res.body.resume();
      throw new FetchError(`HTTP ${res.statusCode}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += (chunk as Buffer).length;
      if (size > this.maxResponseBytes) {
        res.body.destroy();
        throw new FetchError('response too large');
      }
      chunks.push(chunk as Buffer);
    }
    let value: unknown;
    try {
      value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      throw new FetchError('response is not JSON');
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new FetchError('response is not a JSON object');
    return value as Record<string, unknown>;
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    for (const s of this.states.values()) this.cancelRetry(s);
  }
}

function sameSpec(a: TrustedIssuer, b: TrustedIssuer): boolean {
  return a.issuer === b.issuer && a.jwks_uri === b.jwks_uri && a.algorithms.length === b.algorithms.length && a.algorithms.every((x, i) => x === b.algorithms[i]);
}
