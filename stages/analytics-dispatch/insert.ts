import { ClickHouseError } from '@clickhouse/client';
import { isTransient, TransientError } from '../../pipeline/errors.js';
import { mapBatch } from '../../pipeline/arrays.js';
import { isUsageEventType } from '../../domain/events.js';
import type { AnalyticsEvent } from '../../domain/flow.js';
import { chString, insertJsonRows, type ClickHouseClient } from '../../store/clickhouse.js';
import type { CostModelCache } from '../../store/cost-model-cache.js';
import { eventCogs } from '../../store/cost-model.js';
import { chDate, invocationRow, type InvocationRow } from './rows.js';

const INVOCATIONS_TABLE = 'invocations';

/**
 * ClickHouse error codes that mean "ClickHouse cannot take anything now" rather than "this row
 * is bad": timeouts and network errors, overload (too many queries, parts, memory), read-only
 * tables, aborted or cancelled queries, unknown status of an insert, authentication, and a
 * database or table not migrated yet. Any other code is the server refusing the data (a parse
 * error such as Code 25 or 27, a type mismatch, a value out of range).
 */
const OUTAGE_CODES = new Set([
  '60', '81', '159', '164', '192', '194', '202', '203', '209', '210', '236', '241', '242', '252', '279', '319', '394', '425', '516', '999', '1000',
]);

/** The ClickHouse error code of a failure, from the client's parsed error or the server's text ("Code: 27, ..."). */
export function clickHouseCode(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof ClickHouseError && e.code) return String(e.code);
    const match = /\bCode: (\d+)\b/.exec(String((e as { message?: unknown }).message ?? ''));
    if (match) return match[1];
  }
  return undefined;
}

/**
 * Whether a failed insert is a data error, to be narrowed down to the rows at fault and
 * dead-lettered after a few tries, rather than an outage to wait out. Only the server can say a
 * row is bad: a failure without a ClickHouse code (refused connection, reset, timeout, a proxy's
 * 502) is an outage.
 */
export function isDataError(error: unknown): boolean {
  const code = clickHouseCode(error);
  return code !== undefined && !OUTAGE_CODES.has(code) && !isTransient(error);
}

/**
 * Inserts `events` into {db}.invocations in one INSERT, each row with its COGS (the cost model
 * code of the cogs stage; 0 without cost models); returns, per event, the error of one whose
 * COGS cannot be computed (left out). Exactly once: with `maybeInserted` (the events may have been
 * inserted before: delivered again after a crash, an insert whose outcome is unknown, a backlog
 * row) those events ClickHouse already has are looked up and left out, so the materialized views
 * that keep the rollups see each event once; were one to slip in twice (two workers inserting
 * the same event at the same instant), the table still replaces it by (tenant_id, recorded_date,
 * event_id) for FINAL reads, and `npm run reconcile` finds and repairs the rollups. An outage
 * fails as TransientError; a refusal of the data fails as the server's error (isDataError).
 */
export async function insertInvocations(
  clickhouse: ClickHouseClient,
  events: readonly AnalyticsEvent[],
  options: { costModels?: CostModelCache; maybeInserted: boolean },
): Promise<(Error | undefined)[]> {
  const errors: (Error | undefined)[] = mapBatch(events, () => undefined);
  if (events.length === 0) return errors;
  const models = options.costModels ? await options.costModels.load(mapBatch(events, (e) => e.tenantId)) : undefined;
  // The events to insert and each one's COGS; their rows are built only as the insert's body is sent (rowsOf).
  const costed: AnalyticsEvent[] = [];
  const cogsOf: bigint[] = [];
  events.forEach((event, i) => {
    let cogsNano = 0n;
    if (models && isUsageEventType(event.eventType)) {
      const cogs = eventCogs(models.get(event.tenantId) ?? [], event);
      if (cogs instanceof Error) {
        errors[i] = cogs;
        return;
      }
      cogsNano = cogs.cogsNano;
    }
    costed.push(event);
    cogsOf.push(cogsNano);
  });
  try {
    const seen = options.maybeInserted ? await insertedAlready(clickhouse, costed) : new Set<string>();
    const fresh: number[] = [];
    for (let i = 0; i < costed.length; i++) {
      const key = eventKey(costed[i]);
      if (seen.has(key)) continue;
      seen.add(key); // the same event twice in one batch goes in once
      fresh.push(i);
    }
    for (const part of byMonths(fresh, costed)) await insertJsonRows(clickhouse, INVOCATIONS_TABLE, rowsOf(part, costed, cogsOf));
  } catch (error) {
    if (isDataError(error)) throw error;
    throw new TransientError(`ClickHouse insert failed: ${(error as Error)?.message ?? String(error)}`, { cause: error });
  }
  return errors;
}

/**
 * invocations is partitioned by month, and current ClickHouse releases refuse an insert that
 * touches more than 100 partitions (max_partitions_per_insert_block; Code 252, which reads as an
 * outage: the batch, or the backlog's oldest page, would be retried for good). A backfill can span
 * more months than that: its rows go in inserts of at most this many months each.
 */
const MAX_MONTHS_PER_INSERT = 100;
const monthOf = (ms: number) => {
  const date = new Date(ms);
  return date.getUTCFullYear() * 12 + date.getUTCMonth();
};

/** `indexes` of `events` in parts of at most MAX_MONTHS_PER_INSERT months each: one part in the usual case (none for none). */
function byMonths(indexes: number[], events: AnalyticsEvent[]): number[][] {
  if (indexes.length === 0) return [];
  let earliest = Infinity;
  let latest = -Infinity;
  for (const i of indexes) {
    earliest = Math.min(earliest, events[i].recordedAt);
    latest = Math.max(latest, events[i].recordedAt);
  }
  if (monthOf(latest) - monthOf(earliest) < MAX_MONTHS_PER_INSERT) return [indexes];
  const byMonth = new Map<number, number[]>();
  for (const i of indexes) {
    const month = monthOf(events[i].recordedAt);
    const list = byMonth.get(month);
    if (list) list.push(i);
    else byMonth.set(month, [i]);
  }
  const months = [...byMonth.keys()].sort((a, b) => a - b);
  const parts: number[][] = [];
  for (let m = 0; m < months.length; m += MAX_MONTHS_PER_INSERT) parts.push(months.slice(m, m + MAX_MONTHS_PER_INSERT).flatMap((month) => byMonth.get(month)!));
  return parts;
}

/** The rows of events[i] for each i of `indexes`, each built when the insert's body asks for it. */
function* rowsOf(indexes: number[], events: AnalyticsEvent[], cogsOf: bigint[]): Generator<InvocationRow> {
  for (const i of indexes) yield invocationRow(events[i], cogsOf[i]);
}

const eventKey = (event: AnalyticsEvent) => `${event.tenantId}\u0000${event.eventId}`;
// Keeps each lookup well under ClickHouse's max_query_size (256 KiB) for ids up to 128 characters.
const LOOKUP_CHUNK = 500;

/** The keys (tenant, event id) of those events that invocations already holds: one primary-key lookup per chunk. */
async function insertedAlready(clickhouse: ClickHouseClient, events: AnalyticsEvent[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (let start = 0; start < events.length; start += LOOKUP_CHUNK) {
    const keys = events
      .slice(start, start + LOOKUP_CHUNK)
      .map((e) => `(${chString(e.tenantId)}, toDate(${chString(chDate(e.recordedAt))}), ${chString(e.eventId)})`);
    const result = await clickhouse.query({
      query: `SELECT tenant_id, event_id FROM ${INVOCATIONS_TABLE} WHERE (tenant_id, recorded_date, event_id) IN (${keys.join(', ')})`,
      format: 'JSONEachRow',
    });
    for (const row of await result.json<{ tenant_id: string; event_id: string }>()) found.add(`${row.tenant_id}\u0000${row.event_id}`);
  }
  return found;
}

