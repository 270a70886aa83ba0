/**
 * The DPoP proof-header cache is bounded by bytes as well as entries (r19c 3): headers are cached
 * before a proof's signature is checked, so one client can make every header unique and as long
 * as a proof allows.
 */
import { describe, expect, it } from 'vitest';
import { MAX_PROOF_BYTES, ProofKeyCache } from '../../src/auth/dpop.js';

type Header = Parameters<ProofKeyCache['set']>[1];
const header = {} as Header;

function held(cache: ProofKeyCache, segments: readonly string[]): number {
  return segments.filter((s) => cache.get(s) !== undefined).length;
}

describe('ProofKeyCache bounds', () => {
  it('ordinary headers fill it by count; the longest headers a proof allows by bytes', () => {
    let evicted = 0;
    const cache = new ProofKeyCache(10_000, () => evicted++);
    const ordinary = Array.from({ length: 10_000 }, (_, i) => `eyJ${String(i).padStart(6, '0')}${'a'.repeat(300)}`);
    for (const s of ordinary) cache.set(s, header);
    expect(held(cache, ordinary)).toBe(10_000);
    expect(evicted).toBe(0);

    const hostile = Array.from({ length: 10_000 }, (_, i) => `eyJ${String(i).padStart(6, '0')}${'b'.repeat(MAX_PROOF_BYTES - 100)}`);
    for (const s of hostile) cache.set(s, header);
    // 16 MiB over ~9 KiB a header: fewer than 2,000 kept, the newest.
    const kept = held(cache, hostile);
    expect(kept).toBeGreaterThan(1000);
    expect(kept).toBeLessThan(2000);
    expect(cache.get(hostile.at(-1)!)).toBe(header);
    expect(cache.get(hostile[0]!)).toBeUndefined();
  });
});
