import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UsageEvent } from '../../domain/events.js';
import { eventsOfEntries, MAX_BLOCK_EVENTS } from '../../pipeline/blocks.js';
import type { Config } from '../../pipeline/config.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { STREAMS } from '../../store/streams.js';
import { usageEvent } from '../../test/support/billing.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { GroupCommit, packGroups } from './group-commit.js';
import { IngestWriteError, IngestWriter } from './writer.js';

/** A write that ends when the test says so, recording what each write held. */
function controlledWrites() {
  const writes: { partition: number; groups: (readonly number[])[]; end: (err?: Error) => void }[] = [];
  const commit = new GroupCommit<number>(
    (partition, groups) =>
      new Promise<void>((resolve, reject) => {
        writes.push({ partition, groups: [...groups], end: (err) => (err ? reject(err) : resolve()) });
      }),
  );
  return { commit, writes };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('GroupCommit', () => {
  it('writes at once when nothing is in flight, and merges what arrives meanwhile into the next write', async () => {
    const { commit, writes } = controlledWrites();
    const first = commit.submit(0, [1, 2]);
    expect(writes).toHaveLength(1); // no wait: written in the same turn
    expect(writes[0].groups).toEqual([[1, 2]]);
    const waiting = [commit.submit(0, [3]), commit.submit(0, [4, 5]), commit.submit(0, [6])];
    await settle();
    expect(writes).toHaveLength(1); // one write in flight per partition
    writes[0].end();
    await first;
    await settle();
    expect(writes).toHaveLength(2);
    expect(writes[1].groups).toEqual([[3], [4, 5], [6]]);
    writes[1].end();
    await Promise.all(waiting);
  });

  it('keeps partitions apart: each has its own write in flight', async () => {
    const { commit, writes } = controlledWrites();
    const a = commit.submit(0, [1]);
    const b = commit.submit(2, [2]);
    expect(writes.map((w) => [w.partition, w.groups])).toEqual([
      [0, [[1]]],
      [2, [[2]]],
    ]);
    for (const w of writes) w.end();
    await Promise.all([a, b]);
  });

  it('fails every group of a failed write with its error, and goes on with the next', async () => {
    const { commit, writes } = controlledWrites();
    const first = commit.submit(0, [1]);
    const second = commit.submit(0, [2]);
    const third = commit.submit(0, [3]);
    const boom = new Error('boom');
    writes[0].end();
    await first;
    await settle();
    writes[1].end(boom);
    await expect(second).rejects.toBe(boom);
    await expect(third).rejects.toBe(boom);
    const fourth = commit.submit(0, [4]);
    await settle();
    expect(writes[2].groups).toEqual([[4]]);
    writes[2].end();
    await fourth;
  });
});

describe('packGroups', () => {
  it('fills blocks with whole groups up to the bound', () => {
    expect(packGroups([[1, 2], [3], [4, 5, 6], [7]], 3)).toEqual([[1, 2, 3], [4, 5, 6], [7]]);
  });

  it('cuts only a group larger than the bound, into blocks of its own', () => {
    expect(packGroups([[1], [2, 3, 4, 5, 6, 7, 8], [9]], 3)).toEqual([[1], [2, 3, 4], [5, 6, 7], [8], [9]]);
    expect(packGroups([], 3)).toEqual([]);
  });
});

describe('IngestWriter with group commit', () => {
  let iso: Isolated;
  let worlds = 0;
  beforeAll(async () => {
    iso = await isolated('group-commit');
  });
  afterAll(() => iso?.cleanup());

  const agent = (n: number) => ({ keyHash: `${n}`.padStart(64, 'a') }) as Parameters<typeof usageEvent>[1];
  const request = (n: number, size: number): UsageEvent[] => Array.from({ length: size }, () => usageEvent('ten_gc', agent(n)));

  function writerOf(overrides: Partial<Config> = {}) {
    const config: Config = { ...iso.config, REDIS_PREFIX: `${iso.config.REDIS_PREFIX}w${++worlds}:`, PARTITIONS: 1, ...overrides };
    const key = partitionedKey(config.REDIS_PREFIX, STREAMS.ingested, 0);
    const entries = async () => ((await iso.redis.xrangeBuffer(key, '-', '+')) as [Buffer, Buffer[]][]).map(([id, fields]) => eventsOfEntries<UsageEvent>([[id, fields]]).map((e) => e.payload.eventId));
    return { writer: new IngestWriter(iso.redis, config), entries };
  }

  it('merges concurrent requests into fewer entries, each request whole in one entry', async () => {
    const { writer, entries } = writerOf();
    const requests = Array.from({ length: 20 }, (_, n) => request(n, 30));
    await Promise.all(requests.map((events) => writer.write(events)));
    const written = await entries();
    // The first is written alone at once; the 19 that came meanwhile go in the next write, in
    // blocks of whole requests of at most MAX_BLOCK_EVENTS (500): 16 requests, then 3.
    expect(written.map((block) => block.length)).toEqual([30, 480, 90]);
    for (const block of written) expect(block.length).toBeLessThanOrEqual(MAX_BLOCK_EVENTS);
    for (const events of requests) {
      const holding = written.filter((block) => block.includes(events[0].eventId));
      expect(holding).toHaveLength(1);
      expect(events.every((e) => holding[0].includes(e.eventId))).toBe(true);
    }
    expect(written.flat().sort()).toEqual(requests.flat().map((e) => e.eventId).sort());
  });

  it('a request larger than MAX_BLOCK_EVENTS merged with others still lands whole', async () => {
    const { writer, entries } = writerOf();
    const requests = [request(1, 10), request(2, MAX_BLOCK_EVENTS + 20), request(3, 10), request(4, 10)];
    await Promise.all(requests.map((events) => writer.write(events)));
    const written = (await entries()).flat();
    expect(written.sort()).toEqual(requests.flat().map((e) => e.eventId).sort());
  });

  it('fails every request of a failed write with the same error (INGEST_DURABILITY=replica on a Redis without replicas)', async () => {
    const { writer } = writerOf({ INGEST_DURABILITY: 'replica', INGEST_DURABILITY_TIMEOUT_MS: 50 });
    const results = await Promise.allSettled([request(1, 5), request(2, 5), request(3, 5)].map((events) => writer.write(events)));
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(IngestWriteError);
      expect(((r as PromiseRejectedResult).reason as IngestWriteError).kind).toBe('not_durable');
    }
  });
});
