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

/**
 * The per-stage "applied" tables (an event id per row, written in the same transaction as the
 * counters it moved) only need their rows while an entry can still be redelivered. Old rows are
 * deleted in bounded chunks, so pruning never holds long locks or one huge transaction; what a
 * pass leaves is taken by the next one. Returns the number of rows deleted.
 */
export async function pruneApplied(
  sql: Sql,
  table: 'session_applied_events' | 'invoice_applied' | 'applied_blocks',
  before: Date,
  chunk: number,
  maxRounds = 20,
): Promise<number> {
  let pruned = 0;
  for (let round = 0; round < maxRounds; round++) {
    const deleted = await sql`
      DELETE FROM ${sql(table)} WHERE ctid = ANY (ARRAY (
        SELECT ctid FROM ${sql(table)} WHERE applied_at < ${before} LIMIT ${chunk}))`;
    pruned += deleted.count;
    if (deleted.count < chunk) break;
  }
  return pruned;
}
