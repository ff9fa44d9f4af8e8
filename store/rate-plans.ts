import { compilePlan, type CompiledPlan } from '../domain/rating/compile.js';
import { validateRatePlan } from '../schemas/rate-plan.js';
import type { Sql } from './postgres.js';

/**
 * Compiled rate-plan versions by id. Versions are immutable, so an entry never goes stale:
 * it is loaded once, on first use, and kept.
 */
export class PlanCache {
  private readonly plans = new Map<string, Promise<CompiledPlan>>();

  constructor(private readonly sql: Sql) {}

  get(tenantId: string, versionId: string): Promise<CompiledPlan> {
    const key = `${tenantId}/${versionId}`;
    let plan = this.plans.get(key);
    if (!plan) {
      plan = this.load(tenantId, versionId);
      this.plans.set(key, plan);
      plan.catch(() => this.plans.delete(key));
    }
    return plan;
  }

  private async load(tenantId: string, versionId: string): Promise<CompiledPlan> {
    const [row] = await this.sql<{ pricing: unknown; currency: string; rate_plan_id: string; version: number }[]>`
      SELECT v.pricing, p.currency, v.rate_plan_id, v.version
      FROM rate_plan_versions v JOIN rate_plans p ON p.tenant_id = v.tenant_id AND p.id = v.rate_plan_id
      WHERE v.tenant_id = ${tenantId} AND v.id = ${versionId}`;
    if (!row) throw new Error(`rate plan version ${versionId} of tenant ${tenantId} does not exist`);
    const validated = validateRatePlan(row.pricing);
    if (!validated.ok) {
      throw new Error(`rate plan version ${versionId} is invalid: ${validated.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`);
    }
    return compilePlan(validated.plan, row.currency, { planId: row.rate_plan_id, version: row.version });
  }
}
