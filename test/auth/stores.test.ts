/**
 * The replay store, the nonce issuer and protected-resource metadata.
 */
import { describe, expect, it } from 'vitest';
import { NonceIssuer } from '../../src/auth/nonce.js';
import { createProtectedResourceMetadata, prmPath } from '../../src/auth/prm.js';
import { MemoryReplayStore, StoreFullError } from '../../src/auth/replay.js';
import { makeConfig, newMetrics } from './helpers.js';

describe('MemoryReplayStore (RFC 9449 §11.1 single use)', () => {
  it('claims a key once; a second claim within the ttl is a replay', () => {
    const s = new MemoryReplayStore({ maxEntries: 1000 });
    expect(s.claim('jkt:a', 60)).toBe(true);
    expect(s.claim('jkt:a', 60)).toBe(false);
    expect(s.claim('jkt:b', 60)).toBe(true);
    expect(s.claim('other:a', 60)).toBe(true);
  });

  it('an entry expires after its ttl (fake clock) and the slot is reused', () => {
    let now = 1_000_000;
    const s = new MemoryReplayStore({ maxEntries: 1000, clock: () => now });
    expect(s.claim('k', 10)).toBe(true);
    now += 9_000;
    expect(s.claim('k', 10)).toBe(false);
    now += 2_000;
    expect(s.claim('k', 10)).toBe(true);
  });

  it('keeps a key for at least ttl seconds even when claimed late in a second', () => {
    let now = 0;
    const s = new MemoryReplayStore({ maxEntries: 1000, clock: () => now });
    now = 10_900;
    expect(s.claim('late', 10)).toBe(true);
    now = 20_850; // 9.95 s later: still within the ttl
    expect(s.claim('late', 10)).toBe(false);
    now = 40_000;
    expect(s.claim('late', 10)).toBe(true);
  });

  it('fails closed on a non-finite ttl and caps a huge one instead of wrapping', () => {
    const s = new MemoryReplayStore({ maxEntries: 1000 });
    expect(() => s.claim('nan', Number.NaN)).toThrow(RangeError);
    expect(s.claim('huge', 2 ** 40)).toBe(true);
    expect(s.claim('huge', 2 ** 40)).toBe(false);
  });

  it('is bounded: full of unexpired entries, it refuses a claim (counted) rather than forget one whose proof could be replayed (r19g 3)', async () => {
    const metrics = newMetrics();
    let t = 1_000_000;
    const s = new MemoryReplayStore({ maxEntries: 1000, metrics, clock: () => t });
    const bytes = s.bytes;
    const accepted: string[] = [];
    let refused = 0;
    for (let i = 0; i < 5000; i++) {
      try {
        if (s.claim(`k${i}`, 60 + (i % 7))) accepted.push(`k${i}`);
      } catch (err) {
        expect(err).toBeInstanceOf(StoreFullError);
        refused++;
      }
    }
    expect(s.bytes).toBe(bytes);
    expect(accepted.length).toBeGreaterThanOrEqual(1000);
    expect(accepted.length + refused).toBe(5000);
    const text = await metrics.registry.getSingleMetricAsString('mission_gateway_cache_evictions_total');
    expect(Number(/cache="replay"} (\d+)/.exec(text)?.[1] ?? 0)).toBe(refused);
    // Every claim it accepted is still a replay: none was forgotten to make room.
    for (const k of accepted) expect(s.claim(k, 60)).toBe(false);
    // Once they expire, there is room again.
    t += 70_000;
    expect(s.claim('k0', 60)).toBe(true);
  });

  it('release forgets one key (a claim whose use did not happen) and nothing else', () => {
    const s = new MemoryReplayStore({ maxEntries: 1000 });
    expect(s.claim('idjag:a', 60)).toBe(true);
    expect(s.claim('idjag:b', 60)).toBe(true);
    s.release('idjag:a');
    s.release('idjag:never-claimed');
    expect(s.occupied).toBe(1);
    expect(s.claim('idjag:a', 60)).toBe(true);
    expect(s.claim('idjag:a', 60)).toBe(false);
    expect(s.claim('idjag:b', 60)).toBe(false);
  });

  it('no live entry is evicted below the configured size (two-choice buckets)', async () => {
    const metrics = newMetrics();
    const s = new MemoryReplayStore({ maxEntries: 100_000, metrics });
    for (let i = 0; i < 100_000; i++) expect(s.claim(`jkt:${i}`, 60)).toBe(true);
    const text = await metrics.registry.getSingleMetricAsString('mission_gateway_cache_evictions_total');
    expect(text).not.toMatch(/cache="replay"} [1-9]/);
    for (let i = 0; i < 100_000; i += 997) expect(s.claim(`jkt:${i}`, 60)).toBe(false);
  });

  it('memory: about 15 bytes per entry at the default 1,000,000 entries', () => {
    const s = new MemoryReplayStore();
    expect(s.bytes / 1_000_000).toBeLessThan(16);
  });
});

describe('NonceIssuer (RFC 9449 §8, stateless)', () => {
  it('issues one nonce per window; accepts the current and previous window only', () => {
    let now = 10_000_000;
    const n = new NonceIssuer({ windowSeconds: 60, clock: () => now });
    const a = n.issue();
    expect(n.issue()).toBe(a);
    expect(n.check(a)).toBe(true);
    now += 60_000;
    const b = n.issue();
    expect(b).not.toBe(a);
    expect(n.check(a)).toBe(true);
    expect(n.check(b)).toBe(true);
    now += 60_000;
    expect(n.check(a)).toBe(false);
    expect(n.check(undefined)).toBe(false);
    expect(n.check('x'.repeat(100))).toBe(false);
  });

  it('replicas with the same secret accept each other\'s nonces; another secret does not', () => {
    const secret = 's'.repeat(32);
    const now = () => 5_000_000;
    const a = new NonceIssuer({ windowSeconds: 60, secret, clock: now });
    const b = new NonceIssuer({ windowSeconds: 60, secret, clock: now });
    const c = new NonceIssuer({ windowSeconds: 60, secret: 't'.repeat(32), clock: now });
    expect(b.check(a.issue())).toBe(true);
    expect(c.check(a.issue())).toBe(false);
  });
});

describe('RFC 9728 protected-resource metadata', () => {
  it('RFC 9728 §3.1: one document per resource identifier, at the path-suffixed well-known URL', () => {
    const config = makeConfig('https://as.example.com', 'https://as.example.com/jwks', {
      mcp: { path: '/mcp', resource: 'https://api.example.com/mcp' },
      dpop: { required: true },
      mission: { required: false },
    });
    const prm = createProtectedResourceMetadata(config);
    expect([...prm.paths.keys()]).toEqual(['/.well-known/oauth-protected-resource', '/.well-known/oauth-protected-resource/mcp']);
    expect(prm.urlFor('https://api.example.com')).toBe('https://api.example.com/.well-known/oauth-protected-resource');
    expect(prm.urlFor('https://api.example.com/mcp')).toBe('https://api.example.com/.well-known/oauth-protected-resource/mcp');
    const doc = JSON.parse(prm.paths.get('/.well-known/oauth-protected-resource/mcp')!);
    expect(doc).toEqual({
      resource: 'https://api.example.com/mcp',
      authorization_servers: ['https://as.example.com'],
      bearer_methods_supported: ['header'],
      dpop_signing_alg_values_supported: ['ES256', 'EdDSA', 'RS256', 'PS256'],
      dpop_bound_access_tokens_required: true,
      mission_bound_authorization_required: false,
      mission_constraints_supported: ['max_amount', 'tenant', 'recipient_domain', 'time_window', 'allowed_tools', 'data_classification', 'resource_issued_after', 'resource_issued_before'],
    });
    expect(JSON.parse(prm.paths.get('/.well-known/oauth-protected-resource')!).resource).toBe('https://api.example.com');
  });

  it('prmPath: trailing slash and root', () => {
    expect(prmPath('https://api.example.com/')).toBe('/.well-known/oauth-protected-resource');
    expect(prmPath('https://api.example.com/v1/')).toBe('/.well-known/oauth-protected-resource/v1');
    expect(prmPath('urn:example:api')).toBe('/.well-known/oauth-protected-resource');
  });
});
