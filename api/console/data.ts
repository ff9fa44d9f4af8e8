import type { Redis } from '../../pipeline/redis.js';
import type { Topology } from '../../pipeline/stage.js';
import { collectStatus, discoverTopology, type StageStatus, type RejectedStatus } from '../../store/pipeline-status.js';
import { ANALYTICS_QUERIES, runAnalyticsQuery, SPEND_ROW_LIMIT, type AnalyticsQuery, type AnalyticsRow } from '../../store/analytics-queries.js';
import type { ClickHouseClient } from '../../store/clickhouse.js';
import { capStatuses, consoleSessions, tenantDirectory, type CapStatus, type Directory, type SessionView } from '../../store/console.js';
import { pausesNotLifted, type PauseView, type RedisPlace } from '../../store/pause-flags.js';
import type { Sql } from '../../pipeline/postgres.js';
import { billingPeriod } from '../../store/subscriptions.js';

export interface ConsoleStores {
  sql: Sql;
  redis: Redis;
  clickhouse: ClickHouseClient;
  place: RedisPlace;
  /** The tenant's names (tenantDirectory), remembered for a few seconds. */
  directory(tenantId: string): Promise<Directory>;
}

/** tenantDirectory, each tenant's kept for `ttlMs`: names change rarely, and every page labels hundreds of ids. */
export function cachedDirectory(sql: Sql, ttlMs = 15_000): (tenantId: string) => Promise<Directory> {
  const cache = new Map<string, { at: number; directory: Promise<Directory> }>();
  return (tenantId) => {
    const hit = cache.get(tenantId);
    if (hit && Date.now() - hit.at < ttlMs) return hit.directory;
    if (cache.size > 1000) cache.clear();
    const directory = tenantDirectory(sql, tenantId);
    cache.set(tenantId, { at: Date.now(), directory });
    directory.catch(() => cache.delete(tenantId));
    return directory;
  };
}

export interface SpendList {
  kind: SpendKind;
  directory: Directory;
  rows: SpendRow[];
  page: number;
  pages: number;
  currency: string;
}

/** Every customer, team or agent with spend this month (or a cap), biggest first, one page of them. */
export async function loadSpendList(stores: ConsoleStores, tenantId: string, kind: SpendKind, page: number, now = Date.now()): Promise<SpendList> {
  const spec = SPEND_KINDS[kind];
  const [directory, caps, rows] = await Promise.all([
    stores.directory(tenantId),
    capStatuses(stores.sql, stores.redis, stores.place, tenantId, now),
    runAnalyticsQuery(stores.clickhouse, spec.query, { tenantId, from: billingPeriod(now).start, to: now + 1000 }),
  ]);
  const all = withCaps(rows, spec.keyOf, spec.scopes, caps);
  const pages = Math.max(1, Math.ceil(all.length / PAGE_ROWS));
  const current = Math.min(Math.max(1, page), pages);
  return { kind, directory, rows: all.slice((current - 1) * PAGE_ROWS, current * PAGE_ROWS), page: current, pages, currency: all.find((r) => r.currency)?.currency ?? 'USD' };
}

export const CHART_RANGES = {
  '24h': { hours: 24, query: ANALYTICS_QUERIES.revenueHourly, stepMs: 3_600_000 },
  '30d': { hours: 30 * 24, query: ANALYTICS_QUERIES.revenueDaily, stepMs: 86_400_000 },
} as const;
export type ChartRange = keyof typeof CHART_RANGES;

export interface SpendRow {
  key: string;
  currency: string;
  calls: bigint;
  errors: bigint;
  revenue: bigint;
  margin: bigint;
  caps: CapStatus[];
}

export const SPEND_KINDS = {
  customer: { query: ANALYTICS_QUERIES.spendByCustomer, scopes: ['customer'], keyOf: (r: AnalyticsRow) => r.customer_id as string },
  team: { query: ANALYTICS_QUERIES.spendByTeam, scopes: ['team'], keyOf: (r: AnalyticsRow) => r.team_id as string },
  agent: { query: ANALYTICS_QUERIES.spendByAgent, scopes: ['agent'], keyOf: (r: AnalyticsRow) => (r.agent_id as string) || (r.app_id as string) },
} as const satisfies Record<string, { query: AnalyticsQuery; scopes: CapStatus['scopeKind'][]; keyOf: (r: AnalyticsRow) => string }>;
export type SpendKind = keyof typeof SPEND_KINDS;

/** The overview shows the biggest spenders of each kind; the spend pages list them all, this many a page. */
export const OVERVIEW_ROWS = 12;
const PAGE_ROWS = 50;

export interface Overview {
  tenantId: string;
  now: number;
  period: { start: number; end: number };
  range: ChartRange;
  directory: Directory;
  totals: AnalyticsRow[];
  customers: SpendRow[];
  teams: SpendRow[];
  agents: SpendRow[];
  chart: { stepMs: number; from: number; to: number; rows: AnalyticsRow[] };
  topByRevenue: AnalyticsRow[];
  topByMargin: AnalyticsRow[];
  sessions: { open: SessionView[]; recent: SessionView[] };
  pauses: PauseView[];
  health: { stages: StageStatus[]; rejected: RejectedStatus };
}

/** Rows of a spend query, with the caps of each scope (scopes with a cap but no spend yet included, at 0). */
function withCaps(rows: AnalyticsRow[], keyOf: (row: AnalyticsRow) => string, scopeKinds: readonly CapStatus['scopeKind'][], caps: CapStatus[]): SpendRow[] {
  const byScope = new Map<string, CapStatus[]>();
  for (const cap of caps) {
    if (!scopeKinds.includes(cap.scopeKind)) continue;
    byScope.set(cap.scopeId, [...(byScope.get(cap.scopeId) ?? []), cap]);
  }
  const out: SpendRow[] = rows.map((row) => ({
    key: keyOf(row),
    currency: row.currency as string,
    calls: row.call_count as bigint,
    errors: row.error_count as bigint,
    revenue: row.revenue as bigint,
    margin: row.margin as bigint,
    caps: byScope.get(keyOf(row)) ?? [],
  }));
  const shown = new Set(out.map((r) => r.key));
  for (const [scopeId, scopeCaps] of byScope) {
    if (!shown.has(scopeId)) out.push({ key: scopeId, currency: '', calls: 0n, errors: 0n, revenue: 0n, margin: 0n, caps: scopeCaps });
  }
  return out;
}

/**
 * Everything the overview page shows, read in parallel: month-to-date spend from the ClickHouse
 * rollups, cap totals from Redis (what cap-check enforces), sessions and pauses from PostgreSQL,
 * pipeline health from the streams.
 */
export async function loadOverview(stores: ConsoleStores, tenantId: string, range: ChartRange, now = Date.now()): Promise<Overview> {
  const { sql, redis, clickhouse, place } = stores;
  const period = billingPeriod(now);
  const month = { tenantId, from: period.start, to: now + 1000 };
  const chartSpec = CHART_RANGES[range];
  const chartTo = Math.floor(now / chartSpec.stepMs) * chartSpec.stepMs + chartSpec.stepMs;
  const chartFrom = chartTo - chartSpec.hours * 3_600_000;
  const run = (query: AnalyticsQuery, params = month) => runAnalyticsQuery(clickhouse, query, params);
  const [directory, caps, agents, chartRows, topByRevenue, topByMargin, sessions, pauses, health] = await Promise.all([
    stores.directory(tenantId),
    capStatuses(sql, redis, place, tenantId, now),
    run(SPEND_KINDS.agent.query),
    run(chartSpec.query, { tenantId, from: chartFrom, to: chartTo }),
    run(ANALYTICS_QUERIES.topToolsByRevenue),
    run(ANALYTICS_QUERIES.topToolsByMargin),
    consoleSessions(sql, tenantId, { open: 25, recent: 15 }),
    pausesNotLifted(sql, redis, place, tenantId),
    pipelineHealth(redis, place, tenantId),
  ]);
  // Customers, teams and the totals are sums of the agent rows (exact, in bigint), unless the
  // agent query was cut at its limit: then they are read on their own.
  const complete = agents.length < SPEND_ROW_LIMIT;
  const [customers, teams, totals] = complete
    ? [sumRows(agents, ['currency', 'customer_id']), sumRows(agents, ['currency', 'customer_id', 'team_id']), sumRows(agents, ['currency'])]
    : await Promise.all([run(SPEND_KINDS.customer.query), run(SPEND_KINDS.team.query), run(ANALYTICS_QUERIES.totals)]);
  return {
    tenantId,
    now,
    period,
    range,
    directory,
    totals,
    customers: withCaps(customers, SPEND_KINDS.customer.keyOf, SPEND_KINDS.customer.scopes, caps),
    teams: withCaps(teams, SPEND_KINDS.team.keyOf, SPEND_KINDS.team.scopes, caps),
    agents: withCaps(agents, SPEND_KINDS.agent.keyOf, SPEND_KINDS.agent.scopes, caps),
    chart: { stepMs: chartSpec.stepMs, from: chartFrom, to: chartTo, rows: chartRows },
    topByRevenue,
    topByMargin,
    sessions,
    pauses,
    health,
  };
}

const SUMMED = ['call_count', 'error_count', 'revenue', 'cogs_total', 'margin'] as const;

/** Rows of a spend query added up by some of their keys, biggest revenue first (as the SQL orders them). */
function sumRows(rows: AnalyticsRow[], keys: string[]): AnalyticsRow[] {
  const groups = new Map<string, AnalyticsRow>();
  for (const row of rows) {
    const id = keys.map((k) => row[k]).join('\u0000');
    const into = groups.get(id);
    if (!into) {
      groups.set(id, { ...Object.fromEntries(keys.map((k) => [k, row[k]])), ...Object.fromEntries(SUMMED.map((k) => [k, row[k]])) });
      continue;
    }
    for (const k of SUMMED) into[k] = (into[k] as bigint) + (row[k] as bigint);
  }
  return [...groups.values()].sort((a, b) => {
    const byRevenue = (b.revenue as bigint) - (a.revenue as bigint);
    return byRevenue > 0n ? 1 : byRevenue < 0n ? -1 : keys.map((k) => String(a[k]).localeCompare(String(b[k]))).find((c) => c !== 0) ?? 0;
  });
}

// The consumer groups change only when a stage starts for the first time: looked up again every 10 s.
const TOPOLOGY_TTL_MS = 10_000;
const topologies = new Map<string, { at: number; topology: Topology }>();

/** Lag, pending entries, consumers and dead letters per stage (the shared pipeline), and this tenant's rejected events by code. */
async function pipelineHealth(redis: Redis, place: RedisPlace, tenantId: string): Promise<Overview['health']> {
  let known = topologies.get(place.prefix);
  if (!known || Date.now() - known.at > TOPOLOGY_TTL_MS) topologies.set(place.prefix, (known = { at: Date.now(), topology: await discoverTopology(redis, place.prefix) }));
  const topology = known.topology;
  const { snapshot } = await collectStatus(redis, {
    prefix: place.prefix,
    partitions: place.partitions,
    topology,
    rejectedScan: 2_000,
    rejectedTenant: tenantId,
    scanDeadLetterKeys: false,
  });
  return { stages: snapshot.stages, rejected: snapshot.rejected };
}
