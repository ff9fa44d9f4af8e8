import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventsOfEntries, entryFields } from './blocks.js';
import { decodeSequence } from './codec.js';
import { loadConfig, type Config } from './config.js';
import { ensureGroups, runStage, type RunningStage } from './harness.js';
import { partitionedKey, partitionOf } from './keys.js';
import { createLogger } from './logger.js';
import { Metrics } from './metrics.js';
import { forwardOnce, moveMarkerKey } from './move.js';
import { projectPath } from './paths.js';
import { connectRedis, deleteKeysWithPrefix, keySlot, type Redis } from './redis.js';
import { scripted } from './scripts.js';
import { emit, type StageDefinition, type Topology } from './stage.js';

// Moves between partitions run on the local Redis Cluster (ops/redis-cluster.sh), where two
// partitions' keys are on different nodes and a script that touched both would be refused.
const CLUSTER_URL = 'redis+cluster://127.0.0.1:7100';
const PREFIX = `t:move:${process.pid}:`;
const PARTITIONS = 4;
const log = createLogger('move-test', 'silent');
let redis: Redis;

beforeAll(() => {
  execFileSync('bash', [projectPath('ops', 'redis-cluster.sh')], { stdio: 'ignore' });
  redis = connectRedis(CLUSTER_URL, `${PREFIX}test`);
}, 120_000);

afterAll(async () => {
  await deleteKeysWithPrefix(redis, PREFIX);
  redis.disconnect();
});

function config(overrides: Record<string, string> = {}): Config {
  return loadConfig({
    REDIS_URL: CLUSTER_URL,
    REDIS_PREFIX: PREFIX,
    PARTITIONS: String(PARTITIONS),
    BLOCK_MS: '100',
    CLAIM_IDLE_MS: '300',
    CLAIM_INTERVAL_MS: '100',
    TRIM_INTERVAL_MS: '100000',
    ...overrides,
  });
}

async function until(check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('forwardOnce (step 1 of a move between partitions)', () => {
  it('appends each entry once per marker, in the target slot; a second run appends nothing', async () => {
    const target = partitionedKey(PREFIX, 'fw:out', 2);
    const entries = ['a', 'b', 'c'].map((origin) => ({ marker: moveMarkerKey(PREFIX, 'fw:out', origin, 2), fields: entryFields([{ n: origin }], origin) }));
    for (const e of entries) expect(keySlot(e.marker)).toBe(keySlot(target));
    const first = await forwardOnce(scripted(redis), target, entries, 60);
    expect(first.every((id) => typeof id === 'string')).toBe(true);
    // Redelivered after a crash between the two steps: the markers are found, nothing is appended.
    const again = await forwardOnce(scripted(redis), target, [...entries, { marker: moveMarkerKey(PREFIX, 'fw:out', 'd', 2), fields: entryFields([{ n: 'd' }], 'd') }], 60);
    expect(again.slice(0, 3)).toEqual([undefined, undefined, undefined]);
    expect(typeof again[3]).toBe('string');
    expect(await redis.xlen(target)).toBe(4);
    const ttl = await redis.ttl(entries[0].marker);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60);
  });

  it('is refused by the cluster when a marker is in another slot (a script touches one slot)', async () => {
    const target = partitionedKey(PREFIX, 'fw:out', 1);
    await expect(forwardOnce(scripted(redis), target, [{ marker: moveMarkerKey(PREFIX, 'fw:out', 'x', 3), fields: ['d', 'x'] }], 60)).rejects.toThrow(/CROSSSLOT/);
  });
});

describe('a stage that routes events to other partitions, on a cluster', () => {
  /** Reads partition 0 and sends each number to the partition of its key: most go to another node. */
  function router(input: string, output: string, delayFirstMs = 0): StageDefinition<{ n: number }> {
    let calls = 0;
    return {
      name: 'router',
      input,
      outputs: [output],
      batchSize: 50,
      async setup() {
        return {
          async handle(batch) {
            // The first batch is held past CLAIM_IDLE_MS: the other worker claims it and both move it.
            if (calls++ === 0 && delayFirstMs) await new Promise((r) => setTimeout(r, delayFirstMs));
            return batch.map((e) => ({ outputs: [emit(output, { n: e.payload.n }, `key-${e.payload.n}`)] }));
          },
        };
      },
    };
  }

  async function delivered(output: string): Promise<number[]> {
    const all: number[] = [];
    for (let p = 0; p < PARTITIONS; p++) {
      const key = partitionedKey(PREFIX, output, p);
      const events = eventsOfEntries<{ n: number }>((await redis.xrangeBuffer(key, '-', '+')) as [Buffer, Buffer[]][]);
      for (const e of events) {
        expect(partitionOf(`key-${e.payload.n}`, PARTITIONS)).toBe(p);
        all.push(e.payload.n);
      }
    }
    return all.sort((a, b) => a - b);
  }

  it('moves every event once to its partition, each block in two steps, and leaves nothing pending', async () => {
    const [input, output] = ['r1:in', 'r1:out'];
    const topology: Topology = [{ stream: input, group: 'router' }, { stream: output, group: 'sink' }];
    const cfg = config();
    await ensureGroups(redis, PREFIX, PARTITIONS, topology);
    const inKey = partitionedKey(PREFIX, input, 0);
    for (let b = 0; b < 20; b++) await redis.xadd(inKey, '*', ...entryFields(Array.from({ length: 10 }, (_, i) => ({ n: b * 10 + i })), `blk${b}`));
    const stage = await runStage(router(input, output), { config: cfg, log, metrics: new Metrics('router'), topology, consumer: 'one' });
    try {
      await until(async () => (await delivered(output)).length >= 200 && Number(((await redis.xpending(inKey, 'router')) as [number])[0]) === 0);
    } finally {
      await stage.stop();
    }
    expect(await delivered(output)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    const slots = new Set(Array.from({ length: PARTITIONS }, (_, p) => keySlot(partitionedKey(PREFIX, output, p))));
    expect(slots.size).toBe(PARTITIONS);
  }, 60_000);

  it('stays exactly once when two workers both move the same block (one held it past CLAIM_IDLE_MS)', async () => {
    const [input, output] = ['r2:in', 'r2:out'];
    const topology: Topology = [{ stream: input, group: 'router' }, { stream: output, group: 'sink' }];
    await ensureGroups(redis, PREFIX, PARTITIONS, topology);
    const inKey = partitionedKey(PREFIX, input, 0);
    for (let b = 0; b < 5; b++) await redis.xadd(inKey, '*', ...entryFields(Array.from({ length: 8 }, (_, i) => ({ n: b * 8 + i })), `blk${b}`));
    const slow = await runStage(router(input, output, 1_500), { config: config(), log, metrics: new Metrics('router'), topology, consumer: 'slow' });
    let fast: RunningStage | undefined;
    try {
      await new Promise((r) => setTimeout(r, 200));
      fast = await runStage(router(input, output), { config: config(), log, metrics: new Metrics('router'), topology, consumer: 'fast' });
      await until(async () => (await delivered(output)).length >= 40 && Number(((await redis.xpending(inKey, 'router')) as [number])[0]) === 0);
      // The slow worker wakes after the other moved and acked its batch: it must add nothing.
      await new Promise((r) => setTimeout(r, 2_000));
    } finally {
      await Promise.all([slow.stop(), fast?.stop()]);
    }
    expect(await delivered(output)).toEqual(Array.from({ length: 40 }, (_, i) => i));
  }, 60_000);

  it('moves a block whose events all go to one other partition as the bytes it read plus a layer', async () => {
    const [input, output] = ['r3:in', 'r3:out'];
    const topology: Topology = [{ stream: input, group: 'gatherer' }, { stream: output, group: 'sink' }];
    await ensureGroups(redis, PREFIX, PARTITIONS, topology);
    const key = Array.from({ length: 50 }, (_, i) => `customer-${i}`).find((k) => partitionOf(k, PARTITIONS) !== 0)!;
    const inKey = partitionedKey(PREFIX, input, 0);
    const outKey = partitionedKey(PREFIX, output, partitionOf(key, PARTITIONS));
    await redis.xadd(inKey, '*', ...entryFields(Array.from({ length: 6 }, (_, n) => ({ n })), 'blk-gathered'));
    const gatherer: StageDefinition<{ n: number }> = {
      name: 'gatherer',
      input,
      outputs: [output],
      batchSize: 50,
      async setup() {
        return { handle: async (batch) => batch.map((e) => ({ outputs: [emit(output, { ...e.payload, routed: true }, key)] })) };
      },
    };
    const stage = await runStage(gatherer, { config: config(), log, metrics: new Metrics('gatherer'), topology, consumer: 'one' });
    try {
      await until(async () => (await redis.xlen(outKey)) === 1);
    } finally {
      await stage.stop();
    }
    const field = (entry: [Buffer, Buffer[]], name: string) => entry[1][entry[1].findIndex((f, i) => i % 2 === 0 && f.toString() === name) + 1];
    const [read] = (await redis.xrangeBuffer(inKey, '-', '+')) as [Buffer, Buffer[]][];
    const [written] = (await redis.xrangeBuffer(outKey, '-', '+')) as [Buffer, Buffer[]][];
    const base = field(read, 'b');
    expect(field(written, 'b').subarray(0, base.length).equals(base)).toBe(true);
    expect(decodeSequence(field(written, 'b'))).toHaveLength(2);
    expect(field(written, 'o').toString()).toBe(`blk-gathered.${partitionOf(key, PARTITIONS)}`);
    expect(eventsOfEntries<unknown>([written]).map((e) => e.payload)).toEqual(Array.from({ length: 6 }, (_, n) => ({ n, routed: true })));
  }, 60_000);
});
