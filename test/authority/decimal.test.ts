import { describe, expect, it } from 'vitest';
import { compareDecimal, parseDecimalLiteral, parseDecimalNumber, parseDecimalString } from '../../src/authority/decimal.js';

describe('exact decimals for max_amount (SPEC §4)', () => {
  it('numbers read through their shortest form, exponents expanded', () => {
    expect(parseDecimalNumber(1e-7)).toEqual({ int: '', frac: '0000001' });
    expect(parseDecimalNumber(1.5e-7)).toEqual({ int: '', frac: '00000015' });
    expect(parseDecimalNumber(1e21)).toEqual({ int: '1' + '0'.repeat(21), frac: '' });
    expect(parseDecimalNumber(1.25e22)).toEqual({ int: '125' + '0'.repeat(20), frac: '' });
    expect(parseDecimalNumber(423.5)).toEqual({ int: '423', frac: '5' });
    expect(parseDecimalNumber(0)).toEqual({ int: '', frac: '' });
    expect(parseDecimalNumber(-0)).toEqual({ int: '', frac: '' });
    expect(parseDecimalNumber(-1)).toBeNull();
  });
  it('SPEC §4: JSON number literals are read as the exact decimal they write, whatever a double makes of them', () => {
    const d = (s: string) => parseDecimalString(s)!;
    expect(parseDecimalLiteral('100.0000000000000001')).toEqual({ int: '100', frac: '0000000000000001' });
    expect(parseDecimalLiteral('12345678901234567890')).toEqual({ int: '12345678901234567890', frac: '' });
    expect(parseDecimalLiteral('1e400')).toEqual({ int: '1' + '0'.repeat(400), frac: '' });
    expect(parseDecimalLiteral('1.5E-3')).toEqual({ int: '', frac: '0015' });
    expect(parseDecimalLiteral('0.00100e+2')).toEqual({ int: '', frac: '1' });
    expect(parseDecimalLiteral('1.0000e2')).toEqual(d('100'));
    for (const zero of ['0', '-0', '-0.0', '0e999', '-0.000E-5', '0.' + '0'.repeat(300)]) expect(parseDecimalLiteral(zero), zero).toEqual({ int: '', frac: '' });
    for (const neg of ['-1', '-1e-400', '-0.0000000000000000000001']) expect(parseDecimalLiteral(neg), neg).toBeNull();
    for (const bad of ['', '01', '1.', '.5', '+1', '1e', 'NaN', 'Infinity', ' 1', '0x10']) expect(parseDecimalLiteral(bad), bad).toBeNull();
    expect(compareDecimal(parseDecimalLiteral('100.0000000000000001')!, d('100.00'))).toBe(1);
    expect(compareDecimal(parseDecimalLiteral('99.99999999999999999')!, d('100'))).toBe(-1);
  });
  it('a huge or tiny exponent is clamped, never expanded, and keeps its order against every limit', () => {
    const d = (s: string) => parseDecimalString(s)!;
    const huge = parseDecimalLiteral('1e999999999')!;
    expect(huge.int.length).toBeLessThanOrEqual(2001);
    expect(compareDecimal(huge, d('9'.repeat(64)))).toBe(1);
    expect(compareDecimal(huge, parseDecimalNumber(Number.MAX_VALUE)!)).toBe(1);
    expect(compareDecimal(parseDecimalLiteral('1e' + '9'.repeat(400))!, d('1'))).toBe(1);
    const tiny = parseDecimalLiteral('1e-999999999')!;
    expect(tiny.frac.length).toBeLessThanOrEqual(2001);
    expect(compareDecimal(tiny, d('0'))).toBe(1);
    expect(compareDecimal(tiny, parseDecimalNumber(5e-324)!)).toBe(-1);
    expect(compareDecimal(parseDecimalLiteral('1e-' + '9'.repeat(400))!, d('0.' + '0'.repeat(60) + '1'))).toBe(-1);
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
