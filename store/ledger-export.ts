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

interface LedgerRow {
  xid: string;
  tenant_id: string;
  event_id: string;
  event_type: EventType;
  recorded_at: Date;
  ingested_at: Date;
  customer_id: string;
  team_id: string;
  agent_id: string | null;
  app_id: string | null;
  credential_id: string;
  product_id: string | null;
  subscription_id: string;
  rate_plan_id: string;
  rate_plan_version_id: string;
  rate_plan_version: number;
  session_id: string | null;
  tool_name: string | null;
  priced_tool: string | null;
  mcp_server_id: string | null;
  model: string | null;
  execution_status: ExecutionStatus;
  duration_ms: string;
  input_tokens: string;
  output_tokens: string;
  retry_count: number;
  cost_nano: string;
  currency: string;
  over_cap: boolean;
  error_type: string | null;
  is_parallel: boolean;
  correction: 'reversal' | 'amendment' | null;
}

const orUndefined = <T>(value: T | null): T | undefined => (value === null ? undefined : value);

function toAnalyticsEvent(row: LedgerRow): AnalyticsEvent {
  return {
    tenantId: row.tenant_id,
    eventId: row.event_id,
    eventType: row.event_type,
    recordedAt: row.recorded_at.getTime(),
    ingestedAt: row.ingested_at.getTime(),
    sessionId: orUndefined(row.session_id),
    toolName: orUndefined(row.tool_name),
    mcpServerId: orUndefined(row.mcp_server_id),
    model: orUndefined(row.model),
    durationMs: Number(row.duration_ms),
    status: row.execution_status,
    inputTokens: Number(row.input_tokens),
    outputTokens: Number(row.output_tokens),
    retryCount: row.retry_count,
    isParallel: row.is_parallel,
    errorType: orUndefined(row.error_type),
    overCap: row.over_cap,
    attribution: {
      customerId: row.customer_id,
      teamId: row.team_id,
      agentId: orUndefined(row.agent_id),
      appId: orUndefined(row.app_id),
      credentialId: row.credential_id,
      productId: orUndefined(row.product_id),
    },
    subscription: {
      subscriptionId: row.subscription_id,
      ratePlanId: row.rate_plan_id,
      ratePlanVersionId: row.rate_plan_version_id,
      ratePlanVersion: row.rate_plan_version,
      currency: row.currency,
    },
    cost: { total: BigInt(row.cost_nano), tool: row.priced_tool ?? '' },
    ...(row.correction === 'reversal' ? { reversal: true as const } : {}),
  };
}

/** Up to `limit` ledger rows after `after` and below `horizon`, and the cursor after the last one. */
export async function readLedgerPage(
  sql: Sql,
  after: LedgerCursor,
  horizon: string,
  limit: number,
): Promise<{ events: AnalyticsEvent[]; next: LedgerCursor }> {
  const rows = await sql<LedgerRow[]>`
    SELECT ledger_xid::text AS xid, tenant_id, event_id, event_type, recorded_at, ingested_at,
           customer_id, team_id, agent_id, app_id, credential_id, product_id,
           subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version,
           session_id, tool_name, priced_tool, mcp_server_id, model, execution_status,
           duration_ms, input_tokens, output_tokens, retry_count, cost_nano, currency, over_cap, error_type, is_parallel, correction
    FROM usage_ledger
    WHERE ledger_xid < ${horizon}::xid8
      AND (ledger_xid, tenant_id, event_id) > (${after.xid}::xid8, ${after.tenantId}, ${after.eventId})
    ORDER BY ledger_xid, tenant_id, event_id
    LIMIT ${limit}`;
  const last = rows.at(-1);
  return {
    events: rows.map(toAnalyticsEvent),
    next: last ? { xid: last.xid, tenantId: last.tenant_id, eventId: last.event_id } : after,
  };
}
