import type { AnalyticsEvent } from '../domain/flow.js';
import type { ExecutionStatus, EventType } from '../domain/events.js';
import type { Sql } from '../pipeline/postgres.js';
import type { TransactionSql } from 'postgres';

/**
 * The ledger rows ClickHouse has still to get, by key (analytics_backlog). analytics-dispatch
 * inserts what events:ledgered brings it; what ClickHouse could not take then (an outage), and
 * ledger rows written outside the pipeline (corrections), are enqueued here and read back joined
 * to the ledger until ClickHouse has them. A row ClickHouse refuses for its data is parked with
 * the server's error: kept, visible, and never tried again on its own.
 */
export interface LedgerKey {
  tenantId: string;
  eventId: string;
}

/** Enqueues ledger rows for ClickHouse; in a transaction, they are enqueued only if it commits. */
export async function enqueueForAnalytics(sql: Sql | TransactionSql, keys: readonly LedgerKey[]): Promise<void> {
  if (keys.length === 0) return;
  await sql`
    INSERT INTO analytics_backlog (tenant_id, event_id)
    SELECT * FROM unnest(${keys.map((k) => k.tenantId)}::text[], ${keys.map((k) => k.eventId)}::text[])`;
}

/** How many backlog rows wait for ClickHouse, and how many are parked (refused for their data). */
export async function backlogSize(sql: Sql): Promise<{ waiting: number; parked: number }> {
  const [row] = await sql<{ waiting: string; parked: string }[]>`
    SELECT count(*) FILTER (WHERE parked_at IS NULL) AS waiting, count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked
    FROM analytics_backlog`;
  return { waiting: Number(row.waiting), parked: Number(row.parked) };
}

/**
 * One ledger row as the page's JSON carries it: its columns as text, in this order (PostgreSQL
 * makes the JSON of a text array for less than that of a json_build_array of typed values).
 */
type LedgerRowText = [
  tenantId: string, eventId: string, eventType: EventType, recordedAtMs: string, ingestedAtMs: string,
  customerId: string, teamId: string, agentId: string | null, appId: string | null, credentialId: string, productId: string | null,
  subscriptionId: string, ratePlanId: string, ratePlanVersionId: string, ratePlanVersion: string,
  sessionId: string | null, toolName: string | null, pricedTool: string | null, mcpServerId: string | null, model: string | null,
  status: ExecutionStatus, durationMs: string, inputTokens: string, outputTokens: string, retryCount: string,
  costNano: string, currency: string, overCap: 'true' | 'false', errorType: string | null, isParallel: 'true' | 'false', correction: 'reversal' | 'amendment' | null,
];

const orUndefined = <T>(value: T | null): T | undefined => (value === null ? undefined : value);

function toAnalyticsEvent(row: LedgerRowText): AnalyticsEvent {
  const [
    tenantId, eventId, eventType, recordedAt, ingestedAt,
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
 * Enqueues every ledger row of a tenant recorded on a day (UTC, 'YYYY-MM-DD'): the repair of
 * rows ClickHouse lacks (npm run reconcile -- --repair). Those it has are found and left out
 * when the backlog is drained. The day is a UTC day, whatever the session's TimeZone. Returns how
 * many were enqueued.
 */
export async function enqueueLedgerDay(sql: Sql, tenantId: string, day: string): Promise<number> {
  const result = await sql`
    INSERT INTO analytics_backlog (tenant_id, event_id)
    SELECT tenant_id, event_id FROM usage_ledger
    WHERE tenant_id = ${tenantId}
      AND recorded_at >= (${day}::date)::timestamp AT TIME ZONE 'UTC' AND recorded_at < (${day}::date + 1)::timestamp AT TIME ZONE 'UTC'
    ORDER BY recorded_at`;
  return result.count;
}

/**
 * At least as many as the backlog rows waiting (not parked), read at the cost of two index probes
 * whatever the backlog's size: the span of their ids (rows taken from the middle by another
 * drainer leave gaps, so it can overstate; it is 0 exactly when none waits).
 */
export async function waitingAtMost(sql: Sql): Promise<number> {
  const [row] = await sql<{ span: string }[]>`
    SELECT coalesce(max(id) - min(id) + 1, 0)::text AS span FROM analytics_backlog WHERE parked_at IS NULL`;
  return Number(row.span);
}

/** A backlog row and the ledger row it names (undefined: no such ledger row). */
export interface BacklogItem {
  id: string;
  event?: AnalyticsEvent;
}

/**
 * Takes up to `limit` waiting backlog rows, oldest first, each with its ledger row, locked for the
 * transaction `tx` (rows another drainer holds are skipped): drop or park them in the same
 * transaction. The ledger rows come as one JSON text built by PostgreSQL (an array per row):
 * parsing 32 columns a row in the driver cost about five times the CPU of one JSON.parse
 * (BENCHMARKS.md).
 */
export async function takeBacklog(tx: TransactionSql, limit: number): Promise<BacklogItem[]> {
  const [{ page }] = await tx<{ page: string }[]>`
    SELECT coalesce(json_agg(json_build_array(b.id::text, CASE WHEN l.event_id IS NULL THEN NULL ELSE ARRAY[
             l.tenant_id, l.event_id, l.event_type,
             floor(extract(epoch FROM l.recorded_at) * 1000)::text, floor(extract(epoch FROM l.ingested_at) * 1000)::text,
             l.customer_id, l.team_id, l.agent_id, l.app_id, l.credential_id, l.product_id,
             l.subscription_id, l.rate_plan_id, l.rate_plan_version_id, l.rate_plan_version::text,
             l.session_id, l.tool_name, l.priced_tool, l.mcp_server_id, l.model, l.execution_status,
             l.duration_ms::text, l.input_tokens::text, l.output_tokens::text, l.retry_count::text, l.cost_nano::text, l.currency,
             l.over_cap::text, l.error_type, l.is_parallel::text, l.correction] END) ORDER BY b.id)::text, '[]') AS page
    FROM (
      SELECT id, tenant_id, event_id FROM analytics_backlog
      WHERE parked_at IS NULL
      ORDER BY id
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED) b
    LEFT JOIN usage_ledger l ON l.tenant_id = b.tenant_id AND l.event_id = b.event_id`;
  const rows = JSON.parse(page) as [string, LedgerRowText | null][];
  return rows.map(([id, row]) => ({ id, event: row ? toAnalyticsEvent(row) : undefined }));
}

/** Removes backlog rows ClickHouse now has (or that name no ledger row). */
export async function dropFromBacklog(tx: TransactionSql, ids: readonly string[]): Promise<void> {
  if (ids.length) await tx`DELETE FROM analytics_backlog WHERE id = ANY(${ids}::int8[])`;
}

/** Parks backlog rows ClickHouse refused for their data, with the reason. */
export async function parkInBacklog(tx: TransactionSql, parked: readonly { id: string; error: string }[]): Promise<void> {
  if (parked.length === 0) return;
  await tx`
    UPDATE analytics_backlog b SET parked_at = now(), last_error = p.error
    FROM unnest(${parked.map((p) => p.id)}::int8[], ${parked.map((p) => p.error)}::text[]) AS p(id, error)
    WHERE b.id = p.id`;
}

/**
 * The hand-over from the ledger export that filled `events:analytics` before analytics-dispatch
 * read events:ledgered: enqueues every ledger row after the export's cursor ((ledger_xid,
 * tenant_id, event_id), JSON text as it kept it), once. A row ClickHouse has already is found and
 * left out when the backlog is drained.
 */
export async function enqueueAfterExportCursor(sql: Sql | TransactionSql, cursorText: string): Promise<number> {
  const [xid, tenantId, eventId] = JSON.parse(cursorText) as [string, string, string];
  const result = await sql`
    INSERT INTO analytics_backlog (tenant_id, event_id)
    SELECT tenant_id, event_id FROM usage_ledger
    WHERE (ledger_xid, tenant_id, event_id) > (${xid}::xid8, ${tenantId}, ${eventId})
    ORDER BY ledger_xid, tenant_id, event_id`;
  return result.count;
}
