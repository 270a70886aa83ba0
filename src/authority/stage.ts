/**
 * The `parameters` and `authority` pipeline stages. Both are synchronous and do no I/O: the body
 * was already read (bounded) by the runner, and everything else they need is on the context.
 */
import { HIGH_CONSEQUENCE } from '../config/compile.js';
import type { Config } from '../config/schema.js';
import { Denial, DENIALS, isDenial } from '../errors.js';
import { pathSegments } from '../http/path.js';
import type { Review } from '../mission/holds.js';
import type { RequestContext, Stage } from '../pipeline/context.js';
import { decide, type DecisionInput } from './decide.js';
import { digestOrNull, extractParams, jsonBodyContentType, undigestable } from './params.js';

const EMPTY_PARAMS: Readonly<Record<string, unknown>> = Object.freeze({});

/**
 * parameters: reads the route's named parameters into `ctx.params` and their `parameter_digest`.
 * A route without params gets `{}` and a null digest. MCP requests set their own (the `arguments`
 * of each call), so this stage leaves them alone.
 */
export function createParametersStage(): Stage {
  return (ctx: RequestContext): void => {
    const route = ctx.route;
    if (ctx.kind !== 'route' || route === null) return;
    if (route.params.length === 0) {
      ctx.params = EMPTY_PARAMS as Record<string, unknown>;
      ctx.parameterDigest = null;
      return;
    }
    const req = ctx.req;
    const params = extractParams(route, {
      segments: pathSegments(ctx.path),
      search: ctx.search,
      // Built by Node on first access: only a route with a header parameter pays for it.
      get headers() {
        return req.headers;
      },
      rawHeaders: req.rawHeaders,
      body: ctx.body,
      contentType: ctx.body === null ? undefined : jsonBodyContentType(req.rawHeaders),
    });
    ctx.params = params;
    ctx.parameterDigest = digestOrNull(params);
    // A permit needs the digest: see the authority stage.
    if (ctx.parameterDigest === null) UNDIGESTED.add(params);
  };
}

/** Params whose digest could not be computed (a number beyond the double range): never permitted. */
const UNDIGESTED = new WeakSet<object>();

/**
 * The token's `authority_hash` against the Mission Status's own `mission.authority_hash`
 * (mission-contracts section 7). The hash commits to the Mission's FULL authority set, and neither
 * set the gateway sees is that: the token's entries are narrowed to its audience, and the Status's
 * `authorization_details` are filtered to the `audience` asked about. So the hash is never
 * recomputed from either; only the two declared values are compared, and a Status that declares
 * none leaves nothing to compare (the decision still takes both sets' intersection). Returns a
 * description of the mismatch, or null.
 */
export function authorityHashMismatch(ctx: Pick<RequestContext, 'mission' | 'missionRef'>): string | null {
  const tokenHash = ctx.missionRef?.authorityHash ?? null;
  const statusHash = ctx.mission?.authorityHash ?? null;
  if (tokenHash === null || statusHash === null || statusHash === tokenHash) return null;
  return "the token's authority_hash differs from the Mission's current authority";
}

/**
 * Decides one action against the context's token and Mission, throwing the Denial on a deny. The
 * authority stage calls it for routes; the MCP handler calls it per `tools/call` with the tool's
 * action, its `arguments` as params and the tool name. `origin` is `public_base_url`'s origin.
 */
export function authorizeAction(
  ctx: Pick<RequestContext, 'token' | 'mission' | 'missionRef' | 'audience' | 'path'>,
  origin: string,
  action: string | null,
  params: Readonly<Record<string, unknown>>,
  tool?: string,
): void {
  if (action === null) throw new Denial('out_of_authority', { description: 'the request maps to no action' });
  const details = ctx.token?.claims['authorization_details'];
  if (details !== undefined && !Array.isArray(details)) {
    throw new Denial('out_of_authority', { description: "the token's authorization_details is not an array" });
  }
  const mismatch = authorityHashMismatch(ctx);
  if (mismatch !== null) throw new Denial('out_of_authority', { description: mismatch });

  const input: DecisionInput = {
    audience: ctx.audience,
    requestUrl: origin + ctx.path,
    action,
    params,
    tokenEntries: (details as readonly unknown[] | undefined) ?? null,
    statusEntries: ctx.mission?.authority ?? null,
    now: Date.now(),
  };
  const decision = decide(tool === undefined ? input : { ...input, tool });
  if (decision.permit) return;
  const description = DENIALS[decision.code].description;
  throw new Denial(decision.code, decision.constraint === undefined ? {} : { description: `${description} (${decision.constraint})` });
}

/**
 * authority: decides the route's (audience, action, params) against the token's and the Mission's
 * authority (decide.ts). Throws out_of_authority, parameter_violation or constraint_unsupported;
 * the constraint's name (never a value) is in the description.
 */
export function createAuthorityStage(deps: { config: Config }): Stage {
  const origin = new URL(deps.config.public_base_url).origin;
  return (ctx: RequestContext): void => {
    const cls = ctx.route?.actionClass ?? null;
    if (cls !== null && HIGH_CONSEQUENCE.has(cls)) highConsequence(ctx);
    authorizeAction(ctx, origin, ctx.action, ctx.params ?? EMPTY_PARAMS);
    // Decided (a max_amount over the limit was denied above), but a permit is bound to its digest.
    if (ctx.parameterDigest === null && ctx.params !== null && UNDIGESTED.has(ctx.params)) throw undigestable();
  };
}

/**
 * How a held exchange's request is decided again when its Mission's authority is read again while
 * it stays active (holds.ts `review`): the route's action and parameters against the token's entries
 * and the Status entries just read, as the authority stage decided them at admission. The checks that
 * bound the admission itself (high-consequence freshness, the single-use proof) are not repeated.
 */
export function createReviewer(deps: { config: Config }): (ctx: RequestContext) => Review {
  const origin = new URL(deps.config.public_base_url).origin;
  return (ctx) => (view) => {
    try {
      authorizeAction({ token: ctx.token, mission: view, missionRef: ctx.missionRef, audience: ctx.audience, path: ctx.path }, origin, ctx.action, ctx.params ?? EMPTY_PARAMS);
      return true;
    } catch (err) {
      if (isDenial(err)) return false;
      throw err;
    }
  };
}

/**
 * High-consequence classes (mission-contracts section 4: irreversible_action, external_commitment,
 * privileged_administration) need state fresh from the authority, not a cached or event-fed copy,
 * and a single-use permit: the decision is bound to one DPoP proof, whose `jti` the replay store
 * accepts once, so the permitted request cannot be replayed. A Bearer request (no proof) could be
 * repeated indistinguishably, so it is refused.
 */
function highConsequence(ctx: RequestContext): void {
  if (ctx.mission === null || ctx.mission.source !== 'fresh') {
    throw new Denial('state_unavailable', { description: 'a high-consequence action needs Mission state fresh from the authority', retryAfter: 1 });
  }
  if (ctx.proof === null) {
    throw new Denial('dpop_invalid', { description: 'a high-consequence action needs a DPoP proof' });
  }
}
