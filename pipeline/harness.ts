import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { Watermark, streamLag } from './backpressure.js';
import { decodePayload, encodePayload } from './codec.js';
import { describeError, isTransient } from './errors.js';
import { compareIds, deadLetterKey, errorsKey, partitionedKey, partitionOf } from './keys.js';
import { subscribeControl, type ControlMessage, type ControlSubscription } from './control.js';
import { connectPostgres, type Sql } from './postgres.js';
import { connectRedis } from './redis.js';
import { scripted } from './scripts.js';
import type { AckResult, EntryResult, StageDefinition, StageEntry, StageHandler, Topology } from './stage.js';

/** How long a stage trusts the last lag it read of its outputs: one XINFO per stage per 100 ms, not per batch. */
const WATERMARK_CACHE_MS = 100;

export interface HarnessOptions {
  config: Config;
  log: Logger;
  metrics: Metrics;
  topology: Topology;
  /** Stable per process slot, so a restarted worker picks up what it left pending. */
  consumer?: string;
  /** Partitions this process serves; all by default. */
  partitions?: number[];
}

export interface RunningStage {
  readonly consumer: string;
  ready(): boolean;
  /** Finishes and acks the batch in hand, then closes everything. */
  stop(): Promise<void>;
}

interface RawEntry {
  id: string;
  fields: Buffer[] | null;
}

type StreamReply = [Buffer, [Buffer, Buffer[] | null][]][] | null;

/** Creates every consumer group of the topology on every partition (idempotent), reading from the start. */
export async function ensureGroups(redis: Redis, prefix: string, partitions: number, topology: Topology): Promise<void> {
  for (let p = 0; p < partitions; p++) {
    for (const { stream, group } of topology) {
      try {
        await redis.xgroup('CREATE', partitionedKey(prefix, stream, p), group, '0', 'MKSTREAM');
      } catch (err) {
        if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
      }
    }
  }
}

export async function runStage<In>(stage: StageDefinition<In>, options: HarnessOptions): Promise<RunningStage> {
  const { config, log: baseLog, metrics, topology } = options;
  const log = baseLog.child({ stage: stage.name });
  const consumer = options.consumer ?? `${stage.name}-${hostname()}-${config.WORKER_SLOT}`;
  const partitions = options.partitions ?? Array.from({ length: config.PARTITIONS }, (_, p) => p);
  const redis = scripted(connectRedis(config.REDIS_URL, `${config.REDIS_PREFIX}${stage.name}:${consumer}`));
  await ensureGroups(redis, config.REDIS_PREFIX, config.PARTITIONS, topology);
  const services = new StageServices(stage.name, config, log);
  const handler = await stage.setup({ stage: stage.name, config, log, metrics, redis, sql: services.sql, onControl: (l) => services.onControl(l) });

  const workers = partitions.map((partition) => new PartitionWorker(stage, handler, partition, consumer, redis, options, log));
  const trimmer = new Trimmer(stage, redis, options, partitions, log);
  const loops = workers.map((worker) => worker.run());
  trimmer.start();
  log.info({ consumer, partitions }, 'stage started');

  let stopped: Promise<void> | undefined;
  return {
    consumer,
    ready: () => workers.every((w) => w.isReading()),
    stop() {
      stopped ??= (async () => {
        trimmer.stop();
        for (const worker of workers) worker.stop();
        await Promise.all(loops);
        await handler.close?.();
        await services.close();
        redis.disconnect();
        log.info('stage stopped');
      })();
      return stopped;
    },
  };
}

/** What every stage sets up: a PostgreSQL pool and one control-stream reader, closed after the handler. */
export class StageServices {
  readonly sql: Sql;
  private control?: ControlSubscription;
  private readonly listeners: ((message: ControlMessage) => void | Promise<void>)[] = [];

  constructor(
    stage: string,
    private readonly config: Config,
    private readonly log: Logger,
  ) {
    this.sql = connectPostgres(config.DATABASE_URL, { max: 2, name: stage });
  }

  async onControl(listener: (message: ControlMessage) => void | Promise<void>): Promise<void> {
    this.listeners.push(listener);
    this.control ??= subscribeControl(
      this.config.REDIS_URL,
      this.config.REDIS_PREFIX,
      async (message) => {
        for (const each of this.listeners) await each(message);
      },
      this.log,
    );
    await this.control.ready;
  }

  async close(): Promise<void> {
    await this.control?.close();
    await this.sql.end({ timeout: 5 });
  }
}

/** Trims the stage's input below every group's position, and its terminal outputs by length. */
class Trimmer {
  private timer?: NodeJS.Timeout;
  private running = false;

  constructor(
    private readonly stage: StageDefinition<unknown>,
    private readonly redis: ReturnType<typeof scripted>,
    private readonly options: HarnessOptions,
    private readonly partitions: number[],
    private readonly log: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.trimOnce(), this.options.config.TRIM_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async trimOnce(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const { config, topology } = this.options;
    const consumed = new Set(topology.map((t) => t.stream));
    try {
      for (const p of this.partitions) {
        await this.redis.trimAcked(partitionedKey(config.REDIS_PREFIX, this.stage.input, p));
        for (const output of this.stage.outputs) {
          if (consumed.has(output)) continue;
          // A terminal stream (rejected events): nobody consumes it, it is kept for operators up to a bound.
          await this.redis.xtrim(partitionedKey(config.REDIS_PREFIX, output, p), 'MAXLEN', '~', config.REJECTED_MAXLEN);
        }
      }
    } catch (err) {
      this.log.warn({ err }, 'trim failed');
    } finally {
      this.running = false;
    }
  }
}

class PartitionWorker<In> {
  private readonly config: Config;
  private readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly inputKey: string;
  private readonly errorsKey: string;
  private readonly deadKey: string;
  private readonly blocking: Redis;
  private readonly watermark: Watermark;
  private readonly batchSize: number;
  private readonly lingerMs: number;
  private stopping = false;
  private reading = false;
  private recoveryTimer?: NodeJS.Timeout;
  private queue: Promise<unknown> = Promise.resolve();
  /** Entries whose handler failed in this process: retried at the next recovery pass, not after CLAIM_IDLE_MS. */
  private readonly failedHere = new Set<string>();
  private claimCursor = '0-0';

  constructor(
    private readonly stage: StageDefinition<In>,
    private readonly handler: StageHandler<In>,
    private readonly partition: number,
    private readonly consumer: string,
    private readonly redis: ReturnType<typeof scripted>,
    options: HarnessOptions,
    log: Logger,
  ) {
    this.config = options.config;
    this.metrics = options.metrics;
    this.log = log.child({ partition });
    const prefix = this.config.REDIS_PREFIX;
    this.inputKey = partitionedKey(prefix, stage.input, partition);
    this.errorsKey = errorsKey(prefix, stage.name, partition);
    this.deadKey = deadLetterKey(prefix, stage.name, partition);
    this.blocking = connectRedis(this.config.REDIS_URL, `${prefix}${stage.name}:reader:p${partition}:${consumer}`, { blocking: true });
    this.batchSize = this.config.BATCH_SIZE ?? stage.batchSize;
    this.lingerMs = (typeof stage.lingerMs === 'function' ? stage.lingerMs(this.config) : stage.lingerMs) ?? 0;
    const consumedOutputs = stage.outputs.filter((o) => options.topology.some((t) => t.stream === o));
    this.watermark = new Watermark(
      redis,
      consumedOutputs.map((o) => partitionedKey(prefix, o, partition)),
      this.config.BACKPRESSURE_HIGH,
      this.config.BACKPRESSURE_LOW,
      WATERMARK_CACHE_MS,
    );
  }

  isReading(): boolean {
    return this.reading;
  }

  stop(): void {
    this.stopping = true;
    clearInterval(this.recoveryTimer);
    // Abort a blocked read; anything it had been handed stays pending under this consumer.
    this.blocking.disconnect();
  }

  async run(): Promise<void> {
    try {
      await this.survive(() => this.drainOwnPending());
      this.recoveryTimer = setInterval(() => void this.survive(() => this.recover()), this.config.CLAIM_INTERVAL_MS);
      this.recoveryTimer.unref();
      this.reading = true;
      while (!this.stopping) {
        const room = await this.watermark.waitOpen(
          () => this.stopping,
          (paused) => this.metrics.paused.set({ stage: this.stage.name }, paused ? 1 : 0),
        );
        if (!room) break;
        const entries = await this.readNew();
        // Once read, a batch is finished and acked even when a stop was asked meanwhile.
        if (entries.length) await this.survive(() => this.process(entries, false));
      }
    } catch (err) {
      if (!this.stopping) {
        this.log.fatal({ err }, 'partition worker failed');
        throw err;
      }
    } finally {
      this.reading = false;
      clearInterval(this.recoveryTimer);
      await this.queue.catch(() => {});
      this.blocking.disconnect();
    }
  }

  /** Runs batch work one at a time per partition: the main loop and the recovery loop never overlap. */
  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => {});
    return next;
  }

  private async xreadgroup(args: (string | number)[], blockMs?: number): Promise<RawEntry[]> {
    const command = ['GROUP', this.stage.name, this.consumer, 'COUNT', this.batchSize, ...(blockMs ? ['BLOCK', blockMs] : []), ...args];
    const read = this.blocking.callBuffer('XREADGROUP', ...command) as Promise<StreamReply>;
    let watchdog: NodeJS.Timeout | undefined;
    const wedged = new Promise<'wedged'>((resolve) => {
      watchdog = setTimeout(() => resolve('wedged'), (blockMs ?? 0) + 10_000);
    });
    try {
      const reply = await Promise.race([read, wedged]);
      if (reply === 'wedged') {
        this.log.warn('blocking read did not return in time; reconnecting');
        this.metrics.errors.inc({ stage: this.stage.name, kind: 'watchdog' });
        read.catch(() => {});
        this.blocking.disconnect(true);
        return [];
      }
      if (!reply) return [];
      return reply[0][1].map(([id, fields]) => ({ id: id.toString(), fields }));
    } catch (err) {
      if (this.stopping) return [];
      this.metrics.errors.inc({ stage: this.stage.name, kind: 'redis' });
      this.log.warn({ err }, 'read failed; retrying');
      await sleep(500);
      return [];
    } finally {
      clearTimeout(watchdog);
    }
  }

  private async readNew(): Promise<RawEntry[]> {
    const first = await this.xreadgroup(['STREAMS', this.inputKey, '>'], this.config.BLOCK_MS);
    if (!this.lingerMs || first.length === 0 || first.length >= this.batchSize) return first;
    const entries = first;
    const deadline = Date.now() + this.lingerMs;
    while (entries.length < this.batchSize && !this.stopping) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      const more = await this.xreadgroup(['STREAMS', this.inputKey, '>'], Math.max(1, left));
      if (more.length === 0) break;
      entries.push(...more);
    }
    return entries;
  }

  /** On start, a consumer first finishes what it was handed before it died or stopped. */
  private async drainOwnPending(): Promise<void> {
    let cursor = '0';
    while (!this.stopping) {
      const entries = await this.xreadgroup(['STREAMS', this.inputKey, cursor]);
      if (entries.length === 0) return;
      cursor = entries[entries.length - 1].id;
      this.log.info({ count: entries.length }, 'reprocessing own pending entries');
      await this.process(entries, true);
    }
  }

  /**
   * One recovery pass: claims entries idle past CLAIM_IDLE_MS (their consumer died or stalled)
   * with XAUTOCLAIM, and this process's own failed entries with XCLAIM; then moves every claimed
   * entry delivered more than MAX_DELIVERIES times to the dead-letter stream, and handles the rest.
   */
  private async recover(): Promise<void> {
    if (this.stopping) return;
    const name = this.stage.name;
    try {
      const summary = (await this.redis.xpending(this.inputKey, name)) as [number, ...unknown[]];
      this.metrics.pending.set({ stage: name }, Number(summary[0]));
      this.metrics.lag.set({ stage: name, stream: this.stage.input }, await streamLag(this.redis, this.inputKey));
      if (Number(summary[0]) === 0) return;

      type Claimed = [Buffer, Buffer[] | null][];
      const [next, abandoned] = (await this.redis.callBuffer(
        'XAUTOCLAIM', this.inputKey, name, this.consumer, this.config.CLAIM_IDLE_MS, this.claimCursor, 'COUNT', this.batchSize,
      )) as [Buffer, Claimed, Buffer[]?];
      this.claimCursor = next.toString();
      const claimed = abandoned.map(([id, fields]) => ({ id: id.toString(), fields }));
      const failed = [...this.failedHere];
      this.failedHere.clear();
      if (failed.length) {
        // A failed entry is in no one's hands: it need not look abandoned before it is retried.
        const retried = (await this.redis.callBuffer('XCLAIM', this.inputKey, name, this.consumer, 0, ...failed)) as Claimed;
        for (const [id, fields] of retried) if (!claimed.some((c) => c.id === id.toString())) claimed.push({ id: id.toString(), fields });
      }
      if (claimed.length === 0 || this.stopping) return;

      const deliveries = await this.deliveriesOf(claimed.map((c) => c.id));
      const retry: RawEntry[] = [];
      for (const entry of claimed) {
        const count = deliveries.get(entry.id) ?? 0;
        if (count <= this.config.MAX_DELIVERIES) {
          retry.push(entry);
          continue;
        }
        const moved = await this.redis.deadLetter(this.inputKey, this.deadKey, this.errorsKey, name, entry.id, count, name, this.stage.input);
        if (moved) {
          this.metrics.deadLetters.inc({ stage: name });
          this.log.error({ id: entry.id, deliveries: count }, 'entry dead-lettered');
        }
      }
      if (retry.length === 0) return;
      this.log.info({ count: retry.length }, 'retrying claimed entries');
      await this.process(retry, true);
    } catch (err) {
      if (this.stopping) return;
      this.metrics.errors.inc({ stage: name, kind: 'recovery' });
      this.log.warn({ err }, 'recovery pass failed');
    }
  }

  /** Delivery counts of entries this consumer holds. */
  private async deliveriesOf(ids: string[]): Promise<Map<string, number>> {
    const sorted = [...ids].sort(compareIds);
    const pending = (await this.redis.xpending(
      this.inputKey, this.stage.name, sorted[0], sorted[sorted.length - 1], Math.max(ids.length * 4, 100), this.consumer,
    )) as [string, string, number, number][];
    const wanted = new Set(ids);
    return new Map(pending.filter(([id]) => wanted.has(id)).map(([id, , , count]) => [id, count]));
  }

  private async process(raw: RawEntry[], redelivered: boolean): Promise<void> {
    const started = process.hrtime.bigint();
    this.metrics.eventsIn.inc({ stage: this.stage.name }, raw.length);
    const batch: StageEntry<In>[] = [];
    // Preset results: {} for an entry deleted while pending (just ack it), an error for an
    // undecodable one; undefined for entries the handler will see.
    const results: (EntryResult | undefined)[] = [];
    for (const { id, fields } of raw) {
      const entry: StageEntry<In> = { id, partition: this.partition, payload: undefined as In, tags: [] };
      batch.push(entry);
      if (!fields) {
        results.push({});
        continue;
      }
      try {
        for (let i = 0; i < fields.length; i += 2) {
          const field = fields[i].toString();
          if (field === 'd') entry.payload = decodePayload<In>(fields[i + 1]);
          else if (field === 't') entry.tags = fields[i + 1].toString().split(',').filter(Boolean);
        }
        if (entry.payload === undefined) throw new Error('entry has no payload field');
        results.push(undefined);
      } catch (error) {
        results.push({ error });
      }
    }
    const toHandle = batch.filter((_, i) => results[i] === undefined);
    if (toHandle.length) {
      const handled = await this.runHandler(toHandle);
      if (handled === undefined) return; // stopping during a dependency outage: everything stays pending
      let next = 0;
      results.forEach((result, i) => {
        if (result === undefined) results[i] = handled[next++];
      });
    }
    const acks = await this.ackAndForward(batch, results as EntryResult[], redelivered);
    try {
      await this.handler.afterAck?.(batch, acks);
    } catch (err) {
      this.metrics.errors.inc({ stage: this.stage.name, kind: 'after-ack' });
      this.log.error({ err }, 'after-ack hook failed');
    }
    this.metrics.batchSeconds.observe({ stage: this.stage.name }, Number(process.hrtime.bigint() - started) / 1e9);
  }

  /** Redis unreachable mid-batch, say: the entries stay pending and are claimed again later. */
  private async survive(work: () => Promise<void>): Promise<void> {
    try {
      await this.serialized(work);
    } catch (err) {
      if (this.stopping) return;
      this.metrics.errors.inc({ stage: this.stage.name, kind: 'process' });
      this.log.error({ err }, 'batch processing failed; entries stay pending');
      await sleep(500);
    }
  }

  /**
   * Runs the handler. A dependency outage keeps the batch in hand and retries it with backoff
   * (touching the entries so no one claims them, and without counting deliveries). Any other
   * failure of the whole batch is narrowed down entry by entry, so one bad entry cannot hold
   * up its neighbours. Returns undefined when asked to stop during an outage.
   */
  private async runHandler(batch: StageEntry<In>[]): Promise<EntryResult[] | undefined> {
    let delay = 100;
    let touchedAt = Date.now();
    for (;;) {
      try {
        const results = await this.handler.handle(batch);
        if (results.length !== batch.length) {
          throw new Error(`handler returned ${results.length} results for ${batch.length} entries`);
        }
        return results;
      } catch (err) {
        if (isTransient(err)) {
          this.metrics.errors.inc({ stage: this.stage.name, kind: 'dependency' });
          if (this.stopping) return undefined;
          this.log.warn({ err: describeError(err), retryInMs: delay }, 'dependency unavailable; retrying batch in hand');
          await sleep(delay);
          delay = Math.min(delay * 2, 5_000);
          if (Date.now() - touchedAt > this.config.CLAIM_IDLE_MS / 3) {
            await this.touch(batch.map((e) => e.id));
            touchedAt = Date.now();
          }
          continue;
        }
        this.metrics.errors.inc({ stage: this.stage.name, kind: 'handler' });
        if (batch.length === 1) return [{ error: err }];
        this.log.warn({ err: describeError(err), size: batch.length }, 'batch failed; retrying entry by entry');
        const results: EntryResult[] = [];
        for (const entry of batch) {
          const single = await this.runHandler([entry]);
          if (single === undefined) return undefined;
          results.push(single[0]);
        }
        return results;
      }
    }
  }

  /** Resets the idle time of entries in hand (XCLAIM JUSTID does not count a delivery). */
  private async touch(ids: string[]): Promise<void> {
    try {
      await this.redis.xclaim(this.inputKey, this.stage.name, this.consumer, 0, ...ids, 'JUSTID');
    } catch (err) {
      this.log.warn({ err }, 'could not refresh pending entries');
    }
  }

  private async ackAndForward(batch: StageEntry<In>[], results: EntryResult[], redelivered: boolean): Promise<AckResult[]> {
    const prefix = this.config.REDIS_PREFIX;
    const keys: string[] = [this.inputKey, this.errorsKey];
    const keyIndex = new Map<string, number>();
    const indexOf = (key: string): number => {
      let index = keyIndex.get(key);
      if (index === undefined) {
        keys.push(key);
        index = keys.length; // Lua indexes from 1
        keyIndex.set(key, index);
      }
      return index;
    };
    const args: (string | Buffer)[] = [this.stage.name, ''];
    const acked: number[] = [];
    const failed: { id: string; error: unknown }[] = [];
    const outputStreams: string[][] = batch.map(() => []);
    batch.forEach((entry, i) => {
      const result = results[i];
      if (result.error !== undefined) {
        failed.push({ id: entry.id, error: result.error });
        return;
      }
      acked.push(i);
      const outputs = result.outputs ?? [];
      const counters = result.counters ?? [];
      args.push(entry.id, redelivered ? '1' : '0', String(outputs.length), String(counters.length));
      for (const output of outputs) {
        if (!this.stage.outputs.includes(output.stream)) throw new Error(`stage ${this.stage.name} may not write to ${output.stream}`);
        const partition = output.partitionKey === undefined ? this.partition : partitionOf(output.partitionKey, this.config.PARTITIONS);
        args.push(String(indexOf(partitionedKey(prefix, output.stream, partition))), encodePayload(output.payload));
        outputStreams[i].push(output.stream);
      }
      for (const counter of counters) {
        args.push(
          String(indexOf(partitionedKey(prefix, counter.key, this.partition))),
          counter.by.toString(),
          String(counter.ttlSeconds),
          counter.limit === undefined ? '' : counter.limit.toString(),
          counter.tag ?? '',
          counter.onLimit ? String(indexOf(partitionedKey(prefix, counter.onLimit.key, this.partition))) : '',
          counter.onLimit?.value ?? '',
          String(counter.onLimit?.ttlSeconds ?? 0),
        );
      }
    });
    args[1] = String(acked.length);

    if (failed.length) {
      const errors: string[] = [];
      for (const { id, error } of failed) {
        errors.push(id, describeError(error));
        this.failedHere.add(id);
      }
      await this.redis.hset(this.errorsKey, ...errors);
      this.metrics.errors.inc({ stage: this.stage.name, kind: 'entry' }, failed.length);
      this.log.warn({ failed: failed.map((f) => ({ id: f.id, error: describeError(f.error) })) }, 'entries failed; left pending for retry');
    }

    const ackResults: AckResult[] = batch.map(() => ({ acked: false, crossed: [] }));
    if (acked.length === 0) return ackResults;
    const reply = await this.redis.ackAndForward(keys.length, ...keys, ...args);
    const forwarded = new Map<string, number>();
    acked.forEach((batchIndex, i) => {
      const value = reply[i];
      if (value === null || value === undefined) return;
      ackResults[batchIndex] = { acked: true, crossed: value ? value.split(',') : [] };
      for (const stream of outputStreams[batchIndex]) forwarded.set(stream, (forwarded.get(stream) ?? 0) + 1);
    });
    for (const [stream, count] of forwarded) {
      this.metrics.eventsOut.inc({ stage: this.stage.name, stream }, count);
      this.watermark.added(count);
    }
    return ackResults;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
