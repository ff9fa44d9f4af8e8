import { durationBucketIndex, type CompiledPlan } from './compile.js';
import { multiplyExact } from '../money.js';
import { clamp, maxOf, minOf } from './bigint.js';
import { FACTOR_DECIMALS } from './plan-numbers.js';
import { countsAsCall, type EventRating, type RatingInput } from './rate-event.js';

/**
 * The period-level state of a subscription is a set of rows of ADDITIVE integer counters,
 * keyed by (kind, key). The invoice-rollup stage adds each event's rows into its stored rows
 * exactly once per event; ratePeriod reads them back. Adding two rows of the same (kind, key)
 * counter by counter gives the same invoice as keeping them apart: additivity is the contract.
 *
 * kind 'tool'     key: tool key        calls, included_calls, input_tokens, output_tokens
 *                 (a call of an MCP server the plan prices: key "server tool")
 * kind 'model'    key: model|tool key  input_tokens, output_tokens
 *                 (tokens of a model token_multipliers.by_model prices: not in the tool row)
 * kind 'duration' key: bucket index    calls
 * kind 'session'  key: session id      calls, failed_calls, started, billable_calls, billable_nano
 *                 (only when the plan has a session fee, included calls or an error penalty)
 * kind 'band'     key: tier index      calls, billable_calls, billable_nano
 *                 (only for graduated volume tiers)
 * kind 'agent'    key: agent id        calls, billable_calls   (only for COMMITTED plans)
 *
 * "included" calls are the first included_tool_count calls of a session; "billable" calls are
 * the others. billable_nano is the cost of the billable part (event cost minus the per-call tool
 * price of included calls), after graduated tier adjustments on session rows, before them on
 * band rows.
 */
export interface UsageRow {
  kind: RowKind;
  key: string;
  counters: Record<string, bigint>;
}

export type RowKind = 'tool' | 'model' | 'duration' | 'session' | 'band' | 'agent';

/** Separates the model from the tool key in a 'model' row's key (model names hold no '|'). */
export const MODEL_KEY_SEPARATOR = '|';

export interface RatedUsage extends RatingInput {
  rating: EventRating;
  sessionId?: string;
  agentId?: string;
}

/**
 * Where the event stands when the stage applies it, computed sequentially by the stage:
 * periodCalls: calls (usage events, not session.*) of this subscription already counted in this period;
 * sessionCalls: calls of this session already counted, in any period.
 */
export interface CallPosition {
  periodCalls: bigint;
  sessionCalls: bigint;
}

/** The rows one event adds. Session control events add none and do not advance the position. */
export function usageRows(plan: CompiledPlan, event: RatedUsage, before: CallPosition): UsageRow[] {
  return usageRowsForRun(plan, event, before, 1n);
}

/**
 * The rows `calls` identical events add when they are applied one after the other from
 * `before`: equal to adding the rows of each event in turn, computed without the loop.
 */
export function usageRowsForRun(plan: CompiledPlan, event: RatedUsage, before: CallPosition, calls: bigint): UsageRow[] {
  if (!countsAsCall(event.eventType) || calls <= 0n) return [];
  const { rating } = event;
  const callNano = rating.breakdown.tool;
  const eventNano = rating.total;
  const sessionId = event.sessionId || undefined;
  const included = sessionId ? clamp(plan.includedCalls - before.sessionCalls, 0n, calls) : 0n;
  const billableCalls = calls - included;

  const inputTokens = calls * BigInt(event.inputTokens);
  const outputTokens = calls * BigInt(event.outputTokens);
  const byModel = event.model !== undefined && plan.modelTokenRates.has(event.model);
  const rows: UsageRow[] = [
    {
      kind: 'tool',
      key: rating.tool,
      counters: {
        calls,
        included_calls: included,
        input_tokens: byModel ? 0n : inputTokens,
        output_tokens: byModel ? 0n : outputTokens,
      },
    },
  ];
  if (byModel && (inputTokens !== 0n || outputTokens !== 0n)) {
    rows.push({ kind: 'model', key: `${event.model}${MODEL_KEY_SEPARATOR}${rating.tool}`, counters: { input_tokens: inputTokens, output_tokens: outputTokens } });
  }
  if (plan.durationLimitsMs.length > 0) {
    rows.push({ kind: 'duration', key: String(durationBucketIndex(plan, event.durationMs)), counters: { calls } });
  }

  let sessionBillableNano = calls * eventNano - included * callNano;
  const tiers = plan.tiers;
  if (tiers?.mode === 'graduated') {
    sessionBillableNano = 0n;
    const first = before.periodCalls + 1n;
    const last = before.periodCalls + calls;
    for (let band = bandOfOrdinal(tiers.starts, first); band < tiers.starts.length && tiers.starts[band] < last; band++) {
      const from = maxOf(first, tiers.starts[band] + 1n) - first;
      const to = (band + 1 < tiers.starts.length ? minOf(last, tiers.starts[band + 1]) : last) - first + 1n;
      const bandCalls = to - from;
      const bandIncluded = clamp(included - from, 0n, bandCalls);
      const bandBillableCalls = bandCalls - bandIncluded;
      const bandBillableNano = bandCalls * eventNano - bandIncluded * callNano;
      rows.push({ kind: 'band', key: String(band), counters: { calls: bandCalls, billable_calls: bandBillableCalls, billable_nano: bandBillableNano } });
      sessionBillableNano += bandBillableNano + tierAdjustment(plan, band, bandBillableCalls, bandBillableNano);
    }
  }

  if (sessionId && plan.hasSessionRules) {
    rows.push({
      kind: 'session',
      key: sessionId,
      counters: {
        calls,
        failed_calls: event.status === 'SUCCESS' ? 0n : calls,
        started: before.sessionCalls === 0n ? 1n : 0n,
        billable_calls: billableCalls,
        billable_nano: sessionBillableNano,
      },
    });
  }
  if (plan.isCommitted && event.agentId) {
    rows.push({ kind: 'agent', key: event.agentId, counters: { calls, billable_calls: billableCalls } });
  }
  return rows;
}

/** The tier that call number `ordinal` (1-based) of the period falls in: the last tier starting before it. */
export function bandOfOrdinal(starts: readonly bigint[], ordinal: bigint): number {
  let band = 0;
  while (band + 1 < starts.length && starts[band + 1] < ordinal) band++;
  return band;
}

/**
 * What tier `band` changes on billable usage, relative to the list price the events were rated
 * at: a rate tier replaces the first tier's per-call rate by its own; a discount tier takes its
 * percentage off the billable cost. Exact by validation (no remainder to round).
 */
export function tierAdjustment(plan: CompiledPlan, band: number, billableCalls: bigint, billableNano: bigint): bigint {
  const tiers = plan.tiers;
  if (!tiers) return 0n;
  if (tiers.kind === 'rate') return billableCalls * (tiers.rates[band] - tiers.rates[0]);
  return -multiplyExact(billableNano, tiers.discounts[band], FACTOR_DECIMALS);
}


/** Adds rows of the same (kind, key) counter by counter. */
export function mergeRows(rows: Iterable<UsageRow>): Map<RowKind, Map<string, Record<string, bigint>>> {
  const merged = new Map<RowKind, Map<string, Record<string, bigint>>>();
  for (const row of rows) {
    let byKey = merged.get(row.kind);
    if (!byKey) merged.set(row.kind, (byKey = new Map()));
    const into = byKey.get(row.key);
    if (!into) {
      byKey.set(row.key, { ...row.counters });
      continue;
    }
    for (const [name, value] of Object.entries(row.counters)) into[name] = (into[name] ?? 0n) + value;
  }
  return merged;
}

/**
 * What invoice-rollup does for one subscription and period, in memory: each event's position is
 * the count of calls before it in the period and in its session, then its rows are added.
 * The stage keeps the same two counters in PostgreSQL; this is the reference and the test double.
 */
export class PeriodUsage {
  private periodCalls: bigint;
  private readonly sessionCalls = new Map<string, bigint>();
  readonly rows: UsageRow[] = [];

  constructor(
    private readonly plan: CompiledPlan,
    callsBefore = 0n,
  ) {
    this.periodCalls = callsBefore;
  }

  add(event: RatedUsage): UsageRow[] {
    if (!countsAsCall(event.eventType)) return [];
    const sessionCalls = event.sessionId ? (this.sessionCalls.get(event.sessionId) ?? 0n) : 0n;
    const rows = usageRows(this.plan, event, { periodCalls: this.periodCalls, sessionCalls });
    this.periodCalls++;
    if (event.sessionId) this.sessionCalls.set(event.sessionId, sessionCalls + 1n);
    this.rows.push(...rows);
    return rows;
  }
}
