import { readdirSync, readFileSync } from 'node:fs';
import type { Redis } from '../../pipeline/redis.js';
import { Cluster } from 'ioredis';
import { scanKeys } from '../../pipeline/redis.js';

/** Each command's calls and microseconds so far, by name (lower case), from Redis's INFO commandstats. */
export async function redisCommandStats(redis: Redis): Promise<Map<string, { calls: number; usec: number }>> {
  const stats = new Map<string, { calls: number; usec: number }>();
  for (const m of (await redis.info('commandstats')).matchAll(/cmdstat_([\w|]+):calls=(\d+),usec=(\d+)/g)) stats.set(m[1], { calls: Number(m[2]), usec: Number(m[3]) });
  return stats;
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on every Linux this runs on). */
const TICKS_PER_SECOND = 100;

/** The fields of /proc/<pid>/stat after the command name, which may hold spaces and parentheses (they start after the last ')'). */
function statFields(pid: number | 'self'): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime of a process, in ticks; undefined once it is gone. */
export function cpuTicks(pid: number): number | undefined {
  try {
    const fields = statFields(pid);
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined;
  }
}

/** utime and stime of a process in µs (all its threads), and its minor page faults. */
export function processTimes(pid: number | 'self'): { user: number; system: number; minorFaults: number } {
  const fields = statFields(pid);
  const us = 1e6 / TICKS_PER_SECOND;
  return { user: Number(fields[11]) * us, system: Number(fields[12]) * us, minorFaults: Number(fields[7]) };
}

/** A process and all its descendants (cluster workers of the API, say). */
export function withDescendants(pid: number): number[] {
  const all = [pid];
  for (let i = 0; i < all.length; i++) {
    try {
      for (const task of readdirSync(`/proc/${all[i]}/task`)) {
        const children = readFileSync(`/proc/${all[i]}/task/${task}/children`, 'utf8').trim();
        if (children) for (const child of children.split(' ')) all.push(Number(child));
      }
    } catch {
      // gone meanwhile
    }
  }
  return all;
}

/** Pids whose command name (/proc/<pid>/comm, at most 15 characters) is one of `names`. */
export function pidsByName(names: string[]): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const comm = readFileSync(`/proc/${entry}/comm`, 'utf8').trim();
      if (names.includes(comm)) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/**
 * The machine's CPU ticks so far, every core, from the first line of /proc/stat: busy (user,
 * nice, system, irq, softirq and steal), idle (idle + iowait), and steal, the ticks its
 * hypervisor gave other guests.
 */
export function machineTicks(): { busy: number; idle: number; steal: number } {
  const ticks = readFileSync('/proc/stat', 'utf8').slice(0, 200).split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const idle = ticks[3] + ticks[4];
  return { busy: ticks.reduce((a, b) => a + b, 0) - idle, idle, steal: ticks[7] ?? 0 };
}

/**
 * CPU use per process kind, as a percentage of one core, between two samples. Each kind is a
 * function giving its current pids; a pid's time counts from the first sample that saw it. Two
 * more kinds are the machine's: `idle`, and `steal`, the time the hypervisor gave other guests
 * (on a shared VM, what moves a run's rate while the code stays the same).
 */
export class CpuMeter {
  private lastMachine = machineTicks();
  private last = new Map<number, number>();
  private lastAt = 0;
  readonly totals = new Map<string, number>();
  private firstAt = 0;

  constructor(private readonly kinds: Map<string, () => number[]>) {}

  sample(): Record<string, number> {
    const now = performance.now();
    const elapsed = (now - this.lastAt) / 1000;
    const next = new Map<number, number>();
    const result: Record<string, number> = {};
    for (const [kind, pids] of this.kinds) {
      let ticks = 0;
      for (const pid of pids()) {
        if (next.has(pid)) continue;
        const t = cpuTicks(pid);
        if (t === undefined) continue;
        next.set(pid, t);
        const before = this.last.get(pid);
        if (before !== undefined) ticks += t - before;
      }
      const pct = this.lastAt ? (ticks / TICKS_PER_SECOND / elapsed) * 100 : 0;
      result[kind] = Math.round(pct * 10) / 10;
      if (this.lastAt) this.totals.set(kind, (this.totals.get(kind) ?? 0) + ticks / TICKS_PER_SECOND);
    }
    const machine = machineTicks();
    for (const kind of ['idle', 'steal'] as const) {
      const ticks = machine[kind] - this.lastMachine[kind];
      result[kind] = this.lastAt ? Math.round((ticks / TICKS_PER_SECOND / elapsed) * 1000) / 10 : 0;
      if (this.lastAt) this.totals.set(kind, (this.totals.get(kind) ?? 0) + ticks / TICKS_PER_SECOND);
    }
    this.lastMachine = machine;
    if (!this.firstAt) this.firstAt = now;
    this.last = next;
    this.lastAt = now;
    return result;
  }

  /** Average CPU per kind (% of one core) since the first sample. */
  averages(): Record<string, number> {
    const seconds = (this.lastAt - this.firstAt) / 1000;
    const out: Record<string, number> = {};
    for (const [kind, total] of this.totals) out[kind] = seconds > 0 ? Math.round((total / seconds) * 1000) / 10 : 0;
    return out;
  }
}

export interface GroupInfo {
  stream: string;
  group: string;
  lag: number;
  pending: number;
  /** Entries delivered to the group since it was created (Redis 7's entries-read). */
  entriesRead: number;
}

/** Lag and pending of every consumer group of a stream (XINFO GROUPS). */
export async function groupsOf(redis: Redis, key: string, stream: string): Promise<GroupInfo[]> {
  let groups: unknown[][];
  try {
    groups = (await redis.xinfo('GROUPS', key)) as unknown[][];
  } catch (err) {
    if (/no such key/i.test(String((err as Error).message))) return [];
    throw err;
  }
  return groups.map((g) => {
    const info: Record<string, unknown> = {};
    for (let i = 0; i < g.length; i += 2) info[String(g[i])] = g[i + 1];
    return {
      stream,
      group: String(info.name),
      lag: info.lag == null ? NaN : Number(info.lag),
      pending: Number(info.pending),
      entriesRead: info['entries-read'] == null ? NaN : Number(info['entries-read']),
    };
  });
}

export interface RedisMemory {
  usedBytes: number;
  rssBytes: number;
  peakBytes: number;
}

export async function redisMemory(redis: Redis): Promise<RedisMemory> {
  // A cluster: the sum over its masters.
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  const total: RedisMemory = { usedBytes: 0, rssBytes: 0, peakBytes: 0 };
  for (const node of nodes) {
    const info = await node.info('memory');
    const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(info)?.[1] ?? NaN);
    total.usedBytes += field('used_memory');
    total.rssBytes += field('used_memory_rss');
    total.peakBytes += field('used_memory_peak');
  }
  return total;
}

/** Keys under a prefix and their memory (MEMORY USAGE), a SCAN call's worth (up to ~1,000 keys) per slice. */
async function* prefixMemorySlices(redis: Redis, prefix: string): AsyncGenerator<{ keys: number; bytes: number }> {
  // On a cluster, each master's keys through that master (a pipeline may not span slots).
  for (const node of redis instanceof Cluster ? redis.nodes('master') : [redis]) {
    for await (const found of scanKeys(node, `${prefix}*`)) {
      const pipeline = node.pipeline();
      for (const key of found) pipeline.call('MEMORY', 'USAGE', key);
      let bytes = 0;
      for (const [, value] of (await pipeline.exec()) ?? []) bytes += Number(value ?? 0);
      yield { keys: found.length, bytes };
    }
  }
}

/**
 * The keys under a prefix and their memory, measured a few slices at a time: step() goes through
 * `slicesPerStep` SCAN calls' worth of keys and returns the pass's totals once it has seen every
 * key (then starts the next pass), undefined before. A pass in one go over a benchmark's 130,000
 * keys took ~2 s, a burst of the sampler's CPU and Redis's beside the API it measures; in slices
 * it is a few ms a step.
 */
export class PrefixMemoryPass {
  private slices?: AsyncGenerator<{ keys: number; bytes: number }>;
  private keys = 0;
  private bytes = 0;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly slicesPerStep: number,
  ) {}

  async step(): Promise<{ keys: number; bytes: number } | undefined> {
    this.slices ??= prefixMemorySlices(this.redis, this.prefix);
    for (let i = 0; i < this.slicesPerStep; i++) {
      const slice = await this.slices.next();
      if (slice.done) {
        const totals = { keys: this.keys, bytes: this.bytes };
        this.slices = undefined;
        this.keys = 0;
        this.bytes = 0;
        return totals;
      }
      this.keys += slice.value.keys;
      this.bytes += slice.value.bytes;
    }
    return undefined;
  }
}

/** Least-squares slope of y over x (per unit of x). */
export function slope(points: [number, number][]): number {
  const n = points.length;
  if (n < 2) return 0;
  let sx = 0;
  let sy = 0;
  for (const [x, y] of points) {
    sx += x;
    sy += y;
  }
  const mx = sx / n;
  const my = sy / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den ? num / den : 0;
}
