/**
 * Seconds in the config become whole milliseconds (wholeMs): what undici and Node's server accept,
 * and a positive value never 0, which both read as no timeout at all (r20b 3, r21b 17).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { wholeMs } from '../../src/values.js';
import { startGateway } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';

describe('wholeMs', () => {
  it('rounds to whole milliseconds; 0 stays 0 (no timeout), any positive value is at least 1 ms', () => {
    expect(wholeMs(2.01)).toBe(2010);
    expect(wholeMs(0)).toBe(0);
    expect(wholeMs(0.0004)).toBe(1);
    expect(wholeMs(0.0015)).toBe(2);
  });

  it('an upstream.timeout_s under a millisecond is still a timeout: a silent upstream is 504, not a request held forever (r21b 17)', async () => {
    const silent = createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const gw = await startGateway(`public_base_url: https://api.example.com\nresource: https://api.example.com\nupstream: { url: "http://127.0.0.1:${(silent.address() as AddressInfo).port}", timeout_s: 0.0004 }\nroutes: [{ match: { path: /public/** }, auth: none }]\n`);
    try {
      const started = Date.now();
      const r = await raw(gw.url, { path: '/public/x' });
      expect(r.status).toBe(504);
      expect(r.json()).toMatchObject({ error: 'gateway_timeout' });
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      await gw.close();
      silent.closeAllConnections();
      silent.close();
    }
  });
});
