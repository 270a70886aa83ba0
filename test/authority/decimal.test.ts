import { describe, expect, it } from 'vitest';
import { compareDecimal, parseDecimalNumber, parseDecimalString } from '../../src/authority/decimal.js';

describe('exact decimals for max_amount (SPEC §4)', () => {
  it('numbers read through their shortest form, exponents expanded', () => {
    expect(parseDecimalNumber(1e-7)).toEqual({ int: '', frac: '0000001' });
    expect(parseDecimalNumber(1.5e-7)).toEqual({ int: '', frac: '00000015' });
    expect(parseDecimalNumber(1e21)).toEqual({ int: '1' + '0'.repeat(21), frac: '' });
    expect(parseDecimalNumber(1.25e22)).toEqual({ int: '125' + '0'.repeat(20), frac: '' });
    expect(parseDecimalNumber(423.5)).toEqual({ int: '423', frac: '5' });
    expect(parseDecimalNumber(0)).toEqual({ int: '', frac: '' });
    expect(parseDecimalNumber(-0)).toBeNull();
    expect(parseDecimalNumber(-1)).toBeNull();
  });
  it('strings are plain decimals only', () => {
    expect(parseDecimalString('000')).toBeNull();
    expect(parseDecimalString('0.000')).toEqual({ int: '', frac: '' });
    expect(parseDecimalString('10.10')).toEqual({ int: '10', frac: '1' });
  });
  it('compares by digits', () => {
    const d = (s: string) => parseDecimalString(s)!;
    expect(compareDecimal(d('500.00'), d('500'))).toBe(0);
    expect(compareDecimal(d('499.999999999999999999'), d('500'))).toBe(-1);
    expect(compareDecimal(d('500.000000000000000001'), d('500'))).toBe(1);
    expect(compareDecimal(d('99'), d('100'))).toBe(-1);
    expect(compareDecimal(d('0.1'), d('0.09'))).toBe(1);
    expect(compareDecimal(parseDecimalNumber(1e-7)!, d('0'))).toBe(1);
  });
});
