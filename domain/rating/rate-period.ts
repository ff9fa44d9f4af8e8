import { formatNano, formatScaled, multiplyExact, parseNano, roundToMinorUnit } from '../money.js';
import { DEFAULT_TOOL_KEY, type SubscriptionTerms } from './plan-schema.js';
import { jsonPath } from './plan.js';
import { maxOf, minOf } from './bigint.js';
import { priceOfKey, type CompiledPlan, type ToolPrice } from './compile.js';
import { FACTOR_DECIMALS, FACTOR_ONE, type CommitmentNumbers } from './plan-numbers.js';
import { MODEL_KEY_SEPARATOR, bandOfOrdinal, mergeRows, tierAdjustment, type UsageRow } from './usage-rows.js';

/**
 * Period rating: from one customer's stored usage rows of one billing period to its invoice.
 *
 * The steps, in this order (each line carries its step number):
 *   1 usage          per event, summed: calls x tool rate, tokens x token rate x tool multiplier,
 *                    calls x duration bucket rate. Equal to the sum of the events' costs.
 *   2 included       minus the per-call tool price of the first included_tool_count calls of each session.
 *   3 volume tiers   volume: the tier the month's call count reaches applies to every billable call,
 *                    retroactively; graduated: each call at the tier of its ordinal. A rate tier replaces
 *                    the per-call tool price, a discount tier takes its percentage off the billable usage
 *                    (tool + tokens + duration).
 *   4 error penalty  sessions whose failed share exceeds the threshold: their usage after steps 2-3 x (multiplier - 1).
 *                    Per call this is the article's (tool + tokens + duration) x error multiplier x volume
 *                    discount; the product does not depend on which factor is applied first.
 *   5 session fees   sessions started in the period x base_session_fee.
 *   6 commitment     per commitment group: the committed price (split by allocation), minus the overage rate
 *                    for each billable call the commitment covers. Calls beyond it stay billed at the overage
 *                    rate from step 1. A penalty surcharge is not covered.
 *   7 minimum spend  if the group's rounded lines add up to less than the minimum, a true-up line adds the rest.
 *
 * Rounding: every amount above is exact in nano-units. Each line is then rounded once to the
 * currency's minor unit, half away from zero; subtotal and total are sums of rounded lines, so
 * the lines on the invoice add up to its total. Where per-line rounding would take a total whose
 * exact amount is zero or more below zero, the largest credit line gives the difference back.
 */

const ROUNDING_RULE =
  'each line rounded to the minor unit, half away from zero (a credit line gives back what rounding added where it would take the total below zero); totals are sums of rounded lines';

const STEPS = {
  usage: 1,
  included: 2,
  volumeTiers: 3,
  errorPenalty: 4,
  sessionFees: 5,
  commitment: 6,
  minimumSpend: 7,
} as const;

type LineCode =
  | 'tool'
  | 'input_tokens'
  | 'output_tokens'
  | 'duration'
  | 'included_calls'
  | 'volume_tier'
  | 'error_penalty'
  | 'session_fee'
  | 'commitment'
  | 'commitment_covered'
  | 'minimum_true_up';

export interface InvoiceLine {
  step: number;
  code: LineCode;
  subscription_id?: string;
  commitment_group?: string;
  description: string;
  /** The plan or terms field that produced the line, and how. */
  rule: string;
  quantity: string;
  unit_price: string;
  /** Exact, before rounding. */
  amount_nano: bigint;
  /** Rounded to the minor unit, as a decimal string. */
  amount: string;
}

export interface Invoice {
  currency: string;
  minor_unit_digits: number;
  rounding: string;
  lines: InvoiceLine[];
  /** Sum of the rounded usage lines (step 1), before any period rule. */
  subtotal: string;
  total: string;
  /** Exact sums of the lines' amount_nano, and the same as decimal strings. */
  subtotal_nano: bigint;
  total_nano: bigint;
  subtotal_exact: string;
  total_exact: string;
}

export interface SubscriptionPeriod {
  subscriptionId: string;
  plan: CompiledPlan;
  /** The stored rows of this subscription and period, in any order, merged or not. */
  rows: Iterable<UsageRow>;
  terms?: SubscriptionTerms;
  /** Calls of the period not in `rows` (a quote's month-to-date): they count toward tiers and use the commitment first. */
  priorCalls?: bigint;
}

export class RatingError extends Error {}

type Line = Omit<InvoiceLine, 'amount'>;

interface SubscriptionResult {
  subscription: SubscriptionPeriod;
  lines: Line[];
  billableCalls: bigint;
  agentBillableCalls: Map<string, bigint>;
}

export function ratePeriod(subscriptions: readonly SubscriptionPeriod[]): Invoice {
  if (subscriptions.length === 0) throw new RatingError('ratePeriod needs at least one subscription');
  const { currency, minorUnitDigits } = subscriptions[0].plan;
  for (const subscription of subscriptions) {
    if (subscription.plan.currency !== currency) {
      throw new RatingError(`subscriptions of one invoice share a currency: ${subscription.subscriptionId} is in ${subscription.plan.currency}, not ${currency}`);
    }
  }
  const sorted = [...subscriptions].sort((a, b) => compareText(a.subscriptionId, b.subscriptionId));
  const groups = new Map<string, SubscriptionResult[]>();
  for (const subscription of sorted) {
    const group = commitmentGroupOf(subscription);
    const members = groups.get(group) ?? [];
    members.push(rateSubscription(subscription));
    groups.set(group, members);
  }

  // Each line's rounded amount (in nano-units, on the minor-unit grid); `amount` shows it.
  const rounded = new Map<InvoiceLine, bigint>();
  const round = (line: Line): InvoiceLine => {
    const value = roundToMinorUnit(line.amount_nano, minorUnitDigits);
    const shown = { ...line, amount: formatNano(value, minorUnitDigits) };
    rounded.set(shown, value);
    return shown;
  };
  const roundedOf = (line: InvoiceLine) => rounded.get(line) ?? roundToMinorUnit(line.amount_nano, minorUnitDigits);
  const sumRounded = (of: InvoiceLine[]) => of.reduce((sum, line) => sum + roundedOf(line), 0n);
  const lines: InvoiceLine[] = [];
  for (const [group, members] of groups) {
    const groupLines = [...members.flatMap((member) => member.lines), ...commitmentLines(group, members)].map(round);
    keepDiscountsWithinCharges(groupLines, roundedOf, (line, value) => {
      rounded.set(line, value);
      line.amount = formatNano(value, minorUnitDigits);
    });
    const trueUp = minimumTrueUp(group, members, sumRounded(groupLines), minorUnitDigits);
    lines.push(...groupLines, ...(trueUp ? [round(trueUp)] : []));
  }

  const usage = lines.filter((line) => line.step === STEPS.usage);
  const subtotalNano = usage.reduce((sum, line) => sum + line.amount_nano, 0n);
  const totalNano = lines.reduce((sum, line) => sum + line.amount_nano, 0n);
  return {
    currency,
    minor_unit_digits: minorUnitDigits,
    rounding: ROUNDING_RULE,
    lines,
    subtotal: formatNano(sumRounded(usage), minorUnitDigits),
    total: formatNano(sumRounded(lines), minorUnitDigits),
    subtotal_nano: subtotalNano,
    total_nano: totalNano,
    subtotal_exact: formatNano(subtotalNano),
    total_exact: formatNano(totalNano),
  };
}

/** Subscriptions sharing a commitment and a minimum spend: by default, the COMMITTED ones of one rate plan. */
function commitmentGroupOf({ terms, plan, subscriptionId }: SubscriptionPeriod): string {
  if (terms?.commitment_group) return terms.commitment_group;
  return plan.isCommitted && plan.planId ? `rate plan ${plan.planId}` : subscriptionId;
}

function rateSubscription(subscription: SubscriptionPeriod): SubscriptionResult {
  const { plan, subscriptionId } = subscription;
  const merged = mergeRows(subscription.rows);
  const rowsOf = (kind: Parameters<typeof merged.get>[0]) => [...(merged.get(kind) ?? new Map<string, Record<string, bigint>>()).entries()];
  const counter = (counters: Record<string, bigint>, name: string) => counters[name] ?? 0n;
  const lines: Line[] = [];
  const add = (line: Omit<Line, 'subscription_id'>) => {
    if (line.amount_nano !== 0n) lines.push({ ...line, subscription_id: subscriptionId });
  };

  // Step 1: usage.
  const tools = rowsOf('tool')
    .map(([key, counters]) => ({ key, counters, price: priceOfKey(plan, key) }))
    .sort((a, b) => compareText(a.key, b.key));
  let usageNano = 0n;
  let totalCalls = 0n;
  let includedCalls = 0n;
  let includedNano = 0n;
  for (const { key, counters, price } of tools) {
    const calls = counter(counters, 'calls');
    totalCalls += calls;
    usageNano += calls * price.callNano;
    add({
      step: STEPS.usage,
      code: 'tool',
      description: `${toolLabel(plan, key)}: ${counted(calls, 'call')} x ${formatNano(price.callNano)}`,
      rule: `calls x ${callRateRule(plan, key)}`,
      quantity: calls.toString(),
      unit_price: formatNano(price.callNano),
      amount_nano: calls * price.callNano,
    });
    includedCalls += counter(counters, 'included_calls');
    includedNano += counter(counters, 'included_calls') * price.callNano;
  }
  for (const direction of ['input_tokens', 'output_tokens'] as const) {
    for (const group of tokenGroups(tools, direction)) {
      usageNano += group.tokens * group.rate;
      add({
        step: STEPS.usage,
        code: direction,
        description: `${direction === 'input_tokens' ? 'Input' : 'Output'} tokens${group.tool ? ` of ${toolLabel(plan, group.tool)}` : ''}: ${count(group.tokens)} x ${formatNano(group.rate)}`,
        rule: `${direction} x ${jsonPath(['token_multipliers', direction])}${group.multiplierOf ? ` x ${jsonPath(['tool_multipliers', group.multiplierOf])}` : ''}`,
        quantity: group.tokens.toString(),
        unit_price: formatNano(group.rate),
        amount_nano: group.tokens * group.rate,
      });
    }
    for (const group of modelTokenGroups(plan, rowsOf('model'), direction)) {
      usageNano += group.tokens * group.rate;
      const ratePath = plan.modelTokenRates.get(group.model)?.[direction === 'input_tokens' ? 'ownInput' : 'ownOutput']
        ? jsonPath(['token_multipliers', 'by_model', group.model, direction])
        : jsonPath(['token_multipliers', direction]);
      add({
        step: STEPS.usage,
        code: direction,
        description: `${direction === 'input_tokens' ? 'Input' : 'Output'} tokens of model ${group.model}${group.tool ? ` on ${toolLabel(plan, group.tool)}` : ''}: ${count(group.tokens)} x ${formatNano(group.rate)}`,
        rule: `${direction} x ${ratePath}${group.multiplierOf ? ` x ${jsonPath(['tool_multipliers', group.multiplierOf])}` : ''}`,
        quantity: group.tokens.toString(),
        unit_price: formatNano(group.rate),
        amount_nano: group.tokens * group.rate,
      });
    }
  }
  for (const [key, counters] of rowsOf('duration').sort((a, b) => Number(a[0]) - Number(b[0]))) {
    const index = Number(key);
    const bucket = plan.durationBuckets[index];
    if (!bucket) throw new RatingError(`usage row duration/${key} names no bucket of the plan`);
    const calls = counter(counters, 'calls');
    usageNano += calls * bucket.rate;
    add({
      step: STEPS.usage,
      code: 'duration',
      description: `Calls ${bucketLabel(plan, index)}: ${count(calls)} x ${formatNano(bucket.rate)}`,
      rule: `calls x ${jsonPath(['duration_buckets', index, 'rate'])}`,
      quantity: calls.toString(),
      unit_price: formatNano(bucket.rate),
      amount_nano: calls * bucket.rate,
    });
  }

  // Step 2: calls included in session fees.
  for (const { key, counters, price } of tools) {
    const included = counter(counters, 'included_calls');
    add({
      step: STEPS.included,
      code: 'included_calls',
      description: `${toolLabel(plan, key)}: ${counted(included, 'call')} included in session fees`,
      rule: `first ${jsonPath(['included_tool_count'])} calls of each session x -${callRateRule(plan, key)}`,
      quantity: included.toString(),
      unit_price: formatNano(-price.callNano),
      amount_nano: -included * price.callNano,
    });
  }
  const billableCalls = totalCalls - includedCalls;
  const billableNano = usageNano - includedNano;

  // Step 3: volume tiers.
  const tiers = plan.tiers;
  const priorCalls = subscription.priorCalls ?? 0n;
  const reachedTier = tiers ? bandOfOrdinal(tiers.starts, priorCalls + totalCalls) : 0;
  if (tiers?.mode === 'graduated') {
    for (const [key, counters] of rowsOf('band').sort((a, b) => Number(a[0]) - Number(b[0]))) {
      const band = Number(key);
      if (!(band >= 0 && band < tiers.starts.length)) throw new RatingError(`usage row band/${key} names no tier of the plan`);
      add(tierLine(plan, band, counter(counters, 'billable_calls'), counter(counters, 'billable_nano'), 'graduated'));
    }
  } else if (tiers) {
    add(tierLine(plan, reachedTier, billableCalls, billableNano, 'volume'));
  }

  // Step 4: error-rate penalty on the sessions over the threshold.
  const sessions = rowsOf('session');
  const penalty = plan.penalty;
  if (penalty) {
    let penalizedSessions = 0n;
    let base = 0n;
    for (const [, counters] of sessions) {
      const calls = counter(counters, 'calls');
      if (counter(counters, 'failed_calls') * FACTOR_ONE <= penalty.threshold * calls) continue;
      penalizedSessions++;
      const sessionNano = counter(counters, 'billable_nano');
      base += tiers?.mode === 'volume' ? sessionNano + tierAdjustment(plan, reachedTier, counter(counters, 'billable_calls'), sessionNano) : sessionNano;
    }
    const surcharge = penalty.multiplier - FACTOR_ONE;
    add({
      step: STEPS.errorPenalty,
      code: 'error_penalty',
      description: `Error-rate penalty: ${count(penalizedSessions)} of ${counted(BigInt(sessions.length), 'session')} had more than ${formatShare(penalty.threshold)} failed calls; their usage of ${formatNano(base)} x (${formatScaled(penalty.multiplier, FACTOR_DECIMALS)} - 1)`,
      rule: `usage of sessions with failed/calls > ${jsonPath(['error_rate_penalties', 'threshold'])} x (${jsonPath(['error_rate_penalties', 'multiplier'])} - 1)`,
      quantity: formatNano(base),
      unit_price: formatScaled(surcharge, FACTOR_DECIMALS),
      amount_nano: multiplyExact(base, surcharge, FACTOR_DECIMALS),
    });
  }

  // Step 5: session fees.
  if (plan.hasSessionFee) {
    const started = sessions.reduce((sum, [, counters]) => sum + counter(counters, 'started'), 0n);
    add({
      step: STEPS.sessionFees,
      code: 'session_fee',
      description: `Session fees: ${counted(started, 'session')} x ${formatNano(plan.sessionFee)}${plan.includedCalls > 0n ? ` (each includes ${count(plan.includedCalls)} calls)` : ''}`,
      rule: `sessions started x ${jsonPath(['base_session_fee'])}`,
      quantity: started.toString(),
      unit_price: formatNano(plan.sessionFee),
      amount_nano: started * plan.sessionFee,
    });
  }

  const agentBillableCalls = new Map(rowsOf('agent').map(([agent, counters]) => [agent, counter(counters, 'billable_calls')]));
  return { subscription, lines, billableCalls, agentBillableCalls };
}

function tierLine(plan: CompiledPlan, band: number, billableCalls: bigint, billableNano: bigint, mode: 'volume' | 'graduated'): Omit<Line, 'subscription_id'> {
  const tiers = plan.tiers!;
  const first = tiers.starts[band] + 1n;
  const range = band + 1 < tiers.starts.length ? `calls ${count(first)}-${count(tiers.starts[band + 1])}` : `calls from ${count(first)}`;
  const where = mode === 'volume' ? `Volume tier ${band + 1} reached (${range} of the month), applied to every billable call` : `Graduated tier ${band + 1} (${range} of the month)`;
  const amount = tierAdjustment(plan, band, billableCalls, billableNano);
  if (tiers.kind === 'rate') {
    const delta = tiers.rates[band] - tiers.rates[0];
    return {
      step: STEPS.volumeTiers,
      code: 'volume_tier',
      description: `${where}: ${counted(billableCalls, 'call')} at ${formatNano(tiers.rates[band])} instead of ${formatNano(tiers.rates[0])}`,
      rule: `billable calls x (${jsonPath(['volume_tiers', band, 'rate'])} - ${jsonPath(['volume_tiers', 0, 'rate'])}) [${mode}]`,
      quantity: billableCalls.toString(),
      unit_price: formatNano(delta),
      amount_nano: amount,
    };
  }
  const discount = tiers.discounts[band];
  return {
    step: STEPS.volumeTiers,
    code: 'volume_tier',
    description: `${where}: ${formatScaled(discount * 100n, FACTOR_DECIMALS)}% off billable usage of ${formatNano(billableNano)}`,
    rule: `billable usage x -${jsonPath(['volume_tiers', band, 'discount_percent'])} [${mode}]`,
    quantity: formatNano(billableNano),
    unit_price: formatScaled(-discount, FACTOR_DECIMALS),
    amount_nano: amount,
  };
}

interface TokenGroup {
  tool?: string;
  /** The tool_multipliers key that scales the rate, when the tool has its own. */
  multiplierOf?: string;
  tokens: bigint;
  rate: bigint;
}

/**
 * Tokens of the models token_multipliers.by_model prices, per model: one line for the tools
 * without a multiplier of their own, one per tool with one. Sorted by model.
 */
function modelTokenGroups(plan: CompiledPlan, rows: [string, Record<string, bigint>][], direction: 'input_tokens' | 'output_tokens'): (TokenGroup & { model: string })[] {
  const byModel = new Map<string, { key: string; counters: Record<string, bigint>; price: ToolPrice }[]>();
  for (const [rowKey, counters] of rows) {
    const cut = rowKey.indexOf(MODEL_KEY_SEPARATOR);
    const model = rowKey.slice(0, cut);
    const key = rowKey.slice(cut + 1);
    if (cut <= 0 || !plan.modelTokenRates.has(model)) throw new RatingError(`usage row model/${rowKey} names no model of the plan`);
    const tools = byModel.get(model) ?? [];
    tools.push({ key, counters, price: priceOfKey(plan, key) });
    byModel.set(model, tools);
  }
  const groups: (TokenGroup & { model: string })[] = [];
  for (const model of [...byModel.keys()].sort(compareText)) {
    const tools = byModel.get(model)!.sort((a, b) => compareText(a.key, b.key));
    const rateOf = (price: ToolPrice) => {
      const rates = price.modelTokenNano.get(model)!;
      return direction === 'input_tokens' ? rates.input : rates.output;
    };
    groups.push(...tokenGroups(tools, direction, rateOf).map((group) => ({ ...group, model })));
  }
  return groups;
}

function tokenGroups(
  tools: { key: string; counters: Record<string, bigint>; price: ToolPrice }[],
  direction: 'input_tokens' | 'output_tokens',
  rateOf = (price: ToolPrice) => (direction === 'input_tokens' ? price.inputTokenNano : price.outputTokenNano),
): TokenGroup[] {
  const groups: TokenGroup[] = [];
  let shared: TokenGroup | undefined;
  for (const { key, counters, price } of tools) {
    const tokens = counters[direction] ?? 0n;
    if (tokens === 0n) continue;
    if (price.ownMultiplier) {
      groups.push({ tool: key, multiplierOf: price.name, tokens, rate: rateOf(price) });
    } else {
      shared ??= { tokens: 0n, rate: rateOf(price) };
      shared.tokens += tokens;
    }
  }
  return shared ? [shared, ...groups] : groups;
}

interface GroupCommitment {
  terms: CommitmentNumbers;
  overageRate: bigint;
  allocations: { agent: string; calls: bigint }[];
}

function groupCommitment(group: string, members: SubscriptionResult[]): GroupCommitment | undefined {
  const committed = members.filter((member) => member.subscription.plan.isCommitted);
  if (committed.length === 0) {
    const stray = members.find((member) => member.subscription.terms?.commitment || Object.keys(member.subscription.terms?.allocation ?? {}).length > 0);
    if (stray) throw new RatingError(`subscription ${stray.subscription.subscriptionId} has commitment terms but its plan is not COMMITTED`);
    return undefined;
  }
  if (committed.length !== members.length) throw new RatingError(`commitment group ${group} mixes COMMITTED and other plans`);
  const described = committed.map((member) => {
    const { plan, terms } = member.subscription;
    const override = terms?.commitment;
    const numbers: CommitmentNumbers = override
      ? { calls: BigInt(override.committed_amount), price: parseNano(override.committed_price), basis: override.overage_basis ?? 'allocation' }
      : plan.commitment!;
    return { numbers, overageRate: plan.defaultToolPrice.callNano, id: member.subscription.subscriptionId };
  });
  const [first] = described;
  for (const other of described) {
    const same =
      other.numbers.calls === first.numbers.calls && other.numbers.price === first.numbers.price && other.numbers.basis === first.numbers.basis && other.overageRate === first.overageRate;
    if (!same) throw new RatingError(`subscriptions ${first.id} and ${other.id} share commitment group ${group} but not its commitment or overage rate`);
  }
  const allocations = committed.flatMap((member) => Object.entries(member.subscription.terms?.allocation ?? {}).map(([agent, calls]) => ({ agent, calls: BigInt(calls) })));
  allocations.sort((a, b) => compareText(a.agent, b.agent));
  for (let index = 1; index < allocations.length; index++) {
    if (allocations[index].agent === allocations[index - 1].agent) throw new RatingError(`agent ${allocations[index].agent} has two allocations in commitment group ${group}`);
  }
  const allocatedCalls = allocations.reduce((sum, allocation) => sum + allocation.calls, 0n);
  if (allocatedCalls > first.numbers.calls) {
    throw new RatingError(`allocations of commitment group ${group} give out ${count(allocatedCalls)} calls, more than the ${count(first.numbers.calls)} committed`);
  }
  return { terms: first.numbers, overageRate: first.overageRate, allocations };
}

function commitmentLines(group: string, members: SubscriptionResult[]): Line[] {
  const commitment = groupCommitment(group, members);
  if (!commitment) return [];
  const { terms, overageRate, allocations } = commitment;
  const priorCalls = members.reduce((sum, member) => sum + (member.subscription.priorCalls ?? 0n), 0n);
  if (priorCalls > 0n && allocations.length > 0) throw new RatingError('calls outside the usage rows cannot be attributed to agent allocations');
  const lines: Line[] = [];
  const line = (code: 'commitment' | 'commitment_covered', description: string, rule: string, quantity: bigint, unitPrice: bigint, amount: bigint) =>
    lines.push({ step: STEPS.commitment, code, commitment_group: group, description, rule, quantity: quantity.toString(), unit_price: formatNano(unitPrice), amount_nano: amount });

  const agentCalls = new Map<string, bigint>();
  let billableCalls = 0n;
  for (const member of members) {
    billableCalls += member.billableCalls;
    for (const [agent, calls] of member.agentBillableCalls) agentCalls.set(agent, (agentCalls.get(agent) ?? 0n) + calls);
  }
  const covered = (calls: bigint) => -calls * overageRate;
  const coveredRule = `covered calls x -${jsonPath(['tool_invocations', DEFAULT_TOOL_KEY])}`;

  const allocatedCalls = allocations.reduce((sum, allocation) => sum + allocation.calls, 0n);
  const shares = allocations.map((allocation) => `${allocation.agent} ${count(allocation.calls)}`).join(', ');
  line(
    'commitment',
    `Commitment: ${count(terms.calls)} calls per period${shares ? ` (allocated: ${shares})` : ''}`,
    jsonPath(['commitment', 'committed_price']),
    1n,
    terms.price,
    terms.price,
  );

  if (terms.basis === 'pool' || allocations.length === 0) {
    const available = maxOf(terms.calls - priorCalls, 0n);
    const coveredCalls = minOf(billableCalls, available);
    line(
      'commitment_covered',
      `Calls covered by the commitment: ${count(coveredCalls)} of ${count(billableCalls)} billable calls${priorCalls > 0n ? ` (${count(priorCalls)} earlier calls used it first)` : ''}; the rest are overage at ${formatNano(overageRate)}`,
      `min(billable calls, ${jsonPath(['commitment', 'committed_amount'])}) x -${jsonPath(['tool_invocations', DEFAULT_TOOL_KEY])}`,
      coveredCalls,
      -overageRate,
      covered(coveredCalls),
    );
    return lines;
  }
  let allocatedAgentsCalls = 0n;
  for (const allocation of allocations) {
    const used = agentCalls.get(allocation.agent) ?? 0n;
    allocatedAgentsCalls += used;
    const coveredCalls = minOf(used, allocation.calls);
    line(
      'commitment_covered',
      `Calls of agent ${allocation.agent} covered by its allocation: ${count(coveredCalls)} of ${count(used)}; overage ${count(used - coveredCalls)} at ${formatNano(overageRate)}`,
      coveredRule,
      coveredCalls,
      -overageRate,
      covered(coveredCalls),
    );
  }
  const otherCalls = billableCalls - allocatedAgentsCalls;
  const coveredOther = minOf(otherCalls, terms.calls - allocatedCalls);
  if (otherCalls > 0n) {
    line(
      'commitment_covered',
      `Calls of other agents covered by the unallocated commitment: ${count(coveredOther)} of ${count(otherCalls)}; overage ${count(otherCalls - coveredOther)} at ${formatNano(overageRate)}`,
      coveredRule,
      coveredOther,
      -overageRate,
      covered(coveredOther),
    );
  }
  return lines.filter((entry) => entry.amount_nano !== 0n || entry.code === 'commitment');
}

/**
 * Rounding each line on its own can make lines whose exact sum is zero or more add up to less
 * than zero (a 100% discount of 4,053.92618 rounds to -4,053.93 while the lines it discounts
 * round to 4,053.92): then the largest credit line gives back what rounding added, so that a
 * discount never takes the rounded total below zero. Its exact amount is unchanged.
 */
function keepDiscountsWithinCharges(lines: InvoiceLine[], roundedOf: (line: InvoiceLine) => bigint, setRounded: (line: InvoiceLine, value: bigint) => void): void {
  const exact = lines.reduce((sum, line) => sum + line.amount_nano, 0n);
  const total = lines.reduce((sum, line) => sum + roundedOf(line), 0n);
  if (exact < 0n || total >= 0n) return;
  const credits = lines.filter((line) => roundedOf(line) < 0n).sort((a, b) => (roundedOf(a) < roundedOf(b) ? -1 : 1));
  let deficit = -total;
  for (const line of credits) {
    if (deficit === 0n) break;
    let lift = -roundedOf(line);
    if (lift > deficit) lift = deficit;
    setRounded(line, roundedOf(line) + lift);
    deficit -= lift;
  }
}

function minimumTrueUp(group: string, members: SubscriptionResult[], spent: bigint, minorUnitDigits: number): Line | undefined {
  const minimums = members.map((member) => member.subscription.plan.minimumSpend);
  const minimum = minimums[0];
  if (minimums.some((other) => other !== minimum)) throw new RatingError(`subscriptions of commitment group ${group} have different minimum spends`);
  if (minimum === undefined) return undefined;
  const roundedMinimum = roundToMinorUnit(minimum, minorUnitDigits);
  if (spent >= roundedMinimum) return undefined;
  return {
    step: STEPS.minimumSpend,
    code: 'minimum_true_up',
    commitment_group: members.length > 1 ? group : undefined,
    subscription_id: members.length === 1 ? members[0].subscription.subscriptionId : undefined,
    description: `Minimum spend true-up: ${formatNano(roundedMinimum, minorUnitDigits)} minimum, ${formatNano(spent, minorUnitDigits)} spent`,
    rule: `${jsonPath(['minimum_spend'])} - sum of the period's lines`,
    quantity: '1',
    unit_price: formatNano(roundedMinimum - spent),
    amount_nano: roundedMinimum - spent,
  };
}

/** The plan path of the per-call price of a tool key: `$.tool_invocations.search`, `$.mcp_servers.mcp_1.tool_invocations['*']`, `$.volume_tiers[0].rate`. */
export function callRateRule(plan: CompiledPlan, tool: string): string {
  if (plan.tiers?.kind === 'rate') return jsonPath(['volume_tiers', 0, 'rate']);
  const price = priceOfKey(plan, tool);
  if (price.server !== undefined) {
    const serverRates = plan.serverToolRates.get(price.server)!;
    return jsonPath(['mcp_servers', price.server, 'tool_invocations', serverRates.has(price.name) ? price.name : DEFAULT_TOOL_KEY]);
  }
  return jsonPath(['tool_invocations', plan.toolRates.has(tool) ? tool : DEFAULT_TOOL_KEY]);
}

/** `up to 60 s`, `over 60 s up to 300 s`, `over 300 s`. */
export function bucketLabel(plan: CompiledPlan, index: number): string {
  const upper = plan.durationLimitsMs[index];
  const lower = index === 0 ? 0 : plan.durationLimitsMs[index - 1];
  const seconds = (ms: number) => `${formatScaled(BigInt(ms), 3)} s`;
  if (upper === Infinity) return `over ${seconds(lower)}`;
  if (index === plan.durationLimitsMs.length - 1) {
    // A bounded last bucket prices the longer calls too (validation warns about it).
    return index === 0 ? `of any duration (bucket up to ${seconds(upper)})` : `over ${seconds(lower)} (bucket up to ${seconds(upper)}, longer calls too)`;
  }
  return index === 0 ? `up to ${seconds(upper)}` : `over ${seconds(lower)} up to ${seconds(upper)}`;
}

export function toolLabel(plan: CompiledPlan, key: string): string {
  if (key === DEFAULT_TOOL_KEY) return 'Calls without a tool name';
  const price = priceOfKey(plan, key);
  return price.server === undefined ? key : `${price.name} on MCP server ${price.server}`;
}

function formatShare(scaled: bigint): string {
  return `${formatScaled(scaled * 100n, FACTOR_DECIMALS)}%`;
}

/** 1 -> "1 call", 1234 -> "1,234 calls". */
function counted(value: bigint, noun: string): string {
  return `${count(value)} ${noun}${value === 1n ? '' : 's'}`;
}

/** 1234567 -> "1,234,567". */
function count(value: bigint): string {
  return value.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
