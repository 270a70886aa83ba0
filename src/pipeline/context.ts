/**
 * The one typed request context every stage reads and writes. Stages never import each other: a
 * stage takes what earlier stages left here and adds its own result (or throws a Denial).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CompiledRoute } from '../config/compile.js';

/** Stage labels, in the pipeline's order (run.ts); the log of an unexpected error names the stage it came from. */
export type StageName =
  | 'route'
  | 'credentials'
  | 'token'
  | 'dpop'
  | 'mission_reference'
  | 'mission_state'
  | 'parameters'
  | 'authority'
  | 'forward';

/** Where credentials came from (`Authorization` scheme and the raw DPoP header). */
export interface Credentials {
  readonly scheme: 'DPoP' | 'Bearer';
  readonly token: string;
  /** The single DPoP header value, or null when absent. More than one header is a denial. */
  readonly proof: string | null;
}

/** A verified RFC 9068 access token. Claims are as issued; never log `raw`. */
export interface AccessToken {
  readonly raw: string;
  readonly issuer: string;
  readonly subject: string;
  readonly clientId: string;
  readonly jti: string;
  readonly exp: number;
  /** `cnf.jkt`, or null for an unbound token. */
  readonly jkt: string | null;
  readonly claims: Readonly<Record<string, unknown>>;
}

/**
 * Who a request is from, as a key for per-client bounds: the token's issuer, subject and client,
 * or the client address when there is no token.
 */
export function principalOf(ctx: { readonly token: AccessToken | null; readonly clientIp: string }): string {
  const t = ctx.token;
  return t === null ? `ip ${ctx.clientIp}` : `${t.issuer}\n${t.subject}\n${t.clientId}`;
}

/** A verified DPoP proof (RFC 9449). */
export interface DpopProof {
  /** RFC 7638 thumbprint of the proof's public key. */
  readonly jkt: string;
  readonly jti: string;
  readonly iat: number;
}

/** The reference forms of SPEC section 3. */
export type MissionReferenceForm =
  | 'claim' // mission: {id, issuer, authority_hash?}
  | 'claim_origin' // mission: {id, origin}
  | 'mission_ref' // mission_ref: "mr_…"
  | 'aauth_claim' // mission: {approver, s256} or mission_s256
  | 'aauth_header' // AAuth-Mission header
  | 'reference_header' // Mission-Reference header
  | 'mcp_meta'; // params._meta["com.karlmcguinness.mission/reference"]

export interface MissionReference {
  readonly form: MissionReferenceForm;
  /** The Mission's authority (issuer, origin, or AAuth approver). */
  readonly issuer: string;
  /** Mission id (`msn_…`, `mr_…`), or null for an AAuth reference. */
  readonly id: string | null;
  /** AAuth `s256`, or null. */
  readonly s256: string | null;
  /** `authority_hash` from the token claim, when present. */
  readonly authorityHash: string | null;
}

/** One `mission_resource_access` entry (mission-contracts section 7). */
export interface AuthorityEntry {
  readonly type: string;
  readonly resource: string;
  readonly resource_match?: string;
  readonly actions: readonly string[];
  readonly constraints?: Readonly<Record<string, unknown>>;
  readonly [member: string]: unknown;
}

export type MissionStateSource = 'fresh' | 'cached' | 'event';

/** The Mission's state as established for this request. */
export interface MissionView {
  readonly id: string | null;
  readonly issuer: string;
  readonly state: string;
  readonly version: number | null;
  readonly authorityHash: string | null;
  readonly source: MissionStateSource;
  /** `authorization_details` from the Status response, or null when it carried none. */
  readonly authority: readonly AuthorityEntry[] | null;
  /** Unix seconds, when known. */
  readonly expiresAt: number | null;
  readonly suspendUntil: number | null;
  /** From Status: `mission.subject.sub`, `.iss` and `mission.client_id`, for MAS-mode joins. */
  readonly subject: string | null;
  readonly subjectIssuer: string | null;
  readonly clientId: string | null;
}

/** What the route stage decided the request is. */
export type RequestKind = 'route' | 'mcp' | 'id_jag';

export interface RequestContext {
  /** decision_id: also the `Mission-Decision` header. */
  readonly id: string;
  /** performance.now() at arrival. */
  readonly started: number;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly method: string;
  /** Normalized path (what was matched, and what the upstream receives). */
  readonly path: string;
  /** Raw query with its "?", or "". */
  readonly search: string;
  readonly clientIp: string;

  kind: RequestKind;
  route: CompiledRoute | null;
  /** The resource identifier this request is for (`resource`, or `mcp.resource` on the MCP path). */
  audience: string;
  credentials: Credentials | null;
  token: AccessToken | null;
  proof: DpopProof | null;
  missionRef: MissionReference | null;
  mission: MissionView | null;
  /**
   * Further Missions the request is permitted under, besides `mission`: the calls of one forwarded
   * MCP batch naming different Missions (MAS mode). Its response is held under each (holds.ts).
   */
  otherMissions: readonly { readonly ref: MissionReference; readonly view: MissionView; readonly review?: ((view: MissionView) => boolean) | null }[] | null;
  /**
   * MCP: how the forwarded calls are decided again should the Mission's authority change while
   * their answer flows (holds.ts `Review`); null when they are not. Routes are reviewed by the
   * pipeline's reviewer.
   */
  review: ((view: MissionView) => boolean) | null;
  action: string | null;
  params: Record<string, unknown> | null;
  parameterDigest: string | null;
  /** The request body when the gateway had to read it (bounded by max_body_bytes), forwarded as is. */
  body: Buffer | null;
  upstreamStatus: number | null;
  /**
   * performance.now() and the wall clock when a permit was decided (the request forwarded): its
   * record, written when the upstream answers, carries the decision's time (r20d 2). Null before.
   */
  decidedAt: number | null;
  evaluatedAt: string | null;
  /** A fresh DPoP-Nonce to advertise on the response, when nonces are on. */
  dpopNonce: string | null;
  /** The stage that is running, for logs when something throws unexpectedly. */
  stage: StageName;
}

/** A pipeline stage: returns nothing on success (sync when it can: a cache hit never awaits) or throws a Denial. */
export type Stage = (ctx: RequestContext) => void | Promise<void>;

/** What identifies a request; every later field starts empty and is filled by the stages. */
export type RequestContextInit = Pick<RequestContext, 'id' | 'started' | 'req' | 'res' | 'method' | 'path' | 'search' | 'clientIp' | 'audience'> &
  Partial<Pick<RequestContext, 'kind' | 'route' | 'token' | 'stage'>>;

/**
 * The one constructor of a RequestContext (the pipeline and test harnesses alike). Every member is
 * written out, in one order, so each context has the same shape (no spread: copying `init` costs a
 * runtime call per member on every request).
 */
export function newRequestContext(init: RequestContextInit): RequestContext {
  return {
    id: init.id,
    started: init.started,
    req: init.req,
    res: init.res,
    method: init.method,
    path: init.path,
    search: init.search,
    clientIp: init.clientIp,
    kind: init.kind ?? 'route',
    route: init.route ?? null,
    audience: init.audience,
    credentials: null,
    token: init.token ?? null,
    proof: null,
    missionRef: null,
    mission: null,
    otherMissions: null,
    review: null,
    action: null,
    params: null,
    parameterDigest: null,
    body: null,
    upstreamStatus: null,
    decidedAt: null,
    evaluatedAt: null,
    dpopNonce: null,
    stage: init.stage ?? 'route',
  };
}
