import { subscribeControl } from '../../pipeline/control.js';
import { STREAMS } from '../../pipeline/keys.js';
import type { EntryResult, StageDefinition, StageEntry } from '../../pipeline/stage.js';
import { connectPostgres } from '../../store/postgres.js';
import { SubscriptionBook } from '../../store/subscriptions.js';
import { rejection, type AttributedEvent, type ResolvedEvent } from '../../domain/events.js';

/** Attaches the subscription and rate-plan version active at each event's recorded time. */
export async function attachSubscriptions(book: SubscriptionBook, batch: StageEntry<ResolvedEvent>[]): Promise<EntryResult[]> {
  const results: EntryResult[] = [];
  for (const { payload: event } of batch) {
    const subscription = await book.findOrReload(event.tenantId, event.attribution, event.recordedAt);
    if (!subscription) {
      const at = new Date(event.recordedAt).toISOString();
      const reason = `no subscription of customer ${event.attribution.customerId} (or its team, agent or app) is active at ${at}`;
      results.push({ outputs: [{ stream: STREAMS.rejected, payload: rejection('subscription-snapshot', 'no_subscription', reason, event) }] });
      continue;
    }
    const attributed: AttributedEvent = { ...event, subscription };
    results.push({ outputs: [{ stream: STREAMS.attributed, payload: attributed }] });
  }
  return results;
}

export const subscriptionSnapshotStage: StageDefinition<ResolvedEvent> = {
  name: 'subscription-snapshot',
  input: STREAMS.resolved,
  outputs: [STREAMS.attributed, STREAMS.rejected],
  batchSize: 500,
  async setup({ config, log }) {
    const sql = connectPostgres(config.DATABASE_URL, { max: 2, name: 'subscription-snapshot' });
    const book = new SubscriptionBook(sql);
    const control = subscribeControl(config.REDIS_URL, config.REDIS_PREFIX, async (message) => {
      if (message.type === 'subscriptions.changed') await book.reloadTenant(message.tenantId);
    }, log);
    await control.ready;
    await book.loadAll();
    return {
      handle: (batch) => attachSubscriptions(book, batch),
      async close() {
        await control.close();
        await sql.end({ timeout: 5 });
      },
    };
  },
};
