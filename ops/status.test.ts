import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodePayload } from '../pipeline/codec.js';
import { ensureGroups } from '../pipeline/harness.js';
import { STREAMS } from '../store/streams.js';
import { deadLetterKey, partitionedKey } from '../pipeline/keys.js';
import { rejection } from '../domain/flow.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { collectStatus, countRejections, effectiveLag, isDrained, rateBetween, sampleEntriesRead } from '../store/pipeline-status.js';
import { renderStatus } from './status.js';

describe('status arithmetic', () => {
  it('rates entries delivered per second between two samples', () => {
    const before = { at: 1_000, counts: new Map<string, number | null>([['k', 100], ['u', null]]) };
    const after = { at: 3_000, counts: new Map<string, number | null>([['k', 300], ['u', 5], ['n', 1]]) };
    expect(rateBetween(before, after, 'k')).toBe(100);
    expect(rateBetween(before, after, 'u')).toBeNull();
    expect(rateBetween(before, after, 'n')).toBeNull();
    expect(rateBetween(undefined, after, 'k')).toBeNull();
    expect(rateBetween(after, before, 'k')).toBeNull();
  });

  it('tells a lag Redis cannot compute when the group has the last entry', () => {
    const group = { name: 'g', consumers: 1, pending: 0, lastDeliveredId: '5-0', entriesRead: null, lag: null };
    expect(effectiveLag(group, '5-0')).toBe(0);
    expect(effectiveLag(group, '6-0')).toBeNull();
    expect(effectiveLag({ ...group, lag: 3 }, '6-0')).toBe(3);
  });

  it('counts rejections by stage and code, most frequent first', () => {
    expect(
      countRejections([
        { stage: 'key-resolve', code: 'unknown_key' },
        { stage: 'subscription-snapshot', code: 'no_subscription' },
        { stage: 'key-resolve', code: 'unknown_key' },
      ]),
    ).toEqual([
      { stage: 'key-resolve', code: 'unknown_key', count: 2 },
      { stage: 'subscription-snapshot', code: 'no_subscription', count: 1 },
    ]);
  });
});

describe('collectStatus against Redis', () => {
  let world: Isolated;
  const topology = [
    { stream: STREAMS.ingested, group: 'key-resolve' },
    { stream: STREAMS.resolved, group: 'subscription-snapshot' },
  ];

  beforeAll(async () => {
    world = await isolated('ops-status');
  });
  afterAll(async () => {
    await world?.cleanup();
  });

  it('reports lengths, lag, pending, consumers, dead letters, rejections and throughput', async () => {
    const { redis, config } = world;
    const prefix = config.REDIS_PREFIX;
    const options = { prefix, partitions: 1, topology };
    const ingested = partitionedKey(prefix, STREAMS.ingested, 0);
    await ensureGroups(redis, prefix, 1, topology.slice(0, 1));
    for (let i = 0; i < 5; i++) await redis.xadd(ingested, '*', 'd', encodePayload({ eventId: `e${i}` }));
    const before = await sampleEntriesRead(redis, options);
    await redis.xreadgroup('GROUP', 'key-resolve', 'kr-0', 'COUNT', 3, 'STREAMS', ingested, '>');
    await redis.xadd(deadLetterKey(prefix, 'key-resolve', 0), '*', 'd', '', 'stage', 'key-resolve');
    const rejected = partitionedKey(prefix, STREAMS.rejected, 0);
    for (const code of ['unknown_key', 'unknown_key', 'revoked_key']) {
      await redis.xadd(rejected, '*', 'd', encodePayload(rejection('key-resolve', code, code, { eventId: 'x' } as never)));
    }

    const { snapshot } = await collectStatus(redis, { ...options, previous: { ...before, at: before.at - 1000 } });
    const ing = snapshot.streams.find((s) => s.stream === STREAMS.ingested)!;
    expect(ing.length).toBe(5);
    expect(ing.groups[0]).toMatchObject({ name: 'key-resolve', exists: true, lag: 2, pending: 3, consumers: 1, entriesRead: 3 });
    expect(ing.groups[0].consumerList[0]).toMatchObject({ name: 'kr-0', pending: 3 });
    expect(ing.groups[0].rate).toBeGreaterThan(1);
    const res = snapshot.streams.find((s) => s.stream === STREAMS.resolved)!;
    expect(res.groups[0]).toMatchObject({ name: 'subscription-snapshot', exists: false });
    expect(snapshot.stages.find((s) => s.stage === 'key-resolve')).toMatchObject({ lag: 2, pending: 3, consumers: 1, deadLetters: 1 });
    expect(snapshot.rejected).toEqual({
      length: 3,
      scanned: 3,
      byCode: [
        { stage: 'key-resolve', code: 'unknown_key', count: 2 },
        { stage: 'key-resolve', code: 'revoked_key', count: 1 },
      ],
    });
    expect(snapshot.redis.usedMemory).toBeGreaterThan(0);
    expect(isDrained(snapshot)).toBe(false);

    const text = renderStatus(snapshot);
    expect(text).toMatch(/events:ingested\s+5\s+key-resolve\s+2\s+3/);
    expect(text).toContain('subscription-snapshot (no group yet)');
    expect(text).toMatch(/key-resolve\s+unknown_key\s+2/);
    expect(text).toMatch(/kr-0\s+3/);
  });
});
