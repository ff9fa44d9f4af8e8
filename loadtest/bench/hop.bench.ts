// npm run bench:hop: what one hop of the block format costs a stage process per event, apart
// from the stage's own work: decoding a block, a handler's `{ ...event, field }` copy, the block
// with the layer of what it set (blockWithLayer) and, for comparison, encoding the block whole.
// One Node thread, no I/O; CPU from process.cpuUsage over many blocks. A micro-benchmark, not a test.
import { parseArgs } from 'node:util';
import { blockWithLayer, decodeEntry, entryFields } from '../../pipeline/blocks.js';
import { encodePayload } from '../../pipeline/codec.js';
import type { CheckedEvent } from '../../domain/flow.js';

const { values } = parseArgs({
  options: {
    blocks: { type: 'string', default: '3000' },
    events: { type: 'string', default: '100' },
    rounds: { type: 'string', default: '5' },
  },
});
const BLOCKS = Number(values.blocks);
const EVENTS = Number(values.events);
const ROUNDS = Number(values.rounds);

/** An event as it reaches ledger-write: every field a stage before it adds, with realistic ids. */
function checkedEvent(i: number): CheckedEvent {
  const now = Date.now();
  return {
    tenantId: 'ten_BMmefbJ9k4PR4drvduxn',
    eventId: `evt_${i.toString(36)}_${(i * 7919).toString(36)}_7f3a9c2e1b`,
    eventType: 'tool_call',
    credential: { kind: 'api_key', keyHash: 'a3f1c9e2b7d4f6a8c0e2b4d6f8a0c2e4a3f1c9e2b7d4f6a8c0e2b4d6f8a0c2e4' },
    ingestNonce: 'Zx8Kq2Lm9Pw4',
    recordedAt: now - 1000,
    ingestedAt: now,
    sessionId: `ses_${i % 50}_4b2c8d1e`,
    toolName: `tool_${i % 24}`,
    mcpServerId: 'mcp_search_01',
    model: 'gpt-4o-mini',
    durationMs: 1200 + i,
    status: 'success',
    inputTokens: 1500,
    outputTokens: 320,
    retryCount: 0,
    isParallel: false,
    attribution: { customerId: `cus_${i % 50}_9a8b7c`, teamId: `team_${i % 10}_1d2e`, agentId: `agt_${i % 500}_5f6a7b`, appId: `app_${i % 100}_3c4d`, credentialId: 'key_8e9f0a1b2c', productKind: 'mcp_server' },
    subscription: { subscriptionId: 'sub_7c6d5e4f3a2b', ratePlanId: 'rp_standard', ratePlanVersionId: 'rpv_standard_3', ratePlanVersion: 3, currency: 'USD', periodStart: now - 86_400_000, periodEnd: now + 86_400_000 * 29 },
    cost: { total: 2_150_000n, tool: `tool_${i % 24}`, breakdown: { tool: 2_000_000n, tokens: 150_000n } },
    capCounters: [{ key: `cap:ten_BMmefbJ9k4PR4drvduxn:cap_agent_${i % 500}:2026-12`, by: 2_150_000n }],
  } as unknown as CheckedEvent;
}

/** CPU microseconds per event of `work`, run once per block; the median of the rounds. */
function measure(name: string, work: (block: number) => unknown): void {
  const perEvent: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const before = process.cpuUsage();
    for (let b = 0; b < BLOCKS; b++) work(b);
    const used = process.cpuUsage(before);
    perEvent.push((used.user + used.system) / (BLOCKS * EVENTS));
  }
  perEvent.sort((a, b) => a - b);
  console.log(`${name.padEnd(58)} ${perEvent[Math.floor(ROUNDS / 2)].toFixed(2).padStart(6)} us/event (rounds: ${perEvent.map((v) => v.toFixed(2)).join(', ')})`);
}

const events = Array.from({ length: EVENTS }, (_, i) => checkedEvent(i));
const fields = entryFields(events, 'origin-1') as Buffer[];
const raw = fields.map((f) => (typeof f === 'string' ? Buffer.from(f) : f));
const decoded = decodeEntry<CheckedEvent>('1-0', raw).events.map((e) => e.payload);
const copies = decoded.map((e) => ({ ...e, overCap: false }));
const repriced = decoded.map((e) => ({ ...e, cost: { ...e.cost, total: e.cost.total + 1n } }));

console.log(`blocks of ${EVENTS} events, ${fields[1].length} bytes a block (${Math.round(fields[1].length / EVENTS)} per event); ${BLOCKS} blocks a round, ${ROUNDS} rounds`);
measure('encode the block whole (msgpack)', () => encodePayload(events));
measure('decode the block (decodeEntry)', () => decodeEntry('1-0', raw));
measure('a handler copy per event ({ ...event, overCap })', () => decoded.map((e) => ({ ...e, overCap: false })));
measure("the base and a layer of one field (blockWithLayer, sets: ['overCap'])", () => blockWithLayer(fields[1], decoded, copies, ['overCap']));
measure("the base and a layer of an object (blockWithLayer, sets: ['cost'])", () => blockWithLayer(fields[1], decoded, repriced, ['cost']));
measure('the base and a layer, every field compared (no sets)', () => blockWithLayer(fields[1], decoded, copies));
