import type { Sql } from '../pipeline/postgres.js';

/**
 * The per-stage "applied" tables (an event id per row, written in the same transaction as the
 * counters it moved) only need their rows while an entry can still be redelivered. Old rows are
 * deleted in bounded chunks, so pruning never holds long locks or one huge transaction; what a
 * pass leaves is taken by the next one. Returns the number of rows deleted.
 */
export async function pruneApplied(
  sql: Sql,
  table: 'session_applied_events' | 'invoice_applied',
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
