// The load generator: one process (the benchmark forks one or more), driving `POST /v1/events`
// over keep-alive HTTP/1.1 (http-client.ts) at a fixed rate (open model: requests leave on schedule whatever
// the replies) or as fast as the server takes them (closed model: `concurrency` clients, each with
// one request out, in flight or waiting out its own retry). A 429 or 503 keeps the events and
// sends the same request again after Retry-After-Ms, else Retry-After (with exponential backoff),
// like a well-behaved client; when the run ends it stops making new events and keeps retrying
// until everything was accepted or the drain time is over.
// It reports to the parent once a second over IPC and, at the end, writes a bitset of the
// event sequence numbers the server accepted, for the exactness check.
import { readFileSync, writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { retryAfterOf } from '../../sdk/src/retry.js';
import { EventMix, type BenchWorld } from './events.js';
import { Histogram, type SparseHistogram } from './histogram.js';
import { HttpPool, requestText } from './http-client.js';
import { RequestStore, type StoredRequest } from './request-store.js';

export interface GeneratorConfig {
  /** http://host:port/v1/events */
  url: string;
  worldFile: string;
  /** Events per second for this process, or 0 for as fast as the server takes them. */
  rate: number;
  batch: number;
  durationMs: number;
  /** Most requests in flight at once. */
  concurrency: number;
  /** Before the clock starts, send one event per credential (warm caches, as in a system that has been running). */
  prime: boolean;
  /** Before the clock starts (after the priming), load rising from nothing to `rate` over this long; 0: none. */
  rampMs: number;
  /** After the run, how long to keep retrying events not yet accepted. */
  drainMs: number;
  seed: number;
  idPrefix: string;
  bitsFile: string;
}

/** Counts a generator keeps, per tick and (in the monitor) in all. */
export interface GeneratorTotals {
  requests: number;
  /** Events in requests answered 202 (accepted + duplicates + rejected). */
  events202: number;
  accepted: number;
  duplicates: number;
  rejected: number;
  status429: number;
  status503: number;
  otherErrors: number;
  networkErrors: number;
  newEvents: number;
  /** Requests the schedule wanted but that could not leave (more than a second late): the generator or server fell behind. */
  skippedRequests: number;
}

export function emptyTotals(): GeneratorTotals {
  return {
    requests: 0, events202: 0, accepted: 0, duplicates: 0, rejected: 0, status429: 0, status503: 0,
    otherErrors: 0, networkErrors: 0, newEvents: 0, skippedRequests: 0,
  };
}

export interface GeneratorTick extends GeneratorTotals {
  type: 'tick';
  at: number;
  backlogEvents: number;
  inFlight: number;
  /** Requests due by the schedule but not sent (all `concurrency` slots busy). */
  behind: number;
  latency202: SparseHistogram;
  latency429: SparseHistogram;
  madeEvents: number;
}

/** The load that warmed the pipeline before the clock (--ramp): all of it accepted before the clock started. */
export interface RampTotals {
  /** From the ramp's start until its last event was accepted. */
  seconds: number;
  events: number;
  /** Refusals (429 or 503) of the ramp's requests; each was sent again until accepted. */
  refusals: number;
}

export interface GeneratorDone {
  type: 'done';
  ramp: RampTotals;
  /** Distinct events (sequence numbers) made, and those the server accepted. */
  made: number;
  distinctAccepted: number;
  abandonedEvents: number;
  rejectedSamples: unknown[];
  errorSamples: string[];
  bitsFile: string;
  /** When the last new event was sent, and when the drain ended (epoch ms). */
  loadEndedAt: number;
  drainEndedAt: number;
  /**
   * How late this generator's event loop ran during the load (a 10 ms timer's lateness, ms): a
   * latency it measures includes its own loop's delay, so a p99 near its answers' p99 says the
   * client, not the server, made that tail.
   */
  loopDelayMs: { p50: number; p99: number; max: number };
}

const LOOP_SAMPLE_MS = 10;
/** The histogram holds the time between the sampling timer's runs: past the period, the loop was late. */
const lateness = (ns: number): number => Math.max(0, ns / 1e6 - LOOP_SAMPLE_MS);

interface Pending {
  /** The whole request (head and body), encoded once: a refused request is sent again as the same bytes (at 3x overload each is sent about five times). */
  wire: StoredRequest;
  seqs: number[];
  attempts: number;
  notBefore: number;
}

/** A request of the events made, encoded once (`wireOf` adds the head to the body and stores the bytes). */
const pendingOf = (made: { events: unknown[]; seqs: number[] }, wireOf: (body: string) => StoredRequest): Pending => ({
  wire: wireOf(JSON.stringify({ events: made.events })),
  seqs: made.seqs,
  attempts: 0,
  notBefore: 0,
});

class Bitset {
  bytes = new Uint8Array(1 << 16);

  set(i: number): void {
    const byte = i >>> 3;
    if (byte >= this.bytes.length) {
      let size = this.bytes.length;
      while (size <= byte) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.bytes);
      this.bytes = grown;
    }
    this.bytes[byte] |= 1 << (i & 7);
  }

  count(): number {
    let n = 0;
    for (const b of this.bytes) {
      let v = b;
      while (v) {
        v &= v - 1;
        n++;
      }
    }
    return n;
  }
}

export interface GeneratorReady {
  type: 'ready';
}

export type GeneratorMessage = GeneratorReady | GeneratorTick | GeneratorDone;

/**
 * Runs one generator. It loads its world, says it is ready and waits for `go()` to resolve
 * (so several generators start their clocks together), then drives the load.
 */
export async function runGenerator(
  config: GeneratorConfig,
  send: (message: GeneratorMessage) => void,
  shouldStop: () => boolean,
  go: Promise<void>,
): Promise<void> {
  const world = JSON.parse(readFileSync(config.worldFile, 'utf8')) as BenchWorld;
  const mix = new EventMix(world.actors, config.idPrefix, config.seed);
  // Warm the event mix's code paths before the clock starts.
  new EventMix(world.actors, `${config.idPrefix}-warm`, config.seed).batch(1000, Date.now());
  const url = new URL(config.url);
  const pool = new HttpPool(url.hostname, Number(url.port || 80), config.concurrency, 60_000);
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${world.ingestToken}` };
  const requests = new RequestStore();
  const wireOf = (body: string): StoredRequest => requests.store(requestText('POST', url, headers, body));
  const accepted = new Bitset();
  // Events of requests whose outcome the client never learned (network error, or still unanswered
  // when it gave up): the server may or may not have them. A later 202 for them settles it.
  const doubt = new Bitset();
  const inFlightItems = new Set<Pending>();
  /** Requests to send again, in the order they are due (notBefore ascending). */
  const retries: Pending[] = [];
  // Kept sorted, so a pump takes the due ones from the front: under a long overload the list
  // grows to thousands of requests, and scanning it on every answer made the generator the
  // busiest process on the box, taking its cores from the pipeline it measures.
  const queueRetry = (item: Pending): void => {
    let lo = 0;
    let hi = retries.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (retries[mid].notBefore <= item.notBefore) lo = mid + 1;
      else hi = mid;
    }
    retries.splice(lo, 0, item);
  };
  const latency202 = new Histogram();
  const latency429 = new Histogram();
  const rejectedSamples: unknown[] = [];
  const errorSamples: string[] = [];
  const tick = emptyTotals();
  let inFlight = 0;
  let issued = 0;
  let behind = 0;
  let backlogEvents = 0;
  // Once the run is over nothing is sent any more, not even from a late answer's handler: what is
  // accepted after the accepted-events record is written would be missing from it.
  let finished = false;
  // Nothing new is made before go() (priming sends only its own batches) and after the load.
  let start = Infinity;
  let loadEnd = -Infinity;
  let loadEndedAt = 0;
  const reqPerMs = config.rate > 0 ? config.rate / config.batch / 1000 : 0;

  const post = (item: Pending): void => {
    inFlight++;
    inFlightItems.add(item);
    tick.requests++;
    const sentAt = performance.now();
    pool.send(item.wire.bytes).then(
      (res) => {
        const ms = performance.now() - sentAt;
        inFlight--;
        inFlightItems.delete(item);
        const status = res.status;
        if (status === 202) {
          // Answered 202, the server read the whole request: its chunk may hold the next one.
          requests.release(item.wire);
          latency202.record(ms);
          const reply = JSON.parse(res.body.toString('utf8')) as {
            accepted: number;
            duplicates: { index: number }[];
            rejected: { index: number }[];
          };
          tick.events202 += item.seqs.length;
          tick.accepted += reply.accepted;
          tick.duplicates += reply.duplicates.length;
          tick.rejected += reply.rejected.length;
          const rejected = new Set(reply.rejected.map((r) => r.index));
          if (reply.rejected.length && rejectedSamples.length < 5) rejectedSamples.push(reply.rejected[0]);
          item.seqs.forEach((seq, i) => {
            if (!rejected.has(i)) accepted.set(seq);
          });
        } else if (status === 429 || status === 503 || status >= 500) {
          if (status === 429) {
            tick.status429++;
            latency429.record(ms);
          } else if (status === 503) tick.status503++;
          else {
            tick.otherErrors++;
            if (errorSamples.length < 5) errorSamples.push(`${status} ${res.body.toString('utf8').slice(0, 300)}`);
          }
          const retryAfterMs = retryAfterOf({ get: (name) => res.headers.get(name) ?? null }) ?? 1000;
          retryLater(item, retryAfterMs);
        } else {
          tick.otherErrors++;
          if (errorSamples.length < 5) errorSamples.push(`${status} ${res.body.toString('utf8').slice(0, 300)}`);
        }
        pump();
      },
      (err: Error) => {
        inFlight--;
        inFlightItems.delete(item);
        for (const seq of item.seqs) doubt.set(seq);
        tick.networkErrors++;
        if (errorSamples.length < 5) errorSamples.push(String(err.message));
        // In doubt whether the server wrote the events: send them again (event_id makes it idempotent).
        retryLater(item, 500);
        pump();
      },
    );
  };

  const retryLater = (item: Pending, baseMs: number): void => {
    item.attempts++;
    const backoff = baseMs * 2 ** Math.min(item.attempts - 1, 4);
    item.notBefore = Date.now() + backoff * (0.8 + 0.4 * Math.random());
    queueRetry(item);
    backlogEvents += item.seqs.length;
  };

  const newBatch = (): Pending => {
    const made = mix.batch(config.batch, Date.now());
    tick.newEvents += made.events.length;
    return pendingOf(made, wireOf);
  };

  function pump(): void {
    if (finished) return;
    const now = Date.now();
    const loading = now >= start && now < loadEnd && !shouldStop();
    if (!loading && now >= start && loadEndedAt === 0) loadEndedAt = now;
    if (loading) {
      if (config.rate > 0) {
        const due = Math.floor((now - start) * reqPerMs) - issued;
        let sent = 0;
        while (sent < due && inFlight < config.concurrency) {
          post(newBatch());
          issued++;
          sent++;
        }
        behind = due - sent;
        // A schedule that slipped by more than a second is not caught up in a burst: those requests are skipped (and counted).
        const slack = Math.max(1, Math.floor(reqPerMs * 1000));
        if (behind > slack) {
          tick.skippedRequests += behind - slack;
          issued += behind - slack;
          behind = slack;
        }
      } else {
        // Closed model: `concurrency` clients, each with one request out (in flight, or waiting
        // out its own Retry-After to be sent again); a client makes new events only once its
        // request was taken.
        while (inFlight + retries.length < config.concurrency) post(newBatch());
      }
    }
    sendRetries(now);
  }

  function sendRetries(now: number): void {
    if (finished) return;
    while (retries.length && inFlight < config.concurrency && retries[0].notBefore <= now) {
      const item = retries.shift()!;
      backlogEvents -= item.seqs.length;
      post(item);
    }
  }

  const report = () => {
    send({
      type: 'tick',
      at: Date.now(),
      ...tick,
      backlogEvents,
      inFlight,
      behind,
      latency202: latency202.sparse(),
      latency429: latency429.sparse(),
      madeEvents: mix.nextSeq,
    });
    Object.assign(tick, emptyTotals());
    latency202.reset();
    latency429.reset();
  };

  /** Sends again whatever was refused until nothing is in flight or waiting: everything sent so far was accepted. */
  const settle = (): Promise<void> =>
    new Promise((resolve) => {
      const timer = setInterval(() => {
        sendRetries(Date.now());
        if (inFlight === 0 && retries.length === 0) {
          clearInterval(timer);
          resolve();
        }
      }, 5);
    });

  /**
   * Before the clock: requests on a schedule rising from nothing to the run's rate over rampMs
   * (open model, as a k6 ramping stage), then until every event of it was accepted. The run then
   * meets processes that have compiled their code, grown their heaps and seen the sessions and
   * counters of the mix, as a pipeline that has been running would.
   */
  const rampUp = async (): Promise<RampTotals> => {
    const began = Date.now();
    const before = { events: tick.newEvents, refusals: tick.status429 + tick.status503 };
    /** Requests due by `t` ms into the ramp: the integral of a rate rising linearly to reqPerMs. */
    const dueBy = (t: number) => Math.floor((reqPerMs * t * t) / (2 * config.rampMs));
    const requests = dueBy(config.rampMs);
    let sent = 0;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const now = Date.now();
        const due = dueBy(Math.min(now - began, config.rampMs)) - sent;
        for (let i = 0; i < due && inFlight < config.concurrency; i++, sent++) post(newBatch());
        sendRetries(now);
        if (sent >= requests) {
          clearInterval(timer);
          resolve();
        }
      }, 1);
    });
    await settle();
    return {
      seconds: (Date.now() - began) / 1000,
      events: tick.newEvents - before.events,
      refusals: tick.status429 + tick.status503 - before.refusals,
    };
  };

  let ramp: RampTotals = { seconds: 0, events: 0, refusals: 0 };
  if (config.prime) {
    for (const made of mix.prime(config.batch, Date.now())) {
      queueRetry(pendingOf(made, wireOf));
      backlogEvents += made.seqs.length;
    }
    await settle();
  }
  if (config.rampMs > 0 && reqPerMs > 0) ramp = await rampUp();
  Object.assign(tick, emptyTotals());
  latency202.reset();
  latency429.reset();
  send({ type: 'ready' });
  await go;
  start = Date.now();
  loadEnd = start + config.durationMs;
  const loopDelay = monitorEventLoopDelay({ resolution: LOOP_SAMPLE_MS });
  loopDelay.enable();
  const stopLoopDelay = setTimeout(() => loopDelay.disable(), config.durationMs);

  const pumpTimer = setInterval(pump, 1);
  const reportTimer = setInterval(report, 1000);
  pump();
  // The load phase, then the drain: until nothing is in flight or waiting, or the drain time is over.
  await new Promise<void>((resolve) => {
    const check = setInterval(() => {
      const now = Date.now();
      const loading = now < loadEnd && !shouldStop();
      const drained = inFlight === 0 && retries.length === 0;
      if (!loading && (drained || now > Math.max(loadEnd, loadEndedAt) + config.drainMs)) {
        clearInterval(check);
        resolve();
      }
    }, 20);
  });
  clearInterval(pumpTimer);
  clearTimeout(stopLoopDelay);
  loopDelay.disable();
  finished = true;
  // Nothing more is sent; what is in flight gets up to 30 s to be answered, so its outcome is known.
  const waitUntil = Date.now() + 30_000;
  while (inFlight > 0 && Date.now() < waitUntil) await new Promise((resolve) => setTimeout(resolve, 20));
  clearInterval(reportTimer);
  report();
  const drainEndedAt = Date.now();
  for (const item of inFlightItems) for (const seq of item.seqs) doubt.set(seq);
  pool.destroy();
  writeFileSync(config.bitsFile, accepted.bytes);
  writeFileSync(`${config.bitsFile}.doubt`, doubt.bytes);
  send({
    type: 'done',
    ramp,
    made: mix.nextSeq,
    distinctAccepted: accepted.count(),
    abandonedEvents: backlogEvents + [...inFlightItems].reduce((n, item) => n + item.seqs.length, 0),
    rejectedSamples,
    errorSamples,
    bitsFile: config.bitsFile,
    loadEndedAt: loadEndedAt || drainEndedAt,
    drainEndedAt,
    loopDelayMs: { p50: lateness(loopDelay.percentile(50)), p99: lateness(loopDelay.percentile(99)), max: lateness(loopDelay.max) },
  });
}

// Run as a forked child: the configuration is argv[2] (JSON); messages go to the parent.
if (process.send && process.argv[2]) {
  const config = JSON.parse(process.argv[2]) as GeneratorConfig;
  let stop = false;
  let go: () => void = () => {};
  const started = new Promise<void>((resolve) => (go = resolve));
  process.on('message', (message: { type?: string }) => {
    if (message?.type === 'stop') stop = true;
    if (message?.type === 'go') go();
  });
  process.on('SIGINT', () => (stop = true));
  process.on('SIGTERM', () => (stop = true));
  await runGenerator(
    config,
    (message) => process.send!(message),
    () => stop,
    started,
  );
  process.disconnect?.();
}
