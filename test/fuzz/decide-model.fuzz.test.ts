/**
 * SPEC section 4 (authority) against a reference model written from the SPEC text alone, for
 * generated Authority Sets on both sides (token `authorization_details`, Mission Status):
 * decide() permits exactly when the model permits, and in particular never where the model denies.
 * The model is deliberately naive (string and BigInt arithmetic, no shared code with src/).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decide } from '../../src/authority/decide.js';
import { bounded, RUNS } from './bounds.js';

const AUD = 'https://api.example.com';
const NOW = Date.parse('2026-11-02T08:14:03Z');

// ---- generators ---------------------------------------------------------------------------------

const decimal = fc.oneof(
  fc.constantFrom('0', '5', '100', '100.00', '100.01', '99.999', '1000', '0.5', '250.5'),
  fc.tuple(fc.nat({ max: 2000 }), fc.option(fc.stringMatching(/^[0-9]{1,3}$/), { nil: undefined })).map(([i, f]) => (f === undefined ? String(i) : `${i}.${f}`)),
);
const oneConstraintSet = fc.record(
  {
    max_amount: fc.record({ amount: decimal, currency: fc.constantFrom('USD', 'eur') }),
    tenant: fc.oneof(fc.constantFrom('acme', 'globex'), fc.constant(['acme', 'initech'])),
    recipient_domain: fc.constantFrom('example.com', 'example.org'),
    time_window: fc.constantFrom({ not_before: '2026-11-01T00:00:00Z' }, { not_after: '2026-11-01T00:00:00Z' }, { not_before: '2026-11-02T08:14:03Z', not_after: '2026-11-02T08:14:03Z' }),
    allowed_tools: fc.constantFrom(['send'], ['send', 'read'], ['other']),
    geo_fence: fc.constant('EU'),
  },
  { requiredKeys: [] },
);
/** Mostly zero or one constraint, so permits are common enough to test. */
const constraints = fc.oneof(
  fc.constant({}),
  fc.constantFrom('max_amount', 'tenant', 'recipient_domain', 'time_window', 'allowed_tools').chain((k) => oneConstraintSet.map((c) => (c[k as keyof typeof c] === undefined ? {} : { [k]: c[k as keyof typeof c] }))),
  oneConstraintSet,
);
const entry = fc.record(
  {
    type: fc.constantFrom('mission_resource_access', 'mission_resource_access', 'other'),
    resource: fc.constantFrom(AUD, AUD, `${AUD}/pay`, `${AUD}/pay/`, 'https://other.example.com', `${AUD}/payx`),
    resource_match: fc.constantFrom('exact', 'prefix', 'prefix', 'glob'),
    actions: fc.array(fc.constantFrom('pay.create', 'pay.read', 'pay.*', 'pay', 'read', '*', 'pay.create.x', 'other.*'), { maxLength: 3 }),
    constraints,
  },
  { requiredKeys: ['type', 'resource', 'actions'] },
);
const side = fc.option(fc.array(entry, { maxLength: 4 }), { nil: null });
const request = fc.record({
  action: fc.constantFrom('pay.create', 'pay.read', 'pay', 'read', 'pay.create.x', 'other.thing', 'payx'),
  path: fc.constantFrom('/', '/pay', '/pay/1', '/payx', '/pay%2F1', '/other'),
  params: fc.record(
    {
      amount: fc.oneof(decimal, fc.constantFrom(5, 100, 100.01, 250.5, 0.5), fc.constantFrom('1e2', '-1', ' 5', '05', '', 'x')),
      currency: fc.constantFrom('USD', 'usd', 'EUR', 'GBP'),
      tenant: fc.constantFrom('acme', 'ACME', 'initech', 'globex'),
      recipient: fc.constantFrom('a@example.com', 'a@EXAMPLE.org', 'a@sub.example.com', 'https://example.com/x', 'http://example.org:8080/', 'example.com', 'a@example.com.evil'),
    },
    { requiredKeys: [] },
  ),
  tool: fc.option(fc.constantFrom('send', 'read', 'other'), { nil: undefined }),
});

// ---- the model ----------------------------------------------------------------------------------

type Json = Record<string, unknown>;

/** A non-negative decimal (string, or a JSON number shown in plain form) scaled by 10^12; null otherwise. */
function scaled(v: unknown): bigint | null {
  const s = typeof v === 'number' ? String(v) : v;
  if (typeof s !== 'string' || !/^(0|[1-9][0-9]*)(\.[0-9]+)?$/.test(s)) return null;
  const [i, f = ''] = s.split('.');
  if (f.length > 12) return null;
  return BigInt(i!) * 10n ** 12n + BigInt(f.padEnd(12, '0'));
}

function hostOf(r: unknown): string | null {
  if (typeof r !== 'string') return null;
  if (r.includes('://')) return new URL(r).hostname.toLowerCase();
  const at = r.split('@');
  return at.length === 2 && at[1] !== '' ? at[1]!.toLowerCase() : null;
}

function constraintHolds(name: string, value: unknown, params: Json, tool: string | undefined): boolean {
  switch (name) {
    case 'max_amount': {
      const v = value as { amount: string; currency: string };
      const a = scaled(params['amount']);
      return typeof params['currency'] === 'string' && params['currency'].toLowerCase() === v.currency.toLowerCase() && a !== null && a <= scaled(v.amount)!;
    }
    case 'tenant':
      return typeof params['tenant'] === 'string' && [value].flat().includes(params['tenant']);
    case 'recipient_domain':
      return hostOf(params['recipient']) === value;
    case 'time_window': {
      const w = value as { not_before?: string; not_after?: string };
      return (w.not_before === undefined || NOW >= Date.parse(w.not_before)) && (w.not_after === undefined || NOW <= Date.parse(w.not_after));
    }
    case 'allowed_tools':
      return (value as string[]).includes((tool ?? params['tool']) as string);
    default:
      return false; // an unknown constraint never holds
  }
}

function appliesTo(e: Json, url: string): boolean {
  const match = e['resource_match'] ?? 'exact';
  const r = e['resource'] as string;
  if (match === 'exact') return r === AUD;
  if (match === 'prefix') return url === r || url.startsWith(r.endsWith('/') ? r : r + '/');
  return true; // a placement this gateway cannot evaluate applies (and grants nothing)
}

function listed(actions: unknown, action: string): boolean {
  return (actions as string[]).some((a) => a === action || (a.endsWith('.*') && a.length > 2 && action.startsWith(a.slice(0, -1)) && action.length > a.length - 1));
}

/** 'absent' when no entry applies; else whether some applying entry grants the request. */
function modelSide(entries: Json[] | null, url: string, action: string, params: Json, tool: string | undefined): 'absent' | boolean {
  if (entries === null) return 'absent';
  const applying = entries.filter((e) => e['type'] === 'mission_resource_access' && appliesTo(e, url));
  if (applying.length === 0) return 'absent';
  return applying.some(
    (e) =>
      (e['resource_match'] ?? 'exact') !== 'glob' &&
      listed(e['actions'], action) &&
      Object.entries((e['constraints'] ?? {}) as Json).every(([n, v]) => constraintHolds(n, v, params, tool)),
  );
}

function model(t: Json[] | null, s: Json[] | null, url: string, action: string, params: Json, tool: string | undefined): boolean {
  const a = modelSide(t, url, action, params, tool);
  const b = modelSide(s, url, action, params, tool);
  if (a === 'absent' && b === 'absent') return false;
  return (a === 'absent' || a) && (b === 'absent' || b);
}

describe('SPEC §4 decide() against a reference model of the Authority Set', () => {
  it('permits exactly when the model permits (never where it denies), in bounded time', () => {
    fc.assert(
      fc.property(side, side, request, (t, s, r) => {
        const url = AUD + r.path;
        const expected = model(t, s, url, r.action, r.params, r.tool);
        const got = bounded(() =>
          decide({
            audience: AUD,
            requestUrl: url,
            action: r.action,
            params: r.params,
            tokenEntries: t === null ? null : structuredClone(t),
            statusEntries: s === null ? null : structuredClone(s),
            now: NOW,
            ...(r.tool === undefined ? {} : { tool: r.tool }),
          }),
        );
        if (!got.ok) throw got.error;
        expect(got.value.permit, JSON.stringify({ t, s, r })).toBe(expected);
      }),
      { numRuns: RUNS * 4 },
    );
  });
});
