/**
 * The Mission Status client (draft-mcguinness-oauth-mission-status; SPEC section 3).
 *
 * One query: discover the endpoint (config, else the issuer's RFC 8414 `mission_status_endpoint`),
 * POST `mission_id` (or AAuth `mission_s256`), `audience`, a fresh `nonce`, and a `private_key_jwt`
 * client assertion whose `aud` is the endpoint URL; verify the signed
 * `application/mission-status-response+jwt` fully. Seed 002's unsigned JSON shape is accepted only
 * from an authority configured with `accept_json_status`.
 *
 * Every failure (unreachable, slower than `mission.status_timeout_s`, 429/503, a response that fails
 * any check) is a `StatusUnavailable`: the caller treats the authority as unreachable and fails
 * closed. 404 is an answer, not a failure: the Mission is unknown (state 'unknown').
 */
import { randomBytes } from 'node:crypto';
import { jwtVerify, type JWTPayload } from 'jose';
import { Agent, request } from 'undici';
import { isLoopbackHost, type Config } from '../config/schema.js';
import type { KeyResolver } from '../auth/types.js';
import { mediaTypeOf } from '../http/headers.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { AuthorityEntry, MissionReference } from '../pipeline/context.js';
import { CLIENT_ASSERTION_TYPE, clientAssertion, loadClientKey, type ClientKey } from './client-key.js';
import { parseRfc3339 } from '../rfc3339.js';
import { isObject, wholeMs } from '../values.js';

export const STATUS_JWT_TYPE = 'mission-status-response+jwt';
const STATUS_CONTENT_TYPE = `application/${STATUS_JWT_TYPE}`;
/** Status responses are small; an authority that sends more is misbehaving. */
export const MAX_STATUS_BYTES = 256 * 1024;
/** `iat`/`exp` tolerance (draft: ±30 s). */
const CLOCK_SKEW_S = 30;
/** Cap on an authority's Retry-After, so a bad header cannot lock a Mission out for long. */
const MAX_RETRY_AFTER_S = 300;
const DEFAULT_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512'];

/** What one Status answer establishes. Times are Unix seconds. */
export interface StatusResult {
  readonly state: string;
  readonly version: number | null;
  /** The governance Mission id (for an AAuth reference: the one the authority maps it to). */
  readonly id: string | null;
  readonly issuer: string;
  readonly authorityHash: string | null;
  readonly authority: readonly AuthorityEntry[] | null;
  readonly expiresAt: number | null;
  readonly suspendUntil: number | null;
  readonly subject: string | null;
  /** `mission.subject.iss`: the issuer `subject` is a subject of, when the authority says. */
  readonly subjectIssuer: string | null;
  readonly clientId: string | null;
  /** `mission.fresh_until`: hard stop for caching; null when not given. */
  readonly freshUntil: number | null;
  /** The issuer's advertised `mission_max_stale_seconds`, when known. */
  readonly maxStaleSeconds: number | null;
}

/** The authority could not give a verified answer. `outcome` is the metrics label. */
export class StatusUnavailable extends Error {
  readonly outcome: string;
  readonly retryAfter: number | undefined;
  constructor(outcome: string, message: string, retryAfter?: number, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'StatusUnavailable';
    this.outcome = outcome;
    this.retryAfter = retryAfter;
  }
}

interface AuthorityPlan {
  readonly statusEndpoint: string | null;
  readonly acceptJson: boolean;
  readonly algorithms: readonly string[];
}

export interface StatusClientDeps {
  readonly config: Config;
  readonly keys: KeyResolver;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly now: () => number;
}

/** A trusted URL for an endpoint learned from metadata: https, or http on a loopback host. */
function trustedEndpoint(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  try {
    const u = new URL(value);
    if (u.protocol === 'https:' || (u.protocol === 'http:' && isLoopbackHost(u.hostname))) return u.hash === '' ? value : null;
  } catch {
    // fall through
  }
  return null;
}

/** RFC 3339 timestamp (or NumericDate) to Unix seconds; null when absent, NaN when invalid. */
export function timeOf(value: unknown): number | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'number') return Number.isFinite(value) ? value : NaN;
  const ms = parseRfc3339(value);
  return ms === null ? NaN : ms / 1000;
}

/** RFC 9110 Retry-After: delay-seconds or an HTTP-date. */
export function parseRetryAfter(value: string | string[] | undefined, nowMs: number): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return undefined;
  let s: number;
  if (/^\d+$/.test(v.trim())) s = Number(v.trim());
  else {
    const at = Date.parse(v);
    if (Number.isNaN(at)) return undefined;
    s = Math.ceil((at - nowMs) / 1000);
  }
  return Math.min(MAX_RETRY_AFTER_S, Math.max(1, s));
}


function authorityEntries(value: unknown): readonly AuthorityEntry[] | null | 'invalid' {
  if (value === undefined) return null;
  if (!Array.isArray(value)) return 'invalid';
  for (const e of value) {
    if (!isObject(e) || typeof e['type'] !== 'string') return 'invalid';
    if (e['type'] === 'mission_resource_access' && (typeof e['resource'] !== 'string' || !Array.isArray(e['actions']) || !e['actions'].every((a) => typeof a === 'string'))) return 'invalid';
  }
  return Object.freeze(value as AuthorityEntry[]);
}

/** Seed 002's `authority` array: `{substrate, type, authority: {...}}` to draft entries. */
function seedAuthority(value: unknown): readonly AuthorityEntry[] | null | 'invalid' {
  if (value === undefined) return null;
  if (!Array.isArray(value)) return 'invalid';
  const out: AuthorityEntry[] = [];
  for (const item of value) {
    if (!isObject(item) || !isObject(item['authority'])) return 'invalid';
    const inner = item['authority'];
    if (Array.isArray(inner['actions'])) {
      out.push({ ...inner, type: typeof inner['type'] === 'string' ? inner['type'] : String(item['type']) } as AuthorityEntry);
    } else if (Array.isArray(inner['scope']) && typeof inner['resource'] === 'string') {
      // AAuth scopes become actions on that resource (exposure narrows, never widens).
      out.push({ type: 'mission_resource_access', resource: inner['resource'], actions: inner['scope'].filter((s): s is string => typeof s === 'string') });
    }
  }
  return authorityEntries(out);
}

function invalid(message: string): StatusUnavailable {
  return new StatusUnavailable('invalid_response', message);
}

/** Reads the `mission` object common to both shapes; throws StatusUnavailable on any mismatch. */
function readMission(ref: MissionReference, m: unknown, shape: 'jwt' | 'json'): Omit<StatusResult, 'authority' | 'maxStaleSeconds'> {
  if (!isObject(m)) throw invalid('response carries no mission object');
  if (ref.id !== null) {
    if (m['id'] !== ref.id) throw invalid('response names another Mission');
  } else if (shape === 'jwt' || m['s256'] !== undefined || m['approver'] !== undefined) {
    if (m['approver'] !== ref.issuer || m['s256'] !== ref.s256) throw invalid('response names another AAuth Mission');
  }
  // An authority answers for its own Missions only, an AAuth approver too: one naming another
  // issuer's would have its Mission's holds cut and its identity sent upstream (r19d 2).
  const named = m['issuer'] ?? m['origin'];
  if (named !== undefined && named !== ref.issuer) throw invalid('response names another Mission issuer');
  const state = m['state'];
  if (typeof state !== 'string' || state === '') throw invalid('response carries no state');
  const version = m['version'];
  if (version !== undefined && !(Number.isSafeInteger(version) && (version as number) >= 1)) throw invalid('response version is not a positive integer');
  if (shape === 'jwt' && version === undefined) throw invalid('response carries no version');
  const expiresAt = timeOf(m['expires_at'] ?? m['expiry']);
  const suspendUntil = timeOf(m['suspend_until']);
  const freshUntil = timeOf(m['fresh_until']);
  if (Number.isNaN(expiresAt) || Number.isNaN(suspendUntil) || Number.isNaN(freshUntil)) throw invalid('response carries an invalid timestamp');
  const hash = m['authority_hash'];
  const who = isObject(m['subject']) ? m['subject'] : null;
  const subject = who !== null && typeof who['sub'] === 'string' ? who['sub'] : null;
  const subjectIssuer = who !== null && typeof who['iss'] === 'string' ? who['iss'] : null;
  const clientId = typeof m['client_id'] === 'string' ? m['client_id'] : null;
  const id = typeof m['id'] === 'string' ? m['id'] : ref.id;
  return {
    state,
    version: (version as number | undefined) ?? null,
    id,
    issuer: ref.issuer,
    authorityHash: typeof hash === 'string' ? hash : null,
    expiresAt,
    suspendUntil,
    subject,
    subjectIssuer,
    clientId,
    freshUntil,
  };
}

async function readBody(body: AsyncIterable<Buffer>, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) throw new StatusUnavailable('invalid_response', 'response too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Connections to one Mission authority's Status endpoint (per gateway process). */
export const MAX_STATUS_CONNECTIONS = 32;

/** Rejects with StatusUnavailable('timeout') when `signal` aborts first. */
function bounded<T>(work: T | Promise<T>, signal: AbortSignal): Promise<T> {
  if (!(work instanceof Promise)) return Promise.resolve(work);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new StatusUnavailable('timeout', 'the authority did not answer in time'));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

export class MissionStatusClient {
  private readonly keys: KeyResolver;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly clientKey: ClientKey | null;
  private readonly clientId: string | null;
  private readonly plans = new Map<string, AuthorityPlan>();
  private readonly timeoutMs: number;
  private readonly dispatcher: Agent;

  constructor(deps: StatusClientDeps) {
    this.keys = deps.keys;
    this.metrics = deps.metrics;
    this.logger = deps.logger;
    this.now = deps.now;
    const client = deps.config.mission.client;
    this.clientKey = client === undefined ? null : loadClientKey(client.private_key_file);
    this.clientId = client?.client_id ?? null;
    // No client: `check` and start warn when a route needs Mission state (cli.ts), not here, where a
    // config of public routes only would be warned too.
    this.timeoutMs = wholeMs(deps.config.mission.status_timeout_s);
    // At most MAX_STATUS_CONNECTIONS queries in flight per authority; the rest wait their turn
    // within status_timeout_s (then 503 state_unavailable). Each distinct Mission is its own query:
    // clients naming a new Mission-Reference on every request (MAS mode) would otherwise open a
    // connection each at the authority (r14c 3: 953 at once from 1,000 requests).
    this.dispatcher = new Agent({ connections: MAX_STATUS_CONNECTIONS, connect: { timeout: this.timeoutMs }, headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs });

    const algs = new Map(deps.config.issuers.map((i) => [i.issuer, i.algorithms as readonly string[]]));
    for (const a of deps.config.mission.authorities) {
      this.plans.set(a.issuer, { statusEndpoint: a.status_endpoint ?? null, acceptJson: a.accept_json_status, algorithms: algs.get(a.issuer) ?? DEFAULT_ALGORITHMS });
    }
    for (const [issuer, algorithms] of algs) {
      if (!this.plans.has(issuer)) this.plans.set(issuer, { statusEndpoint: null, acceptJson: false, algorithms });
    }
  }

  private plan(issuer: string): AuthorityPlan {
    return this.plans.get(issuer) ?? { statusEndpoint: null, acceptJson: false, algorithms: DEFAULT_ALGORITHMS };
  }

  /** One Status query. Resolves with the verified answer or rejects with StatusUnavailable. */
  async query(ref: MissionReference, audience: string): Promise<StatusResult> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    try {
      const { result, outcome } = await this.queryWithin(ref, audience, controller.signal);
      this.metrics.missionStatusRequests.labels(outcome).inc();
      return result;
    } catch (err) {
      const failure =
        err instanceof StatusUnavailable ? err : controller.signal.aborted ? new StatusUnavailable('timeout', 'the authority did not answer in time', undefined, err) : new StatusUnavailable('error', 'the authority could not be queried', undefined, err);
      this.metrics.missionStatusRequests.labels(failure.outcome).inc();
      this.logger.warn({ issuer: ref.issuer, outcome: failure.outcome, reason: failure.message, cause: failure.cause instanceof Error ? failure.cause.message : undefined }, 'mission status unavailable');
      throw failure;
    } finally {
      clearTimeout(timer);
    }
  }

  private async queryWithin(ref: MissionReference, audience: string, signal: AbortSignal): Promise<{ result: StatusResult; outcome: 'ok' | 'not_found' }> {
    if (this.clientKey === null || this.clientId === null) throw new StatusUnavailable('not_configured', 'no Mission Status client is configured');
    const plan = this.plan(ref.issuer);
    let endpoint = plan.statusEndpoint;
    let maxStale: number | null = null;
    if (endpoint === null) {
      const meta = await bounded(this.keys.metadata(ref.issuer), signal);
      endpoint = trustedEndpoint(meta['mission_status_endpoint']);
      if (endpoint === null) throw new StatusUnavailable('no_endpoint', 'the issuer advertises no usable mission_status_endpoint');
      const advertised = meta['mission_max_stale_seconds'];
      if (typeof advertised === 'number' && Number.isFinite(advertised) && advertised >= 0) maxStale = advertised;
    }

    const nonce = randomBytes(16).toString('base64url');
    const form = new URLSearchParams();
    if (ref.id !== null) form.set('mission_id', ref.id);
    else form.set('mission_s256', ref.s256 ?? '');
    form.set('audience', audience);
    form.set('nonce', nonce);
    form.set('client_assertion_type', CLIENT_ASSERTION_TYPE);
    form.set('client_assertion', await clientAssertion(this.clientKey, this.clientId, endpoint, this.now()));

    const res = await request(endpoint, {
      method: 'POST',
      body: form.toString(),
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        accept: plan.acceptJson ? `${STATUS_CONTENT_TYPE}, application/json;q=0.5` : STATUS_CONTENT_TYPE,
      },
      signal,
      dispatcher: this.dispatcher,
    });
    const text = await readBody(res.body, MAX_STATUS_BYTES);
    const type = mediaTypeOf(res.headers['content-type']);

    if (res.statusCode === 404) {
      // Anti-oracle: unknown and not-visible look the same; both deny as 'unknown'.
      this.checkErrorNonce(text, nonce);
      const result: StatusResult = { state: 'unknown', version: null, id: ref.id, issuer: ref.issuer, authorityHash: null, authority: null, expiresAt: null, suspendUntil: null, subject: null, subjectIssuer: null, clientId: null, freshUntil: null, maxStaleSeconds: maxStale };
      return { result, outcome: 'not_found' };
    }
    if (res.statusCode === 429 || res.statusCode === 503) {
      const retryAfter = parseRetryAfter(res.headers['retry-after'], this.now()) ?? this.retryAfterFromBody(text);
      throw new StatusUnavailable(res.statusCode === 429 ? 'rate_limited' : 'unavailable', `the authority answered ${res.statusCode}`, retryAfter);
    }
    if (res.statusCode !== 200) throw new StatusUnavailable('http_error', `the authority answered ${res.statusCode}`);

    // Key resolution may fetch the issuer's JWKS: it counts against the same time budget.
    if (type === STATUS_CONTENT_TYPE) return { result: await bounded(this.verifyJwt(text.trim(), ref, audience, nonce, plan, maxStale), signal), outcome: 'ok' };
    if (type === 'application/json' && plan.acceptJson) return { result: this.readJson(text, ref, nonce, maxStale), outcome: 'ok' };
    throw invalid('unexpected response content type');
  }

  private retryAfterFromBody(text: string): number | undefined {
    try {
      const body = JSON.parse(text) as unknown;
      if (isObject(body) && typeof body['retry_after'] === 'number') return parseRetryAfter(String(Math.ceil(body['retry_after'])), this.now());
    } catch {
      // no body hint
    }
    return undefined;
  }

  private checkErrorNonce(text: string, nonce: string): void {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return;
    }
    if (isObject(body) && body['nonce'] !== undefined && body['nonce'] !== nonce) throw invalid('404 answer echoes another nonce');
  }

  private async verifyJwt(jwt: string, ref: MissionReference, audience: string, nonce: string, plan: AuthorityPlan, maxStale: number | null): Promise<StatusResult> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(jwt, (header) => this.keys.resolve(ref.issuer, header), {
        typ: STATUS_JWT_TYPE,
        algorithms: [...plan.algorithms],
        issuer: ref.issuer,
        audience,
        subject: this.clientId ?? '',
        clockTolerance: CLOCK_SKEW_S,
        currentDate: new Date(this.now()),
        requiredClaims: ['iat', 'exp', 'nonce'],
      }));
    } catch (err) {
      throw new StatusUnavailable('invalid_response', 'the Status response failed verification', undefined, err);
    }
    if (payload['nonce'] !== nonce) throw invalid('the Status response nonce does not match');
    // An answer to this query: issued now, give or take the skew (the draft's iat ±30 s; jose's
    // maxTokenAge would add its clockTolerance on top, r20d 5).
    const age = this.now() / 1000 - (payload.iat ?? 0);
    if (age < -CLOCK_SKEW_S) throw invalid('the Status response is issued in the future');
    if (age > CLOCK_SKEW_S) throw invalid('the Status response was issued more than 30 s ago');
    const authority = authorityEntries(payload['authorization_details']);
    if (authority === 'invalid') throw invalid('the Status response authorization_details are malformed');
    return { ...readMission(ref, payload['mission'], 'jwt'), authority, maxStaleSeconds: maxStale };
  }

  /** Seed 002's shape (opt-in): `{active, mission: {id, origin, state, expiry, …}, authority: […]}`. */
  private readJson(text: string, ref: MissionReference, nonce: string, maxStale: number | null): StatusResult {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw invalid('the JSON Status response does not parse');
    }
    if (!isObject(body)) throw invalid('the JSON Status response is not an object');
    if (body['nonce'] !== undefined && body['nonce'] !== nonce) throw invalid('the JSON Status response nonce does not match');
    const mission = readMission(ref, body['mission'], 'json');
    const authority = body['authorization_details'] !== undefined ? authorityEntries(body['authorization_details']) : seedAuthority(body['authority']);
    if (authority === 'invalid') throw invalid('the JSON Status response authority is malformed');
    // `active` and `state` must agree; a contradiction is a state this gateway does not know.
    const state = typeof body['active'] === 'boolean' && body['active'] === (mission.state === 'active') ? mission.state : 'unknown';
    return { ...mission, state, authority, maxStaleSeconds: maxStale };
  }

  /** Idempotent. */
  async close(): Promise<void> {
    if (this.dispatcher.closed || this.dispatcher.destroyed) return;
    await this.dispatcher.close();
  }
}
