import type { ClickHouseClient } from '../../store/clickhouse.js';
import { CostModelCache } from '../../store/cost-model-cache.js';
import { Gauge } from 'prom-client';
import {
  dropFromBacklog,
  enqueueAfterExportCursor,
  enqueueForAnalytics,
  parkInBacklog,
  takeBacklog,
  waitingAtMost,
  type BacklogItem,
} from '../../store/analytics-backlog.js';
import { eventsOfEntries } from '../../pipeline/blocks.js';
import type { Config } from '../../pipeline/config.js';
import { partitionedKey } from '../../pipeline/keys.js';
import type { Redis } from '../../pipeline/redis.js';
import { describeError } from '../../pipeline/errors.js';
import { createLogger, type Logger } from '../../pipeline/logger.js';
import type { Metrics } from '../../pipeline/metrics.js';
import type { Sql } from '../../pipeline/postgres.js';
import type { AnalyticsEvent } from '../../domain/flow.js';
import { insertInvocations, isDataError } from './insert.js';

const MAX_BACKOFF_MS = 5_000;
const BACKLOG_GAUGE = 'am_analytics_backlog_rows';
/** Backlog rows per drain step: one transaction, one lookup of what ClickHouse has, one INSERT. */
const BACKLOG_PAGE = 10_000;

type Insert = (events: readonly AnalyticsEvent[]) => Promise<(Error | undefined)[]>;

/**
 * The hand-over from the ledger export that filled `events:analytics` from the ledger before
 * analytics-dispatch read events:ledgered: what the export had appended and what it had not read
 * yet (after its cursor) are enqueued in the backlog, then its stream and cursor are removed. Run
 * at every start; does nothing once they are gone. Enqueuing a row twice (two processes starting
 * together, a crash before the removal) costs a lookup, not a duplicate.
 */
export async function handOverFromLedgerExport(sql: Sql, redis: Redis, prefix: string, log: Logger): Promise<void> {
  const cursorKey = partitionedKey(prefix, 'export:analytics:cursor', 0);
  const streamKey = partitionedKey(prefix, 'events:analytics', 0);
  const cursor = await redis.get(cursorKey);
  const entries = (await redis.xrangeBuffer(streamKey, '-', '+')) as [Buffer, Buffer[]][];
  if (cursor === null && entries.length === 0) return;
  const appended = eventsOfEntries<AnalyticsEvent>(entries).map((event) => event.payload);
  const unread = await sql.begin(async (tx) => {
    await enqueueForAnalytics(tx, appended);
    return cursor === null ? 0 : enqueueAfterExportCursor(tx, cursor);
  });
  await redis.del(streamKey);
  await redis.del(cursorKey);
  log.info({ appended: appended.length, unread }, 'the ledger export handed over to the analytics backlog');
}

/**
 * Drains the analytics backlog once, to the end, with the tenants' cost models (for an operator
 * tool: npm run reconcile -- --repair); returns how many rows it took. Fails as a step fails
 * (ClickHouse or PostgreSQL down).
 */
export async function drainBacklog(sql: Sql, clickhouse: ClickHouseClient, config: Config): Promise<number> {
  const drainer = new BacklogDrainer(sql, clickhouse, config, createLogger('analytics-backlog', 'warn'), undefined, { costModels: new CostModelCache(sql) });
  let total = 0;
  for (;;) {
    const taken = await drainer.drainOnce();
    if (taken === 0) return total;
    total += taken;
  }
}

/**
 * The analytics backlog's drainer (store/analytics-backlog.ts), one per analytics-dispatch
 * process: takes waiting rows with their ledger rows, inserts them into ClickHouse with a lookup
 * of what it has already, and removes them in the same PostgreSQL transaction. While ClickHouse
 * (or PostgreSQL) is down a step fails as a whole, nothing is removed, and it tries again with
 * backoff. Rows ClickHouse refuses for their data are found by halving the page and parked with
 * the server's error; the rest go in. Several drainers skip each other's rows.
 */
export class BacklogDrainer {
  private stopping = false;
  private loop?: Promise<void>;
  private wake?: () => void;
  private failingSince?: number;
  private readonly pageSize: number;
  private readonly insert: Insert;
  private readonly waiting?: Gauge;

  constructor(
    private readonly sql: Sql,
    clickhouse: ClickHouseClient,
    private readonly config: Config,
    private readonly log: Logger,
    private readonly metrics?: Metrics,
    options: { costModels?: CostModelCache; pageSize?: number } = {},
  ) {
    this.pageSize = options.pageSize ?? BACKLOG_PAGE;
    this.insert = (events) => insertInvocations(clickhouse, events, { costModels: options.costModels, maybeInserted: true });
    if (metrics) {
      this.waiting =
        (metrics.registry.getSingleMetric(BACKLOG_GAUGE) as Gauge | undefined) ??
        new Gauge({
          name: BACKLOG_GAUGE,
          help: 'Ledger rows waiting for ClickHouse in analytics_backlog (at most; 0 when none)',
          registers: [metrics.registry],
        });
    }
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
  }

  /** One step: returns how many backlog rows it took (inserted, parked, or naming no ledger row). */
  async drainOnce(): Promise<number> {
    return this.sql.begin(async (tx) => {
      const items = await takeBacklog(tx, this.pageSize);
      if (items.length === 0) return 0;
      const done = items.filter((item) => !item.event).map((item) => item.id);
      if (done.length) this.log.warn({ rows: done.length }, 'analytics backlog rows name no ledger row; dropped');
      const parked: { id: string; error: string }[] = [];
      await this.insertOrPark(items.filter((item) => item.event), done, parked);
      await dropFromBacklog(tx, done);
      await parkInBacklog(tx, parked);
      if (parked.length) {
        this.log.error({ rows: parked.length, error: parked[0].error }, 'ClickHouse refused analytics backlog rows for their data; parked in analytics_backlog');
        this.metrics?.errors.inc({ stage: 'analytics-backlog', kind: 'data' }, parked.length);
      }
      this.metrics?.eventsOut.inc({ stage: 'analytics-backlog', stream: 'clickhouse' }, items.length - parked.length);
      return items.length;
    });
  }

  /** Inserts `items`; on a refusal of the data, halves until the rows at fault are alone, and parks them. */
  private async insertOrPark(items: BacklogItem[], done: string[], parked: { id: string; error: string }[]): Promise<void> {
    if (items.length === 0) return;
    try {
      const errors = await this.insert(items.map((item) => item.event!));
      items.forEach((item, i) => {
        const error = errors[i];
        if (error) parked.push({ id: item.id, error: error.message });
        else done.push(item.id);
      });
    } catch (error) {
      if (!isDataError(error)) throw error;
      if (items.length === 1) {
        parked.push({ id: items[0].id, error: describeError(error) });
        return;
      }
      const half = Math.ceil(items.length / 2);
      await this.insertOrPark(items.slice(0, half), done, parked);
      await this.insertOrPark(items.slice(half), done, parked);
    }
  }

  /** Sets the gauge of rows waiting; a failed read (PostgreSQL down) leaves it as it was. */
  private async reportWaiting(): Promise<void> {
    if (!this.waiting) return;
    try {
      this.waiting.set(await waitingAtMost(this.sql));
    } catch {
      // the next step reads it again
    }
  }

  private async run(): Promise<void> {
    const interval = this.config.ANALYTICS_BACKLOG_INTERVAL_MS;
    let backoff = interval;
    while (!this.stopping) {
      let pause = interval;
      try {
        const taken = await this.drainOnce();
        if (this.failingSince !== undefined) {
          this.log.info({ downForMs: Date.now() - this.failingSince }, 'analytics backlog drains again');
          this.failingSince = undefined;
        }
        backoff = interval;
        if (taken === this.pageSize) pause = 0; // more is waiting: go on at once
      } catch (err) {
        // ClickHouse or PostgreSQL unreachable: the rows stay in the backlog.
        if (this.failingSince === undefined) {
          this.failingSince = Date.now();
          this.log.warn({ err: describeError(err) }, 'analytics backlog drain failed; retrying until it works');
        }
        this.metrics?.errors.inc({ stage: 'analytics-backlog', kind: 'dependency' });
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        pause = backoff;
      }
      await this.reportWaiting();
      if (pause > 0 && !this.stopping) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, pause);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    }
  }
}
