/**
 * SPEC readiness / `keys_unavailable`: a gateway started while its issuer is down becomes ready on
 * its own once the issuer returns (keys.ts retries a never-loaded issuer on a backoff), without
 * waiting for traffic after the cooldown or for the 5-minute background refresh.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/gateway.js';
import { PASS, startFaultTarget, type FaultTarget } from './harness.js';

describe('issuer unreachable when the gateway starts', () => {
  let t: FaultTarget;
  afterAll(async () => {
    await t?.close();
  });
  it('ready by itself (no traffic) within a few seconds of the issuer returning', async () => {
    t = await startFaultTarget({
      beforeGateway: (p) => {
        p.set('/.well-known', { kind: 'answer', status: 500 });
        p.set('/jwks', { kind: 'answer', status: 500 });
      },
    });
    await new Promise((r) => setTimeout(r, 300));
    expect((await t.admin('/readyz')).status).toBe(503);
    t.proxy.set('/.well-known', PASS);
    t.proxy.set('/jwks', PASS);
    await eventually(async () => (await t.admin('/readyz')).status === 200, 10_000);
  });
});

describe('issuer metadata naming an unusable jwks_uri when the gateway starts', () => {
  let t: FaultTarget;
  afterAll(async () => {
    await t?.close();
  });
  it('ready by itself once the metadata is fixed: the retry reads the metadata again', async () => {
    t = await startFaultTarget({
      beforeGateway: (p) => {
        // Plain http on a public host: refused as a key source (keys.ts isTrustedUrl).
        p.set('/.well-known', { kind: 'rewrite', fn: (body) => JSON.stringify({ ...(JSON.parse(body) as object), jwks_uri: 'http://idp.example.com/jwks' }) });
      },
    });
    await new Promise((r) => setTimeout(r, 300));
    expect((await t.admin('/readyz')).status).toBe(503);
    t.proxy.set('/.well-known', PASS);
    await eventually(async () => (await t.admin('/readyz')).status === 200, 10_000);
  });
});
