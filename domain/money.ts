/**
 * Money is an integer number of nano-units (1e-9 of the currency's major unit) held in a bigint.
 * No binary float ever carries an amount: decimal input is parsed digit by digit, and output is
 * formatted from the integer. Rounding to a currency's minor unit happens only on invoice lines.
 */
export type Nano = bigint;

export const NANO_DECIMALS = 9;
export const NANO_PER_UNIT = 1_000_000_000n;

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
  const base = 10n ** BigInt(decimals);
  const whole = abs / base;
  let fraction = (abs % base).toString().padStart(decimals, '0').replace(/0+$/, '');
  if (fraction.length < minDecimals) fraction = fraction.padEnd(minDecimals, '0');
  return (negative ? '-' : '') + whole.toString() + (fraction ? '.' + fraction : '');
}

export function formatNano(nano: Nano, minDecimals = 0): string {
  return formatScaled(nano, NANO_DECIMALS, minDecimals);
}
