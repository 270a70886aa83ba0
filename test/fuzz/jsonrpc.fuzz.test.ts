/**
 * SPEC section 7 (MCP: each JSON-RPC `tools/call` is an action) under fuzzing of parseMcpBody:
 * - arbitrary bytes fail only with Denial('parameter_unparseable' | 'request_malformed'), in
 *   bounded time;
 * - for generated messages and batches, no `tools/call` escapes the gate: each one is classified as
 *   a call (or an invalid call, denied per call), or the whole body is refused; a `tools/call`
 *   without a usable id, or two gated messages sharing an id in a batch, refuse the body
 *   (reference model below).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseMcpBody } from '../../src/mcp/jsonrpc.js';
import { bounded, kindOf, onlyDocumented, RUNS } from './bounds.js';

const ALLOWED = ['Denial(parameter_unparseable)', 'Denial(request_malformed)'];
const ABSENT = Symbol('absent');

const idArb = fc.constantFrom<unknown>(1, 2, '1', 'a', 0, -3, 1.5, null, true, {}, [], ABSENT);
const paramsArb = fc.constantFrom<unknown>(
  ABSENT,
  null,
  'x',
  [],
  {},
  { name: 'send' },
  { name: 'send', arguments: { amount: 5 } },
  { name: '', arguments: {} },
  { name: 7 },
  { name: 'read', arguments: [1] },
  { name: 'send', arguments: { to: 'a@example.com' }, _meta: { 'com.karlmcguinness.mission/reference': { mission_id: 'm', issuer: 'i' } } },
);
const messageArb = fc
  .record({
    jsonrpc: fc.constantFrom<unknown>('2.0', '2.0', '1.0', ABSENT),
    method: fc.constantFrom<unknown>('tools/call', 'tools/call', 'tools/list', 'initialize', 'notifications/initialized', 'tools/CALL', 7, ABSENT),
    id: idArb,
    params: paramsArb,
  })
  .map((m) => Object.fromEntries(Object.entries(m).filter(([, v]) => v !== ABSENT)) as Record<string, unknown>);
const bodyArb = fc.oneof(
  messageArb.map((m) => ({ batch: false, items: [m] as unknown[] })),
  fc.array(fc.oneof({ weight: 5, arbitrary: messageArb }, { weight: 1, arbitrary: fc.constantFrom<unknown>(1, 'x', null, []) }), { maxLength: 6 }).map((items) => ({ batch: true, items })),
);

const usableId = (v: unknown): boolean => typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v));
const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** The model: must the body be refused as a whole? */
function mustRefuse(batch: boolean, items: readonly unknown[]): boolean {
  const gated: string[] = [];
  for (const m of items) {
    if (!isObj(m)) continue;
    if (m['method'] === 'tools/call' || m['method'] === 'tools/list') {
      if (!usableId(m['id'])) return true;
      gated.push(`${typeof m['id']}:${String(m['id'])}`);
    }
  }
  return batch && new Set(gated).size !== gated.length;
}

describe('SPEC §7 JSON-RPC classification under fuzzing', () => {
  it('arbitrary bytes: only the documented denials, bounded time', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)), fc.json().map((s) => Buffer.from(s)), fc.string({ unit: 'binary', maxLength: 200 }).map((s) => Buffer.from(s))), (body) => {
        onlyDocumented(bounded(() => parseMcpBody(body)), ALLOWED);
      }),
      { numRuns: RUNS },
    );
  });

  it('every tools/call is gated or the body refused, exactly as the model says', () => {
    fc.assert(
      fc.property(bodyArb, ({ batch, items }) => {
        fc.pre(!batch || items.length > 0);
        const text = JSON.stringify(batch ? items : items[0]);
        const out = bounded(() => parseMcpBody(Buffer.from(text)));
        const refuse = mustRefuse(batch, items);
        if (!out.ok) {
          expect(kindOf(out.error)).toBe('Denial(request_malformed)');
          expect(refuse, text).toBe(true);
          return;
        }
        expect(refuse, text).toBe(false);
        const parsed = out.value;
        expect(parsed.batch).toBe(batch);
        expect(parsed.messages.length).toBe(items.length);
        let calls = 0;
        parsed.messages.forEach((msg, i) => {
          const item = items[i];
          expect(msg.index).toBe(i);
          if (isObj(item) && item['method'] === 'tools/call') {
            calls++;
            expect(['call', 'invalid_call']).toContain(msg.kind);
            if (msg.kind !== 'other') expect(msg.id).toBe(item['id']);
            const p = item['params'];
            if (msg.kind === 'call') {
              expect(isObj(p) && typeof p['name'] === 'string' && p['name'] !== '').toBe(true);
              expect(msg.name).toBe((p as Record<string, unknown>)['name']);
              expect(msg.args).toEqual((p as Record<string, unknown>)['arguments'] ?? {});
            }
          } else if (isObj(item) && item['method'] === 'tools/list' && usableId(item['id'])) {
            expect(msg.kind).toBe('list');
          } else {
            expect(msg.kind).toBe('other');
          }
        });
        expect(parsed.calls).toBe(calls);
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it('a huge batch and deep params stay bounded', () => {
    const batch = JSON.stringify(Array.from({ length: 20_000 }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'tools/call', params: { name: 'send', arguments: { n: i } } })));
    // Read in bounded time and refused whole: more gated requests than one request may write records for.
    const out = bounded(() => parseMcpBody(Buffer.from(batch)), 3000);
    expect(!out.ok && kindOf(out.error)).toBe('Denial(request_malformed)');
    const deep = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":' + '{"a":'.repeat(50_000) + '1' + '}'.repeat(50_000) + '}}';
    onlyDocumented(bounded(() => parseMcpBody(Buffer.from(deep)), 3000), ALLOWED);
  });
});
