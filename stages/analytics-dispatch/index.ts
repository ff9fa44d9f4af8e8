import { STREAMS } from '../../store/streams.js';
import { describeError, TransientError } from '../../pipeline/errors.js';
import { mapBatch } from '../../pipeline/arrays.js';
import type { EntryResult, StageDefinition, StageEntry } from '../../pipeline/stage.js';
import { connectClickHouse, type ClickHouseClient } from '../../store/clickhouse.js';
import { watchedCostModels, type CostModelCache } from '../../store/cost-model-cache.js';
import type { AnalyticsEvent, LedgeredEvent } from '../../domain/flow.js';
import { enqueueForAnalytics } from '../../store/analytics-backlog.js';
import { BacklogDrainer, handOverFromLedgerExport } from './backlog.js';
import { insertInvocations } from './insert.js';

export { clickHouseCode, isDataError } from './insert.js';

/**
 * The stage's insert of a batch read from events:ledgered (insertInvocations): only a batch that
 * may have been inserted before (redelivered after a crash before its ack, or tried already in
 * this process) is looked up. A batch ClickHouse refuses for its data is split by the harness
 * until the rows at fault are found; they go to the dead letters.
 */
export async function dispatchBatch(
  clickhouse: ClickHouseClient,
  batch: StageEntry<AnalyticsEvent>[],
  costModels?: CostModelCache,
): Promise<EntryResult[]> {
  const maybeInserted = batch.some((entry) => entry.redelivered || attempted.has(entry));
  for (const entry of batch) attempted.add(entry);
  const errors = await insertInvocations(
    clickhouse,
    mapBatch(batch, (entry) => entry.payload),
    { costModels, maybeInserted },
  );
  return mapBatch(errors, (error) => (error ? { error } : {}));
}

/** Entries an insert was tried for in this process (the harness hands the same objects again when it retries a batch). */
const attempted = new WeakSet<StageEntry<AnalyticsEvent>>();

/**
 * analytics-dispatch: one more consumer group of events:ledgered, sharing the blocks the other
 * consumers of the ledger decode in the same process. ClickHouse never holds the ledger back: a
 * batch ClickHouse cannot take now (an outage) is enqueued in analytics_backlog by key and acked,
 * and the backlog's drainer inserts it when ClickHouse is back (./backlog.ts). Only when
 * PostgreSQL cannot take the backlog rows either does the batch wait in hand.
 */
export const analyticsDispatchStage: StageDefinition<LedgeredEvent> = {
  name: 'analytics-dispatch',
  input: STREAMS.ledgered,
  outputs: [],
  // A batch goes in at ANALYTICS_BATCH_ROWS rows or after ANALYTICS_FLUSH_MS, whichever first.
  batchSize: (config) => config.ANALYTICS_BATCH_ROWS,
  lingerMs: (config) => config.ANALYTICS_FLUSH_MS,
  async setup({ config, sql, redis, log, metrics, onControl }) {
    const clickhouse = connectClickHouse({
      url: config.CLICKHOUSE_URL,
      database: config.CLICKHOUSE_DATABASE,
      username: config.CLICKHOUSE_USER,
      password: config.CLICKHOUSE_PASSWORD,
    });
    const costModels = await watchedCostModels(sql, onControl);
    await handOverFromLedgerExport(sql, redis, config.REDIS_PREFIX, log);
    const drainer = new BacklogDrainer(sql, clickhouse, config, log.child({ component: 'analytics-backlog' }), metrics, { costModels });
    drainer.start();
    let deferring = false;
    return {
      async handle(batch) {
        try {
          const results = await dispatchBatch(clickhouse, batch, costModels);
          if (deferring) log.info('ClickHouse takes batches again');
          deferring = false;
          return results;
        } catch (error) {
          if (!(error instanceof TransientError)) throw error;
          await enqueueForAnalytics(sql, mapBatch(batch, (entry) => entry.payload));
          if (!deferring) log.warn({ err: describeError(error) }, 'ClickHouse cannot take a batch; its events wait in analytics_backlog');
          deferring = true;
          metrics.errors.inc({ stage: 'analytics-dispatch', kind: 'dependency' });
          return mapBatch(batch, () => ({}));
        }
      },
      async close() {
        await drainer.stop();
        await clickhouse.close();
      },
    };
  },
};
