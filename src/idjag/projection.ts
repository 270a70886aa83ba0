/**
 * The projection rules of seed 000 ("Mission Projection Profile For ID-JAG"), as pure functions over
 * an already signature-verified ID-JAG payload: exactly one audience, bounded lifetime, the minimum
 * claims, the minimization rules (what must never cross the domain boundary), the shape of `cnf`,
 * and the local policy of which purposes and actor profiles each trusted issuer may project.
 *
 * Everything is compiled once from the config (`compileRules`); `checkProjection` is a pure function
 * of the payload, the rules and the time (no I/O), so it is unit-tested exhaustively.
 */
import type { Config } from '../config/schema.js';
import { validId } from '../mission/key.js';
import { numericDate } from '../auth/jws.js';
import { isObject } from '../values.js';

/**
 * The guard's catalogue: each `denial_reason` (evidence and the response body) with the RFC 6749
 * section 5.2 `error` it answers (`invalid_dpop_proof` per RFC 9449 section 5). A reason added
 * here must name its error, or this does not compile.
 */
export const ID_JAG_ERRORS = {
  id_jag_invalid: 'invalid_grant', // not a well-formed, correctly signed ID-JAG (structure, alg, signature, cnf)
  id_jag_untrusted_issuer: 'invalid_grant',
  id_jag_audience: 'invalid_grant',
  id_jag_expired: 'invalid_grant',
  id_jag_time_invalid: 'invalid_grant', // iat in the future, nbf not reached, lifetime above max_lifetime_s
  id_jag_claim_missing: 'invalid_grant', // a minimum claim absent or of the wrong type
  id_jag_forbidden_claim: 'invalid_grant',
  id_jag_policy: 'invalid_grant', // outside local policy (purpose, actor profile, issuer without a policy entry)
  id_jag_key_mismatch: 'invalid_grant', // cnf.jkt differs from the DPoP proof key, or a bound assertion came without a proof
  replayed: 'invalid_grant',
  mission_inactive: 'invalid_grant',
  dpop_invalid: 'invalid_dpop_proof',
  request_malformed: 'invalid_request', // a request the guard cannot read safely
} as const satisfies Record<string, 'invalid_grant' | 'invalid_dpop_proof' | 'invalid_request'>;

export type IdJagReason = keyof typeof ID_JAG_ERRORS;

/** A rejection of the token request; `description` is generic and never holds a claim value. */
export class IdJagRejection extends Error {
  constructor(
    readonly reason: IdJagReason,
    description: string,
    readonly extra: Readonly<Record<string, unknown>> = {},
  ) {
    super(description);
    this.name = 'IdJagRejection';
  }
}

/** The ID-JAG media type (`typ`, compared case-insensitively, `application/` prefix optional). */
export const ID_JAG_TYP = 'oauth-id-jag+jwt';

/** Bound on `act` nesting (delegation chains are short; a deep one is hostile). */
const MAX_ACT_DEPTH = 8;

/**
 * Seed 000 minimization: claims that must never cross into another domain. The full applied
 * `client_context` and `display` (UI evidence) by name; the Mission Authority Model in every shape
 * it travels in (RAR `authorization_details`, `mission_resource_access` entries, seed 002
 * `authority`, `authority_hash`); approval evidence and workflow / lifecycle internals. The
 * home-domain `mission` object is refused too: it carries the internal Mission id and
 * `authority_hash`, while a projection names its Mission by `mission_ref` only.
 */
export const BUILTIN_FORBIDDEN_CLAIMS: readonly string[] = [
  'client_context',
  'display',
  'authorization_details',
  'mission_resource_access',
  'authority',
  'authority_hash',
  'authority_model',
  'mission_authority_model',
  'mission',
  'approval',
  'approval_evidence',
  'approval_basis',
  'consent_rendering_hash',
  'proposal_hash',
  'policy_version',
  'workflow_state',
  'lifecycle',
];

/** One `id_jag.policy[]` entry, compiled. A null set means "not restricted by this entry". */
export interface PolicyRule {
  /** Allowed applied purpose kinds (`purposes` ∪ `purpose_kinds`), or null for any. */
  readonly purposes: ReadonlySet<string> | null;
  /** Allowed `act.sub_profile` values (every level of a delegation chain), or null for any. */
  readonly actProfiles: ReadonlySet<string> | null;
}

export interface ProjectionRules {
  /** This AS's identifier: `aud` must be exactly this (or a one-element array of it). */
  readonly audience: string;
  readonly maxLifetimeS: number;
  readonly clockSkewS: number;
  readonly forbidden: ReadonlySet<string>;
  /** Rules per issuer; null when `id_jag.policy` is empty (no local restriction beyond trust). */
  readonly policy: ReadonlyMap<string, readonly PolicyRule[]> | null;
}

/** What a valid projection establishes (all from the verified payload). */
export interface Projection {
  readonly issuer: string;
  readonly subject: string;
  readonly missionRef: string;
  /** The applied purpose kind, from `purpose` or `purpose_kind`. */
  readonly purpose: string;
  readonly iat: number;
  readonly exp: number;
  readonly jti: string;
  /** `cnf.jkt`, or null for an unbound assertion. */
  readonly jkt: string | null;
  readonly clientId: string | null;
  readonly actor: Readonly<Record<string, unknown>> | null;
}

export type IdJagConfig = NonNullable<Config['id_jag']>;

export function compileRules(idJag: IdJagConfig, resource: string, clockSkewS: number): ProjectionRules {
  const union = (a: readonly string[] | undefined, b: readonly string[] | undefined): ReadonlySet<string> | null =>
    a === undefined && b === undefined ? null : new Set([...(a ?? []), ...(b ?? [])]);
  let policy: Map<string, PolicyRule[]> | null = null;
  if (idJag.policy.length > 0) {
    policy = new Map();
    for (const p of idJag.policy) {
      const rule: PolicyRule = {
        purposes: union(p.purposes, p.purpose_kinds),
        actProfiles: p.act_profiles === undefined ? null : new Set(p.act_profiles),
      };
      const list = policy.get(p.issuer);
      if (list === undefined) policy.set(p.issuer, [rule]);
      else list.push(rule);
    }
  }
  return Object.freeze({
    audience: idJag.audience ?? resource,
    maxLifetimeS: idJag.max_lifetime_s,
    clockSkewS,
    forbidden: new Set([...BUILTIN_FORBIDDEN_CLAIMS, ...idJag.forbidden_claims]),
    policy,
  });
}

const has = Object.prototype.hasOwnProperty;

function reject(reason: IdJagReason, description: string): never {
  throw new IdJagRejection(reason, description);
}



/** Seed 000: `aud` binds the projection to exactly one downstream AS. */
export function audienceIsExactly(aud: unknown, audience: string): boolean {
  if (typeof aud === 'string') return aud === audience;
  return Array.isArray(aud) && aud.length === 1 && aud[0] === audience;
}

/** The `act` chain, outermost (current actor) first; throws when it is not a chain of objects. */
function actChain(act: unknown): Readonly<Record<string, unknown>>[] {
  const chain: Readonly<Record<string, unknown>>[] = [];
  let level: unknown = act;
  while (level !== undefined) {
    if (!isObject(level) || chain.length === MAX_ACT_DEPTH) reject('id_jag_claim_missing', 'the assertion act claim is malformed');
    chain.push(level);
    level = level['act'];
  }
  return chain;
}

function checkPolicy(rules: ProjectionRules, issuer: string, purpose: string, chain: readonly Readonly<Record<string, unknown>>[]): void {
  if (rules.policy === null) return;
  const entries = rules.policy.get(issuer);
  if (entries === undefined) reject('id_jag_policy', 'this issuer may not project Missions into this domain');
  const permits = (r: PolicyRule): boolean =>
    (r.purposes === null || r.purposes.has(purpose)) &&
    (r.actProfiles === null || chain.every((a) => typeof a['sub_profile'] === 'string' && r.actProfiles!.has(a['sub_profile'])));
  if (!entries.some(permits)) reject('id_jag_policy', 'the projection exceeds local policy');
}

/**
 * Checks a signature-verified ID-JAG payload against the rules; returns the projection or throws
 * IdJagRejection. Order: audience, time, minimum claims, minimization, cnf, local policy.
 */
export function checkProjection(payload: Readonly<Record<string, unknown>>, rules: ProjectionRules, nowS: number): Projection {
  const p = payload;
  if (!has.call(p, 'aud')) reject('id_jag_claim_missing', 'the assertion lacks a required claim');
  if (!audienceIsExactly(p['aud'], rules.audience)) reject('id_jag_audience', 'the assertion is not for this authorization server');

  const iat = numericDate(p['iat']);
  const exp = numericDate(p['exp']);
  if (iat === undefined || exp === undefined) reject('id_jag_claim_missing', 'the assertion lacks a required claim');
  const skew = rules.clockSkewS;
  if (nowS - skew >= exp) reject('id_jag_expired', 'the assertion has expired');
  if (iat > nowS + skew) reject('id_jag_time_invalid', 'the assertion is issued in the future');
  if (exp <= iat || exp - iat > rules.maxLifetimeS) reject('id_jag_time_invalid', 'the assertion lifetime is not acceptable');
  if (has.call(p, 'nbf')) {
    const nbf = numericDate(p['nbf']);
    if (nbf === undefined || nbf > nowS + skew) reject('id_jag_time_invalid', 'the assertion is not yet valid');
  }

  const iss = p['iss'];
  const sub = p['sub'];
  const missionRef = p['mission_ref'];
  const jti = p['jti'];
  if (!validId(iss) || !validId(sub) || !validId(missionRef) || !validId(jti)) {
    reject('id_jag_claim_missing', 'the assertion lacks a required claim');
  }
  // `purpose` and `purpose_kind` both carry the applied purpose.kind (a string: an object would be
  // the applied purpose context itself, display and params included).
  const purpose = p['purpose'];
  const purposeKind = p['purpose_kind'];
  if (purpose !== undefined && !validId(purpose)) reject('id_jag_claim_missing', 'the assertion purpose is not a purpose kind');
  if (purposeKind !== undefined && !validId(purposeKind)) reject('id_jag_claim_missing', 'the assertion purpose is not a purpose kind');
  const applied = purpose ?? purposeKind;
  if (applied === undefined) reject('id_jag_claim_missing', 'the assertion lacks a required claim');
  if (purpose !== undefined && purposeKind !== undefined && purpose !== purposeKind) {
    reject('id_jag_claim_missing', 'the assertion names two different purposes');
  }

  for (const name of rules.forbidden) {
    if (has.call(p, name)) reject('id_jag_forbidden_claim', 'the assertion carries a claim that must not be projected');
  }

  let jkt: string | null = null;
  if (has.call(p, 'cnf')) {
    // A confirmation we cannot check (mTLS x5t#S256, a malformed jkt) must not count as unbound.
    const cnf = p['cnf'];
    if (!isObject(cnf) || !validId(cnf['jkt'])) reject('id_jag_invalid', 'the assertion confirmation method is not supported');
    jkt = cnf['jkt'];
  }

  const act = p['act'];
  const chain = act === undefined ? [] : actChain(act);
  checkPolicy(rules, iss, applied, chain);

  const clientId = p['client_id'];
  return {
    issuer: iss,
    subject: sub,
    missionRef,
    purpose: applied,
    iat,
    exp,
    jti,
    jkt,
    clientId: typeof clientId === 'string' ? clientId : null,
    actor: chain[0] ?? null,
  };
}
