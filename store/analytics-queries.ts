import { parseNano } from '../domain/money.js';
import { chString, type ClickHouseClient } from './clickhouse.js';

/**
 * The analytics queries of the console and of the Grafana dashboard, in one place: the console
 * runs them with the tenant and time range as literals, the dashboard (ops/grafana/) embeds the
 * same text with Grafana's macros. Every query reads the rollups of
 * schemas/migrations/clickhouse/002_rollups.sql, is scoped by tenant_id (the first column of
 * every sorting key) and bounded by time (the partition key), so none scans a whole table.
 *
 * The console's spend tables, totals and tools read the narrow spend_daily and tool_daily (a few
 * rows per agent or tool and day); hourly figures read usage_hourly.
 *
 * Placeholders: {tenant} the tenant id (a quoted literal), {from} and {to} DateTime
 * expressions bounding [from, to). Daily tables take the whole days the range touches.
 * Output aliases never reuse a column name of the table (ClickHouse would substitute the alias
 * inside other expressions). Money columns are Decimal128(9) amounts in the currency's major unit (exact; Grafana plots
 * them as numbers, the console reads them as text into bigint nano-units).
 */
type ColumnKind = 'text' | 'count' | 'money' | 'time' | 'ratio';

export interface AnalyticsQuery {
  /** Stable id: the console's API names it, the dashboard panel carries it. */
  id: string;
  title: string;
  sql: string;
  columns: Record<string, ColumnKind>;
}

const DAYS = `day >= toDate({from}) AND day <= toDate({to} - 1)`;
const HOURS = `hour >= toStartOfHour({from}) AND hour < {to}`;
const MONEY = `sum(cost) AS revenue, sum(cogs) AS cogs_total, sum(cost) - sum(cogs) AS margin`;
const MONEY_COLUMNS = { revenue: 'money', cogs_total: 'money', margin: 'money' } as const;

/** The most rows a spend query returns: every agent of a large tenant (the console pages them). */
export const SPEND_ROW_LIMIT = 10_000;

function spendBy(id: string, title: string, keys: string[]): AnalyticsQuery {
  return {
    id,
    title,
    sql: `SELECT currency, ${keys.join(', ')}, sum(calls) AS call_count, sum(errors) AS error_count, ${MONEY}
FROM spend_daily
WHERE tenant_id = {tenant} AND ${DAYS}
GROUP BY currency, ${keys.join(', ')}
ORDER BY revenue DESC, ${keys.join(', ')}
LIMIT ${SPEND_ROW_LIMIT}`,
    columns: { currency: 'text', ...Object.fromEntries(keys.map((k) => [k, 'text' as const])), call_count: 'count', error_count: 'count', ...MONEY_COLUMNS },
  };
}

function topTools(id: string, title: string, order: 'revenue' | 'margin'): AnalyticsQuery {
  return {
    id,
    title,
    sql: `SELECT currency, tool_name, sum(calls) AS call_count, sum(errors) AS error_count, ${MONEY}
FROM tool_daily
WHERE tenant_id = {tenant} AND ${DAYS} AND tool_name != ''
GROUP BY currency, tool_name
ORDER BY ${order} DESC, tool_name
LIMIT 10`,
    columns: { currency: 'text', tool_name: 'text', call_count: 'count', error_count: 'count', ...MONEY_COLUMNS },
  };
}

export const ANALYTICS_QUERIES = {
  totals: {
    id: 'totals',
    title: 'Totals',
    sql: `SELECT currency, sum(events) AS event_count, sum(calls) AS call_count, sum(errors) AS error_count, ${MONEY}
FROM spend_daily
WHERE tenant_id = {tenant} AND ${DAYS}
GROUP BY currency
ORDER BY currency`,
    columns: { currency: 'text', event_count: 'count', call_count: 'count', error_count: 'count', ...MONEY_COLUMNS },
  },
  spendByCustomer: spendBy('spend_by_customer', 'Spend by customer', ['customer_id']),
  spendByTeam: spendBy('spend_by_team', 'Spend by team', ['customer_id', 'team_id']),
  spendByAgent: spendBy('spend_by_agent', 'Spend by agent', ['customer_id', 'team_id', 'agent_id', 'app_id']),
  revenueHourly: {
    id: 'revenue_hourly',
    title: 'Revenue, COGS and margin per hour',
    sql: `SELECT hour AS time, currency, ${MONEY}, sum(calls) AS call_count
FROM usage_hourly
WHERE tenant_id = {tenant} AND ${HOURS}
GROUP BY time, currency
ORDER BY time, currency`,
    columns: { time: 'time', currency: 'text', ...MONEY_COLUMNS, call_count: 'count' },
  },
  revenueDaily: {
    id: 'revenue_daily',
    title: 'Revenue, COGS and margin per day',
    sql: `SELECT toDateTime(day, 'UTC') AS time, currency, ${MONEY}, sum(calls) AS call_count
FROM spend_daily
WHERE tenant_id = {tenant} AND ${DAYS}
GROUP BY time, currency
ORDER BY time, currency`,
    columns: { time: 'time', currency: 'text', ...MONEY_COLUMNS, call_count: 'count' },
  },
  topToolsByRevenue: topTools('top_tools_by_revenue', 'Top tools by revenue', 'revenue'),
  topToolsByMargin: topTools('top_tools_by_margin', 'Top tools by margin', 'margin'),
  errorRatesHourly: {
    id: 'error_rates_hourly',
    title: 'Error rate per hour (calls not SUCCESS)',
    sql: `SELECT hour AS time, sum(calls) AS call_count, sum(errors) AS error_count, if(call_count = 0, 0, error_count / call_count) AS error_rate
FROM usage_hourly
WHERE tenant_id = {tenant} AND ${HOURS}
GROUP BY time
ORDER BY time`,
    columns: { time: 'time', call_count: 'count', error_count: 'count', error_rate: 'ratio' },
  },
  sessionLengthsDaily: {
    id: 'session_lengths_daily',
    title: 'Session lengths per day (seconds, first to last event)',
    // A session's rows are per day of activity; sessions started up to a day before the range
    // are read so that one crossing midnight is measured whole.
    sql: `SELECT toDateTime(toDate(started_at), 'UTC') AS time, count() AS sessions,
  avg(length_s) AS avg_seconds, quantile(0.5)(length_s) AS p50_seconds, quantile(0.95)(length_s) AS p95_seconds
FROM (
  SELECT session_id, minMerge(started) AS started_at, toInt64(maxMerge(last_seen)) - toInt64(minMerge(started)) AS length_s
  FROM session_summary
  WHERE tenant_id = {tenant} AND day >= if(toDate({from}) = toDate(0), toDate(0), toDate({from}) - 1) AND day <= toDate({to} - 1)
  GROUP BY session_id
)
WHERE started_at >= {from} AND started_at < {to}
GROUP BY time
ORDER BY time`,
    columns: { time: 'time', sessions: 'count', avg_seconds: 'ratio', p50_seconds: 'ratio', p95_seconds: 'ratio' },
  },
} satisfies Record<string, AnalyticsQuery>;

/** The query as the console runs it: the tenant and the range as literals. */
export function renderForConsole(query: AnalyticsQuery, params: { tenantId: string; from: number; to: number }): string {
  const at = (ms: number) => `toDateTime(${Math.floor(ms / 1000)}, 'UTC')`;
  return query.sql.replaceAll('{tenant}', chString(params.tenantId)).replaceAll('{from}', at(params.from)).replaceAll('{to}', at(params.to));
}

/** The query as a Grafana panel holds it (grafana-clickhouse-datasource macros, a $tenant variable). */
export function renderForGrafana(query: AnalyticsQuery): string {
  return query.sql.replaceAll('{tenant}', '${tenant:singlequote}').replaceAll('{from}', '$__fromTime').replaceAll('{to}', '$__toTime');
}

type Cell = string | number | bigint | Date;
export type AnalyticsRow = Record<string, Cell>;

/**
 * Runs a query for the console and types its cells: money as bigint nano-units (read from the
 * exact decimal text), counts as bigint, ratios as numbers, times as Dates. Read as
 * TabSeparatedWithNames: JSON formats print Decimal128 as a JSON number, which a double cannot hold.
 */
export async function runAnalyticsQuery(
  clickhouse: ClickHouseClient,
  query: AnalyticsQuery,
  params: { tenantId: string; from: number; to: number },
): Promise<AnalyticsRow[]> {
  const result = await clickhouse.query({ query: renderForConsole(query, params), format: 'TabSeparatedWithNames' });
  const [header, ...lines] = (await result.text()).split('\n').filter((line) => line.length > 0);
  if (!header) return [];
  const names = header.split('\t');
  return lines.map((line) => {
    const cells = line.split('\t').map(unescapeTsv);
    const row: AnalyticsRow = {};
    for (const [i, name] of names.entries()) row[name] = typed(query.columns[name] ?? 'text', cells[i] ?? '');
    return row;
  });
}

function typed(kind: ColumnKind, text: string): Cell {
  switch (kind) {
    case 'money':
      return parseNano(text);
    case 'count':
      return BigInt(text);
    case 'ratio':
      return Number(text);
    case 'time':
      return new Date(`${text.replace(' ', 'T')}Z`);
    default:
      return text;
  }
}

const TSV_ESCAPES: Record<string, string> = { t: '\t', n: '\n', r: '\r', '0': '\0', b: '\b', f: '\f', "'": "'", '\\': '\\' };

/** TabSeparated escapes a backslash, tab, newline and a few more with a backslash. */
export function unescapeTsv(text: string): string {
  return text.includes('\\') ? text.replace(/\\(.)/g, (_, c: string) => TSV_ESCAPES[c] ?? c) : text;
}
