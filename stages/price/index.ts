import type { CompiledPlan } from '../../domain/rating/compile.js';
import { rateEvent } from '../../domain/rating/rate-event.js';
import { isTransient } from '../../pipeline/errors.js';
import { STREAMS } from '../../store/streams.js';
import { emit, type EntryResult, type StageDefinition, type StageEntry } from '../../pipeline/stage.js';
import { PlanCache } from '../../store/rate-plans.js';
import { watchedToolRegistry, type ToolRegistryCache } from '../../store/mcp-tools.js';
import { registeredToolName } from '../../domain/rating/tool-registry.js';
import { rejection, withPart, type AttributedEvent, type PricedEvent } from '../../domain/flow.js';
import { formatNano, MAX_EVENT_COST_NANO } from '../../domain/money.js';

/**
 * Rates each event by its subscription's plan version (with the subscription's overrides), keeping
 * the cost per dimension. A tool an event names by an alias of its MCP server's tool registry is
 * priced as the registered tool. An event costing more than one event may (MAX_EVENT_COST_NANO: what a
 * 64-bit amount holds) is rejected with the exact cost, never wrapped.
 */
export async function priceBatch(plans: PlanCache, batch: StageEntry<AttributedEvent>[], tools?: ToolRegistryCache): Promise<EntryResult[]> {
  const results: EntryResult[] = [];
  const withServer = batch.filter(({ payload }) => payload.mcpServerId !== undefined);
  const registries = tools && withServer.length > 0 ? await tools.load(withServer.map(({ payload }) => payload.tenantId)) : undefined;
  for (const { payload: event } of batch) {
    let plan: CompiledPlan;
    try {
      plan = plans.loadedFor(event.tenantId, event.subscription.subscriptionId) ?? (await plans.forSubscription(event.tenantId, event.subscription.subscriptionId));
    } catch (error) {
      if (isTransient(error)) throw error;
      results.push({ error });
      continue;
    }
    // An alias of the server's tool registry is priced as the tool it stands for; the ledger keeps the name the event sent.
    const toolName = registeredToolName(registries?.get(event.tenantId), event.mcpServerId, event.toolName);
    const rating = rateEvent(plan, toolName === event.toolName ? event : { ...event, toolName });
    if (rating.total > MAX_EVENT_COST_NANO) {
      const reason = `the event costs ${formatNano(rating.total)} ${event.subscription.currency}, more than one event may cost (${formatNano(MAX_EVENT_COST_NANO)})`;
      results.push({ outputs: [emit(STREAMS.rejected, rejection('price', 'cost_out_of_range', reason, event))] });
      continue;
    }
    const priced: PricedEvent = withPart(event, { cost: { total: rating.total, tool: rating.tool, breakdown: rating.breakdown } });
    results.push({ outputs: [emit(STREAMS.priced, priced)] });
  }
  return results;
}

export const priceStage: StageDefinition<AttributedEvent> = {
  name: 'price',
  sets: ['cost'] satisfies (keyof PricedEvent)[],
  input: STREAMS.attributed,
  outputs: [STREAMS.priced, STREAMS.rejected],
  batchSize: 500,
  async setup({ sql, onControl }) {
    const plans = new PlanCache(sql);
    const tools = await watchedToolRegistry(sql, onControl);
    return { handle: (batch) => priceBatch(plans, batch, tools) };
  },
};
