import { describe, expect, it } from 'vitest';
import { wireEventSchema } from '../../schemas/events.js';
import { EventMix, MIX, Zipf, type BenchActor } from './events.js';
import { Histogram } from './histogram.js';
import { parseOptions } from './options.js';

const actors: BenchActor[] = [];
for (let c = 0; c < 50; c++) {
  for (let a = 0; a < 10; a++) {
    actors.push({ kind: 'agent', product: a % 2 ? 'managed_agent' : 'mcp_server', customer: c, apiKey: `sk_live_${c}_${a}_${'x'.repeat(24)}`, clientId: `cli_${c}_${a}` });
  }
  actors.push({ kind: 'app', product: 'standard_api', customer: c, apiKey: `sk_live_app_${c}_a_${'x'.repeat(20)}` });
  actors.push({ kind: 'app', product: 'agentic_api', customer: c, apiKey: `sk_live_app_${c}_b_${'x'.repeat(20)}` });
}
const NOW = Date.parse('2026-03-31T12:00:00Z');

function sample(seed = 1, batches = 200, size = 100) {
  const mix = new EventMix(actors, 'bt-g0', seed);
  const made = Array.from({ length: batches }, (_, i) => mix.batch(size, NOW + i * 10));
  return { mix, made, events: made.flatMap((b) => b.events), seqs: made.flatMap((b) => b.seqs) };
}

describe('the benchmark event mix', () => {
  it('is the same for the same seed (the baseline sees the pipeline run events)', () => {
    expect(sample(7, 20).events).toEqual(sample(7, 20).events);
    expect(sample(7, 20).events).not.toEqual(sample(8, 20).events);
  });

  it('makes only events the ingest accepts', () => {
    for (const event of sample(1, 50).events) {
      const parsed = wireEventSchema.safeParse(event);
      expect(parsed.success, JSON.stringify(parsed.error?.issues)).toBe(true);
    }
  });

  it('repeats about 1% of event ids, each repeat carrying its original sequence number', () => {
    const { events, seqs, mix } = sample();
    const firstSeq = new Map<string, number>();
    let repeats = 0;
    events.forEach((event, i) => {
      const seen = firstSeq.get(event.event_id);
      if (seen === undefined) firstSeq.set(event.event_id, seqs[i]);
      else {
        repeats++;
        expect(seqs[i]).toBe(seen);
      }
    });
    expect(repeats / events.length).toBeGreaterThan(MIX.repeatShare * 0.7);
    expect(repeats / events.length).toBeLessThan(MIX.repeatShare * 1.3);
    expect(firstSeq.size).toBe(mix.nextSeq);
  });

  it('covers the four product kinds, sessions that end, failures, and skewed tool popularity', () => {
    const { events } = sample();
    const types = new Set(events.map((e) => e.event_type));
    expect(types).toEqual(new Set(['mcp.tool_invoked', 'agent.tool_invoked', 'api.request', 'session.completed', 'session.failed']));
    const failed = events.filter((e) => e.execution_status && e.execution_status !== 'SUCCESS').length / events.length;
    expect(failed).toBeGreaterThan(0.02);
    expect(failed).toBeLessThan(0.07);
    const tools = new Map<string, number>();
    for (const e of events.filter((e) => e.event_type === 'mcp.tool_invoked')) tools.set(String(e.tool_name), (tools.get(String(e.tool_name)) ?? 0) + 1);
    const counts = [...tools.values()].sort((a, b) => b - a);
    const total = counts.reduce((a, b) => a + b, 0);
    expect((counts[0] + counts[1] + counts[2]) / total).toBeGreaterThan(0.5);
    expect(events.some((e) => e.client_id !== undefined)).toBe(true);
  });

  it('primes one event per credential', () => {
    const mix = new EventMix(actors, 'bt-g0', 1);
    const batches = mix.prime(100, NOW);
    const events = batches.flatMap((b) => b.events);
    const credentials = actors.length + actors.filter((a) => a.clientId).length;
    expect(events).toHaveLength(credentials);
    expect(new Set(events.map((e) => e.api_key ?? e.client_id)).size).toBe(credentials);
  });

  it('draws Zipf indexes with the expected head share', () => {
    const zipf = new Zipf(20, 1.2);
    let random = 0.5;
    const next = () => (random = (random * 9301 + 49297) % 233280) / 233280;
    const counts = new Array<number>(20).fill(0);
    for (let i = 0; i < 20_000; i++) counts[zipf.sample(next)]++;
    expect(counts[0] / 20_000).toBeCloseTo(zipf.share(1), 1);
  });
});

describe('the latency histogram', () => {
  it('gives percentiles within a few percent and merges', () => {
    const a = new Histogram();
    const b = new Histogram();
    for (let i = 1; i <= 1000; i++) (i % 2 ? a : b).record(i);
    a.merge(b.sparse());
    expect(a.count).toBe(1000);
    expect(a.quantile(0.5) / 500).toBeGreaterThan(0.97);
    expect(a.quantile(0.5) / 500).toBeLessThan(1.05);
    expect(a.quantile(0.99) / 990).toBeLessThan(1.05);
    expect(a.quantile(1)).toBe(1000);
  });
});

describe('the benchmark options', () => {
  const workers = (text: string) => Object.fromEntries(text.split(',').map((p) => [p.split('=')[0], Number(p.split('=')[1])]));

  it('has a smoke mode that is short and runs from source', () => {
    const o = parseOptions(['--smoke'], workers);
    expect(o.duration).toBeLessThanOrEqual(10);
    expect(o.runtime).toBe('tsx');
    expect(o.baselineDuration).toBeLessThanOrEqual(5);
  });

  it('reads rates, workers and toggles, and refuses what it does not know', () => {
    const o = parseOptions(['--rate', 'max', '--workers', 'price=2', '--baseline', 'off', '--env', 'A=b=c'], workers);
    expect(o.rate).toBe('max');
    expect(o.workers).toEqual({ price: 2 });
    expect(o.baseline).toBe(false);
    expect(o.env).toEqual({ A: 'b=c' });
    expect(o.trace).toBe(false);
    expect(parseOptions(['--rate', '300'], workers).trace).toBe(true);
    expect(() => parseOptions(['--rate', '0'], workers)).toThrow(/positive integer/);
    expect(() => parseOptions(['--bogus'], workers)).toThrow(/unknown option/);
  });

  it("takes the generators' niceness from -20 to 19, 0 unless given", () => {
    expect(parseOptions([], workers).generatorNice).toBe(0);
    expect(parseOptions(['--generator-nice', '-10'], workers).generatorNice).toBe(-10);
    expect(parseOptions(['--generator-nice', '0'], workers).generatorNice).toBe(0);
    expect(() => parseOptions(['--generator-nice', '-21'], workers)).toThrow(/-20 to 19/);
    expect(() => parseOptions(['--generator-nice', '2.5'], workers)).toThrow(/-20 to 19/);
  });

  it('ramps a fixed rate up before the clock, min(20, duration/3) s unless given, never at --rate max', () => {
    expect(parseOptions(['--rate', '10000'], workers).ramp).toBe(20);
    expect(parseOptions(['--rate', '300', '--duration', '30'], workers).ramp).toBe(10);
    expect(parseOptions(['--rate', '10000', '--ramp', '0'], workers).ramp).toBe(0);
    expect(parseOptions(['--rate', '10000', '--ramp', '5'], workers).ramp).toBe(5);
    expect(parseOptions(['--rate', 'max'], workers).ramp).toBe(0);
    expect(() => parseOptions(['--rate', 'max', '--ramp', '5'], workers)).toThrow(/fixed --rate/);
    expect(() => parseOptions(['--ramp', '-1'], workers)).toThrow(/0 or more/);
  });
});
