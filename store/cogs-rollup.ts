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

/** The sums of one tenant, hour, currency and (withSession, costed): one map per dimension, by key. */
interface SumGroup {
  tenantId: string;
  hour: number;
  currency: string;
  withSession: boolean;
  costed: boolean;
  byDimension: [Map<string | null, Sum>, Map<string | null, Sum>, Map<string | null, Sum>];
}

/**
 * Cogs rows summed per row of cogs_rollup as they come (three per row: one per dimension):
 * tenant -> currency -> hour -> (withSession, costed) -> dimension -> key. writeCogs writes them.
 */
export class CogsSums {
  private readonly byTenant = new Map<string, Map<string, Map<number, (SumGroup | undefined)[]>>>();
  /** The group of the row before: consecutive rows mostly share it. */
  private last: SumGroup | undefined;
  size = 0;

  /** Adds one row: its price and COGS to the sums of its tool, agent and customer. */
  add(
    tenantId: string,
    recordedAt: number,
    currency: string,
    toolName: string | null,
    agentId: string | null,
    customerId: string,
    withSession: boolean,
    costed: boolean,
    priceNano: bigint,
    cogsNano: bigint,
  ): void {
    const hour = Math.floor(recordedAt / HOUR_MS) * HOUR_MS;
    let group = this.last;
    if (!group || group.tenantId !== tenantId || group.hour !== hour || group.currency !== currency || group.withSession !== withSession || group.costed !== costed) {
      group = this.group(tenantId, hour, currency, withSession, costed);
      this.last = group;
    }
    this.addTo(group, 0, toolName, priceNano, cogsNano);
    this.addTo(group, 1, agentId, priceNano, cogsNano);
    this.addTo(group, 2, customerId, priceNano, cogsNano);
  }

  addFact(f: CogsFact): void {
    this.add(f.tenantId, f.recordedAt, f.currency, f.toolName, f.agentId, f.customerId, f.withSession, f.costed, f.priceNano, f.cogsNano);
  }

  private group(tenantId: string, hour: number, currency: string, withSession: boolean, costed: boolean): SumGroup {
    let byCurrency = this.byTenant.get(tenantId);
    if (!byCurrency) this.byTenant.set(tenantId, (byCurrency = new Map()));
    let byHour = byCurrency.get(currency);
    if (!byHour) byCurrency.set(currency, (byHour = new Map()));
    let groups = byHour.get(hour);
    if (!groups) byHour.set(hour, (groups = [undefined, undefined, undefined, undefined]));
    const flags = (withSession ? 2 : 0) + (costed ? 1 : 0);
    let group = groups[flags];
    if (!group) groups[flags] = group = { tenantId, hour, currency, withSession, costed, byDimension: [new Map(), new Map(), new Map()] };
    return group;
  }

  private addTo(group: SumGroup, d: 0 | 1 | 2, key: string | null, priceNano: bigint, cogsNano: bigint): void {
    const byKey = group.byDimension[d];
    const sum = byKey.get(key);
    if (sum) {
      sum.events += 1n;
      if (priceNano !== 0n) sum.price += priceNano;
      if (cogsNano !== 0n) sum.cogs += cogsNano;
      return;
    }
    const { tenantId, hour, currency, withSession, costed } = group;
    byKey.set(key, { tenantId, dimension: COGS_DIMENSIONS[d], hour, currency, key, withSession, costed, events: 1n, price: priceNano, cogs: cogsNano });
    this.size++;
  }

  /**
   * The sums in one order for every writer (two transactions adding to the same rows never
   * deadlock): by tenant, dimension, hour, currency, key (null first), withSession, costed, as
   * the text of those joined by \u0000 orders them.
   */
  sorted(): Sum[] {
    const all: { id: string; sum: Sum }[] = [];
    for (const byCurrency of this.byTenant.values()) {
      for (const byHour of byCurrency.values()) {
        for (const groups of byHour.values()) {
          for (const group of groups) {
            if (!group) continue;
            for (const byKey of group.byDimension) for (const sum of byKey.values()) all.push({ id: sumId(sum), sum });
          }
        }
      }
    }
    return all.sort(({ id: a }, { id: b }) => (a < b ? -1 : a > b ? 1 : 0)).map(({ sum }) => sum);
  }
}

// \u0001 marks a null key, which no text key can equal.
const sumId = (s: Sum) =>
  `${s.tenantId}\u0000${s.dimension}\u0000${s.hour}\u0000${s.currency}\u0000${s.key ?? '\u0001'}\u0000${s.withSession ? 1 : 0}${s.costed ? 1 : 0}`;

/** Adds the facts to cogs_rollup in the caller's transaction: one upsert for all of them. */
export async function addCogs(tx: postgres.TransactionSql, facts: Iterable<CogsFact>): Promise<number> {
  const sums = new CogsSums();
  for (const f of facts) sums.addFact(f);
  return writeCogs(tx, sums);
}

/** Adds the sums to cogs_rollup in the caller's transaction: one upsert for all of them; returns the rows written. */
export async function writeCogs(tx: postgres.TransactionSql, cogs: CogsSums): Promise<number> {
  if (cogs.size === 0) return 0;
  const sums = cogs.sorted();
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
