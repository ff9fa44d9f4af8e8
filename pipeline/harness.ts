import { hostname } from 'node:os';
import type { Redis } from './redis.js';
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

/** First and longest wait before a failed control message is handed to its listener again. */
const CONTROL_RETRY_MS = 250;
const CONTROL_RETRY_MAX_MS = 10_000;
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
  const redis = scripted(
    connectRedis(config.REDIS_URL, `${config.REDIS_PREFIX}${stage.name}:${consumer}`, { commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS, log }),
  );
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
  private readonly retries = new Set<NodeJS.Timeout>();
  private closed = false;

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
        for (const each of this.listeners) await this.deliver(each, message, 0);
      },
      this.log,
    );
    await this.control.ready;
  }

  /**
   * Hands a control message to a listener; one that fails (a reload while PostgreSQL is down) gets
   * the message again with backoff until it takes it, or the stage stops: a missed reload would
   * leave a cache stale until the next restart. Reloads are idempotent, so order does not matter.
   */
  private async deliver(listener: (message: ControlMessage) => void | Promise<void>, message: ControlMessage, attempt: number): Promise<void> {
    try {
      await listener(message);
      if (attempt > 0) this.log.info({ message, attempt }, 'control message handled after retrying');
    } catch (err) {
      if (this.closed) return;
      const delay = Math.min(CONTROL_RETRY_MS * 2 ** attempt, CONTROL_RETRY_MAX_MS);
      if (attempt === 0) this.log.warn({ err: describeError(err), message, retryInMs: delay }, 'control message handler failed; retrying');
      const timer = setTimeout(() => {
        this.retries.delete(timer);
        void this.deliver(listener, message, attempt + 1);
      }, delay);
      timer.unref();
      this.retries.add(timer);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.retries) clearTimeout(timer);
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
    this.blocking = connectRedis(this.config.REDIS_URL, `${prefix}${stage.name}:reader:p${partition}:${consumer}`, { blocking: true, log: this.log });
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
        const room = await this.waitForRoom();
        if (room === undefined) continue;
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

  /**
   * Waits until the outputs have room: true, false when asked to stop, undefined when the lag
   * could not be read (Redis unreachable, or a command timed out after the process was frozen):
   * the loop tries again after a pause rather than dying on it.
   */
  private async waitForRoom(): Promise<boolean | undefined> {
    try {
      return await this.watermark.waitOpen(
        () => this.stopping,
        (paused) => this.metrics.paused.set({ stage: this.stage.name }, paused ? 1 : 0),
      );
    } catch (err) {
      if (this.stopping) return false;
      this.metrics.errors.inc({ stage: this.stage.name, kind: 'redis' });
      this.log.warn({ err: describeError(err) }, 'cannot read the lag of the outputs; retrying');
      await sleep(500);
      return undefined;
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
   * failure of the whole batch is narrowed down by halves to the entries at fault (a few
   * attempts per bad entry, not one per entry: a 5,000-row ClickHouse batch is not cut into
   * 5,000 inserts), so one bad entry cannot hold up its neighbours; each entry at fault fails
   * alone and goes the bounded way to the dead letters. Returns undefined when asked to stop
   * during an outage.
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
        this.log.warn({ err: describeError(err), size: batch.length }, 'batch failed; retrying it by halves to find the entries at fault');
        const middle = Math.ceil(batch.length / 2);
        const first = await this.runHandler(batch.slice(0, middle));
        if (first === undefined) return undefined;
        const second = await this.runHandler(batch.slice(middle));
        if (second === undefined) return undefined;
        return [...first, ...second];
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
      const outputs = result.outputs ?? [];
      const counters = result.counters ?? [];
      // Encoded before anything is sent: an output that cannot be encoded (an amount beyond
      // 64 bits) fails its entry alone, which then goes the way of every failed entry.
      let encoded: { key: string; payload: Buffer }[];
      try {
        encoded = outputs.map((output) => {
          if (!this.stage.outputs.includes(output.stream)) throw new Error(`stage ${this.stage.name} may not write to ${output.stream}`);
          const partition = output.partitionKey === undefined ? this.partition : partitionOf(output.partitionKey, this.config.PARTITIONS);
          return { key: partitionedKey(prefix, output.stream, partition), payload: encodePayload(output.payload) };
        });
      } catch (error) {
        failed.push({ id: entry.id, error });
        return;
      }
      acked.push(i);
      args.push(entry.id, redelivered ? '1' : '0', String(outputs.length), String(counters.length));
      for (const { key, payload } of encoded) args.push(String(indexOf(key)), payload);
      outputStreams[i] = outputs.map((o) => o.stream);
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

    if (failed.length) await this.recordFailures(failed);

    const ackResults: AckResult[] = batch.map(() => ({ acked: false, crossed: [] }));
    const forwarded = new Map<string, number>();
    const refused: { id: string; error: unknown }[] = [];
    if (acked.length) {
      const reply = await this.redis.ackAndForward(keys.length, ...keys, ...args);
      acked.forEach((batchIndex, i) => {
        const value = reply[i];
        if (value === null || value === undefined) return;
        if (value.startsWith('!')) {
          refused.push({ id: batch[batchIndex].id, error: new Error(`the ack script refused the entry: ${value.slice(1)}`) });
          return;
        }
        ackResults[batchIndex] = { acked: true, crossed: value ? value.split(',') : [] };
        for (const stream of outputStreams[batchIndex]) forwarded.set(stream, (forwarded.get(stream) ?? 0) + 1);
      });
    }
    if (refused.length) await this.recordFailures(refused);
    for (const [stream, count] of forwarded) {
      this.metrics.eventsOut.inc({ stage: this.stage.name, stream }, count);
      this.watermark.added(count);
    }
    return ackResults;
  }

  /** Failed entries stay pending with their last error, retried at the next recovery pass, dead-lettered after MAX_DELIVERIES. */
  private async recordFailures(failed: { id: string; error: unknown }[]): Promise<void> {
    const errors: string[] = [];
    for (const { id, error } of failed) {
      errors.push(id, describeError(error));
      this.failedHere.add(id);
    }
    await this.redis.hset(this.errorsKey, ...errors);
    this.metrics.errors.inc({ stage: this.stage.name, kind: 'entry' }, failed.length);
    this.log.warn({ failed: failed.map((f) => ({ id: f.id, error: describeError(f.error) })) }, 'entries failed; left pending for retry');
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
