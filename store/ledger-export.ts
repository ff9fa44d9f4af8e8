import type { AnalyticsEvent } from '../domain/flow.js';
import type { ExecutionStatus, EventType } from '../domain/events.js';
import type { Sql } from '../pipeline/postgres.js';

/**
 * Reads the ledger back in commit order, for the ClickHouse export. Every ledger row carries the
 * id of the transaction that wrote it (`ledger_xid`). Rows are read in (ledger_xid, tenant_id,
 * event_id) order below a horizon: the oldest transaction of this database still in progress.
 * Every row below the horizon is committed for good, and every transaction still to commit has
 * an id at or above it, so a cursor that only moves below the horizon never skips a row, however
 * many writers interleave. Transactions of other databases of the cluster do not hold it back.
 */
export interface LedgerCursor {
  xid: string;
  tenantId: string;
  eventId: string;
}

const LEDGER_START: LedgerCursor = { xid: '0', tenantId: '', eventId: '' };

export function encodeCursor(cursor: LedgerCursor): string {
  return JSON.stringify([cursor.xid, cursor.tenantId, cursor.eventId]);
}

export function decodeCursor(text: string | null): LedgerCursor {
  if (!text) return LEDGER_START;
  const [xid, tenantId, eventId] = JSON.parse(text) as [string, string, string];
  return { xid, tenantId, eventId };
}

/**
 * The export horizon: the smallest transaction id of this database still in progress (prepared
 * transactions included) at the snapshot, or the snapshot's next id when there is none. Read in
 * a statement of its own: a transaction in progress at the snapshot that commits before
 * pg_stat_activity is read is not counted, and its rows are visible to the next statement.
 */
export async function exportHorizon(sql: Sql): Promise<string> {
  const [row] = await sql<{ horizon: string }[]>`
    SELECT coalesce(
      (SELECT min(x) FROM pg_snapshot_xip(s.snap) AS x
        WHERE x::xid IN (SELECT backend_xid FROM pg_stat_activity WHERE datname = current_database() AND backend_xid IS NOT NULL
                         UNION ALL
                         SELECT transaction FROM pg_prepared_xacts WHERE database = current_database())),
      pg_snapshot_xmax(s.snap))::text AS horizon
    FROM (SELECT pg_current_snapshot() AS snap) s`;
  return row.horizon;
}

/**
 * One ledger row as the page's JSON carries it: its columns as text, in this order (PostgreSQL
 * makes the JSON of a text array for less than that of a json_build_array of typed values).
 */
type LedgerRowText = [
  xid: string, tenantId: string, eventId: string, eventType: EventType, recordedAtMs: string, ingestedAtMs: string,
  customerId: string, teamId: string, agentId: string | null, appId: string | null, credentialId: string, productId: string | null,
  subscriptionId: string, ratePlanId: string, ratePlanVersionId: string, ratePlanVersion: string,
  sessionId: string | null, toolName: string | null, pricedTool: string | null, mcpServerId: string | null, model: string | null,
  status: ExecutionStatus, durationMs: string, inputTokens: string, outputTokens: string, retryCount: string,
  costNano: string, currency: string, overCap: 'true' | 'false', errorType: string | null, isParallel: 'true' | 'false', correction: 'reversal' | 'amendment' | null,
];

const orUndefined = <T>(value: T | null): T | undefined => (value === null ? undefined : value);

function toAnalyticsEvent(row: LedgerRowText): AnalyticsEvent {
  const [
    , tenantId, eventId, eventType, recordedAt, ingestedAt,
    customerId, teamId, agentId, appId, credentialId, productId,
    subscriptionId, ratePlanId, ratePlanVersionId, ratePlanVersion,
    sessionId, toolName, pricedTool, mcpServerId, model,
    status, durationMs, inputTokens, outputTokens, retryCount,
    costNano, currency, overCap, errorType, isParallel, correction,
  ] = row;
  return {
    tenantId,
    eventId,
    eventType,
    recordedAt: Number(recordedAt),
    ingestedAt: Number(ingestedAt),
    sessionId: orUndefined(sessionId),
    toolName: orUndefined(toolName),
    mcpServerId: orUndefined(mcpServerId),
    model: orUndefined(model),
    durationMs: Number(durationMs),
    status,
    inputTokens: Number(inputTokens),
    outputTokens: Number(outputTokens),
    retryCount: Number(retryCount),
    isParallel: isParallel === 'true',
    errorType: orUndefined(errorType),
    overCap: overCap === 'true',
    attribution: {
      customerId,
      teamId,
      agentId: orUndefined(agentId),
      appId: orUndefined(appId),
      credentialId,
      productId: orUndefined(productId),
    },
    subscription: { subscriptionId, ratePlanId, ratePlanVersionId, ratePlanVersion: Number(ratePlanVersion), currency },
    cost: { total: BigInt(costNano), tool: pricedTool ?? '' },
    ...(correction === 'reversal' ? { reversal: true as const } : {}),
  };
}

/**
 * Up to `limit` ledger rows after `after` and below `horizon`, and the cursor after the last one.
 * The page comes as one JSON text built by PostgreSQL (an array per row): parsing 32 columns a row
 * in the driver cost the exporting process about five times the CPU of one JSON.parse (BENCHMARKS.md).
 */
export async function readLedgerPage(
  sql: Sql,
  after: LedgerCursor,
  horizon: string,
  limit: number,
): Promise<{ events: AnalyticsEvent[]; next: LedgerCursor }> {
  const [{ page }] = await sql<{ page: string }[]>`
    SELECT coalesce(json_agg(ARRAY[
             ledger_xid::text, tenant_id, event_id, event_type,
             floor(extract(epoch FROM recorded_at) * 1000)::text, floor(extract(epoch FROM ingested_at) * 1000)::text,
             customer_id, team_id, agent_id, app_id, credential_id, product_id,
             subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version::text,
             session_id, tool_name, priced_tool, mcp_server_id, model, execution_status,
             duration_ms::text, input_tokens::text, output_tokens::text, retry_count::text, cost_nano::text, currency,
             over_cap::text, error_type, is_parallel::text, correction]
           ORDER BY ledger_xid, tenant_id, event_id)::text, '[]') AS page
    FROM (
      SELECT * FROM usage_ledger
      WHERE ledger_xid < ${horizon}::xid8
        AND (ledger_xid, tenant_id, event_id) > (${after.xid}::xid8, ${after.tenantId}, ${after.eventId})
      ORDER BY ledger_xid, tenant_id, event_id
      LIMIT ${limit}) l`;
  const rows = JSON.parse(page) as LedgerRowText[];
  const last = rows.at(-1);
  return {
    events: rows.map(toAnalyticsEvent),
    next: last ? { xid: last[0], tenantId: last[1], eventId: last[2] } : after,
  };
}
