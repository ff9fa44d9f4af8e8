import type { Redis } from './redis.js';
import { scripted } from './scripts.js';

/**
 * Lag of a stream: the most entries any of its consumer groups has not yet been given.
 * Falls back to the stream length when Redis cannot tell (no group yet, or an unknown
 * entries-read counter), which over-estimates and so errs on the side of waiting. A group
 * cannot lag by more entries than the stream holds: after Redis reloads its append-only file a
 * group's reported lag can be too high for ever (the trimming script mends the counter), so the
 * length bounds it.
 */
export async function streamLag(redis: Redis, key: string): Promise<number> {
  let groups: unknown[][];
  try {
    groups = (await redis.xinfo('GROUPS', key)) as unknown[][];
  } catch (err) {
    if (/no such key/i.test(String((err as Error).message))) return 0;
    throw err;
  }
  if (groups.length === 0) return redis.xlen(key);
  let worst = 0;
  for (const group of groups) {
    let lag: unknown = null;
    for (let i = 0; i < group.length; i += 2) if (group[i] === 'lag') lag = group[i + 1];
    if (lag === null || lag === undefined) return redis.xlen(key);
    worst = Math.max(worst, Number(lag));
  }
  return worst === 0 ? 0 : Math.min(worst, await redis.xlen(key));
}

/**
 * What a gate judges: the entries waiting in its queue, how long the oldest has waited (ms), and
 * (with WatermarkOptions.downstream) the entries the stream after the queue holds unread.
 */
interface QueueState {
  entries: number;
  ageMs: number;
  downstream?: number;
}

/** Reads a queue's state; `withAge` false when the age is not judged (it may then be left 0). */
export type QueueProbe = (now: number, withAge: boolean) => Promise<QueueState>;

/**
 * How long the oldest entry of a stream that some consumer group has not been handed yet has
 * waited, in ms (0 when every group has read everything). The entry after a group's last
 * delivered id is the oldest it has not been handed; its id holds the time it was added.
 */
async function unreadAge(redis: Redis, key: string, now: number): Promise<number> {
  let groups: unknown[][];
  try {
    groups = (await redis.xinfo('GROUPS', key)) as unknown[][];
  } catch (err) {
    if (/no such key/i.test(String((err as Error).message))) return 0;
    throw err;
  }
  let oldest = 0;
  for (const group of groups) {
    const info: Record<string, unknown> = {};
    for (let i = 0; i < group.length; i += 2) info[String(group[i])] = group[i + 1];
    if (info.lag === 0) continue;
    const [next] = (await redis.xrange(key, `(${String(info['last-delivered-id'])}`, '+', 'COUNT', 1)) as [string, string[]][];
    if (next) oldest = Math.max(oldest, now - Number(next[0].split('-')[0]));
  }
  return oldest;
}

/** One hop: the most entries not yet handed to a group of any of the streams, and the oldest of them. */
function unreadOf(redis: Redis, keys: readonly string[]): QueueProbe {
  return async (now, withAge) => {
    let entries = 0;
    let ageMs = 0;
    for (const key of keys) entries = Math.max(entries, await streamLag(redis, key));
    if (withAge) for (const key of keys) ageMs = Math.max(ageMs, await unreadAge(redis, key, now));
    return { entries, ageMs };
  };
}

/**
 * A whole path of streams, per partition (a partition's streams share a slot: one script call
 * each, on Redis's clock): the entries not yet acknowledged (unread or pending) summed over the
 * path's streams, and the oldest waits of its streams summed. An entry's id is the time it
 * reached *that* stream, so no one stream tells how long an event has been on its way; the sum
 * of the hops' oldest waits is roughly how long an event entering now takes to get through the
 * queues ahead of it. With `downstreamByPartition`, also the lag of the stream the path ends in
 * (streamLag: what its slowest group has not been handed yet). The largest of each over the
 * partitions.
 */
export function pathOf(redis: Redis, pathsByPartition: readonly (readonly string[])[], downstreamByPartition?: readonly string[]): QueueProbe {
  const scripts = scripted(redis);
  return async () => {
    const [replies, downstream] = await Promise.all([
      Promise.all(pathsByPartition.map((keys) => scripts.oldestWaiting(keys.length, ...keys))),
      downstreamByPartition ? Promise.all(downstreamByPartition.map((key) => streamLag(redis, key))) : undefined,
    ]);
    const state: QueueState = { entries: 0, ageMs: 0, ...(downstream ? { downstream: Math.max(0, ...downstream) } : {}) };
    for (const [nowMs, ...perStream] of replies) {
      let entries = 0;
      let ageMs = 0;
      for (let i = 0; i < perStream.length; i += 2) {
        const oldest = Number(perStream[i]);
        if (oldest > 0) ageMs += Math.max(0, Number(nowMs) - oldest);
        entries += Number(perStream[i + 1]);
      }
      state.entries = Math.max(state.entries, entries);
      state.ageMs = Math.max(state.ageMs, ageMs);
    }
    return state;
  };
}

/**
 * Events per entry over the blocks a process wrote lately (a decaying average), so that a lag
 * Redis reports in entries can be judged in events: the marks bound events, whatever the size
 * of the blocks that carry them.
 */
export class BlockSizes {
  private events = 0;
  private entries = 0;

  wrote(entries: number, events: number): void {
    this.events = this.events * 0.98 + events;
    this.entries = this.entries * 0.98 + entries;
  }

  eventsPerEntry(): number {
    return this.entries > 0 ? Math.max(1, this.events / this.entries) : 1;
  }
}

/** What can hold a gate closed: the queue's marks, its age, the marks of the stream after it. */
const GATE_BOUNDS = ['queue', 'age', 'after'] as const;
export type GateBound = (typeof GATE_BOUNDS)[number];

/** How often a closed gate reads its queue again, at most (ms). */
const CLOSED_RECHECK_MS = 25;

/** The bounds of retryHintMs, and what it says before any drain was measured. */
const RETRY_HINT = { minMs: 50, maxMs: 1_000, unknownMs: 250 } as const;

export interface WatermarkOptions {
  /** How long a lag read far below the mark is trusted (ms). */
  cacheMs?: number;
  /** With sizes, the marks are in events: the lag in entries times the events an entry carries lately. */
  sizes?: BlockSizes;
  /** Also closed while the queue's age is above this (0: not judged by age): a bound in time, whatever the rate. */
  maxAgeMs?: number;
  /** How the queue is read (default: the watched streams' entries not yet handed to a group, and the oldest of them). */
  probe?: QueueProbe;
  /**
   * Marks on what the probe reports of the stream after the queue (in events, with sizes): also
   * closed while it holds more than `high` unread, reopening below `low`. Ingest closes before
   * the ledger's own output gate would stop the ledger, so what it accepted is not held behind
   * the stages after the ledger (api/ingest/writer.ts).
   */
  downstream?: { high: number; low: number };
  /**
   * While closed, how long a caller waits for a read of the queue before it is answered closed
   * (the last read's state; the read goes on for the callers after it). 0: it waits for the read.
   */
  closedAnswerMs?: number;
  /**
   * After each read of the queue: for each bound that held the gate since the read before, the
   * time since then (ms). For a metric of why a gate refuses (am_gate_held_seconds_total).
   */
  onHeld?: (bound: GateBound, ms: number) => void;
}

/**
 * A high/low watermark gate: closes when the watched streams' lag goes above `high`,
 * reopens only once it is below `low`, so readers do not flap at the boundary; and, with
 * `maxAgeMs`, closes while the queue's age is above that, reopening below half of it; with
 * `downstream`, likewise on the stream after the queue. Each bound holds the gate on its own: the
 * gate is open once every bound that went past its mark is back below its low mark.
 */
export class Watermark {
  /** Which bounds hold the gate closed: the queue's marks, its age, the marks after it. */
  private readonly held: Record<GateBound, boolean> = { queue: false, age: false, after: false };
  /** The last read failed (closedByLastRead then sends callers to open(), which meets the failure). */
  private lastReadFailed = false;
  private checkedAt = 0;
  private lastLag = 0;
  private addedSinceCheck = 0;
  private lastAge = 0;
  private lastDownstream = 0;
  /** Entries (events, with sizes) leaving the queue per ms, a decaying average of the reads that saw it shrink or hold. */
  private drainPerMs = 0;
  /** The share of about the last second the gate was closed (a decaying average): near 1 under a sustained overload. */
  private closedShare = 0;
  private reading?: Promise<boolean>;
  /** The read under way, or closed once closedAnswerMs passed: what a caller gets while the gate is closed. */
  private readingOrClosed?: Promise<boolean>;

  private readonly cacheMs: number;
  private readonly sizes?: BlockSizes;
  private readonly maxAgeMs: number;
  private readonly closedAnswerMs: number;
  private readonly probe: QueueProbe;
  private readonly downstream?: { high: number; low: number };
  private readonly onHeld?: (bound: GateBound, ms: number) => void;

  constructor(
    redis: Redis,
    private readonly keys: readonly string[],
    private readonly high: number,
    private readonly low: number,
    options: WatermarkOptions = {},
  ) {
    this.cacheMs = options.cacheMs ?? 0;
    this.sizes = options.sizes;
    this.maxAgeMs = options.maxAgeMs ?? 0;
    this.closedAnswerMs = options.closedAnswerMs ?? 0;
    this.probe = options.probe ?? unreadOf(redis, keys);
    this.onHeld = options.onHeld;
    this.downstream = options.downstream;
  }

  /** Closed while any bound holds it. */
  private get closed(): boolean {
    return this.held.queue || this.held.age || this.held.after;
  }

  /**
   * Whether the gate is open now. Far below the mark (the last lag read plus what this process
   * wrote since) a lag read is trusted for cacheMs; from half the mark up it is read every
   * time, so the gate closes within one batch of the mark. A closed gate is read again at most
   * every CLOSED_RECHECK_MS, and callers that ask while a read is under way share it, so a flood
   * of refused callers costs Redis one read per interval, and each refusal is prompt.
   */
  open(): Promise<boolean> | boolean {
    const now = Date.now();
    if (this.keys.length === 0) return true;
    const estimate = this.lastLag + this.addedSinceCheck;
    if (!this.closed && estimate < this.high / 2 && now - this.checkedAt < this.cacheMs) return true;
    if (this.knownClosed(now)) return false;
    if (!this.reading) {
      this.reading = this.read(now).finally(() => {
        this.reading = undefined;
        this.readingOrClosed = undefined;
      });
      if (this.closed && this.closedAnswerMs > 0) {
        const closedAnswer = new Promise<boolean>((resolve) => setTimeout(resolve, this.closedAnswerMs, false).unref());
        this.readingOrClosed = Promise.race([this.reading, closedAnswer]);
      }
    }
    return this.readingOrClosed ?? this.reading;
  }

  /**
   * True when the gate is closed by a read recent enough that open() would answer false without
   * reading again. Reads nothing and starts nothing (open() may start a read whose promise someone
   * must then await).
   */
  knownClosed(now = Date.now()): boolean {
    return this.keys.length > 0 && this.closed && now - this.checkedAt < Math.min(this.cacheMs, CLOSED_RECHECK_MS);
  }

  /**
   * True while the last read closed the gate, however long ago: a stale read starts the next one
   * (shared, as open() would) without waiting for it. For a caller that refuses at once instead of
   * waiting up to closedAnswerMs for the read: the gate reopens for the callers after the read, not
   * during it. False after a read that failed, until one succeeds, so the caller goes to open() and
   * meets the failure (an ingest answers 503 and logs it, not 429 for ever).
   */
  closedByLastRead(now = Date.now()): boolean {
    if (this.keys.length === 0 || !this.closed || this.lastReadFailed) return false;
    if (!this.knownClosed(now)) {
      Promise.resolve(this.open()).catch(() => {
        this.lastReadFailed = true;
      });
    }
    return true;
  }

  private async read(now: number): Promise<boolean> {
    const [sinceMs, before, added] = [now - this.checkedAt, this.lastLag, this.addedSinceCheck];
    this.checkedAt = now;
    this.addedSinceCheck = 0;
    const state = await this.probe(now, this.maxAgeMs > 0);
    const lag = this.inEvents(state.entries);
    const left = before + added - lag;
    if (sinceMs > 0) {
      const kept = Math.exp(-sinceMs / 1_000);
      this.closedShare = this.closedShare * kept + (this.closed ? 1 - kept : 0);
    }
    if (sinceMs > 0 && sinceMs < 5_000 && left >= 0) {
      const rate = left / sinceMs;
      this.drainPerMs = this.drainPerMs > 0 ? 0.7 * this.drainPerMs + 0.3 * rate : rate;
    }
    this.lastLag = lag;
    this.lastReadFailed = false;
    const age = this.maxAgeMs > 0 ? state.ageMs : 0;
    this.lastAge = age;
    const down = this.downstream ? this.inEvents(state.downstream ?? 0) : 0;
    this.lastDownstream = down;
    // Each bound holds the gate on its own: it takes hold above its mark and lets go below its low
    // mark (half the age bound), so the gate does not flap at any of them. A bound that did not
    // close the gate does not keep it closed while it is between its marks: the queue closing it
    // and draining while the stream after it was mid-swing kept ingest refusing with the stages
    // before the ledger run dry (BENCHMARKS.md, issue 13, thirty-fifth session).
    const held = this.held;
    if (this.onHeld && sinceMs > 0) {
      for (const bound of GATE_BOUNDS) if (held[bound]) this.onHeld(bound, sinceMs);
    }
    held.queue = held.queue ? lag >= this.low : lag > this.high;
    held.age = this.maxAgeMs > 0 && (held.age ? age >= this.maxAgeMs / 2 : age > this.maxAgeMs);
    held.after = !!this.downstream && (held.after ? down >= this.downstream.low : down > this.downstream.high);
    return !this.closed;
  }

  /**
   * While closed, when to come back (ms): about when the gate opens again (the queue above the
   * low mark over the rate it has been draining at), stretched by how much of the last second the
   * gate was closed, within 50 ms to 1 s (250 ms before any drain was measured). A client told
   * this at saturation comes back as the queue can take it again, so the queue refills before it
   * runs dry (Retry-After says whole seconds: every client paused a second while the stages ran
   * dry); under a sustained overload the gate is closed nearly all the time and the hint goes to
   * a second, so refused clients do not come back in a storm of requests that are refused again
   * (BENCHMARKS.md, issue 13, ninth session). With several API processes each counts only its own
   * writes between reads, so the drain it sees is too low and the hint errs long, never short.
   */
  retryHintMs(): number {
    if (this.drainPerMs <= 0) return RETRY_HINT.unknownMs;
    // What holds the gate: the queue above its low mark, or the stream after it above its own,
    // which drains at about the queue's rate (the pipeline's).
    const above = Math.max(
      this.held.queue ? this.lastLag - this.low : 0,
      this.held.after && this.downstream ? this.lastDownstream - this.downstream.low : 0,
    );
    const ms = Math.max(0, above) / this.drainPerMs / Math.max(0.01, 1 - this.closedShare);
    return Math.round(Math.min(RETRY_HINT.maxMs, Math.max(RETRY_HINT.minMs, ms)));
  }

  /** Entries read from Redis, in events when the gate has sizes. */
  private inEvents(entries: number): number {
    return this.sizes ? Math.round(entries * this.sizes.eventsPerEntry()) : entries;
  }

  /** Counts entries (events, with `sizes`) this process wrote to the watched streams since the last lag read. */
  added(count: number): void {
    this.addedSinceCheck += count;
  }

  /** Waits until the gate is open; returns false if `stopping` turned true first. */
  async waitOpen(
    stopping: () => boolean,
    onPause?: (paused: boolean) => void,
    onLongPause?: (state: { pausedMs: number; lag: number; low: number; age: number }) => void,
  ): Promise<boolean> {
    if (await this.open()) return true;
    onPause?.(true);
    const since = Date.now();
    let reported = since;
    try {
      while (!stopping()) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        if (await this.open()) return true;
        if (onLongPause && Date.now() - reported > 10_000) {
          reported = Date.now();
          onLongPause({ pausedMs: reported - since, lag: this.lastLag, low: this.low, age: this.lastAge });
        }
      }
      return false;
    } finally {
      onPause?.(false);
    }
  }
}
