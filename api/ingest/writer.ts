import type { Redis } from '../../pipeline/redis.js';
import { BlockSizes, Watermark } from '../../pipeline/backpressure.js';
import { entryFields, MAX_BLOCK_EVENTS, newOrigin } from '../../pipeline/blocks.js';
import type { Config } from '../../pipeline/config.js';
import { STREAMS } from '../../store/streams.js';
import { partitionOf, partitionedKey } from '../../pipeline/keys.js';
import type { Credential, UsageEvent } from '../../domain/events.js';

/** The key an event is partitioned by on the first stream: its tenant and credential (before anyone knows the customer). */
export function ingestPartitionKey(tenantId: string, credential: Credential): string {
  return `${tenantId}/${credential.kind === 'api_key' ? credential.keyHash : credential.clientId}`;
}

/** Why a write failed: Redis is out of memory (noeviction refuses writes), or unreachable / failing. */
export class IngestWriteError extends Error {
  constructor(
    readonly kind: 'out_of_memory' | 'unavailable',
    options: { cause: unknown },
  ) {
    super(kind === 'out_of_memory' ? 'Redis is out of memory' : 'Redis write failed', options);
    this.name = 'IngestWriteError';
  }
}

function isOutOfMemory(err: unknown): boolean {
  const { message, previousErrors } = err as { message?: unknown; previousErrors?: unknown[] };
  if (typeof message === 'string' && message.startsWith('OOM')) return true;
  return Array.isArray(previousErrors) && previousErrors.some((e) => isOutOfMemory(e));
}

/**
 * Writes accepted events to `events:ingested`: one entry per partition per request, a block of
 * that request's events in the partition (see pipeline/blocks.ts; a request larger than
 * MAX_BLOCK_EVENTS in one partition makes several blocks, in one MULTI/EXEC), so a request's
 * events in one partition land all or nothing. Also holds the backpressure gate over every
 * partition of that stream.
 */
export class IngestWriter {
  private readonly watermark: Watermark;
  private readonly keys: string[];
  private readonly sizes = new BlockSizes();

  constructor(
    private readonly redis: Redis,
    private readonly config: Config,
    backpressureCacheMs = 100,
  ) {
    this.keys = Array.from({ length: config.PARTITIONS }, (_, p) => partitionedKey(config.REDIS_PREFIX, STREAMS.ingested, p));
    this.watermark = new Watermark(
      redis,
      this.keys,
      config.BACKPRESSURE_HIGH,
      config.BACKPRESSURE_LOW,
      backpressureCacheMs,
      this.sizes,
      config.INGEST_MAX_QUEUE_MS,
    );
  }

  /**
   * False while the first stream is over its high-water mark (until it drains below the low
   * one), or while its oldest unread event has waited longer than INGEST_MAX_QUEUE_MS.
   */
  hasRoom(): Promise<boolean> {
    return this.watermark.open();
  }

  async write(events: readonly UsageEvent[]): Promise<void> {
    const byPartition = new Map<number, UsageEvent[]>();
    for (const event of events) {
      const partition = partitionOf(ingestPartitionKey(event.tenantId, event.credential), this.config.PARTITIONS);
      const group = byPartition.get(partition);
      if (group) group.push(event);
      else byPartition.set(partition, [event]);
    }
    const writes = [...byPartition].map(async ([partition, group]) => {
      const key = this.keys[partition];
      this.sizes.wrote(Math.ceil(group.length / MAX_BLOCK_EVENTS), group.length);
      if (group.length <= MAX_BLOCK_EVENTS) {
        // One block: one XADD, atomic on its own (no MULTI/EXEC round of three commands).
        try {
          await this.redis.xadd(key, '*', ...entryFields(group, newOrigin()));
        } catch (err) {
          throw new IngestWriteError(isOutOfMemory(err) ? 'out_of_memory' : 'unavailable', { cause: err });
        }
        return;
      }
      const multi = this.redis.multi();
      for (let from = 0; from < group.length; from += MAX_BLOCK_EVENTS) {
        multi.xadd(key, '*', ...entryFields(group.slice(from, from + MAX_BLOCK_EVENTS), newOrigin()));
      }
      let results: [Error | null, unknown][] | null;
      try {
        results = await multi.exec();
      } catch (err) {
        throw new IngestWriteError(isOutOfMemory(err) ? 'out_of_memory' : 'unavailable', { cause: err });
      }
      const failed = results === null ? new Error('transaction aborted') : results.find(([err]) => err)?.[0];
      if (failed) throw new IngestWriteError(isOutOfMemory(failed) ? 'out_of_memory' : 'unavailable', { cause: failed });
    });
    // Wait for every partition before answering, so nothing is still being written when the caller hears of a failure.
    const settled = await Promise.allSettled(writes);
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failure) throw failure.reason;
  }
}
