import type { Redis } from 'ioredis';
import { collectStatus, discoverTopology, type StageStatus, type RejectedStatus } from '../../pipeline/status.js';
import { ANALYTICS_QUERIES, runAnalyticsQuery, type AnalyticsQuery, type AnalyticsRow } from '../../store/analytics-queries.js';
import type { ClickHouseClient } from '../../store/clickhouse.js';
import { capStatuses, consoleSessions, tenantDirectory, type CapStatus, type Directory, type SessionView } from '../../store/console.js';
import { pausesNotLifted, type PauseView, type RedisPlace } from '../../store/pause-flags.js';
import type { Sql } from '../../store/postgres.js';
import { billingPeriod } from '../../store/subscriptions.js';

export interface ConsoleStores {
  sql: Sql;
  redis: Redis;
  clickhouse: ClickHouseClient;
  place: RedisPlace;
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
function withCaps(rows: AnalyticsRow[], keyOf: (row: AnalyticsRow) => string, scopeKinds: CapStatus['scopeKind'][], caps: CapStatus[]): SpendRow[] {
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
  const [directory, caps, totals, customers, teams, agents, chartRows, topByRevenue, topByMargin, sessions, pauses, health] = await Promise.all([
    tenantDirectory(sql, tenantId),
    capStatuses(sql, redis, place, tenantId, now),
    run(ANALYTICS_QUERIES.totals),
    run(ANALYTICS_QUERIES.spendByCustomer),
    run(ANALYTICS_QUERIES.spendByTeam),
    run(ANALYTICS_QUERIES.spendByAgent),
    run(chartSpec.query, { tenantId, from: chartFrom, to: chartTo }),
    run(ANALYTICS_QUERIES.topToolsByRevenue),
    run(ANALYTICS_QUERIES.topToolsByMargin),
    consoleSessions(sql, tenantId, { open: 25, recent: 15 }),
    pausesNotLifted(sql, redis, place, tenantId),
    pipelineHealth(redis, place, tenantId),
  ]);
  return {
    tenantId,
    now,
    period,
    range,
    directory,
    totals,
    customers: withCaps(customers, (r) => r.customer_id as string, ['customer'], caps),
    teams: withCaps(teams, (r) => r.team_id as string, ['team'], caps),
    agents: withCaps(agents, (r) => (r.agent_id as string) || (r.app_id as string), ['agent'], caps),
    chart: { stepMs: chartSpec.stepMs, from: chartFrom, to: chartTo, rows: chartRows },
    topByRevenue,
    topByMargin,
    sessions,
    pauses,
    health,
  };
}

/** Lag, pending entries, consumers and dead letters per stage (the shared pipeline), and this tenant's rejected events by code. */
export async function pipelineHealth(redis: Redis, place: RedisPlace, tenantId: string): Promise<Overview['health']> {
  const topology = await discoverTopology(redis, place.prefix);
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
