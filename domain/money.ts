/**
 * Money is an integer number of nano-units (1e-9 of the currency's major unit) held in a bigint.
 * No binary float ever carries an amount: decimal input is parsed digit by digit, and output is
 * formatted from the integer. Rounding to a currency's minor unit happens only on invoice lines.
 */
export type Nano = bigint;

export const NANO_DECIMALS = 9;

/**
 * The most one event may cost: the int64 range of every column and codec that carries an event's
 * cost (the stream's msgpack int64, the ledger's bigint, ClickHouse's Int64), 9,223,372,036.854775807
 * currency units. An event rated above it is rejected at the price stage (code cost_out_of_range),
 * never wrapped. Sums of costs are held wider: numeric in PostgreSQL, split sums in ClickHouse.
 */
export const MAX_EVENT_COST_NANO: Nano = 2n ** 63n - 1n;

export class AmountError extends Error {}

const DECIMAL = /^(-)?(\d+)(?:\.(\d+))?$/;

/**
 * Parses a decimal amount ("0.10", "12", 0.000001) into nano-units, exactly.
 * A JSON number is read through its shortest round-trip decimal form, which is the literal as
 * written for any amount with up to 15 significant digits; more precision than nano is refused.
 */
export function parseNano(value: string | number): Nano {
  return parseScaled(value, NANO_DECIMALS);
}

/** Parses a decimal into an integer scaled by 10^decimals, refusing anything finer. */
export function parseScaled(value: string | number, decimals: number): bigint {
  const text = typeof value === 'number' ? numberToDecimalString(value) : value.trim();
  const match = DECIMAL.exec(text);
  if (!match) throw new AmountError(`not a decimal number: ${JSON.stringify(value)}`);
  const [, sign, whole, fraction = ''] = match;
  const significant = fraction.replace(/0+$/, '');
  if (significant.length > decimals) {
    throw new AmountError(`${text} has more than ${decimals} decimal places`);
  }
  const scaled = BigInt(whole) * 10n ** BigInt(decimals) + BigInt((significant || '0').padEnd(decimals, '0'));
  return sign ? -scaled : scaled;
}

function numberToDecimalString(value: number): string {
  if (!Number.isFinite(value)) throw new AmountError(`not a finite number: ${value}`);
  const text = String(value);
  const exp = /^(-)?(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(text);
  if (!exp) return text;
  const [, sign = '', lead, rest = '', power] = exp;
  const digits = lead + rest;
  const pointAt = 1 + Number(power);
  let out: string;
  if (pointAt <= 0) out = '0.' + '0'.repeat(-pointAt) + digits;
  else if (pointAt >= digits.length) out = digits + '0'.repeat(pointAt - digits.length);
  else out = digits.slice(0, pointAt) + '.' + digits.slice(pointAt);
  return sign + out;
}

/** Formats a scaled integer as a plain decimal string with trailing zeros trimmed ("0.1027"). */
export function formatScaled(value: bigint, decimals: number, minDecimals = 0): string {
  const negative = value < 0n;
  const abs = negative ? -value : value;
  const base = scaleOf(decimals);
  const whole = abs / base;
  const rest = abs % base;
  let fraction = rest === 0n ? '' : trimZeros(rest.toString().padStart(decimals, '0'));
  if (fraction.length < minDecimals) fraction = fraction.padEnd(minDecimals, '0');
  return (negative ? '-' : '') + whole.toString() + (fraction ? '.' + fraction : '');
}

/** 10^decimals, computed once per scale (an authorize answer formats a dozen amounts). */
const scales: bigint[] = [];
function scaleOf(decimals: number): bigint {
  return (scales[decimals] ??= 10n ** BigInt(decimals));
}

function trimZeros(digits: string): string {
  let end = digits.length;
  while (end > 0 && digits.charCodeAt(end - 1) === 48) end--;
  return digits.slice(0, end);
}

export function formatNano(nano: Nano, minDecimals = 0): string {
  return formatScaled(nano, NANO_DECIMALS, minDecimals);
}

/** Digits after the point of each currency's minor unit, where ISO 4217 says other than 2. */
const MINOR_UNIT_EXCEPTIONS: Record<string, number> = {
  BIF: 0, CLP: 0, DJF: 0, GNF: 0, ISK: 0, JPY: 0, KMF: 0, KRW: 0, PYG: 0, RWF: 0, UGX: 0, UYI: 0, VND: 0, VUV: 0, XAF: 0, XOF: 0, XPF: 0,
  BHD: 3, IQD: 3, JOD: 3, KWD: 3, LYD: 3, OMR: 3, TND: 3,
  CLF: 4, UYW: 4,
};

export const CURRENCY_CODE = /^[A-Z]{3}$/;

/** How many decimals the currency's minor unit has (USD 2, JPY 0, KWD 3). */
export function minorUnitDigits(currency: string): number {
  if (!CURRENCY_CODE.test(currency)) throw new AmountError(`not an ISO 4217 currency code: ${JSON.stringify(currency)}`);
  return MINOR_UNIT_EXCEPTIONS[currency] ?? 2;
}

/**
 * Rounds nano-units to the currency's minor unit, half away from zero: 0.125 -> 0.13,
 * -0.125 -> -0.13, so a credit rounds to exactly the negative of the same charge.
 */
export function roundToMinorUnit(nano: Nano, minorDigits: number): Nano {
  const step = 10n ** BigInt(NANO_DECIMALS - minorDigits);
  const magnitude = nano < 0n ? -nano : nano;
  const remainder = magnitude % step;
  const rounded = magnitude - remainder + (remainder * 2n >= step ? step : 0n);
  return nano < 0n ? -rounded : rounded;
}

/** A rounded amount with exactly the minor unit's decimals: "12.50", "-3.00", "1200" (JPY). */
export function formatMinorUnits(nano: Nano, minorDigits: number): string {
  return formatNano(roundToMinorUnit(nano, minorDigits), minorDigits);
}

/**
 * amount x factor, where factor is a decimal scaled by 10^factorDecimals. Exact or refused:
 * a product finer than the amount's unit throws instead of rounding.
 */
export function multiplyExact(amount: bigint, factor: bigint, factorDecimals: number): bigint {
  const scale = powerOfTen(factorDecimals);
  const product = amount * factor;
  if (product % scale !== 0n) {
    throw new AmountError(`${amount} x ${formatScaled(factor, factorDecimals)} is not a whole number of units`);
  }
  return product / scale;
}

export function isWholeProduct(amount: bigint, factor: bigint, factorDecimals: number): boolean {
  return (amount * factor) % powerOfTen(factorDecimals) === 0n;
}

const POWERS_OF_TEN = Array.from({ length: 40 }, (_, exponent) => 10n ** BigInt(exponent));

function powerOfTen(exponent: number): bigint {
  return POWERS_OF_TEN[exponent] ?? 10n ** BigInt(exponent);
}

/** Amounts as exact decimal strings, key by key: the form the ledger's and the invoice aggregates' jsonb columns hold. */
export function decimalStrings(amounts: Readonly<Record<string, bigint>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key in amounts) out[key] = amounts[key].toString();
  return out;
}
