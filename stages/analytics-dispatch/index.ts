import { ClickHouseError } from '@clickhouse/client';
import { STREAMS } from '../../store/streams.js';
import { TransientError, type EntryResult, type StageDefinition, type StageEntry } from '../../pipeline/stage.js';
import { connectClickHouse, type ClickHouseClient } from '../../store/clickhouse.js';
import type { LedgeredEvent } from '../../domain/flow.js';
import { invocationRow } from './rows.js';

const INVOCATIONS_TABLE = 'invocations';

/**
 * ClickHouse error codes that mean "this data cannot go in" (a bad value), not "ClickHouse is
 * unavailable": CANNOT_PARSE_TEXT, CANNOT_PARSE_QUOTED_STRING, CANNOT_PARSE_INPUT_ASSERTION_FAILED,
 * ATTEMPT_TO_READ_AFTER_EOF, CANNOT_PARSE_DATE, CANNOT_PARSE_DATETIME, TYPE_MISMATCH,
 * ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA, TOO_LARGE_STRING_SIZE.
 */
const DATA_ERROR_CODES = new Set(['6', '26', '27', '32', '38', '41', '53', '69', '70', '72', '117', '131']);

/** The ClickHouse error code of a failure, from the client's parsed error or the server's text ("Code: 27, ..."). */
function clickHouseCode(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof ClickHouseError && e.code) return String(e.code);
    const match = /\bCode: (\d+)\b/.exec(String((e as { message?: unknown }).message ?? ''));
    if (match) return match[1];
  }
  return undefined;
}

/**
 * Whether a failed insert is a data error, to be narrowed down to the entry at fault, rather
 * than something to wait out (the server down, overloaded, timing out, the table not migrated yet).
 */
export function isDataError(error: unknown): boolean {
  const code = clickHouseCode(error);
  return code !== undefined && DATA_ERROR_CODES.has(code);
}

/**
 * Inserts the batch into {db}.invocations in one INSERT. Exactly-once is the table's: a
 * redelivered batch inserts the same rows again, which replace themselves (ReplacingMergeTree
 * on (tenant_id, recorded_date, event_id)) and are counted once by every FINAL read. While
 * ClickHouse is down the insert fails as transient, so the harness keeps the batch in hand
 * and the events wait in the stream.
 */
export async function dispatchBatch(clickhouse: ClickHouseClient, batch: StageEntry<LedgeredEvent>[]): Promise<EntryResult[]> {
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

export const analyticsDispatchStage: StageDefinition<LedgeredEvent> = {
  name: 'analytics-dispatch',
  input: STREAMS.ledgered,
  outputs: [],
  batchSize: 5000,
  // A batch goes in at 5000 rows or after ANALYTICS_FLUSH_MS, whichever first.
  lingerMs: (config) => config.ANALYTICS_FLUSH_MS,
  async setup({ config }) {
    const clickhouse = connectClickHouse({
      url: config.CLICKHOUSE_URL,
      database: config.CLICKHOUSE_DATABASE,
      username: config.CLICKHOUSE_USER,
      password: config.CLICKHOUSE_PASSWORD,
    });
    return {
      handle: (batch) => dispatchBatch(clickhouse, batch),
      close: () => clickhouse.close(),
    };
  },
};
