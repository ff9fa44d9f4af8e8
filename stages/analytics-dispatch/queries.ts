import { NANO_PER_UNIT } from '../../domain/money.js';
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

// Aliases differ from column names: ClickHouse substitutes aliases inside expressions. Cost is
// summed in two parts, whole units and the nano remainder, each far from Int64's range, and
// joined exactly in bigint: sum(cost_nano) alone would wrap past 9.2e9 units.
const FIGURES = `
  count() AS f_events,
  countIf(event_type NOT LIKE 'session.%') AS f_calls,
  toString(sum(intDiv(cost_nano, 1000000000))) AS f_cost_units,
  toString(sum(cost_nano % 1000000000)) AS f_cost_rest,
  sum(input_tokens) AS f_input_tokens,
  sum(output_tokens) AS f_output_tokens,
  sum(total_tokens) AS f_total_tokens,
  sum(duration_ms) AS f_duration_ms,
  countIf(event_type NOT LIKE 'session.%' AND execution_status != 'SUCCESS') AS f_errors`;

interface FiguresRow {
  f_events: string;
  f_calls: string;
  f_cost_units: string;
  f_cost_rest: string;
  f_input_tokens: string;
  f_output_tokens: string;
  f_total_tokens: string;
  f_duration_ms: string;
  f_errors: string;
}

function figures(row: FiguresRow | undefined): InvocationFigures {
  return {
    events: Number(row?.f_events ?? 0),
    calls: Number(row?.f_calls ?? 0),
    costNano: BigInt(row?.f_cost_units ?? 0) * NANO_PER_UNIT + BigInt(row?.f_cost_rest ?? 0),
    inputTokens: Number(row?.f_input_tokens ?? 0),
    outputTokens: Number(row?.f_output_tokens ?? 0),
    totalTokens: Number(row?.f_total_tokens ?? 0),
    durationMs: Number(row?.f_duration_ms ?? 0),
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
     GROUP BY ${column} ORDER BY sum(intDiv(cost_nano, 1000000000)) DESC, sum(cost_nano % 1000000000) DESC, ${column}`,
  );
  return found.map((row) => ({ key: row.f_key, ...figures(row) }));
}

export const invocationsByAgent = (clickhouse: ClickHouseClient, tenantId: string, range?: TimeRange) =>
  invocationsBy(clickhouse, tenantId, 'agent', range);

export const invocationsByTool = (clickhouse: ClickHouseClient, tenantId: string, range?: TimeRange) =>
  invocationsBy(clickhouse, tenantId, 'tool', range);
