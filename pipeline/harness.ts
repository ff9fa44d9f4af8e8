import { hostname } from 'node:os';
import type { Redis } from './redis.js';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import { describeError } from './errors.js';
import { partitionedKey } from './keys.js';
import { subscribeControl, type ControlMessage, type ControlSubscription } from './control.js';
import { connectPostgres, type Sql } from './postgres.js';
import { connectRedis } from './redis.js';
import { scripted } from './scripts.js';
import type { HarnessOptions, StageDefinition, Topology } from './stage.js';
import { Trimmer } from './trimmer.js';
import { PartitionWorker } from './worker.js';

/** First and longest wait before a failed control message is handed to its listener again. */
const CONTROL_RETRY_MS = 250;
const CONTROL_RETRY_MAX_MS = 10_000;


export interface RunningStage {
  readonly consumer: string;
  ready(): boolean;
  /** Finishes and acks the batch in hand, then closes everything. */
  stop(): Promise<void>;
}

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
  // The worker has logged why it stopped; the supervisor starts this process afresh.
  const failed = options.onWorkerFailed ?? (() => process.exit(1));
  const loops = workers.map((worker) => worker.run().catch(failed));
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
