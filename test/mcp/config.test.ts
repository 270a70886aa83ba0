import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';

describe('SPEC section 2: config/mcp.yaml', () => {
  it('validates against the schema and protects the MCP endpoint with a tool -> action mapping', () => {
    const file = resolve('config/mcp.yaml');
    const config = parseConfigText(readFileSync(file, 'utf8'), dirname(file), {});
    expect(config.mcp).toMatchObject({ path: '/mcp', resource: 'http://localhost:8080/mcp', tool_actions: { pay_invoice: 'payments.create' } });
    expect(config.upstream.url).toBe('http://127.0.0.1:3001');
    expect(config.dpop.required).toBe(true);
  });
});
