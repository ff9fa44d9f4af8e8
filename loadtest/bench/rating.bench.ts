// npm run bench:rating: events rated per second on one core (one Node thread), and the time
// to rate a large period. A micro-benchmark, not a test: figures vary with the machine.
import { performance } from 'node:perf_hooks';
import { compilePlan } from '../../domain/rating/compile.js';
import { rateEvent, type RatingInput } from '../../domain/rating/rate-event.js';
import { ratePeriod } from '../../domain/rating/rate-period.js';
import { mergeRows, PeriodUsage, usageRows, type UsageRow } from '../../domain/rating/usage-rows.js';
import { validateRatePlan } from '../../domain/rating/plan.js';
import type { EventType, ExecutionStatus } from '../../domain/events.js';

const TOOLS = Array.from({ length: 24 }, (_, index) => `tool_${index}`);

/** Every per-event dimension, plus the period rules that add usage rows (session, band). */
const pricing = {
  tool_invocations: { ...Object.fromEntries(TOOLS.map((tool, index) => [tool, `0.00${index + 1}`])), 'tool_3@1': '0.02', '*': '0.002' },
  tool_aliases: { legacy_tool_1: 'tool_1', legacy_tool_2: 'tool_2' },
  token_multipliers: { input_tokens: '0.000001', output_tokens: '0.000002' },
  tool_multipliers: { tool_0: '0.5', tool_5: '2', tool_9: '3.5' },
  duration_buckets: [
    { max_seconds: 1, rate: '0.0001' },
    { max_seconds: 60, rate: '0.001' },
    { max_seconds: 300, rate: '0.01' },
    { max_seconds: null, rate: '0.1' },
  ],
  error_rate_penalties: { threshold: '0.05', multiplier: '1.5' },
  volume_tier_mode: 'graduated',
  volume_tiers: [
    { min_invocations: 0, discount_percent: 0 },
    { min_invocations: 100_000, discount_percent: 10 },
    { min_invocations: 1_000_000, discount_percent: 20 },
  ],
  base_session_fee: '0.05',
  included_tool_count: 10,
};
const validated = validateRatePlan(pricing);
if (!validated.ok) throw new Error(JSON.stringify(validated.errors));
const plan = compilePlan(validated.plan, 'USD');

/** Deterministic pseudo-random numbers, so every run rates the same events. */
let seed = 42;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)];

interface BenchEvent extends RatingInput {
  sessionId?: string;
  agentId?: string;
}

/** 85% listed tools, 5% aliases, 4% versioned names, 3% unknown tools, 3% session control events; 4% failed. */
function makeEvent(index: number): BenchEvent {
  const roll = random();
  const eventType: EventType = roll < 0.03 ? 'session.completed' : roll < 0.5 ? 'mcp.tool_invoked' : roll < 0.85 ? 'agent.tool_invoked' : 'api.request';
  const kind = random();
  const toolName =
    kind < 0.85 ? pick(TOOLS) : kind < 0.9 ? pick(['legacy_tool_1', 'legacy_tool_2']) : kind < 0.94 ? pick(['tool_3@1', 'tool_4@2']) : `unlisted_${index % 50}`;
  const status: ExecutionStatus = random() < 0.96 ? 'SUCCESS' : pick(['FAILED', 'TIMEOUT', 'RATE_LIMITED'] as const);
  return {
    eventType,
    toolName,
    inputTokens: Math.floor(random() * 8000),
    outputTokens: Math.floor(random() * 1500),
    durationMs: Math.floor(random() * random() * 400_000),
    status,
    sessionId: `sess_${Math.floor(index / 40)}`,
    agentId: `agent_${index % 7}`,
  };
}

const EVENTS = 1_000_000;
const events = Array.from({ length: EVENTS }, (_, index) => makeEvent(index));

function measure(label: string, rounds: number, body: () => void): number {
  body(); // warm-up
  const started = performance.now();
  for (let round = 0; round < rounds; round++) body();
  const seconds = (performance.now() - started) / 1000;
  const perSecond = Math.round((EVENTS * rounds) / seconds);
  console.log(`${label.padEnd(44)} ${perSecond.toLocaleString('en-US').padStart(12)} events/s`);
  return perSecond;
}

let sink = 0n;
const rated = measure('rateEvent', 5, () => {
  for (const event of events) sink += rateEvent(plan, event).total;
});

const withRows = measure('rateEvent + usageRows (price + invoice-rollup)', 3, () => {
  let periodCalls = 0n;
  let sessionCalls = 0n;
  let session = '';
  for (const event of events) {
    const rating = rateEvent(plan, event);
    if (event.sessionId !== session) {
      session = event.sessionId!;
      sessionCalls = 0n;
    }
    const rows = usageRows(plan, { ...event, rating }, { periodCalls, sessionCalls });
    if (rows.length > 0) {
      periodCalls++;
      sessionCalls++;
    }
  }
});

// A large period: one million events of 25,000 sessions, stored as merged rows, rated into an invoice.
const period = new PeriodUsage(plan);
for (const event of events) period.add({ ...event, rating: rateEvent(plan, event) });
const stored: UsageRow[] = [];
for (const [kind, byKey] of mergeRows(period.rows)) for (const [key, counters] of byKey) stored.push({ kind, key, counters });
const started = performance.now();
const invoice = ratePeriod([{ subscriptionId: 'sub_bench', plan, rows: stored }]);
const periodMs = performance.now() - started;
console.log(`${'ratePeriod, 1M events in ' + stored.length.toLocaleString('en-US') + ' stored rows'}`.padEnd(44), `${periodMs.toFixed(1).padStart(12)} ms (${invoice.lines.length} lines, total ${invoice.total} ${invoice.currency})`);
console.log(JSON.stringify({ rate_event_per_second: rated, rate_event_and_rows_per_second: withRows, period_rows: stored.length, period_ms: Number(periodMs.toFixed(1)), checksum: String(sink % 1000n) }));
