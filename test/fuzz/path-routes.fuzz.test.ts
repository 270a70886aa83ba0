/**
 * SPEC section 4 (route matching on the normalized path) and section 6 (the upstream receives
 * exactly the matched path) under fuzzing:
 * - normalizeTarget throws only PathError, in bounded time, and its output is a fixed point with no
 *   dot or empty segments, only RFC 3986 pchars and upper-case escapes of reserved octets;
 * - an upstream that parses the forwarded path with the WHATWG URL parser, or decodes it segment by
 *   segment, finds the same segments the gateway matched (no hidden `..`);
 * - findRoute agrees with a reference model of `*`, trailing `/**`, methods and first-match-wins.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileRoutes, findRoute } from '../../src/config/compile.js';
import { configSchema } from '../../src/config/schema.js';
import { normalizePath, normalizeTarget, pathSegments } from '../../src/http/path.js';
import { bounded, kindOf, RUNS } from './bounds.js';

const pieces = fc.constantFrom(
  '/', '//', '.', '..', '%2e', '%2E', '%2e%2e', '.%2e', '%2f', '%2F', '%5c', '\\', ';', ';x=1', '..;', '%3B', '%00', '%', '%g1', '%41', '%7e', '~',
  'a', 'b', 'admin', 'public', 'x y', '?', '#', '@', ':', '+', '%25', 'é', '\u0000', '\u007f', '*', '|', '^', '"', '<', '`', '{',
);
const rawPath = fc.array(fc.oneof({ weight: 4, arbitrary: pieces }, { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 4 }) }), { maxLength: 24 }).map((p) => '/' + p.join(''));
const rawTarget = fc.oneof(
  { weight: 6, arbitrary: rawPath },
  { weight: 1, arbitrary: rawPath.map((p) => `http://h.example${p}`) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }) },
);

const PCHAR_OR_ESCAPE = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-F]{2})*$/;

describe('SPEC §4/§6 request-target normalization under fuzzing (RFC 3986 §6.2.2, §5.2.4)', () => {
  it('throws only PathError, in bounded time; the result is normalized and a fixed point', () => {
    fc.assert(
      fc.property(rawTarget, (t) => {
        const out = bounded(() => normalizeTarget(t));
        if (!out.ok) {
          expect(kindOf(out.error)).toBe('PathError');
          return;
        }
        const { path, search } = out.value;
        expect(path.startsWith('/')).toBe(true);
        expect(search === '' || search.startsWith('?')).toBe(true);
        expect(path.includes('#')).toBe(false);
        expect(normalizePath(path)).toBe(path);
        const segs = path.split('/').slice(1);
        segs.forEach((s, i) => {
          // Only the last segment may be empty (a trailing slash, or the root "/").
          if (s === '') expect(i).toBe(segs.length - 1);
          expect(s === '.' || s === '..').toBe(false);
          expect(s).toMatch(PCHAR_OR_ESCAPE);
        });
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it('an upstream reading the forwarded path (WHATWG URL, per-segment decoding) sees the matched segments', () => {
    fc.assert(
      fc.property(rawPath, (raw) => {
        let path: string;
        try {
          path = normalizeTarget(raw).path;
        } catch {
          return;
        }
        // A WHATWG-based upstream (Node, browsers' fetch, many frameworks) keeps the path as is.
        expect(new URL(path, 'http://upstream.example').pathname).toBe(path);
        // An upstream that decodes each segment, and treats a decoded "/" or "\" as a separator,
        // finds no dot segment anywhere.
        for (const seg of pathSegments(path)) {
          let decoded: string;
          try {
            decoded = decodeURIComponent(seg);
          } catch {
            continue; // not UTF-8: such an upstream refuses it
          }
          for (const part of decoded.split(/[/\\]/)) {
            const head = part.split(';')[0];
            expect(head === '.' || head === '..').toBe(false);
          }
        }
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it('pathological targets stay bounded', () => {
    const big = ['/' + '../'.repeat(50_000), '/' + '%2e%2e/'.repeat(30_000), '/' + 'a/'.repeat(60_000), '/' + '%'.repeat(100_000), '/' + 'é'.repeat(50_000), '/' + ';'.repeat(100_000), '/' + '%2F..'.repeat(20_000)];
    for (const t of big) {
      const out = bounded(() => normalizeTarget(t), 1000);
      if (!out.ok) expect(kindOf(out.error)).toBe('PathError');
    }
  });
});

// ---- routes ---------------------------------------------------------------------------------------

const segName = fc.constantFrom('a', 'b', 'c', 'invoices', 'x');
const patternArb = fc
  .tuple(fc.array(fc.oneof(segName, fc.constant('*')), { maxLength: 3 }), fc.boolean())
  .map(([segs, rest]) => (rest ? (segs.length === 0 ? '/**' : '/' + segs.join('/') + '/**') : '/' + segs.join('/')));
const methodArb = fc.option(fc.oneof(fc.constantFrom('GET', 'POST', 'DELETE'), fc.constantFrom(['GET', 'POST'], ['PUT'])), { nil: undefined });
const routesArb = fc.uniqueArray(fc.record({ path: patternArb, method: methodArb }), {
  minLength: 1,
  maxLength: 6,
  selector: (r) => `${JSON.stringify(r.method === undefined ? '*' : [r.method].flat().sort())} ${r.path}`,
});
const requestArb = fc.record({ method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH'), segments: fc.array(segName, { maxLength: 5 }) });

/** The reference model, straight from the SPEC text: `*` one segment, trailing `/**` zero or more. */
function modelMatches(pattern: string, segments: readonly string[]): boolean {
  const rest = pattern.endsWith('/**');
  const body = rest ? pattern.slice(0, -3) : pattern;
  const p = body.split('/').filter((s) => s !== '');
  if (rest ? segments.length < p.length : segments.length !== p.length) return false;
  return p.every((s, i) => s === '*' || s === segments[i]);
}

function modelRoute(routes: readonly { path: string; method: string | readonly string[] | undefined }[], method: string, segments: readonly string[]): number | null {
  for (let i = 0; i < routes.length; i++) {
    const r = routes[i]!;
    if (r.method !== undefined && ![r.method].flat().includes(method)) continue;
    if (modelMatches(r.path, segments)) return i;
  }
  return null;
}

describe('SPEC §4 route matching against a reference model (first match wins)', () => {
  it('findRoute picks exactly the route the model picks, and none when the model finds none', () => {
    fc.assert(
      fc.property(routesArb, requestArb, (routes, req) => {
        const config = configSchema.parse({
          public_base_url: 'https://api.example.com',
          resource: 'https://api.example.com',
          upstream: { url: 'http://127.0.0.1:1' },
          issuers: [{ issuer: 'https://as.example.com' }],
          routes: routes.map((r, i) => ({ match: r.method === undefined ? { path: r.path } : { path: r.path, method: r.method }, action: `a${i}` })),
        });
        const compiled = compileRoutes(config);
        const got = bounded(() => findRoute(compiled, req.method, req.segments));
        if (!got.ok) throw got.error;
        expect(got.value?.index ?? null).toBe(modelRoute(routes, req.method, req.segments));
      }),
      { numRuns: RUNS },
    );
  });

  it('a raw request target is matched on its normalized segments: /public/** never admits a path that normalizes elsewhere', () => {
    const config = configSchema.parse({
      public_base_url: 'https://api.example.com',
      resource: 'https://api.example.com',
      upstream: { url: 'http://127.0.0.1:1' },
      issuers: [{ issuer: 'https://as.example.com' }],
      routes: [{ match: { path: '/public/**' }, auth: 'none' }, { match: { path: '/admin/**' }, action: 'admin' }],
    });
    const compiled = compileRoutes(config);
    fc.assert(
      fc.property(rawPath, (raw) => {
        let path: string;
        try {
          path = normalizeTarget(raw).path;
        } catch {
          return;
        }
        const r = findRoute(compiled, 'GET', pathSegments(path));
        if (r?.auth === 'none') expect(pathSegments(path)[0]).toBe('public');
        if (pathSegments(path)[0] === 'admin') expect(r?.action).toBe('admin');
      }),
      { numRuns: RUNS * 2 },
    );
  });
});
