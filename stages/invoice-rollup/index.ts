import { countsAsCall } from '../../domain/rating/rate-event.js';
import { addUsageRows, keepsSessionPosition, MergedRows, type CallPosition } from '../../domain/rating/usage-rows.js';
import { STREAMS } from '../../store/streams.js';
import type { EntryResult, StageDefinition, StageEntry } from '../../pipeline/stage.js';
import type { TransactionSql } from 'postgres';
import type { Sql } from '../../pipeline/postgres.js';
import { AGGREGATE_BATCH_EVENTS, AGGREGATE_LINGER_MS, claimBlocks, pruneAppliedEvery } from '../../store/applied.js';
import { PlanCache } from '../../store/rate-plans.js';
import type { LedgeredEvent } from '../../domain/flow.js';
import { drawCredits, pauseExhausted, type CreditAccountKey, type CreditDraw } from '../../store/credits.js';

const STAGE = 'invoice-rollup';

const periodKey = (e: LedgeredEvent) => `${e.tenantId}\u0000${e.subscription.subscriptionId}\u0000${e.subscription.periodStart}`;
const sessionKey = (e: LedgeredEvent) => `${e.tenantId}\u0000${e.subscription.subscriptionId}\u0000${e.sessionId}`;

/**
 * Adds each newly ledgered event to its subscription's period aggregates, exactly once: in one
 * transaction for all the blocks of a batch, the blocks not yet applied are recorded in
 * applied_blocks by their origin (the same on every redelivery: one row per block, not per
 * event), a block of one event (split off its block for a retry) in invoice_applied by its event
 * id; the period and session positions the new events start from are locked and read (a
 * session's only where keepsSessionPosition), the
 * rating engine turns each event into its usage rows (in stream order, advancing the positions),
 * and the rows merged over the whole batch are added to the stored ones: one upsert per
 * subscription x period x usage key, one update per period and per session. A redelivered block
 * finds itself applied and changes nothing.
 */
export async function rollUpBlocks(
  sql: Sql,
  plans: PlanCache,
  blocks: { origin: string; events: LedgeredEvent[] }[],
  onCreditsExhausted?: (accounts: CreditAccountKey[], eventId: string) => Promise<void>,
): Promise<EntryResult[][]> {
  const results = blocks.map((b) => b.events.map((): EntryResult => ({})));
  let last: LedgeredEvent | undefined;
  // Compiled plans are loaded outside the transaction (they are cached and immutable).
  const planOf: PlanOf = new Map();
  for (const block of blocks) {
    for (const e of block.events) {
      // Consecutive events are mostly of one subscription: its key is built when it changes.
      if (last && e.tenantId === last.tenantId && e.subscription.subscriptionId === last.subscription.subscriptionId) {
        last = e;
        continue;
      }
      last = e;
      const key = planKey(e);
      if (!planOf.has(key)) planOf.set(key, await plans.forSubscription(e.tenantId, e.subscription.subscriptionId));
    }
  }
  if (!last) return results;

  let exhausted: CreditAccountKey[] = [];
  for (let attempt = 1; ; attempt++) {
    try {
      exhausted = await applyOnce(sql, blocks, planOf);
      break;
    } catch (err) {
      // A position row another writer created after we read: once more, now that it exists.
      if (!(err instanceof PositionTaken) || attempt >= 3) throw err;
    }
  }
  if (exhausted.length) await onCreditsExhausted?.(exhausted, last.eventId);
  return results;
}

/** A position row created by another transaction between our read and our insert. */
class PositionTaken extends Error {}

type PlanOf = Map<string, Awaited<ReturnType<PlanCache['forSubscription']>>>;
const planKey = (e: LedgeredEvent) => `${e.tenantId}/${e.subscription.subscriptionId}`;

/** What a batch adds to one subscription period. */
interface PeriodState {
  /** Its first event in the batch: its customer and currency draw the credits. */
  event: LedgeredEvent;
  key: string;
  plan: Awaited<ReturnType<PlanCache['forSubscription']>>;
  /** The call position: read (locked), then advanced event by event. */
  calls: bigint;
  existed: boolean;
  events: number;
  cost: bigint;
  /** The usage rows of its calls, merged as they come (none for a period of control events only). */
  rows?: MergedRows;
}

interface SessionState {
  event: LedgeredEvent;
  key: string;
  calls: bigint;
  existed: boolean;
}

/**
 * The state of e's period: `last` when e is of the same one (the common case), else found or
 * added. `bySubscription` finds it by e's subscription object first: the events of a block share
 * one per subscriber (as decoded), so its key string is built once per subscriber and block, not
 * per event.
 */
function periodOf(
  periods: Map<string, PeriodState>,
  bySubscription: Map<object, PeriodState>,
  last: PeriodState | undefined,
  e: LedgeredEvent,
  planOf: PlanOf,
): PeriodState {
  if (
    last &&
    e.tenantId === last.event.tenantId &&
    e.subscription.subscriptionId === last.event.subscription.subscriptionId &&
    e.subscription.periodStart === last.event.subscription.periodStart
  ) {
    return last;
  }
  const shared = bySubscription.get(e.subscription);
  if (shared && shared.event.tenantId === e.tenantId) return shared;
  const key = periodKey(e);
  let period = periods.get(key);
  if (!period) {
    period = { event: e, key, plan: planOf.get(planKey(e))!, calls: 0n, existed: false, events: 0, cost: 0n };
    periods.set(key, period);
  }
  bySubscription.set(e.subscription, period);
  return period;
}

/** The state of e's session (e names one). */
function sessionOf(sessions: Map<string, SessionState>, last: SessionState | undefined, e: LedgeredEvent): SessionState {
  if (last && e.sessionId === last.event.sessionId && e.tenantId === last.event.tenantId && e.subscription.subscriptionId === last.event.subscription.subscriptionId) {
    return last;
  }
  const key = sessionKey(e);
  let session = sessions.get(key);
  if (!session) {
    session = { event: e, key, calls: 0n, existed: false };
    sessions.set(key, session);
  }
  return session;
}

/** The event ids kept for a tenant (an empty set, added, the first time). */
function idsOf(byTenant: Map<string, Set<string>>, tenantId: string): Set<string> {
  let ids = byTenant.get(tenantId);
  if (!ids) byTenant.set(tenantId, (ids = new Set()));
  return ids;
}

/**
 * The events of the batch to apply, in stream order: those of the blocks claimed now and the
 * singles claimed now; one event twice in a batch (never expected downstream of the ledger) once.
 */
function eventsToApply(blocks: { origin: string; events: LedgeredEvent[] }[], freshBlocks: Set<string>, freshSingles: Map<string, Set<string>>): LedgeredEvent[] {
  const seen = new Map<string, Set<string>>();
  const todo: LedgeredEvent[] = [];
  for (const block of blocks) {
    const single = block.events.length === 1;
    if (!single && !freshBlocks.has(block.origin)) continue;
    for (const e of block.events) {
      const ids = idsOf(seen, e.tenantId);
      if (ids.has(e.eventId) || (single && !freshSingles.get(e.tenantId)?.has(e.eventId))) continue;
      ids.add(e.eventId);
      todo.push(e);
    }
  }
  return todo;
}

/**
 * One transaction of rollUpBlocks; returns the credit accounts it exhausted. Its body is a
 * function of the module (applyInTransaction), not the closure handed to sql.begin: V8 keeps a
 * closure's optimized code only while some instance of it lives, so a closure made per batch
 * lost its code at every full collection of the heap and was compiled again (14 times in 75 s
 * at --rate max; BENCHMARKS.md, issue 13, forty-first session).
 */
async function applyOnce(sql: Sql, blocks: { origin: string; events: LedgeredEvent[] }[], planOf: PlanOf): Promise<CreditAccountKey[]> {
  let exhausted: CreditAccountKey[] = [];
  await sql.begin(async (tx) => {
    exhausted = await applyInTransaction(tx, blocks, planOf);
  });
  return exhausted;
}

async function applyInTransaction(tx: TransactionSql, blocks: { origin: string; events: LedgeredEvent[] }[], planOf: PlanOf): Promise<CreditAccountKey[]> {
  const whole = blocks.filter((b) => b.events.length > 1);
  const freshBlocks = await claimBlocks(tx, STAGE, whole.map((b) => ({ origin: b.origin, tenantId: b.events[0].tenantId })));
  const singles = blocks.filter((b) => b.events.length === 1).map((b) => b.events[0]);
  const freshSingles = await claimSingles(tx, singles);
  const todo = eventsToApply(blocks, freshBlocks, freshSingles);
  if (todo.length === 0) return [];

  // Each period and session the events touch, in the order they first come.
  const periods = new Map<string, PeriodState>();
  const sessions = new Map<string, SessionState>();
  // Per event of todo, its period and session (when its plan keeps one): found once, used twice.
  const periodAt: PeriodState[] = new Array(todo.length);
  const bySubscription = new Map<object, PeriodState>();
  const sessionAt: (SessionState | undefined)[] = new Array(todo.length);
  let period: PeriodState | undefined;
  let session: SessionState | undefined;
  for (let i = 0; i < todo.length; i++) {
    const e = todo[i];
    period = periodAt[i] = periodOf(periods, bySubscription, period, e, planOf);
    if (keepsSessionPosition(period.plan, e.sessionId)) session = sessionAt[i] = sessionOf(sessions, session, e);
  }
  const periodCalls = await lockPositions(
    tx,
    'invoice_period_calls',
    [...periods.values()].map(({ event: e }) => [e.tenantId, e.subscription.subscriptionId, new Date(e.subscription.periodStart).toISOString()]),
  );
  const sessionCalls = await lockPositions(
    tx,
    'invoice_session_calls',
    [...sessions.values()].map(({ event: e }) => [e.tenantId, e.subscription.subscriptionId, e.sessionId!]),
  );
  // The rows read (to update); the others are inserted.
  for (const p of periods.values()) {
    const calls = periodCalls.get(p.key);
    if (calls === undefined) continue;
    p.calls = calls;
    p.existed = true;
  }
  for (const s of sessions.values()) {
    const calls = sessionCalls.get(s.key);
    if (calls === undefined) continue;
    s.calls = calls;
    s.existed = true;
  }

  // Each event's usage rows, from its positions, folded into its period's rows as they come.
  const withRows: PeriodState[] = [];
  const before: CallPosition = { periodCalls: 0n, sessionCalls: 0n };
  for (let i = 0; i < todo.length; i++) {
    const e = todo[i];
    period = periodAt[i];
    period.events++;
    period.cost += e.cost.total;
    if (!countsAsCall(e.eventType)) continue;
    const s = sessionAt[i];
    before.periodCalls = period.calls;
    before.sessionCalls = s ? s.calls : 0n;
    if (!period.rows) withRows.push(period);
    addUsageRows(period.plan, e, e.cost, e.attribution.agentId ?? e.attribution.appId, before, 1n, (period.rows ??= new MergedRows()));
    period.calls++;
    if (s) s.calls++;
  }

  const usage: { tenant_id: string; subscription_id: string; period_start: string; kind: string; key: string; counters: string; order: string }[] = [];
  for (const { event: e, rows } of withRows) {
    const periodStart = new Date(e.subscription.periodStart).toISOString();
    for (const [kind, byKey] of rows!.merged()) {
      for (const [key, counters] of byKey) {
        usage.push({
          tenant_id: e.tenantId,
          subscription_id: e.subscription.subscriptionId,
          period_start: periodStart,
          kind,
          key,
          counters: JSON.stringify(counters, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)),
          order: e.subscription.subscriptionId + kind + key,
        });
      }
    }
  }
  // The order string built once per row, not twice per comparison (the same comparisons).
  usage.sort((a, b) => (a.order < b.order ? -1 : 1));
  if (usage.length) {
    await tx`
      INSERT INTO invoice_usage (tenant_id, subscription_id, period_start, kind, key, counters)
      SELECT t, s, p, k, y, c FROM unnest(
        ${usage.map((u) => u.tenant_id)}::text[], ${usage.map((u) => u.subscription_id)}::text[],
        ${usage.map((u) => u.period_start)}::text[]::timestamptz[], ${usage.map((u) => u.kind)}::text[],
        ${usage.map((u) => u.key)}::text[], ${usage.map((u) => u.counters)}::text[]::jsonb[]) AS x(t, s, p, k, y, c)
      ON CONFLICT (tenant_id, subscription_id, period_start, kind, key)
      DO UPDATE SET counters = add_counters(invoice_usage.counters, excluded.counters), updated_at = now()`;
  }
  await writePositions(
    tx,
    'invoice_period_calls',
    [...periods.values()].map(({ event: e, calls, events, cost, existed }) => ({
      key: [e.tenantId, e.subscription.subscriptionId, new Date(e.subscription.periodStart).toISOString()],
      calls,
      events: BigInt(events),
      cost,
      existed,
    })),
  );
  await writePositions(
    tx,
    'invoice_session_calls',
    [...sessions.values()].map(({ event: e, calls, existed }) => ({ key: [e.tenantId, e.subscription.subscriptionId, e.sessionId!], calls, existed })),
  );
  // Prepaid credits pay for the rated usage, in the same transaction (store/credits.ts).
  const draws: CreditDraw[] = [...periods.values()].map(({ cost, event: e }) => ({
    tenantId: e.tenantId,
    customerId: e.attribution.customerId,
    currency: e.subscription.currency,
    subscriptionId: e.subscription.subscriptionId,
    periodStart: e.subscription.periodStart,
    amountNano: cost,
  }));
  return drawCredits(tx, draws);
}

/** The same for events handed one by one (each claimed on its own, in invoice_applied): tests and tools. */
export async function rollUp(
  sql: Sql,
  plans: PlanCache,
  batch: StageEntry<LedgeredEvent>[],
  onCreditsExhausted?: (accounts: CreditAccountKey[], eventId: string) => Promise<void>,
): Promise<EntryResult[]> {
  const results = await rollUpBlocks(
    sql,
    plans,
    batch.map((entry) => ({ origin: entry.id, events: [entry.payload] })),
    onCreditsExhausted,
  );
  return results.map((r) => r[0]);
}

/** Records single events in invoice_applied; returns the events (ids per tenant) not applied before. */
async function claimSingles(tx: TransactionSql, events: LedgeredEvent[]): Promise<Map<string, Set<string>>> {
  const fresh = new Map<string, Set<string>>();
  if (events.length === 0) return fresh;
  const applied = await tx<{ tenant_id: string; event_id: string }[]>`
    INSERT INTO invoice_applied (tenant_id, event_id)
    SELECT * FROM unnest(${events.map((e) => e.tenantId)}::text[], ${events.map((e) => e.eventId)}::text[])
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, event_id`;
  for (const r of applied) idsOf(fresh, r.tenant_id).add(r.event_id);
  return fresh;
}

/**
 * Locks and reads the position rows that exist, in key order so that concurrent workers never
 * wait on each other in a cycle. A key without a row starts at 0 and is inserted with its final
 * value by writePositions: one row write per new session, not an insert and an update.
 */
async function lockPositions(tx: TransactionSql, table: PositionTable, keys: string[][]): Promise<Map<string, bigint>> {
  const positions = new Map<string, bigint>();
  if (keys.length === 0) return positions;
  const [a, b, c] = [keys.map((k) => k[0]), keys.map((k) => k[1]), keys.map((k) => k[2])];
  const { third, cast } = positionColumn(tx, table);
  const rows = await tx<{ tenant_id: string; subscription_id: string; third: Date | string; calls: string }[]>`
    SELECT t.tenant_id, t.subscription_id, t.${third} AS third, t.calls
    FROM ${tx(table)} t
    JOIN unnest(${a}::text[], ${b}::text[], ${c}${cast}) AS k(tenant_id, subscription_id, third)
      ON t.tenant_id = k.tenant_id AND t.subscription_id = k.subscription_id AND t.${third} = k.third
    ORDER BY 1, 2, 3
    FOR UPDATE OF t`;
  for (const row of rows) {
    const third = row.third instanceof Date ? String(row.third.getTime()) : row.third;
    positions.set(`${row.tenant_id}\u0000${row.subscription_id}\u0000${third}`, BigInt(row.calls));
  }
  return positions;
}

type PositionTable = 'invoice_period_calls' | 'invoice_session_calls';

function positionColumn(tx: TransactionSql, table: PositionTable) {
  return table === 'invoice_period_calls'
    ? { third: tx`period_start`, cast: tx`::text[]::timestamptz[]` }
    : { third: tx`session_id`, cast: tx`::text[]` };
}

interface Position {
  key: string[];
  /** The position after the batch. */
  calls: bigint;
  /** Added to the period's events and cost (periods only). */
  events?: bigint;
  cost?: bigint;
  /** The row was there (and is locked): updated; otherwise inserted. */
  existed: boolean;
}

/**
 * Writes the positions after the batch: an update of the rows read, an insert of the new ones.
 * A new row another transaction inserted since our read throws PositionTaken (the batch goes
 * round once more, reading it).
 */
async function writePositions(tx: TransactionSql, table: PositionTable, positions: Position[]): Promise<void> {
  const { third, cast } = positionColumn(tx, table);
  const periods = table === 'invoice_period_calls';
  const column = (list: Position[], i: number) => list.map((p) => p.key[i]);
  const old = positions.filter((p) => p.existed);
  if (old.length) {
    await tx`
      UPDATE ${tx(table)} AS t SET calls = x.calls
        ${periods ? tx`, events = t.events + x.events, cost_nano = t.cost_nano + x.cost` : tx``}
      FROM unnest(${column(old, 0)}::text[], ${column(old, 1)}::text[], ${column(old, 2)}${cast},
                  ${old.map((p) => p.calls.toString())}::text[]::int8[], ${old.map((p) => (p.events ?? 0n).toString())}::text[]::int8[],
                  ${old.map((p) => (p.cost ?? 0n).toString())}::text[]::numeric[]) AS x(t, s, k, calls, events, cost)
      WHERE t.tenant_id = x.t AND t.subscription_id = x.s AND t.${third} = x.k`;
  }
  const fresh = positions.filter((p) => !p.existed);
  if (fresh.length === 0) return;
  const inserted = await tx`
    INSERT INTO ${tx(table)} (tenant_id, subscription_id, ${third}, calls ${periods ? tx`, events, cost_nano` : tx``})
    SELECT t, s, k, calls ${periods ? tx`, events, cost` : tx``} FROM unnest(
      ${column(fresh, 0)}::text[], ${column(fresh, 1)}::text[], ${column(fresh, 2)}${cast},
      ${fresh.map((p) => p.calls.toString())}::text[]::int8[], ${fresh.map((p) => (p.events ?? 0n).toString())}::text[]::int8[],
      ${fresh.map((p) => (p.cost ?? 0n).toString())}::text[]::numeric[]) AS x(t, s, k, calls, events, cost)
    ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING`;
  if (inserted.count !== fresh.length) throw new PositionTaken(`${fresh.length - inserted.count} rows of ${table} appeared meanwhile`);
}

export const invoiceRollupStage: StageDefinition<LedgeredEvent> = {
  name: STAGE,
  input: STREAMS.ledgered,
  outputs: [],
  batchSize: AGGREGATE_BATCH_EVENTS,
  lingerMs: AGGREGATE_LINGER_MS,
  async setup({ log, sql, redis, config }) {
    const plans = new PlanCache(sql);
    const place = { prefix: config.REDIS_PREFIX, partitions: config.PARTITIONS };
    const stopPruning = pruneAppliedEvery(sql, STAGE, (err) => log.warn({ err }, 'pruning applied rows failed'), 'invoice_applied');
    const exhausted = (accounts: CreditAccountKey[], eventId: string) => pauseExhausted(sql, redis, place, accounts, eventId);
    return {
      handle: (batch) => rollUp(sql, plans, batch, exhausted),
      handleBlocks: (blocks) =>
        rollUpBlocks(
          sql,
          plans,
          blocks.map((b) => ({ origin: b.origin, events: b.events.map((e) => e.payload) })),
          exhausted,
        ),
      async close() {
        stopPruning();
      },
    };
  },
};
