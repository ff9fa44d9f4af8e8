import { compilePlan, type CompiledPlan } from '../domain/rating/compile.js';
import { validateRatePlan } from '../domain/rating/plan.js';
import type { Sql } from '../pipeline/postgres.js';

/**
 * Compiled pricing per subscription: its rate-plan version with the subscription's overrides
 * laid over it. Both are immutable (a change makes a new version or a new subscription), so
 * an entry never goes stale: it is loaded on first use and kept.
 */
export class PlanCache {
  private readonly plans = new Map<string, Promise<CompiledPlan>>();
  /** The plans loaded, per tenant and subscription: read without a key string or an await per event. */
  private readonly loaded = new Map<string, Map<string, CompiledPlan>>();

  constructor(private readonly sql: Sql) {}

  /** The plan when it is loaded already (nearly every event), else undefined: then ask forSubscription. */
  loadedFor(tenantId: string, subscriptionId: string): CompiledPlan | undefined {
    return this.loaded.get(tenantId)?.get(subscriptionId);
  }

  forSubscription(tenantId: string, subscriptionId: string): Promise<CompiledPlan> {
    const key = `${tenantId}/${subscriptionId}`;
    let plan = this.plans.get(key);
    if (!plan) {
      plan = this.load(tenantId, subscriptionId);
      this.plans.set(key, plan);
      plan.then(
        (loaded) => {
          let plans = this.loaded.get(tenantId);
          if (!plans) this.loaded.set(tenantId, (plans = new Map()));
          plans.set(subscriptionId, loaded);
        },
        () => this.plans.delete(key),
      );
    }
    return plan;
  }

  private async load(tenantId: string, subscriptionId: string): Promise<CompiledPlan> {
    const [row] = await this.sql<
      { pricing: Record<string, unknown>; overrides: Record<string, unknown>; currency: string; rate_plan_id: string; version: number }[]
    >`
      SELECT v.pricing, s.overrides, p.currency, v.rate_plan_id, v.version
      FROM subscriptions s
      JOIN rate_plan_versions v ON v.tenant_id = s.tenant_id AND v.id = s.rate_plan_version_id
      JOIN rate_plans p ON p.tenant_id = v.tenant_id AND p.id = v.rate_plan_id
      WHERE s.tenant_id = ${tenantId} AND s.id = ${subscriptionId}`;
    if (!row) throw new Error(`subscription ${subscriptionId} of tenant ${tenantId} does not exist`);
    const validated = validateRatePlan({ ...row.pricing, ...row.overrides });
    if (!validated.ok) {
      const problems = validated.errors.map((e) => `${e.path}: ${e.message}`).join('; ');
      throw new Error(`pricing of subscription ${subscriptionId} (plan version ${row.version} with its overrides) is invalid: ${problems}`);
    }
    return compilePlan(validated.plan, row.currency, { planId: row.rate_plan_id, version: row.version });
  }
}
