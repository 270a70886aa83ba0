/**
 * SPEC section 4 (named parameters from the JSON body) under fuzzing. The gateway must never decide
 * on a value the upstream could read differently, so for generated documents that may repeat keys
 * (written plainly or with \u escapes) and carry numbers a double cannot hold:
 * - parseJsonStrict / extractParams fail only with Denial('parameter_unparseable'), in bounded time;
 * - when a first-wins parser and a last-wins parser (JSON.parse) resolve a bound pointer to
 *   different values, or the bound value holds a duplicate key, the request is refused (reference
 *   model below);
 * - otherwise the bound value is what every parser reads, and a bound number a double cannot hold
 *   keeps its literal beside it (SPEC section 4 compares it as an exact decimal).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileRoutes } from '../../src/config/compile.js';
import { configSchema } from '../../src/config/schema.js';
import { numberSource } from '../../src/authority/json.js';
import { extractParams, parseJsonStrict } from '../../src/authority/params.js';
import { bounded, kindOf, onlyDocumented, RUNS } from './bounds.js';

type Node =
  | { readonly t: 'obj'; readonly members: readonly (readonly [key: string, escaped: boolean, value: Node])[] }
  | { readonly t: 'arr'; readonly items: readonly Node[] }
  | { readonly t: 'num'; readonly lit: string }
  | { readonly t: 'str'; readonly s: string }
  | { readonly t: 'lit'; readonly v: 'true' | 'false' | 'null' };

const EXACT = ['0', '1', '12', '423.5', '100.00', '0.1', '1e2', '2.5E-3', '-7', '1.0', '-0'];
/** Literals a double cannot hold exactly. */
const INEXACT = ['500.000000000000000001', '9007199254740993', '1e400', '0.10000000000000000555', '-1e-400', '123456789012345678901234567890'];
const KEYS = ['a', 'b', 'amount', 'to', 'a/b', 'm~n', '__proto__'];

const nodeArb: fc.Arbitrary<Node> = fc.letrec<{ node: Node }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom(...EXACT, ...INEXACT).map((lit): Node => ({ t: 'num', lit })),
    fc.constantFrom('x', 'USD', 'a"b', 'é').map((s): Node => ({ t: 'str', s })),
    fc.constantFrom('true', 'false', 'null').map((v): Node => ({ t: 'lit', v })),
    fc.array(fc.tuple(fc.constantFrom(...KEYS), fc.boolean(), tie('node')), { maxLength: 4 }).map((members): Node => ({ t: 'obj', members })),
    fc.array(tie('node'), { maxLength: 3 }).map((items): Node => ({ t: 'arr', items })),
  ),
})).node;

/** A key written with every character as a \u escape: the same key to JSON, other bytes to a naive scanner. */
const escapeKey = (k: string): string => '"' + [...k].map((c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')).join('') + '"';

function serialize(n: Node): string {
  switch (n.t) {
    case 'obj':
      return '{' + n.members.map(([k, esc, v]) => (esc ? escapeKey(k) : JSON.stringify(k)) + ':' + serialize(v)).join(',') + '}';
    case 'arr':
      return '[' + n.items.map(serialize).join(',') + ']';
    case 'num':
      return n.lit;
    case 'str':
      return JSON.stringify(n.s);
    case 'lit':
      return n.v;
  }
}

/** RFC 6901 resolution on the tree, with duplicate keys resolved first-wins or last-wins. */
function resolve(n: Node, tokens: readonly string[], mode: 'first' | 'last'): Node | undefined {
  let node: Node = n;
  for (const t of tokens) {
    if (node.t === 'arr') {
      if (!/^(0|[1-9][0-9]*)$/.test(t)) return undefined;
      const next = node.items[Number(t)];
      if (next === undefined) return undefined;
      node = next;
    } else if (node.t === 'obj') {
      const hits = node.members.filter(([k]) => k === t);
      const m = mode === 'first' ? hits[0] : hits[hits.length - 1];
      if (m === undefined) return undefined;
      node = m[2];
    } else {
      return undefined;
    }
  }
  return node;
}

/** True when the subtree contains an object with a repeated key. */
function ambiguousInside(n: Node): boolean {
  switch (n.t) {
    case 'obj': {
      const keys = n.members.map(([k]) => k);
      return new Set(keys).size !== keys.length || n.members.some(([, , v]) => ambiguousInside(v));
    }
    case 'arr':
      return n.items.some(ambiguousInside);
    default:
      return false;
  }
}

/** A path that exists in `doc`, chosen by `choices` (so repeated keys are often on it). */
function walk(doc: Node, choices: readonly number[]): string[] {
  const out: string[] = [];
  let node = doc;
  for (const c of choices) {
    if (node.t === 'obj' && node.members.length > 0) {
      const m = node.members[c % node.members.length]!;
      out.push(m[0]);
      node = m[2];
    } else if (node.t === 'arr' && node.items.length > 0) {
      out.push(String(c % node.items.length));
      node = node.items[c % node.items.length]!;
    } else break;
  }
  return out.length === 0 ? ['amount'] : out;
}

const randomTokens = fc.array(fc.constantFrom(...KEYS, '0', '1', '01'), { minLength: 1, maxLength: 3 });
const rootObject = fc.array(fc.tuple(fc.constantFrom(...KEYS), fc.boolean(), nodeArb), { minLength: 1, maxLength: 5 }).map((members): Node => ({ t: 'obj', members }));
const docAndPointers = rootObject.chain((doc) =>
  fc.tuple(fc.constant(doc), fc.array(fc.oneof(fc.array(fc.nat(), { minLength: 1, maxLength: 4 }).map((c) => walk(doc, c)), randomTokens), { minLength: 1, maxLength: 3 })),
);
const toPointer = (tokens: readonly string[]): string => '/' + tokens.map((t) => t.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');

function routeWith(pointers: readonly string[]) {
  const config = configSchema.parse({
    public_base_url: 'https://api.example.com',
    resource: 'https://api.example.com',
    upstream: { url: 'http://127.0.0.1:1' },
    issuers: [{ issuer: 'https://as.example.com' }],
    routes: [{ match: { method: 'POST', path: '/p' }, action: 'p', params: Object.fromEntries(pointers.map((p, i) => [`p${i}`, { body: p }])) }],
  });
  return compileRoutes(config)[0]!;
}

const input = (body: Buffer) => ({ segments: ['p'], search: '', headers: {}, body, contentType: 'application/json' });

describe('SPEC §4 JSON body parameters under fuzzing', () => {
  it('arbitrary bytes: only parameter_unparseable, bounded time', () => {
    const route = routeWith(['/amount', '/a/0']);
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)), fc.json().map((s) => Buffer.from(s)), fc.string({ unit: 'binary', maxLength: 200 }).map((s) => Buffer.from(s))), (body) => {
        onlyDocumented(
          bounded(() => parseJsonStrict(body, 'all')),
          ['Denial(parameter_unparseable)'],
        );
        onlyDocumented(
          bounded(() => extractParams(route, input(body))),
          ['Denial(parameter_unparseable)'],
        );
      }),
      { numRuns: RUNS },
    );
  });

  it('a bound value that parsers could read differently is refused; otherwise it is what every parser reads', () => {
    fc.assert(
      fc.property(docAndPointers, ([doc, pointerList]) => {
        const text = serialize(doc);
        const route = routeWith(pointerList.map(toPointer));
        const out = bounded(() => extractParams(route, input(Buffer.from(text))));
        const mustRefuse = pointerList.some((tokens) => {
          const first = resolve(doc, tokens, 'first');
          const last = resolve(doc, tokens, 'last');
          if ((first === undefined) !== (last === undefined)) return true;
          if (first === undefined || last === undefined) return false;
          return serialize(first) !== serialize(last) || ambiguousInside(first) || ambiguousInside(last);
        });
        if (!out.ok) {
          expect(kindOf(out.error)).toBe('Denial(parameter_unparseable)');
          return;
        }
        expect(mustRefuse, `accepted ${text} for ${JSON.stringify(pointerList)}`).toBe(false);
        pointerList.forEach((tokens, i) => {
          const expected = resolve(doc, tokens, 'first');
          const got = out.value[`p${i}`];
          if (expected === undefined) expect(got).toBeUndefined();
          else expect(got).toEqual(JSON.parse(serialize(expected)));
          if (expected?.t === 'num') expect(numberSource(out.value, `p${i}`)).toBe(INEXACT.includes(expected.lit) ? expected.lit : undefined);
        });
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it('a duplicate key written with escapes on the bound path is still a duplicate', () => {
    const route = routeWith(['/amount']);
    const body = Buffer.from('{"amount":1,"\\u0061mount":9000}');
    const out = bounded(() => extractParams(route, input(body)));
    expect(out.ok).toBe(false);
    expect(kindOf(!out.ok && out.error)).toBe('Denial(parameter_unparseable)');
  });

  it('pathological bodies stay bounded (deep nesting, long strings of escapes, many keys)', () => {
    const route = routeWith(['/a/0/b', '/amount']);
    const bodies = [
      '['.repeat(100_000) + ']'.repeat(100_000),
      '{"a":'.repeat(50_000) + '1' + '}'.repeat(50_000),
      '{"a":[' + '{"b":1},'.repeat(50_000) + '{"b":2}]}',
      '{"amount":"' + '\\\\'.repeat(200_000) + '"}',
      '{' + Array.from({ length: 50_000 }, (_, i) => `"k${i}":${i}`).join(',') + ',"amount":1}',
      '[' + '1.0000000000000000000001,'.repeat(40_000) + '1]',
    ];
    for (const b of bodies) {
      const buf = Buffer.from(b);
      onlyDocumented(bounded(() => extractParams(route, input(buf)), 2000), ['Denial(parameter_unparseable)']);
      onlyDocumented(bounded(() => parseJsonStrict(buf, 'all'), 2000), ['Denial(parameter_unparseable)']);
    }
  });
});
