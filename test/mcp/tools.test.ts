import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Denial } from '../../src/errors.js';
import { denialResult } from '../../src/mcp/denial.js';
import { idKey } from '../../src/mcp/jsonrpc.js';
import { combinePins, filterListResponse, filterTools, ListAnswers, MissionPins, ObservedTools, sourceDigest } from '../../src/mcp/tools.js';

interface Vector {
  id: string;
  inputs: { tool_definition?: unknown };
  expected: string | null;
}
const vectors = (JSON.parse(readFileSync(new URL('../fixtures/vectors.json', import.meta.url), 'utf8')) as { vectors: Vector[] }).vectors;

const tool = (name: string, description = name) => ({ name, description, inputSchema: { type: 'object', properties: {} } });
const all = () => true;
const noPins = combinePins(new Map());

describe('mission-capability-binding: source_digest', () => {
  it('matches the source_digest-write_document vector', () => {
    const v = vectors.find((x) => x.id === 'source_digest-write_document')!;
    expect(v.expected).toBe('sha-256:OAbEIh2DTYUVP7DjRhHct4aapsT8PybZq2ILdut9UP0');
    expect(sourceDigest(v.inputs.tool_definition)).toBe(v.expected);
  });

  it('does not depend on member order (JCS)', () => {
    expect(sourceDigest({ b: 1, a: 'x' })).toBe(sourceDigest({ a: 'x', b: 1 }));
  });
});

describe('SPEC section 7: tools/list filtering', () => {
  it('keeps only visible tools and returns the same array when nothing is removed', () => {
    const tools = [tool('get_invoice'), tool('pay_invoice'), tool('send_email')];
    expect(filterTools(tools, all, noPins, new ObservedTools())).toBe(tools);
    const kept = filterTools(tools, (n) => n !== 'pay_invoice', noPins, new ObservedTools());
    expect(kept.map((t) => (t as { name: string }).name)).toEqual(['get_invoice', 'send_email']);
  });

  it('drops malformed tool entries', () => {
    expect(filterTools([null, 1, { description: 'x' }, tool('a')], all, noPins, new ObservedTools())).toEqual([tool('a')]);
  });

  it('rewrites only tools/list results, keeping the other members of the result', () => {
    const msg = { jsonrpc: '2.0', id: 1, result: { tools: [tool('a'), tool('b')], nextCursor: 'c' } };
    expect(filterListResponse(msg, (n) => n === 'a', noPins, new ObservedTools())).toEqual({ jsonrpc: '2.0', id: 1, result: { tools: [tool('a')], nextCursor: 'c' } });
    expect(filterListResponse(msg, all, noPins, new ObservedTools())).toBeUndefined();
    expect(filterListResponse({ jsonrpc: '2.0', id: 1, error: { code: 1 } }, all, noPins, new ObservedTools())).toBeUndefined();
    expect(filterListResponse({ jsonrpc: '2.0', id: 1, result: { content: [] } }, () => false, noPins, new ObservedTools())).toBeUndefined();
  });
});

describe('mission-capability-binding: pinned tools and capability_drift', () => {
  const good = tool('pay_invoice', 'Pay an invoice');
  const drifted = tool('pay_invoice', 'Pay an invoice (and anything else)');
  const pin = sourceDigest(good);

  it('removes a drifted definition from the list and remembers it; a matching listing clears it', () => {
    const observed = new ObservedTools();
    const pins = combinePins(new Map([['pay_invoice', pin]]));
    expect(filterTools([drifted, tool('get_invoice')], all, pins, observed)).toEqual([tool('get_invoice')]);
    expect(observed.drifted('pay_invoice', pins('pay_invoice'))).toBe(true);
    expect(filterTools([good], all, pins, observed)).toEqual([good]);
    expect(observed.drifted('pay_invoice', pins('pay_invoice'))).toBe(false);
  });

  it('treats a tool never listed as not drifted (only observed definitions are compared)', () => {
    expect(new ObservedTools().drifted('pay_invoice', [pin])).toBe(false);
  });

  it('requires every pin (config and Mission) to match: pins only narrow', () => {
    const observed = new ObservedTools();
    const mission = new MissionPins('https://mcp.example.com/mcp', 'https://mcp.example.com/mcp');
    const entries = [
      { type: 'mission_resource_access', resource: 'https://mcp.example.com/mcp', actions: ['pay_invoice'], tool_digests: { pay_invoice: sourceDigest(drifted) } },
      { type: 'mission_resource_access', resource: 'https://other.example.com/mcp', actions: ['x'], tool_digests: { x: 'sha-256:AAAA' } },
    ];
    const m = mission.of(entries);
    expect(m?.get('pay_invoice')).toEqual([sourceDigest(drifted)]);
    expect(m?.has('x')).toBe(false);
    const pins = combinePins(new Map([['pay_invoice', pin]]), m);
    expect(filterTools([good], all, pins, observed)).toEqual([]);
    expect(filterTools([drifted], all, pins, observed)).toEqual([]);
    expect(mission.of(entries)).toBe(m);
  });

  it('reads pins from prefix entries only on a path-segment boundary', () => {
    const mission = new MissionPins('https://mcp.example.com/mcp', 'https://mcp.example.com/mcp');
    const pin = (resource: string) => [{ type: 'mission_resource_access', resource, resource_match: 'prefix', actions: ['a'], tool_digests: { a: sourceDigest(tool('a')) } }];
    expect(mission.of(pin('https://mcp.example.com/'))?.has('a')).toBe(true);
    expect(mission.of(pin('https://mcp.example.com/mcp'))?.has('a')).toBe(true);
    expect(mission.of(pin('https://mcp.example.com/mc'))).toBeNull();
  });

  it('treats an invalid pin in a Mission entry as never matching', () => {
    const mission = new MissionPins('https://mcp.example.com/mcp', 'https://mcp.example.com/mcp');
    const m = mission.of([{ type: 'mission_resource_access', resource: 'https://mcp.example.com/mcp', actions: ['a'], tool_digests: { a: 42 } }]);
    const observed = new ObservedTools();
    expect(filterTools([tool('a')], all, combinePins(new Map(), m), observed)).toEqual([]);
  });

  it('bounds the memory of observed tools', () => {
    const observed = new ObservedTools(3);
    for (let i = 0; i < 10; i++) observed.observe(`t${i}`, 'sha-256:x');
    expect(observed.size).toBe(3);
  });
});

describe('SPEC section 7: the denied-call result', () => {
  it('is a JSON-RPC result for the id with isError and structuredContent {ok:false, denial_reason, decision_id}', () => {
    const r = denialResult(42, new Denial('parameter_violation', { description: 'a Mission constraint is not satisfied (max_amount)' }), 'dec_abc');
    expect(r).toEqual({
      jsonrpc: '2.0',
      id: 42,
      result: {
        isError: true,
        content: [{ type: 'text', text: JSON.stringify(r.result.structuredContent) }],
        structuredContent: {
          ok: false,
          denial_reason: 'parameter_violation',
          decision_id: 'dec_abc',
          error: 'insufficient_scope',
          error_description: 'a Mission constraint is not satisfied (max_amount)',
        },
      },
    });
  });

  it('carries the extra members of the denial (e.g. mission_status)', () => {
    const r = denialResult('a', new Denial('mission_terminated', { extra: { mission_status: 'revoked' } }), 'dec_1');
    expect(r.result.structuredContent).toMatchObject({ denial_reason: 'mission_inactive', mission_status: 'revoked' });
  });
});

describe('SPEC section 7: which answers of a reply are tools/list answers', () => {
  const only = (n: string) => ({ visible: (x: string) => x === n, pins: noPins });
  const answer = (id: unknown) => ({ jsonrpc: '2.0', id, result: { tools: [tool('a'), tool('b')] } });

  it('by request id, and every other list answer of the reply by what all list requests may see', () => {
    const l = new ListAnswers(new Map([[idKey(1), only('a')]]), null, new ObservedTools());
    expect(l.rewrite({ jsonrpc: '2.0', method: 'notifications/progress', params: {} })).toBeUndefined();
    expect(l.rewrite(answer(1))).toEqual({ jsonrpc: '2.0', id: 1, result: { tools: [tool('a')] } });
    // An id of another type, a second answer, an answer with no id: still filtered (fail closed).
    expect(l.rewrite(answer('1'))).toEqual({ jsonrpc: '2.0', id: '1', result: { tools: [tool('a')] } });
    expect(l.rewrite(answer(1))).toEqual({ jsonrpc: '2.0', id: 1, result: { tools: [tool('a')] } });
    expect(l.rewrite(answer(null))).toEqual({ jsonrpc: '2.0', id: null, result: { tools: [tool('a')] } });
    // Two list requests with different views: an unmatched answer shows what both may see.
    const both = (n: string) => ({ visible: (x: string) => x === n || x === 'c', pins: noPins });
    const two = new ListAnswers(new Map([[idKey(1), both('a')], [idKey(2), both('b')]]), null, new ObservedTools());
    const abc = { jsonrpc: '2.0', id: 9, result: { tools: [tool('a'), tool('b'), tool('c')] } };
    expect(two.rewrite(abc)).toEqual({ jsonrpc: '2.0', id: 9, result: { tools: [tool('c')] } });
    expect(two.rewrite({ ...abc, id: 2 })).toEqual({ jsonrpc: '2.0', id: 2, result: { tools: [tool('b'), tool('c')] } });
  });

  it('by shape: any result.tools; batches are rewritten element-wise', () => {
    const l = new ListAnswers(null, only('b'), new ObservedTools());
    expect(l.rewrite([answer(7), { jsonrpc: '2.0', id: 8, result: {} }])).toEqual([{ jsonrpc: '2.0', id: 7, result: { tools: [tool('b')] } }, { jsonrpc: '2.0', id: 8, result: {} }]);
    expect(l.rewrite([{ jsonrpc: '2.0', id: 8, result: {} }])).toBeUndefined();
  });
});
