/**
 * The request pipeline, top to bottom (SPEC section 1):
 *
 *   route → credentials → token → dpop → mission_reference → mission_state
 *         → parameters → authority → evidence → forward | deny
 *
 * Each stage reads the shared RequestContext and either adds its result or throws a Denial. The
 * order matters where commented. MCP and the ID-JAG guard share the authentication stages and then
 * hand the request to their own handler.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { overridesMethod } from '../authority/params.js';
import { findRoute, type CompiledRoute } from '../config/compile.js';
import { Denial, isDenial } from '../errors.js';
import { RESERVED_MEMBERS, type RecordLayout } from '../evidence/format.js';
import type { EvidenceMission, EvidenceRecord, EvidenceSink } from '../evidence/record.js';
import { hasBody, hasSmallBody, readBody } from '../http/body.js';
import type { ForwardOutcome, LastWords, Upstream } from '../http/forward.js';
import { hostRequired, setHeader, soleField, TWO_FIELDS, upstreamHeaders, type HeaderPolicy } from '../http/headers.js';
import { normalizeTarget, pathSegments, PathError, validHost } from '../http/path.js';
import type { MissionHolds, Review, Ticket } from '../mission/holds.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { newRequestContext, type MissionView, type RequestContext, type Stage, type StageName } from './context.js';
import { writeDenial, type Challenges } from './respond.js';

/** The stages a deployment plugs in (built once per config by gateway.ts). */
export interface Stages {
  readonly credentials: Stage;
  readonly token: Stage;
  readonly dpop: Stage;
  readonly missionReference: Stage;
  readonly missionState: Stage;
  readonly parameters: Stage;
  readonly authority: Stage;
}

/** MCP and ID-JAG take over after authentication; they forward or answer themselves. */
export interface Handler {
  handle(ctx: RequestContext, pipeline: Pipeline): Promise<void>;
}

export interface PipelineDeps {
  readonly resource: string;
  readonly routes: readonly CompiledRoute[];
  readonly stages: Stages;
  /** How a held exchange's request is decided again when its Mission's authority changes (holds.ts). */
  readonly reviewer: (ctx: RequestContext) => Review;
  readonly upstream: Upstream;
  readonly evidence: EvidenceSink;
  /** Where responses and tunnels a Mission authorized are held while they flow (cut when it ends). */
  readonly holds: MissionHolds | null;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly maxBodyBytes: number;
  readonly challenges: Challenges;
  /**
   * `strip`: what every route and the MCP path forward (credentials and Mission references removed,
   * SPEC section 6, `auth: none` routes included); `passCredentials`: the ID-JAG guard's token
   * endpoint, whose AS authenticates the client itself (SPEC section 8).
   */
  readonly headers: { readonly strip: HeaderPolicy; readonly passCredentials: HeaderPolicy };
  readonly mcp: { readonly path: string; readonly resource: string; readonly challenges: Challenges; readonly handler: Handler } | null;
  readonly idJag: { readonly path: string; readonly handler: Handler } | null;
  /** `mission.events.push_path`: answered before the pipeline when asked for as written (gateway.ts). */
  readonly pushPath: string;
  /** `token.clock_skew_s`: a token's `exp` is checked again with it once a read body is in. */
  readonly tokenSkewS: number;
}

const HEADER_SAFE = /^[\x20-\x7e]*$/;
const LONE_SURROGATE = /\p{Cs}/u;

/** An X-Mission-* value: printable ASCII as is, anything else percent-encoded (SPEC section 6). */
export function headerSafe(v: string): string {
  if (HEADER_SAFE.test(v)) return v;
  // encodeURIComponent throws on a lone surrogate: a value with one cannot be named to the upstream.
  if (LONE_SURROGATE.test(v)) throw new Denial('request_malformed', { description: 'an identity value is not well-formed Unicode' });
  return encodeURIComponent(v);
}

// decision ids: a random per-process prefix and a counter (unique, cheap; not a secret).
const ID_PREFIX = 'dec_' + randomBytes(9).toString('base64url');
let idCounter = 0;

function newId(): string {
  idCounter = (idCounter + 1) % Number.MAX_SAFE_INTEGER;
  return ID_PREFIX + idCounter.toString(36);
}

// `evaluated_at`: one ISO string per millisecond, shared by the records decided within it, built
// from the second's text (Date#toISOString formats through printf: once a second, not a millisecond).
let isoMs = -1;
let isoText = '';
let isoSecond = -1;
let isoPrefix = ''; // "2026-11-27T02:33:23."

/** `evaluated_at` for now: Date#toISOString of this millisecond. */
export function isoNow(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoMs = ms;
    const second = Math.floor(ms / 1000);
    if (second !== isoSecond) {
      isoSecond = second;
      isoPrefix = new Date(second * 1000).toISOString().slice(0, -4); // without "000Z"
    }
    const milli = ms - second * 1000;
    isoText = isoPrefix + (milli < 10 ? '00' : milli < 100 ? '0' : '') + String(milli) + 'Z';
  }
  return isoText;
}

/** `first`, fetched for this request, again when a re-read found only the cached copy of it. */
function keepFresh(ctx: RequestContext, first: MissionView): void {
  const now = ctx.mission;
  if (now !== null && now.source === 'cached' && now.version === first.version && now.state === first.state && now.authorityHash === first.authorityHash) ctx.mission = first;
}

export class Pipeline {
  private readonly authentication: readonly (readonly [StageName, Stage])[];
  private readonly authorization: readonly (readonly [StageName, Stage])[];
  /** The segments of the gateway's own endpoints (SET receiver, MCP, ID-JAG token path). */
  private readonly ownEndpoints: readonly (readonly string[])[];

  constructor(readonly deps: PipelineDeps) {
    const s = deps.stages;
    this.ownEndpoints = [deps.pushPath, deps.mcp?.path, deps.idJag?.path].filter((p): p is string => p !== undefined).map((p) => pathSegments(p.toLowerCase()));
    this.authentication = [
      ['credentials', s.credentials],
      ['token', s.token],
      // DPoP before the Mission lookup, so a stolen token costs no round-trip to the authority.
      ['dpop', s.dpop],
      ['mission_reference', s.missionReference],
      ['mission_state', s.missionState],
    ];
    this.authorization = [
      ['parameters', s.parameters],
      ['authority', s.authority],
    ];
  }

  /**
   * Entry point for every proxied request. Never throws. Runs synchronously as far as it can: a
   * request whose stages all answer from memory allocates no promise until the upstream answers.
   */
  handle(req: IncomingMessage, res: ServerResponse): void {
    const ctx = this.context(req, res);
    if (ctx === null) return;
    let pending: void | Promise<void>;
    try {
      pending = this.dispatch(ctx);
    } catch (err) {
      this.deny(ctx, err);
      return;
    }
    if (pending !== undefined) pending.catch((err: unknown) => this.deny(ctx, err));
  }

  /** Builds the context, or answers 400 itself when the request target cannot be normalized. */
  context(req: IncomingMessage, res: ServerResponse): RequestContext | null {
    const started = performance.now();
    const id = newId();
    let path = '/';
    let search = '';
    let bad: PathError | null = null;
    try {
      ({ path, search } = normalizeTarget(req.url ?? ''));
    } catch (err) {
      bad = err as PathError;
      // The record keeps what was asked for (printable ASCII, the rest percent-encoded), not "/".
      path = attemptedTarget(req.url ?? '');
    }
    const ctx = newRequestContext({ id, started, req, res, method: req.method ?? 'GET', path, search, clientIp: req.socket.remoteAddress ?? '', audience: this.deps.resource });
    // Two Host headers is request smuggling bait; none is malformed from HTTP/1.1 on (RFC 9112
    // section 3.2). Checked here rather than by Node's requireHostHeader, so the denial has the
    // SPEC body, a Mission-Decision and an evidence record like any other.
    if (bad === null) {
      const host = soleField(req.rawHeaders, 'host');
      if (host === TWO_FIELDS) bad = new PathError('duplicate Host header');
      else if (host === null ? hostRequired(req) : !validHost(host)) bad = new PathError(host === null ? 'missing Host header' : 'invalid Host header');
      // Node's parser takes HTTP/2.0 (and 1.2) on a request line and would have it proxied as 1.1.
      else if (req.httpVersionMajor !== 1 || req.httpVersionMinor > 1) bad = new PathError(`HTTP/${req.httpVersion} is not supported`);
      // A transfer coding other than chunked would reach the upstream still applied to the body,
      // with nothing saying so (RFC 9112 section 6.1: a server that does not understand it refuses).
      else if (hasForeignCoding(req.rawHeaders)) bad = new PathError('a transfer coding other than chunked');
    }
    if (bad !== null) {
      this.deny(ctx, new Denial('request_malformed', { description: 'the request line or headers are not acceptable', cause: bad }));
      return null;
    }
    // Decided as the method sent, run as the one named (r19e 5): refused, like the override headers are dropped.
    if (overridesMethod(search)) {
      this.deny(ctx, new Denial('request_malformed', { description: 'a method override in the query (_method) is not accepted: send the method itself' }));
      return null;
    }
    return ctx;
  }

  /** route → (authenticate → body → authorize) → forward; a promise only when a step waits. */
  private dispatch(ctx: RequestContext): void | Promise<void> {
    const d = this.deps;
    // Fail closed before any work when decision evidence cannot be written.
    if (!d.evidence.healthy()) throw new Denial('evidence_unavailable');

    // route: which resource, and which rule, this request is for.
    if (d.idJag !== null && ctx.path === d.idJag.path) {
      ctx.kind = 'id_jag';
      return d.idJag.handler.handle(ctx, this);
    }
    if (d.mcp !== null && ctx.path === d.mcp.path) {
      ctx.kind = 'mcp';
      ctx.audience = d.mcp.resource;
      const mcp = d.mcp.handler;
      return then(this.authenticate(ctx), () => mcp.handle(ctx, this));
    }
    const route = this.route(ctx);
    if (route.auth === 'none') return this.sendBody(ctx);
    return then(this.authenticate(ctx), () => this.readAndAuthorize(ctx, route));
  }

  private readAndAuthorize(ctx: RequestContext, route: CompiledRoute): void | Promise<void> {
    if (route.readsBody && hasBody(ctx.req)) {
      return readBody(ctx.req, this.deps.maxBodyBytes).then((body) => {
        ctx.body = body;
        return then(this.recheckMission(ctx), () => then(this.authorize(ctx), () => this.send(ctx, this.deps.headers.strip, body, true)));
      });
    }
    return then(this.authorize(ctx), () => this.sendBody(ctx));
  }

  /**
   * Forwards with the request's body as it comes: a small declared body (Content-Length up to
   * SMALL_BODY_BYTES) is read first and sent in one write; any other streams through. Streaming a
   * small body costs more than it saves: undici's stream path ties each request's objects to the
   * upstream socket, and under a steady flow of 1 KiB POSTs nearly all of them then survive each
   * scavenge and are promoted (~2.3 MB per scavenge, 8-10 ms pauses against ~2 ms buffered;
   * docs/benchmarks-notes.md, session 7).
   */
  private sendBody(ctx: RequestContext): void | Promise<void> {
    const policy = this.deps.headers.strip;
    if (hasSmallBody(ctx.req, this.deps.maxBodyBytes)) {
      return readBody(ctx.req, this.deps.maxBodyBytes).then((body) => then(this.recheckMission(ctx), () => this.send(ctx, policy, body, true)));
    }
    this.send(ctx, policy, 'stream', true);
  }

  /** The first route that matches (SPEC section 4), set on the context; no_route when none does. */
  private route(ctx: RequestContext): CompiledRoute {
    const segments = pathSegments(ctx.path);
    // Another spelling of one of the gateway's own endpoints (`//push`, `/mcp/`, `/mcp/.`, `/%6dcp/`:
    // the same segments, which routes match and an upstream may read as the same path) is never a
    // route's: it would reach the MCP server past the gate, or the AS past the guard (r21k 1, 2).
    if (this.isOwnEndpoint(segments)) throw new Denial('no_route', { description: "another spelling of one of the gateway's own endpoints; use the path as configured" });
    const route = findRoute(this.deps.routes, ctx.method, segments);
    if (route === null) throw new Denial('no_route');
    ctx.route = route;
    ctx.action = route.action;
    return route;
  }

  private isOwnEndpoint(segments: readonly string[]): boolean {
    for (const own of this.ownEndpoints) {
      if (own.length !== segments.length) continue;
      let i = 0;
      // In any case: Express and Spring match paths ignoring case by default (r21f 1).
      while (i < own.length && own[i] === segments[i]!.toLowerCase()) i++;
      if (i === own.length) return true;
    }
    return false;
  }

  /**
   * The same decision for a WebSocket upgrade (no body is read): resolves when admitted, or throws a
   * Denial. The tunnel's headers follow the same policy as any route (`headers.strip`).
   */
  async admit(ctx: RequestContext): Promise<void> {
    const d = this.deps;
    if (!d.evidence.healthy()) throw new Denial('evidence_unavailable');
    // The MCP endpoint and the token endpoint the ID-JAG guard fronts are never the routes' to
    // decide (as in dispatch), and neither speaks WebSocket: a route matching them (a catch-all)
    // would tunnel past the MCP gate or the guard (r19f 1).
    if ((d.mcp !== null && ctx.path === d.mcp.path) || (d.idJag !== null && ctx.path === d.idJag.path)) {
      throw new Denial('no_route', { description: 'this endpoint takes no WebSocket upgrade' });
    }
    const route = this.route(ctx);
    if (route.auth === 'none') return;
    await this.authenticate(ctx);
    await this.authorize(ctx);
  }

  /**
   * credentials → token → dpop → mission_reference → mission_state. Synchronous while the stages
   * are (a cache hit never awaits); a promise from the first stage that waits.
   */
  authenticate(ctx: RequestContext): void | Promise<void> {
    return runStages(ctx, this.authentication, 0);
  }

  /**
   * mission_state again, once a body has been read, before anything is decided on it or forwarded:
   * a client may send its body slowly, for up to `limits.request_timeout_s`. An event that arrived
   * meanwhile (a revocation, a suspension, a narrowed authority) changed the cached state before its
   * 202 (SPEC section 3), so the request is decided on that, not on the state read with its
   * headers. A cache hit, so synchronous, but after a narrowing (whose entries are read again).
   */
  recheckMission(ctx: RequestContext): void | Promise<void> {
    // The token, too, is still valid: its holder must not choose the parameters after its `exp` (r20d 4).
    if (ctx.token !== null && Date.now() / 1000 - this.deps.tokenSkewS >= ctx.token.exp) {
      throw new Denial('token_invalid', { description: 'the access token expired while the request body was arriving' });
    }
    if (ctx.missionRef === null) return;
    ctx.stage = 'mission_state';
    const first = ctx.mission;
    const again = this.deps.stages.missionState(ctx);
    if (first === null || first.source !== 'fresh') return again;
    // The answer this request fetched, read back from the cache: still `fresh` in its record (r21c 3).
    if (again === undefined) keepFresh(ctx, first);
    else return again.then(() => keepFresh(ctx, first));
  }

  /** parameters → authority. */
  authorize(ctx: RequestContext): void | Promise<void> {
    return runStages(ctx, this.authorization, 0);
  }

  /**
   * evidence → forward. Writes the permit record once the upstream answers (or fails), so the
   * record carries `upstream_status`. Resolves with the outcome (for MCP and the ID-JAG guard).
   */
  forward(
    ctx: RequestContext,
    opts: { policy: HeaderPolicy; body: Buffer | 'stream' | null; path?: string; record?: boolean; lastWords?: LastWords | null },
  ): Promise<ForwardOutcome> {
    return new Promise<ForwardOutcome>((resolve) => this.send(ctx, opts.policy, opts.body, opts.record !== false, opts.path, resolve, opts.lastWords ?? null));
  }

  /** forward without a promise: `done` (if any) gets the outcome once the record is written. */
  private send(
    ctx: RequestContext,
    policy: HeaderPolicy,
    bodyOpt: Buffer | 'stream' | null,
    record: boolean,
    path?: string,
    done?: (outcome: ForwardOutcome) => void,
    lastWords: LastWords | null = null,
  ): void {
    const d = this.deps;
    ctx.stage = 'forward';
    const identity = ctx.token === null ? NO_IDENTITY : this.identityHeaders(ctx);
    const headers = upstreamHeaders(ctx.req, ctx.clientIp, policy, { decisionId: ctx.id, mission: identity });
    let body: Buffer | IncomingMessage | null;
    if (bodyOpt === 'stream') {
      body = hasBody(ctx.req) ? ctx.req : null;
    } else {
      body = bodyOpt;
      if (body !== null) setHeader(headers, 'content-length', String(body.length));
    }
    const decided = this.decided(ctx);
    d.upstream.send(
      {
        method: ctx.method,
        path: (path ?? ctx.path) + ctx.search,
        headers,
        body,
        responseHeaders: ctx.dpopNonce === null ? null : { 'dpop-nonce': ctx.dpopNonce },
        sentAt: decided,
        ticket: this.ticket(ctx),
        lastWords,
      },
      ctx.res,
      (status) => {
        ctx.upstreamStatus = status;
        d.metrics.observeUpstream((performance.now() - decided) / 1000);
      },
      (outcome) => {
        if (outcome.kind === 'error') {
          const denial = new Denial(outcome.code, { cause: outcome.error });
          ctx.upstreamStatus = denial.spec.status;
          writeDenial(ctx.res, denial, ctx.id, null, null);
          d.logger.warn({ decision_id: ctx.id, err: outcome.error.message, code: (outcome.error as { code?: string }).code }, 'upstream failed');
        } else if (outcome.kind === 'aborted' && ctx.upstreamStatus === null) {
          // Closed before the upstream answered: nginx's 499, as no status reached the client, or
          // the status the gateway answered a body with broken framing with.
          const { code, status } = outcome.reason as { code?: string; status?: number };
          ctx.upstreamStatus = code === 'protocol_error' && status !== undefined ? status : 499;
          if (code === 'shutdown') d.logger.warn({ decision_id: ctx.id, err: outcome.reason.message, code }, 'request cut at shutdown');
          else if (code === 'mission_cut') d.logger.info({ decision_id: ctx.id, code }, 'request cut: its Mission stopped being active before the upstream answered');
          else d.logger.debug({ decision_id: ctx.id, err: outcome.reason.message }, 'client closed before the upstream answered');
        }
        if (record) {
          this.record(ctx, 'permit', null);
        }
        done?.(outcome);
      },
    );
  }

  /**
   * The ticket a response or tunnel is held with while it flows (holds.ts), or null when no Mission
   * admitted the request. Should its Mission's authority change while it flows, a route's request is
   * decided again by the reviewer, an MCP request's forwarded calls by `ctx.review`.
   */
  ticket(ctx: RequestContext): Ticket | null {
    const holds = this.deps.holds;
    if (holds === null || ctx.mission === null) return null;
    const review = ctx.kind !== 'route' ? ctx.review : ctx.route !== null && ctx.route.auth !== 'none' ? this.deps.reviewer(ctx) : null;
    return holds.ticket(ctx, review);
  }

  /** X-Mission-* identity headers (SPEC section 6); values that are not header-safe are percent-encoded. */
  /**
   * A permit is decided: the request goes upstream now. Its time is observed and kept for its
   * record, which is written once the upstream answers. Returns performance.now().
   */
  decided(ctx: RequestContext): number {
    const at = performance.now();
    ctx.decidedAt = at;
    ctx.evaluatedAt = isoNow();
    this.deps.metrics.observeDecision(ctx.kind, (at - ctx.started) / 1000);
    return at;
  }

  identityHeaders(ctx: RequestContext): [string, string][] {
    const out: [string, string][] = [];
    const m = ctx.mission ?? ctx.missionRef;
    if (m !== null) {
      if (m.id !== null) out.push(['x-mission-id', headerSafe(m.id)]);
      out.push(['x-mission-issuer', headerSafe(m.issuer)]);
    }
    if (ctx.token !== null) {
      out.push(['x-mission-subject', headerSafe(ctx.token.subject)]);
      out.push(['x-mission-client-id', headerSafe(ctx.token.clientId)]);
    }
    if (ctx.action !== null) out.push(['x-mission-action', headerSafe(ctx.action)]);
    return out;
  }

  /** deny: writes the SPEC section 5 response and the deny record. Unexpected errors fail closed as 500-free denials. */
  deny(ctx: RequestContext, err: unknown): void {
    const d = this.deps;
    let denial: Denial;
    if (isDenial(err)) {
      denial = err;
    } else {
      d.logger.error({ decision_id: ctx.id, stage: ctx.stage, err }, 'unexpected error in pipeline; denying');
      denial = new Denial(ctx.stage === 'mission_state' ? 'state_unavailable' : 'request_malformed', { description: 'the request could not be processed' });
    }
    const challenges = ctx.kind === 'mcp' && d.mcp !== null ? d.mcp.challenges : d.challenges;
    writeDenial(ctx.res, denial, ctx.id, challenges, denial.code === 'dpop_nonce_required' ? ctx.dpopNonce : null);
    d.metrics.observeDecision(ctx.kind, (performance.now() - ctx.started) / 1000);
    this.record(ctx, 'deny', denial.spec.reason);
    if (denial.cause !== undefined) d.logger.debug({ decision_id: ctx.id, code: denial.code, cause: String(denial.cause) }, 'denied');
  }

  /**
   * Builds and writes one evidence record (SPEC section 9), and counts the decision in
   * mission_gateway_requests_total. The members are listed in SPEC order,
   * each one set, so the writer serializes the record as built (its layout, format.ts), unless an
   * extra needs orderRecord (an undefined value, or a member the sink sets).
   */
  record(ctx: RequestContext, decision: 'permit' | 'deny', reason: string | null, extra?: Record<string, unknown>, decisionId = ctx.id): void {
    const t = ctx.token;
    const m = ctx.mission;
    const ref = ctx.missionRef;
    const mission: EvidenceMission | null =
      m !== null
        ? { id: m.id ?? null, issuer: m.issuer, state: m.state ?? null, version: m.version ?? null, authority_hash: m.authorityHash ?? ref?.authorityHash ?? null, source: m.source ?? null }
        : ref !== null
          ? { id: ref.id ?? null, issuer: ref.issuer, state: null, version: null, authority_hash: ref.authorityHash ?? null, source: null }
          : null;
    const base = {
      evidence_id: 'evd_' + ctx.id.slice(4) + (extra?.['call_index'] === undefined ? '' : `_${String(extra['call_index'])}`),
      decision_id: decisionId,
      decision,
      denial_reason: reason,
      evaluated_at: ctx.evaluatedAt ?? isoNow(),
      audience: ctx.audience,
      method: ctx.method,
      path: ctx.path,
      action: ctx.action ?? null,
      subject: t?.subject ?? null,
      client_id: t?.clientId ?? null,
      actor: t?.claims['act'] ?? null,
      token_jti: t?.jti ?? null,
      jkt: ctx.proof?.jkt ?? t?.jkt ?? null,
      mission,
      parameter_digest: ctx.parameterDigest ?? null,
      upstream_status: ctx.upstreamStatus ?? null,
      duration_ms: Math.round(((ctx.decidedAt ?? performance.now()) - ctx.started) * 1000) / 1000,
    };
    // Extras land after the fixed members, which is where orderRecord puts them.
    const record: EvidenceRecord = extra === undefined ? base : { ...base, ...extra };
    try {
      this.deps.evidence.write(record, layoutOf(extra));
    } catch (err) {
      this.deps.logger.error({ err }, 'evidence write failed');
    }
    // Counted where it is recorded, so the metric and the evidence never disagree.
    this.deps.metrics.countDecision(decision, reason);
  }
}

/**
 * The layout of a record built by Pipeline.record with `extra` (format.ts): `extras` when spreading
 * them after the fixed members gives exactly orderRecord's order and values, and the `evidence_id`
 * they shape (`call_index`) stays the plain identifier the layout promises; else none.
 */
export function layoutOf(extra: Record<string, unknown> | undefined): RecordLayout | undefined {
  if (extra === undefined) return 'fixed';
  const call = extra['call_index'];
  if (call !== undefined && !Number.isSafeInteger(call)) return undefined;
  for (const k of Object.keys(extra)) {
    if (extra[k] === undefined || RESERVED_MEMBERS.has(k)) return undefined;
  }
  return 'extras';
}

const NO_IDENTITY: readonly (readonly [string, string])[] = [];

/** At most this much of a refused request target is kept in its record. */
const ATTEMPT_MAX = 2048;

/**
 * A refused request target as its record's `path`: printable ASCII as it is (but `"` and `\`),
 * anything else percent-encoded, cut at ATTEMPT_MAX characters; so it writes into the record as it
 * is (format.ts RecordLayout).
 */
export function attemptedTarget(target: string): string {
  let out = '';
  // Userinfo in an absolute-form target (refused) may be a password, one that holds a raw `/` or `?`
  // too: everything between `://` and the target's last `@` goes.
  const scheme = target.charCodeAt(0) === 0x2f ? -1 : target.indexOf('://');
  const at = scheme === -1 ? -1 : target.lastIndexOf('@');
  if (at > scheme) target = target.slice(0, scheme + 3) + '***' + target.slice(at);
  // A query (or fragment) may carry a credential (`?access_token=`, `?code=`, a signature): only
  // that there was one is kept.
  const query = target.search(/[?#]/);
  if (query !== -1) target = target.slice(0, query + 1);
  for (const ch of target.length > ATTEMPT_MAX ? target.slice(0, ATTEMPT_MAX) : target) {
    const c = ch.codePointAt(0)!;
    out += c > 0x20 && c < 0x7f && c !== 0x22 && c !== 0x5c ? ch : percentEncoded(ch);
  }
  return out === '' ? '/' : out;
}

function percentEncoded(ch: string): string {
  const c = ch.codePointAt(0)!;
  // Node reads the request line's bytes as latin1: a code unit up to 0xFF is the byte received.
  if (c <= 0xff) return '%' + (c < 16 ? '0' : '') + c.toString(16).toUpperCase();
  let out = '';
  // A lone surrogate has no UTF-8 form: written as U+FFFD's bytes.
  for (const b of Buffer.from(LONE_SURROGATE.test(ch) ? '\uFFFD' : ch, 'utf8')) out += '%' + (b < 16 ? '0' : '') + b.toString(16).toUpperCase();
  return out;
}

/** Whether a Transfer-Encoding field names a coding other than chunked (Node's parser has already required chunked last). */
function hasForeignCoding(raw: readonly string[]): boolean {
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!;
    if (k.length === 17 && k.toLowerCase() === 'transfer-encoding') {
      for (const coding of raw[i + 1]!.split(',')) {
        const c = coding.trim().toLowerCase();
        if (c !== 'chunked' && c !== '') return true;
      }
    }
  }
  return false;
}

/** `next` after `step`: at once when `step` finished synchronously, else when its promise does. */
function then(step: void | Promise<void>, next: () => void | Promise<void>): void | Promise<void> {
  return step === undefined ? next() : step.then(next);
}

/** Runs `stages` from index `from`; synchronous until a stage returns a promise. */
function runStages(ctx: RequestContext, stages: readonly (readonly [StageName, Stage])[], from: number): void | Promise<void> {
  for (let i = from; i < stages.length; i++) {
    const [name, stage] = stages[i]!;
    ctx.stage = name;
    const pending = stage(ctx);
    if (pending !== undefined) return pending.then(() => runStages(ctx, stages, i + 1));
  }
}
