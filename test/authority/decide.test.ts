import { describe, expect, it } from 'vitest';
import { actionVisible, decide, type Decision, type DecisionInput } from '../../src/authority/decide.js';
import { setNumberSource } from '../../src/authority/json.js';

const AUD = 'https://api.example.com';
const NOW = Date.parse('2026-11-02T08:14:03Z');

function entry(actions: string[], constraints?: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { type: 'mission_resource_access', resource: AUD, actions, ...(constraints === undefined ? {} : { constraints }), ...extra };
}

function input(over: Partial<DecisionInput>): DecisionInput {
  return { audience: AUD, requestUrl: AUD + '/payments', action: 'payments.create', params: {}, tokenEntries: null, statusEntries: null, now: NOW, ...over };
}

function run(tokenEntries: unknown[] | null, over: Partial<DecisionInput> = {}): Decision {
  return decide(input({ tokenEntries, ...over }));
}

const permit = (d: Decision): boolean => d.permit;
const code = (d: Decision): string => (d.permit ? 'permit' : d.code);

describe('SPEC §4 applying entries', () => {
  it('an exact entry applies when resource equals the audience', () => {
    expect(permit(run([entry(['payments.create'])]))).toBe(true);
  });

  it('an exact entry for another resource does not apply (out_of_authority)', () => {
    const e = { ...entry(['payments.create']), resource: 'https://other.example.com' };
    expect(code(run([e]))).toBe('out_of_authority');
  });

  it('exact compares the string: a trailing slash is another resource', () => {
    const e = { ...entry(['payments.create']), resource: AUD + '/' };
    expect(code(run([e]))).toBe('out_of_authority');
  });

  it('resource_match "exact" is the default', () => {
    expect(permit(run([entry(['payments.create'], undefined, { resource_match: 'exact' })]))).toBe(true);
  });

  it('ignores entries of other types and non-objects', () => {
    const other = { type: 'payment_initiation', resource: AUD, actions: ['payments.create'] };
    expect(code(run([other, 'x', null, 42, ['a']]))).toBe('out_of_authority');
  });

  it('ignores an entry without a string resource', () => {
    expect(code(run([{ type: 'mission_resource_access', actions: ['payments.create'] }]))).toBe('out_of_authority');
  });

  describe('resource_match prefix ends on a path-segment boundary', () => {
    const prefix = (resource: string): Record<string, unknown> => ({ type: 'mission_resource_access', resource, resource_match: 'prefix', actions: ['payments.create'] });
    const cases: [string, string, boolean][] = [
      ['https://api.example.com/a', 'https://api.example.com/a', true],
      ['https://api.example.com/a', 'https://api.example.com/a/b', true],
      ['https://api.example.com/a', 'https://api.example.com/a/', true],
      ['https://api.example.com/a', 'https://api.example.com/ab', false],
      ['https://api.example.com/a', 'https://api.example.com/a%2Fb', false],
      ['https://api.example.com/a/', 'https://api.example.com/a/b', true],
      ['https://api.example.com/a/', 'https://api.example.com/a', false],
      ['https://api.example.com', 'https://api.example.com/anything', true],
      ['https://api.example.com/', 'https://api.example.com/anything', true],
      ['https://API.Example.COM:443/a', 'https://api.example.com/a/b', true],
      ['https://api.example.com/%61', 'https://api.example.com/a/b', true],
      ['https://api.example.com/a%2fb', 'https://api.example.com/a%2Fb/c', true],
      ['https://api.example.com/a%2Fb', 'https://api.example.com/a/b', false],
      ['https://api.example.com/x/../a', 'https://api.example.com/a/b', true],
      ['https://api.example.com/a', 'https://api.example.com.evil.com/a', false],
      ['https://api.example.com/a', 'http://api.example.com/a', false],
      ['https://api.example.com:8443/a', 'https://api.example.com/a', false],
      ['https://api.example.com/a?x=1', 'https://api.example.com/a', false],
      ['not a url', 'https://api.example.com/a', false],
      // What the URL parser rewrites and a request path never is places nothing (r21k 3).
      ['https://api.example.com/public\\..\\admin', 'https://api.example.com/admin/users', false],
      ['https://api.example.com/files\ttmp', 'https://api.example.com/filestmp/x', false],
      ['https://api.example.com/a\nb', 'https://api.example.com/ab', false],
      [' https://api.example.com/a', 'https://api.example.com/a', false],
    ];
    for (const [resource, url, ok] of cases) {
      it(`${resource} ${ok ? 'applies to' : 'does not permit'} ${url}`, () => {
        expect(permit(run([prefix(resource)], { requestUrl: url }))).toBe(ok);
      });
    }
  });

  it('mission-contracts §7: an unknown resource_match fails closed (constraint_unsupported) even if the resource equals the audience', () => {
    const d = run([entry(['payments.create'], undefined, { resource_match: 'regex' })]);
    expect(d).toEqual({ permit: false, code: 'constraint_unsupported', constraint: 'resource_match' });
  });

  it('an unknown resource_match entry that does not name the action is out_of_authority', () => {
    expect(code(run([entry(['other'], undefined, { resource_match: 'glob' })]))).toBe('out_of_authority');
  });

  it('an unknown resource_match entry makes its side present, so the other side alone cannot permit', () => {
    const t = [{ type: 'mission_resource_access', resource: 'https://elsewhere.example', resource_match: 'glob', actions: ['other'] }];
    const s = [entry(['payments.create'])];
    expect(code(decide(input({ tokenEntries: t, statusEntries: s })))).toBe('out_of_authority');
  });

  it('an unknown resource_match entry does not stop another entry of the same side from permitting', () => {
    expect(permit(run([entry(['payments.create'], undefined, { resource_match: 'glob' }), entry(['payments.create'])]))).toBe(true);
  });
});

describe('SPEC §4 actions: exact or family x.*', () => {
  const cases: [string[], string, boolean][] = [
    [['invoices.read'], 'invoices.read', true],
    [['invoices.read'], 'invoices.write', false],
    [['invoices.read'], 'Invoices.read', false],
    [['invoices.*'], 'invoices.read', true],
    [['invoices.*'], 'invoices.line.read', true],
    [['invoices.*'], 'invoices', false],
    [['invoices.*'], 'invoices.', false],
    [['invoices.*'], 'invoicesx.read', false],
    [['x.*'], 'xy.z', false],
    [['*'], 'invoices.read', false],
    [['.*'], 'a.b', false],
    [[], 'invoices.read', false],
  ];
  for (const [actions, action, ok] of cases) {
    it(`${JSON.stringify(actions)} ${ok ? 'grants' : 'does not grant'} ${action}`, () => {
      expect(permit(run([entry(actions)], { action }))).toBe(ok);
    });
  }

  it('non-string actions and a non-array actions member grant nothing', () => {
    expect(permit(run([{ ...entry([]), actions: [1, null, {}] }]))).toBe(false);
    expect(permit(run([{ ...entry([]), actions: 'payments.create' }]))).toBe(false);
  });
});

describe('SPEC §4 sides: both must permit, one decides alone, none is out_of_authority', () => {
  const ok = [entry(['payments.create'])];
  const no = [entry(['invoices.read'])];
  const other = [{ ...entry(['payments.create']), resource: 'https://other.example' }];
  const cases: [string, unknown[] | null, unknown[] | null, string][] = [
    ['neither side', null, null, 'out_of_authority'],
    ['both empty', [], [], 'out_of_authority'],
    ['token only, permits', ok, null, 'permit'],
    ['status only, permits', null, ok, 'permit'],
    ['token only, denies', no, null, 'out_of_authority'],
    ['both permit', ok, ok, 'permit'],
    ['token permits, status denies', ok, no, 'out_of_authority'],
    ['token denies, status permits', no, ok, 'out_of_authority'],
    ['token permits, status has entries for other resources only', ok, other, 'permit'],
    ['token has entries for other resources only, status permits', other, ok, 'permit'],
    ['token permits, status empty', ok, [], 'permit'],
  ];
  for (const [name, t, s, expected] of cases) {
    it(name, () => {
      expect(code(decide(input({ tokenEntries: t, statusEntries: s })))).toBe(expected);
    });
  }

  it('returns the token-side applying entry on a permit', () => {
    const t = [entry(['payments.create'], undefined, { marker: 'token' })];
    const s = [entry(['payments.create'], undefined, { marker: 'status' })];
    const d = decide(input({ tokenEntries: t, statusEntries: s }));
    expect(d.permit && d.entry['marker']).toBe('token');
    const d2 = decide(input({ tokenEntries: null, statusEntries: s }));
    expect(d2.permit && d2.entry['marker']).toBe('status');
  });

  it('entries of one side are ORed: one permitting entry is enough', () => {
    const t = [entry(['payments.create'], { tenant: 'acme' }), entry(['payments.create'], { tenant: 'globex' })];
    expect(permit(run(t, { params: { tenant: 'globex' } }))).toBe(true);
  });

  it('the status side narrows: a violation there denies although the token permits', () => {
    const t = [entry(['payments.create'], { max_amount: { amount: '1000', currency: 'USD' } })];
    const s = [entry(['payments.create'], { max_amount: { amount: '100', currency: 'USD' } })];
    const d = decide(input({ tokenEntries: t, statusEntries: s, params: { amount: '500', currency: 'USD' } }));
    expect(d).toEqual({ permit: false, code: 'parameter_violation', constraint: 'max_amount' });
  });

  it('scope never widens: no input carries scope, and a scope-like member on an entry is ignored', () => {
    const e = { ...entry(['invoices.read']), scope: 'payments.create' };
    expect(code(run([e]))).toBe('out_of_authority');
  });
});

describe('denial precedence within a side', () => {
  it('parameter_violation when the action is listed but a constraint fails', () => {
    expect(run([entry(['payments.create'], { tenant: 'acme' })], { params: { tenant: 'x' } })).toEqual({ permit: false, code: 'parameter_violation', constraint: 'tenant' });
  });

  it('constraint_unsupported when the only entry naming the action carries an unknown constraint', () => {
    expect(run([entry(['payments.create'], { geo_fence: 'EU' })])).toEqual({ permit: false, code: 'constraint_unsupported', constraint: 'geo_fence' });
  });

  it('an unknown constraint denies even when the other constraints hold and come first', () => {
    const d = run([entry(['payments.create'], { tenant: 'acme', geo_fence: 'EU' })], { params: { tenant: 'acme' } });
    expect(d).toEqual({ permit: false, code: 'constraint_unsupported', constraint: 'geo_fence' });
  });

  it('parameter_violation outranks constraint_unsupported (changing parameters could permit)', () => {
    const d = run([entry(['payments.create'], { geo_fence: 'EU' }), entry(['payments.create'], { tenant: 'acme' })], { params: { tenant: 'x' } });
    expect(code(d)).toBe('parameter_violation');
  });

  it('an entry with a good constraint set still permits beside an unsupported one', () => {
    const d = run([entry(['payments.create'], { geo_fence: 'EU' }), entry(['payments.create'], { tenant: 'acme' })], { params: { tenant: 'acme' } });
    expect(permit(d)).toBe(true);
  });

  it('a constraints member that is not an object is unsupported', () => {
    for (const c of [null, 'x', ['max_amount'], 5]) {
      expect(run([{ ...entry(['payments.create']), constraints: c }])).toEqual({ permit: false, code: 'constraint_unsupported', constraint: 'constraints' });
    }
  });

  it('an empty constraints object holds', () => {
    expect(permit(run([entry(['payments.create'], {})]))).toBe(true);
  });

  it('across sides the more specific denial is reported', () => {
    const t = [entry(['payments.create'], { tenant: 'acme' })];
    const s = [entry(['invoices.read'])];
    expect(code(decide(input({ tokenEntries: t, statusEntries: s, params: { tenant: 'x' } })))).toBe('parameter_violation');
  });
});

describe('mission-contracts §7 constraints', () => {
  const one = (constraints: Record<string, unknown>, params: Record<string, unknown>, over: Partial<DecisionInput> = {}): string =>
    code(run([entry(['payments.create'], constraints)], { params, ...over }));

  describe('max_amount {amount, currency}: exact decimal, currency ignoring case, missing fails', () => {
    const c = { max_amount: { amount: '500.00', currency: 'USD' } };
    const cases: [unknown, unknown, string][] = [
      ['423.50', 'USD', 'permit'],
      ['500', 'USD', 'permit'],
      ['500.00', 'usd', 'permit'],
      ['500.0000000000', 'UsD', 'permit'],
      [500, 'USD', 'permit'],
      [499.99, 'USD', 'permit'],
      [0, 'USD', 'permit'],
      ['0', 'USD', 'permit'],
      ['0.5', 'USD', 'permit'],
      ['500.01', 'USD', 'parameter_violation'],
      ['500.000000000000000001', 'USD', 'parameter_violation'],
      ['1000', 'USD', 'parameter_violation'],
      [500.01, 'USD', 'parameter_violation'],
      [1e21, 'USD', 'parameter_violation'],
      ['423.50', 'EUR', 'parameter_violation'],
      ['423.50', undefined, 'parameter_violation'],
      [undefined, 'USD', 'parameter_violation'],
      ['5e2', 'USD', 'parameter_violation'],
      ['4.235e2', 'USD', 'parameter_violation'],
      ['-1', 'USD', 'parameter_violation'],
      [-1, 'USD', 'parameter_violation'],
      [-0, 'USD', 'permit'],
      ['-0', 'USD', 'parameter_violation'],
      ['+1', 'USD', 'parameter_violation'],
      ['0400', 'USD', 'parameter_violation'],
      [' 400', 'USD', 'parameter_violation'],
      ['400 ', 'USD', 'parameter_violation'],
      ['400.', 'USD', 'parameter_violation'],
      ['.5', 'USD', 'parameter_violation'],
      ['NaN', 'USD', 'parameter_violation'],
      [NaN, 'USD', 'parameter_violation'],
      [Infinity, 'USD', 'parameter_violation'],
      ['Infinity', 'USD', 'parameter_violation'],
      ['0x10', 'USD', 'parameter_violation'],
      ['1,00', 'USD', 'parameter_violation'],
      ['１００', 'USD', 'parameter_violation'],
      ['', 'USD', 'parameter_violation'],
      ['1'.repeat(65), 'USD', 'parameter_violation'],
      [null, 'USD', 'parameter_violation'],
      [true, 'USD', 'parameter_violation'],
      [['100'], 'USD', 'parameter_violation'],
      [{ value: '100' }, 'USD', 'parameter_violation'],
      ['100', ['USD'], 'parameter_violation'],
    ];
    for (const [amount, currency, expected] of cases) {
      it(`amount ${JSON.stringify(amount) ?? String(amount)} ${JSON.stringify(currency) ?? 'missing'} -> ${expected}`, () => {
        const params: Record<string, unknown> = {};
        if (amount !== undefined) params['amount'] = amount;
        if (currency !== undefined) params['currency'] = currency;
        expect(one(c, params)).toBe(expected);
      });
    }
    it('SPEC §4: a body number a double cannot hold is compared by the literal the client wrote', () => {
      // What JSON.parse makes of the literal, with the literal kept beside it (json.ts).
      const kept = (lit: string): Record<string, unknown> => {
        const params: Record<string, unknown> = { amount: Number(lit), currency: 'USD' };
        setNumberSource(params, 'amount', lit);
        return params;
      };
      expect(one(c, kept('500.0000000000000001'))).toBe('parameter_violation'); // 500 as a double
      expect(one(c, kept('499.99999999999999999'))).toBe('permit'); // 500 as a double too
      expect(one(c, kept('12345678901234567890'))).toBe('parameter_violation');
      expect(one(c, kept('1e400'))).toBe('parameter_violation'); // Infinity as a double
      expect(one(c, kept('1e-400'))).toBe('permit'); // 0 as a double
      expect(one(c, kept('-1e-400'))).toBe('parameter_violation'); // -0 as a double, but negative
      expect(one({ max_amount: { amount: '0', currency: 'USD' } }, kept('1e-400'))).toBe('parameter_violation');
    });
    it("the limit is a decimal string as the draft writes it: a JSON number (its digits already lost to a double) is unsupported (r14b 1)", () => {
      // 499.99999999999999999 in the token reads as 500: a 500.00 payment would pass a 499.99… ceiling.
      for (const amount of [500, 499.99999999999999999, 9007199254740995]) {
        expect(one({ max_amount: { amount, currency: 'USD' } }, { amount: '1.00', currency: 'USD' })).toBe('constraint_unsupported');
      }
      expect(one({ max_amount: { amount: '0500', currency: 'USD' } }, { amount: '500.00', currency: 'USD' })).toBe('permit');
      expect(one({ max_amount: { amount: '0500', currency: 'USD' } }, { amount: '500.01', currency: 'USD' })).toBe('parameter_violation');
      expect(one({ max_amount: { amount: '500.000000000000000001', currency: 'USD' } }, { amount: '1', currency: 'USD' })).toBe('permit'); // 18 digits
      expect(one({ max_amount: { amount: '500.0000000000000000001', currency: 'USD' } }, { amount: '1', currency: 'USD' })).toBe('constraint_unsupported'); // 19
    });
    it('a malformed max_amount is unsupported', () => {
      for (const bad of [{ amount: '5e2', currency: 'USD' }, { amount: '500' }, { currency: 'USD' }, '500', null, { amount: '-1', currency: 'USD' }, { amount: '1', currency: '' }]) {
        expect(one({ max_amount: bad }, { amount: '1', currency: 'USD' })).toBe('constraint_unsupported');
      }
    });
  });

  describe('tenant: exactly equal', () => {
    const cases: [unknown, unknown, string][] = [
      ['acme', 'acme', 'permit'],
      ['acme', 'Acme', 'parameter_violation'],
      ['acme', 'acme ', 'parameter_violation'],
      ['acme', undefined, 'parameter_violation'],
      ['42', 42, 'parameter_violation'],
      ['acme', ['acme'], 'parameter_violation'],
      [['acme', 'globex'], 'globex', 'permit'],
      [['acme', 'globex'], 'initech', 'parameter_violation'],
    ];
    for (const [c, p, expected] of cases) {
      it(`${JSON.stringify(c)} vs ${JSON.stringify(p) ?? 'missing'} -> ${expected}`, () => {
        expect(one({ tenant: c }, p === undefined ? {} : { tenant: p })).toBe(expected);
      });
    }
    it('a malformed tenant is unsupported', () => {
      for (const bad of [42, null, [], [1], '', {}]) expect(one({ tenant: bad }, { tenant: 'acme' })).toBe('constraint_unsupported');
    });
  });

  describe('recipient_domain: host of an e-mail or URL equals, ignoring case; subdomains do not match', () => {
    const cases: [unknown, string][] = [
      ['alice@example.com', 'permit'],
      ['Alice@EXAMPLE.com', 'permit'],
      ['https://example.com/path', 'permit'],
      ['https://EXAMPLE.COM:8443/x?y#z', 'permit'],
      ['mailto://example.com', 'permit'],
      [['a@example.com', 'b@example.com'], 'permit'],
      ['alice@sub.example.com', 'parameter_violation'],
      ['https://sub.example.com/', 'parameter_violation'],
      ['alice@example.com.evil.com', 'parameter_violation'],
      ['alice@evilexample.com', 'parameter_violation'],
      ['https://example.com@evil.com/', 'parameter_violation'],
      // Read differently by other URL parsers (RFC 3986 userinfo, no IDNA mapping, decoding):
      ['https://example.com\\@evil.com/hook', 'parameter_violation'],
      ['https://example%2ecom/', 'parameter_violation'],
      ['https://example\uff0ecom/', 'parameter_violation'],
      ['https://\uff45xample.com/', 'parameter_violation'],
      ['https://exam\tple.com/', 'parameter_violation'],
      ['https://example.com/a b', 'parameter_violation'],
      ['mailto://x@evil.com@example.com', 'parameter_violation'],
      ['https://[::1]/', 'parameter_violation'],
      ['alice@example.com, bob@evil.com', 'parameter_violation'],
      ['alice@evil.com,bob@example.com', 'parameter_violation'],
      ['"a@b"@example.com', 'parameter_violation'],
      ['alice@example.com.', 'parameter_violation'],
      ['alice@', 'parameter_violation'],
      ['@example.com', 'parameter_violation'],
      ['example.com', 'parameter_violation'],
      ['https://', 'parameter_violation'],
      ['not a recipient', 'parameter_violation'],
      [['a@example.com', 'b@evil.com'], 'parameter_violation'],
      [[], 'parameter_violation'],
      [42, 'parameter_violation'],
    ];
    for (const [r, expected] of cases) {
      it(`${JSON.stringify(r)} -> ${expected}`, () => {
        expect(one({ recipient_domain: 'example.com' }, { recipient: r })).toBe(expected);
      });
    }
    it('a missing recipient fails', () => {
      expect(one({ recipient_domain: 'example.com' }, {})).toBe('parameter_violation');
    });
    it('an internationalized domain matches its punycode URL host', () => {
      expect(one({ recipient_domain: 'bücher.de' }, { recipient: 'https://BÜCHER.de/' })).toBe('permit');
    });
    it('a list of domains allows each of them', () => {
      expect(one({ recipient_domain: ['example.com', 'example.org'] }, { recipient: ['a@example.org', 'b@example.com'] })).toBe('permit');
    });
  });

  describe('time_window {not_before, not_after}: inclusive, RFC 3339', () => {
    const tw = { not_before: '2026-11-01T00:00:00Z', not_after: '2026-11-30T23:59:59Z' };
    it('inside permits', () => expect(one({ time_window: tw }, {})).toBe('permit'));
    it('on the bounds permits', () => {
      expect(one({ time_window: tw }, {}, { now: Date.parse('2026-11-01T00:00:00Z') })).toBe('permit');
      expect(one({ time_window: tw }, {}, { now: Date.parse('2026-11-30T23:59:59Z') })).toBe('permit');
    });
    it('before and after fail', () => {
      expect(one({ time_window: tw }, {}, { now: Date.parse('2026-10-31T23:59:59Z') })).toBe('parameter_violation');
      expect(one({ time_window: tw }, {}, { now: Date.parse('2026-12-01T00:00:00Z') })).toBe('parameter_violation');
    });
    it('offsets are honoured', () => {
      expect(one({ time_window: { not_after: '2026-11-02T09:00:00+01:00' } }, {})).toBe('parameter_violation');
      expect(one({ time_window: { not_after: '2026-11-02T09:15:00+01:00' } }, {})).toBe('permit');
    });
    it('one bound is enough', () => {
      expect(one({ time_window: { not_before: '2026-11-03T00:00:00Z' } }, {})).toBe('parameter_violation');
    });
    it('params cannot move the clock', () => {
      expect(one({ time_window: { not_after: '2026-01-01T00:00:00Z' } }, { now: '2025-01-01T00:00:00Z', time: 0 })).toBe('parameter_violation');
    });
    it('malformed windows are unsupported', () => {
      for (const bad of [{}, { not_before: 'yesterday' }, { not_before: '2026-02-30T00:00:00Z' }, { not_after: '2026-11-01' }, { not_after: 1793609600 }, { not_after: '2026-11-01T00:00:00Z', extra: 1 }, '2026', null]) {
        expect(one({ time_window: bad }, {})).toBe('constraint_unsupported');
      }
    });
  });

  describe('allowed_tools: the MCP tool name', () => {
    const c = { allowed_tools: ['send_message', 'query_invoices'] };
    it('a listed tool permits', () => expect(one(c, {}, { tool: 'send_message' })).toBe('permit'));
    it('an unlisted tool fails', () => expect(one(c, {}, { tool: 'delete_all' })).toBe('parameter_violation'));
    it('no tool fails', () => expect(one(c, {})).toBe('parameter_violation'));
    it('the `tool` param is read only when no tool name is given', () => {
      expect(one(c, { tool: 'send_message' })).toBe('permit');
      expect(one(c, { tool: 'send_message' }, { tool: 'delete_all' })).toBe('parameter_violation');
    });
    it('malformed is unsupported', () => {
      for (const bad of ['send_message', [], [1], null]) expect(one({ allowed_tools: bad }, {}, { tool: 'send_message' })).toBe('constraint_unsupported');
    });
  });

  describe('data_classification: every requested class is listed', () => {
    const c = { data_classification: ['public', 'internal'] };
    it('listed permits', () => {
      expect(one(c, { data_classification: 'internal' })).toBe('permit');
      expect(one(c, { data_classification: ['public', 'internal'] })).toBe('permit');
    });
    it('unlisted, empty or missing fails', () => {
      expect(one(c, { data_classification: 'restricted' })).toBe('parameter_violation');
      expect(one(c, { data_classification: ['public', 'restricted'] })).toBe('parameter_violation');
      expect(one(c, { data_classification: [] })).toBe('parameter_violation');
      expect(one(c, {})).toBe('parameter_violation');
    });
  });

  describe('resource_issued_after/_before: params resource_issued_at, inclusive', () => {
    const c = { resource_issued_after: '2026-07-01T00:00:00Z', resource_issued_before: '2026-09-30T23:59:59Z' };
    it('inside and on the bounds permits', () => {
      expect(one(c, { resource_issued_at: '2026-08-15T12:00:00Z' })).toBe('permit');
      expect(one(c, { resource_issued_at: '2026-07-01T00:00:00Z' })).toBe('permit');
      expect(one(c, { resource_issued_at: '2026-09-30T23:59:59Z' })).toBe('permit');
    });
    it('outside, garbage or missing fails', () => {
      expect(one(c, { resource_issued_at: '2026-06-30T23:59:59Z' })).toBe('parameter_violation');
      expect(one(c, { resource_issued_at: '2026-10-01T00:00:00Z' })).toBe('parameter_violation');
      expect(one(c, { resource_issued_at: '2026-08-15' })).toBe('parameter_violation');
      expect(one(c, { resource_issued_at: 1790000000 })).toBe('parameter_violation');
      expect(one(c, {})).toBe('parameter_violation');
    });
    it('a malformed bound is unsupported', () => {
      expect(one({ resource_issued_after: 'July' }, { resource_issued_at: '2026-08-15T12:00:00Z' })).toBe('constraint_unsupported');
    });
  });

  describe('requires_action_approval', () => {
    it('false holds', () => expect(one({ requires_action_approval: false }, {})).toBe('permit'));
    it('true is unsupported: this gateway cannot obtain a per-action approval', () => {
      expect(one({ requires_action_approval: true }, {})).toBe('constraint_unsupported');
    });
    it('anything else is unsupported', () => expect(one({ requires_action_approval: 'yes' }, {})).toBe('constraint_unsupported'));
  });

  it('three constraints together must all hold', () => {
    const c = { max_amount: { amount: '500.00', currency: 'USD' }, tenant: 'acme', recipient_domain: 'example.com' };
    const p = { amount: '100', currency: 'USD', tenant: 'acme', recipient: 'bob@example.com' };
    expect(one(c, p)).toBe('permit');
    expect(one(c, { ...p, tenant: 'globex' })).toBe('parameter_violation');
    expect(one(c, { ...p, recipient: 'bob@evil.com' })).toBe('parameter_violation');
    expect(one(c, { ...p, amount: '500.01' })).toBe('parameter_violation');
  });

  it('params are read as own members only (no prototype lookups)', () => {
    const params = Object.create({ tenant: 'acme' }) as Record<string, unknown>;
    expect(one({ tenant: 'acme' }, params)).toBe('parameter_violation');
  });
});

describe('actionVisible (tools/list exposure)', () => {
  it('shows a granted tool even when its constraints need arguments', () => {
    const t = [entry(['send_message'], { recipient_domain: 'example.com' })];
    expect(actionVisible({ audience: AUD, requestUrl: AUD + '/mcp', action: 'send_message', tokenEntries: t, statusEntries: null, now: NOW, tool: 'send_message' })).toBe(true);
  });
  it('hides an ungranted or unsupported tool', () => {
    const t = [entry(['send_message'], { geo_fence: 'EU' })];
    expect(actionVisible({ audience: AUD, requestUrl: AUD + '/mcp', action: 'send_message', tokenEntries: t, statusEntries: null, now: NOW })).toBe(false);
    expect(actionVisible({ audience: AUD, requestUrl: AUD + '/mcp', action: 'other', tokenEntries: t, statusEntries: null, now: NOW })).toBe(false);
  });
});
