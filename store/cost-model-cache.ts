import type { Sql } from '../pipeline/postgres.js';
import type { StageContext } from '../pipeline/stage.js';
import { compileCostModel, type CostModelRow, type LoadedCostModel } from './cost-model.js';

interface Entry {
  models: LoadedCostModel[];
  loadedAt: number;
}

/**
 * Every tenant's cost models, compiled, held in memory. A tenant is loaded on its first event
 * (one query for all the tenants of a batch missing from memory, a tenant without a model
 * remembered as such), dropped on a `cost-models.changed` control message, and reloaded after
 * ttlMs in any case, in case a message was missed.
 */
export class CostModelCache {
  private readonly entries = new Map<string, Entry>();
  /** Bumped on invalidation: a load that started before it is used once but not kept. */
  private readonly generations = new Map<string, number>();

  constructor(
    private readonly sql: Sql,
    private readonly ttlMs = 5 * 60_000,
    private readonly clock: () => number = Date.now,
  ) {}

  async load(tenantIds: Iterable<string>): Promise<Map<string, LoadedCostModel[]>> {
    const now = this.clock();
    const found = new Map<string, LoadedCostModel[]>();
    const missing: string[] = [];
    for (const tenantId of new Set(tenantIds)) {
      const entry = this.entries.get(tenantId);
      if (entry && now - entry.loadedAt < this.ttlMs) found.set(tenantId, entry.models);
      else missing.push(tenantId);
    }
    if (missing.length === 0) return found;

    const generations = new Map(missing.map((t) => [t, this.generations.get(t) ?? 0]));
    const rows = await this.sql<(CostModelRow & { tenant_id: string })[]>`
      SELECT id, tenant_id, currency, (extract(epoch FROM effective_from) * 1000)::float8 AS effective_from_ms, model
      FROM cost_models WHERE tenant_id = ANY(${missing}::text[])`;
    for (const tenantId of missing) found.set(tenantId, []);
    for (const row of rows) found.get(row.tenant_id)!.push(compileCostModel(row));
    for (const tenantId of missing) {
      if ((this.generations.get(tenantId) ?? 0) === generations.get(tenantId)) {
        this.entries.set(tenantId, { models: found.get(tenantId)!, loadedAt: now });
      }
    }
    return found;
  }

  invalidate(tenantId: string): void {
    this.entries.delete(tenantId);
    this.generations.set(tenantId, (this.generations.get(tenantId) ?? 0) + 1);
  }
}

/** A CostModelCache that drops a tenant's models on its `cost-models.changed` control message (the cogs and analytics-dispatch stages). */
export async function watchedCostModels(sql: Sql, onControl: StageContext['onControl']): Promise<CostModelCache> {
  const models = new CostModelCache(sql);
  await onControl((message) => {
    if (message.type === 'cost-models.changed') models.invalidate(message.tenantId);
  });
  return models;
}
