/**
 * Authority Set helpers of the dev authority: the `authority_hash` commitment, which entries apply
 * to an audience, and the "authority only narrows" check for authority changes.
 */
import { compileConstraints, SUPPORTED_CONSTRAINTS } from '../authority/constraints.js';
import { authorityHash as gatewayAuthorityHash } from '../authority/params.js';

export interface AuthorityEntry {
  readonly type: string;
  readonly resource: string;
  readonly resource_match?: 'exact' | 'prefix';
  readonly actions: readonly string[];
  readonly constraints?: Readonly<Record<string, unknown>>;
  readonly [member: string]: unknown;
}

export class AuthorityInputError extends Error {
  override readonly name = 'AuthorityInputError';
}

/** An action name, or a family `x.*` (mission-contracts section 7). */
const ACTION = /^[A-Za-z0-9_.:-]+(?:\.\*)?$/;

/** Validates admin input into entries; throws AuthorityInputError with a generic description. */
export function parseEntries(input: unknown): AuthorityEntry[] {
  if (!Array.isArray(input) || input.length === 0) {
    throw new AuthorityInputError('authorization_details must be a non-empty array');
  }
  return input.map((raw, i) => {
    const e = raw as Record<string, unknown> | null;
    if (typeof e !== 'object' || e === null) throw new AuthorityInputError(`authorization_details[${i}] must be an object`);
    if (e['type'] !== 'mission_resource_access') throw new AuthorityInputError(`authorization_details[${i}].type must be mission_resource_access`);
    if (typeof e['resource'] !== 'string' || !URL.canParse(e['resource'])) throw new AuthorityInputError(`authorization_details[${i}].resource must be an absolute URI`);
    const actions = e['actions'];
    if (!Array.isArray(actions) || actions.length === 0 || !actions.every((a) => typeof a === 'string' && ACTION.test(a))) {
      throw new AuthorityInputError(`authorization_details[${i}].actions must be a non-empty array of action names`);
    }
    const match = e['resource_match'];
    if (match !== undefined && match !== 'exact' && match !== 'prefix') throw new AuthorityInputError(`authorization_details[${i}].resource_match must be exact or prefix`);
    const constraints = e['constraints'];
    if (constraints !== undefined && (typeof constraints !== 'object' || constraints === null || Array.isArray(constraints))) {
      throw new AuthorityInputError(`authorization_details[${i}].constraints must be an object`);
    }
    for (const [name, value] of Object.entries((constraints ?? {}) as Record<string, unknown>)) {
      // A constraint the gateway enforces, with a value it cannot read, would grant nothing there
      // (a number or negative max_amount, an empty tenant list): refused here, where it is written.
      // Other names pass: a newer draft's constraint is how an operator tests the gateway's refusal.
      if (SUPPORTED_CONSTRAINTS.includes(name) && compileConstraints({ [name]: value }).unsupported !== null) {
        throw new AuthorityInputError(`authorization_details[${i}].constraints.${name} has a value the gateway cannot enforce (docs/decisions.md, Constraints)`);
      }
    }
    return structuredClone(e) as AuthorityEntry;
  });
}

/** `"sha-256:" + b64url(SHA-256(JCS({typ: "mission-authority-set", iss, value})))`. */
export function authorityHash(issuer: string, entries: readonly AuthorityEntry[]): string {
  // The same construction the gateway recomputes (one implementation, pinned by the draft vector).
  return gatewayAuthorityHash(issuer, entries);
}

/** True when `prefix` is `url` or a prefix of it ending on a path-segment boundary. */
function segmentPrefix(prefix: string, url: string): boolean {
  if (url === prefix) return true;
  if (!url.startsWith(prefix)) return false;
  return prefix.endsWith('/') || url.charAt(prefix.length) === '/';
}

/**
 * Entries that apply to `audience`: an exact match, or for a prefix entry, an entry that is a
 * prefix of the audience or lies under it (the resource server then matches it per request URL).
 */
export function entriesFor(entries: readonly AuthorityEntry[], audience: string): AuthorityEntry[] {
  return entries.filter((e) =>
    e.resource === audience ||
    (e.resource_match === 'prefix' && (segmentPrefix(e.resource, audience) || segmentPrefix(audience, e.resource))),
  );
}

function actionCovered(action: string, granted: readonly string[]): boolean {
  return granted.some((g) => g === action || (g.endsWith('.*') && (action.startsWith(g.slice(0, -1)) || action === g)));
}

/**
 * True when every entry of `next` is covered by an entry of `current`: same type, resource and
 * match mode, actions a subset, and every constraint of the covering entry still present (values
 * may tighten; the dev authority does not compare them).
 */
export function narrows(current: readonly AuthorityEntry[], next: readonly AuthorityEntry[]): boolean {
  return next.every((n) =>
    current.some((c) =>
      c.type === n.type &&
      c.resource === n.resource &&
      (c.resource_match ?? 'exact') === (n.resource_match ?? 'exact') &&
      n.actions.every((a) => actionCovered(a, c.actions)) &&
      Object.keys(c.constraints ?? {}).every((k) => n.constraints !== undefined && k in n.constraints),
    ),
  );
}
