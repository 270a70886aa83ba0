/**
 * Strict reading of JSON the gateway decides on. `JSON.parse` alone is not enough, because the
 * upstream may read the same bytes differently:
 * - duplicate object keys (`{"amount":1,"amount":9000}`): JSON.parse keeps the last, other parsers
 *   the first, so any duplicate key makes the document unreadable;
 * - numbers that a double cannot hold (`500.000000000000000001` parses to 500): a number at a
 *   bound parameter must denote exactly the decimal its shortest round-trip form shows.
 * One linear scan over the (already syntax-checked) text does both.
 */
import canonicalizeModule from 'canonicalize';

// The package is CommonJS (`module.exports = serialize`) but its typings declare an ES default
// export, so under NodeNext the default import is the function at runtime yet typed as a namespace.
const canonicalize = canonicalizeModule as unknown as (value: unknown) => string | undefined;

/** RFC 8785 JSON Canonicalization Scheme. Throws on values without a JSON form (NaN, Infinity, undefined). */
export function jcs(value: unknown): string {
  const out = canonicalize(value);
  if (out === undefined) throw new TypeError('value has no JSON form');
  return out;
}

export class JsonStrictError extends Error {
  override readonly name = 'JsonStrictError';
}

/** RFC 6901: "" is the whole document; "/a~1b/~0c" is ["a/b", "~c"]. */
export function parsePointer(pointer: string): readonly string[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

const ARRAY_INDEX = /^(0|[1-9][0-9]*)$/;

/** Resolves a parsed pointer against a parsed document; undefined when absent. Own members only. */
export function resolvePointer(doc: unknown, tokens: readonly string[]): unknown {
  let node = doc;
  for (const t of tokens) {
    if (Array.isArray(node)) {
      if (!ARRAY_INDEX.test(t)) return undefined;
      const i = Number(t);
      if (i >= node.length) return undefined;
      node = node[i];
    } else if (node !== null && typeof node === 'object') {
      // hasOwn: never read through the prototype chain (`__proto__`, `constructor`, `toString`).
      if (!Object.hasOwn(node, t)) return undefined;
      node = (node as Record<string, unknown>)[t];
    } else {
      return undefined;
    }
  }
  return node;
}

/** Plain decimal digits of a JSON number literal, normalized (no exponent, no leading/trailing zeros). */
function numberLiteralValue(lit: string): string {
  let s = lit;
  let neg = false;
  if (s.charCodeAt(0) === 0x2d) {
    neg = true;
    s = s.slice(1);
  }
  let exp = 0;
  const e = s.search(/[eE]/);
  if (e !== -1) {
    exp = Number(s.slice(e + 1));
    s = s.slice(0, e);
  }
  const dot = s.indexOf('.');
  let digits = dot === -1 ? s : s.slice(0, dot) + s.slice(dot + 1);
  let point = (dot === -1 ? s.length : dot) + exp;
  let i = 0;
  while (i < digits.length - 1 && digits.charCodeAt(i) === 0x30) {
    i++;
    point--;
  }
  digits = digits.slice(i);
  let j = digits.length;
  while (j > 1 && digits.charCodeAt(j - 1) === 0x30) j--;
  digits = digits.slice(0, j);
  if (digits === '0') return '0';
  return (neg ? '-' : '') + digits + '@' + String(point);
}

/** True when the literal denotes exactly the decimal shown by the shortest form of the double it parses to. */
export function numberIsExact(lit: string): boolean {
  const n = Number(lit);
  if (!Number.isFinite(n)) return false;
  if (n === 0) return numberLiteralValue(lit) === '0' && !lit.startsWith('-');
  return numberLiteralValue(lit) === numberLiteralValue(String(n));
}

interface Frame {
  readonly object: boolean;
  readonly keys: Set<string> | null;
  /** Current key (object) or index (array) on the path from the root. */
  at: string;
  index: number;
  expectKey: boolean;
}

/**
 * Scans syntactically valid JSON text: throws JsonStrictError on a duplicate key anywhere, or on a
 * number that is not exact at one of `watch` (parsed pointers; `watch === 'all'` checks every number).
 */
export function scanJson(text: string, watch: readonly (readonly string[])[] | 'all'): void {
  const stack: Frame[] = [];
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // string: find its end
      let j = i + 1;
      let escaped = false;
      for (; j < n; j++) {
        const d = text.charCodeAt(j);
        if (d === 0x5c) {
          escaped = true;
          j++;
        } else if (d === 0x22) break;
      }
      const top = stack[stack.length - 1];
      if (top !== undefined && top.object && top.expectKey) {
        const raw = text.slice(i + 1, j);
        const key = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : raw;
        if (top.keys!.has(key)) throw new JsonStrictError('duplicate object key');
        top.keys!.add(key);
        top.at = key;
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x7b || c === 0x5b) {
      const object = c === 0x7b;
      stack.push({ object, keys: object ? new Set() : null, at: object ? '' : '0', index: 0, expectKey: object });
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
    } else if (c === 0x2c) {
      const top = stack[stack.length - 1];
      if (top !== undefined) {
        if (top.object) top.expectKey = true;
        else top.at = String(++top.index);
      }
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      let j = i + 1;
      while (j < n) {
        const d = text.charCodeAt(j);
        if ((d >= 0x30 && d <= 0x39) || d === 0x2e || d === 0x65 || d === 0x45 || d === 0x2b || d === 0x2d) j++;
        else break;
      }
      if (watch === 'all' || watched(stack, watch)) {
        if (!numberIsExact(text.slice(i, j))) throw new JsonStrictError('number cannot be represented exactly');
      }
      i = j - 1;
    }
  }
}

function watched(stack: readonly Frame[], watch: readonly (readonly string[])[]): boolean {
  for (const p of watch) {
    if (p.length !== stack.length) continue;
    let k = 0;
    while (k < p.length && p[k] === stack[k]!.at) k++;
    if (k === p.length) return true;
  }
  return false;
}
