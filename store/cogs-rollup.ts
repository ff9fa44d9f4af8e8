import type postgres from 'postgres';
import type { Sql } from '../pipeline/postgres.js';

/**
 * COGS kept as sums (migration 090, table cogs_rollup): per tenant, hour (UTC), currency and
 * key of each dimension /v1/cogs groups by. The cogs stage and the corrections add to them;
 * /v1/cogs, the reconcile job and the console read them. Per-event COGS is in ClickHouse.
 */
const COGS_DIMENSIONS = ['tool', 'agent', 'customer'] as const;
export type CogsDimension = (typeof COGS_DIMENSIONS)[number];

const HOUR_MS = 3_600_000;

/** What one cogs row (a usage event, or a correction row) adds: one event, its price and its COGS. */
export interface CogsFact {
  tenantId: string;
  recordedAt: number;
  currency: string;
  toolName: string | null;
  agentId: string | null;
  customerId: string;
  withSession: boolean;
  /** A cost model covered it (cost_model_id not null). */
  costed: boolean;
  priceNano: bigint;
  cogsNano: bigint;
}

interface Sum {
  tenantId: string;
  dimension: CogsDimension;
  hour: number;
  currency: string;
  key: string | null;
  withSession: boolean;
  costed: boolean;
  events: bigint;
  price: bigint;
  cogs: bigint;
}

/** The facts summed per row of cogs_rollup (three per fact: one per dimension). */
function sumCogs(facts: Iterable<CogsFact>): Sum[] {
  const sums = new Map<string, Sum>();
  for (const f of facts) {
    const hour = Math.floor(f.recordedAt / HOUR_MS) * HOUR_MS;
    const keys: [CogsDimension, string | null][] = [
      ['tool', f.toolName],
      ['agent', f.agentId],
      ['customer', f.customerId],
    ];
    for (const [dimension, key] of keys) {
      // \u0001 marks a null key, which no text key can equal.
      const id = `${f.tenantId}\u0000${dimension}\u0000${hour}\u0000${f.currency}\u0000${key ?? '\u0001'}\u0000${f.withSession ? 1 : 0}${f.costed ? 1 : 0}`;
      const sum = sums.get(id);
      if (sum) {
        sum.events += 1n;
        sum.price += f.priceNano;
        sum.cogs += f.cogsNano;
      } else {
        sums.set(id, {
          tenantId: f.tenantId,
          dimension,
          hour,
          currency: f.currency,
          key,
          withSession: f.withSession,
          costed: f.costed,
          events: 1n,
          price: f.priceNano,
          cogs: f.cogsNano,
        });
      }
    }
  }
  // One order for every writer: two transactions adding to the same rows never deadlock.
  return [...sums.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, s]) => s);
}

/** Adds the facts to cogs_rollup in the caller's transaction: one upsert for all of them. */
export async function addCogs(tx: postgres.TransactionSql, facts: Iterable<CogsFact>): Promise<number> {
  const sums = sumCogs(facts);
  if (sums.length === 0) return 0;
  await tx`
    INSERT INTO cogs_rollup (tenant_id, dimension, hour, currency, key, with_session, costed, events, price_nano, cogs_nano)
    SELECT * FROM unnest(
      ${sums.map((s) => s.tenantId)}::text[], ${sums.map((s) => s.dimension)}::text[],
      ${sums.map((s) => new Date(s.hour).toISOString())}::text[]::timestamptz[], ${sums.map((s) => s.currency)}::text[],
      ${sums.map((s) => s.key)}::text[], ${sums.map((s) => (s.withSession ? 't' : 'f'))}::text[]::boolean[], ${sums.map((s) => (s.costed ? 't' : 'f'))}::text[]::boolean[],
      ${sums.map((s) => s.events.toString())}::text[]::bigint[], ${sums.map((s) => s.price.toString())}::text[]::numeric[],
      ${sums.map((s) => s.cogs.toString())}::text[]::numeric[])
    ON CONFLICT (tenant_id, dimension, hour, currency, key, with_session, costed) DO UPDATE SET
      events = cogs_rollup.events + excluded.events,
      price_nano = cogs_rollup.price_nano + excluded.price_nano,
      cogs_nano = cogs_rollup.cogs_nano + excluded.cogs_nano,
      updated_at = now()`;
  return sums.length;
}

/** True when a time falls on a whole hour (UTC): the finest range the sums answer exactly. */
export function isWholeHour(at: Date): boolean {
  return at.getTime() % HOUR_MS === 0;
}

export interface CogsTotals {
  key: string | null;
  currency: string;
  events: bigint;
  uncosted: bigint;
  price: bigint;
  cogs: bigint;
}

/**
 * A tenant's sums per key of one dimension and currency over whole hours [from, to) (both
 * optional), largest COGS first, then largest price, then key (nulls last) and currency.
 */
export async function cogsTotals(sql: Sql, tenantId: string, dimension: CogsDimension, range: { from?: Date; to?: Date } = {}): Promise<CogsTotals[]> {
  for (const at of [range.from, range.to]) {
    if (at && !isWholeHour(at)) throw new Error(`COGS are kept per hour: ${at.toISOString()} is not a whole hour`);
  }
  const rows = await sql<{ key: string | null; currency: string; events: string; uncosted: string; price: string; cogs: string }[]>`
    SELECT key, currency, sum(events)::text AS events, coalesce(sum(events) FILTER (WHERE NOT costed), 0)::text AS uncosted,
           sum(price_nano)::text AS price, sum(cogs_nano)::text AS cogs
    FROM cogs_rollup
    WHERE tenant_id = ${tenantId} AND dimension = ${dimension}
      ${range.from ? sql`AND hour >= ${range.from}` : sql``}
      ${range.to ? sql`AND hour < ${range.to}` : sql``}
    GROUP BY 1, 2
    ORDER BY sum(cogs_nano) DESC, sum(price_nano) DESC, 1 NULLS LAST, 2`;
  return rows.map((r) => ({
    key: r.key,
    currency: r.currency,
    events: BigInt(r.events),
    uncosted: BigInt(r.uncosted),
    price: BigInt(r.price),
    cogs: BigInt(r.cogs),
  }));
}

/** COGS per tenant and day (UTC) over [from, to), split by whether the events named a session (the reconcile job). */
export async function cogsByDay(
  sql: Sql,
  range: { from: Date; to: Date; tenantId?: string },
): Promise<{ tenantId: string; day: string; withSession: boolean; cogs: bigint }[]> {
  const tenant = range.tenantId === undefined ? sql`` : sql`AND tenant_id = ${range.tenantId}`;
  const rows = await sql<{ tenant_id: string; day: string; with_session: boolean; cogs: string }[]>`
    SELECT tenant_id, to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, with_session, sum(cogs_nano)::text AS cogs
    FROM cogs_rollup WHERE dimension = 'customer' AND hour >= ${range.from} AND hour < ${range.to} ${tenant}
    GROUP BY 1, 2, 3`;
  return rows.map((r) => ({ tenantId: r.tenant_id, day: r.day, withSession: r.with_session, cogs: BigInt(r.cogs) }));
}
