import { describe, expect, it } from 'vitest';
import { formatMoney, formatPercent } from './money-format.js';

describe('formatMoney', () => {
  it('rounds to the minor unit half away from zero and lays out the currency, exactly beyond 2^53', () => {
    expect(formatMoney(1_234_565_000_000n, 'USD')).toBe('$1,234.57');
    expect(formatMoney(-500_000_000n, 'EUR')).toBe('-€0.50');
    expect(formatMoney(1_200_499_999_999n, 'JPY')).toBe('¥1,200');
    expect(formatMoney(1_125_000_000n, 'KWD')).toBe('KWD\u00a01.125');
    expect(formatMoney(9_007_199_254_740_993_000_000_001n, 'USD')).toBe('$9,007,199,254,740,993.00');
    expect(formatMoney(4_999_999n, 'USD')).toBe('$0.00');
    expect(formatMoney(5_000_000n, 'USD')).toBe('$0.01');
  });
});

describe('formatPercent', () => {
  it('is exact to one decimal, half away from zero', () => {
    expect(formatPercent(1n, 3n)).toBe('33.3%');
    expect(formatPercent(2n, 3n)).toBe('66.7%');
    expect(formatPercent(1n, 8n)).toBe('12.5%');
    expect(formatPercent(-1n, 8n)).toBe('-12.5%');
    expect(formatPercent(3n, 2n)).toBe('150.0%');
    expect(formatPercent(1n, 0n)).toBeNull();
  });
});
