/**
 * The authority decision (SPEC section 4): pure, synchronous, no I/O. Given the request's audience,
 * URL, action and parameters and the two sources of authority (the token's `authorization_details`
 * and the Mission Status response's), it permits or names the denial.
 *
 * Rules, in order:
 * 1. Only `mission_resource_access` entries count; other types, non-objects and entries without a
 *    string `resource` are ignored on both sides.
 * 2. An entry applies when its `resource` equals the audience (`resource_match` absent or `exact`),
 *    or, with `resource_match: prefix`, when the RFC 3986-normalized `resource` is a prefix of the
 *    request URL ending on a path-segment boundary (`%2F` is not a boundary). An entry with another
 *    `resource_match` value, or a prefix that is not an absolute http(s) URL without query or
 *    fragment, cannot be placed: it is treated as applying, grants nothing, and its side counts as
 *    present (fail closed, reported as `constraint_unsupported` when it names the action).
 * 3. Within a side, applying entries are OR'd: the side permits when SOME applying entry lists the
 *    action (exact, or a family `x.*` = any action starting `x.` with at least one more character)
 *    and every one of its constraints holds.
 * 4. Across sides: both present, both must permit; one present, it decides; none, out_of_authority.
 *    `scope` is never read.
 * 5. A denying side reports, most specific first: parameter_violation (an entry listed the action
 *    but a constraint failed), constraint_unsupported (an entry listed the action but carries a
 *    constraint this gateway cannot enforce), out_of_authority (no applying entry lists the action).
 */
import type { AuthorityEntry } from '../pipeline/context.js';
import { normalizePath } from '../http/path.js';
import { compileConstraints, type CompiledConstraints, type ConstraintInput } from './constraints.js';

export interface DecisionInput {
  /** The resource identifier (`resource`, or `mcp.resource` on the MCP path). */
  readonly audience: string;
  /** `public_base_url` origin + normalized path, for `resource_match: prefix`. */
  readonly requestUrl: string;
  readonly action: string;
  readonly params: Readonly<Record<string, unknown>>;
  /** The token's `authorization_details` (any types), or null when it carries none. */
  readonly tokenEntries: readonly unknown[] | null;
  /** The Mission Status response's authority, or null when it carried none. */
  readonly statusEntries: readonly unknown[] | null;
  /** Decision time, ms since the epoch. */
  readonly now: number;
  /** The MCP tool name of a `tools/call` (for `allowed_tools`); never taken from the arguments when given. */
  readonly tool?: string;
}

export type DenyCode = 'out_of_authority' | 'parameter_violation' | 'constraint_unsupported';

export type Decision =
  | { readonly permit: true; readonly entry: AuthorityEntry }
  | { readonly permit: false; readonly code: DenyCode; readonly constraint?: string };

type Placement = 'exact' | 'prefix' | 'unplaceable';

interface CompiledEntry {
  readonly entry: AuthorityEntry;
  readonly placement: Placement;
  /** `resource` as given (exact), or normalized (prefix). */
  readonly resource: string;
  readonly prefixEndsWithSlash: boolean;
  readonly actions: ReadonlySet<string>;
  /** Family prefixes with their trailing dot: `invoices.*` -> `invoices.`. */
  readonly families: readonly string[];
  readonly constraints: CompiledConstraints;
}

const SIDES = new WeakMap<readonly unknown[], readonly CompiledEntry[]>();

const ENTRY_TYPE = 'mission_resource_access';

const UNPLACEABLE = /[\\\x00-\x20\x7f]/;

/** Normalizes a prefix resource like a request URL: origin lowercased, default port dropped, path normalized. */
function normalizePrefix(resource: string): string | null {
  // What the URL parser rewrites but a request path never is (`\` read as `/`; tabs, newlines,
  // spaces and controls dropped or trimmed) makes a prefix no request could be compared with as
  // written: such an entry places nothing (r21k 3).
  if (UNPLACEABLE.test(resource)) return null;
  let url: URL;
  try {
    url = new URL(resource);
  } catch {
    return null;
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    return null;
  }
  try {
    return url.origin + normalizePath(url.pathname);
  } catch {
    return null;
  }
}

function compileEntry(raw: unknown): CompiledEntry | null {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return null;
  const entry = raw as AuthorityEntry;
  if (entry.type !== ENTRY_TYPE || typeof entry.resource !== 'string') return null;

  const actions = new Set<string>();
  const families: string[] = [];
  if (Array.isArray(entry.actions)) {
    for (const a of entry.actions as unknown[]) {
      if (typeof a !== 'string' || a.length === 0) continue;
      if (a.endsWith('.*') && a.length > 2) families.push(a.slice(0, -1));
      else actions.add(a);
    }
  }

  let placement: Placement;
  let resource = entry.resource;
  const match = entry.resource_match;
  if (match === undefined || match === 'exact') {
    placement = 'exact';
  } else if (match === 'prefix') {
    const normalized = normalizePrefix(entry.resource);
    placement = normalized === null ? 'unplaceable' : 'prefix';
    resource = normalized ?? resource;
  } else {
    placement = 'unplaceable';
  }

  return Object.freeze({
    entry,
    placement,
    resource,
    prefixEndsWithSlash: resource.endsWith('/'),
    actions,
    families: Object.freeze(families),
    constraints: compileConstraints(entry.constraints),
  });
}

/** Compiled once per entries array (token claims and Mission views are cached objects, never mutated). */
function compileSide(entries: readonly unknown[]): readonly CompiledEntry[] {
  let compiled = SIDES.get(entries);
  if (compiled === undefined) {
    const out: CompiledEntry[] = [];
    for (const raw of entries) {
      const c = compileEntry(raw);
      if (c !== null) out.push(c);
    }
    compiled = Object.freeze(out);
    SIDES.set(entries, compiled);
  }
  return compiled;
}

function applies(e: CompiledEntry, audience: string, requestUrl: string): boolean {
  switch (e.placement) {
    case 'exact':
      return e.resource === audience;
    case 'prefix': {
      const r = e.resource;
      if (!requestUrl.startsWith(r)) return false;
      return requestUrl.length === r.length || e.prefixEndsWithSlash || requestUrl.charCodeAt(r.length) === 0x2f;
    }
    case 'unplaceable':
      return true;
  }
}

export function actionAllowed(actions: ReadonlySet<string>, families: readonly string[], action: string): boolean {
  if (actions.has(action)) return true;
  for (const f of families) if (action.length > f.length && action.startsWith(f)) return true;
  return false;
}

/** Ranks of a side's outcome; higher wins when reporting a denial. */
const RANK = { absent: 0, out_of_authority: 1, constraint_unsupported: 2, parameter_violation: 3 } as const;

type SideResult =
  | { readonly kind: 'absent' }
  | { readonly kind: 'permit'; readonly entry: AuthorityEntry }
  | { readonly kind: 'deny'; readonly code: DenyCode; readonly constraint: string | undefined };

const ABSENT: SideResult = Object.freeze({ kind: 'absent' });
const OUT: SideResult = Object.freeze({ kind: 'deny', code: 'out_of_authority', constraint: undefined });

function evaluateSide(entries: readonly unknown[] | null, input: DecisionInput, cin: ConstraintInput): SideResult {
  if (entries === null) return ABSENT;
  let present = false;
  let best: SideResult = OUT;
  let bestRank: number = RANK.out_of_authority;
  for (const e of compileSide(entries)) {
    if (!applies(e, input.audience, input.requestUrl)) continue;
    present = true;
    if (!actionAllowed(e.actions, e.families, input.action)) continue;
    if (e.placement === 'unplaceable') {
      if (bestRank < RANK.constraint_unsupported) {
        best = { kind: 'deny', code: 'constraint_unsupported', constraint: 'resource_match' };
        bestRank = RANK.constraint_unsupported;
      }
      continue;
    }
    const { checks, unsupported } = e.constraints;
    if (unsupported !== null) {
      if (bestRank < RANK.constraint_unsupported) {
        best = { kind: 'deny', code: 'constraint_unsupported', constraint: unsupported };
        bestRank = RANK.constraint_unsupported;
      }
      continue;
    }
    let failed: string | null = null;
    for (const [name, check] of checks) {
      if (!check(cin)) {
        failed = name;
        break;
      }
    }
    if (failed === null) return { kind: 'permit', entry: e.entry };
    if (bestRank < RANK.parameter_violation) {
      best = { kind: 'deny', code: 'parameter_violation', constraint: failed };
      bestRank = RANK.parameter_violation;
    }
  }
  return present ? best : ABSENT;
}

function deny(r: Extract<SideResult, { kind: 'deny' }>): Decision {
  return r.constraint === undefined ? { permit: false, code: r.code } : { permit: false, code: r.code, constraint: r.constraint };
}

export function decide(input: DecisionInput): Decision {
  const cin: ConstraintInput = { params: input.params, now: input.now, tool: input.tool };
  const t = evaluateSide(input.tokenEntries, input, cin);
  const s = evaluateSide(input.statusEntries, input, cin);
  if (t.kind === 'deny' && s.kind === 'deny') return deny(RANK[s.code] > RANK[t.code] ? s : t);
  if (t.kind === 'deny') return deny(t);
  if (s.kind === 'deny') return deny(s);
  if (t.kind === 'permit') return { permit: true, entry: t.entry };
  if (s.kind === 'permit') return { permit: true, entry: s.entry };
  return { permit: false, code: 'out_of_authority' };
}

/**
 * Whether a tool (action) should be listed in `tools/list`: the action is granted on this audience
 * by every present side, leaving parameter checks to the call itself (a constraint that can only
 * fail on the call's arguments does not hide the tool). Exposure control only: every call is still
 * decided with `decide`.
 */
export function actionVisible(input: Omit<DecisionInput, 'params'>): boolean {
  const d = decide({ ...input, params: EMPTY });
  return d.permit || d.code === 'parameter_violation';
}

const EMPTY: Readonly<Record<string, unknown>> = Object.freeze({});
