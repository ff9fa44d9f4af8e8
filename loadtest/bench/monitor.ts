import { fork, type ChildProcess } from 'node:child_process';
import { setPriority } from 'node:os';
import type { GeneratorConfig, GeneratorDone, GeneratorMessage, GeneratorTick, GeneratorTotals } from './generator.js';
import { Histogram } from './histogram.js';
import { CpuMeter } from './sampler.js';
import { emptyTotals } from './generator.js';

/** What a phase adds to each second's sample beyond the generators' figures and CPU (the pipeline: lag, memory, stage rates). */
export type Probe = () => Promise<Record<string, unknown>>;

export interface SecondSample {
  /** Seconds since the load started. */
  t: number;
  at: number;
  /** New events made, events accepted (202), per second. */
  offered: number;
  accepted: number;
  requests: number;
  status429: number;
  status503: number;
  errors: number;
  skippedRequests: number;
  backlogEvents: number;
  inFlight: number;
  ingestP50: number;
  ingestP99: number;
  cpu: Record<string, number>;
  [extra: string]: unknown;
}

export type { GeneratorTotals };

/**
 * Samples a phase once a second: the generators' ticks (merged), CPU per process kind and the
 * phase's own probe; keeps the series and the latency histograms (whole load and steady window).
 */
export class Monitor {
  readonly series: SecondSample[] = [];
  readonly latencyAll = new Histogram();
  readonly latencySteady = new Histogram();
  readonly latency429 = new Histogram();
  readonly latency429Steady = new Histogram();
  readonly totals: GeneratorTotals = emptyTotals();
  private current = this.emptyCurrent();
  private readonly lastBacklog = new Map<number, { backlog: number; inFlight: number }>();
  /** Per generator: the time of each tick and the running totals of new and accepted events up to it. */
  private readonly tickLog = new Map<number, { at: number; made: number; accepted: number }[]>();
  private readonly cpu: CpuMeter;
  private timer?: NodeJS.Timeout;
  private sampling = false;
  startedAt = Date.now();
  steadyFrom = Infinity;
  steadyTo = Infinity;

  constructor(
    kinds: Map<string, () => number[]>,
    private readonly probe: Probe | undefined,
    private readonly onSample: (sample: SecondSample) => void,
  ) {
    this.cpu = new CpuMeter(kinds);
  }

  private emptyCurrent() {
    return { newEvents: 0, accepted: 0, requests: 0, status429: 0, status503: 0, errors: 0, skippedRequests: 0, latency: new Histogram() };
  }

  tick(generator: number, tick: GeneratorTick): void {
    const c = this.current;
    c.newEvents += tick.newEvents;
    c.accepted += tick.accepted;
    c.requests += tick.requests;
    c.status429 += tick.status429;
    c.status503 += tick.status503;
    c.errors += tick.otherErrors + tick.networkErrors;
    c.skippedRequests += tick.skippedRequests;
    c.latency.merge(tick.latency202);
    this.latencyAll.merge(tick.latency202);
    this.latency429.merge(tick.latency429);
    if (tick.at >= this.steadyFrom && tick.at <= this.steadyTo + 1000) {
      this.latencySteady.merge(tick.latency202);
      this.latency429Steady.merge(tick.latency429);
    }
    this.lastBacklog.set(generator, { backlog: tick.backlogEvents, inFlight: tick.inFlight });
    const log = this.tickLog.get(generator) ?? [];
    const last = log.at(-1) ?? { at: 0, made: 0, accepted: 0 };
    log.push({ at: tick.at, made: last.made + tick.newEvents, accepted: last.accepted + tick.accepted });
    this.tickLog.set(generator, log);
    for (const key of Object.keys(this.totals) as (keyof GeneratorTotals)[]) this.totals[key] += tick[key];
  }

  /**
   * Events per second offered (new) and accepted between two instants (epoch ms), from the
   * generators' running totals at their ticks inside the window: exact over whole ticks.
   */
  rates(from: number, to: number): { offered: number; accepted: number } {
    let offered = 0;
    let accepted = 0;
    for (const log of this.tickLog.values()) {
      const inside = log.filter((t) => t.at >= from && t.at <= to);
      if (inside.length < 2) continue;
      const first = inside[0];
      const last = inside[inside.length - 1];
      const seconds = (last.at - first.at) / 1000;
      offered += (last.made - first.made) / seconds;
      accepted += (last.accepted - first.accepted) / seconds;
    }
    return { offered: Math.round(offered), accepted: Math.round(accepted) };
  }

  start(): void {
    this.startedAt = Date.now();
    this.cpu.sample();
    this.timer = setInterval(() => void this.sample(), 1000);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    while (this.sampling) await new Promise((r) => setTimeout(r, 20));
  }

  private async sample(): Promise<void> {
    if (this.sampling) return;
    this.sampling = true;
    try {
      const c = this.current;
      this.current = this.emptyCurrent();
      const cpu = this.cpu.sample();
      let backlog = 0;
      let inFlight = 0;
      for (const v of this.lastBacklog.values()) {
        backlog += v.backlog;
        inFlight += v.inFlight;
      }
      const extra = this.probe ? await this.probe().catch((err: Error) => ({ probeError: err.message })) : {};
      const at = Date.now();
      const sample: SecondSample = {
        t: Math.round((at - this.startedAt) / 100) / 10,
        at,
        offered: c.newEvents,
        accepted: c.accepted,
        requests: c.requests,
        status429: c.status429,
        status503: c.status503,
        errors: c.errors,
        skippedRequests: c.skippedRequests,
        backlogEvents: backlog,
        inFlight,
        ingestP50: round(c.latency.quantile(0.5)),
        ingestP99: round(c.latency.quantile(0.99)),
        cpu,
        ...extra,
      };
      this.series.push(sample);
      this.onSample(sample);
    } finally {
      this.sampling = false;
    }
  }
}

export function round(value: number, digits = 2): number {
  if (!Number.isFinite(value)) return NaN;
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export interface GeneratorEntry {
  file: string;
  execArgv: string[];
}

export interface RunningGenerators {
  children: ChildProcess[];
  /** Resolves when every generator has loaded and waits for go(). */
  ready: Promise<void>;
  go(): void;
  done: Promise<GeneratorDone[]>;
  stop(): void;
}

/**
 * Forks the generators at niceness `nice` (set at once, before Node starts its other threads, which
 * take it from the main thread); each reports ticks to the monitor and finally its done message.
 */
export function startGenerators(entry: GeneratorEntry, configs: GeneratorConfig[], monitor: Monitor, nice: number): RunningGenerators {
  const children: ChildProcess[] = [];
  for (const config of configs) {
    const child = fork(entry.file, [JSON.stringify(config)], { execArgv: entry.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.push(child);
    if (nice === 0 || child.pid === undefined) continue;
    try {
      setPriority(child.pid, nice);
    } catch (err) {
      for (const started of children) started.kill('SIGKILL');
      throw new Error(`cannot run the load generators at nice ${nice} (${(err as Error).message}): below 0 needs root or CAP_SYS_NICE`);
    }
  }
  const readiness: Promise<void>[] = [];
  const done = Promise.all(
    children.map(
      (child, g) =>
        new Promise<GeneratorDone>((resolve, reject) => {
          let result: GeneratorDone | undefined;
          let ready: () => void = () => {};
          readiness.push(
            new Promise<void>((resolve, fail) => {
              ready = resolve;
              child.on('exit', () => fail(new Error(`load generator ${g} exited before it was ready`)));
            }),
          );
          child.on('message', (message: GeneratorMessage) => {
            if (message.type === 'tick') monitor.tick(g, message);
            else if (message.type === 'ready') ready();
            else result = message;
          });
          child.on('exit', (code) => (result ? resolve(result) : reject(new Error(`load generator ${g} exited with code ${code} before finishing`))));
        }),
    ),
  );
  done.catch(() => {});
  const ready = Promise.all(readiness).then(() => {});
  ready.catch(() => {});
  const send = (message: { type: string }) => {
    for (const child of children) if (child.connected) child.send(message);
  };
  return { children, ready, done, go: () => send({ type: 'go' }), stop: () => send({ type: 'stop' }) };
}
