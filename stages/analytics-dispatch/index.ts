import { ClickHouseError } from '@clickhouse/client';
import { isTransient } from '../../pipeline/errors.js';
import { STREAMS } from '../../store/streams.js';
import { TransientError, type EntryResult, type StageDefinition, type StageEntry } from '../../pipeline/stage.js';
import { connectClickHouse, type ClickHouseClient } from '../../store/clickhouse.js';
import type { AnalyticsEvent } from '../../domain/events.js';
import { LedgerExport } from './export.js';
import { invocationRow } from './rows.js';

export { invocationRow, type InvocationRow } from './rows.js';

export const INVOCATIONS_TABLE = 'invocations';

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
 * Inserts the batch into {db}.invocations in one INSERT. Exactly-once is the table's: a
 * redelivered batch inserts the same rows again, which replace themselves (ReplacingMergeTree
 * on (tenant_id, recorded_date, event_id)) and are counted once by every FINAL read. While
 * ClickHouse is down the insert fails as transient, so the harness keeps the batch in hand and
 * the events wait (in the ledger: the export stops filling the stream at its high-water mark).
 * A batch ClickHouse refuses for its data is split by the harness until the rows at fault are
 * found; they go to the dead letters, the rest go in.
 */
export async function dispatchBatch(clickhouse: ClickHouseClient, batch: StageEntry<AnalyticsEvent>[]): Promise<EntryResult[]> {
  if (batch.length) {
    try {
      await clickhouse.insert({ table: INVOCATIONS_TABLE, values: batch.map((e) => invocationRow(e.payload)), format: 'JSONEachRow' });
    } catch (error) {
      if (isDataError(error)) throw error;
      throw new TransientError(`ClickHouse insert failed: ${(error as Error)?.message ?? String(error)}`, { cause: error });
    }
  }
  return batch.map(() => ({}));
}

export const analyticsDispatchStage: StageDefinition<AnalyticsEvent> = {
  name: 'analytics-dispatch',
  input: STREAMS.analytics,
  outputs: [],
  batchSize: 5000,
  // A batch goes in at 5000 rows or after ANALYTICS_FLUSH_MS, whichever first.
  lingerMs: (config) => config.ANALYTICS_FLUSH_MS,
  async setup({ config, sql, redis, log, metrics }) {
    const clickhouse = connectClickHouse({
      url: config.CLICKHOUSE_URL,
      database: config.CLICKHOUSE_DATABASE,
      username: config.CLICKHOUSE_USER,
      password: config.CLICKHOUSE_PASSWORD,
    });
    const ledgerExport = new LedgerExport(sql, redis, config, log.child({ component: 'ledger-export' }), metrics);
    ledgerExport.start();
    return {
      handle: (batch) => dispatchBatch(clickhouse, batch),
      async close() {
        await ledgerExport.stop();
        await clickhouse.close();
      },
    };
  },
};
