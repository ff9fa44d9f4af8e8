// The benchmark: `npm run bench -- [options]` (see options.ts or --help).
// Seeds a scratch world, runs the whole pipeline under the supervisor, drives the HTTP ingest
// from separate load generator processes, samples lag, Redis memory and CPU per process kind
// once a second (one refreshing line), waits for the pipeline to drain, reads the ledger's
// latencies and checks it holds exactly the distinct events accepted; then drives the
// baseline (one synchronous INSERT per event) with the same events; prints a table and writes
// the JSON report. Everything it starts is stopped and everything it created is dropped.
import { spawnSync, fork, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, setPriority, totalmem } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { decodePayload } from '../../pipeline/codec.js';
import { eventsOfEntries } from '../../pipeline/blocks.js';
import { streamLag } from '../../pipeline/backpressure.js';
import { STREAMS } from '../../store/streams.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { scanKeys } from '../../pipeline/redis.js';
import { createLogger } from '../../pipeline/logger.js';
import { projectPath } from '../../pipeline/paths.js';
import { freePort, freePortRange, waitHttp } from '../../test/support/pipeline.js';
import { supervise, type ChildSpec, type Supervisor } from '../../pipeline/supervisor.js';
import { TOPOLOGY } from '../../stages/registry.js';
import * as startFromSource from '../../ops/start.js';
import { BASELINE_TABLES, createBaselineTable, type BaselineMode } from './baseline.js';
import type { GeneratorConfig, GeneratorDone } from './generator.js';
import { checkExactness, ledgerLatency, ledgerRate, ledgerSeries, type Percentiles } from './ledger.js';
import { Monitor, round, startGenerators, type GeneratorEntry, type SecondSample } from './monitor.js';
import { parseOptions, USAGE, type BenchOptions } from './options.js';
import { formatProfile, summarizeProfile } from './profile.js';
import { groupsOf, pidsByName, PrefixMemoryPass, redisMemory, slope, withDescendants } from './sampler.js';
import { createScratchWorld, seedBenchWorld, type ScratchWorld } from './world.js';
import { HopTracer } from './tracer.js';
import type { HeapSample } from './heap-sampler.js';
import { printReport, type BenchReport, type PhaseReport } from './report.js';
import { schedulerAutogroups } from '../../ops/scheduler.js';

const log = createLogger('bench', process.env.BENCH_LOG_LEVEL ?? 'warn');
const tty = process.stdout.isTTY;
let lastPlainLine = 0;

function live(line: string): void {
  if (tty) process.stdout.write(`\r\x1b[K${line.slice(0, (process.stdout.columns || 200) - 1)}`);
  else if (Date.now() - lastPlainLine >= 5000) {
    lastPlainLine = Date.now();
    console.log(line);
  }
}

function endLive(): void {
  if (tty) process.stdout.write('\n');
}

function say(message: string): void {
  if (tty) process.stdout.write('\r\x1b[K');
  console.log(`bench: ${message}`);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** SCAN calls' worth of the run's Redis keys measured each second (up to ~1,000 keys each): a pass over 130,000 keys in ~65 s. */
const WORLD_SLICES_PER_SECOND = 2;

function machine(versions: { redis: string; postgres: string; clickhouse: string }): BenchReport['machine'] {
  const model = /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? 'unknown';
  return { cpus: cpus().length, model, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version, ...versions, schedulerAutogroups: schedulerAutogroups() };
}

function build(): void {
  say('building dist/ (tsc -p tsconfig.build.json) so the pipeline runs as compiled JS');
  const tsc = projectPath('node_modules', 'typescript', 'bin', 'tsc');
  const result = spawnSync(process.execPath, [tsc, '-p', projectPath('tsconfig.build.json')], { stdio: 'pipe', encoding: 'utf8' });
  if (result.status !== 0) {
    // tsc still emits when some file has type errors (a colleague's work in progress, say): go on, but say so.
    say(`tsc reported errors (dist/ was still written):\n${(result.stdout + result.stderr).split('\n').slice(0, 10).join('\n')}`);
  }
  if (!existsSync(projectPath('dist', 'ops', 'start.js'))) throw new Error('build failed: dist/ops/start.js is missing');
}

function entryOf(options: BenchOptions, name: 'generator' | 'baseline'): GeneratorEntry {
  const profile = options.profile.includes(name) ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  if (options.runtime === 'dist') return { file: projectPath('dist', 'loadtest', 'bench', `${name}.js`), execArgv: profile };
  return { file: projectPath('loadtest', 'bench', `${name}.ts`), execArgv: ['--import', 'tsx', ...profile] };
}

let profileDir = '';
let stopRequested = false;
const cleanups: (() => Promise<void> | void)[] = [];

function percentiles(h: import('./histogram.js').Histogram): Percentiles {
  return { count: h.count, p50: round(h.quantile(0.5), 1), p90: round(h.quantile(0.9), 1), p99: round(h.quantile(0.99), 1), max: round(h.max, 1) };
}

function cpuSummary(series: SecondSample[], fromS: number, toS: number): Record<string, { avg: number; max: number }> {
  const window = series.filter((s) => s.t > fromS && s.t <= toS + 1);
  const out: Record<string, { avg: number; max: number }> = {};
  for (const sample of window) {
    for (const [kind, pct] of Object.entries(sample.cpu)) {
      const entry = (out[kind] ??= { avg: 0, max: 0 });
      entry.avg += pct / window.length;
      entry.max = Math.max(entry.max, pct);
    }
  }
  for (const entry of Object.values(out)) entry.avg = Math.round(entry.avg);
  return out;
}

function cpuLine(cpu: Record<string, number>): string {
  const short: Record<string, string> = {
    'key-resolve': 'kr', 'subscription-snapshot': 'ss', price: 'pr', 'cap-check': 'cc', 'ledger-write': 'lw',
    'session-update': 'su', 'analytics-dispatch': 'ad', cogs: 'co', 'invoice-rollup': 'ir', generator: 'gen',
    postgres: 'pg', redis: 'rd', clickhouse: 'ch', baseline: 'base', bench: 'bench', api: 'api',
  };
  return Object.entries(cpu)
    .filter(([, pct]) => pct >= 1)
    .map(([kind, pct]) => `${short[kind] ?? kind} ${Math.round(pct)}`)
    .join(' ');
}

function fmt(n: number): string {
  if (!Number.isFinite(n)) return '-';
  if (Math.abs(n) >= 10_000) return `${(n / 1000).toFixed(1)}k`;
  return String(Math.round(n));
}

/** PIDs of the PostgreSQL backends serving the scratch database, plus the server's own background processes. */
function postgresPids(world: ScratchWorld): { pids: () => number[]; stop: () => void } {
  let pids: number[] = [];
  const refresh = async () => {
    try {
      const rows = await world.sql<{ pid: number }[]>`
        SELECT pid FROM pg_stat_activity WHERE datname = ${world.dbName} OR backend_type <> 'client backend'`;
      pids = rows.map((r) => r.pid);
    } catch {
      // keep the last list
    }
  };
  void refresh();
  const timer = setInterval(() => void refresh(), 3000);
  return { pids: () => pids, stop: () => clearInterval(timer) };
}

function generatorConfigs(options: BenchOptions, world: ScratchWorld, url: string, worldFile: string, runDir: string, label: string, durationS: number): GeneratorConfig[] {
  return Array.from({ length: options.generators }, (_, g) => ({
    url,
    worldFile,
    rate: options.rate === 'max' ? 0 : options.rate / options.generators,
    batch: options.batch,
    durationMs: durationS * 1000,
    concurrency: options.concurrency,
    drainMs: options.clientDrain * 1000,
    prime: g === 0,
    rampMs: options.ramp * 1000,
    seed: options.seed * 1000 + g,
    idPrefix: `b${world.tag}g${g}`,
    bitsFile: join(runDir, `${label}-g${g}.bits`),
  }));
}

function summarizeLoad(
  label: PhaseReport['label'],
  options: BenchOptions,
  monitor: Monitor,
  done: GeneratorDone[],
): Pick<PhaseReport, 'label' | 'loadSeconds' | 'steadyWindow' | 'load' | 'ingestLatencyMs' | 'backpressure'> & { loadStart: number; loadEnd: number } {
  const loadStart = monitor.startedAt;
  const loadEnd = Math.min(...done.map((d) => d.loadEndedAt));
  return {
    label,
    loadSeconds: round((loadEnd - loadStart) / 1000, 1),
    steadyWindow: { fromS: round((monitor.steadyFrom - loadStart) / 1000, 1), toS: round((Math.min(monitor.steadyTo, loadEnd) - loadStart) / 1000, 1) },
    load: {
      ...monitor.totals,
      targetRate: options.rate,
      batch: options.batch,
      generators: options.generators,
      concurrency: options.concurrency,
      generatorNice: options.generatorNice,
      ramp: {
        seconds: round(Math.max(...done.map((d) => d.ramp.seconds)), 1),
        events: done.reduce((n, d) => n + d.ramp.events, 0),
        refusals: done.reduce((n, d) => n + d.ramp.refusals, 0),
      },
      madeDistinct: done.reduce((n, d) => n + d.made, 0),
      abandonedEvents: done.reduce((n, d) => n + d.abandonedEvents, 0),
      rejectedSamples: done.flatMap((d) => d.rejectedSamples).slice(0, 5),
      errorSamples: done.flatMap((d) => d.errorSamples).slice(0, 5),
    },
    ingestLatencyMs: { all: percentiles(monitor.latencyAll), steady: percentiles(monitor.latencySteady) },
    backpressure: {
      status429: monitor.totals.status429,
      status503: monitor.totals.status503,
      latency429Ms: { p50: round(monitor.latency429Steady.quantile(0.5), 1), p99: round(monitor.latency429Steady.quantile(0.99), 1) },
      latency429AllMs: { p50: round(monitor.latency429.quantile(0.5), 1), p99: round(monitor.latency429.quantile(0.99), 1) },
      generatorLoopDelayMs: busiestLoop(done),
    },
    loadStart,
    loadEnd,
  };
}

/** The generator whose event loop ran latest at its p99. */
function busiestLoop(done: GeneratorDone[]): GeneratorDone['loopDelayMs'] {
  const worst = done.reduce((a, b) => (b.loopDelayMs.p99 > a.loopDelayMs.p99 ? b : a));
  return { p50: round(worst.loopDelayMs.p50, 1), p99: round(worst.loopDelayMs.p99, 1), max: round(worst.loopDelayMs.max, 1) };
}

/**
 * The seconds each backpressure gate has been closed so far, by `<stage> <bound>`, summed over the
 * processes whose /metrics answer (am_gate_held_seconds_total); a process that does not answer
 * within a second is left out.
 */
async function gatesHeld(ports: readonly number[]): Promise<Map<string, number>> {
  const held = new Map<string, number>();
  for (const port of ports) {
    let text: string;
    try {
      text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(1000) })).text();
    } catch {
      continue;
    }
    for (const [, labels, value] of text.matchAll(/^am_gate_held_seconds_total\{([^}]*)\} (\S+)$/gm)) {
      const stage = /stage="([^"]*)"/.exec(labels)?.[1];
      const bound = /bound="([^"]*)"/.exec(labels)?.[1];
      if (!stage || !bound) continue;
      const gate = `${stage} ${bound}`;
      held.set(gate, (held.get(gate) ?? 0) + Number(value));
    }
  }
  return held;
}

async function ledgerFigures(world: ScratchWorld, table: string, loadStart: number, steadyFrom: number, steadyTo: number, loadEnd: number) {
  const steadyFromDate = new Date(steadyFrom);
  const steadyToDate = new Date(steadyTo);
  const [all, steady, rateSteady, rateAll, series] = await Promise.all([
    ledgerLatency(world.sql, table, new Date(loadStart), new Date(Date.now() + 60_000)),
    ledgerLatency(world.sql, table, steadyFromDate, steadyToDate),
    ledgerRate(world.sql, table, steadyFromDate, steadyToDate),
    ledgerRate(world.sql, table, new Date(loadStart), new Date(loadEnd)),
    ledgerSeries(world.sql, table, loadStart),
  ]);
  return { all, steady, rateSteady, rateAll, series };
}

/** The figures both phases report the same way: rates, ledger latencies, CPU, the series. */
function phaseFigures(
  monitor: Monitor,
  summary: ReturnType<typeof summarizeLoad>,
  figures: Awaited<ReturnType<typeof ledgerFigures>>,
  steadyTo: number,
): Pick<PhaseReport, 'throughput' | 'ingestToLedgerMs' | 'cpuPct' | 'series' | 'ledgerPerSecond' | 'latencyPer5s'> {
  const rates = monitor.rates(monitor.steadyFrom, steadyTo);
  return {
    throughput: {
      offeredPerSec: rates.offered,
      acceptedPerSec: rates.accepted,
      ledgerPerSec: figures.rateSteady,
      acceptedPerSecOverall: Math.round(monitor.totals.accepted / Math.max(1, summary.loadSeconds)),
      ledgerPerSecOverall: figures.rateAll,
    },
    ingestToLedgerMs: { all: figures.all, steady: figures.steady },
    cpuPct: cpuSummary(monitor.series, summary.steadyWindow.fromS, summary.steadyWindow.toS),
    series: monitor.series,
    ledgerPerSecond: figures.series.ledgerPerSecond,
    latencyPer5s: figures.series.latencyPer5s,
  };
}

/** Whether every consumer group of every stream has been handed and has acked everything. */
async function drained(world: ScratchWorld, streams: string[]): Promise<boolean> {
  for (const stream of streams) {
    for (let p = 0; p < world.config.PARTITIONS; p++) {
      const key = partitionedKey(world.config.REDIS_PREFIX, stream, p);
      let last: string;
      try {
        const info = (await world.redis.xinfo('STREAM', key)) as unknown[];
        last = String(info[info.indexOf('last-generated-id') + 1]);
      } catch {
        continue; // no such stream
      }
      const groups = (await world.redis.xinfo('GROUPS', key)) as unknown[][];
      for (const g of groups) {
        const info: Record<string, unknown> = {};
        for (let i = 0; i < g.length; i += 2) info[String(g[i])] = g[i + 1];
        if (Number(info.pending) !== 0 || String(info['last-delivered-id']) !== last) return false;
      }
    }
  }
  return true;
}

/**
 * Starts the generators (at --generator-nice), waits until they are ready (and `beforeClock`), starts
 * the clock and the monitor, and waits for every generator to finish its load and its drain.
 */
async function drive(
  options: BenchOptions,
  configs: GeneratorConfig[],
  monitor: Monitor,
  warmupS: number,
  durationS: number,
  onPids: (pids: number[]) => void,
  beforeClock?: () => Promise<void>,
): Promise<GeneratorDone[]> {
  const generators = startGenerators(entryOf(options, 'generator'), configs, monitor, options.generatorNice);
  onPids(generators.children.map((c) => c.pid!).filter(Boolean));
  const stopWatch = setInterval(() => stopRequested && generators.stop(), 200);
  try {
    await generators.ready;
    await beforeClock?.();
    monitor.start();
    monitor.steadyFrom = monitor.startedAt + warmupS * 1000;
    monitor.steadyTo = monitor.startedAt + durationS * 1000;
    generators.go();
    return await generators.done;
  } finally {
    clearInterval(stopWatch);
  }
}

/** Rows inserted plus rows updated so far, by table (pg_stat_user_tables of the scratch database). */
async function rowWrites(sql: ScratchWorld['sql']): Promise<Map<string, number>> {
  const rows = await sql<{ table: string; n: string }[]>`
    SELECT relname AS table, (n_tup_ins + n_tup_upd)::text AS n FROM pg_stat_user_tables`;
  return new Map(rows.map((r) => [r.table, Number(r.n)]));
}

async function runPipelinePhase(options: BenchOptions, world: ScratchWorld, worldFile: string, runDir: string): Promise<PhaseReport> {
  const start =
    options.runtime === 'dist'
      ? ((await import(pathToFileURL(projectPath('dist', 'ops', 'start.js')).href)) as typeof startFromSource)
      : startFromSource;
  const httpPort = await freePort();
  const stageCount = start.pipelineProcesses({ layout: options.layout, workers: options.workers }).length;
  const metricsBasePort = await freePortRange(stageCount);
  const env: Record<string, string> = {
    ...world.env,
    HTTP_HOST: '127.0.0.1',
    HTTP_PORT: String(httpPort),
    LOG_LEVEL: options.logLevel,
    ...(options.highWater ? { BACKPRESSURE_HIGH: String(options.highWater), BACKPRESSURE_LOW: String(Math.floor(options.highWater / 2)) } : {}),
    ...options.env,
  };
  const specs: ChildSpec[] = start.pipelineProcesses({ layout: options.layout, workers: options.workers, apiProcesses: options.apiProcesses, metricsBasePort, env });
  const kindOf = (name: string) => name.split('#')[0];
  for (const spec of specs) {
    if (options.profile.includes(kindOf(spec.name))) spec.args.unshift('--cpu-prof', `--cpu-prof-dir=${profileDir}`);
    if (options.heapProfile.includes(kindOf(spec.name))) {
      const sampler = options.runtime === 'dist' ? projectPath('dist', 'loadtest', 'bench', 'heap-sampler.js') : projectPath('loadtest', 'bench', 'heap-sampler.ts');
      spec.args.unshift('--import', sampler);
      spec.env = { ...spec.env, HEAP_SAMPLE_DIR: profileDir };
    }
  }
  const stagePorts = specs.filter((s) => s.env?.METRICS_PORT).map((s) => ({ name: s.name, port: Number(s.env!.METRICS_PORT) }));
  // /readyz of each stage process says when it reads; after that the benchmark leaves its metrics port alone.
  say(
    `starting the pipeline (${options.runtime === 'dist' ? 'compiled JS from dist/' : 'from source with tsx'}), ${options.layout} layout` +
      `${options.apiProcesses > 1 ? ` (api x${options.apiProcesses})` : ''}:\n${start.describeLayout(specs)}`,
  );
  const supervisor: Supervisor = supervise(specs, createLogger('bench-supervisor', 'warn'), 20_000);
  let stopped = false;
  const stopPipeline = async () => {
    if (stopped) return;
    stopped = true;
    await supervisor.stop();
  };
  cleanups.push(stopPipeline);
  const pidNames = new Map<number, string>();
  const pg = postgresPids(world);
  cleanups.push(pg.stop);

  try {
    const apiAlive = () => supervisor.children().has('api');
    await waitHttp(`http://127.0.0.1:${httpPort}/readyz`, 90_000, 'the ingest API', apiAlive);
    for (const { name, port } of stagePorts) await waitHttp(`http://127.0.0.1:${port}/readyz`, 90_000, `stage ${name}`);
    say(`pipeline ready: ingest on http://127.0.0.1:${httpPort}, stage metrics on ports ${metricsBasePort}..${metricsBasePort + stagePorts.length - 1}`);
    if (options.reniceStages) {
      // Lower the stage workers' CPU priority, so the ingest keeps answering (and refusing) promptly when the machine is saturated.
      for (const [name, child] of supervisor.children()) {
        if (kindOf(name) !== 'api' && child.pid) setPriority(child.pid, options.reniceStages);
      }
      say(`stage workers reniced to ${options.reniceStages} (the API keeps priority)`);
    }

    // CPU per process kind: the supervisor's children by name (with their descendants: the API's cluster workers).
    const kinds = new Map<string, () => number[]>();
    for (const spec of specs) {
      const kind = kindOf(spec.name);
      if (kinds.has(kind)) continue;
      kinds.set(kind, () => {
        const pids: number[] = [];
        for (const [name, child] of supervisor.children()) {
          if (kindOf(name) !== kind || !child.pid) continue;
          for (const pid of withDescendants(child.pid)) {
            pids.push(pid);
            pidNames.set(pid, name);
          }
        }
        return pids;
      });
    }
    let generatorPids: number[] = [];
    kinds.set('generator', () => generatorPids);
    const redisPids = pidsByName(['redis-server']);
    const clickhousePids = pidsByName(['clickhouse-serv', 'clickhouse-server', 'clickhouse']);
    kinds.set('redis', () => redisPids);
    kinds.set('postgres', pg.pids);
    kinds.set('clickhouse', () => clickhousePids);
    kinds.set('bench', () => [process.pid]);

    const prefix = world.config.REDIS_PREFIX;
    const consumed = [...new Set(TOPOLOGY.map((t) => t.stream))];
    const streamKeys = (stream: string) => Array.from({ length: world.config.PARTITIONS }, (_, p) => partitionedKey(prefix, stream, p));
    let lastStage = new Map<string, number>();
    let lastStageAt = 0;
    let second = 0;
    let streamsMB = 0;
    const worldMemory = new PrefixMemoryPass(world.redis, prefix, WORLD_SLICES_PER_SECOND);
    const streamsBytes = async () => {
      let bytes = 0;
      for (const stream of [...consumed, STREAMS.ledgered, STREAMS.rejected]) {
        for (const key of streamKeys(stream)) bytes += Number((await world.redis.call('MEMORY', 'USAGE', key)) ?? 0);
      }
      return bytes;
    };
    const probe = async () => {
      second++;
      const lag: Record<string, number> = {};
      let lagTotal = 0;
      for (const stream of consumed) {
        let worst = 0;
        for (const key of streamKeys(stream)) worst = Math.max(worst, await streamLag(world.redis, key));
        lag[stream.replace('events:', '')] = worst;
        lagTotal += worst;
      }
      const memory = await redisMemory(world.redis);
      // Every key of the run (streams, caches, counters, session state): the memory that must stay
      // flat, by a pass of MEMORY USAGE over its keys, a few thousand keys a second (PrefixMemoryPass):
      // a sample carries the totals of the pass it completes, NaN otherwise (the slope is fitted to
      // the passes themselves). A pass every 10 s in one go took ~2 s at 130,000 keys, a burst that
      // competed with the API.
      const pass = await worldMemory.step();
      // The streams' share, measured as a pass completes (their length follows the lag; the rest is what could leak), and every 5 s.
      const streamsNow = pass || second % 5 === 1 ? (await streamsBytes()) / 2 ** 20 : NaN;
      if (second % 5 === 1) streamsMB = round(streamsNow, 1);
      const worldMB = pass ? round(pass.bytes / 2 ** 20, 2) : NaN;
      const worldKeys = pass ? pass.keys : NaN;
      const worldStreamsMB = pass ? round(streamsNow, 2) : NaN;
      // Events read per stage per second, from each consumer group's entries-read counter in Redis
      // (not from the stages' /metrics: rendering those costs the stage a few ms of its event loop).
      const totals = new Map<string, number>();
      const groupLag: Record<string, number> = {};
      for (const stream of consumed) {
        for (const key of streamKeys(stream)) {
          for (const g of await groupsOf(world.redis, key, stream)) {
            totals.set(g.group, (totals.get(g.group) ?? 0) + (g.entriesRead || 0));
            groupLag[g.group] = (groupLag[g.group] ?? 0) + (Number.isFinite(g.lag) ? g.lag : 0);
          }
        }
      }
      const now = Date.now();
      const stageRates: Record<string, number> = {};
      for (const [stage, n] of totals) stageRates[stage] = lastStageAt ? Math.round(((n - (lastStage.get(stage) ?? 0)) * 1000) / (now - lastStageAt)) : 0;
      lastStage = totals;
      lastStageAt = now;
      // A live sample of ingest-to-ledger latency: the newest entries of the ledgered stream (entry id time - ingestedAt).
      let l2lSample = NaN;
      // The newest five entries only (an entry is one event or a block of them, pipeline/blocks.ts):
      // reading and decoding more blocks a second would take the pipeline's CPU.
      const latest = (await world.redis.xrevrangeBuffer(streamKeys(STREAMS.ledgered)[0], '+', '-', 'COUNT', 5)) as [Buffer, Buffer[]][];
      const fresh = latest.filter(([id]) => now - Number(id.toString().split('-')[0]) < 3000);
      if (fresh.length) {
        const latencies = eventsOfEntries<{ ingestedAt: number }>(fresh).map(({ id, payload }) => Number(id.split('-')[0]) - payload.ingestedAt);
        latencies.sort((a, b) => a - b);
        l2lSample = latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))];
      }
      return {
        lag,
        lagTotal,
        redisMB: round(memory.usedBytes / 2 ** 20, 1),
        redisRssMB: round(memory.rssBytes / 2 ** 20, 1),
        streamsMB,
        worldMB,
        worldKeys,
        worldStreamsMB,
        stageRates,
        groupLag,
        l2lSample,
      };
    };

    let tracer: HopTracer | undefined;
    let traceTimer: NodeJS.Timeout | undefined;
    if (options.trace && world.config.PARTITIONS === 1) {
      const flow = [STREAMS.ingested, STREAMS.resolved, STREAMS.attributed, STREAMS.priced, STREAMS.checked, STREAMS.ledgered];
      tracer = new HopTracer(
        world.redis,
        flow.map((stream) => streamKeys(stream)[0]),
        ['api (validate + XADD)', 'key-resolve', 'subscription-snapshot', 'price', 'cap-check', 'ledger-write'],
      );
      let tracing = false;
      traceTimer = setInterval(() => {
        if (tracing) return;
        tracing = true;
        tracer!
          .pass()
          .catch((err: Error) => log.warn({ err }, 'trace pass failed'))
          .finally(() => (tracing = false));
      }, 250);
    }

    const durationS = options.duration;
    const monitor = new Monitor(kinds, probe, (s) => {
      const ledger = (s.stageRates as Record<string, number>)['ledger-write'] ?? 0;
      live(
        `[pipeline ${String(Math.round(s.t)).padStart(4)}s/${durationS}s] offered ${fmt(s.offered)}/s accepted ${fmt(s.accepted)}/s ledger ${fmt(ledger)}/s` +
          ` | lag ${fmt(s.lagTotal as number)} | ingest p50 ${s.ingestP50} p99 ${s.ingestP99} ms | to-ledger ~${fmt(s.l2lSample as number)} ms` +
          `${s.status429 ? ` | 429 ${s.status429}` : ''}${s.backlogEvents ? ` backlog ${fmt(s.backlogEvents)}` : ''}` +
          ` | redis ${s.redisMB} MB | cpu% ${cpuLine(s.cpu)}`,
      );
    });
    const configs = generatorConfigs(options, world, `http://127.0.0.1:${httpPort}/v1/events`, worldFile, runDir, 'pipeline', durationS);
    let rowWritesAtStart = new Map<string, number>();
    let ledgerRowsAtStart = 0;
    const metricsPorts = [httpPort, ...stagePorts.map((s) => s.port)];
    let gatesAtStart = new Map<string, number>();
    const done = await drive(options, configs, monitor, options.warmup, durationS, (pids) => {
      generatorPids = pids;
      for (const pid of pids) pidNames.set(pid, 'generator');
    }, async () => {
      // The priming events (one per credential) and the ramp are in: let the pipeline finish them before the clock starts.
      const primedAt = Date.now();
      while (!(await drained(world, consumed)) && Date.now() - primedAt < 60_000) await sleep(100);
      const ramp = options.ramp > 0 ? ` and ${options.ramp} s of load rising to ${fmt(options.rate as number)}/s` : '';
      say(`pipeline primed (one event per credential${ramp}; drained ${round((Date.now() - primedAt) / 1000, 1)} s after); the load starts`);
      rowWritesAtStart = await rowWrites(world.sql);
      ledgerRowsAtStart = (await world.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM usage_ledger`)[0].n;
      gatesAtStart = await gatesHeld(metricsPorts);
      if (tracer) tracer.from = Date.now() + options.warmup * 1000;
    });
    const clientDone = Date.now();
    const gatesHeldSeconds: Record<string, number> = {};
    for (const [gate, seconds] of await gatesHeld(metricsPorts)) {
      const during = seconds - (gatesAtStart.get(gate) ?? 0);
      if (during > 0) gatesHeldSeconds[gate] = round(during, 1);
    }
    // Let the pipeline finish what was accepted: every group of every stream fully acked.
    let isDrained = false;
    while (Date.now() - clientDone < options.drainTimeout * 1000 && !stopRequested) {
      if (await drained(world, consumed)) {
        isDrained = true;
        break;
      }
      await sleep(100);
    }
    const drainSeconds = round((Date.now() - clientDone) / 1000, 1);
    clearInterval(traceTimer);
    await monitor.stop();
    endLive();
    say(isDrained ? `pipeline drained ${drainSeconds} s after the load` : `pipeline NOT drained after ${drainSeconds} s`);

    const summary = summarizeLoad('pipeline', options, monitor, done);
    const steadyTo = Math.min(monitor.steadyTo, summary.loadEnd);
    say('reading the ledger: latencies, throughput, exactness');
    const figures = await ledgerFigures(world, 'usage_ledger', summary.loadStart, monitor.steadyFrom, steadyTo, summary.loadEnd);
    const exactness = await checkExactness(
      world.sql,
      'usage_ledger',
      configs.map((c) => ({ prefix: c.idPrefix, bitsFile: c.bitsFile })),
    );
    const [{ n: ledgerDuplicates }] = await world.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM ledger_duplicates`;
    // PostgreSQL row writes (inserts + updates) per ledgered event, by table, over the load.
    await sleep(1500); // the statistics of the last transactions reach pg_stat_user_tables within a second
    const rowWritesAtEnd = await rowWrites(world.sql);
    const ledgered = exactness.ledgerRows - ledgerRowsAtStart;
    const rowsPerEvent: Record<string, number> = {};
    for (const [table, n] of rowWritesAtEnd) {
      const written = n - (rowWritesAtStart.get(table) ?? 0);
      if (written > 0 && ledgered > 0) rowsPerEvent[table] = round(written / ledgered, 3);
    }
    let rejectedEntries = 0;
    const rejectedSamples: unknown[] = [];
    for (const key of streamKeys(STREAMS.rejected)) {
      rejectedEntries += await world.redis.xlen(key);
      const entries = (await world.redis.xrangeBuffer(key, '-', '+', 'COUNT', 3)) as [Buffer, Buffer[]][];
      for (const [, fields] of entries) {
        const r = decodePayload<{ stage: string; code: string; reason: string }>(fields[1]);
        rejectedSamples.push({ stage: r.stage, code: r.code, reason: r.reason });
      }
    }
    let deadLetters = 0;
    for await (const keys of scanKeys(world.redis, `${prefix}dead:*`)) {
      for (const key of keys) deadLetters += await world.redis.xlen(key);
    }

    say('stopping the pipeline');
    await stopPipeline();
    pg.stop();
    const profiles = collectProfiles(pidNames);
    const allocations = await collectHeapSamples(world, pidNames);

    const series = monitor.series;
    const window = { fromS: summary.steadyWindow.fromS, toS: summary.steadyWindow.toS };
    const loadEndS = (summary.loadEnd - summary.loadStart) / 1000;
    const steadyRunMemory = series
      .filter((s) => s.t > window.fromS && s.t <= window.toS && Number.isFinite(s.worldMB as number))
      .map((s): [number, number] => [s.t / 60, s.worldMB as number]);
    const runMemory = series.map((s) => s.worldMB as number).filter(Number.isFinite);
    const steadyRunMemoryWithoutStreams = series
      .filter((s) => s.t > window.fromS && s.t <= window.toS && Number.isFinite((s.worldMB as number) - (s.worldStreamsMB as number)))
      .map((s): [number, number] => [s.t / 60, (s.worldMB as number) - (s.worldStreamsMB as number)]);
    const memoryValues = series.map((s) => s.redisMB as number).filter(Number.isFinite);
    const maxByStream: Record<string, number> = {};
    for (const s of series) for (const [stream, n] of Object.entries(s.lag as Record<string, number>)) maxByStream[stream] = Math.max(maxByStream[stream] ?? 0, n);
    const atLoadEnd = series.filter((s) => s.t <= loadEndS + 0.5).at(-1);
    const phase: PhaseReport = {
      ...summary,
      ...phaseFigures(monitor, summary, figures, steadyTo),
      drainSeconds,
      drained: isDrained,
      gatesHeldSeconds,
      lag: {
        max: Math.max(0, ...series.map((s) => s.lagTotal as number)),
        atLoadEnd: (atLoadEnd?.lagTotal as number) ?? NaN,
        maxByStream,
        atLoadEndByStream: (atLoadEnd?.lag as Record<string, number>) ?? {},
        atLoadEndByStage: (atLoadEnd?.groupLag as Record<string, number>) ?? {},
        steadySlopePerSec: round(
          slope(series.filter((s) => s.t > window.fromS && s.t <= window.toS).map((s): [number, number] => [s.t, s.lagTotal as number])),
          1,
        ),
      },
      sustained: false,
      redisMemoryMB: {
        start: memoryValues[0] ?? NaN,
        min: Math.min(...memoryValues),
        max: Math.max(...memoryValues),
        end: memoryValues.at(-1) ?? NaN,
        streamsMaxMB: Math.max(0, ...series.map((s) => s.streamsMB as number)),
        runKeysMB: {
          start: runMemory[0] ?? NaN,
          max: Math.max(...runMemory),
          end: runMemory.at(-1) ?? NaN,
          steadySlopeMBPerMin: round(slope(steadyRunMemory), 3),
          steadySlopeWithoutStreamsMBPerMin: round(slope(steadyRunMemoryWithoutStreams), 3),
          keysMax: Math.max(0, ...series.map((s) => s.worldKeys as number).filter(Number.isFinite)),
        },
      },
      exactness: { ...exactness, ledgerDuplicatesRecorded: ledgerDuplicates, rejectedEntries, rejectedSamples, deadLetters, rowsPerEvent },
      profiles,
      allocations,
      trace: tracer?.summary(),
    };
    const offered = phase.throughput.offeredPerSec;
    phase.sustained =
      phase.load.status429 === 0 &&
      phase.load.skippedRequests === 0 &&
      phase.lag!.steadySlopePerSec < 0.01 * offered &&
      phase.lag!.atLoadEnd <= Math.max(1000, 2 * offered) &&
      phase.throughput.ledgerPerSec >= 0.95 * offered;
    return phase;
  } finally {
    await stopPipeline();
    pg.stop();
  }
}

const BASELINES: Record<BaselineMode, { label: PhaseReport['label']; says: string }> = {
  'per-event': { label: 'baseline', says: 'one synchronous INSERT per event' },
  'per-request': { label: 'baseline-batch', says: 'one synchronous multi-row INSERT per request' },
};

async function runBaselinePhase(
  mode: BaselineMode,
  options: BenchOptions,
  world: ScratchWorld,
  worldFile: string,
  runDir: string,
  tenantId: string,
  token: string,
): Promise<PhaseReport> {
  const { label, says } = BASELINES[mode];
  const table = BASELINE_TABLES[mode];
  await createBaselineTable(world.sql, mode);
  const port = await freePort();
  const entry = entryOf(options, 'baseline');
  say(`starting the ${label} (${says}, ${options.baselinePool} connections per process, ${options.apiProcesses} process(es))`);
  const child: ChildProcess = fork(entry.file, [], {
    execArgv: entry.execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: {
      ...process.env,
      DATABASE_URL: world.config.DATABASE_URL,
      BASELINE_PORT: String(port),
      BASELINE_POOL: String(options.baselinePool),
      BASELINE_PROCESSES: String(options.apiProcesses),
      BASELINE_TOKEN: token,
      BASELINE_TENANT: tenantId,
      BASELINE_MODE: mode,
    },
  });
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.on('exit', () => {
      exited = true;
      resolve();
    }),
  );
  const stop = async () => {
    if (exited) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exit;
    clearTimeout(killer);
  };
  cleanups.push(stop);
  const pg = postgresPids(world);
  cleanups.push(pg.stop);
  const pidNames = new Map<number, string>();
  try {
    await waitHttp(`http://127.0.0.1:${port}/healthz`, 60_000, 'the baseline server', () => !exited);
    let generatorPids: number[] = [];
    const kinds = new Map<string, () => number[]>([
      ['baseline', () => withDescendants(child.pid!).map((pid) => {
        pidNames.set(pid, label);
        return pid;
      })],
      ['generator', () => generatorPids],
      ['postgres', pg.pids],
      ['bench', () => [process.pid]],
    ]);
    const durationS = options.baselineDuration;
    const monitor = new Monitor(kinds, undefined, (s) =>
      live(
        `[${label} ${String(Math.round(s.t)).padStart(4)}s/${durationS}s] offered ${fmt(s.offered)}/s accepted ${fmt(s.accepted)}/s` +
          ` | ingest p50 ${s.ingestP50} p99 ${s.ingestP99} ms${s.skippedRequests ? ` | behind: ${s.skippedRequests} requests skipped` : ''} | cpu% ${cpuLine(s.cpu)}`,
      ),
    );
    const configs = generatorConfigs(options, world, `http://127.0.0.1:${port}/v1/events`, worldFile, runDir, label, durationS);
    const done = await drive(options, configs, monitor, Math.min(options.warmup, durationS / 5), durationS, (pids) => (generatorPids = pids));
    await monitor.stop();
    endLive();
    await stop();
    pg.stop();
    const profiles = collectProfiles(pidNames);
    const summary = summarizeLoad(label, options, monitor, done);
    const steadyTo = Math.min(monitor.steadyTo, summary.loadEnd);
    const figures = await ledgerFigures(world, table, summary.loadStart, monitor.steadyFrom, steadyTo, summary.loadEnd);
    const exactness = await checkExactness(
      world.sql,
      table,
      configs.map((c) => ({ prefix: c.idPrefix, bitsFile: c.bitsFile })),
    );
    return {
      ...summary,
      ...phaseFigures(monitor, summary, figures, steadyTo),
      exactness,
      profiles,
    };
  } finally {
    await stop();
    pg.stop();
  }
}

/** Summaries of the .cpuprofile files written since the last call (named by the process that wrote them). */
const summarized = new Set<string>();
function collectProfiles(pidNames: Map<number, string>): PhaseReport['profiles'] {
  if (!profileDir || !existsSync(profileDir)) return undefined;
  const out: NonNullable<PhaseReport['profiles']> = [];
  for (const file of readdirSync(profileDir).filter((f) => f.endsWith('.cpuprofile')).sort()) {
    if (summarized.has(file)) continue;
    summarized.add(file);
    const pid = Number(/\.(\d+)\.\d+\.\d+\.cpuprofile$/.exec(file)?.[1]);
    const name = pidNames.get(pid) ?? `pid ${pid}`;
    const path = join(profileDir, file);
    try {
      out.push({ process: name, file: relative(process.cwd(), path), summary: summarizeProfile(path, 12) });
    } catch (err) {
      say(`could not read profile ${file}: ${(err as Error).message}`);
    }
  }
  return out;
}

/**
 * The allocation samples of --heap-profile (loadtest/bench/heap-sampler.ts): per process, the
 * bytes allocated in its window over the events ledgered in that window, and the top sites.
 */
async function collectHeapSamples(world: ScratchWorld, pidNames: Map<number, string>): Promise<PhaseReport['allocations']> {
  if (!profileDir || !existsSync(profileDir)) return undefined;
  const out: NonNullable<PhaseReport['allocations']> = [];
  for (const file of readdirSync(profileDir).filter((f) => /^heap\.\d+\.json$/.test(f))) {
    const sample = JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as HeapSample;
    const [{ n }] = await world.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM usage_ledger WHERE ledgered_at >= ${new Date(sample.fromMs)} AND ledgered_at < ${new Date(sample.toMs)}`;
    out.push({
      process: pidNames.get(sample.pid) ?? `pid ${sample.pid}`,
      seconds: round((sample.toMs - sample.fromMs) / 1000, 1),
      megabytes: round(sample.bytes / 1e6, 1),
      ledgered: n,
      kilobytesPerEvent: n > 0 ? round(sample.bytes / n / 1000, 2) : NaN,
      top: sample.top.slice(0, 15).map((t) => ({ share: round((100 * t.bytes) / sample.bytes, 1), megabytes: round(t.bytes / 1e6, 1), site: t.site })),
    });
  }
  return out.length ? out : undefined;
}

function gitCommit(): BenchReport['commit'] {
  const git = (...args: string[]) => spawnSync('git', args, { cwd: projectPath(), encoding: 'utf8' });
  const sha = git('rev-parse', '--short', 'HEAD').stdout?.trim() || 'unknown';
  const dirty = (git('status', '--porcelain', '--untracked-files=no').stdout ?? '').trim().length > 0;
  return { sha, dirty };
}

async function versions(world: ScratchWorld): Promise<{ redis: string; postgres: string; clickhouse: string }> {
  const info = await world.redis.info('server');
  const redis = /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
  const [{ v }] = await world.sql<{ v: string }[]>`SELECT current_setting('server_version') AS v`;
  let clickhouse = '?';
  try {
    const res = await fetch(`${world.config.CLICKHOUSE_URL}/?query=SELECT%20version()`, { signal: AbortSignal.timeout(2000) });
    clickhouse = (await res.text()).trim();
  } catch {
    // not reachable: reported as unknown
  }
  return { redis, postgres: v, clickhouse };
}

function targets(report: BenchReport): BenchReport['targets'] {
  const p = report.pipeline;
  const out: BenchReport['targets'] = [];
  const rate = report.options.rate;
  const sustained = !!p.sustained;
  out.push({
    target: '>= 10,000 events/s through all stages for 5 min, Redis memory flat',
    measured: `${fmt(p.throughput.ledgerPerSec)}/s ledgered (steady), offered ${fmt(p.throughput.offeredPerSec)}/s, ${p.loadSeconds} s, run's Redis keys ${p.redisMemoryMB?.runKeysMB.start} -> ${p.redisMemoryMB?.runKeysMB.end} MB (slope ${p.redisMemoryMB?.runKeysMB.steadySlopeMBPerMin} MB/min)`,
    ok:
      rate !== 'max' && rate >= 10_000 && p.loadSeconds >= 295
        ? sustained && p.throughput.ledgerPerSec >= 10_000 && Math.abs(p.redisMemoryMB?.runKeysMB.steadySlopeMBPerMin ?? Infinity) < 1
        : null,
  });
  out.push({
    target: 'ingest-to-ledger p99 <= 50 ms at 300/s',
    measured: `p99 ${p.ingestToLedgerMs.steady.p99} ms at ${fmt(p.throughput.offeredPerSec)}/s`,
    ok: rate === 300 ? p.ingestToLedgerMs.steady.p99 <= 50 : null,
  });
  out.push({
    target: 'ingest-to-ledger p99 <= 250 ms at 10,000/s',
    measured: `p99 ${p.ingestToLedgerMs.steady.p99} ms at ${fmt(p.throughput.offeredPerSec)}/s`,
    ok: rate === 10_000 ? sustained && p.ingestToLedgerMs.steady.p99 <= 250 : null,
  });
  out.push({
    target: 'over capacity: 429 + Retry-After, memory bounded, nothing accepted lost',
    measured: `${p.load.status429} x 429, Redis max ${p.redisMemoryMB?.max} MB, ${p.exactness.missing} missing, ${p.exactness.extra} extra`,
    ok: p.load.status429 > 0 ? p.exactness.exact : null,
  });
  out.push({
    target: 'ledger throughput >= 2.0x the baseline of one INSERT per event (--rate max)',
    measured: `${report.ratioToBaseline ?? '-'}x; ${report.ratioToBatchBaseline ?? '-'}x the baseline of one INSERT per request`,
    ok: rate === 'max' && report.ratioToBaseline !== undefined ? report.ratioToBaseline >= 2 : null,
  });
  out.push({
    target: 'the ledger holds exactly the distinct events accepted',
    measured: `${p.exactness.ledgerRows} rows, ${p.exactness.sentDistinct} distinct accepted, ${p.exactness.missing} missing, ${p.exactness.extra} extra`,
    ok: p.exactness.exact,
  });
  return out;
}

async function main(): Promise<number> {
  let options: BenchOptions;
  try {
    options = parseOptions(process.argv.slice(2), startFromSource.parseWorkers);
  } catch (err) {
    console.error(`bench: ${(err as Error).message}`);
    return 2;
  }
  if (options.help) {
    console.log(USAGE);
    return 0;
  }
  const command = `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim();
  const began = Date.now();
  if (options.runtime === 'dist' && options.build) build();

  if (options.redis === 'cluster') {
    say('the local Redis Cluster (bash ops/redis-cluster.sh: 3 masters + 3 replicas, started when down)');
    const started = spawnSync('bash', [projectPath('ops', 'redis-cluster.sh')], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
    if (started.status !== 0) throw new Error('ops/redis-cluster.sh failed');
    options.env.REDIS_URL ??= /REDIS_URL=(\S+)/.exec(started.stdout)?.[1] ?? 'redis+cluster://127.0.0.1:7100';
  }
  say('creating a scratch world (PostgreSQL database, Redis prefix, ClickHouse database)');
  const world = await createScratchWorld(options.env);
  cleanups.push(() => world.cleanup());
  const runDir = projectPath('.bench', `run-${world.tag}`);
  mkdirSync(runDir, { recursive: true });
  cleanups.push(() => rmSync(runDir, { recursive: true, force: true }));
  if (options.profile.length || options.heapProfile.length) {
    profileDir = projectPath('.bench', 'profiles', world.tag);
    mkdirSync(profileDir, { recursive: true });
  }

  const seeded = await seedBenchWorld(world.sql);
  const worldFile = join(runDir, 'world.json');
  writeFileSync(worldFile, JSON.stringify(seeded));
  const products: Record<string, number> = {};
  for (const actor of seeded.actors) products[actor.product] = (products[actor.product] ?? 0) + 1;
  say(
    `seeded tenant ${seeded.tenantId}: 50 customers, ${seeded.actors.filter((a) => a.kind === 'agent').length} agents, ` +
      `${seeded.actors.filter((a) => a.kind === 'app').length} apps (${Object.entries(products).map(([k, n]) => `${k} ${n}`).join(', ')}); db ${world.dbName}, prefix ${world.config.REDIS_PREFIX}`,
  );

  const pipeline = await runPipelinePhase(options, world, worldFile, runDir);
  let baseline: PhaseReport | undefined;
  let baselineBatch: PhaseReport | undefined;
  if (options.baseline && !stopRequested) baseline = await runBaselinePhase('per-event', options, world, worldFile, runDir, seeded.tenantId, seeded.ingestToken);
  if (options.baseline && !stopRequested) {
    baselineBatch = await runBaselinePhase('per-request', options, world, worldFile, runDir, seeded.tenantId, seeded.ingestToken);
  }

  const report: BenchReport = {
    command,
    date: new Date(began).toISOString(),
    commit: gitCommit(),
    machine: machine(await versions(world)),
    options,
    pipeline,
    baseline,
    baselineBatch,
    ratioToBaseline: baseline ? round(pipeline.throughput.ledgerPerSec / baseline.throughput.ledgerPerSec, 2) : undefined,
    ratioToBatchBaseline: baselineBatch ? round(pipeline.throughput.ledgerPerSec / baselineBatch.throughput.ledgerPerSec, 2) : undefined,
    targets: [],
  };
  report.targets = targets(report);
  const out = options.out.startsWith('/') ? options.out : join(process.cwd(), options.out);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(report, null, 1));
  printReport(report);
  for (const profile of [...(pipeline.profiles ?? []), ...(baseline?.profiles ?? []), ...(baselineBatch?.profiles ?? [])]) {
    console.log(formatProfile(`${profile.process} (${profile.file})`, profile.summary));
  }
  for (const a of pipeline.allocations ?? []) {
    console.log(`\n${a.process}: allocated ${a.megabytes} MB in ${a.seconds} s (sampled), ${a.ledgered} events ledgered meanwhile: ${a.kilobytesPerEvent} KB per event; top sites:`);
    for (const t of a.top) console.log(`  ${String(t.share).padStart(5)}%  ${String(t.megabytes).padStart(7)} MB  ${t.site}`);
  }
  console.log(`\nreport written to ${relative(process.cwd(), out)} (${round((Date.now() - began) / 1000, 1)} s in all)`);
  return [pipeline, baseline, baselineBatch].every((phase) => !phase || phase.exactness.exact) ? 0 : 1;
}

async function cleanup(): Promise<void> {
  for (const fn of cleanups.reverse()) {
    try {
      await fn();
    } catch (err) {
      console.error(`bench: cleanup step failed: ${(err as Error).message}`);
    }
  }
  cleanups.length = 0;
}

let interrupts = 0;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    interrupts++;
    if (interrupts === 1) {
      say(`${signal}: stopping the load, then cleaning up (again to force)`);
      stopRequested = true;
    } else {
      void cleanup().finally(() => process.exit(130));
    }
  });
}

let code = 1;
try {
  code = await main();
} catch (err) {
  endLive();
  log.error({ err }, 'benchmark failed');
  console.error(`bench: failed: ${(err as Error).stack ?? err}`);
} finally {
  say('cleaning up: stopping processes, dropping the scratch database, Redis keys and ClickHouse database');
  await cleanup();
}
process.exit(code);
