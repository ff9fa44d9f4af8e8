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
 * One ledger row as the page's JSON carries it: an array in this order. The 64-bit amounts that
 * must stay exact (cost) travel as text; times as epoch ms.
 */
type LedgerRowJson = [
  xid: string, tenantId: string, eventId: string, eventType: EventType, recordedAt: number, ingestedAt: number,
  customerId: string, teamId: string, agentId: string | null, appId: string | null, credentialId: string, productId: string | null,
  subscriptionId: string, ratePlanId: string, ratePlanVersionId: string, ratePlanVersion: number,
  sessionId: string | null, toolName: string | null, pricedTool: string | null, mcpServerId: string | null, model: string | null,
  status: ExecutionStatus, durationMs: number, inputTokens: number, outputTokens: number, retryCount: number,
  costNano: string, currency: string, overCap: boolean, errorType: string | null, isParallel: boolean, correction: 'reversal' | 'amendment' | null,
];

const orUndefined = <T>(value: T | null): T | undefined => (value === null ? undefined : value);

function toAnalyticsEvent(row: LedgerRowJson): AnalyticsEvent {
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
    recordedAt,
    ingestedAt,
    sessionId: orUndefined(sessionId),
    toolName: orUndefined(toolName),
    mcpServerId: orUndefined(mcpServerId),
    model: orUndefined(model),
    durationMs,
    status,
    inputTokens,
    outputTokens,
    retryCount,
    isParallel,
    errorType: orUndefined(errorType),
    overCap,
    attribution: {
      customerId,
      teamId,
      agentId: orUndefined(agentId),
      appId: orUndefined(appId),
      credentialId,
      productId: orUndefined(productId),
    },
    subscription: { subscriptionId, ratePlanId, ratePlanVersionId, ratePlanVersion, currency },
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
    SELECT coalesce(json_agg(json_build_array(
             ledger_xid::text, tenant_id, event_id, event_type,
             floor(extract(epoch FROM recorded_at) * 1000)::int8, floor(extract(epoch FROM ingested_at) * 1000)::int8,
             customer_id, team_id, agent_id, app_id, credential_id, product_id,
             subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version,
             session_id, tool_name, priced_tool, mcp_server_id, model, execution_status,
             duration_ms, input_tokens, output_tokens, retry_count, cost_nano::text, currency, over_cap, error_type, is_parallel, correction)
           ORDER BY ledger_xid, tenant_id, event_id)::text, '[]') AS page
    FROM (
      SELECT * FROM usage_ledger
      WHERE ledger_xid < ${horizon}::xid8
        AND (ledger_xid, tenant_id, event_id) > (${after.xid}::xid8, ${after.tenantId}, ${after.eventId})
      ORDER BY ledger_xid, tenant_id, event_id
      LIMIT ${limit}) l`;
  const rows = JSON.parse(page) as LedgerRowJson[];
  const last = rows.at(-1);
  return {
    events: rows.map(toAnalyticsEvent),
    next: last ? { xid: last[0], tenantId: last[1], eventId: last[2] } : after,
  };
}
