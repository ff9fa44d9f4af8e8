import type { Sql } from '../pipeline/postgres.js';
import type { Attribution, SubscriptionSnapshot } from '../domain/flow.js';
import { periodContaining, type BillingPeriodKind } from '../domain/billing/periods.js';

interface SubscriptionRow {
  id: string;
  tenant_id: string;
  customer_id: string;
  team_id: string | null;
  agent_id: string | null;
  app_id: string | null;
  rate_plan_version_id: string;
  rate_plan_id: string;
  version: number;
  currency: string;
  effective_from: Date;
  effective_to: Date | null;
  billing_period: BillingPeriodKind;
  billing_anchor: Date | null;
}

interface Subscription {
  id: string;
  ratePlanId: string;
  ratePlanVersionId: string;
  ratePlanVersion: number;
  currency: string;
  from: number;
  to: number;
  billingPeriod: BillingPeriodKind;
  billingAnchor: number;
  /** The snapshot of the period last asked for: every event of that period gets the same one (they never change). */
  lastSnapshot?: SubscriptionSnapshot;
}

/** A tenant's subscriptions by the scope they are on, each list ordered by effective_from. */
interface TenantBook {
  agent: Map<string, Subscription[]>;
  app: Map<string, Subscription[]>;
  team: Map<string, Subscription[]>;
  customer: Map<string, Subscription[]>;
}

const emptyBook = (): TenantBook => ({ agent: new Map(), app: new Map(), team: new Map(), customer: new Map() });

const RELOAD_ON_MISS_INTERVAL_MS = 1_000;

/**
 * Every subscription in memory, by scope (agent, app, team, customer), each list ordered by
 * effective_from. Subscriptions are immutable snapshots, so the map only grows or is
 * replaced per tenant when a `subscriptions.changed` control message arrives. A miss reloads
 * the tenant once (at most every second) before answering "no subscription", in case a
 * control message was missed.
 */
export class SubscriptionBook {
  private tenants = new Map<string, TenantBook>();
  private readonly reloadedAt = new Map<string, number>();

  constructor(private readonly sql: Sql) {}

  async loadAll(): Promise<void> {
    const rows = await this.query();
    const tenants = new Map<string, TenantBook>();
    for (const row of rows) add(tenants, row);
    this.tenants = tenants;
  }

  async reloadTenant(tenantId: string): Promise<void> {
    const tenants = new Map<string, TenantBook>();
    for (const row of await this.query(tenantId)) add(tenants, row);
    this.tenants.set(tenantId, tenants.get(tenantId) ?? emptyBook());
    this.reloadedAt.set(tenantId, Date.now());
  }

  /** The most specific subscription active at `at`: the agent's or app's, else the team's, else the customer's. */
  find(tenantId: string, attribution: Attribution, at: number): SubscriptionSnapshot | undefined {
    const book = this.tenants.get(tenantId);
    if (!book) return undefined;
    const found =
      (attribution.agentId ? activeIn(book.agent.get(attribution.agentId), at) : undefined) ??
      (attribution.appId ? activeIn(book.app.get(attribution.appId), at) : undefined) ??
      activeIn(book.team.get(attribution.teamId), at) ??
      activeIn(book.customer.get(attribution.customerId), at);
    return found && snapshot(found, at);
  }

  /** find(), reloading the tenant from PostgreSQL first when it misses and was not reloaded in the last second. */
  async findOrReload(tenantId: string, attribution: Attribution, at: number): Promise<SubscriptionSnapshot | undefined> {
    const found = this.find(tenantId, attribution, at);
    if (found) return found;
    if (Date.now() - (this.reloadedAt.get(tenantId) ?? 0) < RELOAD_ON_MISS_INTERVAL_MS) return undefined;
    await this.reloadTenant(tenantId);
    return this.find(tenantId, attribution, at);
  }

  private query(tenantId?: string): Promise<SubscriptionRow[]> {
    return this.sql<SubscriptionRow[]>`
      SELECT s.id, s.tenant_id, s.customer_id, s.team_id, s.agent_id, s.app_id, s.rate_plan_version_id,
             v.rate_plan_id, v.version, p.currency, s.effective_from, s.effective_to,
             s.billing_period, s.billing_anchor
      FROM subscriptions s
      JOIN rate_plan_versions v ON v.tenant_id = s.tenant_id AND v.id = s.rate_plan_version_id
      JOIN rate_plans p ON p.tenant_id = v.tenant_id AND p.id = v.rate_plan_id
      ${tenantId === undefined ? this.sql`` : this.sql`WHERE s.tenant_id = ${tenantId}`}
      ORDER BY s.effective_from`;
  }
}

function add(tenants: Map<string, TenantBook>, row: SubscriptionRow): void {
  let book = tenants.get(row.tenant_id);
  if (!book) tenants.set(row.tenant_id, (book = emptyBook()));
  const [scope, id] = row.agent_id
    ? [book.agent, row.agent_id]
    : row.app_id
      ? [book.app, row.app_id]
      : row.team_id
        ? [book.team, row.team_id]
        : [book.customer, row.customer_id];
  const list = scope.get(id) ?? [];
  list.push({
    id: row.id,
    ratePlanId: row.rate_plan_id,
    ratePlanVersionId: row.rate_plan_version_id,
    ratePlanVersion: row.version,
    currency: row.currency,
    from: row.effective_from.getTime(),
    to: row.effective_to ? row.effective_to.getTime() : Number.POSITIVE_INFINITY,
    billingPeriod: row.billing_period,
    billingAnchor: (row.billing_anchor ?? row.effective_from).getTime(),
  });
  scope.set(id, list);
}

function activeIn(list: Subscription[] | undefined, at: number): Subscription | undefined {
  if (!list) return undefined;
  for (const s of list) if (s.from <= at && at < s.to) return s;
  return undefined;
}

/** The calendar month (UTC) containing `at`: the default billing period, and the console's month. */
export function billingPeriod(at: number): { start: number; end: number } {
  return periodContaining('calendar_month', at, at);
}

function snapshot(s: Subscription, at: number): SubscriptionSnapshot {
  const last = s.lastSnapshot;
  if (last && last.periodStart <= at && at < last.periodEnd) return last;
  const period = periodContaining(s.billingPeriod, s.billingAnchor, at);
  return (s.lastSnapshot = {
    subscriptionId: s.id,
    ratePlanId: s.ratePlanId,
    ratePlanVersionId: s.ratePlanVersionId,
    ratePlanVersion: s.ratePlanVersion,
    currency: s.currency,
    periodStart: period.start,
    periodEnd: period.end,
  });
}
