import { Hono } from 'hono';
import { z } from 'zod';
import { formatNano } from '../domain/money.js';
import type { Config } from '../pipeline/config.js';
import type { Sql } from '../pipeline/postgres.js';
import type { Redis } from '../pipeline/redis.js';
import { spendReport, type SpendReport, type SpendScope } from '../store/spend.js';
import type { TenantTokens } from '../store/tenant-tokens.js';
import { requireTenant, type TenantAuthVariables } from './auth.js';
import { notFound } from './errors.js';

const SCOPES: Record<string, SpendScope> = { agents: 'agent', teams: 'team', customers: 'customer' };

const amount = z.string().meta({ description: 'Decimal amount in the major unit of the currency.' });

/** The reply of `GET /v1/spend/{agents|teams|customers}/{id}` (exported for the OpenAPI description). */
export const spendReply = z.object({
  scope_kind: z.enum(['agent', 'team', 'customer']),
  scope_id: z.string(),
  customer_id: z.string(),
  period_start: z.string(),
  period_end: z.string(),
  as_of: z.string(),
  spend: z
    .array(
      z.object({
        currency: z.string(),
        total: amount,
        events: z.number(),
        by_dimension: z.record(z.string(), amount).meta({ description: 'Per pricing dimension of the rate plan (tool, input_tokens, output_tokens, duration, ...).' }),
        by_tool: z.array(z.object({ tool: z.string(), amount })).meta({ description: 'The 20 most expensive tools.' }),
      }),
    )
    .meta({ description: 'Ledgered spend this calendar month (UTC), per currency.' }),
  projected: z
    .array(z.object({ currency: z.string(), end_of_period: amount, recent: amount, recent_window_seconds: z.number() }))
    .meta({ description: 'Spend so far plus the rate of the recent window (the last 6 hours, or the period so far) carried to the end of the period.' }),
  caps: z.array(
    z.object({
      cap_id: z.string(),
      action: z.enum(['pause', 'alert']),
      period: z.string(),
      period_key: z.string().nullable(),
      limit: amount,
      spent: amount.nullable().meta({ description: 'The running total cap-check enforces; null for per-session caps (see sessions).' }),
      reserved: amount.nullable(),
      remaining: amount.nullable(),
      resets_at: z.string().nullable(),
      paused: z.boolean().meta({ description: 'This cap holds the scope paused now.' }),
    }),
  ),
  active_sessions: z.array(
    z.object({ session_id: z.string(), status: z.string(), agent_id: z.string().nullable(), started_at: z.string(), last_event_at: z.string(), tool_calls: z.number(), cost: amount }),
  ),
});

function present(report: SpendReport): z.input<typeof spendReply> {
  return {
    scope_kind: report.scope,
    scope_id: report.id,
    customer_id: report.customerId,
    period_start: new Date(report.periodStart).toISOString(),
    period_end: new Date(report.periodEnd).toISOString(),
    as_of: new Date(report.at).toISOString(),
    spend: report.spend.map((s) => ({
      currency: s.currency,
      total: formatNano(s.totalNano),
      events: s.events,
      by_dimension: Object.fromEntries(Object.entries(s.byDimension).map(([k, v]) => [k, formatNano(v)])),
      by_tool: s.byTool.map((t) => ({ tool: t.tool, amount: formatNano(t.nano) })),
    })),
    projected: report.projected.map((p) => ({
      currency: p.currency,
      end_of_period: formatNano(p.endOfPeriodNano),
      recent: formatNano(p.recentNano),
      recent_window_seconds: Math.round(p.recentWindowMs / 1000),
    })),
    caps: report.caps.map((c) => ({
      cap_id: c.cap.id,
      action: c.cap.action,
      period: c.cap.period,
      ...(c.cap.windowSeconds ? { window_seconds: c.cap.windowSeconds } : {}),
      period_key: c.periodKey,
      limit: formatNano(c.cap.limitNano),
      spent: c.spentNano === null ? null : formatNano(c.spentNano),
      reserved: c.reservedNano === null ? null : formatNano(c.reservedNano),
      remaining: c.remainingNano === null ? null : formatNano(c.remainingNano),
      resets_at: c.resetsAt === null ? null : new Date(c.resetsAt).toISOString(),
      paused: c.paused,
    })),
    active_sessions: report.sessions.map((s) => ({
      session_id: s.sessionId,
      status: s.status,
      agent_id: s.agentId,
      started_at: s.startedAt.toISOString(),
      last_event_at: s.lastEventAt.toISOString(),
      tool_calls: s.toolCalls,
      cost: formatNano(s.costNano),
    })),
  };
}

/**
 * `GET /v1/spend/agents/{id}`, `/v1/spend/teams/{id}`, `/v1/spend/customers/{id}`: where the
 * money is going this period, live (see store/spend.ts).
 */
export function createSpendRoutes(deps: { config: Config; sql: Sql; redis: Redis; tokens: TenantTokens }): Hono<{ Variables: TenantAuthVariables }> {
  const app = new Hono<{ Variables: TenantAuthVariables }>();
  const place = { prefix: deps.config.REDIS_PREFIX, partitions: deps.config.PARTITIONS };
  app.get('/v1/spend/:scope{agents|teams|customers}/:id', requireTenant(deps.tokens, 'ingest'), async (c) => {
    const scope = SCOPES[c.req.param('scope')];
    const id = c.req.param('id');
    const report = await spendReport(deps.sql, deps.redis, place, c.get('tenantId'), scope, id);
    if (!report) throw notFound(scope, id);
    return c.json(present(report));
  });
  return app;
}
