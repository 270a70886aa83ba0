/**
 * Properties of decide(): authority only narrows (SPEC section 4, mission-contracts section 7
 * "never widening"). Generated entries always include an anchor entry that applies to the audience
 * on every non-null side, so a side's presence never changes when another entry is removed or
 * narrowed: that is the case the SPEC's "both present, both must permit" rule covers.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decide, type DecisionInput } from '../../src/authority/decide.js';
import { compareDecimal, parseDecimalString } from '../../src/authority/decimal.js';

const AUD = 'https://api.example.com';
const NOW = Date.parse('2026-11-02T08:14:03Z');
const RUNS = 400;

type Entry = Record<string, unknown> & { constraints?: Record<string, unknown> };

const actionName = fc.constantFrom('a.read', 'a.write', 'b.read', 'a.x.y', 'a', 'send');
const grantAction = fc.constantFrom('a.read', 'a.write', 'b.read', 'a.*', 'b.*', '*', 'a', 'send', 'x.*');
const decimalString = fc
  .tuple(fc.nat({ max: 100_000 }), fc.option(fc.stringMatching(/^[0-9]{1,6}$/), { nil: undefined }))
  .map(([i, f]) => (f === undefined ? String(i) : `${i}.${f}`));
const amountParam = fc.oneof(decimalString, fc.double({ min: 0, max: 200_000, noNaN: true }), fc.constantFrom('1e3', '-5', 'NaN', '', ' 5', '0x10', null, true));

const constraintsArb: fc.Arbitrary<Record<string, unknown>> = fc.record(
  {
    max_amount: fc.record({ amount: decimalString, currency: fc.constantFrom('USD', 'EUR') }),
    tenant: fc.constantFrom('acme', 'globex'),
    recipient_domain: fc.constantFrom('example.com', 'example.org'),
    time_window: fc.constantFrom({ not_before: '2026-01-01T00:00:00Z' }, { not_after: '2026-01-01T00:00:00Z' }, { not_before: '2026-11-01T00:00:00Z', not_after: '2026-11-30T00:00:00Z' }),
    allowed_tools: fc.constantFrom(['send'], ['send', 'read'], ['other']),
    geo_fence: fc.constant('EU'),
  },
  { requiredKeys: [] },
);

const entryArb: fc.Arbitrary<Entry> = fc.record(
  {
    type: fc.constantFrom('mission_resource_access', 'mission_resource_access', 'mission_resource_access', 'other_type'),
    resource: fc.constantFrom(AUD, AUD, AUD + '/pay', 'https://other.example.com'),
    resource_match: fc.constantFrom('exact', 'prefix', 'regex'),
    actions: fc.array(grantAction, { maxLength: 4 }),
    constraints: constraintsArb,
  },
  { requiredKeys: ['type', 'resource', 'actions'] },
);

const anchorArb: fc.Arbitrary<Entry> = fc.record({
  type: fc.constant('mission_resource_access'),
  resource: fc.constant(AUD),
  actions: fc.array(grantAction, { maxLength: 3 }),
  constraints: constraintsArb,
});

/** A non-null side: its anchor first, then other entries. */
const sideArb = fc.tuple(anchorArb, fc.array(entryArb, { maxLength: 4 })).map(([a, rest]) => [a, ...rest]);
const maybeSide = fc.option(sideArb, { nil: null });

const paramsArb = fc.record(
  {
    amount: amountParam,
    currency: fc.constantFrom('USD', 'usd', 'EUR', 7),
    tenant: fc.constantFrom('acme', 'globex', 'ACME'),
    recipient: fc.constantFrom('a@example.com', 'b@example.org', 'c@sub.example.com', 'https://example.com/x', 'junk'),
    tool: fc.constantFrom('send', 'read', 'other'),
  },
  { requiredKeys: [] },
);

const requestArb = fc.record({
  action: actionName,
  params: paramsArb,
  path: fc.constantFrom('/pay', '/pay/1', '/payx', '/', '/other'),
  tool: fc.option(fc.constantFrom('send', 'read', 'other'), { nil: undefined }),
});

type Req = { action: string; params: Record<string, unknown>; path: string; tool: string | undefined };

function decideWith(t: unknown[] | null, s: unknown[] | null, r: Req): boolean {
  const input: DecisionInput = { audience: AUD, requestUrl: AUD + r.path, action: r.action, params: r.params, tokenEntries: t, statusEntries: s, now: NOW };
  return decide(r.tool === undefined ? input : { ...input, tool: r.tool }).permit;
}

/** Fresh copies, so the decision cache (keyed by array identity) never serves a stale compilation. */
const copy = <T>(v: T): T => structuredClone(v);

describe('decide() never widens authority (fast-check)', () => {
  it('removing a non-anchor entry from a side never turns deny into permit', () => {
    fc.assert(
      fc.property(sideArb, maybeSide, requestArb, fc.nat(), fc.boolean(), (a, b, r, k, onToken) => {
        const [t, s] = onToken ? [a, b] : [b, a];
        if (decideWith(copy(t), copy(s), r)) return;
        if (a.length < 2) return;
        const i = 1 + (k % (a.length - 1));
        const narrowed = a.filter((_, j) => j !== i);
        expect(onToken ? decideWith(copy(narrowed), copy(s), r) : decideWith(copy(t), copy(narrowed), r)).toBe(false);
      }),
      { numRuns: RUNS },
    );
  });

  it('adding a constraint to an entry never turns deny into permit', () => {
    fc.assert(
      fc.property(sideArb, maybeSide, requestArb, fc.nat(), constraintsArb, (t, s, r, k, extra) => {
        if (decideWith(copy(t), copy(s), r)) return;
        const i = k % t.length;
        const narrowed = t.map((e, j) => (j === i ? { ...e, constraints: { ...extra, ...(e.constraints ?? {}) } } : e));
        expect(decideWith(copy(narrowed), copy(s), r)).toBe(false);
      }),
      { numRuns: RUNS },
    );
  });

  it('removing an action from an entry never turns deny into permit', () => {
    fc.assert(
      fc.property(sideArb, maybeSide, requestArb, fc.nat(), fc.nat(), (t, s, r, k, m) => {
        if (decideWith(copy(t), copy(s), r)) return;
        const i = k % t.length;
        const e = t[i]!;
        const actions = e['actions'] as string[];
        if (actions.length === 0) return;
        const narrowed = t.map((x, j) => (j === i ? { ...x, actions: actions.filter((_, n) => n !== m % actions.length) } : x));
        expect(decideWith(copy(narrowed), copy(s), r)).toBe(false);
      }),
      { numRuns: RUNS },
    );
  });

  it('when one present side denies, no entries on the other side turn it into a permit', () => {
    fc.assert(
      fc.property(sideArb, maybeSide, fc.array(entryArb, { maxLength: 3 }), requestArb, fc.boolean(), (denying, other, extra, r, tokenDenies) => {
        const alone = tokenDenies ? decideWith(copy(denying), null, r) : decideWith(null, copy(denying), r);
        if (alone) return;
        const o = [...(other ?? []), ...extra];
        expect(tokenDenies ? decideWith(copy(denying), copy(o), r) : decideWith(copy(o), copy(denying), r)).toBe(false);
      }),
      { numRuns: RUNS },
    );
  });

  it('a permit is permitted by each present side alone', () => {
    fc.assert(
      fc.property(sideArb, sideArb, requestArb, (t, s, r) => {
        if (!decideWith(copy(t), copy(s), r)) return;
        expect(decideWith(copy(t), null, r)).toBe(true);
        expect(decideWith(null, copy(s), r)).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('no params permit an amount above every max_amount of a side whose entries all carry one', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(decimalString, fc.array(grantAction, { minLength: 1, maxLength: 3 }), constraintsArb), { minLength: 1, maxLength: 4 }),
        decimalString,
        paramsArb,
        actionName,
        (specs, over, params, action) => {
          const entries = specs.map(([limit, actions, extra]) => ({
            type: 'mission_resource_access',
            resource: AUD,
            actions,
            constraints: { ...extra, max_amount: { amount: limit, currency: 'USD' } },
          }));
          const maxLimit = specs.map(([l]) => parseDecimalString(l)!).reduce((a, b) => (compareDecimal(a, b) >= 0 ? a : b));
          const amount = parseDecimalString(over)!;
          if (compareDecimal(amount, maxLimit) <= 0) return;
          const p = { ...params, amount: over, currency: 'USD' };
          expect(decideWith(entries, null, { action, params: p, path: '/pay', tool: undefined })).toBe(false);
          expect(decideWith(null, entries, { action, params: p, path: '/pay', tool: undefined })).toBe(false);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('an entry with an unknown constraint never permits by itself', () => {
    fc.assert(
      fc.property(anchorArb, requestArb, fc.string({ minLength: 1, maxLength: 12 }), (e, r, name) => {
        fc.pre(!['max_amount', 'tenant', 'recipient_domain', 'time_window', 'allowed_tools', 'data_classification', 'resource_issued_after', 'resource_issued_before', 'requires_action_approval'].includes(name));
        const x = { ...e, constraints: { ...(e.constraints ?? {}), [name]: 'v' } };
        expect(decideWith([x], null, r)).toBe(false);
      }),
      { numRuns: RUNS },
    );
  });

  it('is pure: deeply frozen inputs are accepted and the answer repeats', () => {
    fc.assert(
      fc.property(maybeSide, maybeSide, requestArb, (t, s, r) => {
        const deepFreeze = <T>(v: T): T => {
          if (v !== null && typeof v === 'object') {
            for (const x of Object.values(v)) deepFreeze(x);
            Object.freeze(v);
          }
          return v;
        };
        const ft = deepFreeze(copy(t));
        const fs = deepFreeze(copy(s));
        const fr = deepFreeze(copy(r));
        const first = decideWith(ft, fs, fr);
        expect(decideWith(ft, fs, fr)).toBe(first);
        expect(decideWith(copy(t), copy(s), r)).toBe(first);
      }),
      { numRuns: RUNS },
    );
  });

  it('a permitting entry satisfies each of its constraints by an independent oracle', () => {
    /** Decimal strings and numbers scaled to 10^-20 as BigInt; null when not a plain decimal. */
    const scaled = (v: unknown): bigint | null => {
      // A JSON number means the decimal its shortest round-trip form shows (decimal.ts).
      // Tiny doubles print with an exponent; toFixed gives their plain expansion (limits here have <= 6 decimals).
      const str = typeof v === 'number' && Number.isFinite(v) && v >= 0 && !Object.is(v, -0) ? (String(v).includes('e') ? v.toFixed(30) : String(v)) : v;
      if (typeof str !== 'string' || !/^(0|[1-9][0-9]*)(\.[0-9]+)?$/.test(str)) return null;
      const [i, f = ''] = str.split('.');
      return BigInt(i!) * 10n ** 20n + BigInt((f + '0'.repeat(20)).slice(0, 20));
    };
    fc.assert(
      fc.property(sideArb, requestArb, (t, r) => {
        const input: DecisionInput = { audience: AUD, requestUrl: AUD + r.path, action: r.action, params: r.params, tokenEntries: copy(t), statusEntries: null, now: NOW };
        const d = decide(r.tool === undefined ? input : { ...input, tool: r.tool });
        if (!d.permit) return;
        const c = (d.entry['constraints'] ?? {}) as Record<string, any>;
        const p = r.params;
        if (c['tenant'] !== undefined) expect(p['tenant']).toBe(c['tenant']);
        if (c['max_amount'] !== undefined) {
          expect(String(p['currency']).toLowerCase()).toBe(String(c['max_amount'].currency).toLowerCase());
          const a = scaled(p['amount']);
          expect(a).not.toBeNull();
          expect(a! <= scaled(c['max_amount'].amount)!).toBe(true);
        }
        if (c['recipient_domain'] !== undefined) {
          const rec = String(p['recipient']);
          const host = rec.includes('://') ? new URL(rec).hostname : rec.split('@')[1];
          expect(host?.toLowerCase()).toBe(c['recipient_domain']);
        }
        if (c['allowed_tools'] !== undefined) expect(c['allowed_tools']).toContain(r.tool ?? p['tool']);
        if (c['time_window'] !== undefined) {
          const { not_before: nb, not_after: na } = c['time_window'] as { not_before?: string; not_after?: string };
          if (nb !== undefined) expect(NOW >= Date.parse(nb)).toBe(true);
          if (na !== undefined) expect(NOW <= Date.parse(na)).toBe(true);
        }
        expect(c['geo_fence']).toBeUndefined();
        expect(d.entry['type']).toBe('mission_resource_access');
        expect(d.entry['resource_match'] ?? 'exact').not.toBe('regex');
      }),
      { numRuns: RUNS * 3 },
    );
  });
});
