import { afterEach, describe, expect, it, vi } from 'vitest';
import { isoNow } from '../../src/pipeline/run.js';

describe('evaluated_at: the millisecond as Date#toISOString writes it, from a per-second cache', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('matches toISOString for every width of the millisecond, within and across seconds', () => {
    vi.useFakeTimers();
    const base = Date.UTC(2026, 10, 27, 2, 33, 23);
    for (const at of [base, base + 7, base + 42, base + 999, base + 1000, base + 1005, base + 61_230, base - 1, Date.UTC(1999, 11, 31, 23, 59, 59, 999)]) {
      vi.setSystemTime(at);
      expect(isoNow()).toBe(new Date(at).toISOString());
      expect(isoNow()).toBe(new Date(at).toISOString()); // the same millisecond again: the cached text
    }
  });
});
