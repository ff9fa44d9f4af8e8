import { NANO_DECIMALS, formatNano, formatScaled, isWholeProduct, parseNano, parseScaled } from '../money.js';
import type { RatePlanPricing } from './plan-schema.js';

/**
 * A validated plan's amounts as integers, read once: rates in nano-units, multipliers and
 * discount fractions scaled by 10^9, duration bounds in milliseconds.
 */
export const FACTOR_DECIMALS = 9;
export const FACTOR_ONE = 10n ** BigInt(FACTOR_DECIMALS);
const PERCENT_DECIMALS = 7; // a percentage with 7 decimals is a fraction with 9
const SECONDS_DECIMALS = 3; // milliseconds

type TierMode = 'volume' | 'graduated';

interface TierNumbers {
  mode: TierMode;
  kind: 'rate' | 'discount';
  /** Calls of the period before each tier starts. */
  starts: bigint[];
  /** Per-call rate of each tier (kind 'rate'). */
  rates: bigint[];
  /** Discount of each tier as a fraction scaled by 10^9 (kind 'discount'); 10% is 100_000_000. */
  discounts: bigint[];
}

export interface CommitmentNumbers {
  calls: bigint;
  price: bigint;
  basis: 'allocation' | 'pool';
}

interface ModelTokenRates {
  input: bigint;
  output: bigint;
  /** Whether the model sets each rate itself (the invoice rule names its own path then). */
  ownInput: boolean;
  ownOutput: boolean;
}

export interface PlanNumbers {
  toolRates: Map<string, bigint>;
  toolAliases: Map<string, string>;
  inputTokenRate: bigint;
  outputTokenRate: bigint;
  /** Token rates of the models the plan names (a rate a model leaves out is the default one). */
  modelTokenRates: Map<string, ModelTokenRates>;
  /** Per MCP server: its own per-call tool prices. */
  serverToolRates: Map<string, Map<string, bigint>>;
  toolMultipliers: Map<string, bigint>;
  durationBuckets: { maxMs: number; rate: bigint }[];
  penalty?: { threshold: bigint; multiplier: bigint };
  tiers?: TierNumbers;
  sessionFee: bigint;
  includedCalls: bigint;
  hasSessionFee: boolean;
  commitment?: CommitmentNumbers;
  minimumSpend?: bigint;
}

export function readPlanNumbers(pricing: RatePlanPricing): PlanNumbers {
  const tiers = pricing.volume_tiers;
  return {
    toolRates: new Map(Object.entries(pricing.tool_invocations ?? {}).map(([tool, rate]) => [tool, parseNano(rate)])),
    toolAliases: new Map(Object.entries(pricing.tool_aliases ?? {})),
    inputTokenRate: parseNano(pricing.token_multipliers?.input_tokens ?? 0),
    outputTokenRate: parseNano(pricing.token_multipliers?.output_tokens ?? 0),
    modelTokenRates: new Map(
      Object.entries(pricing.token_multipliers?.by_model ?? {}).map(([model, rates]) => [
        model,
        {
          input: parseNano(rates.input_tokens ?? pricing.token_multipliers?.input_tokens ?? 0),
          output: parseNano(rates.output_tokens ?? pricing.token_multipliers?.output_tokens ?? 0),
          ownInput: rates.input_tokens !== undefined,
          ownOutput: rates.output_tokens !== undefined,
        },
      ]),
    ),
    serverToolRates: new Map(
      Object.entries(pricing.mcp_servers ?? {}).map(([server, prices]) => [
        server,
        new Map(Object.entries(prices.tool_invocations).map(([tool, rate]) => [tool, parseNano(rate)])),
      ]),
    ),
    toolMultipliers: new Map(Object.entries(pricing.tool_multipliers ?? {}).map(([tool, m]) => [tool, parseScaled(m, FACTOR_DECIMALS)])),
    durationBuckets: (pricing.duration_buckets ?? []).map((bucket) => ({
      maxMs: bucket.max_seconds == null ? Infinity : Number(parseScaled(bucket.max_seconds, SECONDS_DECIMALS)),
      rate: parseNano(bucket.rate),
    })),
    penalty: pricing.error_rate_penalties && {
      threshold: parseScaled(pricing.error_rate_penalties.threshold, FACTOR_DECIMALS),
      multiplier: parseScaled(pricing.error_rate_penalties.multiplier, FACTOR_DECIMALS),
    },
    tiers:
      tiers && tiers.length > 0
        ? {
            mode: pricing.volume_tier_mode ?? 'volume',
            kind: tiers[0].rate !== undefined ? 'rate' : 'discount',
            starts: tiers.map((tier) => BigInt(tier.min_invocations)),
            rates: tiers.map((tier) => parseNano(tier.rate ?? 0)),
            discounts: tiers.map((tier) => parseScaled(tier.discount_percent ?? 0, PERCENT_DECIMALS)),
          }
        : undefined,
    sessionFee: parseNano(pricing.base_session_fee ?? 0),
    includedCalls: BigInt(pricing.included_tool_count ?? 0),
    hasSessionFee: pricing.base_session_fee !== undefined,
    commitment: pricing.commitment && {
      calls: BigInt(pricing.commitment.committed_amount),
      price: parseNano(pricing.commitment.committed_price),
      basis: pricing.commitment.overage_basis ?? 'allocation',
    },
    minimumSpend: pricing.minimum_spend === undefined ? undefined : parseNano(pricing.minimum_spend),
  };
}

const DEFAULT_MULTIPLIER_KEY = '*';

/** The factor on token cost of tools without their own multiplier. */
export function defaultMultiplier(numbers: PlanNumbers): bigint {
  return numbers.toolMultipliers.get(DEFAULT_MULTIPLIER_KEY) ?? FACTOR_ONE;
}

export interface PathProblem {
  path: (string | number)[];
  message: string;
}

interface NamedRate {
  nano: bigint;
  source: string;
}

/**
 * Rating is exact in nano-units and never rounds per event, so every product of a per-call
 * amount and a factor the plan applies to it must be a whole number of nano-units. A plan that
 * breaks this is refused here, at validation, naming the factor and the rate it cannot multiply.
 */
export function exactnessProblems(numbers: PlanNumbers): PathProblem[] {
  const problems: PathProblem[] = [];
  const tokenRates: NamedRate[] = [
    { nano: numbers.inputTokenRate, source: 'token_multipliers.input_tokens' },
    { nano: numbers.outputTokenRate, source: 'token_multipliers.output_tokens' },
    ...[...numbers.modelTokenRates.entries()].flatMap(([model, rates]) => [
      { nano: rates.input, source: `token_multipliers.by_model["${model}"].input_tokens` },
      { nano: rates.output, source: `token_multipliers.by_model["${model}"].output_tokens` },
    ]),
  ].filter((rate) => rate.nano !== 0n);

  const effectiveTokenRates: NamedRate[] = [];
  const multipliers: [string | undefined, bigint][] = [...numbers.toolMultipliers.entries()];
  if (!numbers.toolMultipliers.has(DEFAULT_MULTIPLIER_KEY)) multipliers.push([undefined, FACTOR_ONE]);
  for (const [tool, multiplier] of multipliers) {
    for (const rate of tokenRates) {
      if (tool !== undefined && !isWholeProduct(rate.nano, multiplier, FACTOR_DECIMALS)) {
        problems.push({ path: ['tool_multipliers', tool], message: inexact(multiplier, FACTOR_DECIMALS, rate) });
        continue;
      }
      const nano = (rate.nano * multiplier) / FACTOR_ONE;
      effectiveTokenRates.push({ nano, source: tool === undefined ? rate.source : `${rate.source} x tool_multipliers["${tool}"]` });
    }
  }

  const callRates: NamedRate[] = [
    ...[...numbers.toolRates.entries()].map(([tool, nano]) => ({ nano, source: `tool_invocations["${tool}"]` })),
    ...numbers.durationBuckets.map((bucket, index) => ({ nano: bucket.rate, source: `duration_buckets[${index}].rate` })),
    ...[...numbers.serverToolRates.entries()].flatMap(([server, rates]) =>
      [...rates.entries()].map(([tool, nano]) => ({ nano, source: `mcp_servers["${server}"].tool_invocations["${tool}"]` })),
    ),
  ];
  if (numbers.tiers?.kind === 'rate') {
    for (const [index, nano] of numbers.tiers.rates.entries()) callRates.push({ nano, source: `volume_tiers[${index}].rate` });
  }
  const perCallAmounts = [...callRates, ...effectiveTokenRates].filter((rate) => rate.nano !== 0n);

  const firstInexact = (factor: bigint, decimals = FACTOR_DECIMALS) => perCallAmounts.find((rate) => !isWholeProduct(rate.nano, factor, decimals));
  const penalty = numbers.penalty?.multiplier;
  if (penalty !== undefined) {
    const rate = firstInexact(penalty);
    if (rate) problems.push({ path: ['error_rate_penalties', 'multiplier'], message: inexact(penalty, FACTOR_DECIMALS, rate) });
  }
  if (numbers.tiers?.kind === 'discount') {
    numbers.tiers.discounts.forEach((discount, index) => {
      const path = ['volume_tiers', index, 'discount_percent'];
      const kept = FACTOR_ONE - discount;
      const rate = firstInexact(kept);
      if (rate) {
        problems.push({ path, message: inexact(kept, FACTOR_DECIMALS, rate, 'after the discount') });
        return;
      }
      if (penalty === undefined) return;
      const combined = firstInexact(kept * penalty, FACTOR_DECIMALS * 2);
      if (combined) {
        problems.push({ path, message: inexact(kept * penalty, FACTOR_DECIMALS * 2, combined, 'after the discount and the error multiplier') });
      }
    });
  }
  return problems;
}

function inexact(factor: bigint, factorDecimals: number, rate: NamedRate, what = ''): string {
  const product = formatScaled(rate.nano * factor, NANO_DECIMALS + factorDecimals);
  return (
    `${formatNano(rate.nano)} (${rate.source}) x ${formatScaled(factor, factorDecimals)}${what ? ` ${what}` : ''} = ${product}, ` +
    'which is not a whole number of nano-units (9 decimal places); rating is exact and never rounds a call, so choose a factor or rate whose product has at most 9 decimals'
  );
}
