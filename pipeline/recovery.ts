import { decodeEntry, FIELD, type DecodedEntry } from './blocks.js';
import { streamLag } from './backpressure.js';
import { encodePayload } from './codec.js';
import { compareIds } from './keys.js';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { scripted } from './scripts.js';
import type { StageDefinition } from './stage.js';

export interface RawEntry {
  id: string;
  /** null: the entry was deleted. */
  fields: Buffer[] | null;
  /** Decoded already (shared reads: pipeline/shared-reads.ts); its fields are then not read. */
  decoded?: DecodedEntry<unknown>;
}

/** What recovery needs of its partition worker (pipeline/worker.ts). */
export interface RecoveryHost {
  readonly stage: StageDefinition<unknown>;
  readonly config: Config;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly redis: ReturnType<typeof scripted>;
  readonly inputKey: string;
  readonly errorsKey: string;
  readonly deadKey: string;
  readonly consumer: string;
  readonly stopping: boolean;
  readCount(): number;
  process(entries: RawEntry[], redelivered: boolean): Promise<void>;
}

/**
 * The recovery side of a partition worker: claims entries idle past CLAIM_IDLE_MS (their
 * consumer died or stalled) with XAUTOCLAIM, and the worker's own failed entries with XCLAIM;
 * an entry delivered more than MAX_DELIVERIES times goes to the dead letters when it is a
 * single event, or is split into single events when it is a block (so only the event at fault
 * ends in the dead letters); the rest is handled again.
 */
export class Recovery {
  /** Entries whose handler failed in this process: retried at the next recovery pass, not after CLAIM_IDLE_MS. */
  readonly failedHere = new Set<string>();
  private claimCursor = '0-0';

  constructor(private readonly worker: RecoveryHost) {}

  async pass(): Promise<void> {
    const w = this.worker;
    if (w.stopping) return;
    const name = w.stage.name;
    try {
      const summary = (await w.redis.xpending(w.inputKey, name)) as [number, ...unknown[]];
      w.metrics.pending.set({ stage: name }, Number(summary[0]));
      w.metrics.lag.set({ stage: name, stream: w.stage.input }, await streamLag(w.redis, w.inputKey));
      if (Number(summary[0]) === 0) return;

      type Claimed = [Buffer, Buffer[] | null][];
      const [next, abandoned] = (await w.redis.callBuffer(
        'XAUTOCLAIM', w.inputKey, name, w.consumer, w.config.CLAIM_IDLE_MS, this.claimCursor, 'COUNT', w.readCount(),
      )) as [Buffer, Claimed, Buffer[]?];
      this.claimCursor = next.toString();
      const claimed: RawEntry[] = abandoned.map(([id, fields]) => ({ id: id.toString(), fields }));
      const failed = [...this.failedHere];
      this.failedHere.clear();
      if (failed.length) {
        // A failed entry is in no one's hands: it need not look abandoned before it is retried.
        const retried = (await w.redis.callBuffer('XCLAIM', w.inputKey, name, w.consumer, 0, ...failed)) as Claimed;
        for (const [id, fields] of retried) if (!claimed.some((c) => c.id === id.toString())) claimed.push({ id: id.toString(), fields });
      }
      if (claimed.length === 0 || w.stopping) return;

      const deliveries = await this.deliveriesOf(claimed.map((c) => c.id));
      const retry: RawEntry[] = [];
      for (const entry of claimed) {
        const count = deliveries.get(entry.id) ?? 0;
        if (count <= w.config.MAX_DELIVERIES) {
          retry.push(entry);
          continue;
        }
        if (await this.split(entry)) continue;
        const moved = await w.redis.deadLetter(w.inputKey, w.deadKey, w.errorsKey, name, entry.id, count, name, w.stage.input);
        if (moved) {
          w.metrics.deadLetters.inc({ stage: name });
          w.log.error({ id: entry.id, deliveries: count }, 'entry dead-lettered');
        }
      }
      if (retry.length === 0) return;
      w.log.info({ count: retry.length }, 'retrying claimed entries');
      await w.process(retry, true);
    } catch (err) {
      if (w.stopping) return;
      w.metrics.errors.inc({ stage: name, kind: 'recovery' });
      w.log.warn({ err }, 'recovery pass failed');
    }
  }

  /**
   * Splits a block delivered too often into single entries; false when the entry is not a
   * (decodable) block. A block that cannot be decoded (a writer's bug, or a layer this version
   * does not know) cannot be split: it goes to the dead letters whole, its `b` and `o` kept byte
   * for byte (lua/deadLetter-3.lua), so that `npm run dlq -- replay` can put it back once a
   * reader that decodes it runs.
   */
  private async split(entry: RawEntry): Promise<boolean> {
    const w = this.worker;
    const fields = entry.fields;
    if (!fields?.some((f, i) => i % 2 === 0 && f.toString() === FIELD.block)) return false;
    let args: (string | Buffer)[];
    try {
      const decoded = decodeEntry<unknown>(entry.id, fields);
      args = decoded.events.flatMap((e) => [encodePayload(e.payload), e.tags.join(',')]);
    } catch (err) {
      w.log.warn({ id: entry.id, err }, 'block delivered too often cannot be decoded: dead-lettered whole, with its bytes');
      return false;
    }
    const appended = await w.redis.splitBlock(w.inputKey, w.errorsKey, w.stage.name, entry.id, ...args);
    if (appended) w.log.warn({ id: entry.id, events: appended }, 'block delivered too often: split into single entries');
    return true;
  }

  /** Delivery counts of entries this consumer holds. */
  private async deliveriesOf(ids: string[]): Promise<Map<string, number>> {
    const w = this.worker;
    const sorted = [...ids].sort(compareIds);
    const pending = (await w.redis.xpending(
      w.inputKey, w.stage.name, sorted[0], sorted[sorted.length - 1], Math.max(ids.length * 4, 100), w.consumer,
    )) as [string, string, number, number][];
    const wanted = new Set(ids);
    return new Map(pending.filter(([id]) => wanted.has(id)).map(([id, , , count]) => [id, count]));
  }
}
