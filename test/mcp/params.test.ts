import { describe, expect, it } from 'vitest';
import { numberSource } from '../../src/authority/json.js';
import { parseJsonStrict } from '../../src/authority/params.js';
import { compileToolParams, toolParams } from '../../src/mcp/params.js';

const map = compileToolParams({ send_email: { recipient: '/to' }, nested: { amount: '/payment/amount', currency: '/payment/currency' } });

describe('SPEC section 4 over MCP arguments: constraint parameters of a tool call', () => {
  it('are the arguments themselves for an unmapped tool', () => {
    const args = { amount: '1.00', currency: 'USD' };
    expect(toolParams(map, 'pay_invoice', args)).toBe(args);
  });

  it('map an argument to the parameter a constraint reads', () => {
    expect(toolParams(map, 'send_email', { to: 'cfo@example.com', subject: 's' })).toEqual({ to: 'cfo@example.com', subject: 's', recipient: 'cfo@example.com' });
    expect(toolParams(map, 'nested', { payment: { amount: '5', currency: 'EUR' } })).toMatchObject({ amount: '5', currency: 'EUR' });
  });

  it('never let an argument named like a mapped parameter stand in for it', () => {
    expect(toolParams(map, 'send_email', { to: 'x@evil.example', recipient: 'ok@example.com' })).toMatchObject({ recipient: 'x@evil.example' });
    expect(toolParams(map, 'send_email', { recipient: 'ok@example.com' })).not.toHaveProperty('recipient');
  });

  it('carry the literal of a number a double cannot hold, copied or mapped, and never a replaced argument\'s', () => {
    const nested = parseJsonStrict('{"payment":{"amount":500.000000000000000001,"currency":"USD"},"fee":12345678901234567891}', 'all') as Record<string, unknown>;
    const p = toolParams(map, 'nested', nested);
    expect(numberSource(p, 'amount')).toBe('500.000000000000000001');
    expect(numberSource(p, 'fee')).toBe('12345678901234567891');
    // An argument named like the mapped parameter, with a kept literal, is replaced: so is its literal.
    const shadow = parseJsonStrict('{"amount":1e400,"payment":{"amount":5,"currency":"USD"}}', 'all') as Record<string, unknown>;
    const q = toolParams(map, 'nested', shadow);
    expect(q['amount']).toBe(5);
    expect(numberSource(q, 'amount')).toBeUndefined();
  });

  it('copies an own __proto__ argument without touching prototypes', () => {
    const args = JSON.parse('{"__proto__":{"x":1},"to":"a@example.com"}') as Record<string, unknown>;
    const p = toolParams(map, 'send_email', args);
    expect(Object.hasOwn(p, '__proto__')).toBe(true);
    expect(({} as Record<string, unknown>)['x']).toBeUndefined();
  });
});
