import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { orderRecord, preorderedLine } from '../../src/evidence/format.js';
import type { EvidenceRecord } from '../../src/evidence/record.js';
import { layoutOf } from '../../src/pipeline/run.js';
import { normalizeTarget } from '../../src/http/path.js';

function built(over: Record<string, unknown> = {}): EvidenceRecord {
  return {
    evidence_id: 'evd_1',
    decision_id: 'dec_1',
    decision: 'permit',
    denial_reason: null,
    evaluated_at: '2026-11-02T08:14:03.000Z',
    audience: 'https://api.example.com',
    method: 'POST',
    path: '/payments',
    action: 'payments.create',
    subject: 'user "1"\u2028',
    client_id: 'agent',
    actor: { sub: 'agent', act: { sub: 'x' } },
    token_jti: 'at_1',
    jkt: 'jkt',
    mission: { id: 'msn_1', issuer: 'https://as.example.com', state: 'active', version: 4, authority_hash: null, source: 'cached' },
    parameter_digest: 'sha-256:abc',
    upstream_status: 201,
    duration_ms: 0.123,
    ...over,
  };
}

describe('SPEC section 9: a record built in SPEC order is written exactly as orderRecord would write it', () => {
  for (const [name, over] of [
    ['with a Mission', {}],
    ['without a Mission or token', { mission: null, subject: null, client_id: null, actor: null, token_jti: null, jkt: null, action: null, parameter_digest: null }],
    ['a deny', { decision: 'deny', denial_reason: 'out_of_authority', upstream_status: null }],
  ] as const) {
    it(`${name} (layout "fixed")`, () => {
      const r = built(over);
      for (const prev of [null, 'sha-256:AbC_-']) {
        expect(preorderedLine(r, 'fixed', 7, prev)).toBe(JSON.stringify(orderRecord(r, 7, prev)));
      }
    });
  }

  it('every mix of null and set among subject … parameter_digest (the all-null run is written as one constant)', () => {
    const members = ['subject', 'client_id', 'actor', 'token_jti', 'jkt', 'mission', 'parameter_digest'] as const;
    const full = built();
    for (let mask = 0; mask < 1 << members.length; mask++) {
      const over: Record<string, unknown> = {};
      members.forEach((k, i) => {
        over[k] = mask & (1 << i) ? full[k] : null;
      });
      const r = built(over);
      expect(preorderedLine(r, 'fixed', 3, null)).toBe(JSON.stringify(orderRecord(r, 3, null)));
    }
  });

  it('with extras after the fixed members (MCP; layout "extras"), an integer-like one included', () => {
    for (const extras of [{ tool: 'pay', call_index: 2, jsonrpc_id: 'a"b' }, { tool: 'pay', '7': 'numeric key' }]) {
      const r = built(extras);
      for (const prev of [null, 'sha-256:AbC_-']) {
        expect(preorderedLine(r, 'extras', 7, prev)).toBe(JSON.stringify(orderRecord(r, 7, prev)));
      }
    }
  });
});

describe('strings of every kind serialize as JSON.stringify would (quoted as is only when no escape applies)', () => {
  it('arbitrary strings in every string member, including quotes, backslashes, controls, DEL, U+2028 and lone surrogates', () => {
    const text = fc.oneof(fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme-ascii' }), fc.constantFrom('"', '\\', '\x7f', '\u2028', '\ud800', 'a\u0000b', '/payments', ''));
    fc.assert(
      fc.property(text, text, text, text, (a, b, c, d) => {
        const r = built({ subject: a, client_id: b, audience: c, action: d, mission: { id: d, issuer: a, state: 'active', version: 1, authority_hash: b, source: 'cached' }, token_jti: c, jkt: d });
        expect(preorderedLine(r, 'fixed', 1, d)).toBe(JSON.stringify(orderRecord(r, 1, d)));
      }),
      { numRuns: 500 },
    );
  });
});

describe('duration_ms is written as JSON.stringify writes the number', () => {
  it('microsecond-rounded durations (the pipeline\'s), from zero to beyond the integer fast path, and any other double', () => {
    const rounded = fc.double({ min: 0, max: 2e9, noNaN: true }).map((x) => Math.round(x * 1000) / 1000);
    const small = fc.integer({ min: 0, max: 5_000_000 }).map((us) => us / 1000);
    const any = fc.oneof(fc.double(), fc.constantFrom(-0, 0.1 + 0.2, 1e-7, 5e-324, 999_999_999.999, 1e9, 1e12 + 0.5, -1.5));
    fc.assert(
      fc.property(fc.oneof(rounded, small, any), (d) => {
        const r = built({ duration_ms: d });
        expect(preorderedLine(r, 'fixed', 1, null)).toBe(JSON.stringify(orderRecord(r, 1, null)));
      }),
      { numRuns: 3000 },
    );
  });
});

describe('the pipeline names a layout only for records it built in order, with plain identifiers', () => {
  it('layoutOf', () => {
    expect(layoutOf(undefined)).toBe('fixed');
    expect(layoutOf({ tool: 'pay', call_index: 2, jsonrpc_id: 'a"b' })).toBe('extras');
    // a call_index that is not an integer would put its text into evidence_id: no layout, so the
    // record goes through orderRecord and JSON.stringify.
    expect(layoutOf({ tool: 'pay', call_index: 'x"y' })).toBeUndefined();
    expect(layoutOf({ tool: 'pay', call_index: 1.5 })).toBeUndefined();
    expect(layoutOf({ tool: undefined })).toBeUndefined();
    expect(layoutOf({ sequence: 3 })).toBeUndefined();
  });
});

describe('the members written unchecked are plain by construction (RecordLayout, format.ts)', () => {
  const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;
  it('a normalized path never holds a quote, backslash, control or non-ASCII character', () => {
    const target = fc.oneof(fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme-ascii' }), fc.constantFrom('/a"b', '/a\\b', '/%22/%5C', '/caf\u00e9', '/\u2028', '/a b', '/%e2%80%a8'));
    fc.assert(
      fc.property(target, (t) => {
        let path: string;
        try {
          path = normalizeTarget('/' + t).path;
        } catch {
          return; // refused: never recorded as a path
        }
        expect(path).toMatch(PLAIN);
      }),
      { numRuns: 2000 },
    );
  });

  it('a path, method, decision and reason as the pipeline records them give the line JSON.stringify gives', () => {
    for (const target of ['/a"b/c', '/x\\y', '/caf\u00e9', '/%22%5c']) {
      const r = built({ path: normalizeTarget(target).path, method: 'M-SEARCH', decision: 'deny', denial_reason: 'out_of_authority' });
      expect(preorderedLine(r, 'fixed', 2, null)).toBe(JSON.stringify(orderRecord(r, 2, null)));
    }
  });
});
