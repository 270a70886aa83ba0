/**
 * The one catalogue of denials (SPEC section 5). Every way the gateway refuses a request is a code
 * here, with its HTTP status, OAuth `error`, `denial_reason` and the kind of challenge it carries.
 * A new code without a status or challenge kind does not compile (`satisfies`).
 */

/** How the WWW-Authenticate challenge of a denial is built (see pipeline/respond.ts). */
export type ChallengeKind =
  | 'none' // no WWW-Authenticate
  | 'bare' // DPoP algs=…, resource_metadata=… (no error attribute)
  | 'error' // DPoP error="<error>", algs=…, resource_metadata=…
  | 'authority' // DPoP error="insufficient_scope", mission_denial="…"
  | 'nonce'; // DPoP error="use_dpop_nonce" plus a DPoP-Nonce header

export interface DenialSpec {
  readonly status: number;
  readonly error: string;
  /** `denial_reason` in the body and evidence; null for upstream failures after a permit. */
  readonly reason: string | null;
  readonly challenge: ChallengeKind;
  /** `mission_denial` attribute for `authority` challenges. */
  readonly missionDenial?: string;
  /** Generic, secret-free description used when the thrower gives none. */
  readonly description: string;
}

export const DENIALS = {
  token_missing: { status: 401, error: 'unauthorized', reason: 'token_missing', challenge: 'bare', description: 'an access token is required' },
  token_invalid: { status: 401, error: 'invalid_token', reason: 'token_invalid', challenge: 'error', description: 'the access token is not valid' },
  keys_unavailable: { status: 503, error: 'temporarily_unavailable', reason: 'keys_unavailable', challenge: 'none', description: "the token issuer's keys cannot be loaded" },
  dpop_invalid: { status: 401, error: 'invalid_dpop_proof', reason: 'dpop_invalid', challenge: 'error', description: 'the DPoP proof is not valid' },
  dpop_nonce_required: { status: 401, error: 'use_dpop_nonce', reason: 'dpop_nonce_required', challenge: 'nonce', description: 'a fresh DPoP server nonce is required' },
  mission_claim_missing: { status: 401, error: 'invalid_token', reason: 'mission_claim_missing', challenge: 'error', description: 'the access token carries no Mission reference' },
  mission_reference_conflict: { status: 403, error: 'mission_reference_conflict', reason: 'mission_reference_conflict', challenge: 'none', description: 'the request names a different Mission than the token' },
  mission_reference_malformed: { status: 400, error: 'invalid_request', reason: 'mission_reference_malformed', challenge: 'none', description: 'a Mission reference header does not parse' },
  mission_terminated: { status: 403, error: 'mission_terminated', reason: 'mission_inactive', challenge: 'none', description: 'the Mission is no longer active' },
  mission_suspended: { status: 403, error: 'mission_suspended', reason: 'mission_inactive', challenge: 'none', description: 'the Mission is suspended' },
  state_unavailable: { status: 503, error: 'mission_state_unavailable', reason: 'state_unavailable', challenge: 'none', description: "the Mission's state cannot be established" },
  out_of_authority: { status: 403, error: 'insufficient_scope', reason: 'out_of_authority', challenge: 'authority', missionDenial: 'insufficient_authority', description: "the action is outside the Mission's authority" },
  parameter_violation: { status: 403, error: 'insufficient_scope', reason: 'parameter_violation', challenge: 'authority', missionDenial: 'insufficient_authority', description: 'a Mission constraint is not satisfied' },
  constraint_unsupported: { status: 403, error: 'insufficient_scope', reason: 'constraint_unsupported', challenge: 'authority', missionDenial: 'constraint_unrecognized', description: 'the Mission carries a constraint this gateway cannot enforce' },
  capability_drift: { status: 403, error: 'insufficient_scope', reason: 'capability_drift', challenge: 'authority', missionDenial: 'insufficient_authority', description: 'the tool definition differs from the approved one' },
  no_route: { status: 403, error: 'forbidden', reason: 'no_route', challenge: 'none', description: 'no route matches this request' },
  parameter_unparseable: { status: 400, error: 'invalid_request', reason: 'parameter_unparseable', challenge: 'none', description: 'the request parameters cannot be read' },
  request_malformed: { status: 400, error: 'invalid_request', reason: 'request_malformed', challenge: 'none', description: 'the request is malformed' },
  body_too_large: { status: 413, error: 'payload_too_large', reason: 'body_too_large', challenge: 'none', description: 'the request body is larger than this gateway accepts' },
  session_ended: { status: 404, error: 'not_found', reason: 'session_ended', challenge: 'none', description: 'this MCP session was ended (its client ended it, it was idle, or a Mission it ran under is no longer active or no longer allows a call made in it); start a new session' },
  session_mismatch: { status: 404, error: 'not_found', reason: 'session_mismatch', challenge: 'none', description: 'no such MCP session for this client; start a new session' },
  replay_store_unavailable: { status: 503, error: 'temporarily_unavailable', reason: 'replay_store_unavailable', challenge: 'none', description: 'single-use checks cannot be made right now' },
  evidence_unavailable: { status: 503, error: 'temporarily_unavailable', reason: 'evidence_unavailable', challenge: 'none', description: 'decision evidence cannot be written' },
  bad_gateway: { status: 502, error: 'bad_gateway', reason: null, challenge: 'none', description: 'the upstream could not be reached' },
  tunnels_full: { status: 503, error: 'temporarily_unavailable', reason: null, challenge: 'none', description: 'too many WebSocket tunnels are open; retry later' },
  gateway_timeout: { status: 504, error: 'gateway_timeout', reason: null, challenge: 'none', description: 'the upstream did not answer in time' },
} as const satisfies Record<string, DenialSpec>;

export type DenialCode = keyof typeof DENIALS;

export interface DenialOptions {
  /** Replaces the generic description. Never put a token, proof or parameter value here. */
  description?: string;
  /** Internal detail for logs only. */
  cause?: unknown;
  /** Extra body members, e.g. `mission_status`. */
  extra?: Record<string, unknown>;
  /** Seconds for a Retry-After header. */
  retryAfter?: number;
}

/** Thrown by a pipeline stage to deny the request. */
export class Denial extends Error {
  readonly code: DenialCode;
  readonly spec: DenialSpec;
  readonly extra: Record<string, unknown> | undefined;
  readonly retryAfter: number | undefined;

  constructor(code: DenialCode, options: DenialOptions = {}) {
    const spec: DenialSpec = DENIALS[code];
    super(options.description ?? spec.description, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'Denial';
    this.code = code;
    this.spec = spec;
    this.extra = options.extra;
    this.retryAfter = options.retryAfter;
  }
}

export function isDenial(err: unknown): err is Denial {
  return err instanceof Denial;
}
