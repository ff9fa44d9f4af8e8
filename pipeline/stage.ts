import type { Redis } from './redis.js';
import type { Config } from './config.js';
import type { ControlMessage } from './control.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { Sql } from './postgres.js';

/**
 * What a stage is to the harness: a handler plus the streams it reads and writes. The
 * harness reads, decodes, acks, forwards, retries, claims, dead-letters and trims; the
 * handler only turns a batch of decoded payloads into one result per entry.
 */
export interface StageDefinition<In = unknown> {
  name: string;
  /** Logical input stream; the stage's consumer group is named after the stage. */
  input: Stream<In>;
  /** Every logical stream the handler may emit to. */
  outputs: readonly Stream<unknown>[];
  /** Events per batch; the BATCH_SIZE variable overrides it for a process. */
  batchSize: number | ((config: Config) => number);
  /**
   * The top-level fields the stage sets on the events it forwards one for one (the rest it
   * passes on as it read them): the block it writes is then the one it read plus a layer of
   * these fields, found without comparing every field of every event. Under vitest every field
   * is compared too, and a change to a field not named here throws.
   */
  sets?: readonly string[];
  /** When set, keep reading until batchSize entries or lingerMs have passed, whichever first. */
  lingerMs?: number | ((config: Config) => number);
  /**
   * Read the next batch and ack the last one while this one is handled (one ack in flight at a
   * time, in order; the outputs' room is looked at one batch early). For the stage whose loop is
   * the pipeline's narrowest (ledger-write): its read and its ack no longer wait for its handler,
   * nor its handler for them.
   */
  pipelined?: boolean;
  setup(context: StageContext): Promise<StageHandler<In>>;
}

export interface StageContext {
  stage: string;
  config: Config;
  log: Logger;
  metrics: Metrics;
  /** A shared, non-blocking Redis connection for the stage's own services (caches). */
  redis: Redis;
  /** The stage's PostgreSQL pool (connects on first query); the harness closes it after the handler. */
  sql: Sql;
  /**
   * Calls the listener with every control message published from now on (one reader per
   * process, closed by the harness). Resolves once messages published after it are sure to be seen.
   */
  onControl(listener: (message: ControlMessage) => void | Promise<void>): Promise<void>;
}

export interface StageEntry<T> {
  /** Unique within a batch: the stream entry id, with `/index` for an event of a block. */
  id: string;
  partition: number;
  payload: T;
  /** Tags set upstream by counter limits (e.g. an over-cap marker). */
  tags: string[];
  /** Delivered before (claimed from a dead consumer, or re-read after a restart): a handler may already have applied it. */
  redelivered?: boolean;
}

declare const payloadType: unique symbol;
declare const emitted: unique symbol;

/**
 * A logical stream name that carries the type of its entries' payload, so that a stage reading
 * a stream and the stage writing it must agree on the payload, or `npm run typecheck` fails.
 */
export type Stream<Payload> = string & { readonly [payloadType]?: Payload };

export function stream<Payload>(name: string): Stream<Payload> {
  return name as Stream<Payload>;
}

/** One entry a handler forwards; made only by emit(), which checks the payload against the stream. */
export interface Output {
  readonly stream: Stream<unknown>;
  readonly payload: unknown;
  /** Routes the output to partitionOf(partitionKey); by default it stays in the input's partition. */
  readonly partitionKey?: string;
  readonly [emitted]: true;
}

export function emit<Payload>(stream: Stream<Payload>, payload: NoInfer<Payload>, partitionKey?: string): Output {
  return { stream, payload, ...(partitionKey !== undefined ? { partitionKey } : {}) } as Output;
}

/**
 * A running total kept in Redis and advanced in the same atomic step as the ack, so it
 * moves exactly once per entry. Keys are logical: the harness adds the prefix and the
 * entry's partition tag.
 */
export interface CounterEffect {
  key: string;
  by: bigint;
  /** Expiry set when the counter is created (0: none). */
  ttlSeconds: number;
  limit?: bigint;
  /** Tag put on the entry's outputs while the total is at or over the limit. */
  tag?: string;
  /** Set once, by the entry whose increment first reaches the limit. */
  onLimit?: { key: string; value: string; ttlSeconds: number };
  /**
   * A rolling total instead of a running one (lua/lib/window.lua): the spend of the last
   * `buckets` buckets of `bucketMs`, the event added to the bucket of `now`. ttlSeconds is
   * ignored (the keys expire a window after their last write), and onLimit's flag lasts until
   * enough spend has left the window for the total to be under the limit.
   */
  window?: RollingWindow;
}

export interface RollingWindow {
  bucketMs: number;
  buckets: number;
  now: number;
}

export interface EntryResult {
  outputs?: Output[];
  counters?: CounterEffect[];
  /** A failure of this entry alone: it stays pending, is retried, and is dead-lettered after MAX_DELIVERIES. */
  error?: unknown;
}

export interface AckResult {
  /** False when another consumer acked the entry first: nothing was forwarded for it. */
  acked: boolean;
  /** Tags of the counter limits this entry crossed. */
  crossed: string[];
}

/**
 * A block of events as it came off the stream (one entry): what a handler that opts in to
 * blocks sees. `origin` is the same on every redelivery of the block, so a consumer can record
 * the blocks it applied (one row per block) and apply one grouped write per key per block.
 */
export interface StageBlock<T> {
  /** The stream entry id. */
  id: string;
  origin: string;
  events: StageEntry<T>[];
}

export interface StageHandler<In> {
  /**
   * Turns a batch of events (from one or more blocks) into one result per event. Payloads are
   * read, never changed: an output is a new object (`{ ...event, cost }`), as the harness writes
   * only the fields that are not the input's very values (pipeline/blocks.ts, blockWithLayer).
   */
  handle(batch: StageEntry<In>[]): Promise<EntryResult[]>;
  /**
   * Opt-in: when present the harness calls it instead of `handle`, with whole blocks, and
   * expects one result per event of each block, in order.
   */
  handleBlocks?(blocks: StageBlock<In>[]): Promise<EntryResult[][]>;
  /** Runs after the ack script, with one result per entry of the batch. */
  afterAck?(batch: StageEntry<In>[], results: AckResult[]): Promise<void>;
  close?(): Promise<void>;
}


/**
 * A stage of any payload, as the registry and the process runner hold them (a handler of one
 * payload type is not a handler of `unknown`, so `any` is the honest type here).
 */
// biome-ignore lint/suspicious/noExplicitAny: see above
export type AnyStage = StageDefinition<any>;

/** Every (stream, group) pair of the system, so each process can create all groups before anything is written. */
export type Topology = readonly { stream: string; group: string }[];

/** What runStage (pipeline/harness.ts) needs besides the stage. */
export interface HarnessOptions {
  config: Config;
  log: Logger;
  metrics: Metrics;
  topology: Topology;
  /** Stable per process slot, so a restarted worker picks up what it left pending. */
  consumer?: string;
  /** Partitions this process serves; all by default. */
  partitions?: number[];
  /**
   * A partition worker stopped for good (its handler wedged): by default the process logs it and
   * exits 1, and its supervisor starts it afresh (a restarted consumer takes its pending entries back).
   */
  onWorkerFailed?: (err: unknown) => void;
}
