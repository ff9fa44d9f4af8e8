import { chString, type ClickHouseClient } from '../../store/clickhouse.js';
import { chDate } from './rows.js';

/**
 * Figures read back from {db}.invocations, per tenant. Every read uses FINAL, so an event
 * inserted twice (a redelivered batch) counts once even before ClickHouse merges its parts:
 * these are the numbers to compare with the ledger. Literals go through chString (ClickHouse
 * 18.16 has no server-side query parameters); identifiers come from a fixed list.
 */
export interface TimeRange {
  /** Epoch milliseconds of recorded time, inclusive. */
  from?: number;
  /** Epoch milliseconds of recorded time, exclusive. */
  to?: number;
}

export interface InvocationFigures {
  events: number;
  /** Usage events (tool, agent and API invocations), session control events left out. */
  calls: number;
  costNano: bigint;
  inputTokens: number;
  outputTokens: number;
  totalTokens: number;
  durationMs: number;
  errors: number;
}

export interface GroupFigures extends InvocationFigures {
  key: string;
}

const INVOCATION_GROUPS = {
  agent: 'agent_id',
  tool: 'tool_name',
  customer: 'customer_id',
  team: 'team_id',
  app: 'app_id',
  session: 'session_id',
  mcp_server: 'mcp_server_id',
  model: 'model',
} as const;

export type InvocationGroup = keyof typeof INVOCATION_GROUPS;

// Aliases differ from column names: ClickHouse substitutes aliases inside expressions. Sums are
// taken in two parts, whole billions and the remainder, each far from the range of 64 bits, and
// joined exactly in bigint: sum(cost_nano) alone would wrap past 9.2e9 units (Int64), and token or
// duration sums past 1.8e19 (UInt64). Valid on ClickHouse 18.16 (no Int128) and current releases.
const PART = 1_000_000_000n;
export function exactSum(column: string, alias: string): string {
  return `toString(sum(intDiv(${column}, ${PART}))) AS ${alias}_hi, toString(sum(${column} % ${PART})) AS ${alias}_lo`;
}

const SUMMED = { cost_nano: 'f_cost', input_tokens: 'f_input_tokens', output_tokens: 'f_output_tokens', total_tokens: 'f_total_tokens', duration_ms: 'f_duration_ms' };

const FIGURES = `
  count() AS f_events,
  countIf(event_type NOT LIKE 'session.%') AS f_calls,
  ${Object.entries(SUMMED).map(([column, alias]) => exactSum(column, alias)).join(',\n  ')},
  countIf(event_type NOT LIKE 'session.%' AND execution_status != 'SUCCESS') AS f_errors`;

type SplitSum<A extends string> = Record<`${A}_hi` | `${A}_lo`, string>;
type FiguresRow = { f_events: string; f_calls: string; f_errors: string } & SplitSum<(typeof SUMMED)[keyof typeof SUMMED]>;

/** Joins the two parts of an exactSum. */
export function joinSum(hi: string | undefined, lo: string | undefined): bigint {
  return BigInt(hi ?? 0) * PART + BigInt(lo ?? 0);
}

function figures(row: FiguresRow | undefined): InvocationFigures {
  const sum = (alias: (typeof SUMMED)[keyof typeof SUMMED]) => joinSum(row?.[`${alias}_hi`], row?.[`${alias}_lo`]);
  return {
    events: Number(row?.f_events ?? 0),
    calls: Number(row?.f_calls ?? 0),
    costNano: sum('f_cost'),
    inputTokens: Number(sum('f_input_tokens')),
    outputTokens: Number(sum('f_output_tokens')),
    totalTokens: Number(sum('f_total_tokens')),
    durationMs: Number(sum('f_duration_ms')),
    errors: Number(row?.f_errors ?? 0),
  };
}

/**
 * The tenant, and the recorded-time range to the second (recorded_at is a DateTime); the date
 * bounds let ClickHouse skip whole partitions.
 */
function where(tenantId: string, range: TimeRange): string {
  const conditions = [`tenant_id = ${chString(tenantId)}`];
  if (range.from !== undefined) {
    conditions.push(`recorded_at >= toDateTime(${Math.floor(range.from / 1000)})`, `recorded_date >= toDate(${chString(chDate(range.from))})`);
  }
  if (range.to !== undefined) {
    conditions.push(`recorded_at < toDateTime(${Math.ceil(range.to / 1000)})`, `recorded_date <= toDate(${chString(chDate(range.to))})`);
  }
  return conditions.join(' AND ');
}

async function rows<T>(clickhouse: ClickHouseClient, query: string): Promise<T[]> {
  const result = await clickhouse.query({ query, format: 'JSONEachRow' });
  return result.json<T>();
}

/** The tenant's totals: events, calls, cost, tokens, duration and errors. */
export async function invocationTotals(clickhouse: ClickHouseClient, tenantId: string, range: TimeRange = {}): Promise<InvocationFigures> {
  const [row] = await rows<FiguresRow>(clickhouse, `SELECT ${FIGURES} FROM invocations FINAL WHERE ${where(tenantId, range)}`);
  return figures(row);
}

/** The tenant's figures per agent, tool, customer, ... (an absent id is the key ''), costliest first. */
export async function invocationsBy(
  clickhouse: ClickHouseClient,
  tenantId: string,
  group: InvocationGroup,
  range: TimeRange = {},
): Promise<GroupFigures[]> {
  const column = INVOCATION_GROUPS[group];
  if (!column) throw new Error(`unknown group ${String(group)}`);
  const found = await rows<FiguresRow & { f_key: string }>(
    clickhouse,
    `SELECT ${column} AS f_key, ${FIGURES} FROM invocations FINAL WHERE ${where(tenantId, range)}
     GROUP BY ${column} ORDER BY sum(intDiv(cost_nano, ${PART})) DESC, sum(cost_nano % ${PART}) DESC, ${column}`,
  );
  return found.map((row) => ({ key: row.f_key, ...figures(row) }));
}

export const invocationsByAgent = (clickhouse: ClickHouseClient, tenantId: string, range?: TimeRange) =>
  invocationsBy(clickhouse, tenantId, 'agent', range);

export const invocationsByTool = (clickhouse: ClickHouseClient, tenantId: string, range?: TimeRange) =>
  invocationsBy(clickhouse, tenantId, 'tool', range);
