import { parseNano } from '../domain/money.js';
import { chString, type ClickHouseClient } from './clickhouse.js';
import type { Sql } from '../pipeline/postgres.js';
import { unescapeTsv } from './analytics-queries.js';
import { cogsByDay } from './cogs-rollup.js';

/**
 * ClickHouse against the ledger, per tenant and day (UTC): event and call counts, cost and COGS
 * of every ClickHouse table that carries them, next to usage_ledger (events, calls, cost),
 * the COGS sums of cogs_rollup (COGS) and, for the session summary, the ledger's events that name a session.
 */
const FIGURES = ['events', 'calls', 'cost_nano', 'cogs_nano'] as const;
type Figure = (typeof FIGURES)[number];
type Figures = Record<Figure, bigint>;

const SOURCES = ['invocations', 'usage_daily', 'usage_hourly', 'spend_daily', 'tool_daily', 'session_summary'] as const;
type Source = (typeof SOURCES)[number];

export interface Difference {
  tenantId: string;
  day: string;
  source: Source;
  figure: Figure;
  ledger: bigint;
  clickhouse: bigint;
}

export interface ReconcileOptions {
  /** First and last day, inclusive, 'YYYY-MM-DD' (UTC). */
  from: string;
  to: string;
  tenantId?: string;
}

export interface ReconcileResult {
  /** (tenant, day) pairs seen on either side. */
  compared: number;
  differences: Difference[];
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;
const ZERO: Figures = { events: 0n, calls: 0n, cost_nano: 0n, cogs_nano: 0n };
const key = (tenantId: string, day: string) => `${tenantId}\u0000${day}`;

/** What each ClickHouse source is summed from; the session summary only holds events with a session. */
const CLICKHOUSE_SQL: Record<Source, (where: (dayColumn: string) => string) => string> = {
  invocations: (where) => `SELECT tenant_id, toString(recorded_date) AS d, count() AS events, countIf(event_type NOT LIKE 'session.%') AS calls,
      toString(sum(toDecimal128(cost_nano, 9) / 1000000000)) AS cost, toString(sum(toDecimal128(cogs_nano, 9) / 1000000000)) AS cogs
    FROM invocations FINAL WHERE ${where('recorded_date')} GROUP BY tenant_id, d`,
  usage_daily: (where) => `SELECT tenant_id, toString(day) AS d, sum(events) AS events, sum(calls) AS calls, toString(sum(cost)) AS cost, toString(sum(cogs)) AS cogs
    FROM usage_daily WHERE ${where('day')} GROUP BY tenant_id, d`,
  spend_daily: (where) => `SELECT tenant_id, toString(day) AS d, sum(events) AS events, sum(calls) AS calls, toString(sum(cost)) AS cost, toString(sum(cogs)) AS cogs
    FROM spend_daily WHERE ${where('day')} GROUP BY tenant_id, d`,
  tool_daily: (where) => `SELECT tenant_id, toString(day) AS d, sum(events) AS events, sum(calls) AS calls, toString(sum(cost)) AS cost, toString(sum(cogs)) AS cogs
    FROM tool_daily WHERE ${where('day')} GROUP BY tenant_id, d`,
  usage_hourly: (where) => `SELECT tenant_id, toString(toDate(hour)) AS d, sum(events) AS events, sum(calls) AS calls, toString(sum(cost)) AS cost, toString(sum(cogs)) AS cogs
    FROM usage_hourly WHERE ${where('toDate(hour)')} GROUP BY tenant_id, d`,
  session_summary: (where) => `SELECT tenant_id, toString(day) AS d, sumMerge(events) AS events, sumMerge(calls) AS calls, toString(sumMerge(cost)) AS cost, toString(sumMerge(cogs)) AS cogs
    FROM session_summary WHERE ${where('day')} GROUP BY tenant_id, d`,
};

async function clickhouseFigures(clickhouse: ClickHouseClient, source: Source, options: ReconcileOptions): Promise<Map<string, Figures>> {
  const where = (dayColumn: string) =>
    [`${dayColumn} >= toDate(${chString(options.from)})`, `${dayColumn} <= toDate(${chString(options.to)})`]
      .concat(options.tenantId === undefined ? [] : [`tenant_id = ${chString(options.tenantId)}`])
      .join(' AND ');
  const result = await clickhouse.query({ query: CLICKHOUSE_SQL[source](where), format: 'TabSeparated' });
  const out = new Map<string, Figures>();
  for (const line of (await result.text()).split('\n')) {
    if (!line) continue;
    const [tenantId, day, events, calls, cost, cogs] = line.split('\t').map(unescapeTsv);
    out.set(key(tenantId, day), { events: BigInt(events), calls: BigInt(calls), cost_nano: parseNano(cost), cogs_nano: parseNano(cogs) });
  }
  return out;
}

async function ledgerFigures(sql: Sql, options: ReconcileOptions): Promise<{ all: Map<string, Figures>; sessions: Map<string, Figures> }> {
  const from = new Date(`${options.from}T00:00:00Z`);
  const to = new Date(Date.parse(`${options.to}T00:00:00Z`) + 86_400_000);
  const tenant = options.tenantId === undefined ? sql`` : sql`AND tenant_id = ${options.tenantId}`;
  const [usage, cogs] = await Promise.all([
    sql<{ tenant_id: string; day: string; with_session: boolean; events: string; calls: string; cost: string }[]>`
      SELECT tenant_id, to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, session_id IS NOT NULL AND session_id <> '' AS with_session,
             count(*) AS events, count(*) FILTER (WHERE event_type NOT LIKE 'session.%') AS calls, sum(cost_nano)::text AS cost
      FROM usage_ledger WHERE recorded_at >= ${from} AND recorded_at < ${to} ${tenant}
      GROUP BY 1, 2, 3`,
    cogsByDay(sql, { from, to, tenantId: options.tenantId }),
  ]);
  const all = new Map<string, Figures>();
  const sessions = new Map<string, Figures>();
  const add = (into: Map<string, Figures>, k: string, part: Partial<Figures>) => {
    const current = into.get(k) ?? { ...ZERO };
    for (const [name, value] of Object.entries(part) as [Figure, bigint][]) current[name] += value;
    into.set(k, current);
  };
  for (const row of usage) {
    const part = { events: BigInt(row.events), calls: BigInt(row.calls), cost_nano: BigInt(row.cost) };
    add(all, key(row.tenant_id, row.day), part);
    if (row.with_session) add(sessions, key(row.tenant_id, row.day), part);
  }
  for (const row of cogs) {
    add(all, key(row.tenantId, row.day), { cogs_nano: row.cogs });
    if (row.withSession) add(sessions, key(row.tenantId, row.day), { cogs_nano: row.cogs });
  }
  return { all, sessions };
}

/** Every figure of every source that differs from the ledger, per tenant and day; an empty list when all agree. */
export async function reconcile(sql: Sql, clickhouse: ClickHouseClient, options: ReconcileOptions): Promise<ReconcileResult> {
  if (!DAY.test(options.from) || !DAY.test(options.to)) throw new Error(`days are YYYY-MM-DD, got ${options.from} and ${options.to}`);
  const [ledger, ...sides] = await Promise.all([ledgerFigures(sql, options), ...SOURCES.map((source) => clickhouseFigures(clickhouse, source, options))]);
  const keys = new Set([...ledger.all.keys(), ...sides.flatMap((side) => [...side.keys()])]);
  const differences: Difference[] = [];
  for (const k of [...keys].sort()) {
    const [tenantId, day] = k.split('\u0000');
    SOURCES.forEach((source, i) => {
      const expected = (source === 'session_summary' ? ledger.sessions : ledger.all).get(k) ?? ZERO;
      const found = sides[i].get(k) ?? ZERO;
      for (const figure of FIGURES) {
        if (expected[figure] !== found[figure]) differences.push({ tenantId, day, source, figure, ledger: expected[figure], clickhouse: found[figure] });
      }
    });
  }
  return { compared: keys.size, differences };
}

/**
 * Rebuilds the rollups of one tenant and day from invocations (which replaces duplicates by
 * event id): deletes the day's rows of every rollup (waiting
 * for the mutations), then inserts the day's events into invocations once more so that the
 * materialized views count each exactly once. For a past day, or with analytics-dispatch
 * stopped: an event inserted for that day while this runs would be counted twice.
 */
export async function repairRollups(clickhouse: ClickHouseClient, tenantId: string, day: string): Promise<void> {
  if (!DAY.test(day)) throw new Error(`day is YYYY-MM-DD, got ${day}`);
  const tenant = chString(tenantId);
  const date = `toDate(${chString(day)})`;
  const deletes = [
    `ALTER TABLE usage_daily DELETE WHERE tenant_id = ${tenant} AND day = ${date}`,
    `ALTER TABLE usage_hourly DELETE WHERE tenant_id = ${tenant} AND toDate(hour) = ${date}`,
    `ALTER TABLE spend_daily DELETE WHERE tenant_id = ${tenant} AND day = ${date}`,
    `ALTER TABLE tool_daily DELETE WHERE tenant_id = ${tenant} AND day = ${date}`,
    `ALTER TABLE session_summary DELETE WHERE tenant_id = ${tenant} AND day = ${date}`,
  ];
  for (const query of deletes) await clickhouse.command({ query });
  await mutationsDone(clickhouse, 120_000, 'the rollups of that day are still being deleted after 2 minutes');
  await clickhouse.command({ query: `INSERT INTO invocations SELECT * FROM invocations FINAL WHERE tenant_id = ${tenant} AND recorded_date = ${date}` });
}

/** Waits until the database's mutations (ALTER TABLE ... DELETE) are done; fails with `timeoutMessage` after `timeoutMs`. */
export async function mutationsDone(clickhouse: ClickHouseClient, timeoutMs: number, timeoutMessage: string): Promise<void> {
  for (let waited = 0; ; waited += 100) {
    const pending = await clickhouse.query({
      query: `SELECT count() AS n FROM system.mutations WHERE database = currentDatabase() AND is_done = 0`,
      format: 'JSONEachRow',
    });
    if (Number((await pending.json<{ n: string }>())[0].n) === 0) return;
    if (waited > timeoutMs) throw new Error(timeoutMessage);
    await new Promise((r) => setTimeout(r, 100));
  }
}
