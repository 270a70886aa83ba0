/**
 * A lifecycle SET and its issuer's keys (keys.ts, a real JWKS server): a SET signed with a key the
 * gateway cannot fetch right now is "not verifiable yet" (SetRejected.transient), so that it is
 * retried (push 503, poll redelivery) instead of reported and dropped by the transmitter; a key
 * still unknown after a refetch is the SET's fault (invalid_key).
 */
import * as jose from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { IssuerKeys } from '../../src/auth/keys.js';
import { MAX_KEY_WAITS, SetRejected, SetVerifier } from '../../src/mission/events.js';
import { eventually } from '../helpers/gateway.js';
import { JwksServer } from '../auth/helpers.js';
import { lifecycleSet, logger, makeConfig, newMetrics, signingKey, type SigningKey } from './helpers.js';

let jwks: JwksServer;
let now: number;
const open: IssuerKeys[] = [];

beforeAll(async () => {
  jwks = await new JwksServer().start();
});
afterAll(async () => {
  await jwks.close();
});
afterEach(() => {
  for (const k of open.splice(0)) k.close();
  jwks.down = false;
});

async function serve(...keys: SigningKey[]): Promise<void> {
  jwks.keys = await Promise.all(keys.map(async (k) => ({ ...(await jose.exportJWK(k.publicKey)), kid: k.kid, alg: 'ES256' })));
}

function verifier(): { verifier: SetVerifier; keys: IssuerKeys } {
  now = Date.now();
  const config = makeConfig({ issuers: [{ issuer: jwks.url, jwks_uri: `${jwks.url}/jwks`, algorithms: ['ES256'] }] });
  const keys = new IssuerKeys({ issuers: config.issuers, metrics: newMetrics(), logger, cooldownMs: 30_000, refreshIntervalMs: 0, clock: () => now });
  open.push(keys);
  return { verifier: new SetVerifier(config, new Set([jwks.url]), keys, () => now), keys };
}

async function rejection(p: Promise<unknown>): Promise<SetRejected> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SetRejected);
  return err as SetRejected;
}

describe('SET verification and key rotation', () => {
  it('a SET signed with a key rotated in just after the keys were fetched verifies: inside the token refetch cooldown, a SET refetches within a second', async () => {
    const k1 = signingKey('k1');
    const k2 = signingKey('k2');
    await serve(k1);
    const { verifier: v, keys } = verifier();
    await keys.start();
    const fetches = jwks.requests;
    // The authority rotates to k2 just after the gateway fetched its keys (30 s cooldown for tokens).
    await serve(k1, k2);
    const set = await lifecycleSet(k2, { issuer: jwks.url, state: 'revoked', version: 2 });
    const started = Date.now();
    await expect(v.verify(set)).resolves.toMatchObject({ kind: 'lifecycle', change: { state: 'revoked' } });
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(jwks.requests).toBe(fetches + 1);
  });

  it('SETs with unknown keys pushed at once refetch the key set once, and are refused when the key is still not there', async () => {
    await serve(signingKey('k1'));
    const { verifier: v, keys } = verifier();
    await keys.start();
    const fetches = jwks.requests;
    // Signed first, then verified together: each signing makes a key, which a loaded machine may spread out.
    const sets = await Promise.all([1, 2, 3, 4, 5].map((i) => lifecycleSet(signingKey(`evil${i}`), { issuer: jwks.url, state: 'active', version: 9 })));
    const forged = await Promise.all(sets.map((set) => rejection(v.verify(set))));
    expect(forged.map((r) => [r.err, r.transient])).toEqual(Array(5).fill(['invalid_key', false]));
    expect(jwks.requests).toBe(fetches + 1);
  });

  it(`no more than MAX_KEY_WAITS SETs wait for a refetch at once: the rest are "not verifiable yet" at once, and a SET signed with a known key verifies meanwhile (r14c 1)`, async () => {
    const k1 = signingKey('k1');
    await serve(k1);
    const { verifier: v, keys } = verifier();
    await keys.start();
    // Forged SETs naming kids the issuer does not have: anyone can send them, no signature needed.
    const sets = await Promise.all(Array.from({ length: MAX_KEY_WAITS + 10 }, (_, i) => lifecycleSet(signingKey(`evil${i}`), { issuer: jwks.url, state: 'active', version: 9 })));
    const settled: { at: number; err: SetRejected }[] = [];
    const started = Date.now();
    const forged = sets.map((set) => rejection(v.verify(set)).then((err) => settled.push({ at: Date.now() - started, err })));
    // The ones past the bound are answered (503 on a push) without waiting for the refetch ...
    await eventually(() => expect(settled).toHaveLength(10), 500);
    expect(settled.every((s) => s.err.transient && s.err.err === 'invalid_key' && s.at < 500)).toBe(true);
    // ... and a genuine revocation, signed with the key the gateway has, is verified while they wait.
    await expect(v.verify(await lifecycleSet(k1, { issuer: jwks.url, state: 'revoked', version: 2 }))).resolves.toMatchObject({ change: { state: 'revoked' } });
    expect(settled).toHaveLength(10);
    await Promise.all(forged);
    // Those that waited: refused after the one refetch (the key is not there), and their places freed.
    expect(settled.slice(10).map((s) => [s.err.err, s.err.transient])).toEqual(Array(MAX_KEY_WAITS).fill(['invalid_key', false]));
    const again = await rejection(v.verify(sets[0]!));
    expect(again.transient).toBe(false);
  });

  it("a key still unknown after a refetch is the SET's fault: invalid_key, not retried", async () => {
    await serve(signingKey('k1'));
    const { verifier: v, keys } = verifier();
    await keys.start();
    now += 1_001; // the lookup refetches at once, and the key is not there
    const r = await rejection(v.verify(await lifecycleSet(signingKey('k9'), { issuer: jwks.url, state: 'revoked', version: 2 })));
    expect([r.err, r.transient]).toEqual(['invalid_key', false]);
  });

  it('keys that cannot be fetched at all (and none ever were): not verifiable yet', async () => {
    jwks.down = true;
    const { verifier: v } = verifier();
    const r = await rejection(v.verify(await lifecycleSet(signingKey('k1'), { issuer: jwks.url, state: 'revoked', version: 2 })));
    expect(r.transient).toBe(true);
  });

  it('a refetch that fails for a new kid (last good keys kept): not verifiable yet', async () => {
    await serve(signingKey('k1'));
    const { verifier: v, keys } = verifier();
    await keys.start();
    jwks.down = true;
    now += 1_001;
    const r = await rejection(v.verify(await lifecycleSet(signingKey('k2'), { issuer: jwks.url, state: 'revoked', version: 2 })));
    expect(r.transient).toBe(true);
  });

  it('a bad signature under a known key is rejected outright', async () => {
    const k1 = signingKey('k1');
    await serve(k1);
    const { verifier: v, keys } = verifier();
    await keys.start();
    const forged = await lifecycleSet({ ...signingKey('other'), kid: 'k1' }, { issuer: jwks.url, state: 'active', version: 3 });
    const r = await rejection(v.verify(forged));
    expect([r.err, r.transient]).toEqual(['invalid_key', false]);
  });
});
