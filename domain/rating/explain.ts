import { formatNano, formatScaled } from '../money.js';
import { countsAsCall, type EventRating } from './rate-event.js';
import { durationBucketIndex, priceOfKey, type CompiledPlan } from './compile.js';
import { jsonPath } from './plan.js';
import { bucketLabel, callRateRule, toolLabel } from './rate-period.js';
import type { EventType } from '../events.js';

/**
 * "Explain this charge": one rated event, dimension by dimension, with the plan path that priced
 * it. Pure: the caller reads the ledger row and compiles the plan version (with the
 * subscription's overrides) that priced it.
 */

export interface LedgeredCharge {
  eventType: EventType;
  /** The key rating priced the tool as (usage_ledger.priced_tool). */
  pricedTool: string;
  model?: string;
  inputTokens: number;
  outputTokens: number;
  durationMs: number;
  /** What the ledger holds, per dimension. */
  breakdown: EventRating['breakdown'];
}

interface ChargeDimension {
  dimension: keyof EventRating['breakdown'];
  description: string;
  /** The plan field(s) that priced the dimension, as JSON paths of the plan. */
  rule: string;
  quantity: string;
  unit_price: string;
  /** What the ledger charged (nano-units, exact). */
  amount_nano: bigint;
  amount: string;
  /** Whether quantity x unit_price under this plan gives the ledger's amount (false only if the plan was not the one that rated it). */
  matches_plan: boolean;
}

export interface ChargeExplanation {
  dimensions: ChargeDimension[];
  /** Rules of the plan applied on the invoice, per period, not per event: they may add to or take from this event's share. */
  period_rules: { rule: string; effect: string }[];
}

export function explainCharge(plan: CompiledPlan, charge: LedgeredCharge): ChargeExplanation {
  const dimensions: ChargeDimension[] = [];
  const add = (dimension: ChargeDimension['dimension'], description: string, rule: string, quantity: bigint, unitNano: bigint) => {
    const amountNano = charge.breakdown[dimension] ?? 0n;
    dimensions.push({
      dimension,
      description,
      rule,
      quantity: quantity.toString(),
      unit_price: formatNano(unitNano),
      amount_nano: amountNano,
      amount: formatNano(amountNano),
      matches_plan: quantity * unitNano === amountNano,
    });
  };
  if (!countsAsCall(charge.eventType)) {
    return { dimensions, period_rules: [] };
  }
  const price = priceOfKey(plan, charge.pricedTool);
  add('tool', `${toolLabel(plan, charge.pricedTool)}: 1 call x ${formatNano(price.callNano)}`, `calls x ${callRateRule(plan, charge.pricedTool)}`, 1n, price.callNano);

  const modelRates = charge.model === undefined ? undefined : price.modelTokenNano.get(charge.model);
  for (const direction of ['input_tokens', 'output_tokens'] as const) {
    const input = direction === 'input_tokens';
    const rate = modelRates ? (input ? modelRates.input : modelRates.output) : input ? price.inputTokenNano : price.outputTokenNano;
    const ownModelRate = modelRates && plan.modelTokenRates.get(charge.model!)?.[input ? 'ownInput' : 'ownOutput'];
    const ratePath = ownModelRate ? jsonPath(['token_multipliers', 'by_model', charge.model!, direction]) : jsonPath(['token_multipliers', direction]);
    const multiplier = price.ownMultiplier ? ` x ${jsonPath(['tool_multipliers', price.name])}` : '';
    const tokens = BigInt(input ? charge.inputTokens : charge.outputTokens);
    const of = `${modelRates ? ` of model ${charge.model}` : ''}${price.ownMultiplier ? ` (x ${formatScaled(price.multiplier, 9)} for ${price.name})` : ''}`;
    add(direction, `${input ? 'Input' : 'Output'} tokens${of}: ${tokens} x ${formatNano(rate)}`, `${direction} x ${ratePath}${multiplier}`, tokens, rate);
  }

  if (plan.durationBuckets.length > 0) {
    const index = durationBucketIndex(plan, charge.durationMs);
    const bucket = plan.durationBuckets[index];
    add('duration', `Call of ${formatScaled(BigInt(charge.durationMs), 3)} s, ${bucketLabel(plan, index)}: 1 x ${formatNano(bucket.rate)}`, `calls x ${jsonPath(['duration_buckets', index, 'rate'])}`, 1n, bucket.rate);
  } else {
    add('duration', 'No duration pricing in the plan', 'none', 0n, 0n);
  }
  return { dimensions, period_rules: periodRules(plan) };
}

function periodRules(plan: CompiledPlan): ChargeExplanation['period_rules'] {
  const rules: ChargeExplanation['period_rules'] = [];
  if (plan.includedCalls > 0n) rules.push({ rule: jsonPath(['included_tool_count']), effect: `the per-call tool price of the first ${plan.includedCalls} calls of each session is included in the session fee` });
  if (plan.tiers) rules.push({ rule: jsonPath(['volume_tiers']), effect: `${plan.tiers.mode} volume tiers on the month's calls change the per-call price or discount the usage` });
  if (plan.penalty) rules.push({ rule: jsonPath(['error_rate_penalties']), effect: "a session over the failed-call threshold has its usage multiplied" });
  if (plan.hasSessionFee) rules.push({ rule: jsonPath(['base_session_fee']), effect: 'each session started in the period pays the fee' });
  if (plan.isCommitted) rules.push({ rule: jsonPath(['commitment']), effect: 'calls within the commitment are covered by the committed price' });
  if (plan.minimumSpend !== undefined) rules.push({ rule: jsonPath(['minimum_spend']), effect: 'a true-up line makes up a period below the minimum' });
  return rules;
}
