/**
 * Request-target normalization (RFC 3986 sections 6.2.2 and 5.2.4) and route patterns.
 *
 * The gateway matches routes on the normalized path and forwards exactly that path upstream, so
 * the upstream can never see a path that was not matched (`/public/../admin`, `%2e%2e`, `//`).
 * Unreserved characters are decoded, other percent-encodings are upper-cased and kept (`%2F`
 * stays encoded), dot segments are removed, empty segments are collapsed, and anything an upstream
 * might read differently from us is refused: NUL, invalid escapes, `..;`-style matrix dot segments.
 */

export class PathError extends Error {
  override readonly name = 'PathError';
}

export interface RequestTarget {
  /** The normalized path, always starting with "/". */
  readonly path: string;
  /** The raw query including the leading "?", or "". Forwarded unchanged. */
  readonly search: string;
}

const HEX = '0123456789ABCDEF';

function isUnreserved(c: number): boolean {
  return (
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e // - . _ ~
  );
}

/** Characters allowed literally in a path segment (pchar minus "%"), RFC 3986 section 3.3. */
function isPchar(c: number): boolean {
  return (
    isUnreserved(c) ||
    c === 0x21 || c === 0x24 || c === 0x26 || c === 0x27 || c === 0x28 || c === 0x29 || // ! $ & ' ( )
    c === 0x2a || c === 0x2b || c === 0x2c || c === 0x3b || c === 0x3d || // * + , ; =
    c === 0x3a || c === 0x40 // : @
  );
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/** Normalizes one raw segment's encoding. */
function normalizeSegment(raw: string): string {
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0x25) {
      const h = hexValue(raw.charCodeAt(i + 1));
      const l = hexValue(raw.charCodeAt(i + 2));
      if (h < 0 || l < 0) throw new PathError('invalid percent-encoding');
      const byte = h * 16 + l;
      if (byte === 0) throw new PathError('encoded NUL in path');
      if (isUnreserved(byte)) out += String.fromCharCode(byte);
      else out += '%' + HEX[h]! + HEX[l]!;
      i += 2;
    } else if (isPchar(c)) {
      out += raw[i];
    } else if (c < 0x20 || c === 0x7f) {
      throw new PathError('control character in path');
    } else {
      // Anything else (backslash, quotes, spaces, non-ASCII) is encoded so the upstream sees one form.
      for (const b of Buffer.from(raw[i]!, 'utf8')) out += '%' + HEX[b >> 4]! + HEX[b & 15]!;
    }
  }
  return out;
}

const ABSOLUTE_FORM = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)/;

/**
 * The authority of an absolute-form request target (`http://api.example.com/x` → `api.example.com`),
 * which a recipient takes instead of Host (RFC 9112 section 3.2.2); null for origin-form or a target
 * that is neither.
 */
export function targetAuthority(target: string): string | null {
  if (target.charCodeAt(0) === 0x2f) return null;
  return ABSOLUTE_FORM.exec(target)?.[1] ?? null;
}

/**
 * Normalizes a request-target (origin-form or absolute-form). Throws PathError on anything that
 * cannot be normalized safely.
 */
export function normalizeTarget(target: string): RequestTarget {
  let rest = target;
  if (rest.length === 0) throw new PathError('empty request target');
  if (rest.charCodeAt(0) !== 0x2f) {
    // absolute-form (RFC 9112 section 3.2.2): keep only path and query.
    const m = ABSOLUTE_FORM.exec(rest);
    if (m === null) throw new PathError('request target must be origin-form or absolute-form');
    // RFC 9110 section 4.2.4: userinfo in an http(s) URI is an error (it would name credentials to
    // the upstream in X-Forwarded-Host), and the host is never empty.
    if (m[1]!.includes('@')) throw new PathError('userinfo in the request target');
    if (m[1] === '') throw new PathError('no host in an absolute-form request target');
    // The authority stands for Host, so it is held to the same form (validHost).
    if (!validHost(m[1]!)) throw new PathError('an invalid host in the request target');
    rest = rest.slice(m[0].length) || '/';
    if (rest.charCodeAt(0) !== 0x2f) rest = '/' + rest;
  }
  const hash = rest.indexOf('#');
  if (hash !== -1) rest = rest.slice(0, hash);
  const q = rest.indexOf('?');
  const rawPath = q === -1 ? rest : rest.slice(0, q);
  const search = q === -1 ? '' : rest.slice(q);
  return { path: normalizePath(rawPath), search };
}

const MATRIX = /;|%3B/;

const SIMPLE_PATH = /^(?:\/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*\/?$/;

export function normalizePath(rawPath: string): string {
  // Fast path: nothing to decode, no dot or empty segments.
  if (SIMPLE_PATH.test(rawPath) && !rawPath.includes('/.') && rawPath.length > 0) return rawPath;
  const rawSegments = rawPath.split('/');
  const out: string[] = [];
  const last = rawSegments.length - 1;
  let trailingSlash = false;
  for (let i = 1; i <= last; i++) {
    const seg = normalizeSegment(rawSegments[i]!);
    if (seg === '.' || seg === '..') {
      if (seg === '..') out.pop();
      if (i === last) trailingSlash = true;
      continue;
    }
    // An encoded slash or backslash stays encoded, but an upstream that decodes it must not find a
    // dot segment inside (`..%2Fadmin`): refuse rather than guess how the upstream reads it.
    if (seg.includes('%2F') || seg.includes('%5C')) {
      for (const part of seg.split(/%2F|%5C/)) {
        const head = part.split(MATRIX)[0];
        if (head === '.' || head === '..') throw new PathError('dot segment hidden behind an encoded slash');
      }
    }
    // A matrix parameter, literal or encoded (`..;x`, `..%3B`), must not hide a dot segment.
    const semi = seg.search(MATRIX);
    if (semi !== -1) {
      const head = seg.slice(0, semi);
      if (head === '.' || head === '..') throw new PathError('dot segment with matrix parameters');
    }
    if (seg === '') {
      if (i === last) trailingSlash = true;
      continue;
    }
    out.push(seg);
  }
  if (out.length === 0) return '/';
  return '/' + out.join('/') + (trailingSlash ? '/' : '');
}

/** Splits a normalized path into segments (no empty ones except none at all for "/"). */
export function pathSegments(path: string): string[] {
  const out: string[] = [];
  for (let from = 1; from <= path.length; ) {
    let to = path.indexOf('/', from);
    if (to === -1) to = path.length;
    if (to > from) out.push(path.slice(from, to));
    from = to + 1;
  }
  return out;
}

/** A compiled `match.path` pattern: `*` is one segment, a trailing `/**` zero or more. */
export interface PathPattern {
  readonly source: string;
  readonly segments: readonly (string | null)[]; // null = `*`
  readonly rest: boolean; // trailing `/**`
}

export function compilePattern(source: string): PathPattern {
  let body = source;
  let rest = false;
  if (body === '/**') return { source, segments: [], rest: true };
  if (body.endsWith('/**')) {
    rest = true;
    body = body.slice(0, -3);
  }
  const segments = pathSegments(normalizePath(body)).map((s) => (s === '*' ? null : s));
  return { source, segments, rest };
}

export function matchPattern(pattern: PathPattern, segments: readonly string[]): boolean {
  const n = pattern.segments.length;
  if (pattern.rest ? segments.length < n : segments.length !== n) return false;
  for (let i = 0; i < n; i++) {
    const p = pattern.segments[i];
    if (p !== null && p !== segments[i]) return false;
  }
  return true;
}

/**
 * A Host value the upstream can be told of in X-Forwarded-Host: `uri-host [":" port]` (RFC 9112
 * section 3.2), a host name of letters, digits, `.`, `-`, `_` and `~`, or an IP literal. RFC 3986's
 * sub-delims in a reg-name (`,` `;` `&` `@`, …) are left out: no http host is spelled so, and a
 * framework reading X-Forwarded-Host takes `a.example, evil.example` as a list (Rails the last
 * entry) or `a@evil.example` as userinfo. An empty host is not one either (RFC 9110 section 4.2.1).
 */
export function validHost(value: string): boolean {
  return HOST.test(value);
}

const HOST = /^(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?$/;
