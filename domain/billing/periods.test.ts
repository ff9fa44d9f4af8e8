import { describe, expect, it } from 'vitest';
import { periodContaining, periodLabel, periodsBetween } from './periods.js';

const iso = (p: { start: number; end: number }) => [new Date(p.start).toISOString(), new Date(p.end).toISOString()];

describe('billing periods', () => {
  it('calendar month: the UTC month containing the time', () => {
    expect(iso(periodContaining('calendar_month', 0, Date.UTC(2026, 1, 28, 23, 59)))).toEqual(['2026-02-01T00:00:00.000Z', '2026-03-01T00:00:00.000Z']);
  });

  it('anniversary: one month from the anchor, a 31st anchor clamped in short months and back on the 31st', () => {
    const anchor = Date.UTC(2026, 0, 31, 10);
    expect(iso(periodContaining('anniversary', anchor, Date.UTC(2026, 1, 15)))).toEqual(['2026-01-31T10:00:00.000Z', '2026-02-28T10:00:00.000Z']);
    expect(iso(periodContaining('anniversary', anchor, Date.UTC(2026, 2, 1)))).toEqual(['2026-02-28T10:00:00.000Z', '2026-03-31T10:00:00.000Z']);
    expect(iso(periodContaining('anniversary', anchor, Date.UTC(2026, 2, 31, 10)))).toEqual(['2026-03-31T10:00:00.000Z', '2026-04-30T10:00:00.000Z']);
    // Before the anchor too (an event recorded before the anchor of a successor).
    expect(iso(periodContaining('anniversary', anchor, Date.UTC(2026, 0, 30)))).toEqual(['2025-12-31T10:00:00.000Z', '2026-01-31T10:00:00.000Z']);
  });

  it('lists the periods overlapping a range, each ending where the next starts', () => {
    const anchor = Date.UTC(2026, 0, 15);
    const periods = periodsBetween('anniversary', anchor, Date.UTC(2026, 0, 20), Date.UTC(2026, 3, 1));
    expect(periods.map((p) => new Date(p.start).toISOString().slice(0, 10))).toEqual(['2026-01-15', '2026-02-15', '2026-03-15']);
    for (let i = 1; i < periods.length; i++) expect(periods[i].start).toBe(periods[i - 1].end);
    expect(periodLabel(periods[0])).toBe('2026-01-15..2026-02-15');
    expect(periodLabel({ start: Date.UTC(2026, 2, 1), end: Date.UTC(2026, 3, 1) })).toBe('2026-03');
  });
});
