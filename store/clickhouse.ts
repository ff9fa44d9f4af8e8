import { ClickHouseLogLevel, createClient, type ClickHouseClient, type ClickHouseSettings as ServerSettings } from '@clickhouse/client';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';

export type { ClickHouseClient };

/**
 * The first time ClickHouse's DateTime cannot hold (ms since 1970): seconds in 32 unsigned bits,
 * and on 18.16 a time outside wraps around (1890 or 2163 would read 2026). A range read from
 * ClickHouse stays from 1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z.
 */
export const CLICKHOUSE_TIME_LIMIT_MS = 2 ** 32 * 1000;
export const CLICKHOUSE_TIMES = 'must be between 1970-01-01T00:00:00Z and 2106-02-07T06:28:15Z (what ClickHouse keeps)';

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

/** Bytes of JSONEachRow per chunk of an insert's body (a longer row gets a chunk of its own size). */
const INSERT_CHUNK_BYTES = 64 * 1024;

/**
 * Inserts `rows` into `table` as JSONEachRow, the body streamed in chunks of about 64 KiB. The
 * client's own insert joins every row into one string and encodes that whole: for a batch of
 * 20,000 analytics rows, two fresh allocations of ~19 MB per insert, each mapped anew and faulted
 * in page by page (on a VM with costly page faults, a third of the analytics stage's faults).
 * `rows` is read once, as the body is sent: a generator that builds each row as it is asked for
 * keeps no row alive past its JSON (a batch's rows built up front outlived the young
 * generation's collections for as long as the insert took). Fails as the client's insert does
 * (ClickHouseError with the server's code). `options`: a query id and settings for the insert
 * (the insert benchmark logs each one).
 */
export async function insertJsonRows(
  clickhouse: ClickHouseClient,
  table: string,
  rows: Iterable<object>,
  options: { query_id?: string; clickhouse_settings?: ServerSettings } = {},
): Promise<void> {
  const result = await clickhouse.exec({
    query: `INSERT INTO ${table} FORMAT JSONEachRow`,
    values: Readable.from(jsonEachRowChunks(rows), { objectMode: false }),
    ...options,
  });
  await finished(result.stream.resume());
}

/**
 * The rows as JSONEachRow, in Buffers of about INSERT_CHUNK_BYTES: each row's JSON is written
 * straight into the chunk (UTF-8), not concatenated into a 64 KiB string first for Buffer.from
 * to flatten and encode (sampled: 354 MB allocated for the body where that took 414 MB; V8
 * still flattens each row's JSON, which it builds in parts, as it is written).
 */
function* jsonEachRowChunks(rows: Iterable<object>): Generator<Buffer> {
  let chunk = Buffer.allocUnsafe(INSERT_CHUNK_BYTES);
  let used = 0;
  for (const row of rows) {
    const json = JSON.stringify(row);
    // UTF-8 takes at most 3 bytes per UTF-16 unit (a surrogate pair: 4 bytes for 2 units); and the newline.
    const room = json.length * 3 + 1;
    if (used + room > chunk.length) {
      if (used > 0) yield chunk.subarray(0, used);
      chunk = Buffer.allocUnsafe(Math.max(INSERT_CHUNK_BYTES, room));
      used = 0;
    }
    used += chunk.write(json, used);
    chunk[used++] = 0x0a;
  }
  if (used > 0) yield chunk.subarray(0, used);
}
