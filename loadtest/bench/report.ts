import type { Exactness, Percentiles } from './ledger.js';
import type { GeneratorTotals, SecondSample } from './monitor.js';
import type { BenchOptions } from './options.js';
import type { ProfileSummary } from './profile.js';
import type { HopTracer } from './tracer.js';

/** What a benchmark run measured, phase by phase; run.ts fills it, printReport prints it. */
export interface PhaseReport {
  label: 'pipeline' | 'baseline' | 'baseline-batch';
  loadSeconds: number;
  steadyWindow: { fromS: number; toS: number };
  load: GeneratorTotals & {
    targetRate: number | 'max';
    batch: number;
    generators: number;
    concurrency: number;
    /** The generators' niceness (--generator-nice, default 0). */
    generatorNice: number;
    /** The load before the clock (--ramp), over all generators: none of it is in the figures, all of it in the exactness check. */
    ramp: { seconds: number; events: number; refusals: number };
    madeDistinct: number;
    abandonedEvents: number;
    rejectedSamples: unknown[];
    errorSamples: string[];
  };
  throughput: {
    offeredPerSec: number;
    acceptedPerSec: number;
    ledgerPerSec: number;
    acceptedPerSecOverall: number;
    ledgerPerSecOverall: number;
  };
  ingestLatencyMs: { all: Percentiles; steady: Percentiles };
  backpressure: {
    status429: number;
    status503: number;
    /** In the steady window, as the 202s' latency; and over the whole load and the client's drain. */
    latency429Ms: { p50: number; p99: number };
    latency429AllMs: { p50: number; p99: number };
    /** The busiest generator's event-loop delay during the load: part of every latency it measured. */
    generatorLoopDelayMs: { p50: number; p99: number; max: number };
  };
  ingestToLedgerMs: { all: Percentiles; steady: Percentiles };
  /** Seconds from the end of the load (and the client's drain) until every group had everything acked. */
  drainSeconds?: number;
  /**
   * Seconds each backpressure gate was closed during the load, by `<stage> <bound>` (queue, age,
   * after: am_gate_held_seconds_total, summed over the processes): which bound held ingest, and
   * whether a stage stopped for the stream after it.
   */
  gatesHeldSeconds?: Record<string, number>;
  drained?: boolean;
  /**
   * Entries given to no consumer yet, summed over the streams (each stream: its slowest group).
   * A slope above zero in the steady window means some stage falls behind.
   */
  lag?: {
    max: number;
    atLoadEnd: number;
    maxByStream: Record<string, number>;
    atLoadEndByStream: Record<string, number>;
    /** Entries not yet given to each stage (consumer group), at the end of the load: who fell behind. */
    atLoadEndByStage: Record<string, number>;
    steadySlopePerSec: number;
  };
  /**
   * Whether the rate was sustained through every stage: nothing was refused or skipped, no
   * stream's lag grew (slope under 1% of the rate), at most 2 s of traffic was still waiting when
   * the load ended, and the ledger took at least 95% of what was offered (1% are repeats).
   */
  sustained?: boolean;
  /**
   * Redis memory: used_memory of the whole server (shared with anything else on it), and the
   * run's own keys (every key under its prefix, by passes of a few thousand keys a second: see
   * PrefixMemoryPass), whose slope says whether it is flat; and that slope without the streams, whose length
   * follows the lag of the moment (a pass caught them anywhere between 35 and 145 MB).
   */
  redisMemoryMB?: {
    start: number;
    min: number;
    max: number;
    end: number;
    streamsMaxMB: number;
    runKeysMB: { start: number; max: number; end: number; steadySlopeMBPerMin: number; steadySlopeWithoutStreamsMBPerMin: number; keysMax: number };
  };
  cpuPct: Record<string, { avg: number; max: number }>;
  exactness: Exactness & {
    ledgerDuplicatesRecorded?: number;
    rejectedEntries?: number;
    rejectedSamples?: unknown[];
    deadLetters?: number;
    /** PostgreSQL rows written (inserted + updated) per ledgered event over the load, by table. */
    rowsPerEvent?: Record<string, number>;
  };
  series: SecondSample[];
  ledgerPerSecond: { t: number; rows: number }[];
  latencyPer5s: { t: number; rows: number; p50: number; p99: number }[];
  profiles?: { process: string; file: string; summary: ProfileSummary }[];
  /** What --heap-profile sampled: per process, bytes allocated per ledgered event and the top allocation sites. */
  allocations?: {
    process: string;
    seconds: number;
    megabytes: number;
    ledgered: number;
    kilobytesPerEvent: number;
    top: { share: number; megabytes: number; site: string }[];
  }[];
  /** Where the ingest-to-ledger time goes, from events followed through the streams (--trace). */
  trace?: ReturnType<HopTracer['summary']>;
}

export interface BenchReport {
  command: string;
  date: string;
  /** The commit the run measured, and whether the working tree had changes on top of it. */
  commit: { sha: string; dirty: boolean };
  machine: { cpus: number; model: string; memoryGiB: number; node: string; redis: string; postgres: string; clickhouse: string; schedulerAutogroups?: boolean };
  options: BenchOptions;
  pipeline: PhaseReport;
  baseline?: PhaseReport;
  /** The stronger baseline: one multi-row INSERT per request. */
  baselineBatch?: PhaseReport;
  /** Pipeline ledger rate over baseline ledger rate, steady windows. */
  ratioToBaseline?: number;
  ratioToBatchBaseline?: number;
  targets: { target: string; measured: string; ok: boolean | null }[];
}



function n(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return '-';
  return Math.round(value).toLocaleString('en-US');
}

function ms(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return '-';
  return value < 10 ? value.toFixed(1) : String(Math.round(value));
}

function rows(p: PhaseReport): [string, string][] {
  const out: [string, string][] = [
    [
      'before the clock: ramp (s, events, refusals)',
      p.load.ramp.events ? `${p.load.ramp.seconds} s, ${n(p.load.ramp.events)} events, ${n(p.load.ramp.refusals)} refused and sent again` : 'none (the load meets freshly started processes)',
    ],
    ['offered (events/s, steady)', n(p.throughput.offeredPerSec)],
    ['accepted by ingest (events/s, steady)', n(p.throughput.acceptedPerSec)],
    ['reaching the ledger (events/s, steady)', n(p.throughput.ledgerPerSec)],
    ['reaching the ledger (events/s, whole load)', n(p.throughput.ledgerPerSecOverall)],
    ['ingest request latency p50 / p99 (ms)', `${ms(p.ingestLatencyMs.steady.p50)} / ${ms(p.ingestLatencyMs.steady.p99)}`],
    ['ingest-to-ledger p50 / p99 (ms, steady)', `${ms(p.ingestToLedgerMs.steady.p50)} / ${ms(p.ingestToLedgerMs.steady.p99)}`],
    ['ingest-to-ledger p99 / max (ms, all)', `${ms(p.ingestToLedgerMs.all.p99)} / ${ms(p.ingestToLedgerMs.all.max)}`],
    ['requests / 429 / 503 / errors', `${n(p.load.requests)} / ${n(p.load.status429)} / ${n(p.load.status503)} / ${n(p.load.otherErrors + p.load.networkErrors)}`],
    ['requests skipped (generator behind)', n(p.load.skippedRequests)],
    ['answers 429 p50 / p99 (ms, steady; p99 all)', p.backpressure.status429 ? `${ms(p.backpressure.latency429Ms.p50)} / ${ms(p.backpressure.latency429Ms.p99)}; ${ms(p.backpressure.latency429AllMs.p99)}` : '-'],
    [
      'generator event-loop delay p50 / p99 / max (ms)',
      `${ms(p.backpressure.generatorLoopDelayMs.p50)} / ${ms(p.backpressure.generatorLoopDelayMs.p99)} / ${ms(p.backpressure.generatorLoopDelayMs.max)} at nice ${p.load.generatorNice}`,
    ],
  ];
  if (p.lag) {
    out.push(['stream lag max / at load end (entries)', `${n(p.lag.max)} / ${n(p.lag.atLoadEnd)}`]);
    const behind = Object.entries(p.lag.atLoadEndByStage)
      .filter(([, v]) => v > 1000)
      .map(([k, v]) => `${k} ${n(v)}`)
      .join(', ');
    out.push(['lag growth, steady (entries/s)', `${p.lag.steadySlopePerSec}${behind ? ` (behind at load end: ${behind})` : ''}`]);
  }
  if (p.sustained !== undefined) out.push(['rate sustained through every stage', p.sustained ? 'yes' : 'NO']);
  if (p.redisMemoryMB) {
    const m = p.redisMemoryMB;
    out.push(['Redis used_memory start / max / end (MB)', `${m.start} / ${m.max} / ${m.end}`]);
    out.push(["run's Redis keys start / max / end (MB)", `${m.runKeysMB.start} / ${m.runKeysMB.max} / ${m.runKeysMB.end} (${n(m.runKeysMB.keysMax)} keys)`]);
    out.push(["run's Redis keys slope, steady (MB/min; without streams)", `${m.runKeysMB.steadySlopeMBPerMin}; ${m.runKeysMB.steadySlopeWithoutStreamsMBPerMin}`]);
    out.push(['of which streams, max (MB)', String(m.streamsMaxMB)]);
  }
  if (p.gatesHeldSeconds) {
    const held = Object.entries(p.gatesHeldSeconds).map(([gate, s]) => `${gate} ${s}`);
    out.push(['gates closed during the load (s, by stage and bound)', held.length ? held.join(', ') : 'none']);
  }
  if (p.drainSeconds !== undefined) out.push(['drain after load (s)', `${p.drainSeconds}${p.drained ? '' : ' (NOT drained)'}`]);
  const e = p.exactness;
  out.push([
    'exact (ledger = distinct accepted)',
    `${e.exact ? 'yes' : 'NO'}: ${n(e.ledgerRows)} rows, ${n(e.sentDistinct)} accepted, ${n(e.missing)} missing, ${n(e.extra)} extra`,
  ]);
  if (e.inDoubtLedgered) out.push(['ledgered, answer never reached the client', n(e.inDoubtLedgered)]);
  if (p.load.abandonedEvents) out.push(['events the client gave up on (refused)', n(p.load.abandonedEvents)]);
  if (e.ledgerDuplicatesRecorded !== undefined) out.push(['duplicates caught at the ledger / in requests', `${n(e.ledgerDuplicatesRecorded)} / ${n(p.load.duplicates)}`]);
  if (e.rejectedEntries !== undefined) out.push(['rejected stream / dead letters', `${n(e.rejectedEntries)} / ${n(e.deadLetters)}`]);
  if (e.rowsPerEvent) {
    const tables = Object.entries(e.rowsPerEvent).sort((a, b) => b[1] - a[1]);
    const total = tables.reduce((sum, [, v]) => sum + v, 0);
    const invoice = tables.filter(([t]) => t.startsWith('invoice')).reduce((sum, [, v]) => sum + v, 0);
    out.push([
      'PostgreSQL rows written per event',
      `${total.toFixed(2)} (${(total - invoice).toFixed(2)} without invoice-rollup): ${tables.map(([t, v]) => `${t} ${v}`).join(', ')}`,
    ]);
  }
  return out;
}

export function printReport(report: BenchReport): void {
  const m = report.machine;
  console.log(`\nagentmeter benchmark, ${report.date}`);
  const autogroups = m.schedulerAutogroups === undefined ? '' : `, scheduler autogroups ${m.schedulerAutogroups ? 'on (in the root cpu cgroup, niceness ranks only within a session)' : 'off'}`;
  console.log(`machine: ${m.cpus} x ${m.model}, ${m.memoryGiB} GiB, Node ${m.node}, Redis ${m.redis}, PostgreSQL ${m.postgres}, ClickHouse ${m.clickhouse}${autogroups}`);
  console.log(`command: ${report.command}   (commit ${report.commit.sha}${report.commit.dirty ? ', with uncommitted changes' : ''})`);
  const o = report.options;
  console.log(
    `load: rate ${o.rate}, batch ${o.batch}, ${o.duration} s, ${o.generators} generator(s) x ${o.concurrency} in flight; ` +
      `api processes ${o.apiProcesses}; workers ${JSON.stringify(o.workers)}; runtime ${o.runtime}`,
  );
  const p = rows(report.pipeline);
  const others = [
    { title: 'baseline (1 INSERT per event)', rows: report.baseline && rows(report.baseline) },
    { title: 'baseline (1 INSERT per request)', rows: report.baselineBatch && rows(report.baselineBatch) },
  ].filter((o) => o.rows);
  const width = Math.max(...p.map(([label]) => label.length), 'ledger throughput, pipeline / baseline (per request)'.length) + 2;
  const colOf = (title: string, values: string[][]) => Math.max(title.length, 16, ...values.map(([, v]) => v.length)) + 2;
  const col = colOf('pipeline', p);
  const otherCols = others.map((o) => colOf(o.title, o.rows ?? []));
  console.log(`\n${''.padEnd(width)}${'pipeline'.padEnd(col)}${others.map((o, i) => o.title.padEnd(otherCols[i])).join('')}`);
  for (const [label, value] of p) {
    const cells = others.map((o, i) => (o.rows?.find(([l]) => l === label)?.[1] ?? '').padEnd(otherCols[i])).join('');
    console.log(`${label.padEnd(width)}${value.padEnd(col)}${cells}`.trimEnd());
  }
  if (report.ratioToBaseline !== undefined) console.log(`${'ledger throughput, pipeline / baseline'.padEnd(width)}${report.ratioToBaseline}x`);
  if (report.ratioToBatchBaseline !== undefined) {
    console.log(`${'ledger throughput, pipeline / baseline (per request)'.padEnd(width)}${report.ratioToBatchBaseline}x`);
  }

  const cpuLine = (phase: PhaseReport) =>
    Object.entries(phase.cpuPct)
      .sort((a, b) => b[1].avg - a[1].avg)
      .map(([kind, v]) => `${kind} ${v.avg}% (max ${v.max})`)
      .join(', ');
  console.log(`\nCPU, % of one core, steady average: pipeline: ${cpuLine(report.pipeline)}`);
  if (report.baseline) console.log(`                                     baseline: ${cpuLine(report.baseline)}`);
  if (report.baselineBatch) console.log(`                      baseline (per request): ${cpuLine(report.baselineBatch)}`);

  const series = report.pipeline.series;
  if (series.length) {
    const step = Math.max(1, Math.ceil(series.length / 12));
    console.log('\nstream lag and Redis memory over time (pipeline):');
    console.log('   t(s)  accepted/s  lag(total)  redis MB  ingest p99 ms');
    for (let i = 0; i < series.length; i += step) {
      const s = series[i];
      console.log(
        `  ${String(Math.round(s.t)).padStart(5)}  ${n(s.accepted).padStart(10)}  ${n(s.lagTotal as number).padStart(10)}  ${String(s.redisMB).padStart(8)}  ${ms(s.ingestP99).padStart(13)}`,
      );
    }
  }
  const trace = report.pipeline.trace;
  if (trace?.traced) {
    console.log(`\nwhere the ingest-to-ledger time goes (${trace.traced} events followed through the streams; ${trace.abandoned} lost to trimming):`);
    console.log('  stage (time from its input entry to its output entry)   p50 ms   p90 ms   p99 ms   max ms');
    for (const hop of trace.hops) {
      console.log(`  ${hop.stage.padEnd(55)}${ms(hop.p50).padStart(7)}${ms(hop.p90).padStart(9)}${ms(hop.p99).padStart(9)}${ms(hop.max).padStart(9)}`);
    }
    console.log(`  ${'ingest to ledgered stream, traced'.padEnd(55)}${ms(trace.total.p50).padStart(7)}${ms(trace.total.p90).padStart(9)}${ms(trace.total.p99).padStart(9)}${ms(trace.total.max).padStart(9)}`);
    if (trace.slowest?.length) {
      console.log(`  slowest traced events (ms per hop: ${trace.hops.map((h) => h.stage.split(' ')[0]).join(', ')}):`);
      for (const t of trace.slowest) console.log(`    ${t.ingestedAt}  ${String(t.totalMs).padStart(5)} ms = ${t.hopMs.join(' + ')}`);
    }
  }
  console.log('\ntargets (this machine):');
  for (const t of report.targets) {
    console.log(`  ${t.ok === null ? '  n/a' : t.ok ? '   ok' : 'MISSED'}  ${t.target}: ${t.measured}`);
  }
  const samples = [...report.pipeline.load.errorSamples, ...(report.pipeline.exactness.missingSamples ?? [])];
  if (samples.length) console.log(`\nsamples of errors / missing events: ${samples.join(' | ')}`);
  if (report.pipeline.exactness.rejectedSamples?.length) console.log(`rejected: ${JSON.stringify(report.pipeline.exactness.rejectedSamples)}`);
}
