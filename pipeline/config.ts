import { z } from 'zod';

/**
 * Every setting comes from an environment variable, validated once at start.
 * A bad value stops the process with one line per problem, naming the variable.
 */
const int = (def: number, min = 0) => z.coerce.number().int().min(min).default(def);

const schema = z.object({
  REDIS_URL: z
    .string()
    .regex(/^(rediss?:\/\/\S+|redis\+cluster:\/\/[^\s/,]+(,[^\s/,]+)*)$/, 'redis://host:port, rediss://..., or redis+cluster://host:port[,host:port...] for a Redis Cluster')
    .default('redis://127.0.0.1:6379'),
  REDIS_COMMAND_TIMEOUT_MS: int(15_000, 100),
  /**
   * When ingest answers 202: `ack` once Redis took the block, `replica` once a replica has it too
   * (WAIT), `fsync` once it is fsynced to the append-only file (WAITAOF, or appendfsync always
   * before Redis 7.2). Production: replica (README).
   */
  INGEST_DURABILITY: z.enum(['ack', 'replica', 'fsync']).default('ack'),
  /** How long ingest waits for the replica or the fsync before answering 503 (nothing reported accepted). */
  INGEST_DURABILITY_TIMEOUT_MS: int(1_000, 1),
  /** Replicas that must have the block under INGEST_DURABILITY=replica. */
  INGEST_DURABILITY_REPLICAS: int(1, 1),
  REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9:_.-]*$/, 'letters, digits and : _ . - only (no braces: the partition tag is added by the pipeline)')
    .default('am:'),
  PARTITIONS: int(1, 1),
  DATABASE_URL: z.string().url().default('postgres://postgres@127.0.0.1:5432/agentmeter'),
  PG_POOL_SIZE: int(4, 1),
  CLICKHOUSE_URL: z.string().url().default('http://127.0.0.1:8123'),
  CLICKHOUSE_DATABASE: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).default('agentmeter'),
  CLICKHOUSE_USER: z.string().default('default'),
  CLICKHOUSE_PASSWORD: z.string().default(''),

  HTTP_HOST: z.string().default('127.0.0.1'),
  HTTP_PORT: int(8080),
  HTTP_REQUEST_TIMEOUT_MS: int(10_000, 100),
  METRICS_PORT: int(0),
  METRICS_BASE_PORT: int(9400),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  WORKER_SLOT: int(0),

  INGEST_MAX_BODY_BYTES: int(4 * 1024 * 1024, 1024),
  INGEST_MAX_BATCH: int(1000, 1),
  INGEST_MAX_IN_FLIGHT: int(64, 1),
  MAX_EVENT_AGE_DAYS: int(35, 1),
  MAX_EVENT_FUTURE_SECONDS: int(300, 0),

  BATCH_SIZE: z.coerce.number().int().min(1).optional(),
  BLOCK_MS: int(2000, 1),
  CLAIM_IDLE_MS: int(30_000, 100),
  CLAIM_INTERVAL_MS: int(5_000, 50),
  MAX_DELIVERIES: int(5, 1),
  /**
   * A stage's handler that has not settled one attempt at a batch within this long is wedged (a
   * database client waiting for an answer that will never come): its process exits, and the
   * supervisor starts it afresh, which takes its pending entries back.
   */
  STAGE_HANDLER_TIMEOUT_MS: int(60_000, 1_000),
  /**
   * A stage stops reading above HIGH events unread in a stream it writes, until below LOW. After
   * the ledger these marks must sit above the lag the consumers make in their normal cycle (a
   * group reads nothing while it handles a batch: analytics-dispatch's ClickHouse insert of up to
   * 20,000 rows takes 0.3-1 s, so at 10,000 events/s `events:ledgered` swings by 3,000-10,000
   * events with nobody behind). At 10,000 / 5,000 ingest's room after the ledger (HIGH minus
   * INGEST_MAX_QUEUE_EVENTS, reopening at half) kept it refusing 10-23% of the time at `--rate
   * max` for that swing alone, while the stages before the ledger ran dry (BENCHMARKS.md, issue
   * 13, thirty-fifth session). At 20,000 / 10,000, with the stages after the ledger at
   * AFTER_LEDGER_NICE, their batch cycle still closed ingest in bursts at 10,000 events/s (their
   * first, cold batches most); at 40,000 / 20,000, four alternating pairs: 272 / 318 / 0 / 0
   * refusals against 495 / 423 / 33 / 26, ingest-to-ledger p99 256 / 317 / 183 / 235 ms against
   * 340 / 334 / 174 / 213, `--rate max` 12,723 / 12,831 against 12,324 / 12,242 events/s, Redis's
   * peak 57 against 53 MB (thirty-eighth session). Before the ledger ingest's own bound holds
   * each stream far below.
   */
  BACKPRESSURE_HIGH: int(40_000, 1),
  BACKPRESSURE_LOW: int(20_000, 0),
  /**
   * Ingest answers 429 while the queues before the ledger hold more than this much waiting: the
   * oldest waits of the streams up to ledger-write's, summed (0: off); it takes events again
   * below half of it.
   */
  INGEST_MAX_QUEUE_MS: int(1_000, 0),
  /**
   * Ingest answers 429 while the streams up to ledger-write's hold more events than this not yet
   * acknowledged (summed over those streams, per partition); it takes events again below half.
   */
  INGEST_MAX_QUEUE_EVENTS: int(4_000, 1),
  /**
   * A stage stops reading while the oldest entry of a stream it writes has waited longer unread
   * (0: off, the default: ingest's bound on the whole way to the ledger holds what is accepted
   * within seconds of it, and per-hop bounds only made the hops stop and start, costing ~20% of
   * the throughput at saturation; BENCHMARKS.md, issue 13).
   */
  STREAM_MAX_QUEUE_MS: int(0, 0),
  /**
   * Niceness of the API process `npm start` runs (-20 to 19): when the CPU is short it answers
   * first (a prompt 429 or 202). Below 0 needs the right to raise a priority (root or
   * CAP_SYS_NICE); without it `npm start` keeps the order, not the numbers: the API at 0 and the
   * stages below it by as much (see ops/start.ts processNices).
   */
  API_NICE: z.coerce.number().int().min(-20).max(19).default(-10),
  /**
   * Niceness of the stage processes up to the ledger and of the webhook workers (0-19). At 0
   * rather than 10 (with the API at -10 rather than 0: the same order between the two), to-ledger
   * no longer yields to every process at the default niceness (on the benchmark's box, the load
   * generator), and its collector's pauses are not stretched by them: at 10,000 events/s its
   * scavenges took 19 ms on average against 40 (longest 42 against 121 ms). In alternating pairs
   * (BENCHMARKS.md, issue 13, forty-seventh session): 10,000 events/s, ingest-to-ledger p99 won 6
   * of 8 and came under 250 ms in 3 against none; `--rate max` won 3 of 3 (13,001 against 12,029
   * events/s on average); at 3x the 429 p99 held (39 and 52 against 41 and 41 ms). The API must
   * stay above these: with both at 0 the 3x 429 p99 rose to 58 and 63 ms against 38 and 41.
   */
  STAGE_NICE: z.coerce.number().int().min(0).max(19).default(0),
  /**
   * Niceness of a stage process whose stages all come after the ledger (sessions, analytics,
   * COGS, invoices, spend alerts): when the CPU is short the way to the ledger goes first, and
   * these take the time it leaves (ingest's gate bounds how far behind they may fall). Three
   * alternating pairs at 10,000 events/s: ingest-to-ledger p99 248 / 326 / 284 ms against
   * 348 / 368 / 311 at STAGE_NICE; `--rate max` 12,311 / 12,452 against 11,842 / 12,017 events/s
   * (BENCHMARKS.md, issue 13, thirty-eighth session).
   */
  AFTER_LEDGER_NICE: z.coerce.number().int().min(0).max(19).default(19),
  /**
   * How often each stage trims the entries every group has acked from its input. At 10,000
   * events/s the streams gain ~20 MB a second: every 5 s, Redis swung between 30 and 145-170 MB;
   * every second, it stays under 50 MB, at the same events/s at `--rate max` (BENCHMARKS.md,
   * issue 13, thirty-eighth session).
   */
  TRIM_INTERVAL_MS: int(1_000, 100),
  /** How long a move between partitions is remembered in the target partition (pipeline/move.ts). */
  MOVE_MARKER_TTL_SECONDS: int(900, 60),
  REJECTED_MAXLEN: int(100_000, 1),

  KEY_CACHE_TTL_SECONDS: int(600, 1),
  SESSION_IDLE_SECONDS: int(600, 1),
  SESSION_EXPIRE_SECONDS: int(3600, 1),
  SESSION_SWEEP_INTERVAL_MS: int(30_000, 100),
  /** How often cap-check records the pauses whose period ended as lifted by the roll-over (their flags expired by themselves). */
  CAP_ROLLOVER_SWEEP_INTERVAL_MS: int(30_000, 100),
  ANALYTICS_FLUSH_MS: int(5000, 10),
  /**
   * Rows per ClickHouse insert (or ANALYTICS_FLUSH_MS, whichever first). ClickHouse's cost is per
   * insert more than per row (a part in invocations and in each rollup): 20,000 against 5,000 took
   * its CPU per event from 81-90 to 29-33 us at --rate max, for ~120 MB more in the process that
   * holds the batch (BENCHMARKS.md, "Eighth session").
   */
  ANALYTICS_BATCH_ROWS: int(20_000, 1),
  /** How often the analytics backlog is looked at when it is empty or ClickHouse is down (stages/analytics-dispatch/backlog.ts). */
  ANALYTICS_BACKLOG_INTERVAL_MS: int(1000, 10),

  WEBHOOK_ALLOW_PRIVATE_NETWORKS: z
    .enum(['true', 'false', '1', '0'])
    .default('false')
    .transform((v) => v === 'true' || v === '1'),
  WEBHOOK_SECRET_KEY: z
    .string()
    .refine((v) => Buffer.from(v, 'base64').length === 32, '32 bytes in base64 (openssl rand -base64 32)')
    .optional(),
  WEBHOOK_TIMEOUT_MS: int(10_000, 100),
  WEBHOOK_RETRY_BASE_MS: int(5_000, 10),
  WEBHOOK_RETRY_MAX_DELAY_MS: int(3 * 3600_000, 10),
  WEBHOOK_RETRY_WINDOW_SECONDS: int(86_400, 1),
  WEBHOOK_DISABLE_AFTER_SECONDS: int(5 * 86_400, 1),
  WEBHOOK_POLL_INTERVAL_MS: int(1_000, 10),
  WEBHOOK_CONCURRENCY: int(16, 1),
  WEBHOOK_ENDPOINT_CONCURRENCY: int(4, 1),
  WEBHOOK_RETENTION_DAYS: int(45, 1),

  PERIOD_CLOSE_GRACE_SECONDS: int(3 * 86_400),
  PERIOD_CLOSE_INTERVAL_MS: int(60_000, 100),
  PERIOD_CLOSE_LOOKBACK_DAYS: int(62, 1),
});

export type Config = z.infer<typeof schema>;

export class ConfigError extends Error {}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const picked: Record<string, string | undefined> = {};
  for (const key of Object.keys(schema.shape)) {
    const value = env[key];
    picked[key] = value === '' ? undefined : value;
  }
  const parsed = schema.safeParse(picked);
  if (!parsed.success) {
    const lines = parsed.error.issues.map(
      (issue) => `  ${String(issue.path[0])}=${JSON.stringify(picked[String(issue.path[0])])}: ${issue.message}`,
    );
    throw new ConfigError(`agentmeter: invalid configuration\n${lines.join('\n')}`);
  }
  const config = parsed.data;
  if (config.BACKPRESSURE_LOW >= config.BACKPRESSURE_HIGH) {
    throw new ConfigError(
      `agentmeter: invalid configuration\n  BACKPRESSURE_LOW=${config.BACKPRESSURE_LOW}: must be below BACKPRESSURE_HIGH=${config.BACKPRESSURE_HIGH}`,
    );
  }
  if (config.WEBHOOK_RETENTION_DAYS <= config.MAX_EVENT_AGE_DAYS) {
    // A dedupe key forgotten while its fact can still arrive late would raise the alert again.
    throw new ConfigError(
      `agentmeter: invalid configuration\n  WEBHOOK_RETENTION_DAYS=${config.WEBHOOK_RETENTION_DAYS}: must be above MAX_EVENT_AGE_DAYS=${config.MAX_EVENT_AGE_DAYS}`,
    );
  }
  return config;
}

/** loadConfig for a process entry point: a bad configuration prints its problems and exits with 2. */
export function loadConfigOrExit(env: NodeJS.ProcessEnv = process.env): Config {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(2);
    }
    throw err;
  }
}
