// Runs the whole pipeline on this machine: the HTTP server (ingest, authorize, admin API)
// and the stage workers, under one supervisor.
//   npm start                                  layout by core count (grouped on up to 4 cores)
//   npm start -- --layout per-stage            one process per stage
//   npm start -- --workers price=2,ledger-write=2 --api-processes 2
import { availableParallelism, getPriority, setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import { loadConfig, loadConfigOrExit, type Config } from '../pipeline/config.js';
import { createLogger } from '../pipeline/logger.js';
import { supervise, type ChildSpec } from '../pipeline/supervisor.js';
import { STAGES } from '../stages/registry.js';
import { BEFORE_LEDGER } from '../store/streams.js';
import { autogroupWarning, schedulerAutogroups } from './scheduler.js';

/**
 * How stages share processes. `per-stage`: one process per stage (and per worker slot), for
 * machines with cores to spare. `grouped`: on a small machine the processes time-slice a few
 * cores, so the stages up to the ledger share one process and the ledger's four consumers
 * another; each stage keeps its own stream, consumer group, claims and dead letters, so the
 * same deployment splits back out. A stage given more than one worker runs in its own processes.
 */
export type Layout = 'grouped' | 'per-stage';

export const STAGE_GROUPS: Record<string, readonly string[]> = {
  'to-ledger': ['key-resolve', 'subscription-snapshot', 'price', 'cap-check', 'ledger-write'],
  'from-ledger': ['session-update', 'analytics-dispatch', 'cogs', 'invoice-rollup', 'spend-alerts'],
};

/** Names of the webhook delivery processes: `webhooks#0`, ... */
const WEBHOOK_PROCESS_PREFIX = 'webhooks#';

export function defaultLayout(cores = availableParallelism()): Layout {
  return cores <= 4 ? 'grouped' : 'per-stage';
}

export function parseLayout(text: string | undefined): Layout {
  if (text === undefined) return defaultLayout();
  if (text === 'grouped' || text === 'per-stage') return text;
  throw new Error(`--layout: "${text}" is not grouped or per-stage`);
}

export interface StartOptions {
  layout?: Layout;
  workers?: Record<string, number>;
  apiProcesses?: number;
  /** Webhook delivery workers (ops/webhook-worker.ts), 1 by default; they share the outbox safely. */
  webhookWorkers?: number;
  /** Stage i (in spawn order) serves its metrics on base + i; 0 serves none. */
  metricsBasePort?: number;
  env?: Record<string, string>;
  /** Whether this process may raise a priority (a niceness below its own); probed when not given. */
  mayRaisePriority?: boolean;
}

/**
 * The stage processes' young generation (128 MiB semi-spaces, V8's default is 16): a stage holds
 * a batch of blocks for up to a second (the ledger's consumers gather 20,000 events), long enough
 * to outlive two scavenges at 16 MiB and be promoted, so the old generation's collector took 30% of
 * from-ledger's busy time. 16 -> 64 MiB: +10-11% events/s ledgered at --rate max in two
 * alternating pairs; 64 -> 128 MiB: +8% over two more pairs (256 MiB: no further gain within the
 * spread). BENCHMARKS.md, issue 13. Most scavenges of the stage processes are now started by
 * their Buffers, not by a full young generation (V8 collects once young ArrayBuffers hold twice
 * its default semi-space, whatever this flag says): fewer Buffers per hop is the lever there.
 */
const STAGE_SEMI_SPACE_MIB = 128;
const STAGE_YOUNG_GENERATION = `--max-semi-space-size=${STAGE_SEMI_SPACE_MIB}`;

/**
 * The stage processes' heap at its working size from the start: V8 starts the young generation at
 * 1 MiB and the old generation's limit a few MiB above what is live, and grows them through the
 * first seconds of load, collecting often (to-ledger's first scavenges took 90-160 ms against
 * 20-50 later) just when every function is still cold. At a step from nothing to 10,000 events/s
 * ingest then refused: 46 / 19 / 253 refusals against 417 / 232 / 481 in three alternating pairs,
 * the p99 unchanged (BENCHMARKS.md, issue 13, thirty-eighth session). The cost: up to 256 MiB of
 * garbage held per stage process before its first full collection.
 */
const STAGE_HEAP_AT_START = [`--min-semi-space-size=${STAGE_SEMI_SPACE_MIB}`, '--initial-old-space-size=256'] as const;

/**
 * V8's collector without helper threads: on a small box every core already runs a pipeline
 * process, and the helpers only time-slice against them (API: authorize p99 1.67-2.47 ->
 * 1.47-1.64 ms; stage processes: +5% events/s at --rate max in two alternating pairs).
 */
const ONE_GC_THREAD = '--single-threaded-gc';

/**
 * A floor under the API's old generation: V8 runs no full collection below it. The API keeps
 * about 20 MiB alive, and V8 set its old generation's limit only a few MiB above that, so under a
 * 3x overload it ran a full mark-compact every 0.3-0.8 s (119 in 60 s: 20-75 ms of incremental
 * marking and a 3-46 ms pause each), and every request in the process waited through them. With
 * the floor: one in 30 s; the cost is at most this much garbage held (BENCHMARKS.md, issue 13).
 * The stage processes start at their working size too (STAGE_HEAP_AT_START).
 */
const API_OLD_GENERATION_FLOOR = '--initial-old-space-size=256';

/**
 * The API's young generation: 8 MiB semi-spaces, not the stages' 128. An API request's objects
 * die within the request, so a small young generation is collected often and briefly; at 128
 * MiB each scavenge paused every request in the process (authorize's event loop late by up to
 * 25-34 ms). `npm run bench:authorize -- --concurrency 16 --requests 60000`, three rounds
 * alternating: server p99 4.00, 3.88, 3.29 ms against 5.06, 4.49, 4.45 ms, loop delay max 8-14
 * against 25-34 ms; at --rate max the same events/s (7,487 and 7,393 against 7,489 and 6,664),
 * ingest requests p99 46-52 against 80 ms; at 3x no change beyond the spread (BENCHMARKS.md,
 * issue 14, thirtieth session).
 */
const API_YOUNG_GENERATION = '--max-semi-space-size=8';

/** Node's flags for the API process; `npm run bench:authorize` runs its server with the same (ops.test.ts holds them together). */
export const API_NODE_FLAGS = [ONE_GC_THREAD, API_YOUNG_GENERATION, API_OLD_GENERATION_FLOOR] as const;

/** The processes of a full pipeline, from source (tsx) or from dist/, whichever this file runs as. */
export function pipelineProcesses(options: StartOptions = {}): ChildSpec[] {
  const fromSource = import.meta.url.endsWith('.ts');
  const ext = fromSource ? 'ts' : 'js';
  const entry = (path: string) => fileURLToPath(new URL(`../${path}.${ext}`, import.meta.url));
  const nodeArgs = fromSource ? ['--import', 'tsx'] : [];
  const basePort = options.metricsBasePort ?? 9400;
  const nices = processNices(loadConfig({ ...process.env, ...options.env }), options.mayRaisePriority ?? mayRaisePriority());
  const specs: ChildSpec[] = [
    {
      name: 'api',
      command: process.execPath,
      args: [...API_NODE_FLAGS, ...nodeArgs, entry('api/main')],
      env: { ...options.env, API_PROCESSES: String(options.apiProcesses ?? 1) },
      nice: nices.api,
    },
  ];
  let port = basePort;
  const stageProcess = (name: string, stages: readonly string[], slot: number): ChildSpec => ({
    name: `${name}#${slot}`,
    command: process.execPath,
    args: [ONE_GC_THREAD, STAGE_YOUNG_GENERATION, ...STAGE_HEAP_AT_START, ...nodeArgs, entry('stages/run'), stages.join(',')],
    env: { ...options.env, WORKER_SLOT: String(slot), METRICS_PORT: String(basePort === 0 ? 0 : port++) },
    nice: stages.every(comesAfterLedger) ? nices.afterLedger : nices.stage,
  });
  const workersOf = (stage: string) => options.workers?.[stage] ?? 1;
  const grouped = (options.layout ?? defaultLayout()) === 'grouped';
  const inGroups = new Set<string>();
  if (grouped) {
    for (const [group, members] of Object.entries(STAGE_GROUPS)) {
      const together = members.filter((stage) => workersOf(stage) === 1);
      for (const stage of together) inGroups.add(stage);
      if (together.length) specs.push(stageProcess(group, together, 0));
    }
  }
  for (const stage of STAGES) {
    if (inGroups.has(stage.name)) continue;
    for (let slot = 0; slot < workersOf(stage.name); slot++) specs.push(stageProcess(stage.name, [stage.name], slot));
  }
  for (let slot = 0; slot < (options.webhookWorkers ?? 1); slot++) {
    specs.push({
      name: `${WEBHOOK_PROCESS_PREFIX}${slot}`,
      command: process.execPath,
      args: [...nodeArgs, entry('ops/webhook-worker')],
      env: { ...options.env, WORKER_SLOT: String(slot) },
      nice: nices.stage,
    });
  }
  return specs;
}

/**
 * The niceness of each kind of process: the API answers first when the CPU is short (API_NICE),
 * the stages up to the ledger and the webhook workers next (STAGE_NICE), the stages after the
 * ledger take what is left (AFTER_LEDGER_NICE). A niceness below 0 needs the right to raise a
 * priority; without it the order holds, not the numbers: the API at 0 and every other kind
 * shifted up by as much (at most 19).
 */
export function processNices(
  config: Pick<Config, 'API_NICE' | 'STAGE_NICE' | 'AFTER_LEDGER_NICE'>,
  mayRaise: boolean,
): { api: number; stage: number; afterLedger: number } {
  const shift = config.API_NICE < 0 && !mayRaise ? -config.API_NICE : 0;
  const shifted = (nice: number) => Math.min(19, nice + shift);
  return { api: config.API_NICE + shift, stage: shifted(config.STAGE_NICE), afterLedger: shifted(config.AFTER_LEDGER_NICE) };
}

/** Whether this process may give a child a niceness below its own: tried on itself, then put back. */
function mayRaisePriority(): boolean {
  const own = getPriority();
  if (own <= -20) return true; // no niceness is below it
  try {
    setPriority(own - 1);
  } catch {
    return false;
  }
  setPriority(own);
  return true;
}

/** Whether a stage reads from the ledger's output or a stream after it (none of the streams up to the ledger). */
function comesAfterLedger(stageName: string): boolean {
  const input = STAGES.find((stage) => stage.name === stageName)?.input;
  return input !== undefined && !(BEFORE_LEDGER as readonly string[]).includes(input);
}

/** Whether a process runs stream stages (not the HTTP server, the period closer or a webhook worker). */
export function isStageProcess(spec: ChildSpec): boolean {
  return spec.name !== 'api' && spec.name !== PERIOD_CLOSER && !spec.name.startsWith(WEBHOOK_PROCESS_PREFIX);
}

const PERIOD_CLOSER = 'period-closer';

/**
 * The billing period closer (ops/close-periods.ts --loop): closes each period after its grace.
 * `npm start` runs one beside the pipeline; a second would be harmless (a close happens once).
 */
function periodCloserProcess(env?: Record<string, string>): ChildSpec {
  const fromSource = import.meta.url.endsWith('.ts');
  const entry = fileURLToPath(new URL(`../ops/close-periods.${fromSource ? 'ts' : 'js'}`, import.meta.url));
  return { name: PERIOD_CLOSER, command: process.execPath, args: [...(fromSource ? ['--import', 'tsx'] : []), entry, '--loop'], env: { ...env } };
}

/** One line per process: its name and the stages it runs. */
export function describeLayout(specs: ChildSpec[]): string {
  const role = (spec: ChildSpec) =>
    spec.name === 'api'
      ? 'HTTP: ingest, authorize, admin API'
      : spec.name === PERIOD_CLOSER
        ? 'closes billing periods'
        : isStageProcess(spec)
          ? spec.args.at(-1)
          : 'webhook deliveries (outbox)';
  return specs.map((spec) => `  ${spec.name.padEnd(24)} ${`nice ${spec.nice ?? 0}`.padEnd(9)} ${role(spec)}`).join('\n');
}

export function parseWorkers(text: string | undefined): Record<string, number> {
  const workers: Record<string, number> = {};
  for (const part of (text ?? '').split(',').filter(Boolean)) {
    const [name, count] = part.split('=');
    if (!STAGES.some((s) => s.name === name) || !/^[1-9]\d*$/.test(count ?? '')) {
      throw new Error(`--workers: "${part}" is not <stage>=<count>; stages: ${STAGES.map((s) => s.name).join(', ')}`);
    }
    workers[name] = Number(count);
  }
  return workers;
}

function argValue(flag: string): string | undefined {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const config = loadConfigOrExit();
  const log = createLogger('supervisor');
  const layout = parseLayout(argValue('--layout'));
  const specs = pipelineProcesses({
    layout,
    workers: parseWorkers(argValue('--workers')),
    apiProcesses: Number(argValue('--api-processes') ?? 1),
    webhookWorkers: Number(argValue('--webhook-workers') ?? 1),
    metricsBasePort: config.METRICS_BASE_PORT,
  });
  specs.push(periodCloserProcess());
  console.log(`agentmeter: ${layout} layout on ${availableParallelism()} cores, ${specs.length} processes:\n${describeLayout(specs)}`);
  const warning = autogroupWarning(schedulerAutogroups());
  if (warning) console.log(warning);
  const supervisor = supervise(specs, log);
  const shutdown = async () => {
    log.info('stopping every process');
    await supervisor.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown());
  process.on('SIGINT', () => void shutdown());
}
