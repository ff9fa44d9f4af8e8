import type { Sql } from '../pipeline/postgres.js';
import type { StageContext } from '../pipeline/stage.js';
import { compileCostModel, type CostModelRow, type LoadedCostModel } from './cost-model.js';
import { invalidateOnControl, TenantCache } from './tenant-cache.js';

/**
 * Every tenant's cost models, compiled, held in memory (a tenant without a model remembered as
 * such), dropped on a `cost-models.changed` control message, reloaded after ttlMs in any case.
 */
export class CostModelCache extends TenantCache<LoadedCostModel[]> {
  constructor(sql: Sql, ttlMs = 5 * 60_000, clock: () => number = Date.now) {
    super(
      async (missing) => {
        const rows = await sql<(CostModelRow & { tenant_id: string })[]>`
          SELECT id, tenant_id, currency, (extract(epoch FROM effective_from) * 1000)::float8 AS effective_from_ms, model
          FROM cost_models WHERE tenant_id = ANY(${missing}::text[])`;
        const models = new Map<string, LoadedCostModel[]>(missing.map((tenantId) => [tenantId, []]));
        for (const row of rows) models.get(row.tenant_id)!.push(compileCostModel(row));
        return models;
      },
      ttlMs,
      clock,
    );
  }
}

/** A CostModelCache that drops a tenant's models on its `cost-models.changed` control message (the cogs and analytics-dispatch stages). */
export function watchedCostModels(sql: Sql, onControl: StageContext['onControl']): Promise<CostModelCache> {
  return invalidateOnControl(new CostModelCache(sql), onControl, 'cost-models.changed');
}
