import type { Redis } from './redis.js';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { ackArguments, parseAckReply, type AckCounted, type AckGroup, type AckInput, type AckRetry } from './ack.js';
import { BlockSizes, Watermark } from './backpressure.js';
import { blockPartsWithLayer, FIELD, type BlockBytes, type DecodedEntry } from './blocks.js';
import { encodePayload } from './codec.js';
import { describeError, isTransient, settleWithin, WedgedError } from './errors.js';
import { compareIds, deadLetterKey, errorsKey, partitionedKey, partitionOf } from './keys.js';
import { forwardOnce, moveMarkerKey, waitForReplicas, type MovedEntry } from './move.js';
import { connectRedis, keySlot } from './redis.js';
import { Recovery, type RawEntry, type RecoveryHost } from './recovery.js';
import { sharedReads } from './shared-reads.js';
import { scripted, type KnownReadReply } from './scripts.js';
import type { AckResult, EntryResult, HarnessOptions, Output, StageBlock, StageDefinition, StageHandler } from './stage.js';

/** How long a stage trusts the last lag it read of its outputs: one XINFO per stage per 100 ms, not per batch. */
const WATERMARK_CACHE_MS = 100;


type StreamReply = [Buffer, [Buffer, Buffer[] | null][]][] | null;

/** An entry read from the input: a block of events (or a single event), deleted, or undecodable. */
interface InputBlock<In> extends StageBlock<In> {
  /** Deleted from the stream, or for another consumer group (FIELD.forGroup): acked, not handled. */
  deleted: boolean;
  /** An event split off for this group: its error (written when it was split off) is cleared by its ack. */
  splitOff?: boolean;
  decodeError?: unknown;
  /** The `b` field as read: an output block of one output per event is written as it plus a layer (blockOutput). */
  blockBytes?: Buffer;
}

/** The most a read's last few events may add to the batch before them: a quarter of a batch. */
const TAIL_SHARE = 0.25;

/**
 * A read's blocks in batches of at most batchSize events, whole blocks each (at least one per
 * batch), except that a tail of at most TAIL_SHARE of a batch goes with the batch before it.
 * The read COUNT is an estimate (blocks differ in size), and neither a handler's batch nor an ack
 * call may grow with it; but a read that brings a little more than a batch would otherwise leave
 * a small batch of its own, and a batch costs its stage a whole write: for analytics-dispatch a
 * ClickHouse insert, a part in invocations and in each rollup (it inserted 17 times for ~170,000
 * rows instead of 12, its batches of 20,000 each trailed by one of 500-1,500), for the
 * aggregating stages a PostgreSQL transaction (BENCHMARKS.md, issue 13, nineteenth session).
 */
export function batchesOf<B extends { events: readonly unknown[] }>(blocks: readonly B[], batchSize: number): B[][] {
  let rest = 0;
  for (const block of blocks) rest += block.events.length;
  const tail = batchSize * TAIL_SHARE;
  const batches: B[][] = [];
  let batch: B[] = [];
  let inBatch = 0;
  for (const block of blocks) {
    if (batch.length && inBatch + block.events.length > batchSize && rest > tail) {
      batches.push(batch);
      batch = [];
      inBatch = 0;
    }
    batch.push(block);
    inBatch += block.events.length;
    rest -= block.events.length;
  }
  if (batch.length) batches.push(batch);
  return batches;
}

/** Per partition: reads blocks, hands their events to the stage, acks and forwards block by block. */
export class PartitionWorker<In> implements RecoveryHost {
  readonly config: Config;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly inputKey: string;
  readonly errorsKey: string;
  readonly deadKey: string;
  private readonly blocking: Redis;
  /** The reader's connection with the scripts defined (readKnown-1.lua reads with it). */
  private readonly blockingScripts: ReturnType<typeof scripted>;
  private readonly watermark: Watermark;
  private readonly consumedOutputs: Set<string>;
  private readonly outputKeys = new Map<string, string[]>();
  /** Events per entry of what this worker forwarded lately: its output marks are in events. */
  private readonly outputSizes = new BlockSizes();
  /** Events per read (the stage's batch size); a read asks for as many entries as that makes in blocks. */
  private readonly batchSize: number;
  private readonly lingerMs: number;
  /** Events per entry in the last read, to turn the batch size in events into a read COUNT. */
  private eventsPerEntry = 1;
  /** The newest id this worker was handed by a read of new entries ('' before the first): its group has read at least that far. */
  private lastReadId = '';
  stopping = false;
  private reading = false;
  /** Entries read ahead of the batch in hand (stage.pipelined), not handed to the handler yet. */
  private readAheadIds: string[] = [];
  /** The last batch's ack while the next is handled (stage.pipelined), and what it failed with. */
  private ackBehind: Promise<void> = Promise.resolve();
  private ackFailure?: { err: unknown };
  private recoveryTimer?: NodeJS.Timeout;
  private queue: Promise<unknown> = Promise.resolve();
  /** When the batch in hand was read, claimed or last touched: a batch held too long is not moved (pipeline/move.ts). */
  private handedAt = 0;
  private readonly recovery: Recovery;
  /** Says this worker no longer reads its input (other groups of this process then stop keeping decoded entries for it). */
  private readonly leaveSharedReads: () => void;

  constructor(
    readonly stage: StageDefinition<In>,
    private readonly handler: StageHandler<In>,
    readonly partition: number,
    readonly consumer: string,
    readonly redis: ReturnType<typeof scripted>,
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
    this.blockingScripts = scripted(this.blocking);
    this.batchSize = this.config.BATCH_SIZE ?? (typeof stage.batchSize === 'function' ? stage.batchSize(this.config) : stage.batchSize);
    // Entries read first wait out the linger in this consumer's pending list: a linger past a third
    // of CLAIM_IDLE_MS would let the recovery of another consumer claim, and handle again, a batch
    // still being gathered here.
    const linger = (typeof stage.lingerMs === 'function' ? stage.lingerMs(this.config) : stage.lingerMs) ?? 0;
    this.lingerMs = Math.min(linger, Math.floor(this.config.CLAIM_IDLE_MS / 3));
    const consumedOutputs = stage.outputs.filter((o) => options.topology.some((t) => t.stream === o));
    this.consumedOutputs = new Set(consumedOutputs);
    this.watermark = new Watermark(
      redis,
      consumedOutputs.map((o) => partitionedKey(prefix, o, partition)),
      this.config.BACKPRESSURE_HIGH,
      this.config.BACKPRESSURE_LOW,
      {
        cacheMs: WATERMARK_CACHE_MS,
        sizes: this.outputSizes,
        maxAgeMs: this.config.STREAM_MAX_QUEUE_MS,
        onHeld: this.metrics.gateHeldBy(this.stage.name),
      },
    );
    this.recovery = new Recovery(this);
    this.leaveSharedReads = sharedReads.join(this.inputKey, stage.name);
  }

  isReading(): boolean {
    return this.reading;
  }

  stop(): void {
    this.stopping = true;
    clearInterval(this.recoveryTimer);
    // Abort a blocked read; anything it had been handed stays pending under this consumer.
    this.blocking.disconnect();
    sharedReads.wakeAll(this.inputKey);
  }

  async run(): Promise<void> {
    try {
      await this.survive(() => this.drainOwnPending());
      this.recoveryTimer = setInterval(() => void this.survive(() => this.recovery.pass()), this.config.CLAIM_INTERVAL_MS);
      this.recoveryTimer.unref();
      this.reading = true;
      let next: Promise<RawEntry[] | undefined> | undefined;
      for (;;) {
        const entries = await (next ?? this.readWhenRoom());
        this.readAheadIds = [];
        if (entries === undefined) break;
        next = this.stage.pipelined ? this.readAhead() : undefined;
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
      await this.settleAckBehind().catch((err) => this.log.error({ err }, 'the last ack failed; its entries stay pending'));
      this.blocking.disconnect();
      this.leaveSharedReads();
    }
  }

  /**
   * The next batch read while one is in hand (stage.pipelined), awaited after it: its ids are kept
   * meanwhile, touched with the batch in hand through an outage so no one claims them.
   */
  private readAhead(): Promise<RawEntry[] | undefined> {
    const read = this.readWhenRoom();
    read.then((entries) => (this.readAheadIds = entries?.map((e) => e.id) ?? []), () => {});
    return read;
  }

  /** The next entries read once the outputs have room (none when that could not be told); undefined when stopping. */
  private async readWhenRoom(): Promise<RawEntry[] | undefined> {
    if (this.stopping) return undefined;
    const room = await this.waitForRoom();
    if (room === undefined) return [];
    if (!room) return undefined;
    return this.readNew();
  }

  /** Entries per read: the batch size in events over the events an entry carried lately. */
  readCount(): number {
    return Math.max(1, Math.min(this.batchSize, Math.round(this.batchSize / this.eventsPerEntry)));
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
        (state) => this.log.warn({ ...state, outputs: [...this.consumedOutputs] }, 'paused by backpressure for long: the outputs are not drained'),
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

  async xreadgroup(args: (string | number)[], blockMs?: number): Promise<RawEntry[]> {
    const command = ['GROUP', this.stage.name, this.consumer, 'COUNT', this.readCount(), ...(blockMs ? ['BLOCK', blockMs] : []), ...args];
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
      return this.readFailed(err);
    } finally {
      clearTimeout(watchdog);
    }
  }

  private async readNew(): Promise<RawEntry[]> {
    const first = await this.readEntries(this.config.BLOCK_MS);
    const wanted = this.readCount();
    if (!this.lingerMs || first.length === 0 || first.length >= wanted) return first;
    const entries = first;
    const deadline = Date.now() + this.lingerMs;
    while (entries.length < wanted && !this.stopping) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      const more = await this.readEntries(Math.max(1, left));
      if (more.length === 0) break;
      entries.push(...more);
    }
    return entries;
  }

  /**
   * New entries, waiting up to blockMs for some. When other groups of this process read the same
   * stream (the stages after the ledger), one of them at a time blocks on Redis; the others wait
   * for what it brings and read without blocking, leaving out the fields of entries decoded here
   * already (shared reads), so a block's bytes cross from Redis once rather than once per group.
   */
  private async readEntries(blockMs: number): Promise<RawEntry[]> {
    if (sharedReads.readers(this.inputKey) < 2) return this.xreadgroup(['STREAMS', this.inputKey, '>'], blockMs);
    const ready = await this.readKnown();
    if (ready.length || this.stopping) return this.readUpTo(ready);
    if (sharedReads.isBlocked(this.inputKey)) {
      await sharedReads.wait(this.inputKey, blockMs);
      return this.stopping ? [] : this.readUpTo(await this.readKnown());
    }
    const unblocked = sharedReads.blocking(this.inputKey);
    try {
      return this.readUpTo(await this.readPlainly(blockMs));
    } finally {
      unblocked();
    }
  }

  /** New entries by a plain XREADGROUP (blocking up to blockMs when given), decoded for the other groups of this process. */
  private async readPlainly(blockMs?: number): Promise<RawEntry[]> {
    return this.decodeShared(await this.xreadgroup(['STREAMS', this.inputKey, '>'], blockMs));
  }

  /** Notes how far a read of new entries took this worker's group (see lastReadId). */
  private readUpTo(entries: RawEntry[]): RawEntry[] {
    if (entries.length) this.lastReadId = entries[entries.length - 1].id;
    return entries;
  }

  /**
   * One non-blocking read of new entries (readKnown-1.lua): those another group of this process
   * decoded come as ids and are taken from the shared reads; one that is no longer kept there is
   * read again by its id. Read entries are decoded at once, for the other groups. The ids kept
   * after this worker's last read go with it: when they are what its group reads next, Redis
   * hands them over without reading their fields at all.
   */
  private async readKnown(): Promise<RawEntry[]> {
    const known = sharedReads.keptRange(this.inputKey);
    // Nothing decoded here to leave out (none kept, or none after what this worker read last): a
    // plain read costs Redis less than the script, whose XREADGROUP copies every field into Lua.
    if (!known || (this.lastReadId !== '' && compareIds(this.lastReadId, known[1]) >= 0)) return this.readPlainly();
    const count = this.readCount();
    const held = sharedReads.keptIdsAfter(this.inputKey, this.lastReadId, count);
    let reply: KnownReadReply | 0;
    try {
      reply = await this.blockingScripts.readKnownBuffer(this.inputKey, this.stage.name, this.consumer, count, known[0], known[1], ...held);
    } catch (err) {
      return this.readFailed(err);
    }
    // None of the held ids comes next for the group (it is behind them, or past them): what it
    // reads next must come with its bytes, sent most cheaply by a plain read.
    if (reply === 0) return this.readPlainly();
    const entries: RawEntry[] = [];
    const missing: RawEntry[] = [];
    for (const [id, fields] of reply) {
      const entry: RawEntry = { id: id.toString(), fields: fields ?? [] };
      if (!fields) {
        entry.decoded = sharedReads.take(this.inputKey, entry.id);
        if (entry.decoded) sharedReads.stats.taken++;
        else missing.push(entry);
      }
      entries.push(entry);
    }
    if (missing.length && !(await this.readAgain(missing))) {
      // Redis did not answer: the entries from the first one not read stay pending here and are
      // claimed again (recovery), never taken as deleted.
      return this.decodeShared(entries.slice(0, entries.indexOf(missing[0])));
    }
    return this.decodeShared(entries);
  }

  /**
   * The fields of entries read as ids whose decoded entries aged out of the shared reads since the
   * range was taken (null for one deleted since), in one XRANGE over them; false when Redis did
   * not answer.
   */
  private async readAgain(missing: RawEntry[]): Promise<boolean> {
    let found: [Buffer, Buffer[]][];
    try {
      found = (await this.blocking.callBuffer('XRANGE', this.inputKey, missing[0].id, missing[missing.length - 1].id)) as [Buffer, Buffer[]][];
    } catch (err) {
      await this.readFailed(err);
      return false;
    }
    sharedReads.stats.readAgain += missing.length;
    const byId = new Map(found.map(([id, fields]) => [id.toString(), fields]));
    for (const entry of missing) entry.fields = byId.get(entry.id) ?? null;
    return true;
  }

  /** Decodes entries as they are read, so the other groups of this process find them (decode keeps them). */
  private decodeShared(entries: RawEntry[]): RawEntry[] {
    for (const entry of entries) {
      if (entry.decoded || !entry.fields) continue;
      try {
        entry.decoded = sharedReads.decode(this.inputKey, entry.id, entry.fields);
      } catch {
        // Undecodable: decode() meets it again and routes it as such.
      }
    }
    return entries;
  }

  private async readFailed(err: unknown): Promise<RawEntry[]> {
    if (this.stopping) return [];
    this.metrics.errors.inc({ stage: this.stage.name, kind: 'redis' });
    this.log.warn({ err }, 'read failed; retrying');
    await sleep(500);
    return [];
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
   * One attempt of the handler, bounded: a promise that never settles (a database client
   * waiting on a connection that was cut mid-query) would hold this partition, and everything
   * serialized behind it, for good without an error to show for it.
   */
  private withinDeadline<R>(attempt: Promise<R>): Promise<R> {
    const ms = this.config.STAGE_HANDLER_TIMEOUT_MS;
    return settleWithin(attempt, ms, () => new WedgedError(`the ${this.stage.name} handler did not settle within ${ms} ms`));
  }

  /**
   * Redis unreachable mid-batch, say: the entries stay pending and are claimed again later. A
   * wedged handler is not survived: it ends the worker's loop (and the process: see runStage).
   */
  private async survive(work: () => Promise<void>): Promise<void> {
    try {
      await this.serialized(work);
    } catch (err) {
      if (err instanceof WedgedError) throw err;
      if (this.stopping) return;
      this.metrics.errors.inc({ stage: this.stage.name, kind: 'process' });
      this.log.error({ err }, 'batch processing failed; entries stay pending');
      await sleep(500);
    }
  }

  private decode(raw: RawEntry, redelivered: boolean): InputBlock<In> {
    const block: InputBlock<In> = { id: raw.id, origin: raw.id, events: [], deleted: raw.fields === null };
    if (!raw.fields) return block;
    try {
      const entry = (raw.decoded as DecodedEntry<In> | undefined) ?? sharedReads.decode<In>(this.inputKey, raw.id, raw.fields);
      if (entry.forGroup !== undefined) {
        if (entry.forGroup !== this.stage.name) {
          block.deleted = true;
          return block;
        }
        block.splitOff = true;
      }
      block.origin = entry.origin;
      block.blockBytes = entry.blockBytes;
      block.events = entry.events.map((event, i) => ({
        id: entry.block ? `${raw.id}/${i}` : raw.id,
        partition: this.partition,
        payload: event.payload,
        tags: event.tags,
        // A split-off event may have been applied with its block by a delivery that died before its ack.
        ...(redelivered || block.splitOff ? { redelivered: true } : {}),
      }));
    } catch (error) {
      block.decodeError = error;
    }
    return block;
  }

  /** Handles what was read in batches of about batchSize events (batchesOf). */
  async process(raw: RawEntry[], redelivered: boolean): Promise<void> {
    const blocks = raw.map((entry) => this.decode(entry, redelivered));
    let events = 0;
    let live = 0;
    for (const b of blocks) {
      events += b.events.length;
      if (b.events.length) live++;
    }
    if (live) this.eventsPerEntry = Math.max(1, events / live);
    for (const batch of batchesOf(blocks, this.batchSize)) {
      if (!(await this.processBlocks(batch, redelivered))) return;
    }
  }

  /** Handles, acks and forwards blocks; false when stopped during a dependency outage (they stay pending). */
  private async processBlocks(blocks: InputBlock<In>[], redelivered: boolean): Promise<boolean> {
    const started = process.hrtime.bigint();
    this.handedAt = Date.now();
    const live = blocks.filter((b) => !b.deleted && b.decodeError === undefined);
    let events = 0;
    for (const b of live) events += b.events.length;
    this.metrics.eventsIn.inc({ stage: this.stage.name }, events);

    const results = new Map<InputBlock<In>, EntryResult[]>();
    if (live.length) {
      const ids = live.map((b) => b.id);
      let handled: EntryResult[][] | undefined;
      if (this.handler.handleBlocks) {
        const handleBlocks = this.handler.handleBlocks.bind(this.handler);
        handled = await this.runHandler(
          live,
          async (part) => {
            const out = await handleBlocks(part);
            out.forEach((r, i) => {
              if (r.length !== part[i].events.length) throw new Error(`handler returned ${r.length} results for a block of ${part[i].events.length} events`);
            });
            return out;
          },
          (block, error) => block.events.map(() => ({ error })),
          ids,
        );
      } else {
        const flat = live.flatMap((b) => b.events);
        const perEvent = await this.runHandler(flat, (part) => this.handler.handle(part), (_e, error) => ({ error }), ids);
        if (perEvent) {
          let next = 0;
          handled = live.map((b) => perEvent.slice(next, (next += b.events.length)));
        }
      }
      if (handled === undefined) return false; // stopping during a dependency outage: everything stays pending
      for (const [i, b] of live.entries()) results.set(b, handled[i]);
    }

    const finish = async () => {
      const acks = await this.ackAndForward(blocks, results, redelivered);
      if (live.length) {
        try {
          await this.withinDeadline(
            Promise.resolve(
              this.handler.afterAck?.(
                live.flatMap((b) => b.events),
                live.flatMap((b) => acks.get(b) ?? b.events.map(() => ({ acked: false, crossed: [] }))),
              ),
            ),
          );
        } catch (err) {
          if (err instanceof WedgedError) throw err;
          this.metrics.errors.inc({ stage: this.stage.name, kind: 'after-ack' });
          this.log.error({ err }, 'after-ack hook failed');
        }
      }
      this.metrics.batchSeconds.observe({ stage: this.stage.name }, Number(process.hrtime.bigint() - started) / 1e9);
    };
    await this.settleAckBehind();
    if (!this.stage.pipelined || redelivered) await finish();
    else this.ackBehind = finish().catch((err: unknown) => void (this.ackFailure = { err }));
    return true;
  }

  /**
   * Waits for the ack still in flight (stage.pipelined: a batch is acked while the next is
   * handled, one ack at a time, in order); throws what it failed with, as an ack in line would.
   */
  private async settleAckBehind(): Promise<void> {
    await this.ackBehind;
    const failure = this.ackFailure;
    this.ackFailure = undefined;
    if (failure) throw failure.err;
  }

  /**
   * Runs the handler over units (events, or blocks for a handler that takes blocks). A
   * dependency outage keeps the batch in hand and retries it with backoff (touching the entries
   * so no one claims them, and without counting deliveries). Any other failure of the whole
   * batch is narrowed down by halves to the units at fault (a few attempts per bad unit, not
   * one per unit: a 5,000-row ClickHouse batch is not cut into 5,000 inserts), so one bad event
   * cannot hold up its neighbours; each unit at fault fails alone. Returns undefined when asked
   * to stop during an outage.
   */
  private async runHandler<U, R>(
    units: U[],
    call: (units: U[]) => Promise<R[]>,
    failed: (unit: U, error: unknown) => R,
    entryIds: string[],
  ): Promise<R[] | undefined> {
    let delay = 100;
    let touchedAt = Date.now();
    for (;;) {
      try {
        const results = await this.withinDeadline(call(units));
        if (results.length !== units.length) {
          throw new Error(`handler returned ${results.length} results for ${units.length} entries`);
        }
        return results;
      } catch (err) {
        if (err instanceof WedgedError) throw err;
        if (isTransient(err)) {
          this.metrics.errors.inc({ stage: this.stage.name, kind: 'dependency' });
          if (this.stopping) return undefined;
          this.log.warn({ err: describeError(err), retryInMs: delay }, 'dependency unavailable; retrying batch in hand');
          await sleep(delay);
          delay = Math.min(delay * 2, 5_000);
          if (Date.now() - touchedAt > this.config.CLAIM_IDLE_MS / 3) {
            await this.touch([...entryIds, ...this.readAheadIds]);
            touchedAt = Date.now();
          }
          continue;
        }
        this.metrics.errors.inc({ stage: this.stage.name, kind: 'handler' });
        if (units.length === 1) return [failed(units[0], err)];
        this.log.warn({ err: describeError(err), size: units.length }, 'batch failed; retrying it by halves to find the entries at fault');
        const middle = Math.ceil(units.length / 2);
        const first = await this.runHandler(units.slice(0, middle), call, failed, entryIds);
        if (first === undefined) return undefined;
        const second = await this.runHandler(units.slice(middle), call, failed, entryIds);
        if (second === undefined) return undefined;
        return [...first, ...second];
      }
    }
  }

  /** Resets the idle time of entries in hand (XCLAIM JUSTID does not count a delivery). */
  private async touch(ids: string[]): Promise<void> {
    try {
      await this.redis.xclaim(this.inputKey, this.stage.name, this.consumer, 0, ...ids, 'JUSTID');
      this.handedAt = Date.now();
    } catch (err) {
      this.log.warn({ err }, 'could not refresh pending entries');
    }
  }

  /**
   * Builds one ack input per block: its events' outputs grouped into one entry per output
   * stream partition (a block again), its counted events, and its failed events split off as
   * retries. A block whose every event failed is not acked: it stays pending with its error.
   */
  private ackInput(
    block: InputBlock<In>,
    results: EntryResult[],
    redelivered: boolean,
  ): { input?: RoutedInput; error?: unknown; ok: boolean[]; streams: Map<string, number> } {
    const errors: unknown[] = results.map((r) => r.error);
    for (;;) {
      const ok = errors.map((e) => e === undefined);
      if (!ok.some(Boolean)) return { error: errors.find((e) => e !== undefined), ok, streams: new Map() };
      const built = this.groupOutputs(block, results, ok, errors);
      if (!built) continue; // some events' outputs could not be encoded: they failed, build again
      const retries: AckRetry[] = [];
      for (let i = 0; i < block.events.length; i++) {
        if (ok[i]) continue;
        const event = block.events[i];
        retries.push({ payload: encodePayload(event.payload), tags: event.tags.join(','), reason: describeError(errors[i]) });
      }
      return {
        input: { id: block.id, clearError: redelivered || block.splitOff === true, groups: built.groups, counted: built.counted, retries },
        ok,
        streams: built.streams,
      };
    }
  }

  /** The partitioned key of an output stream, built once per stream and partition (not per event). */
  private outputKey(stream: string, partition: number): string {
    let keys = this.outputKeys.get(stream);
    if (!keys) this.outputKeys.set(stream, (keys = []));
    return (keys[partition] ??= partitionedKey(this.config.REDIS_PREFIX, stream, partition));
  }

  /** Groups the outputs of the events still ok; undefined (with errors set) when some could not be encoded. */
  private groupOutputs(
    block: InputBlock<In>,
    results: EntryResult[],
    ok: boolean[],
    errors: unknown[],
  ): { groups: RoutedGroup[]; counted: AckCounted[]; streams: Map<string, number> } | undefined {
    const prefix = this.config.REDIS_PREFIX;
    type Draft = { key: string; origin: string; stream: string; partition: number; payloads: unknown[]; owners: number[]; groupIndex: number };
    const drafts: Draft[] = [];
    const byKey = new Map<string, Draft>();
    // Where each output of an event with counter effects went (the ack script tags them); none for the others.
    let refsOf: ({ groupIndex: number; position: number }[] | undefined)[] | undefined;
    for (let i = 0; i < results.length; i++) {
      const result = results[i];
      if (!ok[i] || !result.outputs) continue;
      for (const output of result.outputs as Output[]) {
        if (!this.stage.outputs.includes(output.stream)) {
          errors[i] = new Error(`stage ${this.stage.name} may not write to ${output.stream}`);
          return undefined;
        }
        const partition = output.partitionKey === undefined ? this.partition : partitionOf(output.partitionKey, this.config.PARTITIONS);
        const key = this.outputKey(output.stream, partition);
        // A terminal stream (rejections) keeps one entry per event: operators and tools read it.
        let draft = this.consumedOutputs.has(output.stream) ? byKey.get(key) : undefined;
        if (!draft) {
          draft = {
            key,
            origin: partition === this.partition ? block.origin : `${block.origin}.${partition}`,
            stream: output.stream,
            partition,
            payloads: [],
            owners: [],
            groupIndex: drafts.length + 1,
          };
          drafts.push(draft);
          if (this.consumedOutputs.has(output.stream)) byKey.set(key, draft);
        }
        draft.payloads.push(output.payload);
        draft.owners.push(i);
        if (result.counters?.length) ((refsOf ??= [])[i] ??= []).push({ groupIndex: draft.groupIndex, position: draft.payloads.length });
      }
    }
    const groups: RoutedGroup[] = [];
    const streams = new Map<string, number>();
    let encodingFailed = false;
    for (const draft of drafts) {
      try {
        const many = draft.payloads.length > 1;
        const payload = many ? this.blockOutput(block, draft.payloads, draft.owners) : encodePayload(draft.payloads[0]);
        if (many && this.consumedOutputs.has(draft.stream)) sharedReads.offer(draft.key, draft.origin, payload, draft.payloads);
        groups.push({
          groupKey: draft.key,
          stream: draft.stream,
          partition: draft.partition,
          payload,
          nEvents: draft.payloads.length,
          origin: draft.origin,
        });
        streams.set(draft.stream, (streams.get(draft.stream) ?? 0) + draft.payloads.length);
      } catch (error) {
        // An output that cannot be encoded (an amount beyond 64 bits) fails its event alone.
        encodingFailed = true;
        let found = false;
        draft.payloads.forEach((payload, p) => {
          try {
            encodePayload(payload);
          } catch (each) {
            errors[draft.owners[p]] = each;
            found = true;
          }
        });
        if (!found) for (const owner of draft.owners) errors[owner] = error;
      }
    }
    if (encodingFailed) return undefined;
    const counted: AckCounted[] = [];
    for (let i = 0; i < results.length; i++) {
      const result = results[i];
      if (!ok[i] || !result.counters?.length) continue;
      counted.push({
        counters: result.counters.map((c) => ({
          counterKey: partitionedKey(prefix, c.key, this.partition),
          by: c.by,
          ttlSeconds: c.ttlSeconds,
          limit: c.limit,
          tag: c.tag,
          flagKey: c.onLimit ? partitionedKey(prefix, c.onLimit.key, this.partition) : undefined,
          flagValue: c.onLimit?.value,
          flagTtlSeconds: c.onLimit?.ttlSeconds,
          window: c.window,
        })),
        refs: refsOf?.[i] ?? [],
      });
    }
    return { groups, counted, streams };
  }

  /**
   * The `b` field of an output block: when it holds at most one output for each event of an input
   * block, in order (whatever partition it goes to: the bytes do not name one), the input's `b`
   * plus a layer dropping the events without one and a layer of the fields the stage set
   * (pipeline/blocks.ts); otherwise every payload encoded whole.
   */
  private blockOutput(block: InputBlock<In>, payloads: unknown[], owners: number[]): BlockBytes {
    const inOrder = block.blockBytes !== undefined && owners.every((owner, p) => p === 0 || owner > owners[p - 1]);
    if (!inOrder) return encodePayload(payloads);
    const dropped: number[] = [];
    for (let i = 0, p = 0; i < block.events.length; i++) {
      if (owners[p] === i) p++;
      else dropped.push(i);
    }
    const inputs = owners.map((owner) => block.events[owner].payload);
    return blockPartsWithLayer(block.blockBytes!, inputs, payloads, this.stage.sets, dropped) ?? encodePayload(payloads);
  }

  private async ackAndForward(
    blocks: InputBlock<In>[],
    results: Map<InputBlock<In>, EntryResult[]>,
    redelivered: boolean,
  ): Promise<Map<InputBlock<In>, AckResult[]>> {
    const failed: { id: string; error: unknown }[] = [];
    const inputs: (RoutedInput)[] = [];
    const meta: { block: InputBlock<In>; ok: boolean[]; streams: Map<string, number>; countedIndex: number[] }[] = [];
    for (const block of blocks) {
      if (block.deleted) {
        // Deleted while pending: just ack it.
        inputs.push({ id: block.id, clearError: redelivered, groups: [], counted: [], retries: [] });
        meta.push({ block, ok: [], streams: new Map(), countedIndex: [] });
        continue;
      }
      if (block.decodeError !== undefined) {
        failed.push({ id: block.id, error: block.decodeError });
        continue;
      }
      const blockResults = results.get(block)!;
      const built = this.ackInput(block, blockResults, redelivered);
      if (!built.input) {
        failed.push({ id: block.id, error: built.error });
        continue;
      }
      const countedIndex: number[] = [];
      blockResults.forEach((r, i) => {
        if (built.ok[i] && r.counters?.length) countedIndex.push(i);
      });
      inputs.push(built.input);
      meta.push({ block, ok: built.ok, streams: built.streams, countedIndex });
    }

    if (failed.length) await this.recordFailures(failed);

    const acks = new Map<InputBlock<In>, AckResult[]>();
    if (inputs.length === 0) return acks;
    if (!(await this.moveAcross(inputs))) return acks;
    const local = inputs.map((input) => ({ ...input, groups: input.groups.filter((g) => !this.isRemote(g)) }));
    const { keys, args } = ackArguments(this.inputKey, this.errorsKey, this.stage.name, local);
    const reply = parseAckReply(inputs, await this.redis.ackAndForward(keys.length, ...keys, ...args));
    const refused: { id: string; error: unknown }[] = [];
    const forwarded = new Map<string, number>();
    let entriesOut = 0;
    let eventsOut = 0;
    reply.forEach((r, n) => {
      const { block, ok, streams, countedIndex } = meta[n];
      if (r.kind === 'refused') {
        refused.push({ id: block.id, error: new Error(`the ack script refused the entry: ${r.reason}`) });
        return;
      }
      if (r.kind === 'not-acked') return;
      const perEvent: AckResult[] = block.events.map((_, i) => ({ acked: ok[i], crossed: [] }));
      countedIndex.forEach((i, k) => {
        perEvent[i].crossed = r.crossed[k] ?? [];
      });
      acks.set(block, perEvent);
      for (const [stream, count] of streams) forwarded.set(stream, (forwarded.get(stream) ?? 0) + count);
      for (const g of inputs[n].groups) {
        if (!this.consumedOutputs.has(g.stream)) continue;
        entriesOut++;
        eventsOut += g.nEvents;
      }
      if (inputs[n].retries.length) {
        this.metrics.errors.inc({ stage: this.stage.name, kind: 'entry' }, inputs[n].retries.length);
        this.log.warn({ block: block.id, failed: inputs[n].retries.map((x) => x.reason) }, 'events failed alone; split off their block for retry');
      }
    });
    if (refused.length) await this.recordFailures(refused);
    for (const [stream, count] of forwarded) this.metrics.eventsOut.inc({ stage: this.stage.name, stream }, count);
    if (entriesOut) this.outputSizes.wrote(entriesOut, eventsOut);
    this.watermark.added(eventsOut);
    return acks;
  }

  /** True for an output in another hash slot than the input: moved in two steps (pipeline/move.ts), not by the ack script. */
  private isRemote(group: RoutedGroup): boolean {
    return group.partition !== this.partition && keySlot(group.groupKey) !== keySlot(this.inputKey);
  }

  /**
   * Step 1 of the moves to other partitions (pipeline/move.ts): every output group in another
   * slot is appended to its stream once, keyed by its origin, before the ack script acks the
   * inputs (step 2). False when the batch was held so long that a marker written by whoever
   * took it over may have expired: nothing is moved or acked, the entries stay pending.
   */
  private async moveAcross(inputs: (RoutedInput)[]): Promise<boolean> {
    const byTarget = new Map<string, MovedEntry[]>();
    for (const input of inputs) {
      const remote = input.groups.filter((g) => this.isRemote(g));
      if (remote.length === 0) continue;
      // The ack script tags outputs by their group index; a counted event's outputs stay local.
      if (input.counted.length) throw new Error(`stage ${this.stage.name} counts events and moves them to other partitions: not supported`);
      for (const g of remote) {
        const fields = g.nEvents === 1 ? [FIELD.single, g.payload] : [FIELD.block, g.payload, FIELD.origin, g.origin];
        const list = byTarget.get(g.groupKey) ?? [];
        list.push({ marker: moveMarkerKey(this.config.REDIS_PREFIX, g.stream, g.origin, g.partition), fields });
        byTarget.set(g.groupKey, list);
      }
    }
    if (byTarget.size === 0) return true;
    const ttl = this.config.MOVE_MARKER_TTL_SECONDS;
    if (Date.now() - this.handedAt > (ttl * 1000) / 2) {
      this.log.warn({ heldSeconds: Math.round((Date.now() - this.handedAt) / 1000) }, 'batch held too long to move it safely; left pending for a fresh delivery');
      return false;
    }
    const durable = this.config.INGEST_DURABILITY === 'replica';
    await Promise.all(
      [...byTarget].map(async ([target, entries]) => {
        await forwardOnce(this.redis, target, entries, ttl);
        if (durable) await waitForReplicas(this.redis, target, this.config.INGEST_DURABILITY_REPLICAS, this.config.INGEST_DURABILITY_TIMEOUT_MS);
      }),
    );
    return true;
  }

  /** Failed entries stay pending with their last error, retried at the next recovery pass, dead-lettered after MAX_DELIVERIES. */
  async recordFailures(failed: { id: string; error: unknown }[]): Promise<void> {
    const errors: string[] = [];
    for (const { id, error } of failed) {
      errors.push(id, describeError(error));
      this.recovery.failedHere.add(id);
    }
    await this.redis.hset(this.errorsKey, ...errors);
    this.metrics.errors.inc({ stage: this.stage.name, kind: 'entry' }, failed.length);
    this.log.warn({ failed: failed.map((f) => ({ id: f.id, error: describeError(f.error) })) }, 'entries failed; left pending for retry');
  }
}

/** An output group with where it goes. */
type RoutedGroup = AckGroup & { stream: string; partition: number };
type RoutedInput = Omit<AckInput, 'groups'> & { groups: RoutedGroup[] };

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
