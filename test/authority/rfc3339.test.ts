import { describe, expect, it } from 'vitest';
import { parseRfc3339 } from '../../src/rfc3339.js';

describe('RFC 3339 date-times (Status answers, lifecycle events, time constraints)', () => {
  it('reads every form section 5.6 allows, to the millisecond', () => {
    const at = Date.UTC(2099, 11, 31, 23, 59, 59);
    expect(parseRfc3339('2099-12-31T23:59:59Z')).toBe(at);
    expect(parseRfc3339('2099-12-31t23:59:59z')).toBe(at);
    expect(parseRfc3339('2099-12-31T23:59:60Z')).toBe(at); // a leap second: the second before it
    expect(parseRfc3339('2099-12-31T23:59:59.029Z')).toBe(at + 29);
    expect(parseRfc3339('2099-12-31T23:59:59.5Z')).toBe(at + 500);
    expect(parseRfc3339('2099-12-31T23:59:59.123456789012345Z')).toBe(at + 123); // no limit on digits (r14d 5)
    expect(parseRfc3339('2100-01-01T01:29:59+01:30')).toBe(at);
  });

  it('refuses what is not a date-time, and impossible dates Date.parse would roll over', () => {
    for (const bad of ['2099-02-30T00:00:00Z', '2099-12-31 23:59:59Z', '2099-12-31T23:59:59', '2099-12-31T24:00:00Z', '2099-12-31T23:59:61Z', '2099-12-31T23:59:59.Z', '2099-12-31T23:59:59+24:00', `2099-12-31T23:59:59.${'1'.repeat(60)}Z`, 4102444799, null]) {
      expect(parseRfc3339(bad)).toBeNull();
    }
  });
});
