import { describe, expect, it } from 'vitest';
import { capPeriod, type SpendCap } from './caps.js';

function cap(period: SpendCap['period']): SpendCap {
  return { id: 'cap_1', tenantId: 'ten_1', scopeKind: 'agent', scopeId: 'agt_1', period, limitNano: 1n, action: 'pause' };
}

describe('capPeriod', () => {
  it('names the day or month an instant falls in, whatever was asked before it', () => {
    const day = cap('day');
    const month = cap('month');
    const asked: [number, string, string][] = [
      [Date.UTC(2026, 0, 31, 23, 59, 59, 999), '2026-01-31', '2026-01'],
      [Date.UTC(2026, 1, 1), '2026-02-01', '2026-02'],
      [Date.UTC(2026, 0, 31, 12), '2026-01-31', '2026-01'],
      [Date.UTC(2026, 0, 31), '2026-01-31', '2026-01'],
      [Date.UTC(2026, 0, 30, 23, 59, 59, 999), '2026-01-30', '2026-01'],
      [Date.UTC(2026, 11, 31, 23), '2026-12-31', '2026-12'],
      [Date.UTC(2027, 0, 1), '2027-01-01', '2027-01'],
    ];
    for (const [at, dayKey, monthKey] of asked) {
      expect(capPeriod(day, { recordedAt: at })).toEqual({ key: dayKey, endsAt: Date.UTC(Number(dayKey.slice(0, 4)), Number(dayKey.slice(5, 7)) - 1, Number(dayKey.slice(8)) + 1) });
      expect(capPeriod(month, { recordedAt: at })).toEqual({ key: monthKey, endsAt: Date.UTC(Number(monthKey.slice(0, 4)), Number(monthKey.slice(5, 7)), 1) });
    }
  });

  it('gives a session cap the session, and no period without one', () => {
    expect(capPeriod(cap('session'), { recordedAt: 1_000, sessionId: 's1' })).toEqual({ key: 's:s1', endsAt: 1_000 + 86_400_000 });
    expect(capPeriod(cap('session'), { recordedAt: 1_000 })).toBeUndefined();
  });
});
