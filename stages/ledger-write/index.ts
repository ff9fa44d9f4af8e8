import { STREAMS } from '../../store/streams.js';
import { emit, type EntryResult, type StageDefinition, type StageEntry } from '../../pipeline/stage.js';
import type { Sql } from '../../pipeline/postgres.js';
import { CAP_TAG_PREFIX } from '../../store/caps.js';
import type { CheckedEvent, LedgeredEvent } from '../../domain/flow.js';
import { decimalStrings } from '../../domain/money.js';

export interface LedgerCounters {
  inserted: number;
  redelivered: number;
  duplicates: number;
}

/** A ledger row's key and the ingest nonce it was written with. */
interface LedgerNonce {
  tenant_id: string;
  event_id: string;
  ingest_nonce: string;
}

/** A ledger row's key (tenant and event id) as one string, for the nonces found by key. */
const ledgerKey = (tenantId: string, eventId: string) => `${tenantId}\u0000${eventId}`;

/**
 * Ledger rows per INSERT (about 240 KB of JSON). A batch of 1,000 events (ten blocks read at once
 * under load) in one statement cost PostgreSQL twice the CPU per event, 48-50 us against 21-28,
 * and ~1.9 page faults per event: `npm run bench:ledger-write`, BENCHMARKS.md.
 */
const LEDGER_ROWS_PER_STATEMENT = 250;

/**
 * Inserts the rows of one JSON array of arrays (each row's values in the column order below; no
 * replacer: it would take JSON.stringify off its fast path); returns those new to the ledger.
 * Rows as arrays, taken apart by position from jsonb, cost PostgreSQL half the CPU of objects
 * taken apart by json_to_recordset (10.6 against 21.5 us per row), and the text is half as long.
 */
function insertLedgerRows(sql: Sql, json: string) {
  return sql<LedgerNonce[]>`
    INSERT INTO usage_ledger (
      tenant_id, event_id, ingest_nonce, event_type, recorded_at, ingested_at,
      customer_id, team_id, agent_id, app_id, credential_id, product_id,
      subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version, period_start,
      session_id, tool_name, priced_tool, mcp_server_id, model, execution_status,
      duration_ms, input_tokens, output_tokens, retry_count,
      cost_nano, cost_breakdown, currency, over_cap, error_type, is_parallel)
    SELECT
      r->>0, r->>1, r->>2, r->>3,
      timestamptz 'epoch' + (r->>4)::int8 * interval '1 millisecond',
      timestamptz 'epoch' + (r->>5)::int8 * interval '1 millisecond',
      r->>6, r->>7, r->>8, r->>9, r->>10, r->>11,
      r->>12, r->>13, r->>14, (r->>15)::int4,
      timestamptz 'epoch' + (r->>16)::int8 * interval '1 millisecond',
      r->>17, r->>18, r->>19, r->>20, r->>21, r->>22,
      (r->>23)::int8, (r->>24)::int8, (r->>25)::int8, (r->>26)::int4,
      (r->>27)::int8, r->28, r->>29, (r->>30)::bool, r->>31, (r->>32)::bool
    FROM jsonb_array_elements(${json}::text::jsonb) AS r
    ON CONFLICT (tenant_id, event_id) DO NOTHING
    RETURNING tenant_id, event_id, ingest_nonce`;
}

/**
 * Writes a batch to the ledger with INSERT ... ON CONFLICT (tenant_id, event_id) DO NOTHING, at
 * most LEDGER_ROWS_PER_STATEMENT rows a statement. An event whose row already exists is either
 * this submission again (same ingest nonce: a redelivery after a crash, forwarded so the
 * consumers downstream see it) or a second submission of the same event_id (a duplicate:
 * counted, not billed, not forwarded, and the spend counters cap-check advanced for it are taken
 * back in the ack).
 * No transaction around the statements: each INSERT is atomic on its own, and what follows only
 * reads committed rows and records duplicates idempotently, so a crash between them is mended by
 * the redelivery (which finds every row there and tells the same story). One round trip per
 * statement, not three, in the common case (no row there already).
 */
export async function writeLedger(
  sql: Sql,
  batch: StageEntry<CheckedEvent>[],
  counts?: (c: LedgerCounters) => void,
  rowsPerStatement = LEDGER_ROWS_PER_STATEMENT,
): Promise<EntryResult[]> {
  const events = batch.map((entry) => entry.payload);
  const overCap = batch.map((entry) => entry.tags.some((t) => t.startsWith(CAP_TAG_PREFIX)));
  const nonceOf = new Map<string, string>();

  // The rows go as one JSON parameter, taken apart in PostgreSQL: one JSON.stringify (native
  // code) instead of 33 text arrays escaped in JavaScript. Each row is an array in the column
  // order of insertLedgerRows. Times are epoch ms, added to the epoch as exact integer intervals;
  // amounts are decimal strings.
  const rows = events.map((e, i) => [
    e.tenantId,
    e.eventId,
    e.ingestNonce,
    e.eventType,
    e.recordedAt,
    e.ingestedAt,
    e.attribution.customerId,
    e.attribution.teamId,
    e.attribution.agentId ?? null,
    e.attribution.appId ?? null,
    e.attribution.credentialId,
    e.attribution.productId ?? null,
    e.subscription.subscriptionId,
    e.subscription.ratePlanId,
    e.subscription.ratePlanVersionId,
    e.subscription.ratePlanVersion,
    e.subscription.periodStart,
    e.sessionId ?? null,
    e.toolName ?? null,
    e.cost.tool || null,
    e.mcpServerId ?? null,
    e.model ?? null,
    e.status,
    e.durationMs,
    e.inputTokens,
    e.outputTokens,
    e.retryCount,
    e.cost.total.toString(),
    decimalStrings(e.cost.breakdown),
    e.subscription.currency,
    overCap[i],
    e.errorType ?? null,
    e.isParallel,
  ]);
  // At most LEDGER_ROWS_PER_STATEMENT rows a statement, in order: the first of two events with one
  // id in a batch is the one ledgered, as in one statement.
  const inserted: LedgerNonce[] = [];
  for (let start = 0; start < rows.length; start += rowsPerStatement) {
    inserted.push(...(await insertLedgerRows(sql, JSON.stringify(rows.slice(start, start + rowsPerStatement)))));
  }
  for (const row of inserted) nonceOf.set(ledgerKey(row.tenant_id, row.event_id), row.ingest_nonce);
  const keyOf = events.map((e) => ledgerKey(e.tenantId, e.eventId));

  const unseen = events.filter((_, i) => !nonceOf.has(keyOf[i]));
  if (unseen.length) {
    const existing = await sql<LedgerNonce[]>`
      SELECT l.tenant_id, l.event_id, l.ingest_nonce
      FROM usage_ledger l
      JOIN unnest(${unseen.map((e) => e.tenantId)}::text[], ${unseen.map((e) => e.eventId)}::text[]) AS k(tenant_id, event_id)
        ON l.tenant_id = k.tenant_id AND l.event_id = k.event_id`;
    for (const row of existing) nonceOf.set(ledgerKey(row.tenant_id, row.event_id), row.ingest_nonce);
  }
  const duplicates = events.filter((e, i) => nonceOf.get(keyOf[i]) !== e.ingestNonce);
  if (duplicates.length) {
    await sql`
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

  return events.map((event, i): EntryResult => {
    if (nonceOf.get(keyOf[i]) !== event.ingestNonce) {
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
  sets: ['overCap'] satisfies (keyof LedgeredEvent)[],
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
