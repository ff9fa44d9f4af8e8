import { ClickHouseLogLevel, createClient, type ClickHouseClient, type ClickHouseSettings as ServerSettings } from '@clickhouse/client';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';

export type { ClickHouseClient };

export interface ClickHouseSettings {
  url: string;
  database: string;
  username?: string;
  password?: string;
  /** Longest wait for one request (ms). Default 30,000. */
  requestTimeoutMs?: number;
}

export function connectClickHouse(settings: ClickHouseSettings): ClickHouseClient {
  return createClient({
    url: settings.url,
    database: settings.database,
    username: settings.username ?? 'default',
    password: settings.password ?? '',
    request_timeout: settings.requestTimeoutMs ?? 30_000,
    // Failures reach the caller as errors (and the stage's pino log); the client's own console logging is off.
    log: { level: ClickHouseLogLevel.OFF },
  });
}

/** Quotes a string literal for ClickHouse SQL (18.16 has no server-side query parameters). */
export function chString(value: string): string {
  return "'" + value.replace(/\\/g, '\\\\').replace(/'/g, "\\'") + "'";
}

/** About this many characters of JSONEachRow per chunk of an insert's body. */
const INSERT_CHUNK_CHARS = 64 * 1024;

/**
 * Inserts `rows` into `table` as JSONEachRow, the body streamed in chunks of about 64 KiB. The
 * client's own insert joins every row into one string and encodes that whole: for a batch of
 * 20,000 analytics rows, two fresh allocations of ~19 MB per insert, each mapped anew and faulted
 * in page by page (on a VM with costly page faults, a third of the analytics stage's faults).
 * Fails as the client's insert does (ClickHouseError with the server's code). `options`: a query
 * id and settings for the insert (the insert benchmark logs each one).
 */
export async function insertJsonRows(
  clickhouse: ClickHouseClient,
  table: string,
  rows: readonly object[],
  options: { query_id?: string; clickhouse_settings?: ServerSettings } = {},
): Promise<void> {
  const result = await clickhouse.exec({
    query: `INSERT INTO ${table} FORMAT JSONEachRow`,
    values: Readable.from(jsonEachRowChunks(rows), { objectMode: false }),
    ...options,
  });
  await finished(result.stream.resume());
}

function* jsonEachRowChunks(rows: readonly object[]): Generator<Buffer> {
  let chunk = '';
  for (const row of rows) {
    chunk += `${JSON.stringify(row)}\n`;
    if (chunk.length >= INSERT_CHUNK_CHARS) {
      yield Buffer.from(chunk);
      chunk = '';
    }
  }
  if (chunk) yield Buffer.from(chunk);
}
