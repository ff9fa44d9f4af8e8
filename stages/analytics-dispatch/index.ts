import { Readable } from 'node:stream';
import { ClickHouseError } from '@clickhouse/client';
import { isTransient } from '../../pipeline/errors.js';
import { STREAMS } from '../../store/streams.js';
import { TransientError } from '../../pipeline/errors.js';
import type { EntryResult, StageDefinition, StageEntry } from '../../pipeline/stage.js';
import { isUsageEventType } from '../../domain/events.js';
import { chString, connectClickHouse, type ClickHouseClient } from '../../store/clickhouse.js';
import { watchedCostModels, type CostModelCache } from '../../store/cost-model-cache.js';
import { eventCogs } from '../../store/cost-model.js';
import type { AnalyticsEvent } from '../../domain/flow.js';
import { LedgerExport } from './export.js';
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
 * Inserts the batch into {db}.invocations in one INSERT, each row with its COGS (the cost model
 * code of the cogs stage; 0 without cost models). Exactly once: the ledger export appends every
 * ledger row once, so only a batch that may have been inserted before (delivered again after a
 * crash before its ack, or tried already in this process: an insert whose outcome is unknown) can
 * hold events invocations already has; for such a batch those events are looked up and left out,
 * so the materialized views that keep the rollups see each event once; were
 * one to slip in twice (two workers inserting the same event at the same instant), the table
 * still replaces it by (tenant_id, recorded_date, event_id) for FINAL reads, and
 * `npm run reconcile` finds and repairs the rollups. While ClickHouse is down the insert fails
 * as transient, so the harness keeps the batch in hand and the events wait (in the ledger: the
 * export stops filling the stream at its high-water mark). A batch ClickHouse refuses for its data
 * is split by the harness until the rows at fault are found; they go to the dead letters.
 */
export async function dispatchBatch(
  clickhouse: ClickHouseClient,
  batch: StageEntry<AnalyticsEvent>[],
  costModels?: CostModelCache,
): Promise<EntryResult[]> {
  const results: EntryResult[] = batch.map(() => ({}));
  if (batch.length === 0) return results;
  const models = costModels ? await costModels.load(batch.map((e) => e.payload.tenantId)) : undefined;
  const maybeInserted = batch.some((entry) => entry.redelivered || attempted.has(entry));
  for (const entry of batch) attempted.add(entry);
  try {
    const seen = maybeInserted ? await insertedAlready(clickhouse, batch) : new EventKeys();
    const body = new JsonRows();
    batch.forEach(({ payload: event }, i) => {
      let cogsNano = 0n;
      if (models && isUsageEventType(event.eventType)) {
        const cogs = eventCogs(models.get(event.tenantId) ?? [], event);
        if (cogs instanceof Error) {
          results[i] = { error: cogs };
          return;
        }
        cogsNano = cogs.cogsNano;
      }
      // Added as it is checked: the same event twice in one batch goes in once.
      if (!seen.add(event.tenantId, event.eventId)) return;
      body.add(invocationRow(event, cogsNano));
    });
    if (body.rows > 0) {
      // exec, not insert: the client's insert wants JSONEachRow as objects; this body is the text already.
      const inserted = await clickhouse.exec({ query: `INSERT INTO ${INVOCATIONS_TABLE} FORMAT JSONEachRow`, values: body.stream() });
      inserted.stream.resume();
      await new Promise((resolve) => inserted.stream.on('end', resolve).on('close', resolve));
    }
  } catch (error) {
    if (isDataError(error)) throw error;
    throw new TransientError(`ClickHouse insert failed: ${(error as Error)?.message ?? String(error)}`, { cause: error });
  }
  return results;
}

/** (tenant, event id) pairs, without a joined string per pair. */
class EventKeys {
  private readonly byTenant = new Map<string, Set<string>>();

  /** False when the pair is there already. */
  add(tenantId: string, eventId: string): boolean {
    let events = this.byTenant.get(tenantId);
    if (!events) this.byTenant.set(tenantId, (events = new Set()));
    if (events.has(eventId)) return false;
    events.add(eventId);
    return true;
  }
}

/**
 * The insert's body as JSONEachRow text, built row by row as the batch is read: a row object
 * lives only while it is written out, and the text is joined every ROWS_PER_CHUNK rows into one
 * string (large enough for V8's large-object space, which the young-generation collector never
 * copies). Holding a 20,000-row batch as row objects until the insert made the collector copy
 * them over and over.
 */
class JsonRows {
  private static readonly ROWS_PER_CHUNK = 1000;
  private readonly chunks: string[] = [];
  private pending: string[] = [];
  rows = 0;

  add(row: InvocationRow): void {
    this.pending.push(JSON.stringify(row));
    this.rows++;
    if (this.pending.length === JsonRows.ROWS_PER_CHUNK) this.flush();
  }

  /** The body, as a byte stream the client sends as it is (not object mode). */
  stream(): Readable {
    this.flush();
    return Readable.from(this.chunks, { objectMode: false });
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    this.chunks.push(`${this.pending.join('\n')}\n`);
    this.pending = [];
  }
}

/** Entries an insert was tried for in this process (the harness hands the same objects again when it retries a batch). */
const attempted = new WeakSet<StageEntry<AnalyticsEvent>>();

// Keeps each lookup well under ClickHouse's max_query_size (256 KiB) for ids up to 128 characters.
const LOOKUP_CHUNK = 500;

/** The (tenant, event id) pairs of the batch that invocations already holds: one primary-key lookup per chunk. */
async function insertedAlready(clickhouse: ClickHouseClient, batch: StageEntry<AnalyticsEvent>[]): Promise<EventKeys> {
  const found = new EventKeys();
  for (let start = 0; start < batch.length; start += LOOKUP_CHUNK) {
    const keys = batch
      .slice(start, start + LOOKUP_CHUNK)
      .map(({ payload: e }) => `(${chString(e.tenantId)}, toDate(${chString(chDate(e.recordedAt))}), ${chString(e.eventId)})`);
    const result = await clickhouse.query({
      query: `SELECT tenant_id, event_id FROM ${INVOCATIONS_TABLE} WHERE (tenant_id, recorded_date, event_id) IN (${keys.join(', ')})`,
      format: 'JSONEachRow',
    });
    for (const row of await result.json<{ tenant_id: string; event_id: string }>()) found.add(row.tenant_id, row.event_id);
  }
  return found;
}

export const analyticsDispatchStage: StageDefinition<AnalyticsEvent> = {
  name: 'analytics-dispatch',
  input: STREAMS.analytics,
  outputs: [],
  // A batch goes in at ANALYTICS_BATCH_ROWS rows or after ANALYTICS_FLUSH_MS, whichever first.
  batchSize: (config) => config.ANALYTICS_BATCH_ROWS,
  lingerMs: (config) => config.ANALYTICS_FLUSH_MS,
  async setup({ config, sql, redis, log, metrics, onControl }) {
    const clickhouse = connectClickHouse({
      url: config.CLICKHOUSE_URL,
      database: config.CLICKHOUSE_DATABASE,
      username: config.CLICKHOUSE_USER,
      password: config.CLICKHOUSE_PASSWORD,
    });
    const models = await watchedCostModels(sql, onControl);
    const ledgerExport = new LedgerExport(sql, redis, config, log.child({ component: 'ledger-export' }), metrics);
    ledgerExport.start();
    return {
      handle: (batch) => dispatchBatch(clickhouse, batch, models),
      async close() {
        await ledgerExport.stop();
        await clickhouse.close();
      },
    };
  },
};
