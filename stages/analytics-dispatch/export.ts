import type { Redis } from '../../pipeline/redis.js';
import { BlockSizes, Watermark } from '../../pipeline/backpressure.js';
import { MAX_BLOCK_EVENTS } from '../../pipeline/blocks.js';
import { encodePayload } from '../../pipeline/codec.js';
import type { Config } from '../../pipeline/config.js';
import { describeError } from '../../pipeline/errors.js';
import { partitionedKey } from '../../pipeline/keys.js';
import type { Logger } from '../../pipeline/logger.js';
import type { Metrics } from '../../pipeline/metrics.js';
import type { Sql } from '../../pipeline/postgres.js';
import { scripted } from '../../pipeline/scripts.js';
import { decodeCursor, encodeCursor, exportHorizon, readLedgerPage } from '../../store/ledger-export.js';
import { STREAMS } from '../../store/streams.js';

/** Rows read from the ledger per page (one PostgreSQL query, one Redis call, blocks of MAX_BLOCK_EVENTS), at most the high-water mark. */
const EXPORT_PAGE = 2_000;
/** The export stream lives in partition 0: the ledger is one source, read by one cursor. */
const EXPORT_PARTITION = 0;
const MAX_BACKOFF_MS = 5_000;

function exportCursorKey(prefix: string): string {
  return partitionedKey(prefix, 'export:analytics:cursor', EXPORT_PARTITION);
}

/**
 * The ledger export: copies ledger rows, in commit order (store/ledger-export.ts), onto
 * `events:analytics`, from which analytics-dispatch inserts them into ClickHouse. The stream is
 * filled only while it is below its high-water mark, so a ClickHouse outage of any length costs
 * at most that many entries of Redis memory and never slows the ledger or ingest: the export
 * simply falls behind, and catches up from its cursor when ClickHouse is back. Each page and the
 * cursor after it are written in one step, only if the cursor is still where the page was read
 * from, so several exporters (one per analytics-dispatch process) never append a page twice.
 */
export class LedgerExport {
  private stopping = false;
  private loop?: Promise<void>;
  private wake?: () => void;
  private failingSince?: number;
  private readonly redis: ReturnType<typeof scripted>;
  private readonly watermark: Watermark;
  private readonly sizes = new BlockSizes();
  private readonly cursorKey: string;
  private readonly streamKey: string;
  private readonly pageSize: number;

  constructor(
    private readonly sql: Sql,
    redis: Redis,
    private readonly config: Config,
    private readonly log: Logger,
    private readonly metrics?: Metrics,
  ) {
    this.redis = scripted(redis);
    this.cursorKey = exportCursorKey(config.REDIS_PREFIX);
    this.streamKey = partitionedKey(config.REDIS_PREFIX, STREAMS.analytics, EXPORT_PARTITION);
    this.watermark = new Watermark(redis, [this.streamKey], config.BACKPRESSURE_HIGH, config.BACKPRESSURE_LOW, { sizes: this.sizes });
    this.pageSize = Math.min(EXPORT_PAGE, config.BACKPRESSURE_HIGH);
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
  }

  /** Exports one page if there is room; returns how many rows it appended (0: nothing new, or no room), as blocks. */
  async exportOnce(): Promise<number> {
    if (!(await this.watermark.open())) return 0;
    const before = await this.redis.get(this.cursorKey);
    const horizon = await exportHorizon(this.sql);
    const page = await readLedgerPage(this.sql, decodeCursor(before), horizon, this.pageSize);
    if (page.events.length === 0) return 0;
    const blocks: Buffer[] = [];
    for (let start = 0; start < page.events.length; start += MAX_BLOCK_EVENTS) blocks.push(encodePayload(page.events.slice(start, start + MAX_BLOCK_EVENTS)));
    const appended = await this.redis.appendAtCursor(this.cursorKey, this.streamKey, before ?? '', encodeCursor(page.next), ...blocks);
    if (appended < 0) return 0; // another exporter took this page first
    const events = page.events.length;
    this.sizes.wrote(appended, events);
    this.watermark.added(events);
    this.metrics?.eventsOut.inc({ stage: 'ledger-export', stream: STREAMS.analytics }, events);
    return events;
  }

  private async run(): Promise<void> {
    let backoff = this.config.LEDGER_EXPORT_INTERVAL_MS;
    while (!this.stopping) {
      let pause = this.config.LEDGER_EXPORT_INTERVAL_MS;
      try {
        const appended = await this.exportOnce();
        if (this.failingSince !== undefined) {
          this.log.info({ downForMs: Date.now() - this.failingSince }, 'ledger export resumed');
          this.failingSince = undefined;
        }
        backoff = this.config.LEDGER_EXPORT_INTERVAL_MS;
        if (appended === this.pageSize) pause = 0; // more is waiting: go on at once
      } catch (err) {
        // PostgreSQL or Redis unreachable: the export waits; the ledger is where the rows stay.
        if (this.failingSince === undefined) {
          this.failingSince = Date.now();
          this.log.warn({ err: describeError(err) }, 'ledger export failed; retrying until it works');
        }
        this.metrics?.errors.inc({ stage: 'ledger-export', kind: 'dependency' });
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        pause = backoff;
      }
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
