import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { orderRecord, preorderedLine } from '../../src/evidence/format.js';
import type { EvidenceRecord } from '../../src/evidence/record.js';

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
        const r = built({ subject: a, client_id: b, path: c, mission: { id: d, issuer: a, state: 'active', version: 1, authority_hash: b, source: 'cached' }, token_jti: c, jkt: d });
        expect(preorderedLine(r, 'fixed', 1, d)).toBe(JSON.stringify(orderRecord(r, 1, d)));
      }),
      { numRuns: 500 },
    );
  });
});
