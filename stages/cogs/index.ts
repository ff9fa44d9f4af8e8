import { STREAMS } from '../../store/streams.js';
import type { EntryResult, StageDefinition, StageEntry } from '../../pipeline/stage.js';
import { isUsageEventType } from '../../domain/events.js';
import type { Sql } from '../../pipeline/postgres.js';
import type { LedgeredEvent } from '../../domain/flow.js';
import { type CostModelCache, watchedCostModels } from '../../store/cost-model-cache.js';
import { eventCogs, InvalidCostModelError, type Cogs } from '../../store/cost-model.js';




interface CogsRow {
  event: LedgeredEvent;
  cogs: Cogs;
}

/**
 * Records the COGS and margin of each usage event of the batch in cogs_ledger, with one
 * INSERT ... ON CONFLICT (tenant_id, event_id) DO NOTHING: a redelivered event finds its row
 * and adds nothing, which is all exactly-once needs here (rows are facts, not counters).
 * Session control events are acked without a row. An event whose cost model does not validate
 * fails alone (retried, then dead-lettered with the reason) rather than being costed at 0.
 */
export async function recordCogsBatch(sql: Sql, models: CostModelCache, batch: StageEntry<LedgeredEvent>[]): Promise<EntryResult[]> {
  const results: EntryResult[] = batch.map(() => ({}));
  const usage = batch.map((e, i) => ({ event: e.payload, i })).filter(({ event }) => isUsageEventType(event.eventType));
  if (usage.length === 0) return results;

  const loaded = await models.load(usage.map(({ event }) => event.tenantId));
  const rows: CogsRow[] = [];
  for (const { event, i } of usage) {
    const cogs = eventCogs(loaded.get(event.tenantId) ?? [], event);
    if (cogs instanceof InvalidCostModelError) results[i] = { error: cogs };
    else rows.push({ event, cogs });
  }
  if (rows.length) await insertCogs(sql, rows);
  return results;
}

async function insertCogs(sql: Sql, rows: CogsRow[]): Promise<void> {
  const column = <T>(pick: (row: CogsRow) => T) => rows.map(pick);
  await sql`
    INSERT INTO cogs_ledger (
      tenant_id, event_id, event_type, customer_id, team_id, agent_id, app_id, session_id, tool_name, model,
      recorded_at, currency, price_nano, cogs_nano, margin_nano, breakdown, cost_model_id)
    SELECT * FROM unnest(
      ${column((r) => r.event.tenantId)}::text[], ${column((r) => r.event.eventId)}::text[],
      ${column((r) => r.event.eventType)}::text[], ${column((r) => r.event.attribution.customerId)}::text[],
      ${column((r) => r.event.attribution.teamId)}::text[], ${column((r) => r.event.attribution.agentId ?? null)}::text[],
      ${column((r) => r.event.attribution.appId ?? null)}::text[], ${column((r) => r.event.sessionId ?? null)}::text[],
      ${column((r) => r.event.toolName ?? null)}::text[], ${column((r) => r.event.model ?? null)}::text[],
      ${column((r) => new Date(r.event.recordedAt).toISOString())}::timestamptz[], ${column((r) => r.event.subscription.currency)}::text[],
      ${column((r) => r.event.cost.total.toString())}::bigint[], ${column((r) => r.cogs.cogsNano.toString())}::bigint[],
      ${column((r) => (r.event.cost.total - r.cogs.cogsNano).toString())}::bigint[],
      ${column((r) => JSON.stringify(r.cogs.breakdown))}::text[]::jsonb[], ${column((r) => r.cogs.breakdown.cost_model_id)}::text[])
    ON CONFLICT (tenant_id, event_id) DO NOTHING`;
}

export const cogsStage: StageDefinition<LedgeredEvent> = {
  name: 'cogs',
  input: STREAMS.ledgered,
  outputs: [],
  batchSize: 1000,
  async setup({ sql, onControl }) {
    const models = await watchedCostModels(sql, onControl);
    return { handle: (batch) => recordCogsBatch(sql, models, batch) };
  },
};
