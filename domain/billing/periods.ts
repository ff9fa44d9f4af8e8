/**
 * Billing periods. `calendar_month`: the UTC calendar month. `anniversary`: one month counted
 * from the anchor (the subscription's start): an anchor on the 31st gives periods ending on the
 * last day of shorter months and on the 31st again where there is one (never drifting).
 */
export type BillingPeriodKind = 'calendar_month' | 'anniversary';

export interface Period {
  start: number;
  end: number;
}

/** The anchor moved `months` whole months, its day clamped to the length of the target month. */
function addMonths(anchor: number, months: number): number {
  const a = new Date(anchor);
  const year = a.getUTCFullYear();
  const month = a.getUTCMonth() + months;
  const lastDay = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
  return Date.UTC(year, month, Math.min(a.getUTCDate(), lastDay), a.getUTCHours(), a.getUTCMinutes(), a.getUTCSeconds(), a.getUTCMilliseconds());
}

/** The period that contains `at`. */
export function periodContaining(kind: BillingPeriodKind, anchor: number, at: number): Period {
  if (kind === 'calendar_month') {
    const date = new Date(at);
    return { start: Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1), end: Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1) };
  }
  const a = new Date(anchor);
  const t = new Date(at);
  // A first guess from the calendar, then one step either way: day clamping moves a bound by days only.
  let k = (t.getUTCFullYear() - a.getUTCFullYear()) * 12 + (t.getUTCMonth() - a.getUTCMonth());
  while (addMonths(anchor, k) > at) k--;
  while (addMonths(anchor, k + 1) <= at) k++;
  return { start: addMonths(anchor, k), end: addMonths(anchor, k + 1) };
}

/** Every period that overlaps [from, to), in order. */
export function periodsBetween(kind: BillingPeriodKind, anchor: number, from: number, to: number): Period[] {
  const periods: Period[] = [];
  if (to <= from) return periods;
  let period = periodContaining(kind, anchor, from);
  while (period.start < to) {
    periods.push(period);
    period = periodContaining(kind, anchor, period.end);
  }
  return periods;
}

/** 'YYYY-MM-DD' of a period's first day, or 'YYYY-MM' for a calendar month: how a line names it. */
export function periodLabel(period: Period): string {
  const start = new Date(period.start);
  const calendar = start.getUTCDate() === 1 && start.getUTCHours() === 0 && new Date(period.end).getUTCDate() === 1;
  return calendar ? start.toISOString().slice(0, 7) : `${start.toISOString().slice(0, 10)}..${new Date(period.end).toISOString().slice(0, 10)}`;
}
