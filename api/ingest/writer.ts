import { Cluster, type Redis as Standalone } from 'ioredis';
import { masterFor, type Redis } from '../../pipeline/redis.js';
import { BlockSizes, pathOf, Watermark, type GateBound } from '../../pipeline/backpressure.js';
import { entryFields, MAX_BLOCK_EVENTS, newOrigin } from '../../pipeline/blocks.js';
import { GroupCommit, packGroups } from './group-commit.js';
import type { Config } from '../../pipeline/config.js';
import { BEFORE_LEDGER, STREAMS } from '../../store/streams.js';
import { partitionOf, partitionedKey } from '../../pipeline/keys.js';
import type { Credential, UsageEvent } from '../../domain/events.js';
import { tooManyRequests, type ApiError } from '../errors.js';

/** The key an event is partitioned by on the first stream: its tenant and credential (before anyone knows the customer). */
export function ingestPartitionKey(tenantId: string, credential: Credential): string {
  return `${tenantId}/${credential.kind === 'api_key' ? credential.keyHash : credential.clientId}`;
}

const WRITE_ERRORS = {
  out_of_memory: 'Redis is out of memory',
  unavailable: 'Redis write failed',
  not_durable: 'the write was not confirmed durable in time',
} as const;

/**
 * Why a write failed: Redis is out of memory (noeviction refuses writes), unreachable / failing,
 * or took the block but did not confirm it durable (INGEST_DURABILITY) within the timeout.
 */
export class IngestWriteError extends Error {
  constructor(
    readonly kind: keyof typeof WRITE_ERRORS,
    options: { cause: unknown },
    /**
     * The request's events went to several partitions and another partition's write succeeded
     * (or may have: not_durable): some of its events are in the stream.
     */
    readonly partial = false,
  ) {
    super(WRITE_ERRORS[kind], options);
    this.name = 'IngestWriteError';
  }
}

function isOutOfMemory(err: unknown): boolean {
  const { message, previousErrors } = err as { message?: unknown; previousErrors?: unknown[] };
  if (typeof message === 'string' && message.startsWith('OOM')) return true;
  return Array.isArray(previousErrors) && previousErrors.some((e) => isOutOfMemory(e));
}

/**
 * How many events `events:ledgered` may hold unread before ingest refuses: the ledger stops at
 * BACKPRESSURE_HIGH there (its output gate) until the stages after it read it below
 * BACKPRESSURE_LOW, so ingest closes far enough below the ledger's mark that what it accepted
 * always fits: it is not held up while the ledger waits for the stages after it.
 *
 * How far: LEDGER_ROOM_QUEUES times INGEST_MAX_QUEUE_EVENTS. Once ingest read room, the queue
 * before the ledger (up to INGEST_MAX_QUEUE_EVENTS, and more in the time a read takes), the
 * requests in flight (64 requests of 100 events in the benchmark) and what is taken before the
 * next read all still reach the ledger. With one queue's margin the ledger stopped anyway, 4 to 11
 * s of every 60-s run at 3x overload, and what ingest had taken waited it out: accepted events
 * ledgered p99 1.5-3.1 s. With three it never stopped: 1.3 s (BENCHMARKS.md, issue 13,
 * forty-sixth session).
 *
 * It opens again at three quarters of that mark, not half. While it is closed, the stages after
 * the ledger catch up alone on one core and the other core sits idle. In ten alternating pairs of
 * 45 s `--rate max` runs, reopening at three quarters won 7 of 10: 9,185 against 8,535 events/s on
 * average, the machine idle 9.4% against 11.7% (BENCHMARKS.md, issue 13, fortieth session).
 */
const LEDGER_ROOM_QUEUES = 3;

function ledgerRoom(config: Pick<Config, 'BACKPRESSURE_HIGH' | 'BACKPRESSURE_LOW' | 'INGEST_MAX_QUEUE_EVENTS'>): { high: number; low: number } {
  const high = Math.max(config.BACKPRESSURE_LOW, config.BACKPRESSURE_HIGH - LEDGER_ROOM_QUEUES * config.INGEST_MAX_QUEUE_EVENTS);
  return { high, low: Math.floor((high * 3) / 4) };
}

/**
 * While the gate is closed, how long a request that reaches the route waits for a read of the queue
 * before it is refused (serveNode refuses most of them before that, without a wait: knownFull).
 */
const CLOSED_ANSWER_MS = 10;

/** The 429 of a request refused while the writer's gate is closed, saying when to come back. */
export function behind(writer: IngestWriter): ApiError {
  return tooManyRequests('backpressure', 'the pipeline is behind; nothing was accepted, retry the same request later', writer.retryHintMs());
}

/**
 * Writes accepted events to `events:ingested`: per partition, a request's events go whole into
 * one block (see pipeline/blocks.ts), with those of the requests that arrived while the
 * partition's previous write was in flight (GroupCommit); a write of several blocks (more than
 * MAX_BLOCK_EVENTS events) is one MULTI/EXEC, so a request's events in one partition land all
 * or nothing. Also holds the backpressure gate over every partition of that stream.
 */
export class IngestWriter {
  private readonly watermark: Watermark;
  private readonly keys: string[];
  private readonly sizes = new BlockSizes();
  private readonly commits = new GroupCommit<UsageEvent>((partition, groups) => this.writeGroups(partition, groups));

  constructor(
    private readonly redis: Redis,
    private readonly config: Config,
    backpressureCacheMs = 100,
    /** Where an event goes (by default by tenant and credential, ingestPartitionKey): e.g. its customer's partition when known. */
    private readonly placement?: { partitionOf(tenantId: string, credential: Credential): number },
    /** For each bound that held the gate closed, the time it held it (ms): the ingest's am_gate_held_seconds_total. */
    onHeld?: (bound: GateBound, ms: number) => void,
  ) {
    this.keys = Array.from({ length: config.PARTITIONS }, (_, p) => partitionedKey(config.REDIS_PREFIX, STREAMS.ingested, p));
    const pathsByPartition = this.keys.map((_, p) => BEFORE_LEDGER.map((s) => partitionedKey(config.REDIS_PREFIX, s, p)));
    const ledgeredByPartition = this.keys.map((_, p) => partitionedKey(config.REDIS_PREFIX, STREAMS.ledgered, p));
    this.watermark = new Watermark(redis, this.keys, config.INGEST_MAX_QUEUE_EVENTS, Math.floor(config.INGEST_MAX_QUEUE_EVENTS / 2), {
      cacheMs: backpressureCacheMs,
      sizes: this.sizes,
      maxAgeMs: config.INGEST_MAX_QUEUE_MS,
      probe: pathOf(redis, pathsByPartition, ledgeredByPartition),
      downstream: ledgerRoom(config),
      // A refusal stays prompt: under overload this read shares the connection with the blocks
      // being written and took up to 30-120 ms at its p99 (BENCHMARKS.md, issue 13, ninth session).
      closedAnswerMs: CLOSED_ANSWER_MS,
      onHeld,
    });
  }

  /**
   * False while the streams before the ledger (events:ingested up to ledger-write's input) hold
   * more than INGEST_MAX_QUEUE_EVENTS events not yet acknowledged, or more than
   * INGEST_MAX_QUEUE_MS of waiting (their oldest waits summed: pipeline/backpressure.ts pathOf),
   * until both are below half. A bound on the whole way to the ledger, not on the first stream
   * only, so what is accepted is ledgered in about that time.
   */
  async hasRoom(): Promise<boolean> {
    return this.watermark.open();
  }

  /**
   * True while the last read of the queue closed the gate, however long ago (a stale one starts the
   * next read without waiting for it): a request can be refused at once, before any other work.
   */
  knownFull(): boolean {
    return this.watermark.closedByLastRead();
  }

  /** While hasRoom() is false: about how long until it turns true (ms), for the Retry-After-Ms of a 429. */
  retryHintMs(): number {
    return this.watermark.retryHintMs();
  }

  /**
   * Writes the events, each partition's share as one group: all of it lands or none of it. A
   * group waits while a write of its partition is in flight and then goes with the groups that
   * waited with it (GroupCommit); with nothing in flight it is written at once. Resolves once
   * every partition's write succeeded; otherwise throws the first failure (an IngestWriteError),
   * after every partition's write ended, `partial` when another partition's write succeeded (or
   * may have): then some of the events are in the stream.
   */
  async write(events: readonly UsageEvent[]): Promise<void> {
    const byPartition = new Map<number, UsageEvent[]>();
    for (const event of events) {
      const partition = this.placement
        ? this.placement.partitionOf(event.tenantId, event.credential)
        : partitionOf(ingestPartitionKey(event.tenantId, event.credential), this.config.PARTITIONS);
      const group = byPartition.get(partition);
      if (group) group.push(event);
      else byPartition.set(partition, [event]);
    }
    // Wait for every partition before answering, so nothing is still being written when the caller hears of a failure.
    const settled = await Promise.allSettled([...byPartition].map(([partition, group]) => this.commits.submit(partition, group)));
    this.watermark.added(events.length);
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (!failure) return;
    const landed = settled.some((s) => s.status === 'fulfilled' || (s.reason instanceof IngestWriteError && s.reason.kind === 'not_durable'));
    if (settled.length === 1 || !landed) throw failure.reason;
    // A new error: the failed write's error is shared by every request of its group (GroupCommit).
    const kind = failure.reason instanceof IngestWriteError ? failure.reason.kind : 'unavailable';
    throw new IngestWriteError(kind, { cause: failure.reason }, true);
  }

  /** One write of a partition: the groups packed into blocks (whole, see packGroups), all in one atomic step. */
  private async writeGroups(partition: number, groups: readonly (readonly UsageEvent[])[]): Promise<void> {
    const key = this.keys[partition];
    const packed = packGroups(groups, MAX_BLOCK_EVENTS);
    let events = 0;
    for (const block of packed) events += block.length;
    this.sizes.wrote(packed.length, events);
    const blocks = packed.map((block) => entryFields(block, newOrigin()));
    if (this.config.INGEST_DURABILITY === 'ack') await this.writeAcked(key, blocks);
    else await this.writeDurable(key, blocks);
  }

  /** INGEST_DURABILITY=ack: the blocks in one MULTI/EXEC, answered once Redis took them. */
  private async writeAcked(key: string, blocks: (string | Buffer)[][]): Promise<void> {
    if (blocks.length === 1) {
      // One block: one XADD, atomic on its own (no MULTI/EXEC round of three commands).
      try {
        await this.redis.xadd(key, '*', ...blocks[0]);
      } catch (err) {
        throw writeError(err);
      }
      return;
    }
    const multi = this.redis.multi();
    for (const fields of blocks) multi.xadd(key, '*', ...fields);
    let results: [Error | null, unknown][] | null;
    try {
      results = await multi.exec();
    } catch (err) {
      throw writeError(err);
    }
    const failed = results === null ? new Error('transaction aborted') : results.find(([err]) => err)?.[0];
    if (failed) throw writeError(failed);
  }

  /**
   * INGEST_DURABILITY=replica|fsync: MULTI, the XADDs, EXEC and then WAIT (or WAITAOF) in one
   * pipeline on one connection, to the node that holds the stream (on a cluster, the master
   * of its slot, with no redirect: WAIT counts the writes of its own connection only, so a
   * write that went elsewhere must not be confirmed by it). A reply short of the replicas (or of
   * the local fsync) within INGEST_DURABILITY_TIMEOUT_MS is a not_durable failure: the blocks may
   * be in the stream, but the client is not told they were accepted (its retry is deduplicated
   * by event id).
   */
  private async writeDurable(key: string, blocks: (string | Buffer)[][]): Promise<void> {
    const node = this.nodeOf(key);
    const timeout = this.config.INGEST_DURABILITY_TIMEOUT_MS;
    const fsync = this.config.INGEST_DURABILITY === 'fsync';
    const useWaitAof = fsync && this.waitAof.get(node) !== false;
    // An inline transaction in a pipeline (ioredis: multi() ... exec() queued, then WAIT after it).
    const pipeline = node.pipeline() as ReturnType<Standalone['pipeline']> & { multi(): unknown; exec(): unknown };
    pipeline.multi();
    for (const fields of blocks) pipeline.xadd(key, '*', ...fields);
    pipeline.exec();
    if (!fsync) pipeline.call('WAIT', this.config.INGEST_DURABILITY_REPLICAS, timeout);
    else if (useWaitAof) pipeline.call('WAITAOF', 1, 0, timeout);
    let results: [Error | null, unknown][] | null;
    try {
      results = await pipeline.exec();
    } catch (err) {
      throw writeError(err, this.redis);
    }
    if (!results) throw writeError(new Error('pipeline aborted'), this.redis);
    const execAt = blocks.length + 1;
    const failed = results.slice(0, execAt + 1).find(([err]) => err)?.[0];
    if (failed) throw writeError(failed, this.redis);
    if (results[execAt][1] === null) throw writeError(new Error('transaction aborted'), this.redis);
    if (fsync && !useWaitAof) return; // appendfsync always (checked at start): EXEC answered after the fsync
    const [waitError, waited] = results[execAt + 1];
    if (waitError && fsync && /unknown command/i.test(waitError.message)) {
      // Redis before 7.2: no WAITAOF; appendfsync always (checked at start) makes EXEC's reply wait for the fsync.
      this.waitAof.set(node, false);
      return;
    }
    if (waitError) throw new IngestWriteError('not_durable', { cause: waitError });
    const confirmed = fsync ? Number((waited as number[])[0]) >= 1 : Number(waited) >= this.config.INGEST_DURABILITY_REPLICAS;
    if (!confirmed) {
      throw new IngestWriteError('not_durable', {
        cause: new Error(fsync ? `WAITAOF: not fsynced within ${timeout} ms` : `WAIT: ${waited} of ${this.config.INGEST_DURABILITY_REPLICAS} replicas within ${timeout} ms`),
      });
    }
  }

  /** Per node: false once it refused WAITAOF (Redis before 7.2). */
  private readonly waitAof = new WeakMap<Standalone, boolean>();

  /** The connection to the node holding a key: the one node, or the master of its slot on a cluster. */
  private nodeOf(key: string): Standalone {
    const node = masterFor(this.redis, key);
    if (!node) throw new IngestWriteError('unavailable', { cause: new Error(`no master known for the slot of ${key}`) });
    return node;
  }
}

/** A failed write; on a cluster, a MOVED or CLUSTERDOWN reply also refreshes the slot map (a failover happened). */
function writeError(err: unknown, redis?: Redis): IngestWriteError {
  const message = String((err as Error)?.message ?? '');
  if (redis instanceof Cluster && /MOVED|CLUSTERDOWN|READONLY|TRYAGAIN/.test(message)) redis.refreshSlotsCache();
  return new IngestWriteError(isOutOfMemory(err) ? 'out_of_memory' : 'unavailable', { cause: err });
}
