import { Hono } from 'hono';
import { z } from 'zod';
import { formatNano } from '../domain/money.js';
import { END_OF_YEAR_9998 } from '../domain/validation.js';
import { explainCharge } from '../domain/rating/explain.js';
import type { EventType } from '../domain/events.js';
import type { Config } from '../pipeline/config.js';
import type { Sql } from '../pipeline/postgres.js';
import { CLICKHOUSE_TIME_LIMIT_MS, CLICKHOUSE_TIMES, connectClickHouse, type ClickHouseClient } from '../store/clickhouse.js';
import { PlanCache } from '../store/rate-plans.js';
import { billingPeriod } from '../store/subscriptions.js';
import type { TenantTokens } from '../store/tenant-tokens.js';
import { USAGE_GROUPS, capsTouched, clickHouseSummary, commitmentStatus, ledgerRow, ledgerSummary, type UsageSummary } from '../store/usage-reads.js';
import { requireTenant, type TenantAuthVariables } from './auth.js';
import { ApiError, notFound, validationFailed } from './errors.js';
import { parseQuery } from './http.js';
import { percentOf } from './cogs.js';

/**
 * The usage read routes, with the tenant's admin token (tenant-scoped like the admin API: another
 * tenant's event or customer answers 404 like one that does not exist):
 *
 *   GET /v1/usage/events/{event_id}/charge          "explain this charge"
 *   GET /v1/usage/summary?group_by=&from=&to=        usage by agent, app, tool, session or day
 *   GET /v1/usage/customers/{id}/commitment?at=      spend against the commitment, projected
 */

/** The longest range one summary reads (a year and a day, so that "the last year" always fits). */
const MAX_RANGE_MS = 367 * 86_400_000;
/** A range is read from ClickHouse, in whole seconds: the last one it holds. */
const CLICKHOUSE_LATEST = CLICKHOUSE_TIME_LIMIT_MS - 1000;

const isoTime = z.iso.datetime({ offset: true, error: 'must be an ISO 8601 time with an offset, such as 2026-03-01T00:00:00Z' });
const id = z.string().min(1).max(128);

export const usageSummaryQuery = z.strictObject({
  group_by: z.enum(USAGE_GROUPS, { error: `must be one of ${USAGE_GROUPS.join(', ')}` }),
  from: isoTime.optional().meta({ description: 'Start of the recorded-time range (inclusive). With `to`, the summary reads ClickHouse; without both, the current billing period from the PostgreSQL ledger.' }),
  to: isoTime.optional().meta({ description: 'End of the range (exclusive); at most 367 days after `from`.' }),
  customer_id: id.optional().meta({ description: 'Only this customer.' }),
});

export const commitmentQuery = z.strictObject({
  at: isoTime.optional().meta({ description: 'A time in the period wanted (now by default); the projection runs from the period start to this time.' }),
});

const figures = z.object({
  key: z.string().meta({ description: "The agent, app, tool or session id ('' for events without one), or the day (YYYY-MM-DD, UTC)." }),
  currency: z.string(),
  events: z.number(),
  calls: z.number(),
  errors: z.number(),
  input_tokens: z.number(),
  output_tokens: z.number(),
  duration_ms: z.number(),
  cost: z.string().meta({ description: 'Exact, in the currency\'s major unit.' }),
  cost_nano: z.string(),
});

export const usageSummaryOut = z.object({
  group_by: z.enum(USAGE_GROUPS),
  source: z.enum(['postgresql', 'clickhouse']).meta({ description: 'postgresql: the ledger, for the current billing period; clickhouse: analytics, for a range.' }),
  from: z.string(),
  to: z.string(),
  customer_id: z.string().nullable(),
  rows: z.array(figures),
  truncated: z.boolean().meta({ description: 'More groups than the 10,000 answered (the costliest are answered).' }),
});

const dimension = z.object({
  dimension: z.enum(['tool', 'input_tokens', 'output_tokens', 'duration']),
  description: z.string(),
  rule: z.string().meta({ description: 'The plan field(s) that priced it, by JSON path.' }),
  quantity: z.string(),
  unit_price: z.string(),
  amount: z.string(),
  amount_nano: z.string(),
  matches_plan: z.boolean(),
});

export const chargeOut = z.object({
  event_id: z.string(),
  ledger: z.looseObject({}).meta({ description: 'The ledger row: ids, times, tool, model, MCP server, status, quantities, cost and currency.' }),
  plan: z.object({
    rate_plan_id: z.string(),
    rate_plan_version_id: z.string(),
    version: z.number(),
    subscription_id: z.string(),
    pricing: z.looseObject({}),
    overrides: z.looseObject({}),
  }),
  dimensions: z.array(dimension),
  total: z.string(),
  total_nano: z.string(),
  period_rules: z.array(z.object({ rule: z.string(), effect: z.string() })),
  caps: z.array(
    z.object({
      cap_id: z.string(),
      scope_kind: z.string(),
      scope_id: z.string(),
      period: z.string(),
      period_key: z.string(),
      limit: z.string(),
      action: z.string(),
      status: z.string(),
      period_spend: z.string(),
      paused_by_this_event: z.boolean(),
    }),
  ),
  over_cap: z.boolean().meta({ description: 'A cap was at or over its limit with this event (it is billed all the same).' }),
});

export const commitmentOut = z.object({
  customer_id: z.string(),
  currency: z.string(),
  period_start: z.string(),
  period_end: z.string(),
  as_of: z.string(),
  elapsed_percent: z.string(),
  invoice_to_date: z.string(),
  projected_total: z.string().meta({ description: 'At the pace of the period so far: committed groups by their calls, the rest of the invoice scaled linearly.' }),
  commitments: z.array(z.looseObject({ group: z.string(), committed_calls: z.string(), committed_price: z.string(), used_calls: z.string(), used_value: z.string() })),
});

function rangeOf(query: z.output<typeof usageSummaryQuery>, now: number): { from: number; to: number; source: 'postgresql' | 'clickhouse' } {
  if (query.from === undefined && query.to === undefined) {
    const period = billingPeriod(now);
    return { from: period.start, to: period.end, source: 'postgresql' };
  }
  const problems: { path: string; message: string }[] = [];
  if (query.from === undefined) problems.push({ path: 'from', message: 'is required with to' });
  if (query.to === undefined) problems.push({ path: 'to', message: 'is required with from' });
  const from = query.from === undefined ? Number.NaN : Date.parse(query.from);
  const to = query.to === undefined ? Number.NaN : Date.parse(query.to);
  if (from < 0 || from >= CLICKHOUSE_LATEST) problems.push({ path: 'from', message: CLICKHOUSE_TIMES });
  if (to < 0 || to > CLICKHOUSE_LATEST) problems.push({ path: 'to', message: CLICKHOUSE_TIMES });
  // ClickHouse keeps recorded times to the second: a bound inside a second would count its events
  // on both sides of it, or on neither.
  for (const [path, at] of [['from', from], ['to', to]] as const) {
    if (Number.isFinite(at) && at % 1000 !== 0) problems.push({ path, message: 'must be a whole second (ClickHouse keeps recorded times to the second)' });
  }
  if (problems.length === 0 && from >= to) problems.push({ path: 'to', message: 'must be after from' });
  if (problems.length === 0 && to - from > MAX_RANGE_MS) problems.push({ path: 'to', message: 'the range is at most 367 days' });
  if (problems.length > 0) throw validationFailed(`invalid range: ${problems[0].path}: ${problems[0].message}`, problems);
  return { from, to, source: 'clickhouse' };
}

async function requireCustomer(sql: Sql, tenantId: string, customerId: string): Promise<void> {
  const [customer] = await sql`SELECT 1 FROM customers WHERE tenant_id = ${tenantId} AND id = ${customerId}`;
  if (!customer) throw notFound('customer', customerId);
}

export function createUsageRoutes(deps: { config: Config; sql: Sql; tokens: TenantTokens; clickhouse?: ClickHouseClient; plans?: PlanCache; now?: () => number }): Hono<{
  Variables: TenantAuthVariables;
}> {
  const { config, sql, tokens } = deps;
  const plans = deps.plans ?? new PlanCache(sql);
  const now = deps.now ?? Date.now;
  let clickhouse = deps.clickhouse;
  const analytics = () =>
    (clickhouse ??= connectClickHouse({ url: config.CLICKHOUSE_URL, database: config.CLICKHOUSE_DATABASE, username: config.CLICKHOUSE_USER, password: config.CLICKHOUSE_PASSWORD }));
  const app = new Hono<{ Variables: TenantAuthVariables }>();
  app.use('/v1/usage/*', requireTenant(tokens, 'admin'));

  app.get('/v1/usage/events/:event_id/charge', async (c) => {
    const tenantId = c.get('tenantId');
    const eventId = c.req.param('event_id');
    const row = await ledgerRow(sql, tenantId, eventId);
    if (!row) throw notFound('event', eventId);
    const [version] = await sql<{ pricing: Record<string, unknown>; overrides: Record<string, unknown> }[]>`
      SELECT v.pricing, s.overrides FROM rate_plan_versions v
      JOIN subscriptions s ON s.tenant_id = v.tenant_id AND s.id = ${row.subscription_id}
      WHERE v.tenant_id = ${tenantId} AND v.id = ${row.rate_plan_version_id}`;
    const plan = await plans.forSubscription(tenantId, row.subscription_id);
    const breakdown = Object.fromEntries(Object.entries(row.cost_breakdown ?? {}).map(([name, nano]) => [name, BigInt(nano)])) as Parameters<typeof explainCharge>[1]['breakdown'];
    const explanation = explainCharge(plan, {
      eventType: row.event_type as EventType,
      pricedTool: row.priced_tool ?? '',
      model: row.model ?? undefined,
      inputTokens: Number(row.input_tokens),
      outputTokens: Number(row.output_tokens),
      durationMs: Number(row.duration_ms),
      breakdown,
    });
    const caps = await capsTouched(sql, tenantId, row);
    const { cost_breakdown: _breakdown, cost_nano, duration_ms, input_tokens, output_tokens, ...ledger } = row;
    return c.json({
      event_id: row.event_id,
      // Quantities are bounded at ingest (10^12), exact as JSON numbers; money stays a decimal string.
      ledger: { ...ledger, duration_ms: Number(duration_ms), input_tokens: Number(input_tokens), output_tokens: Number(output_tokens), cost: formatNano(BigInt(cost_nano)), cost_nano },
      plan: {
        rate_plan_id: row.rate_plan_id,
        rate_plan_version_id: row.rate_plan_version_id,
        version: row.rate_plan_version,
        subscription_id: row.subscription_id,
        pricing: version?.pricing ?? {},
        overrides: version?.overrides ?? {},
      },
      dimensions: explanation.dimensions.map((d) => ({ ...d, amount_nano: d.amount_nano.toString() })),
      total: formatNano(BigInt(cost_nano)),
      total_nano: cost_nano,
      period_rules: explanation.period_rules,
      caps: caps.map(({ limit_nano, period_spend_nano, ...cap }) => ({ ...cap, limit: formatNano(limit_nano), period_spend: formatNano(period_spend_nano) })),
      over_cap: row.over_cap,
    });
  });

  app.get('/v1/usage/summary', async (c) => {
    const tenantId = c.get('tenantId');
    const query = parseQuery(usageSummaryQuery, c.req.query());
    const range = rangeOf(query, now());
    if (query.customer_id !== undefined) await requireCustomer(sql, tenantId, query.customer_id);
    const scope = { tenantId, from: range.from, to: range.to, customerId: query.customer_id };
    let summary: UsageSummary;
    try {
      summary = range.source === 'postgresql' ? await ledgerSummary(sql, query.group_by, scope) : await clickHouseSummary(analytics(), query.group_by, scope);
    } catch (err) {
      if (range.source === 'clickhouse' && !(err instanceof ApiError)) {
        throw new ApiError(503, 'analytics_unavailable', `ClickHouse did not answer (${(err as Error).message}); the current period is always readable from the ledger (leave out from and to)`, undefined, {
          'Retry-After': '5',
        });
      }
      throw err;
    }
    return c.json({
      group_by: query.group_by,
      source: range.source,
      from: new Date(range.from).toISOString(),
      to: new Date(range.to).toISOString(),
      customer_id: query.customer_id ?? null,
      rows: summary.rows.map(({ cost_nano, ...row }) => ({ ...row, cost: formatNano(cost_nano), cost_nano: cost_nano.toString() })),
      truncated: summary.truncated,
    });
  });

  app.get('/v1/usage/customers/:id/commitment', async (c) => {
    const tenantId = c.get('tenantId');
    const customerId = c.req.param('id');
    const query = parseQuery(commitmentQuery, c.req.query());
    const at = query.at === undefined ? now() : Date.parse(query.at);
    if (at < 0 || at >= END_OF_YEAR_9998) throw validationFailed('invalid query: at: must be between 1970 and 9998', [{ path: 'at', message: 'must be between 1970 and 9998' }]);
    await requireCustomer(sql, tenantId, customerId);
    const status = await commitmentStatus(sql, plans, tenantId, customerId, at);
    if (!status) throw new ApiError(404, 'no_subscription', `customer ${customerId} has no subscription in the period containing ${new Date(at).toISOString()}`);
    const elapsed = Math.min(Math.max(at - status.periodStart, 0), status.periodEnd - status.periodStart);
    return c.json({
      customer_id: customerId,
      currency: status.currency,
      period_start: new Date(status.periodStart).toISOString(),
      period_end: new Date(status.periodEnd).toISOString(),
      as_of: new Date(at).toISOString(),
      elapsed_percent: percentOf(BigInt(elapsed), BigInt(status.periodEnd - status.periodStart)),
      invoice_to_date: formatNano(status.invoiceToDateNano),
      projected_total: formatNano(status.projectedTotalNano),
      commitments: status.groups.map((group) => ({
        group: group.group,
        subscription_ids: group.subscription_ids,
        committed_calls: group.committed_calls.toString(),
        committed_price: formatNano(group.committed_price_nano),
        overage_rate: formatNano(group.overage_rate_nano),
        used_calls: group.used_calls.toString(),
        used_value: formatNano(group.used_value_nano),
        used_percent: percentOf(group.used_calls, group.committed_calls),
        projected_calls: group.projected_calls.toString(),
        projected_overage_calls: group.projected_overage_calls.toString(),
        projected_total: formatNano(group.projected_total_nano),
        allocations: group.allocations.map((allocation) => ({
          agent_id: allocation.agent_id,
          allocated_calls: allocation.allocated_calls.toString(),
          used_calls: allocation.used_calls.toString(),
          projected_calls: allocation.projected_calls.toString(),
        })),
      })),
    });
  });
  return app;
}
