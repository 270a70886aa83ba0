/**
 * Properties over arbitrary input: parsers fail only with their own errors (a Denial or JwsError,
 * never a TypeError that would become a 500), and htu normalization is idempotent and agrees with
 * the WHATWG URL parser on the inputs where both are defined the same way.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseCredentials } from '../../src/auth/credentials.js';
import { normalizeHtu, verifyDpopProof } from '../../src/auth/dpop.js';
import { JwsError, parseCompact } from '../../src/auth/jws.js';
import { Denial } from '../../src/errors.js';
import { normalizePath } from '../../src/http/path.js';

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

/** Compact-JWS-shaped strings with arbitrary JSON (or junk) in each segment. */
const jwsLike = fc.oneof(
  fc.string({ maxLength: 300 }),
  fc.tuple(fc.jsonValue(), fc.jsonValue(), fc.string({ maxLength: 100 })).map(([h, p, s]) => `${b64(h)}.${b64(p)}.${Buffer.from(s).toString('base64url')}`),
  fc
    .tuple(fc.dictionary(fc.constantFrom('typ', 'alg', 'jwk', 'crit', 'cty', 'b64', 'kid'), fc.jsonValue()), fc.dictionary(fc.constantFrom('jti', 'htm', 'htu', 'iat', 'ath', 'nonce'), fc.jsonValue()))
    .map(([h, p]) => `${b64({ typ: 'dpop+jwt', alg: 'ES256', ...h })}.${b64(p)}.${'A'.repeat(86)}`),
);

describe('robustness on arbitrary input', () => {
  it('parseCompact throws only JwsError', () => {
    fc.assert(
      fc.property(jwsLike, (s) => {
        try {
          parseCompact(s);
        } catch (err) {
          expect(err).toBeInstanceOf(JwsError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('verifyDpopProof throws only Denial dpop_invalid for junk proofs', () => {
    fc.assert(
      fc.property(jwsLike, (s) => {
        try {
          verifyDpopProof(s, { method: 'GET', htu: 'https://api.example.com/x', algorithms: ['ES256'], maxAgeS: 60, clockSkewS: 5, accessToken: 't', expectedJkt: 'j' });
          expect.unreachable('a junk proof verified');
        } catch (err) {
          expect(err).toBeInstanceOf(Denial);
          expect((err as Denial).code).toBe('dpop_invalid');
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('parseCredentials throws only Denials for arbitrary Authorization/DPoP headers', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom('Authorization', 'authorization', 'DPoP', 'dpop', 'Accept'), fc.string({ maxLength: 200 })), { maxLength: 4 }), (pairs) => {
        try {
          const c = parseCredentials(pairs.flat());
          expect(c.token.length).toBeGreaterThan(0);
          expect(c.token).not.toMatch(/\s/);
        } catch (err) {
          expect(err).toBeInstanceOf(Denial);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('normalizeHtu properties', () => {
  // Letter-initial labels: WHATWG rewrites numeric hosts (IPv4 forms), which htu never needs. No
  // `xn--` labels: WHATWG decodes punycode and rejects an invalid one (`xn--0`), which is IDNA's
  // business, not htu normalization's (such a host never equals a configured public_base_url).
  const label = fc.stringMatching(/^[a-z](?:[a-z0-9-]{0,10}[a-z0-9])?$/).filter((l) => !l.startsWith('xn--'));
  const host = fc.array(label, { minLength: 1, maxLength: 3 }).map((l) => l.join('.'));
  const seg = fc.stringMatching(/^(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2}){0,8}$/);
  const url = fc
    .record({ scheme: fc.constantFrom('http', 'https', 'HTTP', 'HtTpS'), host, upper: fc.boolean(), port: fc.option(fc.constantFrom('80', '443', '8080', '0443')), path: fc.array(seg, { maxLength: 5 }), query: fc.option(fc.string({ maxLength: 10 }).map((q) => q.replace(/[#\s]/g, ''))) })
    .map((r) => `${r.scheme}://${r.upper ? r.host.toUpperCase() : r.host}${r.port === null ? '' : ':' + r.port}/${r.path.join('/')}${r.query === null ? '' : '?' + r.query}`);

  it('is idempotent', () => {
    fc.assert(
      fc.property(url, (u) => {
        const n = normalizeHtu(u);
        if (n !== null) expect(normalizeHtu(n)).toBe(n);
      }),
      { numRuns: 2000 },
    );
  });

  it('agrees with WHATWG URL on scheme, host and port, and with the gateway path normalization on the path', () => {
    fc.assert(
      fc.property(url, (u) => {
        const n = normalizeHtu(u);
        if (n === null) return; // e.g. invalid percent-encoding: refused, never guessed
        const w = new URL(u);
        const rawPath = u.replace(/^[^:]+:\/\/[^/]*/, '').replace(/\?.*$/, '') || '/';
        expect(n).toBe(w.origin + normalizePath(rawPath));
      }),
      { numRuns: 2000 },
    );
  });
});
