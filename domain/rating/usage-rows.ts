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

/**
 * Whether an event's session position is kept: only a plan with session rules (a session fee,
 * calls included per session, a penalty) reads sessionCalls; under any other plan it is 0 and no
 * store keeps it. A subscription's plan never changes, so a session is kept from its first call.
 */
export function keepsSessionPosition(plan: CompiledPlan, sessionId: string | null | undefined): boolean {
  return !!sessionId && plan.hasSessionRules;
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
  const list = new RowList();
  addUsageRows(plan, event, event.rating, event.agentId, before, calls, list);
  return list.rows;
}

/** The counters of each kind of row, in the order a row lists them (UsageRowSink passes their values in this order). */
const ROW_COUNTERS: Record<RowKind, readonly string[]> = {
  tool: ['calls', 'included_calls', 'input_tokens', 'output_tokens'],
  model: ['input_tokens', 'output_tokens'],
  duration: ['calls'],
  band: ['calls', 'billable_calls', 'billable_nano'],
  session: ['calls', 'failed_calls', 'started', 'billable_calls', 'billable_nano'],
  agent: ['calls', 'billable_calls'],
};

/** Where addUsageRows puts each row: its counters' values in the order of ROW_COUNTERS[kind], the others undefined. */
export interface UsageRowSink {
  row(kind: RowKind, key: string, a: bigint, b?: bigint, c?: bigint, d?: bigint, e?: bigint): void;
}

function countersOf(kind: RowKind, a: bigint, b?: bigint, c?: bigint, d?: bigint, e?: bigint): Record<string, bigint> {
  const names = ROW_COUNTERS[kind];
  const values = [a, b, c, d, e];
  const counters: Record<string, bigint> = {};
  for (let i = 0; i < names.length; i++) counters[names[i]] = values[i]!;
  return counters;
}

/** The rows as a list (usageRows). */
class RowList implements UsageRowSink {
  readonly rows: UsageRow[] = [];
  row(kind: RowKind, key: string, a: bigint, b?: bigint, c?: bigint, d?: bigint, e?: bigint): void {
    this.rows.push({ kind, key, counters: countersOf(kind, a, b, c, d, e) });
  }
}

/**
 * The rows added counter by counter per (kind, key) as they come: mergeRows of all the rows,
 * without keeping them. What invoice-rollup folds a batch's events into, per period.
 */
export class MergedRows implements UsageRowSink {
  private readonly byKind = new Map<RowKind, Map<string, bigint[]>>();

  row(kind: RowKind, key: string, a: bigint, b?: bigint, c?: bigint, d?: bigint, e?: bigint): void {
    let byKey = this.byKind.get(kind);
    if (!byKey) this.byKind.set(kind, (byKey = new Map()));
    const sums = byKey.get(key);
    if (!sums) {
      const n = ROW_COUNTERS[kind].length;
      const values = [a];
      if (n > 1) values.push(b!);
      if (n > 2) values.push(c!);
      if (n > 3) values.push(d!);
      if (n > 4) values.push(e!);
      byKey.set(key, values);
      return;
    }
    // Adding 0n changes nothing: skipping it spares a bigint.
    if (a !== 0n) sums[0] += a;
    if (b !== undefined && b !== 0n) sums[1] += b;
    if (c !== undefined && c !== 0n) sums[2] += c;
    if (d !== undefined && d !== 0n) sums[3] += d;
    if (e !== undefined && e !== 0n) sums[4] += e;
  }

  /** As mergeRows returns them: kinds and keys in the order they first came. */
  merged(): Map<RowKind, Map<string, Record<string, bigint>>> {
    const merged = new Map<RowKind, Map<string, Record<string, bigint>>>();
    for (const [kind, byKey] of this.byKind) {
      const out = new Map<string, Record<string, bigint>>();
      for (const [key, sums] of byKey) out.set(key, countersOf(kind, sums[0], sums[1], sums[2], sums[3], sums[4]));
      merged.set(kind, out);
    }
    return merged;
  }
}

/**
 * usageRowsForRun into a sink, with the event's rating and agent given apart (the stage passes
 * a ledgered event's cost and attribution without copying the event).
 */
export function addUsageRows(
  plan: CompiledPlan,
  event: RatingInput & { sessionId?: string },
  rating: EventRating,
  agentId: string | undefined,
  before: CallPosition,
  calls: bigint,
  into: UsageRowSink,
): void {
  if (!countsAsCall(event.eventType) || calls <= 0n) return;
  const callNano = rating.breakdown.tool;
  const eventNano = rating.total;
  const sessionId = event.sessionId || undefined;
  const included = sessionId ? clamp(plan.includedCalls - before.sessionCalls, 0n, calls) : 0n;
  const billableCalls = calls - included;

  const inputTokens = event.inputTokens === 0 ? 0n : calls * BigInt(event.inputTokens);
  const outputTokens = event.outputTokens === 0 ? 0n : calls * BigInt(event.outputTokens);
  const byModel = event.model !== undefined && plan.modelTokenRates.has(event.model);
  into.row('tool', rating.tool, calls, included, byModel ? 0n : inputTokens, byModel ? 0n : outputTokens);
  if (byModel && (inputTokens !== 0n || outputTokens !== 0n)) {
    into.row('model', `${event.model}${MODEL_KEY_SEPARATOR}${rating.tool}`, inputTokens, outputTokens);
  }
  if (plan.durationLimitsMs.length > 0) {
    into.row('duration', String(durationBucketIndex(plan, event.durationMs)), calls);
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
      into.row('band', String(band), bandCalls, bandBillableCalls, bandBillableNano);
      sessionBillableNano += bandBillableNano + tierAdjustment(plan, band, bandBillableCalls, bandBillableNano);
    }
  }

  if (sessionId && plan.hasSessionRules) {
    into.row('session', sessionId, calls, event.status === 'SUCCESS' ? 0n : calls, before.sessionCalls === 0n ? 1n : 0n, billableCalls, sessionBillableNano);
  }
  if (plan.isCommitted && agentId) {
    into.row('agent', agentId, calls, billableCalls);
  }
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
