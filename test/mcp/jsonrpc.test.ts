import { describe, expect, it } from 'vitest';
import { numberSource } from '../../src/authority/json.js';
import { isDenial } from '../../src/errors.js';
import { idKey, MAX_GATED_PER_BATCH, MAX_ID_CHARS, MAX_TOOL_NAME_CHARS, parseMcpBody } from '../../src/mcp/jsonrpc.js';

const buf = (v: unknown): Buffer => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));

function denialCode(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    return isDenial(err) ? err.code : 'other';
  }
}

describe('SPEC section 7: reading MCP JSON-RPC bodies', () => {
  it('classifies a single tools/call with its name, arguments and _meta reference', () => {
    const meta = { mission_id: 'msn_1', issuer: 'https://as.example.com' };
    const b = parseMcpBody(buf({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'pay_invoice', arguments: { amount: '10.00' }, _meta: { 'com.karlmcguinness.mission/reference': meta, progressToken: 1 } } }));
    expect(b.batch).toBe(false);
    expect(b.calls).toBe(1);
    expect(b.messages[0]).toEqual({ kind: 'call', index: 0, id: 7, name: 'pay_invoice', args: { amount: '10.00' }, metaRef: meta, task: false });
  });

  it('marks a task-augmented tools/call (MCP 2025-11-25 params.task)', () => {
    const b = parseMcpBody(buf({ jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'pay_later', arguments: {}, task: { ttl: 60000 } } }));
    expect(b.messages[0]).toMatchObject({ kind: 'call', name: 'pay_later', task: true });
  });

  it('treats absent arguments as {} (no defaults inserted)', () => {
    const b = parseMcpBody(buf({ jsonrpc: '2.0', id: 's', method: 'tools/call', params: { name: 'get_invoice' } }));
    expect(b.messages[0]).toMatchObject({ kind: 'call', args: {}, metaRef: undefined });
  });

  it('classifies a batch mixing calls, lists, notifications and other requests', () => {
    const b = parseMcpBody(
      buf([
        { jsonrpc: '2.0', id: 1, method: 'tools/list' },
        { jsonrpc: '2.0', method: 'notifications/initialized' },
        { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'a', arguments: {} } },
        { jsonrpc: '2.0', id: 3, method: 'ping' },
        { jsonrpc: '2.0', id: 4, result: {} },
      ]),
    );
    expect(b.batch).toBe(true);
    expect(b.messages.map((m) => m.kind)).toEqual(['list', 'other', 'call', 'other', 'other']);
    expect([b.calls, b.lists]).toEqual([1, 1]);
  });

  it('marks a tools/call with unreadable params as invalid_call (denied per call)', () => {
    for (const params of [undefined, [], { name: 5 }, { name: '' }, { name: 'x', arguments: [1] }, { name: 'x', arguments: 'a' }]) {
      const b = parseMcpBody(buf({ jsonrpc: '2.0', id: 1, method: 'tools/call', params }));
      expect(b.messages[0]!.kind).toBe('invalid_call');
      expect(b.calls).toBe(1);
    }
  });

  it('refuses a tools/call without a usable id (it cannot be answered and must not reach the upstream)', () => {
    expect(denialCode(() => parseMcpBody(buf({ jsonrpc: '2.0', method: 'tools/call', params: { name: 'x' } })))).toBe('request_malformed');
    expect(denialCode(() => parseMcpBody(buf({ jsonrpc: '2.0', id: null, method: 'tools/call', params: { name: 'x' } })))).toBe('request_malformed');
    expect(denialCode(() => parseMcpBody(buf([{ jsonrpc: '2.0', id: {}, method: 'tools/call', params: { name: 'x' } }])))).toBe('request_malformed');
  });

  it('bounds what one request writes into evidence (r18c 1-2): gated requests per batch, string id and tool name lengths', () => {
    const call = (id: unknown, name = 'x') => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name } });
    const other = (i: number) => ({ jsonrpc: '2.0', id: `o${i}`, method: 'resources/read', params: {} });
    const at = (n: number) => Array.from({ length: n }, (_, i) => (i % 2 === 0 ? call(i) : { jsonrpc: '2.0', id: i, method: 'tools/list' }));
    expect(parseMcpBody(buf(at(MAX_GATED_PER_BATCH))).calls + parseMcpBody(buf(at(MAX_GATED_PER_BATCH))).lists).toBe(MAX_GATED_PER_BATCH);
    expect(denialCode(() => parseMcpBody(buf(at(MAX_GATED_PER_BATCH + 1))))).toBe('request_malformed');
    // Messages the gateway does not gate write no record of their own: not counted.
    expect(parseMcpBody(buf([...at(MAX_GATED_PER_BATCH), ...Array.from({ length: 50 }, (_, i) => other(i))])).items).toHaveLength(MAX_GATED_PER_BATCH + 50);
    expect(parseMcpBody(buf(call('i'.repeat(MAX_ID_CHARS)))).calls).toBe(1);
    expect(denialCode(() => parseMcpBody(buf(call('i'.repeat(MAX_ID_CHARS + 1)))))).toBe('request_malformed');
    expect(denialCode(() => parseMcpBody(buf({ jsonrpc: '2.0', id: 'i'.repeat(MAX_ID_CHARS + 1), method: 'tools/list' })))).toBe('request_malformed');
    expect(parseMcpBody(buf(call(1, 'n'.repeat(MAX_TOOL_NAME_CHARS)))).calls).toBe(1);
    expect(denialCode(() => parseMcpBody(buf(call(1, 'n'.repeat(MAX_TOOL_NAME_CHARS + 1)))))).toBe('request_malformed');
  });

  it('refuses a batch that uses one id for two gated requests, but tells 1 from "1"', () => {
    const call = (id: unknown) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'x' } });
    expect(denialCode(() => parseMcpBody(buf([call(1), call(1)])))).toBe('request_malformed');
    expect(parseMcpBody(buf([call(1), call('1')])).calls).toBe(2);
    expect(idKey(1)).not.toBe(idKey('1'));
  });

  it('fails closed on bytes the upstream could read differently (SPEC section 5 parameter_unparseable)', () => {
    expect(denialCode(() => parseMcpBody(Buffer.alloc(0)))).toBe('parameter_unparseable');
    expect(denialCode(() => parseMcpBody(buf('{"jsonrpc":"2.0",')))).toBe('parameter_unparseable');
    // duplicate key: JSON.parse keeps the last, other parsers the first
    expect(denialCode(() => parseMcpBody(buf('{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"x"}}')))).toBe('parameter_unparseable');
    expect(denialCode(() => parseMcpBody(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), buf({ id: 1 })])))).toBe('parameter_unparseable');
    expect(denialCode(() => parseMcpBody(Buffer.from([0x7b, 0xff, 0x7d])))).toBe('parameter_unparseable');
  });

  it('keeps the literal of an argument a double cannot hold (max_amount compares it exactly), and refuses such a number as an id', () => {
    const b = parseMcpBody(buf('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":{"amount":500.000000000000000001}}}'));
    const m = b.messages[0]!;
    expect(m.kind).toBe('call');
    if (m.kind === 'call') expect(numberSource(m.args, 'amount')).toBe('500.000000000000000001');
    for (const id of ['12345678901234567891', '1e400', '0.30000000000000000001']) {
      expect(denialCode(() => parseMcpBody(buf(`{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"pay"}}`)))).toBe('request_malformed');
    }
  });

  it('reads escaped method names as the upstream does', () => {
    const b = parseMcpBody(buf('{"jsonrpc":"2.0","id":1,"method":"tools\\/c\\u0061ll","params":{"name":"x"}}'));
    expect(b.messages[0]!.kind).toBe('call');
  });

  it('passes non-object batch elements through untouched', () => {
    const b = parseMcpBody(buf([1, 'x', null, { jsonrpc: '2.0', method: 'notifications/initialized' }]));
    expect(b.messages.every((m) => m.kind === 'other')).toBe(true);
    expect([b.calls, b.lists]).toEqual([0, 0]);
  });

  it('refuses a tools/list without a usable id: its answer could not be found to filter (SPEC section 7)', () => {
    const list = (id: unknown) => ({ jsonrpc: '2.0', ...(id === undefined ? {} : { id }), method: 'tools/list' });
    for (const id of [undefined, null, true, false, {}, [], { a: 1 }, [1]]) {
      expect(denialCode(() => parseMcpBody(buf(list(id))))).toBe('request_malformed');
      expect(denialCode(() => parseMcpBody(buf([list(1), list(id)])))).toBe('request_malformed');
    }
    for (const id of [1, 'a', 2.5, 1e300]) expect(parseMcpBody(buf(list(id))).lists).toBe(1);
  });

  it('refuses members named like the ones it reads but for case: a Go upstream (encoding/json) would read them as those (CVE-2026-27896)', () => {
    const call = { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'get_invoice', arguments: { id: 'inv_1' } } };
    // Alone: the gateway sees a ping, or a call without a name; Go sees tools/call delete_all.
    expect(denialCode(() => parseMcpBody(buf({ jsonrpc: '2.0', id: 7, method: 'ping', Method: 'tools/call', params: { name: 'delete_all' } })))).toBe('parameter_unparseable');
    expect(denialCode(() => parseMcpBody(buf({ jsonrpc: '2.0', id: 7, Method: 'tools/call', params: { name: 'delete_all' } })))).toBe('request_malformed');
    expect(denialCode(() => parseMcpBody(buf({ ...call, params: { Name: 'delete_all', arguments: {} } })))).toBe('request_malformed');
    expect(denialCode(() => parseMcpBody(buf({ jsonrpc: '2.0', id: 7, method: 'tools/list', params: { _Meta: {} } })))).toBe('request_malformed');
    expect(denialCode(() => parseMcpBody(buf({ jsonrpc: '2.0', id: 7, method: 'tools/call', PARAMS: { name: 'delete_all' } })))).toBe('request_malformed');
    // Beside the real member: refused by the strict parse (names equal but for case are duplicates).
    expect(denialCode(() => parseMcpBody(buf({ ...call, params: { ...call.params, Name: 'delete_all' } })))).toBe('parameter_unparseable');
    expect(denialCode(() => parseMcpBody(buf({ ...call, params: { ...call.params, Arguments: { id: 'x' } } })))).toBe('parameter_unparseable');
    expect(denialCode(() => parseMcpBody(buf({ ...call, 'param\u017f': { name: 'delete_all' } })))).toBe('parameter_unparseable');
    expect(denialCode(() => parseMcpBody(buf([call, { ...call, id: 8, params: { name: 'x', arguments: { amount: '1', AMOUNT: '9' } } }])))).toBe('parameter_unparseable');
    // Other members of other methods' params are not the gateway's to read.
    expect(parseMcpBody(buf({ jsonrpc: '2.0', id: 1, method: 'resources/read', params: { Uri: 'a' } })).calls).toBe(0);
  });
});
