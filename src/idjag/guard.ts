/**
 * The ID-JAG guard (SPEC section 8): in front of a downstream AS's token endpoint, a JWT bearer
 * grant (RFC 7523) whose assertion is an ID-JAG (`typ: oauth-id-jag+jwt`) is checked against
 * seed 000's projection profile before the AS sees it. Other requests pass through untouched.
 *
 *   read body → classify → [ID-JAG] signature (trusted issuer) → projection rules → DPoP proof
 *     → cnf.jkt binding → jti single use → Mission state → forward (credentials intact) | invalid_grant
 *
 * The jti is claimed before the Mission lookup, so a replay costs no round-trip to the authority;
 * it is released again when the assertion was not used after all (AS nonce challenge, Mission state
 * unavailable), so the client's retry is not a replay.
 * Failures answer RFC 6749 section 5.2 JSON (`invalid_grant`; `invalid_dpop_proof` per RFC 9449
 * section 5 for a bad proof; `invalid_request` for a request the guard cannot read safely) with
 * `denial_reason` and `decision_id`; infrastructure failures (keys, replay store, Mission state
 * unavailable) keep their SPEC section 5 answers (503), since the client did nothing wrong.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { htuBase, normalizeHtu, ProofKeyCache, verifyDpopProof, type VerifyDpopOptions } from '../auth/dpop.js';
import { ASYMMETRIC_ALGS, JwsError, nowSeconds, parseCompact, systemClock, typIs, verifySignature, type Clock, type ParsedJws } from '../auth/jws.js';
import type { KeyResolver, ReplayStore } from '../auth/types.js';
import type { Config } from '../config/schema.js';
import { Denial, isDenial } from '../errors.js';
import { hasBody, readBody } from '../http/body.js';
import { soleField, TWO_FIELDS } from '../http/headers.js';
import { writeJson } from '../http/json.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { assertMissionActive, tokenEndpointMissionError } from '../mission/state.js';
import type { MissionReference, MissionView, RequestContext } from '../pipeline/context.js';
import type { Handler, Pipeline } from '../pipeline/run.js';
import { retryAfterValue } from '../pipeline/respond.js';
import { checkProjection, compileRules, ID_JAG_ERRORS, IdJagRejection, ID_JAG_TYP, type IdJagReason, type Projection, type ProjectionRules } from './projection.js';
import { classifyTokenRequest, tokenRequestContentType } from './request.js';

/** MissionStates (src/mission/state.ts) as far as the guard needs it. */
export interface MissionStateLookup {
  lookup(ref: MissionReference, audience: string, opts: { fresh?: boolean; tokenExp?: number }): MissionView | Promise<MissionView>;
}

export interface IdJagDeps {
  config: Config;
  keys: KeyResolver;
  replay: ReplayStore;
  missionStates: MissionStateLookup;
  metrics: Metrics;
  logger: Logger;
  /** Epoch milliseconds (tests). */
  now?: () => number;
}

/** The evidence `action` of an ID-JAG grant. */
export const ID_JAG_ACTION = 'id_jag.grant';

function reject(reason: IdJagReason, description: string, extra?: Record<string, unknown>): never {
  throw new IdJagRejection(reason, description, extra);
}

/** The single DPoP header, null when absent; more than one is a bad proof (RFC 9449 section 4.3 step 1). */
function dpopHeader(req: IncomingMessage): string | null {
  const found = soleField(req.rawHeaders, 'dpop');
  if (found === TWO_FIELDS) reject('dpop_invalid', 'exactly one DPoP proof is required');
  return found;
}

/** Writes the RFC 6749 section 5.2 error (never cached: section 5.1). */
function writeGrantError(res: ServerResponse, e: IdJagRejection, decisionId: string, retryAfter: number | undefined): void {
  const body = JSON.stringify({ error: ID_JAG_ERRORS[e.reason], error_description: e.message, denial_reason: e.reason, decision_id: decisionId, ...e.extra });
  const headers: Record<string, string | number> = { pragma: 'no-cache', 'mission-decision': decisionId };
  // A suspended Mission with a known suspend_until (SPEC section 5).
  if (retryAfter !== undefined) headers['retry-after'] = retryAfterValue(retryAfter);
  writeJson(res, 400, body, headers);
}

export function createIdJagHandler(deps: IdJagDeps): Handler {
  return new IdJagGuard(deps);
}

/** Evidence members the access-token fields cannot supply here (only from a verified assertion). */
function evidenceOf(p: Projection): Record<string, unknown> {
  return { subject: p.subject, client_id: p.clientId, actor: p.actor, token_jti: p.jti };
}

/** What admit learned, for the answer and for undoing the jti claim. */
interface Admission {
  extra?: Record<string, unknown>;
  /** The replay-store key of the claimed `jti`, once claimed. */
  claimed?: string;
}

/**
 * A failure as the guard answers it (RFC 6749 section 5.2), or null for one that keeps its SPEC
 * section 5 answer (keys, replay store or Mission state unavailable, unexpected errors).
 */
function rejectionOf(err: unknown): IdJagRejection | null {
  if (err instanceof IdJagRejection) return err;
  if (!isDenial(err)) return null;
  if (err.code === 'mission_terminated' || err.code === 'mission_suspended') {
    const status = err.extra?.['mission_status'] ?? (err.code === 'mission_suspended' ? 'suspended' : 'unknown');
    // The token endpoint's own member beside SPEC's (mission-contracts section 7), as the AS would answer.
    const missionError = tokenEndpointMissionError(status);
    return new IdJagRejection('mission_inactive', 'the Mission is not active', missionError === undefined ? { mission_status: status } : { mission_status: status, mission_error: missionError });
  }
  if (err.code === 'dpop_invalid') return new IdJagRejection('dpop_invalid', 'the DPoP proof is not valid');
  // From key resolution: no key of the issuer matches the assertion's kid/alg.
  if (err.code === 'token_invalid') return new IdJagRejection('id_jag_invalid', 'the assertion signature is not valid');
  return null;
}

/** The guard, built once per config: its rules, issuers and DPoP options are compiled here. */
class IdJagGuard implements Handler {
  private readonly keys: KeyResolver;
  private readonly replay: ReplayStore;
  private readonly missionStates: MissionStateLookup;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly rules: ProjectionRules;
  /**
   * Per trusted issuer: its allowed algs (a token issuer's configured list, else any asymmetric
   * one) and its replay-key prefix (a hash, so no issuer URL can be a prefix of another's keys).
   */
  private readonly issuers = new Map<string, { readonly algs: ReadonlySet<string>; readonly replayPrefix: string }>();
  private readonly dpopOptions: Omit<VerifyDpopOptions, 'method'>;

  constructor(deps: IdJagDeps) {
    const { config, replay, metrics } = deps;
    const idJag = config.id_jag;
    if (idJag === undefined) throw new Error('id_jag is not configured');
    this.keys = deps.keys;
    this.replay = replay;
    this.missionStates = deps.missionStates;
    this.metrics = metrics;
    this.logger = deps.logger;
    this.clock = deps.now ?? systemClock;
    this.rules = compileRules(idJag, config.resource, config.token.clock_skew_s);
    for (const iss of idJag.trusted_issuers) {
      const configured = config.issuers.find((i) => i.issuer === iss)?.algorithms;
      this.issuers.set(iss, {
        algs: new Set(configured ?? ASYMMETRIC_ALGS),
        replayPrefix: `idjag:${createHash('sha256').update(iss).digest('base64url').slice(0, 22)}:`,
      });
    }
    const htu = normalizeHtu(htuBase(config.public_base_url) + idJag.token_path);
    if (htu === null) throw new Error('id_jag.token_path cannot be normalized');
    // The AS runs its own DPoP nonces, so none are demanded here; the proof's jti is still single use.
    this.dpopOptions = {
      htu,
      accessToken: null,
      expectedJkt: null,
      nonces: null,
      replay,
      algorithms: new Set<string>(config.dpop.algorithms),
      maxAgeS: config.dpop.max_age_s,
      clockSkewS: config.dpop.clock_skew_s,
      clock: this.clock,
      keyCache: new ProofKeyCache(1_000, () => metrics.cacheEvictions.labels('id_jag_dpop_keys').inc()),
    };
  }

  async handle(ctx: RequestContext, pipeline: Pipeline): Promise<void> {
    ctx.audience = this.rules.audience;
    const policy = pipeline.deps.headers.passCredentials;
    // A body_too_large Denial propagates: the pipeline answers 413.
    const body = hasBody(ctx.req) ? await readBody(ctx.req, pipeline.deps.maxBodyBytes) : null;
    ctx.body = body;
    let request;
    try {
      request = classifyTokenRequest({
        search: ctx.search,
        contentType: tokenRequestContentType(ctx.req.rawHeaders),
        contentEncoding: ctx.req.headers['content-encoding'],
        body,
      });
    } catch (err) {
      this.deny(ctx, pipeline, err, undefined);
      return;
    }
    if (request.kind !== 'id_jag') {
      // Not an ID-JAG: the AS decides alone; the body goes on byte for byte.
      await pipeline.forward(ctx, { policy, body });
      return;
    }
    ctx.action = ID_JAG_ACTION;
    const evidence: Admission = {};
    try {
      await this.admit(ctx, request.assertion, evidence);
    } catch (err) {
      if (isDenial(err) && err.code === 'state_unavailable') this.release(evidence.claimed);
      this.deny(ctx, pipeline, err, evidence.extra);
      return;
    }
    const outcome = await pipeline.forward(ctx, { policy, body, record: false });
    if (outcome.kind === 'response' && outcome.status === 400 && outcome.dpopNonce) this.release(evidence.claimed);
    pipeline.record(ctx, 'permit', null, evidence.extra);
  }

  /** Structure, trusted `iss`, allowed `alg`, signature. Sync when the issuer's key is cached. */
  private verifySigned(compact: string): ParsedJws | Promise<ParsedJws> {
    let parsed: ParsedJws;
    try {
      parsed = parseCompact(compact);
    } catch (err) {
      if (err instanceof JwsError) reject('id_jag_invalid', 'the assertion is malformed');
      throw err;
    }
    const { header, payload } = parsed;
    if (!typIs(header['typ'], ID_JAG_TYP)) reject('id_jag_invalid', 'the assertion is not an ID-JAG');
    const iss = payload['iss'];
    const trusted = typeof iss === 'string' ? this.issuers.get(iss) : undefined;
    if (trusted === undefined) reject('id_jag_untrusted_issuer', 'the assertion issuer is not trusted here');
    const alg = header['alg'];
    if (typeof alg !== 'string' || !trusted.algs.has(alg)) reject('id_jag_invalid', 'the assertion algorithm is not accepted');
    // Only `alg` and `kid` select the key: `jku`, `x5u`, `jwk`, `x5c` are never read (RFC 8725 section 3.10).
    const resolved = this.keys.resolve(iss as string, { alg, kid: header['kid'] });
    const finish = (key: Parameters<typeof verifySignature>[1]): ParsedJws => {
      if (!verifySignature(alg, key, parsed.signingInput, parsed.signature)) reject('id_jag_invalid', 'the assertion signature is not valid');
      return parsed;
    };
    return resolved instanceof Promise ? resolved.then(finish) : finish(resolved);
  }

  /**
   * Gives the `jti` back when the assertion was not used after all: the AS answered 400 with a
   * DPoP-Nonce (RFC 9449 section 8: the client retries the same grant with the nonce), or Mission
   * state could not be established (503: the client retries later). Anything else keeps it spent.
   */
  private release(key: string | undefined): void {
    const replay = this.replay;
    if (key === undefined || replay.release === undefined) return;
    try {
      void Promise.resolve(replay.release(key)).catch(() => undefined);
    } catch {
      // best effort: the key expires with its TTL
    }
  }

  private async admit(ctx: RequestContext, assertion: string, evidence: Admission): Promise<void> {
    if (ctx.method !== 'POST') reject('request_malformed', 'the token endpoint accepts POST only');
    const rules = this.rules;

    ctx.stage = 'token';
    const signed = this.verifySigned(assertion);
    const { payload } = signed instanceof Promise ? await signed : signed;
    const projection = checkProjection(payload, rules, nowSeconds(this.clock));
    evidence.extra = evidenceOf(projection);
    const ref: MissionReference = { form: 'mission_ref', issuer: projection.issuer, id: projection.missionRef, s256: null, authorityHash: null };
    ctx.missionRef = ref;

    ctx.stage = 'dpop';
    const proof = dpopHeader(ctx.req);
    if (proof !== null) {
      const verified = verifyDpopProof(proof, { ...this.dpopOptions, method: ctx.method });
      ctx.proof = verified instanceof Promise ? await verified : verified;
    }
    if (projection.jkt !== null) {
      // RFC 7800: a key-bound assertion proves nothing without proof of that key.
      if (ctx.proof === null) reject('id_jag_key_mismatch', 'the assertion is bound to a key and needs a DPoP proof');
      if (ctx.proof.jkt !== projection.jkt) reject('id_jag_key_mismatch', 'the DPoP proof key is not the key the assertion is bound to');
    }

    ctx.stage = 'token';
    const prefix = this.issuers.get(projection.issuer)!.replayPrefix;
    const ttl = Math.max(1, Math.ceil(projection.exp + rules.clockSkewS - nowSeconds(this.clock)));
    let first: boolean;
    try {
      const claimed = this.replay.claim(prefix + projection.jti, ttl);
      first = claimed instanceof Promise ? await claimed : claimed;
    } catch (err) {
      this.metrics.replayStoreErrors.inc();
      throw new Denial('replay_store_unavailable', { cause: err });
    }
    if (!first) reject('replayed', 'the assertion has already been used');
    evidence.claimed = prefix + projection.jti;

    // Issuing a token is where lifecycle must be current: no cached state is trusted here.
    ctx.stage = 'mission_state';
    const looked = this.missionStates.lookup(ref, rules.audience, { fresh: true, tokenExp: projection.exp });
    const view = looked instanceof Promise ? await looked : looked;
    ctx.mission = view;
    // Throws mission_terminated / mission_suspended Denials, turned into invalid_grant by deny().
    assertMissionActive(view, this.clock());
  }

  /** Turns a failure into the answer: 400 for what the client can fix, SPEC section 5 for the rest. */
  private deny(ctx: RequestContext, pipeline: Pipeline, err: unknown, extra: Record<string, unknown> | undefined): void {
    const rejection = rejectionOf(err);
    if (rejection === null) {
      // keys_unavailable, replay_store_unavailable, state_unavailable, unexpected errors.
      pipeline.deny(ctx, err);
      return;
    }
    this.metrics.observeDecision(ctx.kind, (performance.now() - ctx.started) / 1000);
    pipeline.record(ctx, 'deny', rejection.reason, extra);
    writeGrantError(ctx.res, rejection, ctx.id, isDenial(err) ? err.retryAfter : undefined);
    const cause = err instanceof Error && err.cause !== undefined ? String(err.cause) : undefined;
    this.logger.debug({ decision_id: ctx.id, denial_reason: rejection.reason, cause }, 'id-jag grant denied');
  }
}
