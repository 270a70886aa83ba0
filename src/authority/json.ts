/**
 * Strict reading of JSON the gateway decides on. `JSON.parse` alone is not enough, because the
 * upstream may read the same bytes differently:
 * - duplicate object keys (`{"amount":1,"amount":9000}`): JSON.parse keeps the last, other parsers
 *   the first, so any duplicate key makes the document unreadable. Names equal but for case count
 *   as duplicates (`{"amount":1,"AMOUNT":9000}`): Go's encoding/json and ASP.NET Core bind members
 *   case-insensitively (Go also folds `ſ` onto `s` and the Kelvin sign onto `k`), last one wins;
 * - numbers that a double cannot hold (`500.000000000000000001` parses to 500, `1e400` to
 *   Infinity): JSON.parse loses the decimal the client wrote. Such a number at a watched position
 *   is kept: its source text is recorded beside the parsed value (a side table
 *   keyed by the containing object or array, `numberSource`), so a decision can read the exact
 *   decimal while everything else sees the double.
 * One linear scan over the (already syntax-checked) text does both; a body whose numbers are all
 * exact allocates nothing for them.
 */
import canonicalizeModule from 'canonicalize';

// The package is CommonJS (`module.exports = serialize`) but its typings declare an ES default
// export, so under NodeNext the default import is the function at runtime yet typed as a namespace.
const canonicalize = canonicalizeModule as unknown as (value: unknown) => string | undefined;

/** RFC 8785 JSON Canonicalization Scheme. Throws on values without a JSON form (NaN, Infinity, undefined). */
export function jcs(value: unknown): string {
  const plain = plainJcs(value);
  if (plain !== null) return plain;
  const out = canonicalize(value);
  if (out === undefined) throw new TypeError('value has no JSON form');
  return out;
}

/**
 * JSON as JSON.parse gives it (plain objects and arrays of strings, finite numbers, booleans and
 * nulls) serialized directly: object keys sorted by UTF-16 code units, everything else as
 * JSON.stringify writes it, which is exactly RFC 8785 (and the canonicalize package) for such a
 * value; an array of primitives in one JSON.stringify. Several times faster than canonicalize on a
 * large body (r19c 2: 125 ms for 520,000 numbers). Anything else (toJSON, another prototype,
 * undefined members, non-finite numbers) returns null and goes through canonicalize.
 */
function plainJcs(value: unknown): string | null {
  if (typeof value !== 'object' || value === null) return primitive(value) ? JSON.stringify(value) : null;
  if (Array.isArray(value)) {
    if (value.every(primitive)) return JSON.stringify(value);
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      const v = plainJcs(value[i]);
      if (v === null) return null;
      out += (i === 0 ? '' : ',') + v;
    }
    return out + ']';
  }
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return null;
  const o = value as Record<string, unknown>;
  const keys = Object.keys(o).sort();
  let out = '{';
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!;
    const v = plainJcs(o[k]);
    if (v === null) return null;
    out += (i === 0 ? '' : ',') + JSON.stringify(k) + ':' + v;
  }
  return out + '}';
}

function primitive(v: unknown): boolean {
  const t = typeof v;
  return t === 'string' || t === 'boolean' || v === null || (t === 'number' && Number.isFinite(v));
}

export class JsonStrictError extends Error {
  override readonly name = 'JsonStrictError';
}

/**
 * Arrays and objects nested deeper than this are refused. No request a gateway decides on needs
 * more (serde_json stops at 128), and a body of a million brackets, within `max_body_bytes`, held
 * the event loop for 1.5 s in JSON.parse and this scan (r13c F4).
 */
export const MAX_JSON_DEPTH = 256;

/** Thrown by scanJson past MAX_JSON_DEPTH, before the rest of the text is looked at. */
export class JsonTooDeepError extends JsonStrictError {}

const NON_ASCII = /[^\x00-\x7f]/;

/**
 * A member name as case-insensitive readers compare it: lower case, and beyond ASCII folded through
 * upper case as well, so `ſ` (U+017F) is `s`, the Kelvin sign `k`, `ß` and `ẞ` both `ss`. It folds
 * at least as much as Go's encoding/json (ToUpper(ToLower(rune))) and .NET's ordinal ignore-case;
 * folding more only refuses more documents.
 */
export function foldName(name: string): string {
  const lower = name.toLowerCase();
  return NON_ASCII.test(lower) ? lower.toUpperCase().toLowerCase() : lower;
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

/**
 * True when the literal denotes exactly the decimal shown by the shortest form of the double it
 * parses to. `-0` (and `-0.0`, `-0e5`) is exact: zero; `-1e-400`, which also parses to -0, is not.
 */
export function numberIsExact(lit: string): boolean {
  // An integer of at most 15 digits is exact in a double (2^53 has 16): no conversion needed.
  if (lit.length <= 16 && SHORT_INTEGER.test(lit)) return true;
  const n = Number(lit);
  if (!Number.isFinite(n)) return false;
  if (n === 0) return numberLiteralValue(lit) === '0';
  return numberLiteralValue(lit) === numberLiteralValue(String(n));
}

const SHORT_INTEGER = /^(?:0|-?[1-9][0-9]{0,14})$/;

/** A number at a watched position that a double cannot hold exactly: where it is, and its text. */
export interface InexactNumber {
  /** The scan's frame of its object or array; null for a document that is one number. */
  readonly container: ScanFrame | null;
  /** Its member name or array index there. */
  readonly key: string;
  readonly source: string;
}

/** Source text of kept inexact numbers, per containing object or array, by member name or index. */
const SOURCES = new WeakMap<object, Map<string, string>>();

/**
 * The literal of the number at `container[key]` when it was kept because a double cannot hold it
 * exactly (parseJsonStrict, or setNumberSource); undefined for every other member,
 * whose value is exactly the number it holds.
 */
export function numberSource(container: object, key: string): string | undefined {
  return SOURCES.get(container)?.get(key);
}

/** Records `source` as the literal of the number at `container[key]` (see numberSource). */
export function setNumberSource(container: object, key: string, source: string): void {
  let m = SOURCES.get(container);
  if (m === undefined) {
    m = new Map();
    SOURCES.set(container, m);
  }
  m.set(key, source);
}

/**
 * Records the scan's inexact numbers beside `doc`, the JSON.parse result of the same text: each
 * under its container. A number that is the whole document has no container and is not recorded.
 * Each container is found once (from its parent's, memoized on the frame), so many numbers deep
 * in a document cost one walk down, not one per number.
 */
export function keepNumberSources(doc: unknown, found: readonly InexactNumber[]): void {
  for (const { container, key, source } of found) {
    if (container === null) continue;
    const target = resolveFrame(doc, container);
    if (target !== null && typeof target === 'object') setNumberSource(target, key, source);
  }
}

/** The parsed value a scan frame stands for: the nearest resolved ancestor, then down. */
function resolveFrame(doc: unknown, frame: ScanFrame): unknown {
  const chain: ScanFrame[] = [];
  let f: ScanFrame | undefined = frame;
  while (f !== undefined && f.value === undefined) {
    chain.push(f);
    f = f.parent;
  }
  let node: unknown = f === undefined ? doc : f.value;
  for (let i = chain.length - 1; i >= 0; i--) {
    const c = chain[i]!;
    if (c.parent !== undefined) node = node !== null && typeof node === 'object' ? (node as Record<string | number, unknown>)[c.at] : undefined;
    c.value = node;
  }
  return node;
}

/**
 * JSON.stringify for parsed documents that writes a kept number as its source text instead of the
 * double it parsed to, so a rewritten document says what the client wrote (for a body rebuilt from
 * part of a parsed one, such as an MCP batch with denied calls removed).
 */
export function stringifyExact(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  const kept = SOURCES.get(value);
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      out += (i === 0 ? '' : ',') + ((typeof v === 'number' ? kept?.get(String(i)) : undefined) ?? (v === undefined ? 'null' : stringifyExact(v)));
    }
    return out + ']';
  }
  const o = value as Record<string, unknown>;
  let out = '{';
  let first = true;
  for (const k of Object.keys(o)) {
    const v = o[k];
    if (v === undefined || typeof v === 'function' || typeof v === 'symbol') continue;
    out += (first ? '' : ',') + JSON.stringify(k) + ':' + ((typeof v === 'number' ? kept?.get(k) : undefined) ?? stringifyExact(v));
    first = false;
  }
  return out + '}';
}

/** One open object or array during a scan. */
export interface ScanFrame {
  readonly parent: ScanFrame | undefined;
  /** Where it sits in its parent: a member name or an array index (unread at the root). */
  readonly at: string | number;
  /** The parsed value it stands for, once keepNumberSources has looked it up. */
  value: unknown;
  readonly object: boolean;
  /** True when a watched pointer runs through this container (or everything is watched). */
  readonly onPath: boolean;
  /** True when this container is (inside) a watched value: all of it is a parameter. */
  readonly inside: boolean;
  /** Keys seen so far, case-folded (foldName; objects on a watched path only). */
  readonly keys: Set<string> | null;
  /** Current key (objects). */
  key: string;
  /** Current index (arrays). */
  index: number;
  expectKey: boolean;
}

/**
 * Scans JSON text, which JSON.parse must accept too (what this returns or throws for other text
 * means nothing; parseJsonStrict runs it first only to refuse deep nesting, JsonTooDeepError, before
 * JSON.parse spends time on it): throws JsonStrictError on a duplicate key (foldName) in
 * an object a watched pointer runs through, and returns the numbers at watched positions that a
 * double cannot hold exactly, with their container and key (null when there is none, the common
 * case: nothing is allocated for exact numbers). `watch` are parsed pointers; 'all' checks every object and number
 * (MCP `arguments`, all of which are parameters). Members off the watched paths cannot change the
 * decision, so they are not checked.
 */
export function scanJson(text: string, watch: readonly (readonly string[])[] | 'all'): InexactNumber[] | null {
  const all = watch === 'all';
  const stack: ScanFrame[] = [];
  let found: InexactNumber[] | null = null;
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
        const folded = foldName(key);
        if (top.keys!.has(folded)) throw new JsonStrictError('duplicate object key (names that differ only in case count as one)');
        top.keys!.add(folded);
        top.key = key;
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x7b || c === 0x5b) {
      if (stack.length === MAX_JSON_DEPTH) throw new JsonTooDeepError(`nested deeper than ${MAX_JSON_DEPTH} levels`);
      const object = c === 0x7b;
      const parent = stack[stack.length - 1];
      const w = watch as readonly (readonly string[])[];
      const inside = all || (parent === undefined ? w.some((p) => p.length === 0) : parent.inside || (parent.onPath && watched(stack, w)));
      const onPath = inside || ((parent === undefined || parent.onPath) && throughWatched(stack, w));
      const at = parent === undefined ? 0 : parent.object ? parent.key : parent.index;
      stack.push({ parent, at, value: undefined, object, onPath, inside, keys: object && onPath ? new Set() : null, key: '', index: 0, expectKey: object });
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
        const lit = text.slice(i, j);
        if (!numberIsExact(lit)) {
          (found ??= []).push({ container: top ?? null, key: top === undefined ? '' : tokenAt(top), source: lit });
        }
      }
      i = j - 1;
    }
  }
  return found;
}

function tokenAt(f: ScanFrame): string {
  return f.object ? f.key : String(f.index);
}

/** True when some watched pointer continues below the current position (the stack's path). */
function throughWatched(stack: readonly ScanFrame[], watch: readonly (readonly string[])[]): boolean {
  for (const p of watch) {
    if (p.length <= stack.length) continue;
    let k = 0;
    while (k < stack.length && p[k] === tokenAt(stack[k]!)) k++;
    if (k === stack.length) return true;
  }
  return false;
}

function watched(stack: readonly ScanFrame[], watch: readonly (readonly string[])[]): boolean {
  for (const p of watch) {
    if (p.length !== stack.length) continue;
    let k = 0;
    while (k < p.length && p[k] === tokenAt(stack[k]!)) k++;
    if (k === p.length) return true;
  }
  return false;
}
