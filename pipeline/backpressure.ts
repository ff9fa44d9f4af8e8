import type { Redis } from './redis.js';

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
 * How long the oldest entry of a stream that some consumer group has not been handed yet has
 * waited, in ms (0 when every group has read everything). The entry after a group's last
 * delivered id is the oldest it has not been handed; its id holds the time it was added.
 */
async function queueAge(redis: Redis, key: string, now: number): Promise<number> {
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

/**
 * A high/low watermark gate: closes when the watched streams' lag goes above `high`,
 * reopens only once it is below `low`, so readers do not flap at the boundary. With `sizes`,
 * the marks are in events (the lag in entries times the events an entry carries lately). With
 * `maxAgeMs`, it also closes while the oldest waiting entry has waited longer than that: a
 * bound in time, whatever the rate.
 */
export class Watermark {
  private closed = false;
  private checkedAt = 0;
  private lastLag = 0;
  private addedSinceCheck = 0;
  private lastAge = 0;

  constructor(
    private readonly redis: Redis,
    private readonly keys: readonly string[],
    private readonly high: number,
    private readonly low: number,
    private readonly cacheMs = 0,
    private readonly sizes?: BlockSizes,
    /** Also closed while the oldest entry not yet handed to a group is older than this (0: not judged by age). */
    private readonly maxAgeMs = 0,
  ) {}

  /**
   * Whether the gate is open now. Far below the mark (the last lag read plus what this process
   * wrote since) a lag read is trusted for cacheMs; from half the mark up it is read every
   * time, so the gate closes within one batch of the mark.
   */
  async open(): Promise<boolean> {
    const now = Date.now();
    if (this.keys.length === 0) return true;
    const estimate = this.lastLag + this.addedSinceCheck;
    if (!this.closed && estimate < this.high / 2 && now - this.checkedAt < this.cacheMs) return true;
    this.checkedAt = now;
    this.addedSinceCheck = 0;
    let lag = 0;
    for (const key of this.keys) lag = Math.max(lag, await streamLag(this.redis, key));
    if (this.sizes) lag = Math.round(lag * this.sizes.eventsPerEntry());
    this.lastLag = lag;
    let age = 0;
    if (this.maxAgeMs > 0) for (const key of this.keys) age = Math.max(age, await queueAge(this.redis, key, now));
    this.lastAge = age;
    // Reopens below the low mark and below half the age bound, so it does not flap at either.
    const young = this.maxAgeMs === 0 || age < this.maxAgeMs / 2;
    const old = this.maxAgeMs > 0 && age > this.maxAgeMs;
    if (this.closed ? lag < this.low && young : lag > this.high || old) {
      this.closed = !this.closed;
    }
    return !this.closed;
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
