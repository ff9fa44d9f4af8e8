import { STREAMS } from '../../store/streams.js';
import { emit, type EntryResult, type StageDefinition, type StageEntry } from '../../pipeline/stage.js';
import type { Sql } from '../../pipeline/postgres.js';
import { CAP_TAG_PREFIX } from '../../store/caps.js';
import type { CheckedEvent, LedgeredEvent } from '../../domain/flow.js';

export interface LedgerCounters {
  inserted: number;
  redelivered: number;
  duplicates: number;
}

const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

/**
 * Writes a batch to the ledger with one INSERT ... ON CONFLICT (tenant_id, event_id) DO
 * NOTHING. An event whose row already exists is either this submission again (same ingest
 * nonce: a redelivery after a crash, forwarded so the consumers downstream see it) or a
 * second submission of the same event_id (a duplicate: counted, not billed, not forwarded,
 * and the spend counters cap-check advanced for it are taken back in the ack).
 */
export async function writeLedger(
  sql: Sql,
  batch: StageEntry<CheckedEvent>[],
  counts?: (c: LedgerCounters) => void,
): Promise<EntryResult[]> {
  const events = batch.map((entry) => entry.payload);
  const overCap = batch.map((entry) => entry.tags.some((t) => t.startsWith(CAP_TAG_PREFIX)));
  const column = <T>(pick: (e: CheckedEvent, i: number) => T) => events.map(pick);
  const nonceOf = new Map<string, string>();

  await sql.begin(async (tx) => {
    const inserted = await tx<{ tenant_id: string; event_id: string; ingest_nonce: string }[]>`
      INSERT INTO usage_ledger (
        tenant_id, event_id, ingest_nonce, event_type, recorded_at, ingested_at,
        customer_id, team_id, agent_id, app_id, credential_id, product_id,
        subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version, period_start,
        session_id, tool_name, priced_tool, mcp_server_id, model, execution_status,
        duration_ms, input_tokens, output_tokens, retry_count,
        cost_nano, cost_breakdown, currency, over_cap, error_type, is_parallel)
      SELECT * FROM unnest(
        ${column((e) => e.tenantId)}::text[], ${column((e) => e.eventId)}::text[], ${column((e) => e.ingestNonce)}::text[],
        ${column((e) => e.eventType)}::text[], ${column((e) => iso(e.recordedAt))}::text[]::timestamptz[],
        ${column((e) => iso(e.ingestedAt))}::text[]::timestamptz[],
        ${column((e) => e.attribution.customerId)}::text[], ${column((e) => e.attribution.teamId)}::text[],
        ${column((e) => e.attribution.agentId ?? null)}::text[], ${column((e) => e.attribution.appId ?? null)}::text[],
        ${column((e) => e.attribution.credentialId)}::text[], ${column((e) => e.attribution.productId ?? null)}::text[],
        ${column((e) => e.subscription.subscriptionId)}::text[], ${column((e) => e.subscription.ratePlanId)}::text[],
        ${column((e) => e.subscription.ratePlanVersionId)}::text[], ${column((e) => String(e.subscription.ratePlanVersion))}::text[]::int4[],
        ${column((e) => iso(e.subscription.periodStart))}::text[]::timestamptz[],
        ${column((e) => e.sessionId ?? null)}::text[], ${column((e) => e.toolName ?? null)}::text[],
        ${column((e) => e.cost.tool || null)}::text[], ${column((e) => e.mcpServerId ?? null)}::text[],
        ${column((e) => e.model ?? null)}::text[], ${column((e) => e.status)}::text[],
        ${column((e) => String(e.durationMs))}::text[]::int8[], ${column((e) => String(e.inputTokens))}::text[]::int8[],
        ${column((e) => String(e.outputTokens))}::text[]::int8[], ${column((e) => String(e.retryCount))}::text[]::int4[],
        ${column((e) => e.cost.total.toString())}::text[]::int8[],
        ${column((e) => JSON.stringify(e.cost.breakdown, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)))}::text[]::jsonb[],
        ${column((e) => e.subscription.currency)}::text[], ${column((_e, i) => String(overCap[i]))}::text[]::bool[],
        ${column((e) => e.errorType ?? null)}::text[], ${column((e) => String(e.isParallel))}::text[]::bool[]
      )
      ON CONFLICT (tenant_id, event_id) DO NOTHING
      RETURNING tenant_id, event_id, ingest_nonce`;
    for (const row of inserted) nonceOf.set(`${row.tenant_id}\u0000${row.event_id}`, row.ingest_nonce);

    const unseen = events.filter((e) => !nonceOf.has(`${e.tenantId}\u0000${e.eventId}`));
    if (unseen.length) {
      const existing = await tx<{ tenant_id: string; event_id: string; ingest_nonce: string }[]>`
        SELECT l.tenant_id, l.event_id, l.ingest_nonce
        FROM usage_ledger l
        JOIN unnest(${unseen.map((e) => e.tenantId)}::text[], ${unseen.map((e) => e.eventId)}::text[]) AS k(tenant_id, event_id)
          ON l.tenant_id = k.tenant_id AND l.event_id = k.event_id`;
      for (const row of existing) nonceOf.set(`${row.tenant_id}\u0000${row.event_id}`, row.ingest_nonce);
    }
    const duplicates = events.filter((e) => nonceOf.get(`${e.tenantId}\u0000${e.eventId}`) !== e.ingestNonce);
    if (duplicates.length) {
      await tx`
        INSERT INTO ledger_duplicates (tenant_id, event_id, ingest_nonce)
        SELECT * FROM unnest(${duplicates.map((e) => e.tenantId)}::text[], ${duplicates.map((e) => e.eventId)}::text[],
                             ${duplicates.map((e) => e.ingestNonce)}::text[])
        ON CONFLICT DO NOTHING`;
    }
    counts?.({
      inserted: inserted.length,
      duplicates: duplicates.length,
      redelivered: events.length - inserted.length - duplicates.length,
    });
  });

  return events.map((event, i): EntryResult => {
    if (nonceOf.get(`${event.tenantId}\u0000${event.eventId}`) !== event.ingestNonce) {
      // A rolling total is taken back in the bucket it was counted in (msgpack may hand its numbers back as bigint).
      return {
        counters: event.capCounters.map((c) => ({
          key: c.key,
          by: -c.by,
          ttlSeconds: 0,
          ...(c.window ? { window: { bucketMs: Number(c.window.bucketMs), buckets: Number(c.window.buckets), now: Number(c.window.now) } } : {}),
        })),
      };
    }
    const ledgered: LedgeredEvent = { ...event, overCap: overCap[i] };
    return { outputs: [emit(STREAMS.ledgered, ledgered)] };
  });
}

export const ledgerWriteStage: StageDefinition<CheckedEvent> = {
  name: 'ledger-write',
  input: STREAMS.checked,
  outputs: [STREAMS.ledgered],
  batchSize: 1000,
  async setup({ metrics, sql }) {
    return {
      handle: (batch) =>
        writeLedger(sql, batch, (c) => {
          metrics.duplicates.inc({ stage: 'ledger-write' }, c.duplicates);
        }),
    };
  },
};
