import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { authorityHash, entryDigest, extractParams, parameterDigest, parseJsonStrict, queryFold } from '../../src/authority/params.js';
import { MAX_JSON_DEPTH, numberIsExact, numberSource, parsePointer, resolvePointer, stringifyExact } from '../../src/authority/json.js';
import { compileRoutes, type CompiledRoute } from '../../src/config/compile.js';
import { configSchema } from '../../src/config/schema.js';
import { isDenial } from '../../src/errors.js';

const vectors = JSON.parse(readFileSync(new URL('../fixtures/vectors.json', import.meta.url), 'utf8')) as {
  vectors: { id: string; kind: string; inputs: { iss: string; value: unknown }; expected: string; verified: boolean | null }[];
};

function route(params: Record<string, unknown>): CompiledRoute {
  const config = configSchema.parse({
    public_base_url: 'https://api.example.com',
    resource: 'https://api.example.com',
    upstream: { url: 'http://127.0.0.1:3000' },
    issuers: [{ issuer: 'https://as.example.com' }],
    routes: [{ match: { method: 'POST', path: '/payments/*' }, action: 'payments.create', params }],
  });
  return compileRoutes(config)[0]!;
}

const payments = route({
  amount: { body: '/amount' },
  currency: { body: '/currency' },
  recipient: { body: '/to/0/email' },
  tenant: { header: 'X-Tenant' },
  invoice: { path: 1 },
  mode: { query: 'mode' },
});

function extract(body: string | null, over: { search?: string; headers?: Record<string, string | string[]>; segments?: string[]; contentType?: string } = {}): Record<string, unknown> {
  return extractParams(payments, {
    segments: over.segments ?? ['payments', 'inv_42'],
    search: over.search ?? '',
    headers: over.headers ?? {},
    body: body === null ? null : Buffer.from(body),
    contentType: over.contentType ?? 'application/json',
  });
}

function denialCode(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    if (isDenial(err)) return err.code;
    throw err;
  }
  return 'none';
}

describe('SPEC §4 parameter_digest (RFC 8785 JCS, SHA-256, base64url)', () => {
  it('mission-contracts §4 verified vector', () => {
    expect(parameterDigest({ amount_usd: '423.50', source_invoice_id: 'inv_2026Q3_842' })).toBe('sha-256:WPVi6EnQ7H9Fh-qk9ADxmTg8zruOdVUX1esl-v3TfCI');
  });
  it('member order does not matter; number form is JCS', () => {
    expect(parameterDigest({ source_invoice_id: 'inv_2026Q3_842', amount_usd: '423.50' })).toBe('sha-256:WPVi6EnQ7H9Fh-qk9ADxmTg8zruOdVUX1esl-v3TfCI');
    expect(parameterDigest({ a: 423.5 })).toBe(parameterDigest(JSON.parse('{"a":423.50}') as Record<string, unknown>));
    expect(parameterDigest({ a: '423.5' })).not.toBe(parameterDigest({ a: 423.5 }));
  });
});

describe('mission-contracts §7 authority_hash and entry digests (vectors.json)', () => {
  for (const v of vectors.vectors.filter((x) => x.kind === 'authority_hash' && x.verified === true)) {
    it(`${v.id}`, () => {
      expect(authorityHash(v.inputs.iss, v.inputs.value as unknown[])).toBe(v.expected);
    });
  }
  for (const v of vectors.vectors.filter((x) => x.kind === 'entry_digest' && x.verified === true)) {
    it(`${v.id}`, () => {
      expect(entryDigest(v.inputs.iss, v.inputs.value)).toBe(v.expected);
    });
  }
});

describe('SPEC §4 parameter binding', () => {
  it('reads body (JSON Pointer), header, path segment and query', () => {
    const p = extract('{"amount":"423.50","currency":"USD","to":[{"email":"a@example.com"}]}', { search: '?mode=fast', headers: { 'x-tenant': 'acme' } });
    expect(p).toEqual({ amount: '423.50', currency: 'USD', recipient: 'a@example.com', tenant: 'acme', invoice: 'inv_42', mode: 'fast' });
  });

  it('leaves absent params out', () => {
    expect(extract('{"amount":1}', { segments: ['payments'] })).toEqual({ amount: 1 });
    expect(extract(null, { segments: ['payments'] })).toEqual({});
    expect(extract('', { segments: ['payments'] })).toEqual({});
  });

  it('decodes percent-encoded path segments; bad UTF-8 is parameter_unparseable', () => {
    expect(extract(null, { segments: ['payments', 'inv%2F42%20x'] })['invoice']).toBe('inv/42 x');
    expect(denialCode(() => extract(null, { segments: ['payments', '%FF'] }))).toBe('parameter_unparseable');
  });

  it('reads the whole body with the pointer ""', () => {
    const r = route({ all: { body: '' } });
    expect(extractParams(r, { segments: [], search: '', headers: {}, body: Buffer.from('[1,2]'), contentType: 'application/json' })).toEqual({ all: [1, 2] });
  });

  it('RFC 6901: ~1 and ~0 escapes, array indexes, "-" and out-of-range are absent', () => {
    expect(parsePointer('/a~1b/~0c/0')).toEqual(['a/b', '~c', '0']);
    const doc = { 'a/b': { '~c': ['x'] }, arr: [1, 2] };
    expect(resolvePointer(doc, parsePointer('/a~1b/~0c/0'))).toBe('x');
    expect(resolvePointer(doc, ['arr', '-'])).toBeUndefined();
    expect(resolvePointer(doc, ['arr', '2'])).toBeUndefined();
    expect(resolvePointer(doc, ['arr', '01'])).toBeUndefined();
    expect(resolvePointer(doc, ['arr', '1'])).toBe(2);
  });

  it('never reads through the prototype chain', () => {
    const r = route({ x: { body: '/constructor' }, y: { body: '/__proto__/polluted' }, z: { body: '/toString' } });
    const p = extractParams(r, { segments: [], search: '', headers: {}, body: Buffer.from('{"__proto__":{"polluted":true}}'), contentType: 'application/json' });
    expect(p).toEqual({ y: true });
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('a parameter named __proto__ is an own member and touches no prototype', () => {
    // The config schema already drops such a key; a hand-built route proves extractParams alone is safe.
    const r: CompiledRoute = { ...route({}), params: [['__proto__', { body: '/a' }]], readsBody: true };
    const p = extractParams(r, { segments: [], search: '', headers: {}, body: Buffer.from('{"a":{"isAdmin":true}}'), contentType: 'application/json' });
    expect(Object.getPrototypeOf(p)).toBe(Object.prototype);
    expect(Object.keys(p)).toEqual(['__proto__']);
    expect((p as { isAdmin?: boolean }).isAdmin).toBeUndefined();
  });

  describe('parameter_unparseable (SPEC §5) where the upstream could read the body differently', () => {
    const cases: [string, string, Record<string, string>?][] = [
      ['bad JSON', '{"amount":'],
      ['trailing garbage', '{"amount":1} x'],
      ['duplicate key', '{"amount":"1","amount":"9000"}'],
      ['duplicate key via escapes', '{"amount":"1","\\u0061mount":"9000"}'],
      ['nested duplicate key', '{"to":[{"email":"a","email":"b"}]}'],
      ['names equal but for case (Go, ASP.NET Core read the last)', '{"amount":"1","AMOUNT":"9000"}'],
      ['nested names equal but for case', '{"to":[{"email":"a","Email":"b"}]}'],
      ['not JSON content type', '{"amount":1}', { contentType: 'application/x-www-form-urlencoded' }],
      ['no content type', '{"amount":1}', { contentType: '' }],
      ['byte order mark', '\uFEFF{"amount":1}'],
    ];
    for (const [name, body, over] of cases) {
      it(name, () => {
        expect(denialCode(() => extract(body, over))).toBe('parameter_unparseable');
      });
    }
    it('invalid UTF-8', () => {
      expect(
        denialCode(() => extractParams(payments, { segments: [], search: '', headers: {}, body: Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), contentType: 'application/json' })),
      ).toBe('parameter_unparseable');
    });
    it('a repeated query parameter', () => {
      expect(denialCode(() => extract(null, { search: '?mode=a&mode=b' }))).toBe('parameter_unparseable');
    });
    it('a repeated header parameter', () => {
      expect(denialCode(() => extract(null, { headers: { 'x-tenant': ['a', 'b'] } }))).toBe('parameter_unparseable');
    });
    it('a query parameter also given under a spelling another server reads as it (ASP.NET Core: case; PHP: brackets, leading space, dot)', () => {
      for (const alias of ['Mode', 'MODE', 'mode[]', 'mode[x]', '+mode', '%20mode', 'mode%00', 'mode%00x', 'Mode%00[']) {
        expect(denialCode(() => extract(null, { search: `?mode=a&${alias}=b` })), alias).toBe('parameter_unparseable');
      }
      expect(extract(null, { search: '?mode=a&model=b&other=c' })).toMatchObject({ mode: 'a' });
    });
    it('a name of many brackets before a newline folds in linear time, and a bracket before a newline still cuts it (r19c 1)', () => {
      expect(queryFold('mode[\n]')).toBe('mode');
      expect(denialCode(() => extract(null, { search: '?mode=a&mode%5B%0A%5D=b' }))).toBe('parameter_unparseable');
      // Quadratic, this is minutes of CPU; linear, milliseconds. The bound only catches the former.
      const hostile = 'x' + '['.repeat(1 << 20) + '\n';
      const started = performance.now();
      expect(queryFold(hostile)).toBe('x');
      expect(performance.now() - started).toBeLessThan(5000);
    });
    it('a header parameter also given with underscores (CGI, WSGI, PHP, Rack read both as one)', () => {
      expect(denialCode(() => extract(null, { headers: { 'x-tenant': 'acme', x_tenant: 'victim' } }))).toBe('parameter_unparseable');
      expect(extract(null, { headers: { 'x-tenant': 'acme', 'x-tenant-id': 'other' } })).toMatchObject({ tenant: 'acme' });
    });
  });

  it('accepts exact numbers and inexact numbers outside bound params', () => {
    expect(extract('{"amount":423.50,"id":12345678901234567891,"to":[]}')).toEqual({ amount: 423.5, invoice: 'inv_42' });
    expect(extract('{"amount":1e2}')['amount']).toBe(100);
    expect(extract('{"amount":0.1}', { contentType: 'application/vnd.api+json; charset=utf-8' })['amount']).toBe(0.1);
  });

  it('numberIsExact reads literals as decimals', () => {
    for (const ok of ['0', '-0', '-0.0e5', '1', '423.50', '1e2', '1E+2', '0.001', '1e-7', '-5', '123456789012345', '9007199254740991', '0.1']) expect(numberIsExact(ok), ok).toBe(true);
    for (const bad of ['500.000000000000000001', '9007199254740993', '1e400', '0.30000000000000000001', '-1e-400']) expect(numberIsExact(bad), bad).toBe(false);
  });

  describe('SPEC §4: a bound number a double cannot hold is valid JSON, kept with the literal the client wrote', () => {
    it('the param is the double JSON.parse reads, its literal recorded beside it', () => {
      for (const [lit, double] of [
        ['500.000000000000000001', 500],
        ['12345678901234567891', 12345678901234567891],
        ['1e400', Infinity],
        ['-1e-400', -0],
      ] as const) {
        const p = extract(`{"amount":${lit},"currency":"USD"}`);
        expect(p['amount'], lit).toBe(double);
        expect(numberSource(p, 'amount'), lit).toBe(lit);
        expect(numberSource(p, 'currency')).toBeUndefined();
      }
    });
    it('an exact number (and -0, which is zero) records nothing', () => {
      for (const lit of ['423.50', '1e2', '-0', '0.1']) {
        const p = extract(`{"amount":${lit}}`);
        expect(p['amount']).toBe(Number(lit));
        expect(numberSource(p, 'amount'), lit).toBeUndefined();
      }
    });
    it('a pointer into nested members and arrays, and a body that is one number', () => {
      const r = route({ amount: { body: '/payment/lines/1/amount' }, whole: { body: '' } });
      const read = (b: string) => extractParams(r, { segments: [], search: '', headers: {}, body: Buffer.from(b), contentType: 'application/json' });
      const p = read('{"payment":{"lines":[{"amount":1},{"amount":100.0000000000000001}]}}');
      expect(p['amount']).toBe(100);
      expect(numberSource(p, 'amount')).toBe('100.0000000000000001');
      const lines = ((p['whole'] as Record<string, unknown>)['payment'] as Record<string, unknown>)['lines'] as Record<string, unknown>[];
      expect(numberSource(lines[1]!, 'amount')).toBe('100.0000000000000001');
      expect(numberSource(lines[0]!, 'amount')).toBeUndefined();
      const bare = read(' 12345678901234567890\n');
      expect(numberSource(bare, 'whole')).toBe('12345678901234567890');
    });
    it('the digest is RFC 8785: every number is the double it parses to (100.0000000000000001 digests as 100)', () => {
      expect(parameterDigest(extract('{"amount":100.0000000000000001}'))).toBe(parameterDigest(extract('{"amount":100}')));
      expect(parameterDigest(extract('{"amount":-0}'))).toBe(parameterDigest(extract('{"amount":0}')));
      expect(() => parameterDigest(extract('{"amount":1e400}'))).toThrow();
    });
    it('many kept numbers deep in a document cost one walk down per container, not one per number', () => {
      const whole = route({ all: { body: '' } });
      const deep = MAX_JSON_DEPTH - 2; // deeper is refused (below)
      for (const body of [
        '{"a":'.repeat(deep) + '[' + '1e400,'.repeat(200_000) + '1]' + '}'.repeat(deep),
        '['.repeat(deep) + '{"x":1e400},'.repeat(200_000) + '1' + ']'.repeat(deep),
      ]) {
        const started = performance.now();
        const p = extractParams(whole, { segments: [], search: '', headers: {}, body: Buffer.from(body), contentType: 'application/json' });
        expect(performance.now() - started).toBeLessThan(2000);
        let node = p['all'] as unknown;
        while (Array.isArray(node) ? node.length === 1 : !Array.isArray(node)) node = Array.isArray(node) ? node[0] : (node as Record<string, unknown>)['a'];
        const first = (node as unknown[])[0];
        expect(typeof first === 'object' ? numberSource(first as object, 'x') : numberSource(node as object, '0')).toBe('1e400');
      }
    });
    it(`refuses arrays and objects nested deeper than ${MAX_JSON_DEPTH} levels, before JSON.parse reads them`, () => {
      const whole = route({ all: { body: '' } });
      const body = (depth: number) => Buffer.from('['.repeat(depth) + ']'.repeat(depth));
      expect(extractParams(whole, { segments: [], search: '', headers: {}, body: body(MAX_JSON_DEPTH), contentType: 'application/json' })).toBeDefined();
      expect(denialCode(() => extractParams(whole, { segments: [], search: '', headers: {}, body: body(MAX_JSON_DEPTH + 1), contentType: 'application/json' }))).toBe('parameter_unparseable');
      // A million brackets: refused at once (JSON.parse alone took ~0.5 s, with the scan ~1.5 s).
      const started = performance.now();
      expect(denialCode(() => extractParams(whole, { segments: [], search: '', headers: {}, body: body(500_000), contentType: 'application/json' }))).toBe('parameter_unparseable');
      expect(performance.now() - started).toBeLessThan(100);
      // Too deep is said first, JSON or not; other text that is not JSON is said to be so, even with a duplicate key in it.
      expect(() => parseJsonStrict('[' + '['.repeat(300), 'all')).toThrow(/nests/);
      expect(() => parseJsonStrict('{"a":1,"a":2', 'all')).toThrow(/not valid JSON/);
    });
    it('still refuses a duplicate key beside a kept number', () => {
      expect(denialCode(() => extract('{"amount":1e400,"amount":1}'))).toBe('parameter_unparseable');
    });
  });

  it('parseJsonStrict with "all" keeps every inexact number; stringifyExact writes them back as sent', () => {
    const text = '[{"id":1,"params":{"arguments":{"amount":100.0000000000000001,"n":[1,1e400,2.5],"s":"x","z":-0}}},{"id":2}]';
    const doc = parseJsonStrict(text, 'all') as { params: { arguments: Record<string, unknown> } }[];
    const args = doc[0]!.params.arguments;
    expect(numberSource(args, 'amount')).toBe('100.0000000000000001');
    expect(numberSource(args['n'] as object, '1')).toBe('1e400');
    expect(stringifyExact(doc)).toBe(text.replace('-0', '0'));
    expect(stringifyExact(doc[1])).toBe(JSON.stringify(doc[1]));
    expect(stringifyExact({ a: undefined, b: [undefined, 1], c: 'é' })).toBe(JSON.stringify({ a: undefined, b: [undefined, 1], c: 'é' }));
  });

  it('parseJsonStrict with "all" reads every number (MCP arguments): exact ones as they are, the others kept', () => {
    expect(parseJsonStrict('{"a":{"b":[1,2.5]}}', 'all')).toEqual({ a: { b: [1, 2.5] } });
    const doc = parseJsonStrict('{"a":{"b":[1,12345678901234567891]}}', 'all') as { a: { b: number[] } };
    expect(numberSource(doc.a.b, '0')).toBeUndefined();
    expect(numberSource(doc.a.b, '1')).toBe('12345678901234567891');
  });

  it('checks duplicates and numbers on and below watched values only', () => {
    // Off the bound paths a duplicate cannot change the decision or the digest.
    expect(extract('{"amount":"1","meta":{"a":1,"a":2},"big":12345678901234567891}')).toEqual({ amount: '1', invoice: 'inv_42' });
    const whole = route({ to: { body: '/to' }, all: { body: '' } });
    const read = (b: string): string =>
      denialCode(() => extractParams(whole, { segments: [], search: '', headers: {}, body: Buffer.from(b), contentType: 'application/json' }));
    expect(read('{"to":[{"email":"a","email":"b"}]}')).toBe('parameter_unparseable');
    expect(read('{"x":{"y":[1,{"z":0.30000000000000000001}]}}')).toBe('none'); // kept, see below
    expect(read('{"x":{"y":[1,{"z":0.3}]},"to":[{"e":"a"}]}')).toBe('none');
  });

  it('a route without params reads nothing', () => {
    const r = route({});
    expect(extractParams(r, { segments: [], search: '?a=1', headers: {}, body: Buffer.from('not json'), contentType: 'text/plain' })).toEqual({});
  });
});
