import type { CompiledPlan } from '../domain/rating/compile.js';
import { isTransient } from '../pipeline/errors.js';
import type { Sql } from '../pipeline/postgres.js';
import { PlanCache } from './rate-plans.js';

/**
 * The commitment a subscription's calls count toward: COMMITTED plans only. Subscriptions of one
 * customer on one committed rate plan share one commitment (as the invoice rates it), whose size
 * is the subscription's negotiated commitment or else the plan's. Subscriptions and plan versions
 * never change, so what is read is kept.
 */
export interface CommitmentOf {
  /** The commitment group within the customer: `rate plan <id>`. */
  group: string;
  ratePlanId: string;
  committedCalls: bigint;
}

export class CommitmentBook {
  private readonly plans: PlanCache;
  private readonly known = new Map<string, Promise<CommitmentOf | undefined>>();

  constructor(private readonly sql: Sql) {
    this.plans = new PlanCache(sql);
  }

  forSubscription(tenantId: string, subscriptionId: string): Promise<CommitmentOf | undefined> {
    const key = `${tenantId}/${subscriptionId}`;
    let found = this.known.get(key);
    if (!found) {
      found = this.load(tenantId, subscriptionId);
      this.known.set(key, found);
      found.catch(() => this.known.delete(key));
    }
    return found;
  }

  private async load(tenantId: string, subscriptionId: string): Promise<CommitmentOf | undefined> {
    let plan: CompiledPlan;
    try {
      plan = await this.plans.forSubscription(tenantId, subscriptionId);
    } catch (err) {
      // An outage is retried; a subscription or plan that cannot be read (the price stage met it
      // first) has no commitment to alert on, and must not hold the event's other alerts back.
      if (isTransient(err)) throw err;
      return undefined;
    }
    if (!plan.isCommitted || !plan.planId) return undefined;
    const [row] = await this.sql<{ commitment: { committed_amount?: number } | null }[]>`
      SELECT commitment FROM subscriptions WHERE tenant_id = ${tenantId} AND id = ${subscriptionId}`;
    const calls = row?.commitment?.committed_amount ?? plan.commitment?.calls;
    if (calls === undefined) return undefined;
    return { group: `rate plan ${plan.planId}`, ratePlanId: plan.planId, committedCalls: BigInt(calls) };
  }
}
