import { createServer } from 'node:http';
import { describe, expect, it } from 'vitest';
import { Denial } from '../../src/errors.js';
import { retryAfterValue, writeDenial } from '../../src/pipeline/respond.js';

describe('Retry-After is delay-seconds: digits only (RFC 9110 section 10.2.3; r20d 3)', () => {
  it('rounds up, never negative, never in exponent notation, at most 2^31', () => {
    expect(retryAfterValue(1.2)).toBe('2');
    expect(retryAfterValue(-5)).toBe('0');
    expect(retryAfterValue(Number.NaN)).toBe('0');
    expect(retryAfterValue(1e22)).toBe('2147483648');
    expect(retryAfterValue(1e308)).toBe('2147483648');
    expect(retryAfterValue(Number.POSITIVE_INFINITY)).toBe('2147483648');
  });

  it('a suspension that ends in the far future is denied with a Retry-After a client can parse', async () => {
    const server = createServer((_req, res) => writeDenial(res, new Denial('mission_suspended', { retryAfter: 1e308 - Date.now() / 1000 }), 'dec_x', null, null));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const r = await fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/`);
      expect(r.status).toBe(403);
      expect(r.headers.get('retry-after')).toMatch(/^\d+$/);
    } finally {
      server.close();
    }
  });
});
