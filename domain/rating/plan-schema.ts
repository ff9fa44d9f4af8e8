import { z } from 'zod';
import { AmountError, formatScaled, parseScaled } from '../money.js';
import { decimalAmount } from '../validation.js';

/**
 * A rate plan's pricing JSON (the article's `dimensionPricing`). Every dimension is optional and
 * they combine; see README "Rating and quotes" for the order in which they apply. Amounts are
 * JSON numbers or decimal strings, normalised to canonical decimal strings; multipliers keep
 * nine decimal places, percentages seven, durations three (milliseconds).
 */

const MULTIPLIER_DECIMALS = 9;
const PERCENT_DECIMALS = 7;
export const SECONDS_DECIMALS = 3;

function scaledDecimal(decimals: number, what: string, check?: (scaled: bigint) => string | undefined) {
  return z.union([z.number(), z.string()], { error: `${what} must be a JSON number or a decimal string` }).transform((value, ctx) => {
    let scaled: bigint;
    try {
      scaled = parseScaled(value, decimals);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: err instanceof AmountError ? `${what}: ${err.message}` : `${what} is not a decimal number` });
      return z.NEVER;
    }
    const problem = check?.(scaled);
    if (problem) {
      ctx.addIssue({ code: 'custom', message: `${problem}, got ${String(value)}` });
      return z.NEVER;
    }
    return formatScaled(scaled, decimals);
  });
}

const rate = decimalAmount();
const multiplier = scaledDecimal(MULTIPLIER_DECIMALS, 'a multiplier', (m) => (m < 0n ? 'a multiplier must be 0 or more' : undefined));
// A penalty is an upcharge: below 1 it would discount failing sessions, on top of what a commitment covers.
const penaltyMultiplier = scaledDecimal(MULTIPLIER_DECIMALS, 'a multiplier', (m) =>
  m < 10n ** BigInt(MULTIPLIER_DECIMALS) ? 'an error-rate penalty multiplies the session by 1 or more (1.5 is a 50% upcharge)' : undefined,
);
const threshold = scaledDecimal(MULTIPLIER_DECIMALS, 'a threshold', (t) =>
  t < 0n || t >= 10n ** BigInt(MULTIPLIER_DECIMALS) ? 'the threshold is a share of failed calls: at least 0 and below 1' : undefined,
);
const percent = scaledDecimal(PERCENT_DECIMALS, 'a percentage', (p) =>
  p < 0n || p > 100n * 10n ** BigInt(PERCENT_DECIMALS) ? 'a discount percentage must be between 0 and 100' : undefined,
);
const seconds = scaledDecimal(SECONDS_DECIMALS, 'max_seconds', (s) => (s <= 0n ? 'max_seconds must be greater than 0' : undefined));
const count = z
  .number({ error: 'must be a whole number' })
  .int('must be a whole number')
  .min(0, 'must be 0 or more')
  .max(Number.MAX_SAFE_INTEGER, 'is too large');
const toolName = z.string().min(1, 'a tool name must not be empty').max(256, 'a tool name has at most 256 characters');
/** Models and MCP servers are named as events name them: ids of `[A-Za-z0-9_.:@/-]`, at most 128 characters. */
const eventId = (what: string) =>
  z
    .string()
    .min(1, `a ${what} must not be empty`)
    .max(128, `a ${what} has at most 128 characters`)
    .regex(/^[A-Za-z0-9_.:@/-]+$/, `a ${what} is named as events carry it: letters, digits and _ . : @ / -`);

export const DEFAULT_TOOL_KEY = '*';

const durationBucketSchema = z.strictObject({
  /** Calls lasting up to this many seconds (inclusive) fall in the bucket; null on the last bucket: no upper bound. */
  max_seconds: seconds.nullable().optional(),
  rate,
  unit: z.literal('per_invocation').optional(),
});

const volumeTierSchema = z
  .strictObject({
    /** Calls of the month before this tier starts: a tier with 1000 starts at the 1,001st call. */
    min_invocations: count,
    rate: rate.optional(),
    discount_percent: percent.optional(),
  })
  .superRefine((tier, ctx) => {
    if ((tier.rate === undefined) === (tier.discount_percent === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'a tier has exactly one of rate (per call) or discount_percent' });
    }
  });

const commitmentSchema = z.strictObject({
  /** Calls covered by the committed price in each period. */
  committed_amount: count,
  committed_price: rate,
  /**
   * `allocation` (default): each agent allocation covers only that agent's calls, the rest of the
   * commitment covers the agents without one. `pool`: the whole commitment covers any calls.
   */
  overage_basis: z.enum(['allocation', 'pool']).optional(),
});

/**
 * The terms of one subscription that price its period beyond the plan (the subscription's
 * `overrides` are merged into the plan's pricing before it is compiled, so they are not here):
 * a negotiated commitment replacing the plan's, the committed calls allocated to each agent, and
 * the commitment group the commitment is shared in. By default the COMMITTED subscriptions of
 * one customer on one rate plan share one commitment; any other subscription stands alone.
 */
export const subscriptionTermsSchema = z
  .strictObject({
    commitment: commitmentSchema.nullable().optional(),
    allocation: z
      .record(z.string().min(1).max(128), count)
      .nullable()
      .optional()
      .meta({ description: 'Committed calls allocated per agent id; with overage_basis "allocation", an agent\'s calls beyond its share are overage.' }),
    commitment_group: z.string().min(1).max(128).optional(),
  })
  .meta({ description: 'Per-subscription commercial terms.' });

export type SubscriptionTerms = z.output<typeof subscriptionTermsSchema>;

export const ratePlanObjectSchema = z.strictObject({
    tool_invocations: z.record(toolName, rate).optional().meta({ description: 'Price of one call per tool; "*" prices every tool not listed.' }),
    tool_aliases: z
      .record(toolName, toolName)
      .optional()
      .meta({ description: 'Old or alternative tool name -> the name it is priced as. A tool name may carry a version as name@version.' }),
    token_multipliers: z
      .strictObject({
        input_tokens: rate.optional(),
        output_tokens: rate.optional(),
        by_model: z
          .record(eventId('model name'), z.strictObject({ input_tokens: rate.optional(), output_tokens: rate.optional() }))
          .optional()
          .meta({
            description:
              "Token prices of the models named here, by the event's `model`; a price a model leaves out, and every model not named (or an event without a model), takes the plan's input_tokens / output_tokens.",
          }),
      })
      .optional()
      .meta({ description: 'Price of one input and one output token (the default), and per model (by_model).' }),
    tool_multipliers: z.record(toolName, multiplier).optional().meta({ description: 'Per-tool factor on token cost; "*" for tools not listed (default 1).' }),
    duration_buckets: z
      .array(durationBucketSchema)
      .optional()
      .meta({ description: 'Ascending by max_seconds; a call pays the rate of the first bucket its duration fits; the last bucket is open (max_seconds null).' }),
    mcp_servers: z
      .record(eventId('MCP server id'), z.strictObject({ tool_invocations: z.record(toolName, rate) }))
      .optional()
      .meta({
        description:
          "Per-call tool prices of the calls of one MCP server (the event's `mcp_server_id`), replacing the plan's tool_invocations for those calls; \"*\" prices the server's tools not listed; a tool the server table does not price keeps the plan's price.",
      }),
    error_rate_penalties: z
      .strictObject({ threshold, multiplier: penaltyMultiplier })
      .optional()
      .meta({ description: "When a session's share of failed calls exceeds threshold, its usage cost is multiplied by multiplier." }),
    volume_tiers: z.array(volumeTierSchema).optional().meta({ description: 'Tiers on the monthly count of calls, ascending by min_invocations, the first at 0.' }),
    volume_tier_mode: z
      .enum(['volume', 'graduated'])
      .optional()
      .meta({ description: 'volume (default): every call at the tier the month reaches, retroactively. graduated: each call at the tier of its ordinal.' }),
    base_session_fee: rate.optional().meta({ description: 'Fee per session started in the period.' }),
    included_tool_count: count.optional().meta({ description: 'The first calls of each session whose per-call tool price is included.' }),
    billing_mode: z.enum(['PAY_AS_YOU_GO', 'COMMITTED']).optional(),
    commitment: commitmentSchema.optional(),
    minimum_spend: rate.optional().meta({ description: 'Minimum invoice amount per period; a true-up line makes up the difference.' }),
  });

export type RatePlanPricing = z.output<typeof ratePlanObjectSchema>;
export type Commitment = z.output<typeof commitmentSchema>;

