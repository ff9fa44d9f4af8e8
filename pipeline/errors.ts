import type { Logger } from './logger.js';

/**
 * Throw (or wrap a cause in) this when a dependency is unavailable: the harness keeps the
 * batch in hand and retries it with backoff, without counting deliveries toward the
 * dead-letter limit. Connection errors are recognised without it.
 */
export class TransientError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TransientError';
  }
}

/**
 * Errors come in two kinds, and the harness treats them apart:
 * - an outage (a dependency unreachable, overloaded, timing out, not migrated yet): the batch
 *   waits in hand and is retried for as long as it lasts, without counting deliveries;
 * - anything else is taken as a problem of the data (a row a store refuses: PostgreSQL classes 22
 *   and 23, a ClickHouse parse error, a bug met by one event): the batch is split to find the
 *   entries at fault, which are retried a bounded number of times and then dead-lettered, so one
 *   event can never hold up the others.
 */
const TRANSIENT_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT',
]);
// PostgreSQL SQLSTATEs of an outage: connection exceptions (08), insufficient resources (53), operator
// intervention (57: shutdown, cannot connect now, query canceled by a timeout), system errors (58),
// serialization failures and deadlocks (40001, 40P01), a lock not available (55P03), authentication and
// a missing database (28, 3D000), and a schema not migrated yet (undefined table, column or function).
const TRANSIENT_SQLSTATES = /^(08...|53...|57P0[1-4]|57014|58...|40001|40P01|55P03|28...|3D000|42P01|42703|42883)$/;
const TRANSIENT_MESSAGES = /ECONNREFUSED|ECONNRESET|socket hang up|Connection is closed|fetch failed|Timeout error|Command timed out|write EPIPE/i;

/** True when an error says a dependency is down or overloaded, not that the entry is bad. */
export function isTransient(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof TransientError) return true;
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (typeof code === 'string' && (TRANSIENT_CODES.has(code) || TRANSIENT_SQLSTATES.test(code))) return true;
    if (typeof message === 'string' && TRANSIENT_MESSAGES.test(message)) return true;
  }
  return false;
}

export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 2000);
  return String(error).slice(0, 2000);
}

/**
 * A promise rejected with nobody listening ends a Node process. Drivers do that on their own
 * when a connection dies at the wrong moment (postgres.js, fetching array types on a connection
 * that drops before its first query): an outage must not kill the process. Any other unhandled
 * rejection is a bug and still ends it, logged.
 */
export function surviveDependencyRejections(log: Logger): void {
  process.on('unhandledRejection', (reason) => {
    if (isTransient(reason)) {
      log.warn({ err: describeError(reason) }, 'a dependency connection failed with nobody waiting on it; carrying on');
      return;
    }
    log.fatal({ err: reason }, 'unhandled promise rejection');
    process.exit(1);
  });
}

/** A stage's handler did not settle within STAGE_HANDLER_TIMEOUT_MS: the process is not to be trusted to go on. */
export class WedgedError extends Error {
  override readonly name = 'WedgedError';
}

/** `work`, or the error made by `error` if it has not settled within `ms` (the work itself is left to finish unseen). */
export function settleWithin<T>(work: Promise<T>, ms: number, error: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(error()), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}
