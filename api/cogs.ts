import { Hono } from 'hono';
import { z } from 'zod';
import { formatNano, formatScaled } from '../domain/money.js';
import { END_OF_YEAR_9998, describeIssues } from '../domain/validation.js';
import type { Sql } from '../pipeline/postgres.js';
import { cogsTotals, isWholeHour, type CogsDimension } from '../store/cogs-rollup.js';
import type { TenantTokens } from '../store/tenant-tokens.js';
import { ApiError } from './errors.js';
import { requireTenant, type TenantAuthVariables } from './auth.js';

const COGS_GROUPS = ['tool', 'agent', 'customer'] as const satisfies readonly CogsDimension[];
type CogsGroup = (typeof COGS_GROUPS)[number];

export const cogsQuerySchema = z.strictObject({
  group_by: z.enum(COGS_GROUPS),
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
 * The tenant's COGS and margin per tool, agent or customer over a recorded-time range of whole
 * hours (from inclusive, to exclusive, both optional), per currency, from the hourly sums.
 */
async function cogsReport(sql: Sql, tenantId: string, group: CogsGroup, range: { from?: Date; to?: Date } = {}): Promise<CogsReportRow[]> {
  return (await cogsTotals(sql, tenantId, group, range)).map((row) => {
    const margin = row.price - row.cogs;
    return {
      key: row.key,
      currency: row.currency,
      calls: Number(row.events),
      uncosted_calls: Number(row.uncosted),
      price: formatNano(row.price),
      cogs: formatNano(row.cogs),
      margin: formatNano(margin),
      margin_pct: percentOf(margin, row.price),
    };
  });
}

/**
 * `GET /v1/cogs?group_by=tool|agent|customer&from=<ISO>&to=<ISO>`: what the tenant's calls cost
 * its providers against what they were billed, from the hourly sums of cogs_rollup (so from and
 * to are whole hours, UTC). Amounts are decimal strings in the currency's major unit, exact
 * (summed as integers of nano-units, never floats).
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
    // Within four-digit years, where PostgreSQL and ISO 8601 both hold them.
    const outside = (['from', 'to'] as const).filter((name) => {
      const at = range[name]?.getTime();
      return at !== undefined && (at < 0 || at >= END_OF_YEAR_9998);
    });
    if (outside.length) {
      throw new ApiError(400, 'validation_failed', 'from and to must be between 1970 and 9998', outside.map((path) => ({ path, message: 'must be between 1970 and 9998' })));
    }
    const notWhole = (['from', 'to'] as const).filter((name) => {
      const at = range[name];
      return at !== undefined && !isWholeHour(at);
    });
    if (notWhole.length) {
      throw new ApiError(
        400,
        'validation_failed',
        'from and to must be whole hours (COGS are kept per hour)',
        notWhole.map((path) => ({ path, message: 'must be a whole hour, e.g. 2026-03-01T10:00:00Z' })),
      );
    }
    if (range.from && range.to && range.from >= range.to) {
      throw new ApiError(400, 'validation_failed', 'from must be before to', [{ path: 'from', message: 'must be before to' }]);
    }
    const rows = await cogsReport(sql, c.get('tenantId'), group_by, range);
    return c.json({ group_by, from: range.from?.toISOString() ?? null, to: range.to?.toISOString() ?? null, rows });
  });
  return app;
}
