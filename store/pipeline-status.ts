// What the pipeline looks like from Redis: every stream and partition, every consumer group's lag,
// pending entries and consumers, dead letters per stage, rejected events per code, throughput and
// Redis memory. Read by `npm run status` (ops/status.ts) and the console's health panel.
import type { Redis } from '../pipeline/redis.js';
import { decodePayload } from '../pipeline/codec.js';
import { STREAMS } from './streams.js';
import { deadLetterKey, partitionedKey } from '../pipeline/keys.js';
import type { Topology } from '../pipeline/stage.js';
import {
  consumersInfo,
  groupsInfo,
  readRangeReverse,
  withDeadLetterStages,
  stagesOf,
  streamInfo,
  streamsInOrder,
  type ConsumerInfo,
  type GroupInfo,
} from './stream-info.js';

/** The part of a rejected entry's payload counted here (stages/types.ts RejectedEvent). */
interface RejectedPayload {
  stage?: string;
  code?: string;
  event?: { tenantId?: string };
}

interface GroupStatus extends GroupInfo {
  /** False when the topology names this group but it does not exist (no worker started yet). */
  exists: boolean;
  inTopology: boolean;
  consumerList: ConsumerInfo[];
  /** Entries delivered per second over the last sample (null until there are two samples). */
  rate: number | null;
}

interface StreamStatus {
  stream: string;
  partition: number;
  key: string;
  length: number;
  lastId: string | null;
  groups: GroupStatus[];
}

export interface StageStatus {
  stage: string;
  input: string;
  /** Summed over partitions; null when some partition's lag is unknown. */
  lag: number | null;
  pending: number;
  consumers: number;
  deadLetters: number;
  rate: number | null;
}

export interface RejectedStatus {
  length: number;
  scanned: number;
  byCode: { stage: string; code: string; count: number }[];
}

export interface StatusSnapshot {
  at: string;
  prefix: string;
  partitions: number;
  redis: { usedMemory: number; maxMemory: number; policy: string; version: string };
  streams: StreamStatus[];
  stages: StageStatus[];
  rejected: RejectedStatus;
}

/** entries-read of every group, keyed by stream|partition|group, with the time it was read. */
export interface ReadSample {
  at: number;
  counts: Map<string, number | null>;
}

const sampleKey = (stream: string, partition: number, group: string) => `${stream}|${partition}|${group}`;

/** entries-read, which Redis leaves unset for a group created at the start that has read nothing yet. */
function entriesRead(group: GroupInfo): number | null {
  return group.entriesRead ?? (group.lastDeliveredId === '0-0' ? 0 : null);
}

/** Entries delivered per second between two samples; null when either count is unknown or went back. */
export function rateBetween(before: ReadSample | undefined, after: ReadSample, key: string): number | null {
  if (!before) return null;
  const a = before.counts.get(key);
  const b = after.counts.get(key);
  const seconds = (after.at - before.at) / 1000;
  if (a === null || a === undefined || b === null || b === undefined || b < a || seconds <= 0) return null;
  return (b - a) / seconds;
}

/**
 * A group's lag, also when Redis cannot tell (after deletions inside the stream): nothing is
 * left when it has been given the stream's last entry.
 */
export function effectiveLag(group: GroupInfo, lastId: string | null): number | null {
  if (group.lag !== null) return group.lag;
  if (lastId !== null && group.lastDeliveredId === lastId) return 0;
  return null;
}

/** Counts rejected events by stage and code, most frequent first. */
export function countRejections(payloads: readonly Required<Pick<RejectedPayload, 'stage' | 'code'>>[]): RejectedStatus['byCode'] {
  const counts = new Map<string, { stage: string; code: string; count: number }>();
  for (const { stage, code } of payloads) {
    const key = `${stage}\u0000${code}`;
    const row = counts.get(key) ?? { stage: String(stage), code: String(code), count: 0 };
    row.count++;
    counts.set(key, row);
  }
  return [...counts.values()].sort((a, b) => b.count - a.count || a.stage.localeCompare(b.stage) || a.code.localeCompare(b.code));
}

export interface CollectOptions {
  prefix: string;
  partitions: number;
  topology: Topology;
  /** How many of the newest rejected entries (over all partitions) to decode and count. */
  rejectedScan?: number;
  /** Also list stages found only by their dead-letter keys (a SCAN over the whole keyspace); default true. */
  scanDeadLetterKeys?: boolean;
  /** Count only this tenant's rejected events (the console); every tenant's by default. */
  rejectedTenant?: string;
  previous?: ReadSample;
}

/** Takes only the groups' entries-read counters: the cheap first half of a throughput sample. */
export async function sampleEntriesRead(redis: Redis, options: CollectOptions): Promise<ReadSample> {
  const counts = new Map<string, number | null>();
  for (const stream of streamsInOrder(options.topology)) {
    for (let p = 0; p < options.partitions; p++) {
      for (const group of await groupsInfo(redis, partitionedKey(options.prefix, stream, p))) {
        counts.set(sampleKey(stream, p, group.name), entriesRead(group));
      }
    }
  }
  return { at: Date.now(), counts };
}


export async function collectStatus(redis: Redis, options: CollectOptions): Promise<{ snapshot: StatusSnapshot; sample: ReadSample }> {
  const { prefix, partitions, topology } = options;
  const counts = new Map<string, number | null>();
  const streams: StreamStatus[] = [];
  for (const stream of streamsInOrder(topology)) {
    const expected = topology.filter((t) => t.stream === stream).map((t) => t.group);
    for (let p = 0; p < partitions; p++) {
      const key = partitionedKey(prefix, stream, p);
      const info = await streamInfo(redis, key);
      const found = await groupsInfo(redis, key);
      const groups: GroupStatus[] = [];
      for (const group of found) {
        counts.set(sampleKey(stream, p, group.name), entriesRead(group));
        groups.push({
          ...group,
          lag: effectiveLag(group, info.lastId),
          exists: true,
          inTopology: expected.includes(group.name),
          consumerList: await consumersInfo(redis, key, group.name),
          rate: null,
        });
      }
      for (const name of expected) {
        if (found.some((g) => g.name === name)) continue;
        groups.push({
          name,
          consumers: 0,
          pending: 0,
          lastDeliveredId: '-',
          entriesRead: null,
          lag: info.length,
          exists: false,
          inTopology: true,
          consumerList: [],
          rate: null,
        });
      }
      streams.push({ stream, partition: p, key, length: info.length, lastId: info.lastId, groups });
    }
  }
  const sample: ReadSample = { at: Date.now(), counts };
  for (const s of streams) for (const g of s.groups) if (g.exists) g.rate = rateBetween(options.previous, sample, sampleKey(s.stream, s.partition, g.name));

  const stages: StageStatus[] = [];
  const stageNames = options.scanDeadLetterKeys === false ? stagesOf(topology).map((t) => t.stage) : await withDeadLetterStages(redis, prefix, stagesOf(topology).map((t) => t.stage));
  for (const stage of stageNames) {
    const input = topology.find((t) => t.group === stage)?.stream ?? '?';
    const groups = streams.filter((s) => s.stream === input).flatMap((s) => s.groups.filter((g) => g.name === stage));
    let deadLetters = 0;
    for (let p = 0; p < partitions; p++) deadLetters += await redis.xlen(deadLetterKey(prefix, stage, p));
    const rates = groups.map((g) => g.rate);
    stages.push({
      stage,
      input,
      lag: groups.some((g) => g.lag === null) ? null : groups.reduce((sum, g) => sum + (g.lag ?? 0), 0),
      pending: groups.reduce((sum, g) => sum + g.pending, 0),
      consumers: groups.reduce((sum, g) => sum + g.consumers, 0),
      deadLetters,
      rate: rates.length === 0 || rates.some((r) => r === null) ? null : rates.reduce((sum: number, r) => sum + (r ?? 0), 0),
    });
  }

  const rejected = await collectRejected(redis, prefix, partitions, options.rejectedScan ?? 10_000, options.rejectedTenant);
  const memory = parseInfo(await redis.info('memory'));
  const server = parseInfo(await redis.info('server'));
  return {
    sample,
    snapshot: {
      at: new Date(sample.at).toISOString(),
      prefix,
      partitions,
      redis: {
        usedMemory: Number(memory.used_memory ?? 0),
        maxMemory: Number(memory.maxmemory ?? 0),
        policy: memory.maxmemory_policy ?? '?',
        version: server.redis_version ?? '?',
      },
      streams,
      stages,
      rejected,
    },
  };
}

async function collectRejected(redis: Redis, prefix: string, partitions: number, scan: number, tenantId?: string): Promise<RejectedStatus> {
  let length = 0;
  const payloads: Required<Pick<RejectedPayload, 'stage' | 'code'>>[] = [];
  const perPartition = Math.ceil(scan / partitions);
  for (let p = 0; p < partitions; p++) {
    const key = partitionedKey(prefix, STREAMS.rejected, p);
    length += await redis.xlen(key);
    if (perPartition === 0) continue;
    for (const entry of await readRangeReverse(redis, key, '+', '-', perPartition)) {
      const data = entry.fields.get('d');
      try {
        const payload = data ? decodePayload<RejectedPayload>(data) : undefined;
        if (tenantId !== undefined && payload?.event?.tenantId !== tenantId) continue;
        payloads.push({ stage: payload?.stage ?? '?', code: payload?.code ?? '(no payload)' });
      } catch {
        if (tenantId === undefined) payloads.push({ stage: '?', code: '(undecodable)' });
      }
    }
  }
  return { length, scanned: tenantId === undefined ? payloads.length : Math.min(length, perPartition * partitions), byCode: countRejections(payloads) };
}

function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** True when every consumer group the topology names exists and has no lag and nothing pending. */
export function isDrained(s: StatusSnapshot): boolean {
  return s.streams.every((st) => st.groups.every((g) => !g.inTopology || (g.exists && g.lag === 0 && g.pending === 0)));
}


/**
 * The (stream, group) pairs that exist in Redis on partition 0, in flow order: the topology as the
 * running workers created it, for a reader that does not load the stage registry (the API).
 */
export async function discoverTopology(redis: Redis, prefix: string): Promise<Topology> {
  const topology: { stream: string; group: string }[] = [];
  for (const stream of Object.values(STREAMS)) {
    for (const group of await groupsInfo(redis, partitionedKey(prefix, stream, 0))) topology.push({ stream, group: group.name });
  }
  return topology;
}
