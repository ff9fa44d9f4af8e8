import { Hono } from 'hono';
import { z } from 'zod';
import { formatNano, formatScaled } from '../domain/money.js';
import { describeIssues } from '../domain/validation.js';
import type { Sql } from '../pipeline/postgres.js';
import type { TenantTokens } from '../store/tenant-tokens.js';
import { ApiError } from './errors.js';
import { requireTenant, type TenantAuthVariables } from './auth.js';

/** The cogs_ledger column each grouping reads; nothing else reaches the SQL as an identifier. */
const COGS_GROUPS = { tool: 'tool_name', agent: 'agent_id', customer: 'customer_id' } as const;
export type CogsGroup = keyof typeof COGS_GROUPS;

export const cogsQuerySchema = z.strictObject({
  group_by: z.enum(Object.keys(COGS_GROUPS) as [CogsGroup, ...CogsGroup[]]),
  from: z.iso.datetime({ offset: true }).optional(),
  to: z.iso.datetime({ offset: true }).optional(),
});

interface CogsReportRow {
  /** The tool name, agent id or customer id; null for events without one (an app's calls, by agent). */
  key: string | null;
  currency: string;
  calls: number;
  /** Calls no cost model covered (recorded at cogs 0): their margin is the whole price. */
  uncosted_calls: number;
  price: string;
  cogs: string;
  margin: string;
  /** margin / price x 100, two decimals, half away from zero; null when the price is 0. */
  margin_pct: string | null;
}

/** part / whole x 100 to two decimals, rounded half away from zero, exactly. */
export function percentOf(part: bigint, whole: bigint): string | null {
  if (whole === 0n) return null;
  const scaled = part * 10_000n;
  let quotient = scaled / whole;
  const remainder = scaled % whole;
  const abs = (v: bigint) => (v < 0n ? -v : v);
  if (2n * abs(remainder) >= abs(whole)) quotient += (scaled < 0n) === (whole < 0n) ? 1n : -1n;
  return formatScaled(quotient, 2, 2);
}

/**
 * The tenant's COGS and margin per tool, agent or customer over a recorded-time range
 * (from inclusive, to exclusive, both optional), per currency.
 */
async function cogsReport(sql: Sql, tenantId: string, group: CogsGroup, range: { from?: Date; to?: Date } = {}): Promise<CogsReportRow[]> {
  const column = COGS_GROUPS[group];
  const rows = await sql<{ key: string | null; currency: string; calls: string; uncosted: string; price: string; cogs: string; margin: string }[]>`
    SELECT ${sql(column)} AS key, currency, count(*) AS calls, count(*) FILTER (WHERE cost_model_id IS NULL) AS uncosted,
           sum(price_nano) AS price, sum(cogs_nano) AS cogs, sum(margin_nano) AS margin
    FROM cogs_ledger
    WHERE tenant_id = ${tenantId}
      ${range.from ? sql`AND recorded_at >= ${range.from}` : sql``}
      ${range.to ? sql`AND recorded_at < ${range.to}` : sql``}
    GROUP BY 1, 2
    ORDER BY sum(cogs_nano) DESC, sum(price_nano) DESC, 1 NULLS LAST, 2`;
  return rows.map((row) => {
    const price = BigInt(row.price);
    const margin = BigInt(row.margin);
    return {
      key: row.key,
      currency: row.currency,
      calls: Number(row.calls),
      uncosted_calls: Number(row.uncosted),
      price: formatNano(price),
      cogs: formatNano(BigInt(row.cogs)),
      margin: formatNano(margin),
      margin_pct: percentOf(margin, price),
    };
  });
}

/**
 * `GET /v1/cogs?group_by=tool|agent|customer&from=<ISO>&to=<ISO>`: what the tenant's calls cost
 * its providers against what they were billed, from cogs_ledger. Amounts are decimal strings in
 * the currency's major unit, exact (summed as integers of nano-units, never floats).
 */
export function createCogsRoutes(deps: { sql: Sql; tokens: TenantTokens }): Hono<{ Variables: TenantAuthVariables }> {
  const { sql, tokens } = deps;
  const app = new Hono<{ Variables: TenantAuthVariables }>();
  app.get('/v1/cogs', requireTenant(tokens, 'ingest'), async (c) => {
    const parsed = cogsQuerySchema.safeParse(c.req.query());
    if (!parsed.success) {
      throw new ApiError(400, 'validation_failed', 'invalid query parameters', describeIssues(parsed.error));
    }
    const { group_by, from, to } = parsed.data;
    const range = { from: from ? new Date(from) : undefined, to: to ? new Date(to) : undefined };
    if (range.from && range.to && range.from >= range.to) {
      throw new ApiError(400, 'validation_failed', 'from must be before to', [{ path: 'from', message: 'must be before to' }]);
    }
    const rows = await cogsReport(sql, c.get('tenantId'), group_by, range);
    return c.json({ group_by, from: range.from?.toISOString() ?? null, to: range.to?.toISOString() ?? null, rows });
  });
  return app;
}
