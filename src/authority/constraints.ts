/**
 * Constraints of a `mission_resource_access` entry (SPEC section 4, mission-contracts section 7),
 * compiled once per entry into small check functions. A constraint this gateway does not know, or
 * whose value it cannot read, is `unsupported`: the entry then grants nothing (fail closed).
 *
 * Which request parameter each constraint reads (a missing or unreadable parameter fails):
 *   max_amount {amount, currency}    the limit a decimal string (parseDecimalLimit); params `amount` (exact decimal <=; a body number a double cannot hold
 *                                     by its literal) and `currency` (ASCII case-insensitive)
 *   tenant "t" | ["t", …]            params `tenant`, exactly equal (to one of them)
 *   recipient_domain "d" | ["d", …]  params `recipient` (an e-mail address or URL, or an array of them):
 *                                     every host equals a listed domain ignoring case; subdomains do not match
 *   time_window {not_before?, not_after?}  the decision time, both bounds inclusive (RFC 3339)
 *   allowed_tools ["t", …]           the MCP tool name (DecisionInput.tool), else params `tool`
 *   data_classification ["c", …]     params `data_classification` (a string or array): every value listed
 *   resource_issued_after/_before    params `resource_issued_at` (RFC 3339), both bounds inclusive
 *   requires_action_approval         false holds; true is unsupported (this gateway cannot obtain a
 *                                     per-action approval), so such an entry never permits
 */
import { domainToASCII } from 'node:url';
import { parseRfc3339 } from '../rfc3339.js';
import { compareDecimal, parseAmount, parseDecimalLimit, parseDecimalLiteral, parseDecimalNumber, type Decimal } from './decimal.js';
import { numberSource } from './json.js';

export interface ConstraintInput {
  readonly params: Readonly<Record<string, unknown>>;
  /** Decision time, ms since the epoch. */
  readonly now: number;
  readonly tool: string | undefined;
}

export type Check = (input: ConstraintInput) => boolean;

export interface CompiledConstraints {
  /** Checks in the entry's member order; the first that fails names the violated constraint. */
  readonly checks: readonly (readonly [name: string, check: Check])[];
  /** The first constraint that cannot be enforced, or null. */
  readonly unsupported: string | null;
}

/**
 * For protected-resource metadata `mission_constraints_supported`: the constraints this gateway
 * enforces. `requires_action_approval` is understood (`false` holds) but not listed, since an
 * entry that requires approval can never be permitted here.
 */
export const SUPPORTED_CONSTRAINTS: readonly string[] = Object.freeze([
  'max_amount',
  'tenant',
  'recipient_domain',
  'time_window',
  'allowed_tools',
  'data_classification',
  'resource_issued_after',
  'resource_issued_before',
]);

const NONE: CompiledConstraints = Object.freeze({ checks: Object.freeze([]), unsupported: null });

function param(params: Readonly<Record<string, unknown>>, name: string): unknown {
  return Object.hasOwn(params, name) ? params[name] : undefined;
}

function stringSet(v: unknown): ReadonlySet<string> | null {
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length === 0) return null;
  for (const x of list) if (typeof x !== 'string' || x.length === 0) return null;
  return new Set(list as string[]);
}

function maxAmount(v: unknown): Check | null {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return null;
  const o = v as Record<string, unknown>;
  const limit: Decimal | null = parseDecimalLimit(o['amount']);
  const currency = o['currency'];
  if (limit === null || typeof currency !== 'string' || currency.length === 0) return null;
  const cur = currency.toLowerCase();
  return ({ params }) => {
    const c = param(params, 'currency');
    if (typeof c !== 'string' || c.toLowerCase() !== cur) return false;
    const amount = amountParam(params);
    return amount !== null && compareDecimal(amount, limit) <= 0;
  };
}

/** The `amount` param as an exact decimal: a number a double could not hold is read from its literal. */
function amountParam(params: Readonly<Record<string, unknown>>): Decimal | null {
  const v = param(params, 'amount');
  if (typeof v !== 'number') return parseAmount(v);
  const lit = numberSource(params, 'amount');
  return lit === undefined ? parseDecimalNumber(v) : parseDecimalLiteral(lit);
}

function tenant(v: unknown): Check | null {
  const allowed = stringSet(v);
  if (allowed === null) return null;
  return ({ params }) => {
    const t = param(params, 'tenant');
    return typeof t === 'string' && allowed.has(t);
  };
}

const EMAIL = /^[^\s@,;<>()[\]"\\:]+@([A-Za-z0-9.-]+)$/;

/**
 * A URL whose host every parser reads alike: the host right after `//` (no userinfo, no
 * percent-encoding, no IP literal), an optional port, and no backslash, whitespace or control
 * character anywhere. WHATWG turns `\` into `/` where RFC 3986 parsers read userinfo
 * (`https://vendor.example\@evil.example/` is vendor.example to one, evil.example to the other).
 */
const URL_SHAPE = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^\s\\/?#@%:[\]\x00-\x1f\x7f]+)(?::[0-9]{1,5})?(?:[/?#][^\s\\\x00-\x1f\x7f]*)?$/;
const ASCII_HOST = /^[A-Za-z0-9.-]+$/;
const IDN_HOST = /^[\p{L}\p{M}\p{N}.-]+$/u;

/**
 * An ASCII host, or an internationalized one of letters, marks and digits that NFKC leaves as it
 * is: WHATWG maps a fullwidth dot or fullwidth letters onto ASCII (`vendor．example` is
 * vendor.example to it), which a parser without IDNA mapping reads as another host.
 */
function plainHost(raw: string): boolean {
  return ASCII_HOST.test(raw) || (IDN_HOST.test(raw) && raw.normalize('NFKC') === raw);
}

/** The host an e-mail address or URL names, lower-cased ASCII, or null for anything else. */
export function recipientHost(v: string): string | null {
  if (v.includes('://')) {
    const shape = URL_SHAPE.exec(v);
    if (shape === null || !plainHost(shape[1]!)) return null;
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      return null;
    }
    const host = url.hostname.toLowerCase();
    return host !== '' && host === domainToASCII(shape[1]!.toLowerCase()) ? host : null;
  }
  const m = EMAIL.exec(v);
  if (m === null) return null;
  const host = m[1]!.toLowerCase();
  return host.startsWith('.') || host.endsWith('.') || host.includes('..') ? null : host;
}

function recipientDomain(v: unknown): Check | null {
  const raw = stringSet(v);
  if (raw === null) return null;
  const domains = new Set<string>();
  for (const d of raw) {
    const ascii = domainToASCII(d.toLowerCase());
    if (ascii === '') return null;
    domains.add(ascii);
  }
  const one = (r: unknown): boolean => {
    if (typeof r !== 'string') return false;
    const host = recipientHost(r);
    return host !== null && domains.has(host);
  };
  return ({ params }) => {
    const r = param(params, 'recipient');
    if (Array.isArray(r)) return r.length > 0 && r.every(one);
    return one(r);
  };
}

function timeWindow(v: unknown): Check | null {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return null;
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'not_before' && k !== 'not_after') return null;
  const nb = o['not_before'] === undefined ? -Infinity : parseRfc3339(o['not_before']);
  const na = o['not_after'] === undefined ? Infinity : parseRfc3339(o['not_after']);
  if (nb === null || na === null || (nb === -Infinity && na === Infinity)) return null;
  return ({ now }) => now >= nb && now <= na;
}

function allowedTools(v: unknown): Check | null {
  if (!Array.isArray(v)) return null;
  const tools = stringSet(v);
  if (tools === null) return null;
  return ({ params, tool }) => {
    const t = tool ?? param(params, 'tool');
    return typeof t === 'string' && tools.has(t);
  };
}

function dataClassification(v: unknown): Check | null {
  const allowed = stringSet(v);
  if (allowed === null) return null;
  return ({ params }) => {
    const c = param(params, 'data_classification');
    if (typeof c === 'string') return allowed.has(c);
    return Array.isArray(c) && c.length > 0 && c.every((x) => typeof x === 'string' && allowed.has(x));
  };
}

function issuedBound(v: unknown, after: boolean): Check | null {
  const bound = parseRfc3339(v);
  if (bound === null) return null;
  return ({ params }) => {
    const at = parseRfc3339(param(params, 'resource_issued_at'));
    return at !== null && (after ? at >= bound : at <= bound);
  };
}

const ALWAYS: Check = () => true;

function requiresActionApproval(v: unknown): Check | null {
  return v === false ? ALWAYS : null;
}

const COMPILERS: ReadonlyMap<string, (v: unknown) => Check | null> = new Map([
  ['max_amount', maxAmount],
  ['tenant', tenant],
  ['recipient_domain', recipientDomain],
  ['time_window', timeWindow],
  ['allowed_tools', allowedTools],
  ['data_classification', dataClassification],
  ['resource_issued_after', (v: unknown) => issuedBound(v, true)],
  ['resource_issued_before', (v: unknown) => issuedBound(v, false)],
  ['requires_action_approval', requiresActionApproval],
]);

/** Compiles an entry's `constraints` member (absent = no constraints; not an object = unsupported). */
export function compileConstraints(raw: unknown): CompiledConstraints {
  if (raw === undefined) return NONE;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return { checks: [], unsupported: 'constraints' };
  const checks: [string, Check][] = [];
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    const compile = COMPILERS.get(name);
    const check = compile === undefined ? null : compile(value);
    if (check === null) return { checks: [], unsupported: name };
    checks.push([name, check]);
  }
  return { checks, unsupported: null };
}
