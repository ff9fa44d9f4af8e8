import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STREAMS } from '../../store/streams.js';
import type { StageEntry } from '../../pipeline/stage.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { ledgeredEvent, stageEntries } from '../testing.js';
import type { CheckedEvent, LedgeredEvent } from '../../domain/flow.js';
import { writeLedger, type LedgerCounters } from './index.js';

let world: Isolated;

beforeAll(async () => {
  world = await isolated('ledger-write');
});
afterAll(() => world.cleanup());

function checked(overrides: Parameters<typeof ledgeredEvent>[0] = {}): CheckedEvent {
  const { overCap: _ignored, ...event } = ledgeredEvent({ capCounters: [{ key: 'cap:t:c1:2026-03-31', by: 12_500_000n }], ...overrides });
  return event;
}

async function write(batch: StageEntry<CheckedEvent>[], rowsPerStatement?: number) {
  let counts: LedgerCounters | undefined;
  const results = await writeLedger(world.sql, batch, (c) => (counts = c), rowsPerStatement);
  return { results, counts: counts! };
}

describe('ledger-write', () => {
  it('writes one row per event with its cost, breakdown, attribution and plan version, and forwards it', async () => {
    const events = [checked(), checked({ toolName: 'read_database', cost: { total: 7n, tool: 'read_database', breakdown: { tool: 7n } } })];
    const entries = stageEntries(events);
    entries[1].tags = ['cap:c9'];
    const { results, counts } = await write(entries);
    expect(counts).toEqual({ inserted: 2, duplicates: 0, redelivered: 0 });
    expect(results.map((r) => r.outputs?.[0].stream)).toEqual([STREAMS.ledgered, STREAMS.ledgered]);
    expect((results[1].outputs![0].payload as LedgeredEvent).overCap).toBe(true);
    const rows = await world.sql`SELECT * FROM usage_ledger WHERE event_id IN ${world.sql(events.map((e) => e.eventId))} ORDER BY cost_nano DESC`;
    expect(rows.length).toBe(2);
    expect(rows[0]).toMatchObject({
      tenant_id: 'ten_test',
      cost_nano: '12500000',
      cost_breakdown: { tool: '10000000', input_tokens: '2400000', output_tokens: '100000' },
      customer_id: 'cus_test',
      agent_id: 'agt_test',
      subscription_id: 'sub_test',
      rate_plan_version_id: 'rpv_test',
      rate_plan_version: 1,
      priced_tool: 'transform_schema',
      over_cap: false,
      input_tokens: '2400',
    });
    expect(rows[1].over_cap).toBe(true);
    expect(rows[0].recorded_at.getTime()).toBe(events[0].recordedAt);
  });

  it('stores every field in its column, optional ones as null, exact to the millisecond and the nano-unit', async () => {
    const full = checked({
      eventType: 'mcp.tool_invoked',
      recordedAt: Date.UTC(2026, 2, 31, 23, 59, 59, 999),
      status: 'FAILED',
      errorType: 'timeout',
      isParallel: true,
      retryCount: 2,
      durationMs: 123_456,
      inputTokens: 9_000_000_000,
      outputTokens: 7,
      model: 'claude-sonnet',
      attribution: { agentId: undefined, appId: 'app_x', productId: 'prod_x', credentialId: 'key_x' },
      cost: { total: 9_223_372_036_854_775_807n, tool: 'transform_schema', breakdown: { tool: 9_223_372_036_854_775_807n } },
    });
    const bare = checked({ sessionId: undefined, toolName: undefined, mcpServerId: undefined, model: undefined, cost: { total: 0n, tool: '', breakdown: {} } });
    await write(stageEntries([full, bare]));
    const rows = await world.sql`SELECT * FROM usage_ledger WHERE event_id IN ${world.sql([full.eventId, bare.eventId])}`;
    const byId = new Map(rows.map((row) => [row.event_id, row]));
    const f = byId.get(full.eventId)!;
    expect({ ...f, recorded_at: f.recorded_at.getTime(), ingested_at: f.ingested_at.getTime(), period_start: f.period_start.getTime() }).toMatchObject({
      tenant_id: 'ten_test',
      ingest_nonce: full.ingestNonce,
      event_type: 'mcp.tool_invoked',
      recorded_at: full.recordedAt,
      ingested_at: full.ingestedAt,
      customer_id: 'cus_test',
      team_id: 'team_test',
      agent_id: null,
      app_id: 'app_x',
      credential_id: 'key_x',
      product_id: 'prod_x',
      subscription_id: 'sub_test',
      rate_plan_id: 'rp_test',
      rate_plan_version_id: 'rpv_test',
      rate_plan_version: 1,
      period_start: full.subscription.periodStart,
      session_id: 'sess_test',
      tool_name: 'transform_schema',
      priced_tool: 'transform_schema',
      mcp_server_id: 'mcp_test',
      model: 'claude-sonnet',
      execution_status: 'FAILED',
      duration_ms: '123456',
      input_tokens: '9000000000',
      output_tokens: '7',
      retry_count: 2,
      cost_nano: '9223372036854775807',
      cost_breakdown: { tool: '9223372036854775807', input_tokens: '0', output_tokens: '0', duration: '0' },
      currency: 'USD',
      over_cap: false,
      error_type: 'timeout',
      is_parallel: true,
    });
    expect(byId.get(bare.eventId)).toMatchObject({ session_id: null, tool_name: null, priced_tool: null, mcp_server_id: null, model: null, error_type: null, is_parallel: false, cost_nano: '0' });
  });

  it('stores text as it came: quotes, backslashes, braces, commas, control characters, "NULL", empty and non-ASCII', async () => {
    const odd = checked({
      eventId: `evt_"odd"\\{id},${Date.now()}`,
      sessionId: 'sess "quoted" \\ back\\slash {brace}, comma',
      toolName: 'NULL',
      model: 'line\nbreak\ttab\u0001control',
      errorType: '',
      mcpServerId: 'ünïcødé ✓ 日本 😀',
    });
    // In the same statement as an event of plain text, which must come back as plain.
    const plain = checked();
    const { counts } = await write(stageEntries([odd, plain]));
    expect(counts).toEqual({ inserted: 2, duplicates: 0, redelivered: 0 });
    const [row] = await world.sql`SELECT * FROM usage_ledger WHERE event_id = ${odd.eventId}`;
    expect(row).toMatchObject({
      event_id: odd.eventId,
      session_id: odd.sessionId,
      tool_name: 'NULL',
      model: odd.model,
      error_type: '',
      mcp_server_id: odd.mcpServerId,
    });
    const [again] = await world.sql`SELECT session_id, tool_name FROM usage_ledger WHERE event_id = ${plain.eventId}`;
    expect(again).toEqual({ session_id: plain.sessionId, tool_name: plain.toolName });
    // Sent again: found as this submission (the key read back equal), not as a duplicate.
    const second = await write(stageEntries([odd]));
    expect(second.counts).toEqual({ inserted: 0, duplicates: 0, redelivered: 1 });
  });

  it('forwards a redelivered batch again (same ingest nonce) without a second row', async () => {
    const entries = stageEntries([checked(), checked()]);
    await write(entries);
    const { results, counts } = await write(entries);
    expect(counts).toEqual({ inserted: 0, duplicates: 0, redelivered: 2 });
    expect(results.every((r) => r.outputs?.[0].stream === STREAMS.ledgered && !r.counters)).toBe(true);
    const [{ count }] = await world.sql`SELECT count(*)::int AS count FROM usage_ledger WHERE event_id IN ${world.sql(entries.map((e) => e.payload.eventId))}`;
    expect(count).toBe(2);
  });

  it('counts a second submission of an event_id as a duplicate: not billed, not forwarded, its spend taken back', async () => {
    const original = checked();
    const again = { ...original, ingestNonce: 'another-submission', cost: { ...original.cost, total: 99n } };
    const sameBatch = { ...original, ingestNonce: 'third-submission' };
    const { results, counts } = await write(stageEntries([original, again, sameBatch]));
    expect(counts).toEqual({ inserted: 1, duplicates: 2, redelivered: 0 });
    expect(results[0].outputs![0].stream).toBe(STREAMS.ledgered);
    expect(results[1].outputs).toBeUndefined();
    expect(results[1].counters).toEqual([{ key: 'cap:t:c1:2026-03-31', by: -12_500_000n, ttlSeconds: 0 }]);
    const [row] = await world.sql`SELECT cost_nano, ingest_nonce FROM usage_ledger WHERE event_id = ${original.eventId}`;
    expect(row).toEqual({ cost_nano: '12500000', ingest_nonce: original.ingestNonce });
    const dupes = await world.sql`SELECT ingest_nonce FROM ledger_duplicates WHERE event_id = ${original.eventId} ORDER BY ingest_nonce`;
    expect(dupes.map((d) => d.ingest_nonce)).toEqual(['another-submission', 'third-submission']);
    // A month later, the same event_id again: still a duplicate.
    const later = await write(stageEntries([{ ...original, ingestNonce: 'a-month-later', recordedAt: original.recordedAt + 30 * 86_400_000 }]));
    expect(later.counts.duplicates).toBe(1);
  });

  it('writes a batch of several statements whole and in order: of one event_id twice, the first is ledgered', async () => {
    const events = Array.from({ length: 7 }, () => checked());
    const resubmitted = { ...events[1], ingestNonce: 'resubmitted-later-in-the-batch', cost: { ...events[1].cost, total: 5n } };
    const batch = [...events.slice(0, 5), resubmitted, ...events.slice(5)];
    // Two rows a statement: the event and its second submission go in different statements.
    const { results, counts } = await write(stageEntries(batch), 2);
    expect(counts).toEqual({ inserted: 7, duplicates: 1, redelivered: 0 });
    expect(results.map((r) => (r.outputs ? 'ledgered' : 'duplicate'))).toEqual(['ledgered', 'ledgered', 'ledgered', 'ledgered', 'ledgered', 'duplicate', 'ledgered', 'ledgered']);
    const rows = await world.sql`SELECT event_id, ingest_nonce FROM usage_ledger WHERE event_id IN ${world.sql(events.map((e) => e.eventId))}`;
    expect(rows.length).toBe(7);
    expect(rows.find((r) => r.event_id === events[1].eventId)?.ingest_nonce).toBe(events[1].ingestNonce);
  });

  it('tells new, redelivered and duplicate events apart in one batch', async () => {
    const before = [checked(), checked()];
    await write(stageEntries(before));
    const fresh = checked();
    const duplicate = { ...before[1], ingestNonce: 'resubmitted' };
    const { results, counts } = await write(stageEntries([fresh, before[0], duplicate, checked()]));
    expect(counts).toEqual({ inserted: 2, duplicates: 1, redelivered: 1 });
    expect(results.map((r) => (r.outputs ? 'ledgered' : 'duplicate'))).toEqual(['ledgered', 'ledgered', 'duplicate', 'ledgered']);
  });

  it('keeps the tenants apart: the same event_id under two tenants is two rows', async () => {
    const a = checked({ eventId: 'evt_shared' });
    const b = { ...checked({ eventId: 'evt_shared' }), tenantId: 'ten_other' };
    const { counts } = await write(stageEntries([a, b]));
    expect(counts.inserted).toBe(2);
  });
});
