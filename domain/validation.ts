import { z } from 'zod';
import { AmountError, formatNano, parseNano } from './money.js';

const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/**
 * Why a text cannot be stored as it is, or undefined when it can: PostgreSQL refuses NUL in text
 * (22021), and a lone UTF-16 surrogate is not Unicode at all (UTF-8 cannot encode it: PostgreSQL
 * would store U+FFFD instead, ClickHouse refuses the row).
 */
export function unstorableText(value: string): string | undefined {
  const nul = value.indexOf('\u0000');
  if (nul >= 0) return `must not contain NUL (\\u0000), found at position ${nul}`;
  // In a /u pattern a well-formed pair is one code point above U+FFFF: only lone halves match.
  const lone = LONE_SURROGATE.exec(value);
  if (lone) return `must be valid Unicode: lone surrogate \\u${lone[0].charCodeAt(0).toString(16)} at position ${lone.index}`;
  return undefined;
}

/** One problem with an input, named by its JSON path ("models.gpt-4o.input_tokens"). */
export interface ValidationProblem {
  path: string;
  message: string;
}

/**
 * The first text in a parsed JSON value (an object key or a string, however deep) that cannot be
 * stored (unstorableText), named by its JSON path: PostgreSQL refuses NUL in jsonb as in text.
 */
export function unstorableTextIn(value: unknown, path: string[] = []): ValidationProblem | undefined {
  if (typeof value === 'string') {
    const problem = unstorableText(value);
    return problem === undefined ? undefined : { path: path.join('.'), message: problem };
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = unstorableTextIn(value[i], [...path, String(i)]);
      if (found) return found;
    }
    return undefined;
  }
  if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      const keyProblem = unstorableText(key);
      if (keyProblem !== undefined) return { path: [...path, key].join('.'), message: `key ${keyProblem}` };
      const found = unstorableTextIn(item, [...path, key]);
      if (found) return found;
    }
  }
  return undefined;
}

export type Validated<K extends string, T> = ({ ok: true } & Record<K, T>) | { ok: false; errors: ValidationProblem[] };

export function describeIssues(error: z.ZodError): ValidationProblem[] {
  return error.issues.map((issue) => ({ path: issue.path.map(String).join('.'), message: issue.message }));
}

/**
 * A money amount in the currency's major unit: a JSON number or a decimal string with at most
 * nine decimal places (nano). Normalised to its canonical decimal string ("0.10" -> "0.1"), so
 * what is stored is exactly what parseNano reads back.
 */
/** The first instant past four-digit years (9999-01-01): a time before it is held alike by PostgreSQL and ISO 8601. */
export const END_OF_YEAR_9998 = Date.UTC(9999, 0, 1);

/** The largest value of a PostgreSQL bigint: amounts kept in nano-units in such a column stop here. */
export const MAX_BIGINT = 2n ** 63n - 1n;

/**
 * An RFC 3339 timestamp with its offset, from year 1 (PostgreSQL has no year 0: "0000-01-01" is
 * out of its range).
 */
export const isoTimestamp = z.iso
  .datetime({ offset: true })
  .refine((value) => !value.startsWith('0000'), 'the year must be 0001 or later')
  .meta({ description: 'RFC 3339 timestamp with offset.' });

export function decimalAmount(options: { positive?: boolean; maxNano?: bigint } = {}) {
  return z
    .union([z.number(), z.string()])
    .transform((value, ctx) => {
      let nano: bigint;
      try {
        nano = parseNano(value);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: err instanceof AmountError ? err.message : `not a decimal amount: ${JSON.stringify(value)}` });
        return z.NEVER;
      }
      if (nano < 0n || (options.positive && nano === 0n)) {
        ctx.addIssue({ code: 'custom', message: `must be ${options.positive ? 'greater than zero' : 'zero or more'}, got ${String(value)}` });
        return z.NEVER;
      }
      if (options.maxNano !== undefined && nano > options.maxNano) {
        ctx.addIssue({ code: 'custom', message: `must be at most ${formatNano(options.maxNano)}, got ${String(value)}` });
        return z.NEVER;
      }
      return formatNano(nano);
    })
    .meta({
      description: 'A decimal amount in the major unit of the currency, as a string ("0.0025") or a JSON number; at most 9 decimal places.',
      examples: ['0.0025'],
    });
}
