/**
 * Exact, non-negative decimal amounts for `max_amount` (mission-contracts section 7). Amounts are
 * compared as decimal digit strings, never as floats: `500.000000000000000001` exceeds `500.00`.
 *
 * Accepted: a decimal string `0`, `12`, `423.50`, `0.5` (no sign, no exponent, no leading zeros, no
 * whitespace, at most 64 characters), or a non-negative JSON number: a double exactly as its
 * shortest round-trip form reads (`423.5` is exactly 423.5; -0 is zero), or, for a body number a
 * double cannot hold (`100.0000000000000001`, `12345678901234567890`, `1e400`), its literal as the
 * client wrote it (json.ts keeps it). Everything else is unparseable and a constraint that needs it
 * fails.
 */

/** A parsed amount: integer digits without leading zeros ("" for zero), fraction without trailing zeros. */
export interface Decimal {
  readonly int: string;
  readonly frac: string;
}

const DECIMAL_STRING = /^(0|[1-9][0-9]*)(?:\.([0-9]+))?$/;
const NUMBER_FORM = /^([0-9]+)(?:\.([0-9]+))?(?:e([+-]?[0-9]+))?$/;
const MAX_LENGTH = 64;

function make(intDigits: string, fracDigits: string): Decimal {
  let i = 0;
  while (i < intDigits.length && intDigits.charCodeAt(i) === 0x30) i++;
  let j = fracDigits.length;
  while (j > 0 && fracDigits.charCodeAt(j - 1) === 0x30) j--;
  return { int: intDigits.slice(i), frac: fracDigits.slice(0, j) };
}

/** Parses a decimal string amount; null when it is not a plain non-negative decimal. */
export function parseDecimalString(s: string): Decimal | null {
  if (s.length === 0 || s.length > MAX_LENGTH) return null;
  const m = DECIMAL_STRING.exec(s);
  if (m === null) return null;
  return make(m[1]!, m[2] ?? '');
}

/**
 * The limit of a `max_amount` constraint, as the Mission draft writes it ("Common Constraints"): a
 * string matching `^[0-9]+(\.[0-9]{1,18})?$` (leading zeros allowed), at most 64 characters. A JSON
 * number is malformed there (its digits are gone once JSON.parse has read it as a double:
 * 499.99999999999999999 is 500), and so is anything else: null, and the constraint is unsupported.
 */
export function parseDecimalLimit(v: unknown): Decimal | null {
  if (typeof v !== 'string' || v.length > MAX_LENGTH) return null;
  const m = DECIMAL_LIMIT.exec(v);
  return m === null ? null : make(m[1]!, m[2] ?? '');
}

const DECIMAL_LIMIT = /^([0-9]+)(?:\.([0-9]{1,18}))?$/;

/** Parses a JSON number amount through its shortest round-trip form (may carry an exponent); -0 is zero. */
export function parseDecimalNumber(n: number): Decimal | null {
  if (!Number.isFinite(n) || n < 0) return null;
  const m = NUMBER_FORM.exec(String(n));
  if (m === null) return null;
  const intPart = m[1]!;
  const fracPart = m[2] ?? '';
  const exp = m[3] === undefined ? 0 : Number(m[3]);
  if (exp === 0) return make(intPart, fracPart);
  const digits = intPart + fracPart;
  const point = intPart.length + exp; // position of the decimal point within `digits`
  if (point <= 0) return make('', '0'.repeat(-point) + digits);
  if (point >= digits.length) return make(digits + '0'.repeat(point - digits.length), '');
  return make(digits.slice(0, point), digits.slice(point));
}

const LITERAL = /^(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?$/;

/**
 * How far the decimal point of a literal may lie from its first digit before it is clamped. Every
 * limit lies well inside (a decimal string has at most 64 characters; a double's digits lie
 * between 10^-324 and 10^309), so a clamped amount keeps its order against every limit: beyond
 * 10^2000 it exceeds them all, and a positive amount below 10^-2000 is under every positive limit
 * and over zero. Without the clamp `1e999999999` would be a billion zeros.
 */
const POINT_BOUND = 2000;

/**
 * Parses a JSON number literal (RFC 8259 grammar) as the exact decimal it writes, whatever a
 * double would make of it: `100.0000000000000001`, `12345678901234567890`, `1e400`. A negative
 * amount is null; a zero of either sign (`-0`, `-0.0e5`) is zero, a negative non-zero (`-1e-400`)
 * stays negative.
 */
export function parseDecimalLiteral(lit: string): Decimal | null {
  const m = LITERAL.exec(lit);
  if (m === null) return null;
  const intPart = m[2]!;
  const fracPart = m[3] ?? '';
  const digits = intPart + fracPart;
  let first = 0;
  while (first < digits.length && digits.charCodeAt(first) === 0x30) first++;
  if (first === digits.length) return { int: '', frac: '' };
  if (m[1] === '-') return null;
  let last = digits.length;
  while (digits.charCodeAt(last - 1) === 0x30) last--;
  const significant = digits.slice(first, last);
  // The decimal point sits `point` places after the first significant digit (negative: before it).
  const exp = m[4] === undefined ? 0 : Number(m[4]);
  const point = Math.max(-POINT_BOUND, Math.min(POINT_BOUND, intPart.length - first + exp));
  if (point <= 0) return make('', '0'.repeat(-point) + significant);
  if (point >= significant.length) return make(significant + '0'.repeat(point - significant.length), '');
  return make(significant.slice(0, point), significant.slice(point));
}

/** A string or JSON number amount; null for anything else. */
export function parseAmount(v: unknown): Decimal | null {
  if (typeof v === 'string') return parseDecimalString(v);
  if (typeof v === 'number') return parseDecimalNumber(v);
  return null;
}

/** -1, 0 or 1. */
export function compareDecimal(a: Decimal, b: Decimal): number {
  if (a.int.length !== b.int.length) return a.int.length < b.int.length ? -1 : 1;
  if (a.int !== b.int) return a.int < b.int ? -1 : 1;
  const n = Math.max(a.frac.length, b.frac.length);
  for (let i = 0; i < n; i++) {
    const x = i < a.frac.length ? a.frac.charCodeAt(i) : 0x30;
    const y = i < b.frac.length ? b.frac.charCodeAt(i) : 0x30;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}
