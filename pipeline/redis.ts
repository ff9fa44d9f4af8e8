import { Redis, type RedisOptions } from 'ioredis';

export type { Redis };

/**
 * Every connection is named (CLIENT LIST shows who holds what). A blocking reader gets a
 * connection of its own with no command timeout: the BLOCK argument bounds its wait, and
 * the harness's watchdog catches a wedged socket.
 */
export function connectRedis(url: string, name: string, options: { blocking?: boolean } = {}): Redis {
  const common: RedisOptions = {
    connectionName: name,
    enableAutoPipelining: false,
    // Commands wait for a reconnect instead of failing fast; the harness retries around outages.
    maxRetriesPerRequest: null,
    retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2_000),
  };
  return new Redis(url, options.blocking ? common : { ...common, commandTimeout: 15_000 });
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
