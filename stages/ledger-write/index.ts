import { STREAMS } from '../../store/streams.js';
import { emit, type EntryResult, type StageDefinition, type StageEntry } from '../../pipeline/stage.js';
import type { Sql } from '../../pipeline/postgres.js';
import { CAP_TAG_PREFIX } from '../../store/caps.js';
import { withPart, type CheckedEvent, type LedgeredEvent } from '../../domain/flow.js';

export interface LedgerCounters {
  inserted: number;
  redelivered: number;
  duplicates: number;
}

/** A ledger key (tenant, event id) with an ingest nonce: a ledger row's, or that of a submission the INSERT did not insert. */
interface LedgerNonce {
  tenant_id: string;
  event_id: string;
  ingest_nonce: string;
}

/** A ledger row's key (tenant and event id) as one string, for the nonces found by key. */
const ledgerKey = (tenantId: string, eventId: string) => `${tenantId}\u0000${eventId}`;

/**
 * Ledger rows per INSERT, and the stage's batch: one INSERT per batch. As one JSON document a
 * batch of 1,000 cost PostgreSQL twice the CPU per event and ~1.9 page faults per event, so it went
 * in statements of 250; as column arrays there is no such cliff, and one statement of 1,000 costs
 * 6-15% less CPU per event than four of 250 (`npm run bench:ledger-write`, BENCHMARKS.md,
 * twenty-third session).
 */
const LEDGER_ROWS_PER_STATEMENT = 1000;

/**
 * A text[] literal of the values. JSON.stringify (native) quotes strings as an array literal
 * does, and writes null as NULL, unless it had to escape something (a quote, a backslash, a
 * control character): then each value is quoted and escaped here, since a backslash in an array
 * literal only takes the next character as it is.
 */
function textArray(values: readonly (string | null | undefined)[]): string {
  const json = JSON.stringify(values);
  if (!json.includes('\\')) return `{${json.slice(1, -1)}}`;
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i > 0) out += ',';
    out += v == null ? 'NULL' : `"${v.replace(/["\\]/g, '\\$&')}"`;
  }
  return `${out}}`;
}
const numberArray = (values: readonly (number | bigint | string)[]) => `{${values.join(',')}}`;
const boolArray = (values: readonly boolean[]) => `{${values.join(',')}}`;

/**
 * Each ledger column's value of an event: functions of the module, not arrows written inside
 * insertLedgerRows. V8 keeps a closure's optimized code only while an instance of it lives, so
 * arrows made per statement lost their code at every full collection of the heap and were
 * compiled again (each 6-7 times in 45 s at --rate max; BENCHMARKS.md, issue 13, forty-fourth session).
 */
const LEDGER_COLUMN = {
  tenantId: (e: CheckedEvent) => e.tenantId,
  eventId: (e: CheckedEvent) => e.eventId,
  ingestNonce: (e: CheckedEvent) => e.ingestNonce,
  eventType: (e: CheckedEvent) => e.eventType,
  recordedAt: (e: CheckedEvent) => e.recordedAt,
  ingestedAt: (e: CheckedEvent) => e.ingestedAt,
  customerId: (e: CheckedEvent) => e.attribution.customerId,
  teamId: (e: CheckedEvent) => e.attribution.teamId,
  agentId: (e: CheckedEvent) => e.attribution.agentId,
  appId: (e: CheckedEvent) => e.attribution.appId,
  credentialId: (e: CheckedEvent) => e.attribution.credentialId,
  productId: (e: CheckedEvent) => e.attribution.productId,
  subscriptionId: (e: CheckedEvent) => e.subscription.subscriptionId,
  ratePlanId: (e: CheckedEvent) => e.subscription.ratePlanId,
  ratePlanVersionId: (e: CheckedEvent) => e.subscription.ratePlanVersionId,
  ratePlanVersion: (e: CheckedEvent) => e.subscription.ratePlanVersion,
  periodStart: (e: CheckedEvent) => e.subscription.periodStart,
  sessionId: (e: CheckedEvent) => e.sessionId,
  toolName: (e: CheckedEvent) => e.toolName,
  pricedTool: (e: CheckedEvent) => e.cost.tool || null,
  mcpServerId: (e: CheckedEvent) => e.mcpServerId,
  model: (e: CheckedEvent) => e.model,
  executionStatus: (e: CheckedEvent) => e.status,
  durationMs: (e: CheckedEvent) => e.durationMs,
  inputTokens: (e: CheckedEvent) => e.inputTokens,
  outputTokens: (e: CheckedEvent) => e.outputTokens,
  retryCount: (e: CheckedEvent) => e.retryCount,
  costTotal: (e: CheckedEvent) => e.cost.total,
  breakdownTool: (e: CheckedEvent) => e.cost.breakdown.tool,
  breakdownInputTokens: (e: CheckedEvent) => e.cost.breakdown.input_tokens,
  breakdownOutputTokens: (e: CheckedEvent) => e.cost.breakdown.output_tokens,
  breakdownDuration: (e: CheckedEvent) => e.cost.breakdown.duration,
  currency: (e: CheckedEvent) => e.subscription.currency,
  errorType: (e: CheckedEvent) => e.errorType,
  isParallel: (e: CheckedEvent) => e.isParallel,
} as const;

/**
 * Inserts the events' rows; returns the (tenant, event id, nonce) of those it did not insert (a
 * row with that key was there already): few or none. The statement sets the keys it was given
 * against the keys it inserted (RETURNING, EXCEPT), so telling a redelivery from a duplicate
 * reads back the few not inserted, not the whole batch: with 1% of events submitted twice
 * (nearly every batch of ~700 holds one), the batch's read-back of every key cost PostgreSQL and
 * Node ~8 us an event more than this; with none, this costs ~2 us an event more than a bare
 * INSERT (`npm run bench:ledger-write -- --batches 700 --rows all --repeats 0.01`, BENCHMARKS.md,
 * thirty-sixth session). Each column goes as
 * one array literal, unnested in the SELECT list (no tuplestore), so PostgreSQL holds about the
 * text's size while it inserts. The rows used to go as one JSON document parsed into a jsonb: at
 * --rate max the ledger's backend then took ~1.2 fresh-page faults per event, most of them in
 * jsonb_in; as columns the rows cost PostgreSQL 25-30% less CPU at saturation (BENCHMARKS.md,
 * twenty-first session).
 * Times are epoch ms added to the epoch as exact integer intervals; amounts are integers.
 */
function insertLedgerRows(sql: Sql, events: readonly CheckedEvent[], overCap: readonly boolean[]) {
  const tenantIds = textArray(events.map(LEDGER_COLUMN.tenantId));
  const eventIds = textArray(events.map(LEDGER_COLUMN.eventId));
  const nonces = textArray(events.map(LEDGER_COLUMN.ingestNonce));
  return sql<LedgerNonce[]>`
    WITH inserted AS (
    INSERT INTO usage_ledger (
      tenant_id, event_id, ingest_nonce, event_type, recorded_at, ingested_at,
      customer_id, team_id, agent_id, app_id, credential_id, product_id,
      subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version, period_start,
      session_id, tool_name, priced_tool, mcp_server_id, model, execution_status,
      duration_ms, input_tokens, output_tokens, retry_count,
      cost_nano, cost_breakdown, currency, over_cap, error_type, is_parallel)
    SELECT
      unnest(${tenantIds}::text[]),
      unnest(${eventIds}::text[]),
      unnest(${nonces}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.eventType))}::text[]),
      timestamptz 'epoch' + unnest(${numberArray(events.map(LEDGER_COLUMN.recordedAt))}::int8[]) * interval '1 millisecond',
      timestamptz 'epoch' + unnest(${numberArray(events.map(LEDGER_COLUMN.ingestedAt))}::int8[]) * interval '1 millisecond',
      unnest(${textArray(events.map(LEDGER_COLUMN.customerId))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.teamId))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.agentId))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.appId))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.credentialId))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.productId))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.subscriptionId))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.ratePlanId))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.ratePlanVersionId))}::text[]),
      unnest(${numberArray(events.map(LEDGER_COLUMN.ratePlanVersion))}::int4[]),
      timestamptz 'epoch' + unnest(${numberArray(events.map(LEDGER_COLUMN.periodStart))}::int8[]) * interval '1 millisecond',
      unnest(${textArray(events.map(LEDGER_COLUMN.sessionId))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.toolName))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.pricedTool))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.mcpServerId))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.model))}::text[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.executionStatus))}::text[]),
      unnest(${numberArray(events.map(LEDGER_COLUMN.durationMs))}::int8[]),
      unnest(${numberArray(events.map(LEDGER_COLUMN.inputTokens))}::int8[]),
      unnest(${numberArray(events.map(LEDGER_COLUMN.outputTokens))}::int8[]),
      unnest(${numberArray(events.map(LEDGER_COLUMN.retryCount))}::int4[]),
      unnest(${numberArray(events.map(LEDGER_COLUMN.costTotal))}::int8[]),
      jsonb_build_object(
        'tool', unnest(${numberArray(events.map(LEDGER_COLUMN.breakdownTool))}::int8[])::text,
        'input_tokens', unnest(${numberArray(events.map(LEDGER_COLUMN.breakdownInputTokens))}::int8[])::text,
        'output_tokens', unnest(${numberArray(events.map(LEDGER_COLUMN.breakdownOutputTokens))}::int8[])::text,
        'duration', unnest(${numberArray(events.map(LEDGER_COLUMN.breakdownDuration))}::int8[])::text),
      unnest(${textArray(events.map(LEDGER_COLUMN.currency))}::text[]),
      unnest(${boolArray(overCap)}::bool[]),
      unnest(${textArray(events.map(LEDGER_COLUMN.errorType))}::text[]),
      unnest(${boolArray(events.map(LEDGER_COLUMN.isParallel))}::bool[])
    ON CONFLICT (tenant_id, event_id) DO NOTHING
    RETURNING tenant_id, event_id, ingest_nonce)
    SELECT * FROM unnest(${tenantIds}::text[], ${eventIds}::text[], ${nonces}::text[]) AS k(tenant_id, event_id, ingest_nonce)
    EXCEPT
    SELECT tenant_id, event_id, ingest_nonce FROM inserted`;
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
 * statement, not three, and no rows sent back, in the common case (no row there already).
 */
export async function writeLedger(
  sql: Sql,
  batch: StageEntry<CheckedEvent>[],
  counts?: (c: LedgerCounters) => void,
  rowsPerStatement = LEDGER_ROWS_PER_STATEMENT,
): Promise<EntryResult[]> {
  const events = batch.map(payloadOf);
  const overCap = batch.map(isOverCap);

  // At most LEDGER_ROWS_PER_STATEMENT rows a statement, in order: the first of two events with one
  // id in a batch is the one ledgered, as in one statement.
  const notInserted: LedgerNonce[] = [];
  for (let start = 0; start < events.length; start += rowsPerStatement) {
    notInserted.push(...(await insertLedgerRows(sql, events.slice(start, start + rowsPerStatement), overCap.slice(start, start + rowsPerStatement))));
  }
  // Every row new (most batches): each event is ledgered as submitted. Otherwise the ledger's
  // nonce of each event not inserted tells whether its row is this submission's (a redelivery's)
  // or another submission's (a duplicate). Read in a statement of its own, after the INSERT: a
  // row another transaction committed while the INSERT ran is not in the INSERT's snapshot.
  let mine: boolean[] | undefined;
  let duplicates: CheckedEvent[] = [];
  if (notInserted.length > 0) {
    const rows = await sql<LedgerNonce[]>`
      SELECT l.tenant_id, l.event_id, l.ingest_nonce
      FROM usage_ledger l
      JOIN unnest(${notInserted.map((k) => k.tenant_id)}::text[], ${notInserted.map((k) => k.event_id)}::text[]) AS k(tenant_id, event_id)
        ON l.tenant_id = k.tenant_id AND l.event_id = k.event_id`;
    const nonceOf = new Map(rows.map((row) => [ledgerKey(row.tenant_id, row.event_id), row.ingest_nonce]));
    const ours = events.map((e) => {
      const ledgered = nonceOf.get(ledgerKey(e.tenantId, e.eventId));
      return ledgered === undefined || ledgered === e.ingestNonce;
    });
    duplicates = events.filter((_e, i) => !ours[i]);
    mine = ours;
  }
  const inserted = events.length - notInserted.length;
  if (duplicates.length) {
    await sql`
      INSERT INTO ledger_duplicates (tenant_id, event_id, ingest_nonce)
      SELECT * FROM unnest(${duplicates.map((e) => e.tenantId)}::text[], ${duplicates.map((e) => e.eventId)}::text[],
                           ${duplicates.map((e) => e.ingestNonce)}::text[])
      ON CONFLICT DO NOTHING`;
  }
  counts?.({
    inserted,
    duplicates: duplicates.length,
    redelivered: events.length - inserted - duplicates.length,
  });

  // A loop, not a map with an arrow: see LEDGER_COLUMN.
  const results: EntryResult[] = [];
  for (let i = 0; i < events.length; i++) {
    if (mine && !mine[i]) {
      results.push({ counters: events[i].capCounters.map(takenBack) });
      continue;
    }
    const ledgered: LedgeredEvent = withPart(events[i], { overCap: overCap[i] });
    results.push({ outputs: [emit(STREAMS.ledgered, ledgered)] });
  }
  return results;
}

const payloadOf = (entry: StageEntry<CheckedEvent>) => entry.payload;
const isCapTag = (tag: string) => tag.startsWith(CAP_TAG_PREFIX);
const isOverCap = (entry: StageEntry<CheckedEvent>) => entry.tags.some(isCapTag);

/** A duplicate's spend counter taken back, a rolling total in the bucket it was counted in (msgpack may hand its numbers back as bigint). */
function takenBack(c: CheckedEvent['capCounters'][number]) {
  return {
    key: c.key,
    by: -c.by,
    ttlSeconds: 0,
    ...(c.window ? { window: { bucketMs: Number(c.window.bucketMs), buckets: Number(c.window.buckets), now: Number(c.window.now) } } : {}),
  };
}

export const ledgerWriteStage: StageDefinition<CheckedEvent> = {
  name: 'ledger-write',
  sets: ['overCap'] satisfies (keyof LedgeredEvent)[],
  input: STREAMS.checked,
  outputs: [STREAMS.ledgered],
  batchSize: LEDGER_ROWS_PER_STATEMENT, // one INSERT per batch
  // Its loop is the pipeline's narrowest: at --rate max it was busy 95% of the time, its read and
  // ack ~25% of that; with them overlapped, +6.5% events/s (BENCHMARKS.md, thirty-seventh session).
  pipelined: true,
  async setup({ metrics, sql }) {
    return {
      handle: (batch) =>
        writeLedger(sql, batch, (c) => {
          metrics.duplicates.inc({ stage: 'ledger-write' }, c.duplicates);
        }),
    };
  },
};
