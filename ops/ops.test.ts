import { describe, expect, it } from 'vitest';
import { wireEventSchema } from '../schemas/events.js';
import { parseArgs, numberFlag, toJson, UsageError } from './cli.js';
import { compareIds } from '../pipeline/keys.js';
import { MCP_TOOLS, parseDemo, seededRandom, TrafficModel, type DemoSeed } from './demo-traffic.js';
import { formatBytes, formatDuration, oneLine, renderTable } from './table.js';
import { readFileSync } from 'node:fs';
import { API_NODE_FLAGS, defaultLayout, describeLayout, isStageProcess, parseLayout, pipelineProcesses, processNices } from './start.js';
import { STAGES } from '../stages/registry.js';
import { loadConfig } from '../pipeline/config.js';

describe('parseArgs', () => {
  const spec = { values: ['limit', 'stage'], booleans: ['all', 'json'] };

  it('takes --name value, --name=value, booleans and positionals', () => {
    const args = parseArgs(['replay', 'price', '--limit', '5', '--stage=x', '--all', '1-0'], spec);
    expect(args.positional).toEqual(['replay', 'price', '1-0']);
    expect(Object.fromEntries(args.flags)).toEqual({ limit: '5', stage: 'x', all: true });
    expect(numberFlag(args, 'limit', 50)).toBe(5);
    expect(numberFlag(args, 'other', 7)).toBe(7);
  });

  it('refuses unknown flags, missing values, values on booleans and bad numbers', () => {
    expect(() => parseArgs(['--nope'], spec)).toThrow(UsageError);
    expect(() => parseArgs(['--limit'], spec)).toThrow(/needs a value/);
    expect(() => parseArgs(['--all=1'], spec)).toThrow(/takes no value/);
    expect(() => numberFlag(parseArgs(['--limit', 'x'], spec), 'limit', 1)).toThrow(/integer/);
    expect(() => numberFlag(parseArgs(['--limit', '0'], spec), 'limit', 1, { min: 1 })).toThrow(/>= 1/);
  });

  it('stops at --', () => {
    expect(parseArgs(['--', '--all'], spec).positional).toEqual(['--all']);
  });
});

describe('formatting', () => {
  it('renders aligned tables, numbers right-aligned, null as -', () => {
    expect(renderTable(['NAME', 'COUNT', 'NOTE'], [['a', 5, null], ['longer', 12345, 'x']])).toBe(
      ['NAME    COUNT  NOTE', 'a           5  -', 'longer  12345  x'].join('\n'),
    );
  });

  it('formats durations, bytes and single lines', () => {
    expect(formatDuration(850)).toBe('850ms');
    expect(formatDuration(12_300)).toBe('12.3s');
    expect(formatDuration(245_000)).toBe('4m05s');
    expect(formatDuration(7_800_000)).toBe('2h10m');
    expect(formatDuration(3 * 86_400_000 + 4 * 3_600_000)).toBe('3d04h');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1_800_000)).toBe('1.7 MiB');
    expect(oneLine('a\n  b   c', 10)).toBe('a b c');
    expect(oneLine('abcdefghijkl', 5)).toBe('abcd…');
  });

  it('prints bigint as strings and bytes as base64 in JSON', () => {
    expect(toJson({ a: 10n ** 20n, b: Buffer.from('hi'), c: new Uint8Array([1]) })).toBe(
      '{"a":"100000000000000000000","b":{"base64":"aGk="},"c":{"base64":"AQ=="}}',
    );
  });

  it('orders stream ids numerically', () => {
    expect(['10-0', '9-1', '9-0'].sort(compareIds)).toEqual(['9-0', '9-1', '10-0']);
  });
});

describe('demo traffic', () => {
  const seed: DemoSeed = {
    base_url: 'http://127.0.0.1:8080',
    ingest_token: 'tok',
    agents: Array.from({ length: 6 }, (_, i) => ({ agent_id: `agt_${i}`, api_key: `sk_live_${'k'.repeat(30)}${i}`, client_id: `cli_${i}` })),
    apps: [{ app_id: 'app_0', api_key: `sk_live_${'a'.repeat(32)}` }],
  };

  it('reads seed-demo output and says what is missing', () => {
    expect(parseDemo(JSON.stringify(seed), 'x').agents).toHaveLength(6);
    expect(() => parseDemo('{"base_url":"u"}', 'demo.json')).toThrow(/demo.json lacks ingest_token, agents/);
    expect(() => parseDemo('nope', 'stdin')).toThrow(/stdin is not JSON/);
  });

  it('generates valid events: sessions that end, client ids, API requests, skewed tools, failures, repeats', () => {
    const model = new TrafficModel(seed, { random: seededRandom(42), runId: 'test', now: () => Date.parse('2026-01-01T00:00:00Z'), duplicateRate: 0.02 });
    const events = [...Array.from({ length: 100 }, () => model.batch(50)).flat(), ...model.closeAll()];
    for (const event of events) {
      const parsed = wireEventSchema.safeParse(event);
      expect(parsed.success, JSON.stringify({ event, issues: parsed.error?.issues })).toBe(true);
    }
    const byType = model.counts.byType;
    expect(byType['mcp.tool_invoked']).toBeGreaterThan(byType['agent.tool_invoked']);
    expect(byType['api.request']).toBeGreaterThan(500);
    expect(model.counts.sessionsCompleted + model.counts.sessionsFailed).toBe(model.counts.sessionsStarted);
    expect(model.counts.sessionsFailed).toBeGreaterThan(0);
    expect(model.openSessions()).toBe(0);
    expect(events.some((e) => 'client_id' in e)).toBe(true);
    expect(events.filter((e) => e.execution_status && e.execution_status !== 'SUCCESS').length).toBeGreaterThan(100);

    const tools = new Map<string, number>();
    for (const e of events) if (e.event_type === 'mcp.tool_invoked') tools.set(String(e.tool_name), (tools.get(String(e.tool_name)) ?? 0) + 1);
    expect(tools.get(MCP_TOOLS[0].name)!).toBeGreaterThan(3 * tools.get(MCP_TOOLS[MCP_TOOLS.length - 1].name)!);

    const ids = events.map((e) => e.event_id);
    const repeats = ids.length - new Set(ids).size;
    expect(repeats).toBe(model.counts.repeatedSameBatch + model.counts.repeatedLater);
    expect(model.counts.repeatedSameBatch).toBeGreaterThan(0);
    expect(model.counts.repeatedLater).toBeGreaterThan(0);

    // Every session's events come before its end, and nothing follows the end.
    const ended = new Set<string>();
    for (const e of events) {
      const session = e.session_id as string | undefined;
      if (!session) continue;
      if (ids.indexOf(e.event_id) !== ids.lastIndexOf(e.event_id)) continue; // a planted repeat may come later
      expect(ended.has(session)).toBe(false);
      if (e.event_type === 'session.completed' || e.event_type === 'session.failed') ended.add(session);
    }
  });

  it('is reproducible from its seed', () => {
    const run = () => new TrafficModel(seed, { random: seededRandom(7), runId: 'r', now: () => 0, unknownKeyRate: 0 }).batch(20);
    expect(run()).toEqual(run());
  });
});

describe('process layout (npm start)', () => {
  const stagesOf = (specs: ReturnType<typeof pipelineProcesses>) =>
    Object.fromEntries(specs.filter(isStageProcess).map((s) => [s.name, String(s.args.at(-1)).split(',')]));

  it('groups the stages in two processes on small machines, one process per stage on larger ones', () => {
    expect(defaultLayout(2)).toBe('grouped');
    expect(defaultLayout(16)).toBe('per-stage');
    const grouped = stagesOf(pipelineProcesses({ layout: 'grouped' }));
    expect(Object.keys(grouped)).toEqual(['to-ledger#0', 'from-ledger#0']);
    expect([...grouped['to-ledger#0'], ...grouped['from-ledger#0']].sort()).toEqual(STAGES.map((s) => s.name).sort());
    const perStage = stagesOf(pipelineProcesses({ layout: 'per-stage' }));
    expect(Object.values(perStage)).toEqual(STAGES.map((s) => [s.name]));
  });

  it('splits a stage with more than one worker out of its group, one process per slot with its own WORKER_SLOT', () => {
    const specs = pipelineProcesses({ layout: 'grouped', workers: { price: 2 } });
    const byName = stagesOf(specs);
    expect(byName['to-ledger#0']).not.toContain('price');
    expect(byName['price#0']).toEqual(['price']);
    expect(specs.find((s) => s.name === 'price#1')?.env?.WORKER_SLOT).toBe('1');
    const ports = specs.filter((s) => s.env?.METRICS_PORT).map((s) => s.env!.METRICS_PORT);
    expect(new Set(ports).size).toBe(ports.length);
  });

  const niceOf = (specs: ReturnType<typeof pipelineProcesses>) => Object.fromEntries(specs.map((s) => [s.name, s.nice ?? 0]));

  it('runs the API at API_NICE, the stages up to the ledger and the webhook workers at STAGE_NICE, those after it at AFTER_LEDGER_NICE', () => {
    const env = { API_NICE: '-10', STAGE_NICE: '0', AFTER_LEDGER_NICE: '19' };
    const groupedSpecs = pipelineProcesses({ layout: 'grouped', env, mayRaisePriority: true });
    expect(niceOf(groupedSpecs)).toMatchObject({ api: -10, 'to-ledger#0': 0, 'from-ledger#0': 19, 'webhooks#0': 0 });
    // The layout printed at the start says it, so an operator sees when the order was shifted.
    expect(describeLayout(groupedSpecs)).toMatch(/^ {2}api +nice -10 +HTTP/m);
    expect(describeLayout(groupedSpecs)).toMatch(/^ {2}from-ledger#0 +nice 19 +session-update/m);
    const perStage = niceOf(pipelineProcesses({ layout: 'per-stage', env: { ...env, AFTER_LEDGER_NICE: '15' }, mayRaisePriority: true }));
    expect(perStage).toMatchObject({ 'key-resolve#0': 0, 'ledger-write#0': 0, 'session-update#0': 15, 'spend-alerts#0': 15 });
    const split = niceOf(pipelineProcesses({ layout: 'grouped', env, workers: { cogs: 2 }, mayRaisePriority: true }));
    expect(split).toMatchObject({ 'from-ledger#0': 19, 'cogs#0': 19, 'cogs#1': 19, 'to-ledger#0': 0 });
  });

  it('keeps the order, not the numbers, where it may not raise a priority: the API at 0, the others shifted up as much, at most 19', () => {
    const env = { API_NICE: '-10', STAGE_NICE: '0', AFTER_LEDGER_NICE: '15' };
    expect(niceOf(pipelineProcesses({ layout: 'grouped', env, mayRaisePriority: false }))).toMatchObject({
      api: 0,
      'to-ledger#0': 10,
      'from-ledger#0': 19,
      'webhooks#0': 10,
    });
    // Nothing below 0 asked: nothing to shift.
    const plain = { API_NICE: '0', STAGE_NICE: '10', AFTER_LEDGER_NICE: '19' };
    expect(niceOf(pipelineProcesses({ layout: 'grouped', env: plain, mayRaisePriority: false }))).toMatchObject({ api: 0, 'to-ledger#0': 10, 'from-ledger#0': 19 });
  });

  it('by default puts the API first, the way to the ledger next, the stages after it last', () => {
    const nices = processNices(loadConfig({}), true);
    expect(nices.api).toBeLessThan(nices.stage);
    expect(nices.stage).toBeLessThan(nices.afterLedger);
    expect(processNices(loadConfig({}), false)).toEqual({ api: 0, stage: 10, afterLedger: 19 });
  });

  it('refuses an unknown layout', () => {
    expect(() => parseLayout('clustered')).toThrow(/grouped or per-stage/);
  });
});

describe('the API process\'s Node flags', () => {
  it('are the ones npm start gives it and the ones npm run bench:authorize runs its server with', () => {
    const api = pipelineProcesses().find((spec) => spec.name === 'api');
    expect(api?.args.slice(0, API_NODE_FLAGS.length)).toEqual([...API_NODE_FLAGS]);
    const scripts = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }).scripts;
    expect(scripts['bench:authorize']).toBe(`node ${API_NODE_FLAGS.join(' ')} --import tsx loadtest/bench/authorize.bench.ts`);
  });
});

describe('pipelineProcesses: stage metrics ports (issue 9, defect 8)', () => {
  const ports = (specs: ReturnType<typeof pipelineProcesses>) => specs.filter(isStageProcess).map((s) => s.env?.METRICS_PORT);

  it('numbers the stages from METRICS_BASE_PORT, so a second pipeline on the host can take another range', () => {
    const specs = pipelineProcesses({ metricsBasePort: 19_000, workers: { price: 2 } });
    expect(ports(specs)).toEqual(Array.from({ length: specs.filter(isStageProcess).length }, (_, i) => String(19_000 + i)));
    expect(loadConfig({}).METRICS_BASE_PORT).toBe(9400);
    expect(loadConfig({ METRICS_BASE_PORT: '12000' }).METRICS_BASE_PORT).toBe(12_000);
  });

  it('serves no stage metrics with METRICS_BASE_PORT=0', () => {
    expect(new Set(ports(pipelineProcesses({ metricsBasePort: 0 })))).toEqual(new Set(['0']));
  });
});
