import { ratePeriod, type Invoice, type SubscriptionPeriod } from '../domain/rating/rate-period.js';
import type { RowKind, UsageRow } from '../domain/rating/usage-rows.js';
import { validateSubscriptionTerms } from '../domain/rating/plan.js';
import type { Sql } from '../pipeline/postgres.js';
import type { PlanCache } from './rate-plans.js';
import { billingPeriod } from './subscriptions.js';

export interface DraftInvoice {
  customerId: string;
  periodStart: number;
  periodEnd: number;
  subscriptionIds: string[];
  invoice: Invoice;
}

/**
 * The draft invoice of a customer for the billing period containing `at`: every subscription
 * of the customer (or of its teams, agents and apps) active in that period, its stored usage
 * rows as invoice-rollup left them, its terms, rated by the rating engine. Computed on each
 * read, so it is current to the last ledgered event. Undefined when the customer has no
 * subscription in the period.
 */
export async function draftInvoice(sql: Sql, plans: PlanCache, tenantId: string, customerId: string, at: number): Promise<DraftInvoice | undefined> {
  const period = billingPeriod(at);
  const subscriptions = await sql<{ id: string; commitment: unknown; allocation: unknown }[]>`
    SELECT id, commitment, allocation FROM subscriptions
    WHERE tenant_id = ${tenantId} AND customer_id = ${customerId}
      AND effective_from < ${new Date(period.end)}
      AND (effective_to IS NULL OR effective_to > ${new Date(period.start)})
    ORDER BY id`;
  if (subscriptions.length === 0) return undefined;
  const rows = await sql<{ subscription_id: string; kind: RowKind; key: string; counters: Record<string, string> }[]>`
    SELECT subscription_id, kind, key, counters FROM invoice_usage
    WHERE tenant_id = ${tenantId} AND period_start = ${new Date(period.start)}
      AND subscription_id = ANY(${subscriptions.map((s) => s.id)})`;
  const periods: SubscriptionPeriod[] = [];
  for (const subscription of subscriptions) {
    const terms = validateSubscriptionTerms({ commitment: subscription.commitment, allocation: subscription.allocation });
    if (!terms.ok) throw new Error(`subscription ${subscription.id} has invalid terms: ${terms.errors.map((e) => `${e.path} ${e.message}`).join('; ')}`);
    periods.push({
      subscriptionId: subscription.id,
      plan: await plans.forSubscription(tenantId, subscription.id),
      terms: terms.terms,
      rows: rows.filter((r) => r.subscription_id === subscription.id).map(toUsageRow),
    });
  }
  return {
    customerId,
    periodStart: period.start,
    periodEnd: period.end,
    subscriptionIds: subscriptions.map((s) => s.id),
    invoice: ratePeriod(periods),
  };
}

function toUsageRow(row: { kind: RowKind; key: string; counters: Record<string, string> }): UsageRow {
  return {
    kind: row.kind,
    key: row.key,
    counters: Object.fromEntries(Object.entries(row.counters).map(([name, value]) => [name, BigInt(value)])),
  };
}
