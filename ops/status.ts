// The pipeline at a glance: every stream and partition, every consumer group's lag, pending
// entries and consumers, dead letters per stage, rejected events per code, throughput and
// Redis memory.
//   npm run status                      one table (samples throughput over ~1 s)
//   npm run status -- --json            the same as one JSON object
//   npm run status -- --watch           redraws every second (with --json: one JSON line per second)
//   npm run status -- --drain 60        first waits up to 60 s until no group has lag or pending entries
import type { Redis } from 'ioredis';
import { loadConfig } from '../pipeline/config.js';
import { decodePayload } from '../pipeline/codec.js';
import { STREAMS } from '../store/streams.js';
import { deadLetterKey, partitionedKey } from '../pipeline/keys.js';
import type { Topology } from '../pipeline/stage.js';
import type { RejectedEvent } from '../domain/flow.js';
import { connectCliRedis, isMain, numberFlag, parseArgs, runCli, UsageError } from './cli.js';
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
} from './streams.js';
import { formatBytes, formatDuration, oneLine, renderTable } from './table.js';

const USAGE = `usage: npm run status -- [--json] [--watch] [--drain SECONDS] [--rejected-scan N]
  --json             machine-readable output (with --watch: one JSON object per line)
  --watch            refresh every second until interrupted
  --drain SECONDS    first wait (up to SECONDS) until no consumer group has lag or pending entries
  --rejected-scan N  how many of the newest rejected entries to count by code (default 10000)`;

export interface GroupStatus extends GroupInfo {
  /** False when the topology names this group but it does not exist (no worker started yet). */
  exists: boolean;
  inTopology: boolean;
  consumerList: ConsumerInfo[];
  /** Entries delivered per second over the last sample (null until there are two samples). */
  rate: number | null;
}

export interface StreamStatus {
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
  redis: { usedMemory: number; usedMemoryHuman: string; maxMemory: number; policy: string; version: string };
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
export function entriesRead(group: GroupInfo): number | null {
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
export function countRejections(payloads: readonly Pick<RejectedEvent, 'stage' | 'code'>[]): RejectedStatus['byCode'] {
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
  for (const stage of await withDeadLetterStages(redis, prefix, stagesOf(topology).map((s) => s.stage))) {
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

  const rejected = await collectRejected(redis, prefix, partitions, options.rejectedScan ?? 10_000);
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
        usedMemoryHuman: formatBytes(Number(memory.used_memory ?? 0)),
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

async function collectRejected(redis: Redis, prefix: string, partitions: number, scan: number): Promise<RejectedStatus> {
  let length = 0;
  const payloads: Pick<RejectedEvent, 'stage' | 'code'>[] = [];
  const perPartition = Math.ceil(scan / partitions);
  for (let p = 0; p < partitions; p++) {
    const key = partitionedKey(prefix, STREAMS.rejected, p);
    length += await redis.xlen(key);
    if (perPartition === 0) continue;
    for (const entry of await readRangeReverse(redis, key, '+', '-', perPartition)) {
      const data = entry.fields.get('d');
      try {
        const payload = data ? decodePayload<RejectedEvent>(data) : undefined;
        payloads.push({ stage: payload?.stage ?? '?', code: payload?.code ?? '(no payload)' });
      } catch {
        payloads.push({ stage: '?', code: '(undecodable)' });
      }
    }
  }
  return { length, scanned: payloads.length, byCode: countRejections(payloads) };
}

export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

const rateText = (rate: number | null) => (rate === null ? null : rate.toFixed(1));

/** The snapshot as terminal tables. */
export function renderStatus(s: StatusSnapshot): string {
  const out: string[] = [];
  const limit = s.redis.maxMemory ? formatBytes(s.redis.maxMemory) : 'no limit';
  out.push(`agentmeter status  ${s.at}  prefix ${s.prefix}  partitions ${s.partitions}`);
  out.push(`redis ${s.redis.version}: ${s.redis.usedMemoryHuman} used of ${limit}, maxmemory-policy ${s.redis.policy}`);
  if (s.redis.policy !== 'noeviction') out.push(`WARNING: maxmemory-policy is ${s.redis.policy}: Redis may evict stream entries (events). Set it to noeviction.`);
  out.push('');

  const streamRows: (string | number | null)[][] = [];
  for (const st of s.streams) {
    const name = s.partitions > 1 ? `${st.stream} p${st.partition}` : st.stream;
    if (st.groups.length === 0) streamRows.push([name, st.length, '-', null, null, null, null, null, null]);
    st.groups.forEach((g, i) => {
      const idle = g.consumerList.length ? Math.min(...g.consumerList.map((c) => c.idleMs)) : null;
      streamRows.push([
        i === 0 ? name : '',
        i === 0 ? st.length : '',
        g.exists ? (g.inTopology ? g.name : `${g.name} (not in topology)`) : `${g.name} (no group yet)`,
        g.lag,
        g.pending,
        rateText(g.rate),
        g.consumers,
        idle === null ? null : formatDuration(idle),
        g.exists ? g.lastDeliveredId : null,
      ]);
    });
  }
  out.push(
    renderTable(['STREAM', 'LENGTH', 'GROUP', 'LAG', 'PENDING', 'READ/s', 'CONSUMERS', 'MIN IDLE', 'LAST DELIVERED'], streamRows, {
      right: [1, 3, 4, 5, 6, 7],
    }),
  );
  out.push('');

  out.push(
    renderTable(
      ['STAGE', 'INPUT', 'READ/s', 'LAG', 'PENDING', 'CONSUMERS', 'DEAD LETTERS'],
      s.stages.map((st) => [st.stage, st.input, rateText(st.rate), st.lag, st.pending, st.consumers, st.deadLetters]),
      { right: [2, 3, 4, 5, 6] },
    ),
  );
  out.push('');

  const consumerRows: (string | number | null)[][] = [];
  for (const st of s.streams) {
    for (const g of st.groups) {
      for (const c of g.consumerList) {
        consumerRows.push([
          s.partitions > 1 ? `${g.name} p${st.partition}` : g.name,
          c.name,
          c.pending,
          formatDuration(c.idleMs),
          c.inactiveMs === null ? null : formatDuration(c.inactiveMs),
        ]);
      }
    }
  }
  if (consumerRows.length) {
    out.push(renderTable(['GROUP', 'CONSUMER', 'PENDING', 'IDLE', 'INACTIVE'], consumerRows, { right: [2, 3, 4] }));
  } else {
    out.push('no consumers registered yet (no stage worker has read anything)');
  }
  out.push('');

  const r = s.rejected;
  out.push(`rejected: ${r.length} entries${r.length ? ` (by code over the newest ${r.scanned})` : ''}`);
  if (r.byCode.length) out.push(renderTable(['STAGE', 'CODE', 'COUNT'], r.byCode.map((c) => [c.stage, oneLine(c.code, 60), c.count])));
  return out.join('\n');
}

/** True when every consumer group the topology names exists and has no lag and nothing pending. */
export function isDrained(s: StatusSnapshot): boolean {
  return s.streams.every((st) => st.groups.every((g) => !g.inTopology || (g.exists && g.lag === 0 && g.pending === 0)));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { booleans: ['json', 'watch', 'help'], values: ['drain', 'rejected-scan'] });
  if (args.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  if (args.positional.length) throw new UsageError(`unexpected argument ${args.positional[0]}`);
  const json = args.flags.has('json');
  const watch = args.flags.has('watch');
  const drainSeconds = numberFlag(args, 'drain', 0, { decimal: true });
  const rejectedScan = numberFlag(args, 'rejected-scan', 10_000);
  const config = loadConfig();
  // The registry pulls in every stage module; loaded only when the command really runs.
  const { TOPOLOGY } = await import('../stages/registry.js');
  const redis = await connectCliRedis(config.REDIS_URL, `${config.REDIS_PREFIX}ops:status`);
  const options: CollectOptions = { prefix: config.REDIS_PREFIX, partitions: config.PARTITIONS, topology: TOPOLOGY, rejectedScan };
  try {
    if (drainSeconds > 0) {
      const deadline = Date.now() + drainSeconds * 1000;
      const started = Date.now();
      for (;;) {
        const { snapshot } = await collectStatus(redis, { ...options, rejectedScan: 0 });
        if (isDrained(snapshot)) {
          console.error(`drained after ${formatDuration(Date.now() - started)}`);
          break;
        }
        if (Date.now() >= deadline) {
          console.error(`not drained after ${drainSeconds} s (some group still has lag or pending entries, or no worker created it)`);
          break;
        }
        await sleep(500);
      }
    }
    let previous = await sampleEntriesRead(redis, options);
    let stop = false;
    process.once('SIGINT', () => (stop = true));
    do {
      await sleep(Math.max(0, 1000 - (Date.now() - previous.at)));
      const { snapshot, sample } = await collectStatus(redis, { ...options, previous });
      previous = sample;
      if (json) console.log(watch ? JSON.stringify(snapshot) : JSON.stringify(snapshot, null, 2));
      else if (watch) process.stdout.write(`\x1b[H\x1b[2J${renderStatus(snapshot)}\n\n(refreshing every second; Ctrl-C to stop)\n`);
      else console.log(renderStatus(snapshot));
    } while (watch && !stop);
  } finally {
    redis.disconnect();
  }
  return 0;
}

if (isMain(import.meta.url)) await runCli(USAGE, main);
