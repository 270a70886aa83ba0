/**
 * Parameter binding (SPEC section 4): a route's named parameters read from the JSON body (RFC 6901
 * pointer), the query, a path segment or a header, and their digest
 * `parameter_digest = "sha-256:" + base64url(SHA-256(JCS(params)))` (RFC 8785).
 *
 * Fail closed where the upstream could read the request differently from us: a body that is not
 * JSON (by media type or by syntax), a duplicate key, a query parameter given twice, a path segment
 * whose percent-encoding is not UTF-8 — all are `parameter_unparseable`. An absent parameter is
 * left out; a constraint that needs it then fails.
 *
 * A bound number a double cannot hold exactly (`100.0000000000000001`, `12345678901234567890`,
 * `1e400`) is valid JSON and is kept: the param holds the double JSON.parse made of it, and its
 * literal is recorded beside it (json.ts `numberSource`), so `max_amount` compares the decimal the
 * client wrote (SPEC section 4). The digest is RFC 8785's, which reads every number as a double:
 * `100.0000000000000001` digests as `100`, and `1e400` has no canonical form (see stage.ts).
 */
import { hash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { CompiledRoute } from '../config/compile.js';
import { Denial } from '../errors.js';
import { mediaTypeOf, rawHeaderLines } from '../http/headers.js';
import { foldName, jcs, JsonTooDeepError, keepNumberSources, MAX_JSON_DEPTH, numberIsExact, numberSource, parsePointer, resolvePointer, scanJson, setNumberSource } from './json.js';

export interface ParamsInput {
  /** Segments of the normalized path (still percent-encoded). */
  readonly segments: readonly string[];
  /** Raw query with its "?", or "". */
  readonly search: string;
  readonly headers: IncomingHttpHeaders;
  /** The request's raw header lines: a header parameter given twice is told from one value with a comma. */
  readonly rawHeaders?: readonly string[];
  readonly body: Buffer | null;
  readonly contentType?: string | undefined;
}

type Source =
  | { readonly kind: 'body'; readonly name: string; readonly pointer: readonly string[] }
  | { readonly kind: 'query'; readonly name: string; readonly key: string }
  | { readonly kind: 'path'; readonly name: string; readonly index: number }
  | { readonly kind: 'header'; readonly name: string; readonly header: string };

interface CompiledParams {
  readonly sources: readonly Source[];
  readonly pointers: readonly (readonly string[])[];
  readonly readsBody: boolean;
  readonly readsQuery: boolean;
}

const COMPILED = new WeakMap<CompiledRoute, CompiledParams>();

function compile(route: CompiledRoute): CompiledParams {
  let c = COMPILED.get(route);
  if (c !== undefined) return c;
  const sources: Source[] = [];
  for (const [name, src] of route.params) {
    if ('body' in src) sources.push({ kind: 'body', name, pointer: parsePointer(src.body) });
    else if ('query' in src) sources.push({ kind: 'query', name, key: src.query });
    else if ('path' in src) sources.push({ kind: 'path', name, index: src.path });
    else sources.push({ kind: 'header', name, header: src.header.toLowerCase() });
  }
  const pointers = sources.flatMap((s) => (s.kind === 'body' ? [s.pointer] : []));
  c = Object.freeze({ sources: Object.freeze(sources), pointers: Object.freeze(pointers), readsBody: pointers.length > 0, readsQuery: sources.some((s) => s.kind === 'query') });
  COMPILED.set(route, c);
  return c;
}

const unparseable = (description: string, cause?: unknown): Denial =>
  new Denial('parameter_unparseable', cause === undefined ? { description } : { description, cause });

/** `application/json` or any `+json` media type, parameters ignored. */
export function isJsonMediaType(contentType: string | undefined): boolean {
  const type = mediaTypeOf(contentType);
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

/**
 * The Content-Type of a body the gateway reads as JSON, or undefined when there is none; refused
 * where the upstream could read the body otherwise: more than one field (which one counts differs
 * between servers), or a `charset` other than UTF-8, the only one the gateway decodes. An upstream
 * that honours it would read members the decision never saw: Express's body-parser decodes utf-7
 * and utf-16 through iconv-lite, and in UTF-7 `+ACI-` is a quote (r13c F1). Every `charset`
 * parameter counts, quoted or not, even one the upstream's parser might take for another's value.
 * So is a content coding (`Content-Encoding` other than `identity`): the gateway decides on the bytes
 * as sent, an upstream that decodes them (Express's body-parser: gzip, deflate, br) reads others, and
 * one body can be JSON as sent and other JSON decoded (r19b 1).
 * Throws Denial('parameter_unparseable').
 */
export function jsonBodyContentType(raw: readonly string[]): string | undefined {
  for (const coding of rawHeaderLines(raw, 'content-encoding')) {
    for (const c of coding.split(',')) {
      const name = c.trim().toLowerCase();
      if (name !== '' && name !== 'identity') throw unparseable('a body the gateway reads for its decision must not be content-encoded');
    }
  }
  const fields = rawHeaderLines(raw, 'content-type');
  if (fields.length > 1) throw unparseable('the request has more than one Content-Type');
  const value = fields[0];
  if (value !== undefined) {
    for (const charset of declaredCharsets(value)) {
      if (charset !== 'utf-8' && charset !== 'utf8') throw unparseable('the request body must be UTF-8: a charset other than utf-8 is declared');
    }
  }
  return value;
}

/**
 * Every `charset` parameter of a Content-Type value, lower-cased, quoted or not (see above). One in
 * RFC 2231's extended or continued form (`charset*=''utf-7`, `charset*0=utf; charset*1=-7`), which
 * Python's email parser, Django and Go read and no client needs, counts as `*`, a charset no caller
 * accepts.
 */
export function declaredCharsets(contentType: string): string[] {
  const lower = contentType.toLowerCase();
  const out = Array.from(lower.matchAll(CHARSET), (m) => m[1]!);
  if (EXTENDED_CHARSET.test(lower)) out.push('*');
  return out;
}

const CHARSET = /charset\s*=\s*"?([^";,\s]*)/g;
const EXTENDED_CHARSET = /charset\s*\*/;

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Where JSON.parse's message says it stopped: its last words, after any text it quotes. */
const JSON_ERROR_POSITION = /at position (\d+)(?: \(line \d+ column \d+\))?$/;

/**
 * Parses a JSON body strictly (UTF-8, no BOM, syntax, no duplicate keys at `pointers` or everywhere
 * with 'all'). A number there that a double cannot hold exactly is kept: its literal is recorded
 * beside the parsed value (json.ts `numberSource`). Throws Denial('parameter_unparseable').
 * Exported for the MCP handler, whose `arguments` are all parameters.
 */
export function parseJsonStrict(body: Buffer | string, pointers: readonly (readonly string[])[] | 'all'): unknown {
  let text: string;
  try {
    text = typeof body === 'string' ? body : UTF8.decode(body);
  } catch (err) {
    throw unparseable('the request body is not valid UTF-8', err);
  }
  if (text.charCodeAt(0) === 0xfeff) throw unparseable('the request body starts with a byte order mark');
  // The scan first: it refuses a body nested too deeply before JSON.parse spends time on it. Its
  // other findings wait for JSON.parse, so that text which is not JSON is reported as such.
  let found: ReturnType<typeof scanJson> = null;
  let ambiguous: unknown = null;
  try {
    found = scanJson(text, pointers);
  } catch (err) {
    if (err instanceof JsonTooDeepError) throw unparseable(`the request body nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`, err);
    ambiguous = err;
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    // Only where: V8's message quotes the body around the error, a secret there included.
    const at = JSON_ERROR_POSITION.exec((err as Error).message)?.[1];
    throw unparseable('the request body is not valid JSON', at === undefined ? undefined : `at position ${at}`);
  }
  if (ambiguous !== null) throw unparseable('the request body is ambiguous JSON (a duplicate key, or keys that differ only in case)', ambiguous);
  if (found !== null) keepNumberSources(doc, found);
  return doc;
}

/**
 * Carries a bound number's kept literal over to the param: the literal recorded under the number's
 * container, or for a document that is one number, the body itself. Allocates only for such numbers.
 */
function keepSource(out: Record<string, unknown>, name: string, doc: unknown, pointer: readonly string[], body: Buffer): void {
  let lit: string | undefined;
  if (pointer.length === 0) {
    const text = body.toString('utf8').trim();
    if (!numberIsExact(text)) lit = text;
  } else {
    let container = doc;
    for (let i = 0; i < pointer.length - 1; i++) container = (container as Record<string, unknown>)[pointer[i]!];
    lit = numberSource(container as object, pointer[pointer.length - 1]!);
  }
  if (lit !== undefined) setNumberSource(out, name, lit);
}

function setParam(out: Record<string, unknown>, name: string, value: unknown): void {
  // defineProperty: a parameter may be named `__proto__` without touching any prototype.
  Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
}

/** Reads a route's parameters. Absent ones are left out. Throws Denial('parameter_unparseable'). */
export function extractParams(route: CompiledRoute, input: ParamsInput): Record<string, unknown> {
  const c = compile(route);
  const out: Record<string, unknown> = {};
  if (c.sources.length === 0) return out;

  let doc: unknown;
  if (c.readsBody && input.body !== null && input.body.length > 0) {
    if (!isJsonMediaType(input.contentType)) throw unparseable('the request body must be JSON to read its parameters');
    doc = parseJsonStrict(input.body, c.pointers);
  }
  const query = c.readsQuery && input.search.length > 1 ? new URLSearchParams(input.search.slice(1)) : null;

  for (const s of c.sources) {
    let value: unknown;
    switch (s.kind) {
      case 'body':
        value = doc === undefined ? undefined : resolvePointer(doc, s.pointer);
        if (typeof value === 'number') keepSource(out, s.name, doc, s.pointer, input.body!);
        break;
      case 'query': {
        if (query === null) break;
        const all = query.getAll(s.key);
        if (all.length > 1) throw unparseable('a query parameter is repeated');
        if (queryAlias(query, s.key)) throw unparseable('a query parameter is also given under another spelling (case, brackets, leading space)');
        value = all[0];
        break;
      }
      case 'path': {
        const seg = input.segments[s.index];
        if (seg === undefined) break;
        try {
          value = decodeURIComponent(seg);
        } catch (err) {
          throw unparseable('a path segment is not valid percent-encoded UTF-8', err);
        }
        break;
      }
      case 'header': {
        const h = input.headers[s.header];
        // Node joins a repeated field (`a, b`), or keeps only the first of some names: two fields
        // are two values, and the upstream may read either (Go's Header.Get the first; r21k D2).
        if (Array.isArray(h) || (input.rawHeaders !== undefined && h !== undefined && rawHeaderLines(input.rawHeaders, s.header).length > 1)) throw unparseable('a header parameter is repeated');
        if (headerAlias(input.headers, s.header)) throw unparseable('a header parameter is also given with underscores');
        value = h;
        break;
      }
    }
    if (value !== undefined) setParam(out, s.name, value);
  }
  return out;
}

/**
 * A query key other than `key` that some server reads as `key`: ASP.NET Core compares keys
 * case-insensitively, PHP strips leading spaces, reads `.` and ` ` as `_` and `key[]` as an array of
 * `key` (the last one wins), so `Amount=`, `+amount=` or `amount[]=` beside `amount=` is a second,
 * unchecked value.
 */
function queryAlias(query: URLSearchParams, key: string): boolean {
  const folded = queryFold(key);
  for (const k of query.keys()) {
    if (k !== key && queryFold(k) === folded) return true;
  }
  return false;
}

/**
 * True when the query (`?...`) names a method override as some server reads names (queryFold, `-`
 * as `_`): Symfony and Laravel take the method from `_method`, Express's method-override can
 * (`POST /x?_method=DELETE` runs a DELETE), and ASP.NET MVC 5 and ServiceStack from
 * `X-HTTP-Method-Override` in the query as in the header (r20a 2). Only a query mentioning "method"
 * or holding a percent-escape is parsed.
 */
export function overridesMethod(search: string): boolean {
  if (search.length < 8 || (!search.includes('%') && !/method/i.test(search))) return false;
  for (const k of new URLSearchParams(search).keys()) if (METHOD_OVERRIDES.has(queryFold(k).replaceAll('-', '_'))) return true;
  return false;
}

const METHOD_OVERRIDES: ReadonlySet<string> = new Set(['_method', 'x_http_method_override', 'x_http_method', 'x_method_override']);

/**
 * A form or query name as the most lenient servers read it: case-folded (ASP.NET Core, Java's
 * equalsIgnoreCase), leading space stripped, `.` and ` ` read as `_`, `name[...]` as `name` (PHP),
 * and cut at a NUL (`amount%00x`: a server in C reads `amount`; r19b).
 */
export function queryFold(k: string): string {
  // Cut by indexOf, not a pattern: `/\[.*$/` backtracks quadratically on a name of many `[` before a
  // newline (which `.` does not match: it also left `name[\n]` uncut), a second of CPU for 64 KB (r19c 1).
  const nul = k.indexOf('\0');
  let name = (nul === -1 ? k : k.slice(0, nul)).trimStart();
  const bracket = name.indexOf('[');
  if (bracket !== -1) name = name.slice(0, bracket);
  return foldName(name.replace(/[ .]/g, '_'));
}

/** A header named as `header` with underscores for dashes: CGI, WSGI, PHP and Rack read both as one. */
function headerAlias(headers: IncomingHttpHeaders, header: string): boolean {
  if (!header.includes('-')) return false;
  for (const k of Object.keys(headers)) {
    if (k !== header && k.includes('_') && k.replaceAll('_', '-') === header) return true;
  }
  return false;
}

function digest(value: unknown): string {
  return 'sha-256:' + hash('sha256', jcs(value), 'base64url');
}

/** `"sha-256:" + base64url(SHA-256(JCS(params)))`, no envelope (mission-contracts section 4). */
export function parameterDigest(params: Readonly<Record<string, unknown>>): string {
  return digest(params);
}

/**
 * parameterDigest, or null when the params have no RFC 8785 form: only a body number beyond the
 * double range (`1e400`). Such a request is still decided exactly (a max_amount denies it), but a
 * permit is bound to its digest, so it is refused with `undigestable()` (routes and MCP alike).
 */
export function digestOrNull(params: Readonly<Record<string, unknown>>): string | null {
  try {
    return digest(params);
  } catch {
    return null;
  }
}

/** The denial of a request that would be permitted but has no parameter_digest (digestOrNull). */
export function undigestable(): Denial {
  return new Denial('parameter_unparseable', { description: 'a parameter is a number beyond the range RFC 8785 can canonicalize' });
}

/**
 * `authority_hash` (mission-contracts section 7):
 * `"sha-256:" + base64url(SHA-256(JCS({"typ":"mission-authority-set","iss":issuer,"value":entries})))`.
 */
export function authorityHash(issuer: string, entries: readonly unknown[]): string {
  return digest({ typ: 'mission-authority-set', iss: issuer, value: entries });
}

/** Entry digest: the same construction with `typ` `mission-authority-entry`. */
export function entryDigest(issuer: string, entry: unknown): string {
  return digest({ typ: 'mission-authority-entry', iss: issuer, value: entry });
}
