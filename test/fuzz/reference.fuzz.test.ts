/**
 * SPEC section 3 (Mission reference headers, RFC 9651 structured fields) under fuzzing:
 * parseMissionReference and parseAauthMission never throw (a bad header is 'malformed', which the
 * stage turns into 400 mission_reference_malformed), answer in bounded time, and a header built
 * by a reference serializer parses back to exactly the values it was built from.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_ID_LENGTH, MAX_ISSUER_LENGTH } from '../../src/mission/key.js';
import { parseAauthMission, parseMissionReference } from '../../src/mission/reference.js';
import { bounded, RUNS } from './bounds.js';

/** RFC 9651 section 4.1.6: sf-string is printable ASCII with `"` and `\` escaped. */
const sfString = (s: string): string => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 40 });
const s256 = fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'), minLength: 43, maxLength: 43 });

/** Structured-field-shaped noise: fragments of real headers glued together, so the parser's deep paths run. */
const sfNoise = fc
  .array(
    fc.oneof(
      fc.constantFrom('id=', 'issuer=', 'approver=', 's256=', ';', ',', ' ', '"', '\\', '(', ')', '?1', '?0', ':', '=', '*', '@', '1.5', '-0', '%"', 'a'),
      printable,
      fc.string({ unit: 'binary', maxLength: 8 }),
    ),
    { maxLength: 30 },
  )
  .map((parts) => parts.join(''));

const anyHeader = fc.oneof(sfNoise, fc.string({ unit: 'binary', maxLength: 200 }), fc.string({ maxLength: 200 }));

function checkShape(r: ReturnType<typeof parseMissionReference>): void {
  if (r === 'malformed') return;
  expect(typeof r.issuer).toBe('string');
  expect(r.issuer.length).toBeGreaterThan(0);
  expect(r.issuer.length).toBeLessThanOrEqual(MAX_ISSUER_LENGTH);
  if (r.id !== null) expect(r.id.length).toBeLessThanOrEqual(MAX_ID_LENGTH);
  if (r.s256 !== null) expect(r.s256).toMatch(/^[A-Za-z0-9_-]{43}$/);
}

describe('SPEC §3 Mission-Reference / AAuth-Mission (RFC 9651) under fuzzing', () => {
  it('any header value: never throws, bounded time, result within the field bounds', () => {
    fc.assert(
      fc.property(anyHeader, (v) => {
        for (const parse of [parseMissionReference, parseAauthMission]) {
          const out = bounded(() => parse(v));
          if (!out.ok) throw new Error(`threw on ${JSON.stringify(v)}: ${String(out.error)}`);
          checkShape(out.value);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('Mission-Reference built by a serializer parses back to its id and issuer (either member order)', () => {
    fc.assert(
      fc.property(printable, printable, fc.boolean(), fc.constantFrom('', ' '), (id, issuer, swap, ws) => {
        const members = [`id=${sfString(id)}`, `issuer=${sfString(issuer)}`];
        if (swap) members.reverse();
        const r = parseMissionReference(members.join(`,${ws}`));
        expect(r).toEqual({ form: 'reference_header', issuer, id, s256: null, authorityHash: null });
      }),
      { numRuns: RUNS },
    );
  });

  it('Mission-Reference with a parameter, a third member, a token or an over-long value is malformed', () => {
    fc.assert(
      fc.property(printable, printable, fc.integer({ min: 0, max: 3 }), (id, issuer, variant) => {
        const header = [
          `id=${sfString(id)};x=1, issuer=${sfString(issuer)}`,
          `id=${sfString(id)}, issuer=${sfString(issuer)}, extra=${sfString(id)}`,
          `id=abc, issuer=${sfString(issuer)}`,
          `id=${sfString('m'.repeat(MAX_ID_LENGTH + 1))}, issuer=${sfString(issuer)}`,
        ][variant]!;
        expect(parseMissionReference(header)).toBe('malformed');
      }),
      { numRuns: RUNS / 2 },
    );
  });

  it('AAuth-Mission in both seed forms parses to (approver, s256); both forms at once is malformed', () => {
    fc.assert(
      fc.property(printable, s256, fc.boolean(), (approver, digest, asParam) => {
        const header = asParam ? `approver=${sfString(approver)};s256=${sfString(digest)}` : `approver=${sfString(approver)}, s256=${sfString(digest)}`;
        expect(parseAauthMission(header)).toEqual({ form: 'aauth_header', issuer: approver, id: null, s256: digest, authorityHash: null });
        expect(parseAauthMission(`approver=${sfString(approver)};s256=${sfString(digest)}, s256=${sfString(digest)}`)).toBe('malformed');
      }),
      { numRuns: RUNS },
    );
  });

  it('pathological sizes stay bounded (64 KiB of nesting characters, many members, long escapes)', () => {
    const big = [
      '('.repeat(65_536),
      'a=('.repeat(20_000),
      Array.from({ length: 5000 }, (_, i) => `k${i}=${i}`).join(', '),
      `id="${'\\"'.repeat(30_000)}", issuer="x"`,
      `approver="x";${'p=1;'.repeat(15_000)}s256="${'A'.repeat(43)}"`,
    ];
    for (const v of big) {
      for (const parse of [parseMissionReference, parseAauthMission]) {
        const out = bounded(() => parse(v), 1000);
        expect(out.ok).toBe(true);
      }
    }
  });
});
