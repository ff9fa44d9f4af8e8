import type { CompiledPlan } from '../../domain/rating/compile.js';
import { rateEvent } from '../../domain/rating/rate-event.js';
import { isTransient } from '../../pipeline/errors.js';
import { STREAMS } from '../../store/streams.js';
import { emit, type EntryResult, type StageDefinition, type StageEntry } from '../../pipeline/stage.js';
import { PlanCache } from '../../store/rate-plans.js';
import { rejection, type AttributedEvent, type PricedEvent } from '../../domain/flow.js';
import { formatNano, MAX_EVENT_COST_NANO } from '../../domain/money.js';

/**
 * Rates each event by its subscription's plan version (with the subscription's overrides), keeping
 * the cost per dimension. An event costing more than one event may (MAX_EVENT_COST_NANO: what a
 * 64-bit amount holds) is rejected with the exact cost, never wrapped.
 */
export async function priceBatch(plans: PlanCache, batch: StageEntry<AttributedEvent>[]): Promise<EntryResult[]> {
  const results: EntryResult[] = [];
  for (const { payload: event } of batch) {
    let plan: CompiledPlan;
    try {
      plan = await plans.forSubscription(event.tenantId, event.subscription.subscriptionId);
    } catch (error) {
      if (isTransient(error)) throw error;
      results.push({ error });
      continue;
    }
    const rating = rateEvent(plan, event);
    if (rating.total > MAX_EVENT_COST_NANO) {
      const reason = `the event costs ${formatNano(rating.total)} ${event.subscription.currency}, more than one event may cost (${formatNano(MAX_EVENT_COST_NANO)})`;
      results.push({ outputs: [emit(STREAMS.rejected, rejection('price', 'cost_out_of_range', reason, event))] });
      continue;
    }
    const priced: PricedEvent = { ...event, cost: { total: rating.total, tool: rating.tool, breakdown: rating.breakdown } };
    results.push({ outputs: [emit(STREAMS.priced, priced)] });
  }
  return results;
}

export const priceStage: StageDefinition<AttributedEvent> = {
  name: 'price',
  input: STREAMS.attributed,
  outputs: [STREAMS.priced, STREAMS.rejected],
  batchSize: 500,
  async setup({ sql }) {
    const plans = new PlanCache(sql);
    return { handle: (batch) => priceBatch(plans, batch) };
  },
};
