import { Redis, type RedisOptions } from 'ioredis';
import { describeError } from './errors.js';
import type { Logger } from './logger.js';

export type { Redis };

/** A connection's errors are logged at most this often: an outage is one line per connection, not one per reconnect attempt. */
const ERROR_LOG_INTERVAL_MS = 10_000;

/**
 * Logs the errors of a connection, at most one line per ERROR_LOG_INTERVAL_MS, and says when it
 * is back. Without a listener ioredis prints "[ioredis] Unhandled error event" on every attempt.
 */
export function reportRedisErrors(redis: Redis, name: string, log?: Logger): void {
  let loggedAt = 0;
  let failing = false;
  redis.on('error', (err: Error) => {
    failing = true;
    const now = Date.now();
    if (now - loggedAt < ERROR_LOG_INTERVAL_MS) return;
    loggedAt = now;
    log?.warn({ connection: name, err: describeError(err) }, 'Redis connection failing; reconnecting');
  });
  redis.on('ready', () => {
    if (!failing) return;
    failing = false;
    loggedAt = 0;
    log?.info({ connection: name }, 'Redis connection back');
  });
}

/**
 * Every connection is named (CLIENT LIST shows who holds what). A blocking reader gets a
 * connection of its own with no command timeout: the BLOCK argument bounds its wait, and
 * the harness's watchdog catches a wedged socket.
 */
export function connectRedis(
  url: string,
  name: string,
  options: { blocking?: boolean; commandTimeoutMs?: number; log?: Logger } = {},
): Redis {
  const common: RedisOptions = {
    connectionName: name,
    enableAutoPipelining: false,
    // Commands wait for a reconnect instead of failing fast; the harness retries around outages.
    maxRetriesPerRequest: null,
    retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2_000),
  };
  const redis = new Redis(url, options.blocking ? common : { ...common, commandTimeout: options.commandTimeoutMs ?? 15_000 });
  reportRedisErrors(redis, name, options.log);
  return redis;
}

/** The keys matching a pattern, a SCAN batch at a time (never KEYS, which blocks Redis). */
export async function* scanKeys(redis: Redis, pattern: string): AsyncGenerator<string[]> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length) yield keys;
  } while (cursor !== '0');
}

/** Deletes every key under a prefix (a test's or a benchmark's scratch keys), by SCAN and UNLINK. */
export async function deleteKeysWithPrefix(redis: Redis, prefix: string): Promise<void> {
  for await (const keys of scanKeys(redis, `${prefix}*`)) await redis.unlink(...keys);
}
