import { defaultLayout, parseLayout, type Layout } from '../../ops/start.js';

export interface BenchOptions {
  /** Seconds of load (new events); the drain comes after. */
  duration: number;
  /** Events per second over all generators, or 'max' (closed loop). */
  rate: number | 'max';
  batch: number;
  apiProcesses: number;
  workers: Record<string, number>;
  /** How stages share processes (ops/start.ts); by default, chosen by core count. */
  layout: Layout;
  out: string;
  baseline: boolean;
  /** Seconds of the baseline's load (the same events, a prefix when shorter). */
  baselineDuration: number;
  baselinePool: number;
  smoke: boolean;
  /** Run the pipeline from compiled JS (dist/, honest numbers) or from source with tsx. */
  runtime: 'dist' | 'tsx';
  build: boolean;
  generators: number;
  /** Most requests in flight per generator. */
  concurrency: number;
  /** Seconds at the start of the load left out of the steady-state figures. */
  warmup: number;
  /**
   * Seconds of load rising from nothing to --rate before the clock starts (a fixed rate only; 0: the
   * load starts on freshly started processes). Fixed-rate runs used to begin cold: for their first
   * 10-20 s the stage processes compiled their code, grew their heaps and met every session and
   * counter for the first time, and refused load the warm pipeline takes (BENCHMARKS.md, issue 13,
   * forty-ninth session).
   */
  ramp: number;
  /** Seconds to wait for the pipeline to drain after the load. */
  drainTimeout: number;
  /** Seconds a generator keeps retrying refused events after the load. */
  clientDrain: number;
  highWater?: number;
  /** Nice value for the stage workers (the API keeps API_NICE): what an operator does to keep ingest responsive on a shared box. */
  reniceStages?: number;
  /**
   * The load generators' niceness (-20 to 19). 0 by default: at the API's (-10) a generator's own
   * lateness left the 3x answers' times (429 p99 39-52 ms against 61-68), but at 10,000 events/s on
   * a box near its limit its punctual retries set off waves of refusals: p99 386-929 ms with
   * 286-14,188 refusals, against 313-416 ms with 876-2,328 (BENCHMARKS.md, issue 13, forty-eighth
   * session).
   */
  generatorNice: number;
  /** Process kinds to run with --cpu-prof (api, a stage name, generator, baseline). */
  profile: string[];
  /** Pipeline process kinds whose allocations are sampled (loadtest/bench/heap-sampler.ts). */
  heapProfile: string[];
  seed: number;
  /** Follow a few events a second through every stream (per-stage times); on by default up to 2,000 events/s. */
  trace: boolean;
  logLevel: string;
  /** Extra environment for the pipeline processes (KEY=VALUE). */
  env: Record<string, string>;
  /** The Redis to run on: the one of REDIS_URL, or the local cluster of ops/redis-cluster.sh (started when down). */
  redis: 'standalone' | 'cluster';
  help: boolean;
}

export const USAGE = `npm run bench -- [options]

Seeds a scratch world (its own PostgreSQL database, Redis prefix, ClickHouse database),
runs the whole pipeline, drives POST /v1/events with a realistic event mix, and reports
throughput, latencies, stream lag, Redis memory and CPU per process kind; then drives two
baselines with the same events: one synchronous INSERT per event in the HTTP handler, and
one multi-row INSERT per request.

  --duration <s>          seconds of load (default 60; smoke 6)
  --rate <n>|max          events per second offered, or max: as fast as accepted (default 1000)
  --batch <n>             events per request (default 100)
  --api-processes <n>     ingest (HTTP) processes (default 1)
  --workers a=n,b=m       processes per stage, e.g. price=2,ledger-write=2 (default 1 each)
  --layout <l>            grouped (stages share two processes) or per-stage (default: by core count)
  --generators <n>        load generator processes (default 1)
  --concurrency <n>       requests in flight per generator (default 64)
  --generator-nice <n>    the generators' niceness, -20 to 19 (default 0); at the API's (-10) their
                          own lateness leaves the answers' times, but they take the CPU first
  --out <file>            JSON report (default .bench/result.json)
  --baseline on|off       run the baselines too (default on)
  --baseline-duration <s> seconds of baseline load (default min(duration, 60))
  --baseline-pool <n>     PostgreSQL connections per baseline process (default 10)
  --warmup <s>            seconds left out of steady-state figures (default min(10, duration/5))
  --ramp <s>              before the clock, load rising from nothing to --rate for this long, all
                          of it ledgered before the load starts (a fixed rate only; default
                          min(20, duration/3); 0: the load meets freshly started processes)
  --drain-timeout <s>     wait at most this long for the pipeline to drain (default 180)
  --client-drain <s>      generators retry refused events this long after the load (default 120)
  --high-water <n>        BACKPRESSURE_HIGH for the pipeline (low = half)
  --renice-stages <n>     run every stage worker at nice n (1-19) once started, the API at API_NICE
  --runtime dist|tsx      compiled JS (default; builds first) or from source (smoke default)
  --no-build              use dist/ as it is
  --profile k1,k2         run these process kinds with --cpu-prof and summarize the profiles
  --heap-profile k1,k2    sample what these pipeline processes allocate for 30 s, from 20 s
                          after they start, and report bytes per ledgered event and the top sites
  --env KEY=VALUE         extra environment for the pipeline processes (repeatable)
  --redis standalone|cluster
                          standalone: REDIS_URL (default); cluster: the local Redis Cluster of
                          ops/redis-cluster.sh (3 masters + 3 replicas, started when down);
                          with --env PARTITIONS=3 the partitions spread over the three masters
  --seed <n>              event mix seed (default 1)
  --trace on|off          follow sampled events through each stream for per-stage times
                          (default on up to 2,000 events/s: it reads the streams)
  --log-level <level>     log level of the pipeline processes (default warn)
  --smoke                 a few seconds at a modest rate, from source: CI keeps it working
`;

/** The flags that take a positive integer, and the option each sets. */
const INT_FLAGS: Record<string, keyof BenchOptions> = {
  '--duration': 'duration',
  '--batch': 'batch',
  '--api-processes': 'apiProcesses',
  '--generators': 'generators',
  '--concurrency': 'concurrency',
  '--baseline-duration': 'baselineDuration',
  '--baseline-pool': 'baselinePool',
  '--drain-timeout': 'drainTimeout',
  '--client-drain': 'clientDrain',
  '--high-water': 'highWater',
  '--renice-stages': 'reniceStages',
  '--seed': 'seed',
};

function positiveInt(flag: string, value: string | undefined): number {
  if (!value || !/^[1-9]\d*$/.test(value)) throw new Error(`${flag}: expected a positive integer, got ${JSON.stringify(value)}`);
  return Number(value);
}

export function parseOptions(argv: string[], parseWorkers: (text: string) => Record<string, number>): BenchOptions {
  const smoke = argv.includes('--smoke');
  const options: BenchOptions = {
    duration: smoke ? 6 : 60,
    rate: smoke ? 300 : 1000,
    batch: smoke ? 20 : 100,
    apiProcesses: 1,
    workers: {},
    layout: defaultLayout(),
    out: '.bench/result.json',
    baseline: true,
    baselineDuration: NaN,
    baselinePool: 10,
    smoke,
    runtime: smoke ? 'tsx' : 'dist',
    build: true,
    generators: 1,
    concurrency: 64,
    generatorNice: 0,
    warmup: NaN,
    ramp: NaN,
    drainTimeout: smoke ? 30 : 180,
    clientDrain: smoke ? 10 : 120,
    profile: [],
    heapProfile: [],
    seed: 1,
    trace: false,
    logLevel: 'warn',
    env: {},
    redis: 'standalone',
    help: false,
  };
  let traceFlag: boolean | undefined;
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag}: a value is required`);
      return v;
    };
    const intKey = INT_FLAGS[flag];
    if (intKey) {
      (options as unknown as Record<string, number>)[intKey] = positiveInt(flag, value());
      continue;
    }
    switch (flag) {
      case '--smoke':
        break;
      case '--help':
      case '-h':
        options.help = true;
        break;
      case '--rate': {
        const v = value();
        options.rate = v === 'max' ? 'max' : positiveInt(flag, v);
        break;
      }
      case '--workers':
        options.workers = parseWorkers(value());
        break;
      case '--layout':
        options.layout = parseLayout(value());
        break;
      case '--out':
        options.out = value();
        break;
      case '--baseline': {
        const v = value();
        if (v !== 'on' && v !== 'off') throw new Error('--baseline: on or off');
        options.baseline = v === 'on';
        break;
      }
      case '--generator-nice': {
        const v = value();
        if (!/^-?\d+$/.test(v) || Number(v) < -20 || Number(v) > 19) throw new Error(`--generator-nice: an integer from -20 to 19, got ${JSON.stringify(v)}`);
        options.generatorNice = Number(v);
        break;
      }
      case '--warmup':
        options.warmup = Number(value());
        if (!(options.warmup >= 0)) throw new Error('--warmup: seconds, 0 or more');
        break;
      case '--ramp':
        options.ramp = Number(value());
        if (!(options.ramp >= 0)) throw new Error('--ramp: seconds, 0 or more');
        break;
      case '--runtime': {
        const v = value();
        if (v !== 'dist' && v !== 'tsx') throw new Error('--runtime: dist or tsx');
        options.runtime = v;
        break;
      }
      case '--no-build':
        options.build = false;
        break;
      case '--profile':
        options.profile = value().split(',').filter(Boolean);
        break;
      case '--heap-profile':
        options.heapProfile = value().split(',').filter(Boolean);
        break;
      case '--env': {
        const v = value();
        const eq = v.indexOf('=');
        if (eq <= 0) throw new Error(`--env: KEY=VALUE, got ${JSON.stringify(v)}`);
        options.env[v.slice(0, eq)] = v.slice(eq + 1);
        break;
      }
      case '--redis': {
        const v = value();
        if (v !== 'standalone' && v !== 'cluster') throw new Error('--redis: standalone or cluster');
        options.redis = v;
        break;
      }
      case '--trace': {
        const v = value();
        if (v !== 'on' && v !== 'off') throw new Error('--trace: on or off');
        traceFlag = v === 'on';
        break;
      }
      case '--log-level':
        options.logLevel = value();
        break;
      default:
        throw new Error(`unknown option ${flag}\n\n${USAGE}`);
    }
  }
  options.trace = traceFlag ?? (options.rate !== 'max' && options.rate <= 2000);
  if (Number.isNaN(options.baselineDuration)) options.baselineDuration = Math.min(options.duration, smoke ? 3 : 60);
  if (Number.isNaN(options.warmup)) options.warmup = smoke ? 1 : Math.min(10, options.duration / 5);
  if (options.warmup >= options.duration) throw new Error('--warmup must be shorter than --duration');
  if (options.rate === 'max') {
    if (options.ramp > 0) throw new Error('--ramp needs a fixed --rate (with --rate max the clients take what the server takes)');
    options.ramp = 0;
  } else if (Number.isNaN(options.ramp)) options.ramp = Math.min(20, options.duration / 3);
  return options;
}
