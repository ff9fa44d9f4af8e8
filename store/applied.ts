import type postgres from 'postgres';
import type { Sql } from '../pipeline/postgres.js';

/**
 * Records blocks of events as applied by a stage (see migration 080), in the caller's
 * transaction; returns the origins not applied before.
 */
export async function claimBlocks(tx: postgres.TransactionSql, stage: string, blocks: { origin: string; tenantId: string }[]): Promise<Set<string>> {
  if (blocks.length === 0) return new Set();
  const sorted = [...new Map(blocks.map((b) => [b.origin, b])).values()].sort((a, b) => (a.origin < b.origin ? -1 : 1));
  const rows = await tx<{ origin: string }[]>`
    INSERT INTO applied_blocks (stage, tenant_id, origin)
    SELECT ${stage}, * FROM unnest(${sorted.map((b) => b.tenantId)}::text[], ${sorted.map((b) => b.origin)}::text[])
    ON CONFLICT DO NOTHING
    RETURNING origin`;
  return new Set(rows.map((r) => r.origin));
}

/** The applied_blocks origin that stands for one event (no block origin contains '/'). */
const eventOrigin = (tenantId: string, eventId: string): string => `e/${tenantId}/${eventId}`;

/**
 * Records single events as applied by a stage in applied_blocks (origin `e/<tenant>/<event>`),
 * in the caller's transaction, for a stage without a per-event table of its own: the events of a
 * block it cannot claim whole (a single event split off its block, or a block some of whose
 * events failed). Returns the events not applied before, each once.
 */
export async function claimEventOrigins<E extends { tenantId: string; eventId: string }>(tx: postgres.TransactionSql, stage: string, events: E[]): Promise<E[]> {
  if (events.length === 0) return [];
  const byOrigin = new Map(events.map((e) => [eventOrigin(e.tenantId, e.eventId), e]));
  const fresh = await claimBlocks(tx, stage, [...byOrigin].map(([origin, e]) => ({ origin, tenantId: e.tenantId })));
  return [...byOrigin].filter(([origin]) => fresh.has(origin)).map(([, e]) => e);
}

/**
 * The per-stage "applied" tables (an event id per row, written in the same transaction as the
 * counters it moved) only need their rows while an entry can still be redelivered. Old rows are
 * deleted in bounded chunks, so pruning never holds long locks or one huge transaction; what a
 * pass leaves is taken by the next one. Returns the number of rows deleted.
 *
 * applied_blocks is shared by every stage that claims blocks: prune it with pruneAppliedBlocks,
 * one stage's rows at a time, never all of them.
 */
export function pruneApplied(sql: Sql, table: 'session_applied_events' | 'invoice_applied', before: Date, chunk: number, maxRounds = 20): Promise<number> {
  return pruneInChunks(
    (limit) => sql`
      DELETE FROM ${sql(table)} WHERE ctid = ANY (ARRAY (
        SELECT ctid FROM ${sql(table)} WHERE applied_at < ${before} LIMIT ${limit}))`,
    chunk,
    maxRounds,
  );
}

/**
 * Deletes the applied_blocks rows of one stage applied before `before`, in bounded chunks as
 * pruneApplied does (index applied_blocks_stage_applied_at, migration 120). Only the stage's
 * own rows: a row is needed while the stage that wrote it may be delivered the block again, and
 * another stage may be down or behind for longer than this one's retention (a block it committed
 * but never acked would otherwise be applied, and billed, twice).
 */
export function pruneAppliedBlocks(sql: Sql, stage: string, before: Date, chunk: number, maxRounds = 20): Promise<number> {
  return pruneInChunks(
    (limit) => sql`
      DELETE FROM applied_blocks WHERE ctid = ANY (ARRAY (
        SELECT ctid FROM applied_blocks WHERE stage = ${stage} AND applied_at < ${before} LIMIT ${limit}))`,
    chunk,
    maxRounds,
  );
}

/** A redelivery only happens while an entry is pending: a day is far beyond that. */
const APPLIED_RETENTION_MS = 24 * 3600_000;
const PRUNE_INTERVAL_MS = 10 * 60_000;
const PRUNE_CHUNK = 5000;

/**
 * Every `intervalMs`, deletes `stage`'s applied_blocks rows older than APPLIED_RETENTION_MS, and
 * those of its own applied table when it has one. Returns what stops it (the stage's close).
 */
export function pruneAppliedEvery(
  sql: Sql,
  stage: string,
  onError: (err: unknown) => void,
  table?: 'invoice_applied',
  intervalMs = PRUNE_INTERVAL_MS,
): () => void {
  const timer = setInterval(() => {
    const before = new Date(Date.now() - APPLIED_RETENTION_MS);
    Promise.all([pruneAppliedBlocks(sql, stage, before, PRUNE_CHUNK), ...(table ? [pruneApplied(sql, table, before, PRUNE_CHUNK)] : [])]).catch(onError);
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

async function pruneInChunks(deleteChunk: (limit: number) => Promise<{ count: number }>, chunk: number, maxRounds: number): Promise<number> {
  let pruned = 0;
  for (let round = 0; round < maxRounds; round++) {
    const deleted = await deleteChunk(chunk);
    pruned += deleted.count;
    if (deleted.count < chunk) break;
  }
  return pruned;
}

/**
 * Batching of the stages that keep aggregates in PostgreSQL (session-update, cogs,
 * invoice-rollup): they write one row per key per batch, not per event, so the larger the batch
 * the fewer rows per event. A read waits up to AGGREGATE_LINGER_MS for more blocks (only while
 * blocks keep arriving), up to AGGREGATE_BATCH_EVENTS events: under load a batch holds a second
 * of events, and the rows written per event fall as the load grows (BENCHMARKS.md, "Data path v2":
 * 2.0 rows per event with 500 ms, 1.46 with 2 s at 3,500 events/s). The price: these aggregates
 * (sessions, invoice usage, credits drawn, COGS) trail the ledger by up to the linger; the ledger,
 * the spend caps (cap-check) and the alerts do not wait for it.
 */
export const AGGREGATE_BATCH_EVENTS = 20_000;
export const AGGREGATE_LINGER_MS = 1000;
