import { STREAMS } from '../../store/streams.js';
import { emit, type EntryResult, type StageDefinition, type StageEntry } from '../../pipeline/stage.js';
import { SubscriptionBook } from '../../store/subscriptions.js';
import { rejection, withPart, type AttributedEvent, type ResolvedEvent } from '../../domain/flow.js';

/** Attaches the subscription and rate-plan version active at each event's recorded time. */
export async function attachSubscriptions(book: SubscriptionBook, batch: StageEntry<ResolvedEvent>[]): Promise<EntryResult[]> {
  const results: EntryResult[] = [];
  for (const { payload: event } of batch) {
    // Found in memory without an await for nearly every event; a miss may reload the tenant.
    const subscription = book.find(event.tenantId, event.attribution, event.recordedAt) ?? (await book.findOrReload(event.tenantId, event.attribution, event.recordedAt));
    if (!subscription) {
      const at = new Date(event.recordedAt).toISOString();
      const reason = `no subscription of customer ${event.attribution.customerId} (or its team, agent or app) is active at ${at}`;
      results.push({ outputs: [emit(STREAMS.rejected, rejection('subscription-snapshot', 'no_subscription', reason, event))] });
      continue;
    }
    const attributed: AttributedEvent = withPart(event, { subscription });
    results.push({ outputs: [emit(STREAMS.attributed, attributed)] });
  }
  return results;
}

export const subscriptionSnapshotStage: StageDefinition<ResolvedEvent> = {
  name: 'subscription-snapshot',
  sets: ['subscription'] satisfies (keyof AttributedEvent)[],
  input: STREAMS.resolved,
  outputs: [STREAMS.attributed, STREAMS.rejected],
  batchSize: 500,
  async setup({ sql, onControl }) {
    const book = new SubscriptionBook(sql);
    await onControl(async (message) => {
      if (message.type === 'subscriptions.changed') await book.reloadTenant(message.tenantId);
    });
    await book.loadAll();
    return { handle: (batch) => attachSubscriptions(book, batch) };
  },
};
