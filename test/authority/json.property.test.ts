/** The strict JSON scan (src/authority/json.ts) against generated documents. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import canonicalizeModule from 'canonicalize';
import { foldName, jcs, JsonStrictError, numberIsExact, parsePointer, resolvePointer, scanJson } from '../../src/authority/json.js';

const canonicalize = canonicalizeModule as unknown as (value: unknown) => string | undefined;

/** Whether every object in `v` has member names that stay distinct once case-folded (foldName). */
function foldDistinct(v: unknown): boolean {
  if (Array.isArray(v)) return v.every(foldDistinct);
  if (v === null || typeof v !== 'object') return true;
  const keys = Object.keys(v);
  return new Set(keys.map(foldName)).size === keys.length && Object.values(v).every(foldDistinct);
}

/** JSON values without names equal but for case in one object (which the scan refuses). */
const doc = fc.jsonValue({ maxDepth: 4 }).filter(foldDistinct);

describe('strict JSON scan (fast-check)', () => {
  it('accepts every JSON.stringify output, compact or indented (no duplicates, exact numbers)', () => {
    fc.assert(
      fc.property(doc, fc.constantFrom(undefined, 2, '\t'), (v, indent) => {
        expect(() => scanJson(JSON.stringify(v, null, indent), 'all')).not.toThrow();
      }),
      { numRuns: 500 },
    );
  });

  it('finds a duplicate key wherever it is inserted, whatever the strings around it contain', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), doc, { minKeys: 1, maxKeys: 5 }).filter(foldDistinct), fc.nat(), fc.jsonValue({ maxDepth: 1 }), (obj, k, dupValue) => {
        const keys = Object.keys(obj);
        const key = keys[k % keys.length]!;
        const text = JSON.stringify({ wrap: [obj] }).replace(/\}\]\}$/, () => `,${JSON.stringify(key)}:${JSON.stringify(dupValue)}}]}`);
        expect(() => scanJson(text, 'all')).toThrow(JsonStrictError);
        // The pointer through the duplicated object sees it too.
        expect(() => scanJson(text, [parsePointer('/wrap/0/' + key.replace(/~/g, '~0').replace(/\//g, '~1'))])).toThrow(JsonStrictError);
      }),
      { numRuns: 300 },
    );
  });

  it('finds a member named like another but for case (as Go and .NET bind them), on a watched path or anywhere', () => {
    const variant = (k: string): string => (k.toUpperCase() !== k ? k.toUpperCase() : k.toLowerCase());
    fc.assert(
      fc.property(fc.dictionary(fc.stringMatching(/^[a-zA-Z_][a-zA-Z0-9_]{0,7}$/), doc, { minKeys: 1, maxKeys: 5 }).filter(foldDistinct), fc.nat(), (obj, k) => {
        const keys = Object.keys(obj);
        const key = keys[k % keys.length]!;
        fc.pre(/[a-zA-Z]/.test(key));
        const text = JSON.stringify(obj).replace(/\}$/, () => `,${JSON.stringify(variant(key))}:1}`);
        expect(() => scanJson(text, 'all')).toThrow(JsonStrictError);
        expect(() => scanJson(text, [[key]])).toThrow(JsonStrictError);
      }),
      { numRuns: 300 },
    );
  });

  it('folds beyond ASCII at least as Go does: long s, the Kelvin and Angstrom signs, sharp s', () => {
    for (const [a, b] of [['params', 'param\u017f'], ['kind', '\u212aind'], ['\u00e5r', '\u212br'], ['stra\u00dfe', 'STRASSE'], ['stra\u1e9ee', 'strasse'], ['\u03c3a', '\u03c2a']]) {
      expect(() => scanJson(`{"${a}":1,"${b}":2}`, 'all'), `${a} / ${b}`).toThrow(JsonStrictError);
    }
    // Off the watched paths names are not compared (they cannot change the decision).
    expect(scanJson('{"amount":1,"meta":{"x":1,"X":2}}', [['amount']])).toBeNull();
  });

  it('watched pointers resolve to what JSON.parse sees', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 6 }), doc, { minKeys: 1, maxKeys: 6 }).filter(foldDistinct), fc.nat(), (obj, k) => {
        const keys = Object.keys(obj);
        const key = keys[k % keys.length]!;
        const pointer = parsePointer('/' + key.replace(/~/g, '~0').replace(/\//g, '~1'));
        const text = JSON.stringify(obj);
        scanJson(text, [pointer]);
        // Compare with the value's JSON form (JSON has no -0).
        expect(resolvePointer(JSON.parse(text), pointer)).toEqual(JSON.parse(JSON.stringify(obj[key])));
      }),
      { numRuns: 300 },
    );
  });

  it('numberIsExact agrees with a BigInt-free digit comparison for generated decimals', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,2})?$/), (lit) => {
        const n = Number(lit);
        // Exact iff the literal and the double's shortest form denote the same decimal.
        const norm = (s: string): string => {
          const [mant, exp = '0'] = s.toLowerCase().replace(/^-/, '').split('e');
          const [i, f = ''] = mant!.split('.');
          const digits = (i! + f).replace(/^0+/, '');
          const point = i!.length + Number(exp) - ((i! + f).length - (i! + f).replace(/^0+/, '').length);
          const trimmed = digits.replace(/0+$/, '');
          return trimmed === '' ? '0' : `${s.startsWith('-') ? '-' : ''}${trimmed}@${point}`;
        };
        // -0 is exact (zero); a literal of another value that parses to -0 (-1e-400) is not.
        const expected = Number.isFinite(n) && norm(lit) === norm(String(n));
        expect(numberIsExact(lit)).toBe(expected);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('strict JSON scan on text JSON.parse would reject', () => {
  it('terminates with an error on an unterminated string', () => {
    expect(() => scanJson('{"a":"x', 'all')).toThrow(JsonStrictError);
    expect(() => scanJson('{"a\\"', 'all')).toThrow(JsonStrictError);
  });
  it('numberIsExact rejects non-finite literals', () => {
    expect(numberIsExact('1e999')).toBe(false);
  });
});

describe('jcs (RFC 8785): the direct path gives what canonicalize gives', () => {
  const scalar = fc.oneof(fc.string({ unit: 'grapheme' }), fc.string({ unit: 'binary' }), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.integer(), fc.boolean(), fc.constant(null));
  it('flat objects of scalars (any keys, including __proto__-like and unicode ones)', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ unit: 'binary' }), scalar, { maxKeys: 8 }), (o) => {
        expect(jcs(o)).toBe(canonicalize(o));
      }),
      { numRuns: 1000 },
    );
  });
  it('any JSON value, nested or not', () => {
    fc.assert(
      fc.property(doc, (v) => {
        expect(jcs(v)).toBe(canonicalize(v));
      }),
      { numRuns: 500 },
    );
  });
  it('a parsed object with a "__proto__" key and a null-prototype object', () => {
    const parsed = JSON.parse('{"__proto__":"x","b":1,"a":"2"}') as Record<string, unknown>;
    expect(jcs(parsed)).toBe('{"__proto__":"x","a":"2","b":1}');
    const bare = Object.assign(Object.create(null) as Record<string, unknown>, { z: true, y: -0, x: 1e21 });
    expect(jcs(bare)).toBe('{"x":1e+21,"y":0,"z":true}');
    expect(() => jcs({ a: Number.NaN })).toThrow();
  });
  it('a large array of numbers (r19c 2), nested arrays and objects in arrays, and what only canonicalize serializes', () => {
    const numbers = Array.from({ length: 50_000 }, (_, i) => (i % 3 === 0 ? -i / 7 : i * 1e17));
    expect(jcs(numbers)).toBe(canonicalize(numbers));
    const mixed = [1, [2, [3, { b: [null, 'x'], a: true }]], { z: [], y: {} }];
    expect(jcs(mixed)).toBe(canonicalize(mixed));
    const odd = [undefined, 1, { a: undefined, b: 2 }, new Date(0)];
    expect(jcs(odd)).toBe(canonicalize(odd));
    expect(() => jcs([1, Number.POSITIVE_INFINITY])).toThrow();
  });
});
