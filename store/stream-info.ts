// Reading the pipeline's Redis Streams for the operator commands and the console: the streams and groups
// the topology names, raw entries, and the replies of XINFO.
import type { Redis } from '../pipeline/redis.js';
import { scanKeys } from '../pipeline/redis.js';
import { STREAMS } from './streams.js';
import type { Topology } from '../pipeline/stage.js';

/** Every stream worth showing, in flow order: the pipeline's own, then any other the topology reads. */
export function streamsInOrder(topology: Topology): string[] {
  const streams: string[] = Object.values(STREAMS);
  for (const { stream } of topology) if (!streams.includes(stream)) streams.push(stream);
  return streams;
}

/** The stages (consumer groups) of the topology, in order; a group is named after its stage. */
export function stagesOf(topology: Topology): { stage: string; input: string }[] {
  return topology.map(({ stream, group }) => ({ stage: group, input: stream }));
}

export interface RawEntry {
  id: string;
  fields: Map<string, Buffer>;
}

type BufferReply = [Buffer, Buffer[]][];

function toEntries(reply: BufferReply): RawEntry[] {
  return reply.map(([id, flat]) => {
    const fields = new Map<string, Buffer>();
    for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i].toString(), flat[i + 1]);
    return { id: id.toString(), fields };
  });
}

/** Entries from `start` to `end` (inclusive), oldest first, at most `count`. */
export async function readRange(redis: Redis, key: string, start: string, end: string, count: number): Promise<RawEntry[]> {
  return toEntries((await redis.xrangeBuffer(key, start, end, 'COUNT', count)) as unknown as BufferReply);
}

/** Entries from `end` back to `start`, newest first, at most `count`. */
export async function readRangeReverse(redis: Redis, key: string, end: string, start: string, count: number): Promise<RawEntry[]> {
  return toEntries((await redis.xrevrangeBuffer(key, end, start, 'COUNT', count)) as unknown as BufferReply);
}

/**
 * Walks a stream oldest first in pages, calling `visit` for each entry until it returns false
 * or `limit` entries were visited. Entries deleted by `visit` do not disturb the walk.
 */
export async function walkStream(
  redis: Redis,
  key: string,
  limit: number,
  visit: (entry: RawEntry) => Promise<boolean | undefined>,
  pageSize = 200,
): Promise<number> {
  let start = '-';
  let visited = 0;
  while (visited < limit) {
    const page = await readRange(redis, key, start, '+', Math.min(pageSize, limit - visited));
    if (page.length === 0) break;
    for (const entry of page) {
      visited++;
      if ((await visit(entry)) === false) return visited;
    }
    start = `(${page[page.length - 1].id}`;
  }
  return visited;
}

export function fieldText(entry: RawEntry, name: string): string | undefined {
  return entry.fields.get(name)?.toString();
}

/** A flat [name, value, name, value, ...] reply of XINFO as an object. */
function pairs(flat: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = flat[i + 1];
  return out;
}

function isNoSuchKey(err: unknown): boolean {
  return /no such key/i.test(String((err as Error)?.message));
}

export interface StreamInfo {
  length: number;
  lastId: string | null;
}

/** Length and last id of a stream; a missing stream is empty. */
export async function streamInfo(redis: Redis, key: string): Promise<StreamInfo> {
  try {
    const info = pairs((await redis.xinfo('STREAM', key)) as unknown[]);
    return { length: Number(info.length), lastId: String(info['last-generated-id']) };
  } catch (err) {
    if (isNoSuchKey(err)) return { length: 0, lastId: null };
    throw err;
  }
}

export interface GroupInfo {
  name: string;
  consumers: number;
  pending: number;
  lastDeliveredId: string;
  /** Entries delivered to the group so far (null when Redis cannot tell). */
  entriesRead: number | null;
  /** Entries not yet delivered to the group (null when Redis cannot tell). */
  lag: number | null;
}

const numberOrNull = (value: unknown) => (value === null || value === undefined ? null : Number(value));

export async function groupsInfo(redis: Redis, key: string): Promise<GroupInfo[]> {
  let reply: unknown[][];
  try {
    reply = (await redis.xinfo('GROUPS', key)) as unknown[][];
  } catch (err) {
    if (isNoSuchKey(err)) return [];
    throw err;
  }
  return reply.map((flat) => {
    const g = pairs(flat);
    return {
      name: String(g.name),
      consumers: Number(g.consumers),
      pending: Number(g.pending),
      lastDeliveredId: String(g['last-delivered-id']),
      entriesRead: numberOrNull(g['entries-read']),
      lag: numberOrNull(g.lag),
    };
  });
}

export interface ConsumerInfo {
  name: string;
  pending: number;
  /** Since the consumer last attempted a read or claim. */
  idleMs: number;
  /** Since its last successful read or claim (Redis 7.2+; null before). */
  inactiveMs: number | null;
}

export async function consumersInfo(redis: Redis, key: string, group: string): Promise<ConsumerInfo[]> {
  const reply = (await redis.xinfo('CONSUMERS', key, group)) as unknown[][];
  return reply.map((flat) => {
    const c = pairs(flat);
    const inactive = numberOrNull(c.inactive);
    return { name: String(c.name), pending: Number(c.pending), idleMs: Number(c.idle), inactiveMs: inactive === -1 ? null : inactive };
  });
}

/** The stages named, plus any other that has a dead-letter stream left in Redis. */
export async function withDeadLetterStages(redis: Redis, prefix: string, stages: string[]): Promise<string[]> {
  const names = [...stages];
  for await (const keys of scanKeys(redis, `${prefix}dead:*`)) {
    for (const key of keys) {
      const match = /^dead:(.+):\{p\d+\}$/.exec(key.slice(prefix.length));
      if (match && !names.includes(match[1])) names.push(match[1]);
    }
  }
  return names;
}
