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
  const flat = flatJcs(value);
  if (flat !== null) return flat;
  const out = canonicalize(value);
  if (out === undefined) throw new TypeError('value has no JSON form');
  return out;
}

/**
 * The common parameter shape (one plain object of strings, finite numbers, booleans and nulls)
 * serialized directly: keys sorted by UTF-16 code units, values as JSON.stringify writes them, which
 * is exactly what RFC 8785 (and the canonicalize package) gives for such an object. Anything else
 * (nesting, arrays, toJSON, undefined members) returns null and goes through canonicalize.
 */
function flatJcs(value: unknown): string | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return null;
  const o = value as Record<string, unknown>;
  const keys = Object.keys(o).sort();
  let out = '{';
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!;
    const v = o[k];
    const t = typeof v;
    if (!(t === 'string' || t === 'boolean' || v === null || (t === 'number' && Number.isFinite(v)))) return null;
    out += (i === 0 ? '' : ',') + JSON.stringify(k) + ':' + JSON.stringify(v);
  }
  return out + '}';
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
  /** True when a watched pointer runs through this container (or everything is watched). */
  readonly onPath: boolean;
  /** True when this container is (inside) a watched value: all of it is a parameter. */
  readonly inside: boolean;
  /** Keys seen so far (objects on a watched path only). */
  readonly keys: Set<string> | null;
  /** Current key (objects). */
  key: string;
  /** Current index (arrays). */
  index: number;
  expectKey: boolean;
}

/**
 * Scans JSON text that JSON.parse accepted: throws JsonStrictError on a duplicate key in an object a
 * watched pointer runs through, or on a number that is not exact at a watched pointer. `watch` are
 * parsed pointers; 'all' checks every object and number (MCP `arguments`, all of which are
 * parameters). Members off the watched paths cannot change the decision, so they are not checked.
 */
export function scanJson(text: string, watch: readonly (readonly string[])[] | 'all'): void {
  const all = watch === 'all';
  const stack: Frame[] = [];
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // String: jump to the next quote not escaped by an odd run of backslashes.
      let j = text.indexOf('"', i + 1);
      for (;;) {
        if (j === -1) throw new JsonStrictError('unterminated string'); // only on text JSON.parse rejects
        let k = j - 1;
        while (text.charCodeAt(k) === 0x5c) k--;
        if ((j - 1 - k) % 2 === 0) break;
        j = text.indexOf('"', j + 1);
      }
      const top = stack[stack.length - 1];
      if (top !== undefined && top.onPath && top.object && top.expectKey) {
        const raw = text.slice(i + 1, j);
        const key = raw.includes('\\') ? (JSON.parse(text.slice(i, j + 1)) as string) : raw;
        if (top.keys!.has(key)) throw new JsonStrictError('duplicate object key');
        top.keys!.add(key);
        top.key = key;
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x7b || c === 0x5b) {
      const object = c === 0x7b;
      const parent = stack[stack.length - 1];
      const w = watch as readonly (readonly string[])[];
      const inside = all || (parent === undefined ? w.some((p) => p.length === 0) : parent.inside || (parent.onPath && watched(stack, w)));
      const onPath = inside || ((parent === undefined || parent.onPath) && throughWatched(stack, w));
      stack.push({ object, onPath, inside, keys: object && onPath ? new Set() : null, key: '', index: 0, expectKey: object });
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
    } else if (c === 0x2c) {
      const top = stack[stack.length - 1];
      if (top !== undefined && top.onPath) {
        if (top.object) top.expectKey = true;
        else top.index++;
      }
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      let j = i + 1;
      while (j < n) {
        const d = text.charCodeAt(j);
        if ((d >= 0x30 && d <= 0x39) || d === 0x2e || d === 0x65 || d === 0x45 || d === 0x2b || d === 0x2d) j++;
        else break;
      }
      const top = stack[stack.length - 1];
      if (all || (top === undefined ? watch.length > 0 : top.inside || (top.onPath && watched(stack, watch as readonly (readonly string[])[])))) {
        if (!numberIsExact(text.slice(i, j))) throw new JsonStrictError('number cannot be represented exactly');
      }
      i = j - 1;
    }
  }
}

function tokenAt(f: Frame): string {
  return f.object ? f.key : String(f.index);
}

/** True when some watched pointer continues below the current position (the stack's path). */
function throughWatched(stack: readonly Frame[], watch: readonly (readonly string[])[]): boolean {
  for (const p of watch) {
    if (p.length <= stack.length) continue;
    let k = 0;
    while (k < stack.length && p[k] === tokenAt(stack[k]!)) k++;
    if (k === stack.length) return true;
  }
  return false;
}

function watched(stack: readonly Frame[], watch: readonly (readonly string[])[]): boolean {
  for (const p of watch) {
    if (p.length !== stack.length) continue;
    let k = 0;
    while (k < p.length && p[k] === tokenAt(stack[k]!)) k++;
    if (k === p.length) return true;
  }
  return false;
}
