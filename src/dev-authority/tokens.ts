/**
 * The token endpoint: `client_credentials` minting RFC 9068 access tokens bound to a Mission, and
 * RFC 8693 token exchange minting ID-JAGs (seed 000's projection profile). DPoP (RFC 9449) binds
 * both; a Bearer token is minted only when asked for (`token_type=Bearer`) or allowed by option.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { createLocalJWKSet, jwtVerify, type JWTPayload } from 'jose';
import { tokenEndpointMissionError } from '../mission/state.js';
import { entriesFor } from './authority.js';
import { nowSeconds, type AuthorityContext } from './context.js';
import { NO_STORE, oauthError, param, readForm, sendJson } from './http.js';
import type { Mission } from './missions.js';
import { CLIENT_ASSERTION_TYPE, ProofError, verifyDpopProof } from './proofs.js';
import { SIGNING_ALG } from './keys.js';

export const GRANT_CLIENT_CREDENTIALS = 'client_credentials';
export const GRANT_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const TOKEN_TYPE_ID_JAG = 'urn:openid:params:token-type:id-jag';
export const TOKEN_TYPE_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const ID_JAG_MAX_TTL = 300;

/** How the access token names its Mission (tests need every reference form of SPEC section 3). */
export type MissionClaimForm = 'mission' | 'origin' | 'mission_ref' | 'aauth' | 'mission_s256' | 'none';
const CLAIM_FORMS: readonly MissionClaimForm[] = ['mission', 'origin', 'mission_ref', 'aauth', 'mission_s256', 'none'];

export interface AccessTokenRequest {
  readonly mission?: Mission | undefined;
  readonly clientId: string;
  /** RFC 8707 resources; the token's `aud` (a string when there is one). */
  readonly resources: readonly string[];
  /** Thumbprint of the DPoP key; absent mints an unbound (Bearer) token. */
  readonly jkt?: string | undefined;
  readonly claimForm?: MissionClaimForm | undefined;
  readonly scope?: string | undefined;
  readonly omitAuthorizationDetails?: boolean | undefined;
  readonly ttlSeconds?: number | undefined;
}

/** Mints an RFC 9068 `at+jwt`; its lifetime never outlasts the Mission. */
export async function mintAccessToken(ctx: AuthorityContext, r: AccessTokenRequest): Promise<{ token: string; expiresIn: number; scope: string | undefined }> {
  const iat = nowSeconds(ctx);
  const m = r.mission;
  let exp = iat + (r.ttlSeconds ?? ctx.settings.tokenTtlSeconds);
  if (m !== undefined) exp = Math.min(exp, Math.floor(Date.parse(m.expires_at) / 1000));
  const entries = m === undefined ? [] : r.resources.flatMap((res) => entriesFor(m.authorization_details, res));
  const unique = [...new Set(entries)];
  const scope = r.scope ?? (unique.length > 0 ? [...new Set(unique.flatMap((e) => e.actions))].join(' ') : undefined);
  const claims: JWTPayload = {
    iss: ctx.issuer,
    sub: m?.subject ?? r.clientId,
    aud: r.resources.length === 1 ? r.resources[0]! : [...r.resources],
    client_id: r.clientId,
    jti: `at_${randomBytes(16).toString('base64url')}`,
    iat,
    exp,
    ...(scope === undefined ? {} : { scope }),
    ...(r.jkt === undefined ? {} : { cnf: { jkt: r.jkt } }),
    ...(m === undefined ? {} : missionClaim(m, r.claimForm ?? 'mission')),
    ...(m === undefined || r.omitAuthorizationDetails === true ? {} : { authorization_details: unique }),
  };
  return { token: await ctx.keys.sign(claims, 'at+jwt'), expiresIn: exp - iat, scope };
}

function missionClaim(m: Mission, form: MissionClaimForm): JWTPayload {
  switch (form) {
    case 'mission':
      return { mission: { id: m.id, issuer: m.issuer, authority_hash: m.authority_hash } };
    case 'origin':
      return { mission: { id: m.id, origin: m.issuer } };
    case 'mission_ref':
      return { mission_ref: m.id };
    case 'aauth':
      return { mission: { approver: m.aauth.approver, s256: m.aauth.s256 } };
    case 'mission_s256':
      return { mission_s256: m.aauth.s256 };
    case 'none':
      return {};
  }
}

export function tokenHandler(ctx: AuthorityContext): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  return async (req, res) => {
    const form = await readForm(req, ['resource']);
    const grant = param(form, 'grant_type');
    const body =
      grant === GRANT_CLIENT_CREDENTIALS ? await clientCredentials(ctx, req, form)
      : grant === GRANT_TOKEN_EXCHANGE ? await tokenExchange(ctx, req, form)
      : undefined;
    if (body === undefined) throw oauthError(400, 'unsupported_grant_type', 'the grant type is not supported');
    sendJson(res, 200, body, NO_STORE);
  };
}

async function clientCredentials(ctx: AuthorityContext, req: IncomingMessage, form: Map<string, string[]>): Promise<Record<string, unknown>> {
  const clientId = await authenticateClient(ctx, req, form);
  if (clientId === undefined) throw oauthError(401, 'invalid_client', 'client identification is required');
  const claimForm = (param(form, 'mission_claim_form') ?? 'mission') as MissionClaimForm;
  if (!CLAIM_FORMS.includes(claimForm)) throw oauthError(400, 'invalid_request', 'unknown mission_claim_form');
  const resources = form.get('resource') ?? [];
  if (resources.length === 0) throw oauthError(400, 'invalid_target', 'resource is required');
  for (const r of resources) {
    if (!URL.canParse(r) || r.includes('#')) throw oauthError(400, 'invalid_target', 'resource must be an absolute URI without fragment');
  }
  const missionId = param(form, 'mission_id');
  if (missionId === undefined && claimForm !== 'none') throw oauthError(400, 'invalid_request', 'mission_id is required');
  const mission = missionId === undefined ? undefined : activeMission(ctx, missionId);

  const jkt = await bindingKey(ctx, req, param(form, 'token_type') === 'Bearer');
  const issued = await mintAccessToken(ctx, {
    mission,
    clientId,
    resources,
    jkt,
    claimForm,
    scope: param(form, 'scope'),
    omitAuthorizationDetails: param(form, 'omit_authorization_details') === 'true',
  });
  return {
    access_token: issued.token,
    token_type: jkt === undefined ? 'Bearer' : 'DPoP',
    expires_in: issued.expiresIn,
    ...(issued.scope === undefined ? {} : { scope: issued.scope }),
  };
}

/** The DPoP key thumbprint, or undefined for a Bearer token when that was asked for or allowed. */
async function bindingKey(ctx: AuthorityContext, req: IncomingMessage, bearerRequested: boolean): Promise<string | undefined> {
  if (bearerRequested) return undefined;
  const proof = req.headers['dpop'];
  if (proof === undefined) {
    if (ctx.settings.allowBearer) return undefined;
    throw oauthError(400, 'invalid_dpop_proof', 'a DPoP proof is required');
  }
  return checkProof(ctx, proof);
}

async function checkProof(ctx: AuthorityContext, proof: string | string[] | undefined): Promise<string> {
  // Node joins repeated headers with ", "; a compact JWS never contains a comma.
  if (typeof proof !== 'string' || proof.includes(',')) throw oauthError(400, 'invalid_dpop_proof', 'exactly one DPoP proof is required');
  try {
    return await verifyDpopProof(proof, {
      htm: 'POST',
      htu: ctx.endpoints.token,
      now: ctx.now,
      maxAgeSeconds: ctx.settings.dpopMaxAgeSeconds,
      skewSeconds: ctx.settings.clockSkewSeconds,
      replay: ctx.replay,
    });
  } catch (e) {
    if (e instanceof ProofError) throw oauthError(400, 'invalid_dpop_proof', 'the DPoP proof is not valid');
    throw e;
  }
}

/**
 * The requesting client. Development clients need no credential (any `client_id`, or HTTP Basic
 * with any secret); a `client_assertion`, when sent, must verify against the registered keys.
 */
async function authenticateClient(ctx: AuthorityContext, req: IncomingMessage, form: Map<string, string[]>): Promise<string | undefined> {
  const claimed = param(form, 'client_id');
  const assertion = param(form, 'client_assertion');
  if (assertion !== undefined) {
    if (param(form, 'client_assertion_type') !== CLIENT_ASSERTION_TYPE) throw oauthError(401, 'invalid_client', 'unsupported client assertion type');
    try {
      const c = await ctx.clients.verifyAssertion(assertion, [ctx.endpoints.token, ctx.issuer], ctx.now, ctx.replay, claimed);
      return c.clientId;
    } catch (e) {
      if (e instanceof ProofError) throw oauthError(401, 'invalid_client', 'client authentication failed');
      throw e;
    }
  }
  const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
  if (basic !== undefined) {
    const user = decodeURIComponent(Buffer.from(basic, 'base64').toString('utf8').split(':')[0] ?? '');
    if (user === '' || (claimed !== undefined && claimed !== user)) throw oauthError(401, 'invalid_client', 'client authentication failed');
    return user;
  }
  return claimed === '' ? undefined : claimed;
}

function activeMission(ctx: AuthorityContext, id: string): Mission {
  const m = ctx.missions.get(id);
  if (m === undefined) throw oauthError(400, 'invalid_grant', 'the Mission is unknown');
  if (m.state !== 'active') {
    const code = tokenEndpointMissionError(m.state);
    throw oauthError(400, 'invalid_grant', 'the Mission is not active', code === undefined ? {} : { mission_error: code });
  }
  return m;
}

async function tokenExchange(ctx: AuthorityContext, req: IncomingMessage, form: Map<string, string[]>): Promise<Record<string, unknown>> {
  if (param(form, 'requested_token_type') !== TOKEN_TYPE_ID_JAG) throw oauthError(400, 'invalid_request', 'only ID-JAG exchange is supported');
  if (param(form, 'subject_token_type') !== TOKEN_TYPE_ACCESS_TOKEN) throw oauthError(400, 'invalid_request', 'subject_token_type must be an access token');
  const subjectToken = param(form, 'subject_token');
  const audience = param(form, 'audience');
  if (subjectToken === undefined) throw oauthError(400, 'invalid_request', 'subject_token is required');
  if (audience === undefined || !URL.canParse(audience)) throw oauthError(400, 'invalid_target', 'audience must be the downstream authorization server issuer');
  const clientId = await authenticateClient(ctx, req, form);

  let subject: JWTPayload;
  try {
    subject = (await jwtVerify(subjectToken, createLocalJWKSet(ctx.keys.jwks()), {
      typ: 'at+jwt',
      issuer: ctx.issuer,
      algorithms: [SIGNING_ALG],
      currentDate: new Date(ctx.now()),
    })).payload;
  } catch {
    throw oauthError(400, 'invalid_grant', 'the subject token is not valid');
  }
  if (clientId !== undefined && clientId !== subject['client_id']) throw oauthError(400, 'invalid_grant', 'the subject token was issued to another client');
  const jkt = await checkProof(ctx, req.headers['dpop']);
  const bound = (subject['cnf'] as { jkt?: unknown } | undefined)?.jkt;
  // A bound subject token is exchanged only by the holder of its key.
  if (bound !== undefined && bound !== jkt) throw oauthError(400, 'invalid_grant', 'the subject token is bound to another key');

  const mission = activeMission(ctx, missionIdOf(ctx, subject, form));
  const iat = nowSeconds(ctx);
  const exp = Math.min(iat + Math.min(ctx.settings.idJagTtlSeconds, ID_JAG_MAX_TTL), Math.floor(Date.parse(mission.expires_at) / 1000));
  // Seed 000 minimum projection: no client_context, display or authority internals.
  const idJag = await ctx.keys.sign(
    {
      iss: ctx.issuer,
      sub: mission.subject,
      aud: audience,
      client_id: typeof subject['client_id'] === 'string' ? subject['client_id'] : mission.client_id,
      mission_ref: mission.id,
      purpose: mission.purpose,
      iat,
      exp,
      jti: `idjag_${randomBytes(16).toString('base64url')}`,
      cnf: { jkt },
    },
    'oauth-id-jag+jwt',
  );
  return { access_token: idJag, issued_token_type: TOKEN_TYPE_ID_JAG, token_type: 'N_A', expires_in: exp - iat };
}

/** The Mission the subject token names, in any reference form; else a `mission_id` parameter. */
function missionIdOf(ctx: AuthorityContext, t: JWTPayload, form: Map<string, string[]>): string {
  const claim = t['mission'] as { id?: unknown; s256?: unknown } | undefined;
  if (typeof claim?.id === 'string') return claim.id;
  if (typeof t['mission_ref'] === 'string') return t['mission_ref'];
  const s256 = typeof claim?.s256 === 'string' ? claim.s256 : t['mission_s256'];
  if (typeof s256 === 'string') {
    const m = ctx.missions.getByS256(s256);
    if (m !== undefined) return m.id;
  }
  const id = param(form, 'mission_id');
  if (id === undefined) throw oauthError(400, 'invalid_grant', 'the subject token names no Mission');
  return id;
}
