import type { Redis } from '../pipeline/redis.js';
import type { TransactionSql } from 'postgres';
import { customerPartitionKey } from '../domain/flow.js';
import type { EventType, ExecutionStatus } from '../domain/events.js';
import { decimalStrings, MAX_EVENT_COST_NANO } from '../domain/money.js';
import { countsAsCall, rateEvent, type EventRating } from '../domain/rating/rate-event.js';
import { keepsSessionPosition, mergeRows, usageRows, type UsageRow } from '../domain/rating/usage-rows.js';
import type { CompiledPlan } from '../domain/rating/compile.js';
import { partitionedKey, partitionOf } from '../pipeline/keys.js';
import type { Sql } from '../pipeline/postgres.js';
import { CapBook, capCounterKey, capPeriod } from './caps.js';
import { enqueueForAnalytics } from './analytics-backlog.js';
import { addCogs, type CogsFact } from './cogs-rollup.js';
import type { CostModelCache } from './cost-model-cache.js';
import { callCogs, InvalidCostModelError, type Cogs } from './cost-model.js';
import { newId } from './credentials.js';
import { creditBalances, drawCredits, liftCreditsPause, pauseExhausted, type CreditAccountKey } from './credits.js';
import { closedInvoiceOf, issueCreditNote, type InvoiceDocument } from './invoices.js';
import type { RedisPlace } from './pause-flags.js';
import type { PlanCache } from './rate-plans.js';

/**
 * Corrections, append-only. A ledger row is never changed: voiding an event adds a reversing row
 * (every quantity and the cost negated, the original's plan version, period and attribution),
 * amending it adds that reversing row and a new row with the amended quantities rated by the
 * subscription's plan; both name the original (corrects_event_id). In the same transaction the
 * consumers of the ledger follow: the invoice aggregates (usage rows, positions), the session's
 * totals, the COGS ledger and prepaid credits; ClickHouse gets both rows through the analytics
 * backlog (enqueued in the same transaction).
 * Spend-cap counters in Redis follow after the commit. A correction to a closed period is billed
 * on the next invoice as an adjustment, or at once as a credit note.
 */

type Quantities = { input_tokens?: number; output_tokens?: number; execution_duration_ms?: number };

export type CorrectionRequest =
  | { kind: 'void'; reason?: string; settle?: 'next_invoice' | 'credit_note' }
  | { kind: 'amend'; quantities: Quantities; reason?: string; settle?: 'next_invoice' | 'credit_note' };

export class CorrectionRefused extends Error {
  constructor(
    readonly status: 404 | 409 | 400,
    readonly code: string,
    message: string,
    readonly path?: string,
  ) {
    super(message);
  }
}

export interface CorrectionResult {
  id: string;
  event_id: string;
  kind: 'void' | 'amend';
  reversal_event_id: string;
  amendment_event_id: string | null;
  /** Cost of the amendment minus the cost of the row reversed (nano-units). */
  delta_nano: bigint;
  subscription_id: string;
  period_start: Date;
  /** The period's invoice, when it was already closed. */
  closed_invoice: string | null;
  credit_note: InvoiceDocument | null;
}

interface LedgerRow {
  tenant_id: string;
  event_id: string;
  event_type: EventType;
  recorded_at: Date;
  customer_id: string;
  team_id: string;
  agent_id: string | null;
  app_id: string | null;
  subscription_id: string;
  period_start: Date;
  session_id: string | null;
  tool_name: string | null;
  priced_tool: string | null;
  mcp_server_id: string | null;
  model: string | null;
  execution_status: ExecutionStatus;
  duration_ms: string;
  input_tokens: string;
  output_tokens: string;
  cost_nano: string;
  cost_breakdown: Record<string, string>;
  currency: string;
  correction: string | null;
}

interface NewRow {
  eventId: string;
  correction: 'reversal' | 'amendment';
  durationMs: bigint;
  inputTokens: bigint;
  outputTokens: bigint;
  rating: EventRating;
}

const MAX_QUANTITY = 1_000_000_000_000;

function ratingOf(row: LedgerRow): EventRating {
  const b = row.cost_breakdown;
  return {
    total: BigInt(row.cost_nano),
    tool: row.priced_tool ?? '',
    breakdown: { tool: BigInt(b.tool ?? '0'), input_tokens: BigInt(b.input_tokens ?? '0'), output_tokens: BigInt(b.output_tokens ?? '0'), duration: BigInt(b.duration ?? '0') },
  };
}

function negated(rating: EventRating): EventRating {
  return {
    total: -rating.total,
    tool: rating.tool,
    breakdown: {
      tool: -rating.breakdown.tool,
      input_tokens: -rating.breakdown.input_tokens,
      output_tokens: -rating.breakdown.output_tokens,
      duration: -rating.breakdown.duration,
    },
  };
}

/** The usage rows of a call as if it were the last one counted (the positions only know counts). */
function rowsOf(plan: CompiledPlan, row: LedgerRow, quantities: { inputTokens: bigint; outputTokens: bigint; durationMs: bigint }, rating: EventRating, before: { periodCalls: bigint; sessionCalls: bigint }): UsageRow[] {
  const usage = {
    eventType: row.event_type,
    toolName: row.tool_name ?? undefined,
    model: row.model ?? undefined,
    mcpServerId: row.mcp_server_id ?? undefined,
    inputTokens: Number(quantities.inputTokens),
    outputTokens: Number(quantities.outputTokens),
    durationMs: Number(quantities.durationMs),
    status: row.execution_status,
    rating,
    sessionId: row.session_id ?? undefined,
    agentId: row.agent_id ?? row.app_id ?? undefined,
  };
  return usageRows(plan, usage, before);
}

const negateRows = (rows: UsageRow[]): UsageRow[] =>
  rows.map((r) => ({ kind: r.kind, key: r.key, counters: Object.fromEntries(Object.entries(r.counters).map(([k, v]) => [k, -v])) }));

/**
 * Voids or amends one event of the tenant. 404 when the tenant has no such event (or it is a
 * correction row itself), 409 when it is already voided, 400 when an amended quantity is out of
 * range. One transaction; spend-cap counters and a credits pause after it.
 */
export async function correctEvent(
  deps: { sql: Sql; redis: Redis; place: RedisPlace; plans: PlanCache; costModels: CostModelCache },
  tenantId: string,
  eventId: string,
  request: CorrectionRequest,
): Promise<CorrectionResult> {
  const { sql, plans } = deps;
  const models = (await deps.costModels.load([tenantId])).get(tenantId) ?? [];
  let exhausted: CreditAccountKey[] = [];
  let capEffect: { row: LedgerRow; delta: bigint } | undefined;

  const result = await sql.begin(async (tx) => {
    const [original] = await tx<LedgerRow[]>`
      SELECT * FROM usage_ledger WHERE tenant_id = ${tenantId} AND event_id = ${eventId} AND correction IS NULL FOR UPDATE`;
    if (!original) throw new CorrectionRefused(404, 'not_found', `no event ${eventId} in this tenant's ledger`);
    // Corrections and closes of one customer take the same lock first: a credit note never races a close.
    await tx`SELECT pg_advisory_xact_lock(hashtextextended(${`invoice-close:${tenantId}:${original.customer_id}`}, 0))`;
    const [state] = await tx<{ status: 'voided' | 'amended'; current_event_id: string; revision: number }[]>`
      SELECT status, current_event_id, revision FROM ledger_corrections WHERE tenant_id = ${tenantId} AND event_id = ${eventId}`;
    if (state?.status === 'voided') throw new CorrectionRefused(409, 'already_voided', `event ${eventId} is already voided`);
    const current = state
      ? (await tx<LedgerRow[]>`SELECT * FROM usage_ledger WHERE tenant_id = ${tenantId} AND event_id = ${state.current_event_id}`)[0]
      : original;
    const revision = (state?.revision ?? 0) + 1;
    const plan = await plans.forSubscription(tenantId, current.subscription_id);
    const was = { inputTokens: BigInt(current.input_tokens), outputTokens: BigInt(current.output_tokens), durationMs: BigInt(current.duration_ms) };
    const wasRating = ratingOf(current);

    const rows: NewRow[] = [
      {
        eventId: `${eventId}~rev${revision}`,
        correction: 'reversal',
        inputTokens: -was.inputTokens,
        outputTokens: -was.outputTokens,
        durationMs: -was.durationMs,
        rating: negated(wasRating),
      },
    ];
    let now: typeof was | undefined;
    let nowRating: EventRating | undefined;
    if (request.kind === 'amend') {
      const q = request.quantities;
      for (const [field, value] of Object.entries(q)) {
        if (value !== undefined && (!Number.isSafeInteger(value) || value < 0 || value > MAX_QUANTITY)) {
          throw new CorrectionRefused(400, 'validation_failed', `${field} must be an integer from 0 to 10^12, got ${value}`, `quantities.${field}`);
        }
      }
      now = {
        inputTokens: q.input_tokens === undefined ? was.inputTokens : BigInt(q.input_tokens),
        outputTokens: q.output_tokens === undefined ? was.outputTokens : BigInt(q.output_tokens),
        durationMs: q.execution_duration_ms === undefined ? was.durationMs : BigInt(q.execution_duration_ms),
      };
      const input = {
        eventType: current.event_type,
        toolName: current.tool_name ?? undefined,
        model: current.model ?? undefined,
        mcpServerId: current.mcp_server_id ?? undefined,
        inputTokens: Number(now.inputTokens),
        outputTokens: Number(now.outputTokens),
        durationMs: Number(now.durationMs),
        status: current.execution_status,
      };
      nowRating = rateEvent(plan, input);
      if (nowRating.total > MAX_EVENT_COST_NANO) {
        throw new CorrectionRefused(400, 'cost_out_of_range', `the amended event would cost ${nowRating.total} nano-units, more than one event may (2^63-1)`, 'quantities');
      }
      rows.push({ eventId: `${eventId}~amd${revision}`, correction: 'amendment', ...now, rating: nowRating });
    }
    const delta = rows.reduce((sum, r) => sum + r.rating.total, 0n);

    await insertRows(tx, current, eventId, rows);
    await followInvoice(tx, plan, current, rows.length, delta, was, wasRating, now, nowRating);
    await followSession(tx, current, rows.length, delta, was, now);
    if (countsAsCall(current.event_type)) await followCogs(tx, models, current, rows);
    exhausted = await drawCredits(tx, [
      {
        tenantId,
        customerId: current.customer_id,
        currency: current.currency,
        subscriptionId: current.subscription_id,
        periodStart: current.period_start.getTime(),
        amountNano: delta,
        eventId,
      },
    ]);

    const amendment = rows.find((r) => r.correction === 'amendment');
    await tx`
      INSERT INTO ledger_corrections (tenant_id, event_id, status, current_event_id, revision)
      VALUES (${tenantId}, ${eventId}, ${request.kind === 'void' ? 'voided' : 'amended'}, ${amendment?.eventId ?? null}, ${revision})
      ON CONFLICT (tenant_id, event_id) DO UPDATE
      SET status = excluded.status, current_event_id = excluded.current_event_id, revision = excluded.revision, updated_at = now()`;

    const closed = await closedInvoiceOf(tx, tenantId, current.subscription_id, current.period_start);
    const creditNote = closed && request.settle === 'credit_note' ? ((await issueCreditNote(tx, plans, tenantId, current.customer_id, closed.id)) ?? null) : null;
    const id = newId('corr');
    await tx`
      INSERT INTO correction_log (tenant_id, id, event_id, kind, reason, reversal_event_id, amendment_event_id, delta_nano, closed_invoice_id, credit_note_id)
      VALUES (${tenantId}, ${id}, ${eventId}, ${request.kind}, ${request.reason ?? null}, ${rows[0].eventId}, ${amendment?.eventId ?? null},
              ${delta.toString()}, ${closed?.id ?? null}, ${creditNote?.id ?? null})`;
    capEffect = { row: current, delta };
    return {
      id,
      event_id: eventId,
      kind: request.kind,
      reversal_event_id: rows[0].eventId,
      amendment_event_id: amendment?.eventId ?? null,
      delta_nano: delta,
      subscription_id: current.subscription_id,
      period_start: current.period_start,
      closed_invoice: closed?.number ?? null,
      credit_note: creditNote,
    } satisfies CorrectionResult;
  });

  if (capEffect && capEffect.delta !== 0n) await followCaps(sql, deps.redis, deps.place, capEffect.row, capEffect.delta);
  if (exhausted.length) await pauseExhausted(sql, deps.redis, deps.place, exhausted, eventId);
  else if (capEffect && capEffect.delta < 0n) await liftIfCreditsBack(deps, tenantId, capEffect.row, eventId);
  return result;
}

/** Credits a correction gave back lift the customer's credits pause, as a grant does, once its balance is above zero. */
async function liftIfCreditsBack(deps: { sql: Sql; redis: Redis; place: RedisPlace }, tenantId: string, row: LedgerRow, eventId: string): Promise<void> {
  const balance = (await creditBalances(deps.sql, tenantId, row.customer_id)).find((b) => b.currency === row.currency);
  if (!balance || balance.balanceNano <= 0n) return;
  const account = { tenantId, customerId: row.customer_id, currency: row.currency };
  await liftCreditsPause(deps.sql, deps.redis, deps.place, account, { reason: `credits returned by the correction of ${eventId}` });
}

async function insertRows(tx: TransactionSql, current: LedgerRow, eventId: string, rows: NewRow[]): Promise<void> {
  for (const row of rows) {
    const breakdown = decimalStrings(row.rating.breakdown);
    await tx`
      INSERT INTO usage_ledger (
        tenant_id, event_id, ingest_nonce, event_type, recorded_at, ingested_at,
        customer_id, team_id, agent_id, app_id, credential_id, product_id,
        subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version, period_start,
        session_id, tool_name, priced_tool, mcp_server_id, model, execution_status,
        duration_ms, input_tokens, output_tokens, retry_count,
        cost_nano, cost_breakdown, currency, over_cap, error_type, is_parallel, corrects_event_id, correction)
      SELECT tenant_id, ${row.eventId}, ${`correction:${row.eventId}`}, event_type, recorded_at, clock_timestamp(),
        customer_id, team_id, agent_id, app_id, credential_id, product_id,
        subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version, period_start,
        session_id, tool_name, ${row.rating.tool || null}, mcp_server_id, model, execution_status,
        ${row.durationMs.toString()}, ${row.inputTokens.toString()}, ${row.outputTokens.toString()}, retry_count,
        ${row.rating.total.toString()}, ${tx.json(breakdown)}, currency, false, error_type, is_parallel, ${eventId}, ${row.correction}
      FROM usage_ledger WHERE tenant_id = ${current.tenant_id} AND event_id = ${current.event_id}`;
  }
  await enqueueForAnalytics(tx, rows.map((row) => ({ tenantId: current.tenant_id, eventId: row.eventId })));
}

/**
 * The period aggregates invoice-rollup keeps: the reversed call's usage rows taken off (as if it
 * were the period's and the session's last call, the only position the counts remember), the
 * amended call's rows added at that same position, and the positions moved back for a void.
 */
async function followInvoice(
  tx: TransactionSql,
  plan: CompiledPlan,
  row: LedgerRow,
  rowCount: number,
  delta: bigint,
  was: { inputTokens: bigint; outputTokens: bigint; durationMs: bigint },
  wasRating: EventRating,
  now: typeof was | undefined,
  nowRating: EventRating | undefined,
): Promise<void> {
  const key = [row.tenant_id, row.subscription_id];
  await tx`INSERT INTO invoice_period_calls (tenant_id, subscription_id, period_start) VALUES (${key[0]}, ${key[1]}, ${row.period_start}) ON CONFLICT DO NOTHING`;
  const [period] = await tx<{ calls: string }[]>`
    SELECT calls FROM invoice_period_calls WHERE tenant_id = ${key[0]} AND subscription_id = ${key[1]} AND period_start = ${row.period_start} FOR UPDATE`;
  let sessionCalls = 0n;
  const keepsSession = keepsSessionPosition(plan, row.session_id);
  if (keepsSession) {
    await tx`INSERT INTO invoice_session_calls (tenant_id, subscription_id, session_id) VALUES (${key[0]}, ${key[1]}, ${row.session_id}) ON CONFLICT DO NOTHING`;
    const [session] = await tx<{ calls: string }[]>`
      SELECT calls FROM invoice_session_calls WHERE tenant_id = ${key[0]} AND subscription_id = ${key[1]} AND session_id = ${row.session_id} FOR UPDATE`;
    sessionCalls = BigInt(session.calls);
  }
  const isCall = countsAsCall(row.event_type);
  const periodCalls = BigInt(period.calls);
  const before = { periodCalls: periodCalls > 0n ? periodCalls - 1n : 0n, sessionCalls: sessionCalls > 0n ? sessionCalls - 1n : 0n };
  const usage = isCall ? [...negateRows(rowsOf(plan, row, was, wasRating, before)), ...(now && nowRating ? rowsOf(plan, row, now, nowRating, before) : [])] : [];
  for (const [kind, byKey] of mergeRows(usage)) {
    for (const [rowKey, counters] of [...byKey].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const json = decimalStrings(counters);
      await tx`
        INSERT INTO invoice_usage (tenant_id, subscription_id, period_start, kind, key, counters)
        VALUES (${key[0]}, ${key[1]}, ${row.period_start}, ${kind}, ${rowKey}, ${tx.json(json)})
        ON CONFLICT (tenant_id, subscription_id, period_start, kind, key)
        DO UPDATE SET counters = add_counters(invoice_usage.counters, excluded.counters), updated_at = now()`;
    }
  }
  const voidedCall = isCall && !now ? 1n : 0n;
  await tx`
    UPDATE invoice_period_calls SET calls = greatest(calls - ${voidedCall.toString()}::int8, 0), events = events + ${rowCount},
           cost_nano = cost_nano + ${delta.toString()}::numeric
    WHERE tenant_id = ${key[0]} AND subscription_id = ${key[1]} AND period_start = ${row.period_start}`;
  if (keepsSession && voidedCall) {
    await tx`UPDATE invoice_session_calls SET calls = greatest(calls - 1, 0)
             WHERE tenant_id = ${key[0]} AND subscription_id = ${key[1]} AND session_id = ${row.session_id}`;
  }
}

/** The session's totals (mcp_sessions), when session-update has it: counters move by the rows added. */
async function followSession(
  tx: TransactionSql,
  row: LedgerRow,
  rowCount: number,
  delta: bigint,
  was: { inputTokens: bigint; outputTokens: bigint; durationMs: bigint },
  now: typeof was | undefined,
): Promise<void> {
  if (!row.session_id) return;
  const isCall = countsAsCall(row.event_type);
  const after = now ?? { inputTokens: 0n, outputTokens: 0n, durationMs: 0n };
  const calls = isCall && !now ? -1 : 0;
  const errors = calls === -1 && row.execution_status !== 'SUCCESS' ? -1 : 0;
  await tx`
    UPDATE mcp_sessions SET
      events = events + ${rowCount}, tool_calls = tool_calls + ${calls}, errors = errors + ${errors},
      input_tokens = input_tokens + ${(after.inputTokens - was.inputTokens).toString()}::numeric,
      output_tokens = output_tokens + ${(after.outputTokens - was.outputTokens).toString()}::numeric,
      duration_ms = duration_ms + ${(after.durationMs - was.durationMs).toString()}::numeric,
      cost_nano = cost_nano + ${delta.toString()}::numeric, updated_at = now()
    WHERE tenant_id = ${row.tenant_id} AND session_id = ${row.session_id}`;
}

/** The COGS of each new ledger row, as the cogs stage computes it (the reversal's is the original's, negated), added to the sums. */
async function followCogs(tx: TransactionSql, models: Parameters<typeof callCogs>[0], row: LedgerRow, rows: NewRow[]): Promise<void> {
  const facts: CogsFact[] = [];
  for (const r of rows) {
    const cogs: Cogs | InvalidCostModelError = callCogs(models, {
      tenantId: row.tenant_id,
      recordedAt: row.recorded_at.getTime(),
      currency: row.currency,
      toolName: row.tool_name ?? undefined,
      pricedTool: r.rating.tool,
      model: row.model ?? undefined,
      inputTokens: Number(r.inputTokens),
      outputTokens: Number(r.outputTokens),
      durationMs: Number(r.durationMs),
      reversal: r.correction === 'reversal',
    });
    if (cogs instanceof InvalidCostModelError) throw new CorrectionRefused(409, 'invalid_cost_model', cogs.message);
    facts.push({
      tenantId: row.tenant_id,
      recordedAt: row.recorded_at.getTime(),
      currency: row.currency,
      toolName: row.tool_name,
      agentId: row.agent_id,
      customerId: row.customer_id,
      withSession: !!row.session_id,
      costed: cogs.breakdown.cost_model_id !== null,
      priceNano: r.rating.total,
      cogsNano: cogs.cogsNano,
    });
  }
  await addCogs(tx, facts);
}

/**
 * The spend-cap running totals cap-check keeps in Redis move by the correction's cost, in the
 * period of the original event; a counter that no longer exists (its period long over) is left alone.
 */
async function followCaps(sql: Sql, redis: Redis, place: RedisPlace, row: LedgerRow, delta: bigint): Promise<void> {
  const book = new CapBook(sql);
  await book.reloadTenant(row.tenant_id);
  const caps = book.capsFor(row.tenant_id, { agentId: row.agent_id ?? undefined, teamId: row.team_id, customerId: row.customer_id });
  const partition = partitionOf(customerPartitionKey(row.tenant_id, row.customer_id), place.partitions);
  for (const cap of caps) {
    // A rolling total counts what was metered in the last window, by when it was counted: a correction does not move it.
    if (cap.period === 'rolling') continue;
    const period = capPeriod(cap, { recordedAt: row.recorded_at.getTime(), sessionId: row.session_id ?? undefined });
    if (!period) continue;
    const key = partitionedKey(place.prefix, capCounterKey(cap, period.key), partition);
    await redis.eval("if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end return false", 1, key, delta.toString());
  }
}
