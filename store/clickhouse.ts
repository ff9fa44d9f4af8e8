import { ClickHouseLogLevel, createClient, type ClickHouseClient } from '@clickhouse/client';

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
