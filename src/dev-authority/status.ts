/**
 * The Mission Status endpoint (draft-mcguinness-oauth-mission-status; mission-contracts.md section
 * 2): POST form `mission_id` (or AAuth `mission_s256`), `audience`, `nonce`; `private_key_jwt`
 * only. An unknown Mission and one the client may not see both answer the same 404 (anti-oracle).
 * The answer is a signed `mission-status-response+jwt`, or seed 002's JSON shape when the client
 * asks for `application/json` only.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { entriesFor } from './authority.js';
import { nowSeconds, type AuthorityContext } from './context.js';
import { HttpError, NO_STORE, param, readForm, send, sendJson } from './http.js';
import { iso, type Mission } from './missions.js';
import { CLIENT_ASSERTION_TYPE, ProofError, type RegisteredClient } from './proofs.js';

export const STATUS_CONTENT_TYPE = 'application/mission-status-response+jwt';
const RESPONSE_TTL = 60;

const statusError = (status: number, error: string, description: string, nonce: string | undefined): HttpError =>
  new HttpError(status, { error, error_description: description, ...(nonce === undefined ? {} : { nonce }) }, NO_STORE);

export function statusHandler(ctx: AuthorityContext): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  return async (req, res) => {
    const form = await readForm(req);
    const nonce = param(form, 'nonce');
    const client = await authenticate(ctx, form, nonce);

    const missionId = param(form, 'mission_id');
    const s256 = param(form, 'mission_s256');
    const audience = param(form, 'audience');
    if (nonce === undefined || nonce === '') throw statusError(400, 'invalid_request', 'nonce is required', nonce);
    if ((missionId === undefined) === (s256 === undefined)) throw statusError(400, 'invalid_request', 'exactly one of mission_id or mission_s256 is required', nonce);

    const mission = missionId !== undefined ? ctx.missions.get(missionId) : ctx.missions.getByS256(s256!);
    const allowed = audience === undefined || client.audiences === null || client.audiences.has(audience);
    if (mission === undefined || !allowed) throw statusError(404, 'not_found', 'no such Mission', nonce);

    if (wantsJson(req.headers.accept, ctx.settings.preferJsonStatus)) {
      sendJson(res, 200, seedShape(ctx, mission, client, audience, nonce), NO_STORE);
      return;
    }
    const jwt = await ctx.keys.sign(claims(ctx, mission, client, audience, nonce, s256 !== undefined), 'mission-status-response+jwt');
    send(res, 200, STATUS_CONTENT_TYPE, jwt, NO_STORE);
  };
}

/** private_key_jwt is the only method (no Basic, no secrets); anything else is 401. */
async function authenticate(ctx: AuthorityContext, form: Map<string, string[]>, nonce: string | undefined): Promise<RegisteredClient> {
  const assertion = param(form, 'client_assertion');
  if (assertion === undefined || param(form, 'client_assertion_type') !== CLIENT_ASSERTION_TYPE) {
    throw statusError(401, 'unauthorized', 'client authentication is required', nonce);
  }
  try {
    return await ctx.clients.verifyAssertion(assertion, [ctx.endpoints.status], ctx.now, ctx.replay, param(form, 'client_id'));
  } catch (e) {
    if (e instanceof ProofError) throw statusError(401, 'unauthorized', 'client authentication failed', nonce);
    throw e;
  }
}

/** The JWT unless the client accepts JSON only, or accepts it at all and the operator prefers it. */
function wantsJson(accept: string | undefined, prefer: boolean): boolean {
  if (accept === undefined) return false;
  const types = accept.split(',').map((t) => t.split(';')[0]!.trim().toLowerCase());
  return types.includes('application/json') && (prefer || !types.includes(STATUS_CONTENT_TYPE));
}

/** `fresh_until` never exceeds iat + mission_max_stale_seconds, nor an active Mission's expiry. */
function freshUntil(ctx: AuthorityContext, m: Mission, iat: number): number {
  const bound = iat + ctx.settings.maxStaleSeconds;
  return m.state === 'active' ? Math.min(bound, Math.floor(Date.parse(m.expires_at) / 1000)) : bound;
}

function claims(ctx: AuthorityContext, m: Mission, client: RegisteredClient, audience: string | undefined, nonce: string, byS256: boolean): Record<string, unknown> {
  const iat = nowSeconds(ctx);
  return {
    iss: ctx.issuer,
    // State-only queries (no audience) are addressed to the client itself.
    aud: audience ?? client.clientId,
    sub: client.clientId,
    nonce,
    iat,
    exp: iat + RESPONSE_TTL,
    mission: {
      id: m.id,
      issuer: m.issuer,
      authority_hash: m.authority_hash,
      state: m.state,
      version: m.version,
      expires_at: m.expires_at,
      fresh_until: iso(freshUntil(ctx, m, iat)),
      subject: { sub: m.subject },
      client_id: m.client_id,
      ...(m.suspend_until === undefined ? {} : { suspend_until: m.suspend_until, on_expiry: m.on_expiry }),
      ...(m.successor === undefined ? {} : { successor: m.successor }),
      ...(byS256 ? { approver: m.aauth.approver, s256: m.aauth.s256 } : {}),
    },
    ...(audience === undefined ? {} : { authorization_details: entriesFor(m.authorization_details, audience) }),
  };
}

/** Seed 002's Mission Status JSON (superseded by the JWT, served on explicit opt-in). */
function seedShape(ctx: AuthorityContext, m: Mission, client: RegisteredClient, audience: string | undefined, nonce: string): Record<string, unknown> {
  const iat = nowSeconds(ctx);
  const entries = audience === undefined ? [] : entriesFor(m.authorization_details, audience);
  return {
    active: m.state === 'active',
    projection_issuer_authorized: true,
    projection_issuer: { issuer: client.clientId, substrate: 'oauth', ...(audience === undefined ? {} : { audience }) },
    nonce,
    mission: {
      id: m.id,
      origin: m.issuer,
      state: m.state,
      version: m.version,
      expiry: m.expires_at,
      authority_hash: m.authority_hash,
      fresh_until: iso(freshUntil(ctx, m, iat)),
      subject: { sub: m.subject },
      client_id: m.client_id,
      ...(m.suspend_until === undefined ? {} : { suspend_until: m.suspend_until, on_expiry: m.on_expiry }),
    },
    authority: entries.map((e) => ({ substrate: 'oauth', type: e.type, authority: e })),
  };
}
