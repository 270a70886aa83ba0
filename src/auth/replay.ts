/**
 * In-memory single-use store (DPoP `jti` per key thumbprint, ID-JAG `jti`), bounded and lean.
 *
 * Layout: a fixed table of 16-slot buckets in three typed arrays (64-bit fingerprint + expiry), so an
 * entry costs 12 bytes per slot and about 15 bytes per stored entry at the default sizing; no
 * per-entry objects or strings, nothing for the GC to trace. Every operation is O(1) (about 1 us):
 * a key's 64-bit fingerprint and two candidate buckets come from one seeded hash (two-choice
 * hashing keeps the buckets evenly filled: no live entry was evicted when filling a 1,000,000
 * store to its configured size; the per-process random seeds mean a client cannot aim its own
 * entries at the buckets of somebody else's proof).
 *
 * Expired slots are reused in place. When both candidate buckets are full of live entries the
 * claim is refused (StoreFullError: the request is denied 503 `replay_store_unavailable`): no
 * unexpired entry is ever forgotten, since that would let its proof be replayed (r19g 3). Size
 * `dpop.replay_max_entries` above (peak proofs per second) x (dpop.max_age_s + 2 x clock_skew_s):
 * with the default 1,000,000 and max_age_s 60 that is about 14,000 proofs per second before a
 * claim is refused. A fingerprint collision (about n^2 / 2^65) would only make a fresh proof look
 * replayed (fail closed).
 */
import { randomBytes } from 'node:crypto';
import type { Metrics } from '../observability/metrics.js';
import { systemClock, type Clock } from './jws.js';
import type { ReplayStore } from './types.js';

const WAYS = 16;
const MAX_TTL_S = 366 * 86_400;

/** Both buckets a key may go in hold only live entries: the claim cannot be recorded without forgetting one. */
export class StoreFullError extends Error {
  constructor() {
    super('the in-memory replay store is full of unexpired entries (dpop.replay_max_entries)');
    this.name = 'StoreFullError';
  }
}

export interface MemoryReplayStoreOptions {
  readonly maxEntries?: number;
  readonly metrics?: Metrics;
  readonly clock?: Clock;
}

export class MemoryReplayStore implements ReplayStore {
  private readonly buckets: number;
  private readonly hi: Uint32Array;
  private readonly lo: Uint32Array;
  /** Expiry in seconds since `epoch`, plus one; 0 = empty slot. */
  private readonly exp: Uint32Array;
  private readonly seed1: number;
  private readonly seed2: number;
  private readonly epochMs: number;
  private readonly clock: Clock;
  /** Claims refused because the table is full (counted as evictions would be: the cache is full). */
  private readonly refusals: { inc(): void } | null;
  private size = 0;

  constructor(opts: MemoryReplayStoreOptions = {}) {
    const max = Math.max(1000, Math.floor(opts.maxEntries ?? 1_000_000));
    // 25% headroom over the configured number of entries.
    this.buckets = Math.ceil((max * 1.25) / WAYS);
    const slots = this.buckets * WAYS;
    this.hi = new Uint32Array(slots);
    this.lo = new Uint32Array(slots);
    this.exp = new Uint32Array(slots);
    const seeds = randomBytes(8);
    this.seed1 = seeds.readUInt32LE(0);
    this.seed2 = seeds.readUInt32LE(4);
    this.clock = opts.clock ?? systemClock;
    this.epochMs = this.clock();
    this.refusals = opts.metrics ? opts.metrics.cacheEvictions.labels('replay') : null;
  }

  /** Bytes held by the table (for the memory benchmark). */
  get bytes(): number {
    return this.hi.byteLength + this.lo.byteLength + this.exp.byteLength;
  }

  /** Live-or-expired occupied slots (expired ones are reused lazily). */
  get occupied(): number {
    return this.size;
  }

  /** Forgets `key` (a claim whose use did not happen, see ReplayStore.release). */
  release(key: string): void {
    const { hi, lo, b1, b2 } = this.locate(key);
    for (const b of b1 === b2 ? [b1] : [b1, b2]) {
      for (let i = b; i < b + WAYS; i++) {
        if (this.exp[i] !== 0 && this.hi[i] === hi && this.lo[i] === lo) {
          this.exp[i] = 0;
          this.size--;
          return;
        }
      }
    }
  }

  /**
   * Seeded 2 x 32-bit multiplicative hash (cyrb53-style): ~0.2 us for a 90-character key, against
   * several us for a keyed SHA-256. The seeds are random per process, so nobody can compute
   * offline which bucket another client's `jkt:jti` lands in. Returns the 64-bit fingerprint and
   * the two candidate buckets (slot offsets).
   */
  private locate(key: string): { hi: number; lo: number; b1: number; b2: number } {
    let h1 = this.seed1;
    let h2 = this.seed2;
    for (let i = 0; i < key.length; i++) {
      const ch = key.charCodeAt(i);
      h1 = Math.imul(h1 ^ ch, 2654435761);
      h2 = Math.imul(h2 ^ ch, 1597334677);
    }
    h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
    h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
    h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
    h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
    const hi = h1 >>> 0;
    const lo = h2 >>> 0;
    const b1 = (hi % this.buckets) * WAYS;
    const b2 = ((Math.imul(lo ^ (hi >>> 7), 0x9e3779b1) >>> 0) % this.buckets) * WAYS;
    return { hi, lo, b1, b2 };
  }

  claim(key: string, ttlSeconds: number): boolean {
    const { hi, lo, b1, b2 } = this.locate(key);
    // Seconds since epoch + 1 so that 0 stays "empty"; a clock before epoch counts as epoch.
    const now = Math.max(0, Math.floor((this.clock() - this.epochMs) / 1000)) + 1;
    // A non-finite ttl would store 0 ("empty") and a huge one would wrap the Uint32: both would
    // forget the key, so refuse the first and cap the second (one year).
    if (!Number.isFinite(ttlSeconds)) throw new RangeError('ttl must be a finite number of seconds');
    // One extra second because `now` is whole seconds: the key is kept for at least ttlSeconds.
    const expiry = now + 1 + Math.min(MAX_TTL_S, Math.max(1, Math.ceil(ttlSeconds)));

    let free1 = -1;
    let live1 = 0;
    let free2 = -1;
    let live2 = 0;
    for (let i = b1; i < b1 + WAYS; i++) {
      const e = this.exp[i]!;
      if (e > now) {
        if (this.hi[i] === hi && this.lo[i] === lo) return false;
        live1++;
      } else if (free1 === -1) free1 = i;
    }
    if (b2 !== b1) {
      for (let i = b2; i < b2 + WAYS; i++) {
        const e = this.exp[i]!;
        if (e > now) {
          if (this.hi[i] === hi && this.lo[i] === lo) return false;
          live2++;
        } else if (free2 === -1) free2 = i;
      }
    }
    let slot: number;
    if (free1 !== -1 && (free2 === -1 || live1 <= live2)) slot = free1;
    else if (free2 !== -1) slot = free2;
    else {
      // Fail closed: forgetting a live entry would let its proof be accepted again.
      this.refusals?.inc();
      throw new StoreFullError();
    }
    if (this.exp[slot] === 0) this.size++;
    this.hi[slot] = hi;
    this.lo[slot] = lo;
    this.exp[slot] = expiry;
    return true;
  }

  ready(): boolean {
    return true;
  }

  async close(): Promise<void> {
    // Nothing to release: the table is garbage collected with the store.
  }
}
