/**
 * repeatsKey against RFC 9651's own serializer: whatever Dictionary it writes (Strings holding `,`
 * `;` `=` `"` and keys, Inner Lists, Byte Sequences, Tokens, parameters), the scan finds its keys
 * unique; the same text with one member or parameter written twice, it finds the repeat.
 */
import fc from 'fast-check';
import { parseDictionary, serializeDictionary, Token, type Dictionary, type Item } from 'structured-headers';
import { describe, expect, it } from 'vitest';
import { repeatsKey } from '../../src/mission/reference.js';

const key = fc.stringMatching(/^[a-z*][a-z0-9_\-.*]{0,6}$/);
const bare = fc.oneof(
  fc.stringMatching(/^[ -~]{0,12}$/),
  fc.integer({ min: -999, max: 999 }),
  fc.boolean(),
  fc.stringMatching(/^[A-Za-z*][A-Za-z0-9:/!#$%&'*+.^_`|~-]{0,8}$/).map((t) => new Token(t)),
  fc.uint8Array({ maxLength: 8 }),
);
const params = fc.uniqueArray(fc.tuple(key, bare), { selector: ([k]) => k, maxLength: 3 }).map((e) => new Map(e));
const item = fc.tuple(bare, params).map(([v, p]): Item => [v, p]);
const member = fc.oneof(item, fc.tuple(fc.array(item, { maxLength: 3 }), params).map(([l, p]) => [l, p] as [Item[], Map<string, unknown>]));
const dict = fc.uniqueArray(fc.tuple(key, member), { selector: ([k]) => k, minLength: 1, maxLength: 4 }).map((e) => new Map(e) as Dictionary);

describe('repeatsKey (the duplicate check before RFC 9651 collapses a Dictionary)', () => {
  it('finds no repeat in a serialized Dictionary, and the parser reads it back alike', () => {
    fc.assert(
      fc.property(dict, (d) => {
        const text = serializeDictionary(d);
        expect(parseDictionary(text).size).toBe(d.size);
        expect(repeatsKey(text)).toBe(false);
      }),
      { numRuns: 500 },
    );
  });

  it('finds a member written twice, and a parameter written twice on one member', () => {
    fc.assert(
      fc.property(dict, fc.nat(), (d, pick) => {
        const text = serializeDictionary(d);
        const keys = [...d.keys()];
        const k = keys[pick % keys.length]!;
        expect(repeatsKey(`${text}, ${serializeDictionary(new Map([[k, d.get(k)!]]) as Dictionary)}`)).toBe(true);
        expect(repeatsKey(`${text}, ${k};p=1;p=2`)).toBe(true);
        expect(repeatsKey(`${text}, zz-new;p=1;q=2`)).toBe(keys.includes('zz-new'));
      }),
      { numRuns: 300 },
    );
  });
});
