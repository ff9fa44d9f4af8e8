// npm run bench:hop: what one hop of the block format costs a stage process per event, apart
// from the stage's own work: decoding a block, a handler's `{ ...event, field }` copy, the block
// with the layer of what it set (blockWithLayer) and, for comparison, encoding the block whole.
// One Node thread, no I/O; CPU from process.cpuUsage over many blocks. A micro-benchmark, not a test.
import { parseArgs } from 'node:util';
import { blockWithLayer, decodeEntry, entryFields } from '../../pipeline/blocks.js';
import { encodePayload } from '../../pipeline/codec.js';
import type { CheckedEvent } from '../../domain/flow.js';
import { ledgeredEvent } from '../../stages/testing.js';

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

/** An event as it reaches ledger-write (the tests' ledgered event, before ledger-write sets overCap), varied per index. */
function checkedEvent(i: number): CheckedEvent {
  const { overCap: _, ...event } = ledgeredEvent({
    sessionId: `sess_${i % 50}`,
    toolName: `tool_${i % 24}`,
    attribution: { customerId: `cus_${i % 50}`, teamId: `team_${i % 10}`, agentId: `agt_${i % 500}`, appId: `app_${i % 100}` },
    cost: { tool: `tool_${i % 24}`, breakdown: { tool: 12_000_000n, input_tokens: 500_000n } },
    capCounters: [{ key: `cap:ten_test:cap_agent_${i % 500}:2026-03`, by: 12_500_000n }],
  });
  return event;
}

/** CPU microseconds per event of `work`, run once per block; the median of the rounds. */
function measure(name: string, work: () => unknown): void {
  const perEvent: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const before = process.cpuUsage();
    for (let b = 0; b < BLOCKS; b++) work();
    const used = process.cpuUsage(before);
    perEvent.push((used.user + used.system) / (BLOCKS * EVENTS));
  }
  perEvent.sort((a, b) => a - b);
  console.log(`${name.padEnd(58)} ${perEvent[Math.floor(ROUNDS / 2)].toFixed(2).padStart(6)} us/event (rounds: ${perEvent.map((v) => v.toFixed(2)).join(', ')})`);
}

const events = Array.from({ length: EVENTS }, (_, i) => checkedEvent(i));
const fields = entryFields(events, 'origin-1');
const base = fields[1] as Buffer;
const raw = fields.map((f) => Buffer.from(f));
const decoded = decodeEntry<CheckedEvent>('1-0', raw).events.map((e) => e.payload);
const copies = decoded.map((e) => ({ ...e, overCap: false }));
const repriced = decoded.map((e) => ({ ...e, cost: { ...e.cost, total: e.cost.total + 1n } }));

console.log(`blocks of ${EVENTS} events, ${base.length} bytes a block (${Math.round(base.length / EVENTS)} per event); ${BLOCKS} blocks a round, ${ROUNDS} rounds`);
measure('encode the block whole (msgpack)', () => encodePayload(events));
measure('decode the block (decodeEntry)', () => decodeEntry('1-0', raw));
measure('a handler copy per event ({ ...event, overCap })', () => decoded.map((e) => ({ ...e, overCap: false })));
measure("the base and a layer of one field (blockWithLayer, sets: ['overCap'])", () => blockWithLayer(base, decoded, copies, ['overCap']));
measure("the base and a layer of an object (blockWithLayer, sets: ['cost'])", () => blockWithLayer(base, decoded, repriced, ['cost']));
measure('the base and a layer, every field compared (no sets)', () => blockWithLayer(base, decoded, copies));
