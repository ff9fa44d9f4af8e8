import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { advanceOnce, type AdvanceItem } from './advance-once.js';
import { partitionedKey } from './keys.js';
import { isolated, type Isolated } from '../test/support/isolated.js';

/**
 * lua/advanceOnce.lua with its builder and parser: a batch sends each key once, and every item
 * still sees what it would have seen applied alone, in order.
 */
let iso: Isolated;
let run = 0;

beforeAll(async () => {
  iso = await isolated('advance-once');
});
afterAll(async () => {
  await iso?.cleanup();
});

const INT64_MAX = 2n ** 63n - 1n;

const key = (ns: string, name: string) => partitionedKey(iso.config.REDIS_PREFIX, `${ns}:${name}`, 0);

/**
 * Items over a few shared keys, named under `ns`: counters added to, read, and lowered, by items
 * of three blocks (0-24, 25-49, 50-59). Each block is applied once by one marker, or, `perItem`,
 * each item by its own (the item applied alone).
 */
function itemsIn(ns: string, perItem = false): AdvanceItem[] {
  const named = (name: string) => key(ns, name);
  return Array.from({ length: 60 }, (_, i) => ({
    marker: perItem ? named(`marker:${Math.floor(i / 25)}:${i}`) : named(`marker:${Math.floor(i / 25)}`),
    counters: [
      { op: 'add', key: named(`spend:${i % 3}`), by: BigInt(1 + ((i * 7) % 5)) * 1_000_000_000n, ttlSeconds: 600 },
      { op: 'add', key: named('calls'), by: 1n, ttlSeconds: 900 },
      // What another item adds to, read here (as the previous hour's bucket is).
      { op: 'get', key: named(`spend:${(i + 1) % 3}`) },
      { op: 'min', key: named(`start:${i % 2}`), value: BigInt(1_000_000 + ((i * 37) % 11) * 1000), ttlSeconds: 1200 },
      { op: 'get', key: named('never-set') },
    ],
  }));
}

async function values(ns: string, names: string[]): Promise<(string | null)[]> {
  return iso.redis.mget(...names.map((name) => key(ns, name)));
}

const NAMES = ['spend:0', 'spend:1', 'spend:2', 'calls', 'start:0', 'start:1', 'never-set'];

/** The items of itemsIn applied as one batch under `batched` and one at a time under `single`; checks both end with the same totals. */
async function batchAndOneByOne(batched: string, single: string): Promise<{ inBatch: bigint[][]; oneByOne: bigint[][] }> {
  const inBatch = await advanceOnce(iso.redis, itemsIn(batched), 3600);
  const oneByOne: bigint[][] = [];
  for (const item of itemsIn(single, true)) oneByOne.push(...(await advanceOnce(iso.redis, [item], 3600)));
  expect(await values(batched, NAMES)).toEqual(await values(single, NAMES));
  return { inBatch, oneByOne };
}

describe('advanceOnce', () => {
  it('gives every item of a batch the view it has when the items are applied one at a time, with a redelivered marker counting nothing', async () => {
    const batched = `b${run++}`;
    const single = `s${run++}`;
    // The second block was applied before (a redelivery): its items add nothing, but still read and lower.
    await iso.redis.set(key(batched, 'marker:1'), '1');
    for (let i = 25; i < 50; i++) await iso.redis.set(key(single, `marker:1:${i}`), '1');
    for (const ns of [batched, single]) {
      await iso.redis.set(key(ns, 'spend:1'), '5');
      await iso.redis.set(key(ns, 'start:1'), '1004000');
    }
    const { inBatch, oneByOne } = await batchAndOneByOne(batched, single);
    expect(inBatch).toEqual(oneByOne);
    // Not a view of the batch's end: the first item saw its own call, the last all 50 fresh ones.
    expect(inBatch[0][1]).toBe(1n);
    expect(inBatch[59][1]).toBe(35n);
    expect(inBatch.map((view) => view[4])).toEqual(Array(60).fill(0n));
    // The least start seen so far, per item: never above its own value, lowered as the batch goes.
    expect(inBatch[0][3]).toBe(1_000_000n);
    expect(inBatch[1][3]).toBe(1_004_000n);

    // The whole batch again: nothing added, the views those of the totals as they stand.
    const again = await advanceOnce(iso.redis, itemsIn(batched), 3600);
    expect(await values(batched, NAMES)).toEqual(await values(single, NAMES));
    expect(again.map((view) => view[1])).toEqual(Array(60).fill(35n));
  });

  it('gives the same views and totals when every block is fresh (each key advanced by its total)', async () => {
    const batched = `f${run++}`;
    const single = `g${run++}`;
    for (const ns of [batched, single]) await iso.redis.set(key(ns, 'spend:1'), '5');
    const { inBatch, oneByOne } = await batchAndOneByOne(batched, single);
    expect(inBatch).toEqual(oneByOne);
    expect(inBatch[59][1]).toBe(60n);
    expect(await iso.redis.ttl(key(batched, 'calls'))).toBeGreaterThan(800);
  });

  it('sets the ttl of a counter a fresh marker creates, and renews none', async () => {
    const ns = `t${run++}`;
    const named = (name: string) => key(ns, name);
    await iso.redis.set(named('read'), '7', 'EX', 50);
    await iso.redis.set(named('added'), '7', 'EX', 50);
    await iso.redis.set(named('done'), '1');
    await iso.redis.set(named('old'), '7', 'EX', 50);
    const views = await advanceOnce(
      iso.redis,
      [
        {
          marker: named('m'),
          counters: [
            { op: 'add', key: named('added'), by: 2n, ttlSeconds: 500 },
            { op: 'get', key: named('read') },
            { op: 'add', key: named('new'), by: 4n, ttlSeconds: 500 },
          ],
        },
        { marker: named('done'), counters: [{ op: 'add', key: named('old'), by: 3n, ttlSeconds: 500 }] },
      ],
      100,
    );
    expect(views).toEqual([[9n, 7n, 4n], [7n]]);
    expect(await iso.redis.ttl(named('new'))).toBeGreaterThan(400);
    expect(await iso.redis.ttl(named('added'))).toBeLessThanOrEqual(50);
    expect(await iso.redis.ttl(named('read'))).toBeLessThanOrEqual(50);
    expect(await iso.redis.ttl(named('old'))).toBeLessThanOrEqual(50);
    expect(await iso.redis.ttl(named('m'))).toBeGreaterThan(90);

    // A redelivery naming each marker's increments (the 'each' form) creates a counter with the ttl too.
    const again = await advanceOnce(
      iso.redis,
      [
        { marker: named('m'), counters: [{ op: 'add', key: named('added'), by: 2n, ttlSeconds: 500 }] },
        { marker: named('m2'), counters: [{ op: 'add', key: named('fresh-in-each'), by: 5n, ttlSeconds: 500 }] },
      ],
      100,
    );
    expect(again).toEqual([[9n], [5n]]);
    expect(await iso.redis.ttl(named('fresh-in-each'))).toBeGreaterThan(400);
    expect(await iso.redis.ttl(named('added'))).toBeLessThanOrEqual(50);
  });

  it('keeps the ttl of a counter that held 0 (an ended session’s spend), though its add looks like a creation', async () => {
    const ns = `t${run++}`;
    const named = (name: string) => key(ns, name);
    await iso.redis.set(named('zero'), '0', 'EX', 50);
    const items: AdvanceItem[] = [{ marker: named('m'), counters: [{ op: 'add', key: named('zero'), by: 5n, ttlSeconds: 500 }] }];
    expect(await advanceOnce(iso.redis, items, 100)).toEqual([[5n]]);
    expect(await iso.redis.ttl(named('zero'))).toBeLessThanOrEqual(50);
  });

  it('views counters past 2^53 exactly (beyond what a Lua number holds)', async () => {
    const ns = `x${run++}`;
    const named = (name: string) => key(ns, name);
    const huge = 2n ** 60n + 3n;
    await iso.redis.set(named('huge'), huge.toString());
    const views = await advanceOnce(
      iso.redis,
      [5n, 7n, 1n].map((by, i) => ({ marker: named(`m${i}`), counters: [{ op: 'add', key: named('huge'), by, ttlSeconds: 60 }] })),
      60,
    );
    expect(views).toEqual([[huge + 5n], [huge + 12n], [huge + 13n]]);
    expect(await iso.redis.get(named('huge'))).toBe((huge + 13n).toString());
  });

  it('pins a counter past the int64 range at its max, in the view as in Redis', async () => {
    const ns = `p${run++}`;
    const named = (name: string) => key(ns, name);
    await iso.redis.set(named('big'), (INT64_MAX - 10n).toString());
    const views = await advanceOnce(
      iso.redis,
      [4n, 4n, 4n, 4n].map((by, i) => ({ marker: named(`m${i % 2}`), counters: [{ op: 'add', key: named('big'), by, ttlSeconds: 60 }] })),
      60,
    );
    expect(views).toEqual([[INT64_MAX - 6n], [INT64_MAX - 2n], [INT64_MAX], [INT64_MAX]]);
    expect(await iso.redis.get(named('big'))).toBe(INT64_MAX.toString());
  });
});
