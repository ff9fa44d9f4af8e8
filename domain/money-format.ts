import { formatMinorUnits, minorUnitDigits, type Nano } from './money.js';

const formatters = new Map<string, Intl.NumberFormat>();

/**
 * An amount for people to read, in its currency ("$1,234.57", "-€0.50", "¥1,200"): rounded once
 * to the currency's minor unit, half away from zero (as invoice lines are), then laid out by
 * Intl from the exact decimal string (never through a binary float).
 */
export function formatMoney(nano: Nano, currency: string, locale = 'en-US'): string {
  const digits = minorUnitDigits(currency);
  let formatter = formatters.get(`${locale}|${currency}`);
  if (!formatter) {
    formatter = new Intl.NumberFormat(locale, { style: 'currency', currency, minimumFractionDigits: digits, maximumFractionDigits: digits });
    formatters.set(`${locale}|${currency}`, formatter);
  }
  // Intl formats a decimal string exactly (ECMA-402 "Intl.NumberFormat v3" string values).
  return formatter.format(formatMinorUnits(nano, digits) as unknown as number);
}

/** part / whole as a percentage with one decimal, rounded half away from zero, exactly; null when whole is 0. */
export function formatPercent(part: bigint, whole: bigint): string | null {
  if (whole === 0n) return null;
  const scaled = part * 1000n;
  const abs = (v: bigint) => (v < 0n ? -v : v);
  let tenths = scaled / whole;
  if (2n * abs(scaled % whole) >= abs(whole)) tenths += (scaled < 0n) === (whole < 0n) ? 1n : -1n;
  const sign = tenths < 0n ? '-' : '';
  return `${sign}${abs(tenths) / 10n}.${abs(tenths) % 10n}%`;
}
