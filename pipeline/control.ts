import type { Logger } from './logger.js';
import { controlStreamKey } from './keys.js';
import { connectRedis, type Redis } from './redis.js';

/**
 * The control stream: hierarchy changes announced to every process (not a consumer group:
 * each process reads every message). The admin API writes PostgreSQL first, drops the
 * affected cache entries, then publishes here; caches held in memory apply the message at
 * once, so a revoke takes effect in well under a second rather than at TTL expiry.
 */
export type ControlMessage =
  | { type: 'credentials.changed'; tenantId: string; keyHashes?: string[]; clientIds?: string[] }
  | { type: 'hierarchy.changed'; tenantId: string; agentIds?: string[]; customerIds?: string[] }
  | { type: 'subscriptions.changed'; tenantId: string }
  | { type: 'rate-plans.changed'; tenantId: string }
  | { type: 'caps.changed'; tenantId: string }
  | { type: 'cost-models.changed'; tenantId: string }
  | { type: 'mcp-tools.changed'; tenantId: string }
  | { type: 'pauses.changed'; tenantId: string }
  | { type: 'tenant-tokens.changed'; tenantId: string };

const CONTROL_MAXLEN = 10_000;

export async function publishControl(redis: Redis, prefix: string, message: ControlMessage): Promise<void> {
  await redis.xadd(controlStreamKey(prefix), 'MAXLEN', '~', String(CONTROL_MAXLEN), '*', 'm', JSON.stringify(message));
}

export interface ControlSubscription {
  /** Resolves once the subscription reads from a fixed position: messages published after this are seen. */
  ready: Promise<void>;
  close(): Promise<void>;
}

/** Reads control messages published from now on, on a blocking connection of its own. */
export function subscribeControl(
  redisUrl: string,
  prefix: string,
  onMessage: (message: ControlMessage) => void | Promise<void>,
  log?: Logger,
): ControlSubscription {
  const name = `${prefix}control-reader:${process.pid}`;
  const connection = connectRedis(redisUrl, name, { blocking: true, log });
  const key = controlStreamKey(prefix);
  let closed = false;
  let lastId: string | undefined;
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  const loop = (async () => {
    while (!closed) {
      try {
        // Start after the newest message at subscription time; keep the id across reconnects.
        lastId ??= (await connection.xrevrange(key, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0';
        markReady();
        const reply = (await connection.xread('BLOCK', 1000, 'STREAMS', key, lastId)) as [string, [string, string[]][]][] | null;
        if (!reply) continue;
        for (const [, entries] of reply) {
          for (const [id, fields] of entries) {
            lastId = id;
            const raw = fields[fields.indexOf('m') + 1];
            try {
              await onMessage(JSON.parse(raw) as ControlMessage);
            } catch (err) {
              log?.error({ err, raw }, 'control message handler failed');
            }
          }
        }
      } catch (err) {
        if (closed) break;
        log?.warn({ err }, 'control stream read failed; retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  })();
  return {
    ready,
    async close() {
      closed = true;
      markReady();
      connection.disconnect();
      // A command queued while Redis is unreachable is never settled by disconnect() (ioredis drops
      // its reconnect without flushing the queue): do not wait on it for ever.
      await Promise.race([loop, new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
    },
  };
}
