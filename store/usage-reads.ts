import { parseNano } from '../domain/money.js';
import { validateSubscriptionTerms } from '../domain/rating/plan.js';
import type { Sql } from '../pipeline/postgres.js';
import { chString, type ClickHouseClient } from './clickhouse.js';
import { draftInvoice } from './invoices.js';
import type { PlanCache } from './rate-plans.js';

/**
 * The reads behind the usage routes: one event's ledger row and the caps it counted toward, and
 * usage summaries grouped by agent, app, tool, session or day, from PostgreSQL (the ledger, for
 * the current period: exact to the last ledgered event) or ClickHouse (any range). Every query is
 * scoped by tenant; PostgreSQL ones are parameterized, ClickHouse ones (18.16 has no server-side
 * parameters) take literals quoted by chString and integers only.
 */

export const USAGE_GROUPS = ['agent', 'app', 'tool', 'session', 'day'] as const;
export type UsageGroup = (typeof USAGE_GROUPS)[number];

/** The most groups one summary answers (the biggest by cost first; days in order); `truncated` says when there were more. */
const SUMMARY_ROW_LIMIT = 10_000;

interface UsageFigures {
  /** The agent, app, tool or session id ('' for events without one), or the day (YYYY-MM-DD, UTC). */
  key: string;
  currency: string;
  events: number;
  /** Events that are calls (not session.* control events). */
  calls: number;
  /** Calls whose status is not SUCCESS. */
  errors: number;
  input_tokens: number;
  output_tokens: number;
  duration_ms: number;
  cost_nano: bigint;
}

export interface UsageSummary {
  rows: UsageFigures[];
  truncated: boolean;
}

export interface SummaryScope {
  tenantId: string;
  /** [from, to) in epoch milliseconds, on recorded time. */
  from: number;
  to: number;
  customerId?: string;
}

// --- PostgreSQL: the ledger

export async function ledgerSummary(sql: Sql, group: UsageGroup, scope: SummaryScope): Promise<UsageSummary> {
  const key = {
    agent: sql`coalesce(agent_id, '')`,
    app: sql`coalesce(app_id, '')`,
    tool: sql`coalesce(tool_name, '')`,
    session: sql`coalesce(session_id, '')`,
    day: sql`to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')`,
  }[group];
  const order = group === 'day' ? sql`ORDER BY 1, 2` : sql`ORDER BY sum(cost_nano) DESC, 1, 2`;
  const found = await sql<{ key: string; currency: string; events: string; calls: string; errors: string; input_tokens: string; output_tokens: string; duration_ms: string; cost_nano: string }[]>`
    SELECT ${key} AS key, currency, count(*) AS events,
           count(*) FILTER (WHERE event_type NOT LIKE 'session.%') AS calls,
           count(*) FILTER (WHERE event_type NOT LIKE 'session.%' AND execution_status <> 'SUCCESS') AS errors,
           sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(duration_ms) AS duration_ms,
           sum(cost_nano::numeric) AS cost_nano
    FROM usage_ledger
    WHERE tenant_id = ${scope.tenantId} AND recorded_at >= ${new Date(scope.from)} AND recorded_at < ${new Date(scope.to)}
      ${scope.customerId === undefined ? sql`` : sql`AND customer_id = ${scope.customerId}`}
    GROUP BY 1, 2
    ${order}
    LIMIT ${SUMMARY_ROW_LIMIT + 1}`;
  return limited(
    found.map((row) => ({
      key: row.key,
      currency: row.currency,
      events: Number(row.events),
      calls: Number(row.calls),
      errors: Number(row.errors),
      input_tokens: Number(row.input_tokens),
      output_tokens: Number(row.output_tokens),
      duration_ms: Number(row.duration_ms),
      cost_nano: BigInt(row.cost_nano),
    })),
  );
}

// --- ClickHouse: invocations

const CH_KEYS: Record<UsageGroup, string> = {
  agent: 'agent_id',
  app: 'app_id',
  tool: 'tool_name',
  session: 'session_id',
  day: 'toString(recorded_date)',
};

/**
 * Sums are taken in two parts, whole billions and the remainder, each far from 64 bits, and
 * joined in bigint: sum(cost_nano) alone would wrap past 9.2e9 units (Int64). Aliases differ from
 * column names (ClickHouse substitutes aliases inside expressions). Valid on 18.16 and current releases.
 */
const PART = 1_000_000_000n;
const SPLIT_SUMS = { cost_nano: 'u_cost', input_tokens: 'u_input', output_tokens: 'u_output', duration_ms: 'u_duration' } as const;
type SplitAlias = (typeof SPLIT_SUMS)[keyof typeof SPLIT_SUMS];

function chDateTimeBounds(scope: SummaryScope): string {
  const day = (ms: number) => chString(new Date(ms).toISOString().slice(0, 10));
  return [
    // Whole seconds from the route (ClickHouse keeps recorded times to the second).
    `recorded_at >= toDateTime(${Math.floor(scope.from / 1000)})`,
    `recorded_at < toDateTime(${Math.ceil(scope.to / 1000)})`,
    // The date bounds let ClickHouse skip whole partitions.
    `recorded_date >= toDate(${day(scope.from)})`,
    `recorded_date <= toDate(${day(scope.to)})`,
  ].join(' AND ');
}

function clickHouseSummaryQuery(group: UsageGroup, scope: SummaryScope): string {
  const sums = Object.entries(SPLIT_SUMS)
    .map(([column, alias]) => `toString(sum(intDiv(${column}, ${PART}))) AS ${alias}_hi, toString(sum(${column} % ${PART})) AS ${alias}_lo`)
    .join(',\n  ');
  const conditions = [`tenant_id = ${chString(scope.tenantId)}`, chDateTimeBounds(scope)];
  if (scope.customerId !== undefined) conditions.push(`customer_id = ${chString(scope.customerId)}`);
  // By the exact total, in two parts: the remainders' sum carried into the billions, then the
  // remainder brought to [0, 1e9) (corrections make costs negative).
  const hi = `(sum(intDiv(cost_nano, ${PART})) + intDiv(sum(cost_nano % ${PART}), ${PART}))`;
  const lo = `(sum(cost_nano % ${PART}) % ${PART})`;
  const order = group === 'day' ? 'u_key, u_currency' : `${hi} - (${lo} < 0) DESC, ${lo} + (${lo} < 0) * ${PART} DESC, u_key, u_currency`;
  return `SELECT ${CH_KEYS[group]} AS u_key, currency AS u_currency, count() AS u_events,
  countIf(event_type NOT LIKE 'session.%') AS u_calls,
  countIf(event_type NOT LIKE 'session.%' AND execution_status != 'SUCCESS') AS u_errors,
  ${sums}
FROM invocations FINAL
WHERE ${conditions.join(' AND ')}
GROUP BY u_key, u_currency
ORDER BY ${order}
LIMIT ${SUMMARY_ROW_LIMIT + 1}`;
}

type ClickHouseRow = { u_key: string; u_currency: string; u_events: string; u_calls: string; u_errors: string } & Record<`${SplitAlias}_hi` | `${SplitAlias}_lo`, string>;

export async function clickHouseSummary(clickhouse: ClickHouseClient, group: UsageGroup, scope: SummaryScope): Promise<UsageSummary> {
  const result = await clickhouse.query({ query: clickHouseSummaryQuery(group, scope), format: 'JSONEachRow' });
  const found = await result.json<ClickHouseRow>();
  const joined = (row: ClickHouseRow, alias: SplitAlias) => BigInt(row[`${alias}_hi`]) * PART + BigInt(row[`${alias}_lo`]);
  return limited(
    found.map((row) => ({
      key: row.u_key,
      currency: row.u_currency,
      events: Number(row.u_events),
      calls: Number(row.u_calls),
      errors: Number(row.u_errors),
      input_tokens: Number(joined(row, 'u_input')),
      output_tokens: Number(joined(row, 'u_output')),
      duration_ms: Number(joined(row, 'u_duration')),
      cost_nano: joined(row, 'u_cost'),
    })),
  );
}

function limited(rows: UsageFigures[]): UsageSummary {
  return { rows: rows.slice(0, SUMMARY_ROW_LIMIT), truncated: rows.length > SUMMARY_ROW_LIMIT };
}

// --- one event's charge

export interface LedgerRow {
  event_id: string;
  event_type: string;
  recorded_at: Date;
  ingested_at: Date;
  ledgered_at: Date;
  customer_id: string;
  team_id: string;
  agent_id: string | null;
  app_id: string | null;
  product_id: string | null;
  subscription_id: string;
  rate_plan_id: string;
  rate_plan_version_id: string;
  rate_plan_version: number;
  period_start: Date;
  session_id: string | null;
  tool_name: string | null;
  priced_tool: string | null;
  mcp_server_id: string | null;
  model: string | null;
  execution_status: string;
  duration_ms: string;
  input_tokens: string;
  output_tokens: string;
  retry_count: number;
  cost_nano: string;
  cost_breakdown: Record<string, string>;
  currency: string;
  over_cap: boolean;
}

export async function ledgerRow(sql: Sql, tenantId: string, eventId: string): Promise<LedgerRow | undefined> {
  const [row] = await sql<LedgerRow[]>`
    SELECT event_id, event_type, recorded_at, ingested_at, ledgered_at, customer_id, team_id, agent_id, app_id, product_id,
           subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version, period_start, session_id, tool_name,
           priced_tool, mcp_server_id, model, execution_status, duration_ms::text, input_tokens::text, output_tokens::text,
           retry_count, cost_nano::text, cost_breakdown, currency, over_cap
    FROM usage_ledger WHERE tenant_id = ${tenantId} AND event_id = ${eventId}`;
  return row;
}

export interface CapTouched {
  cap_id: string;
  scope_kind: string;
  scope_id: string;
  period: string;
  /** The cap's period the event fell in: 2026-03, 2026-03-05 or the session. */
  period_key: string;
  limit_nano: bigint;
  action: string;
  status: string;
  /** The ledger's spend of the cap's scope in that period, to now (this event included). */
  period_spend_nano: bigint;
  /** Whether this event is the one that crossed the limit and paused the scope. */
  paused_by_this_event: boolean;
}

/** The spend caps whose scope and period this event counted toward (the cap-check stage's rule), with the period's spend from the ledger. */
export async function capsTouched(sql: Sql, tenantId: string, row: LedgerRow): Promise<CapTouched[]> {
  const scopes = [
    ['customer', row.customer_id],
    ['team', row.team_id],
    ...(row.agent_id ? [['agent', row.agent_id]] : []),
    ...(row.app_id ? [['app', row.app_id]] : []),
  ];
  const caps = await sql<{ id: string; scope_kind: string; scope_id: string; period: string; limit_nano: string; action: string; status: string; created_at: Date }[]>`
    SELECT id, scope_kind, scope_id, period, limit_nano::text, action, status, created_at FROM spend_caps
    WHERE tenant_id = ${tenantId}
      AND (scope_kind, scope_id) IN (SELECT * FROM unnest(${scopes.map((s) => s[0])}::text[], ${scopes.map((s) => s[1])}::text[]))
    ORDER BY id`;
  const touched: CapTouched[] = [];
  for (const cap of caps) {
    const at = row.recorded_at;
    const window =
      cap.period === 'session'
        ? row.session_id
          ? { key: `s:${row.session_id}`, filter: sql`AND session_id = ${row.session_id}` }
          : undefined
        : cap.period === 'day'
          ? { key: at.toISOString().slice(0, 10), filter: sql`AND recorded_at >= ${dayStart(at)} AND recorded_at < ${new Date(dayStart(at).getTime() + 86_400_000)}` }
          : { key: at.toISOString().slice(0, 7), filter: sql`AND recorded_at >= ${monthStart(at, 0)} AND recorded_at < ${monthStart(at, 1)}` };
    if (!window) continue; // a session cap does not apply to an event outside a session
    const scopeColumn = { agent: sql`agent_id`, app: sql`app_id`, team: sql`team_id` }[cap.scope_kind] ?? sql`customer_id`;
    const [spend] = await sql<{ spent: string | null }[]>`
      SELECT sum(cost_nano::numeric)::text AS spent FROM usage_ledger
      WHERE tenant_id = ${tenantId} AND ${scopeColumn} = ${cap.scope_id} ${window.filter}`;
    const [pause] = await sql<{ event_id: string }[]>`
      SELECT event_id FROM cap_pauses WHERE tenant_id = ${tenantId} AND cap_id = ${cap.id} AND event_id = ${row.event_id} LIMIT 1`;
    touched.push({
      cap_id: cap.id,
      scope_kind: cap.scope_kind,
      scope_id: cap.scope_id,
      period: cap.period,
      period_key: window.key,
      limit_nano: BigInt(cap.limit_nano),
      action: cap.action,
      status: cap.status,
      period_spend_nano: BigInt(spend?.spent ?? '0'),
      paused_by_this_event: pause !== undefined,
    });
  }
  return touched;
}

function dayStart(at: Date): Date {
  return new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate()));
}

function monthStart(at: Date, monthsLater: number): Date {
  return new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth() + monthsLater, 1));
}

// --- spend against a commitment

interface CommitmentGroupStatus {
  group: string;
  subscription_ids: string[];
  committed_calls: bigint;
  committed_price_nano: bigint;
  overage_rate_nano: bigint;
  used_calls: bigint;
  /** Calls so far at the overage rate: what the commitment has absorbed ("2,340 used of 5,000 committed"). */
  used_value_nano: bigint;
  projected_calls: bigint;
  projected_overage_calls: bigint;
  /** The committed price plus the projected overage. */
  projected_total_nano: bigint;
  allocations: { agent_id: string; allocated_calls: bigint; used_calls: bigint; projected_calls: bigint }[];
}

export interface CommitmentStatus {
  customerId: string;
  currency: string;
  periodStart: number;
  periodEnd: number;
  asOf: number;
  /** The draft invoice so far (exact). */
  invoiceToDateNano: bigint;
  /** At the pace of the period so far: committed groups by their calls, the rest of the invoice scaled linearly. */
  projectedTotalNano: bigint;
  groups: CommitmentGroupStatus[];
}

/** value x period / elapsed, in integers (floor): linear projection to the period's end. */
export function projectToPeriodEnd(value: bigint, period: { start: number; end: number }, asOf: number): bigint {
  const elapsed = BigInt(Math.min(Math.max(asOf - period.start, 0), period.end - period.start));
  if (elapsed === 0n) return value;
  return (value * BigInt(period.end - period.start)) / elapsed;
}

/**
 * A customer's spend against its commitments in the billing period containing `asOf`, from
 * PostgreSQL: the draft invoice so far, each commitment group's calls against its committed
 * calls (and each agent's against its allocation), projected linearly to the period's end.
 * Undefined when the customer has no subscription in the period.
 */
export async function commitmentStatus(sql: Sql, plans: PlanCache, tenantId: string, customerId: string, asOf: number): Promise<CommitmentStatus | undefined> {
  const draft = await draftInvoice(sql, plans, tenantId, customerId, asOf);
  if (!draft) return undefined;
  const period = { start: draft.periodStart, end: draft.periodEnd };
  const subscriptions = await sql<{ id: string; commitment: unknown; allocation: unknown }[]>`
    SELECT id, commitment, allocation FROM subscriptions WHERE tenant_id = ${tenantId} AND id = ANY(${draft.subscriptionIds}) ORDER BY id`;
  const calls = await sql<{ subscription_id: string; calls: string }[]>`
    SELECT subscription_id, calls::text FROM invoice_period_calls
    WHERE tenant_id = ${tenantId} AND period_start = ${new Date(period.start)} AND subscription_id = ANY(${draft.subscriptionIds})`;
  const agentRows = await sql<{ key: string; counters: Record<string, string> }[]>`
    SELECT key, counters FROM invoice_usage
    WHERE tenant_id = ${tenantId} AND period_start = ${new Date(period.start)} AND kind = 'agent' AND subscription_id = ANY(${draft.subscriptionIds})`;
  const callsOf = new Map(calls.map((row) => [row.subscription_id, BigInt(row.calls)]));
  const agentCalls = new Map<string, bigint>();
  for (const row of agentRows) agentCalls.set(row.key, (agentCalls.get(row.key) ?? 0n) + BigInt(row.counters.calls ?? '0'));

  const groups = new Map<string, CommitmentGroupStatus>();
  for (const subscription of subscriptions) {
    const plan = await plans.forSubscription(tenantId, subscription.id);
    const terms = validateSubscriptionTerms({ commitment: subscription.commitment, allocation: subscription.allocation });
    if (!plan.isCommitted || !terms.ok) continue;
    const commitment = terms.terms.commitment
      ? { calls: BigInt(terms.terms.commitment.committed_amount), price: parseNano(terms.terms.commitment.committed_price) }
      : plan.commitment!;
    const key = terms.terms.commitment_group ?? (plan.planId ? `rate plan ${plan.planId}` : subscription.id);
    let group = groups.get(key);
    if (!group) {
      group = {
        group: key,
        subscription_ids: [],
        committed_calls: commitment.calls,
        committed_price_nano: commitment.price,
        overage_rate_nano: plan.defaultToolPrice.callNano,
        used_calls: 0n,
        used_value_nano: 0n,
        projected_calls: 0n,
        projected_overage_calls: 0n,
        projected_total_nano: 0n,
        allocations: [],
      };
      groups.set(key, group);
    }
    group.subscription_ids.push(subscription.id);
    group.used_calls += callsOf.get(subscription.id) ?? 0n;
    for (const [agent, allocated] of Object.entries(terms.terms.allocation ?? {})) {
      const used = agentCalls.get(agent) ?? 0n;
      group.allocations.push({ agent_id: agent, allocated_calls: BigInt(allocated), used_calls: used, projected_calls: projectToPeriodEnd(used, period, asOf) });
    }
  }

  const committedSubscriptions = new Set([...groups.values()].flatMap((group) => group.subscription_ids));
  let committedLinesNano = 0n;
  for (const line of draft.invoice.lines) {
    if ((line.subscription_id && committedSubscriptions.has(line.subscription_id)) || (line.commitment_group && groups.has(line.commitment_group))) {
      committedLinesNano += line.amount_nano;
    }
  }
  let projectedTotalNano = projectToPeriodEnd(draft.invoice.total_nano - committedLinesNano, period, asOf);
  for (const group of groups.values()) {
    group.used_value_nano = group.used_calls * group.overage_rate_nano;
    group.projected_calls = projectToPeriodEnd(group.used_calls, period, asOf);
    group.projected_overage_calls = group.projected_calls > group.committed_calls ? group.projected_calls - group.committed_calls : 0n;
    group.projected_total_nano = group.committed_price_nano + group.projected_overage_calls * group.overage_rate_nano;
    group.allocations.sort((a, b) => (a.agent_id < b.agent_id ? -1 : a.agent_id > b.agent_id ? 1 : 0));
    projectedTotalNano += group.projected_total_nano;
  }
  return {
    customerId,
    currency: draft.invoice.currency,
    periodStart: period.start,
    periodEnd: period.end,
    asOf,
    invoiceToDateNano: draft.invoice.total_nano,
    projectedTotalNano,
    groups: [...groups.values()],
  };
}
