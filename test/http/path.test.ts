import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { compilePattern, matchPattern, normalizePath, normalizeTarget, pathSegments, PathError } from '../../src/http/path.js';

describe('RFC 3986 §6.2.2 / §5.2.4 path normalization', () => {
  const cases: [string, string][] = [
    ['/', '/'],
    ['/a/b', '/a/b'],
    ['/a/./b', '/a/b'],
    ['/a/../b', '/b'],
    ['/public/../admin', '/admin'],
    ['/public/%2e%2e/admin', '/admin'],
    ['/public/%2E%2E/admin', '/admin'],
    ['/public/.%2e/admin', '/admin'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['//admin', '/admin'],
    ['/public//x', '/public/x'],
    ['/a%2fb', '/a%2Fb'],
    ['/a%2Fb/../c', '/c'],
    ['/%7euser', '/~user'],
    ['/%41%42c', '/ABc'],
    ['/a/b/', '/a/b/'],
    ['/a/b/..', '/a/'],
    ['/a\\b', '/a%5Cb'],
    ['/caf\u00e9', '/caf%C3%A9'],
    ['/a;b=c', '/a;b=c'],
  ];
  for (const [input, expected] of cases) {
    it(`normalizes ${JSON.stringify(input)} to ${expected}`, () => {
      expect(normalizePath(input)).toBe(expected);
    });
  }

  it('keeps the query raw and drops the fragment', () => {
    expect(normalizeTarget('/a/../b?x=%2e%2e&y=/..#frag')).toEqual({ path: '/b', search: '?x=%2e%2e&y=/..' });
  });

  it('reduces absolute-form targets to their path', () => {
    expect(normalizeTarget('http://evil.example/a/../admin?q')).toEqual({ path: '/admin', search: '?q' });
  });

  it('refuses an absolute-form target with userinfo or without a host (RFC 9110 section 4.2.4)', () => {
    for (const bad of ['http://user:secret@api.example.com/a', 'http://@api.example.com/a', 'http:///a']) expect(() => normalizeTarget(bad), bad).toThrow(PathError);
  });

  for (const bad of ['/public/..%3B/admin', '/public/..%3bx=1/admin', '/public/.%3B/admin', '/a%2F..%3B/b', '/public/..%2Fadmin', '/public/..%5cadmin', '/public/..\\admin', '/a/x%2F..%2F..', '/a%zz', '/a%0', '/a%00b', '/..;/admin', '/public/..;x=1/admin', '/.;/a', '/a\u0001b']) {
    it(`refuses ${JSON.stringify(bad)}`, () => {
      expect(() => normalizePath(bad)).toThrow(PathError);
    });
  }

  it('is idempotent and never yields dot segments (property)', () => {
    const seg = fc.constantFrom('a', 'b', '.', '..', '%2e', '%2E%2e', '', '%2F', 'x%41', '~', ';p', 'é');
    fc.assert(
      fc.property(fc.array(seg, { maxLength: 12 }), (segs) => {
        let once: string;
        try {
          once = normalizePath('/' + segs.join('/'));
        } catch (err) {
          expect(err).toBeInstanceOf(PathError);
          return;
        }
        expect(normalizePath(once)).toBe(once);
        for (const s of pathSegments(once)) {
          expect(s).not.toBe('.');
          expect(s).not.toBe('..');
        }
        expect(once.startsWith('/')).toBe(true);
        expect(once.includes('//')).toBe(false);
      }),
    );
  });
});

describe('SPEC §4 route patterns', () => {
  const m = (pattern: string, path: string): boolean => matchPattern(compilePattern(pattern), pathSegments(normalizePath(path)));
  it('matches exact paths', () => {
    expect(m('/payments', '/payments')).toBe(true);
    expect(m('/payments', '/payments/x')).toBe(false);
    expect(m('/payments', '/paymentsx')).toBe(false);
  });
  it('`*` matches exactly one segment', () => {
    expect(m('/invoices/*', '/invoices/1')).toBe(true);
    expect(m('/invoices/*', '/invoices')).toBe(false);
    expect(m('/invoices/*', '/invoices/1/2')).toBe(false);
    expect(m('/a/*/c', '/a/b/c')).toBe(true);
  });
  it('a trailing `/**` matches zero or more segments', () => {
    expect(m('/invoices/**', '/invoices')).toBe(true);
    expect(m('/invoices/**', '/invoices/1/2/3')).toBe(true);
    expect(m('/invoices/**', '/invoicesx')).toBe(false);
    expect(m('/**', '/anything/at/all')).toBe(true);
  });
  it('an encoded slash is one segment, never a separator', () => {
    expect(m('/public/*', '/public/a%2Fb')).toBe(true);
    expect(m('/public/a/b', '/public/a%2Fb')).toBe(false);
  });
});
