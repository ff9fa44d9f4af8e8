/**
 * The operator's commands on the local Redis Cluster (ops/redis-cluster.sh, started when down):
 * `npm run status` reads every partition wherever its master is, `npm run dlq -- replay` puts a
 * dead letter back in its partition, and `npm run dlq -- rejected replay` moves a rejected event
 * from its customer's partition to its ingest partition, another slot on another master: two
 * steps (append once, then delete), not a MULTI that the cluster would refuse.
 */
import { execFileSync } from 'node:child_process';
import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingestPartitionKey } from '../api/ingest/writer.js';
import type { UsageEvent } from '../domain/events.js';
import { rejection, type ResolvedEvent } from '../domain/flow.js';
import { decodePayload, encodePayload } from '../pipeline/codec.js';
import { ensureGroups } from '../pipeline/harness.js';
import { deadLetterKey, partitionedKey, partitionOf } from '../pipeline/keys.js';
import { projectPath } from '../pipeline/paths.js';
import { forwardOnce } from '../pipeline/move.js';
import { keySlot } from '../pipeline/redis.js';
import { scripted } from '../pipeline/scripts.js';
import { collectStatus } from '../store/pipeline-status.js';
import { STREAMS } from '../store/streams.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { contextFrom, replayDeadLetters, replayRejected } from './dead-letters.js';

const CLUSTER_URL = 'redis+cluster://127.0.0.1:7100';
const PARTITIONS = 6;
const TOPOLOGY = [
  { stream: STREAMS.ingested, group: 'key-resolve' },
  { stream: STREAMS.attributed, group: 'price' },
];
let world: Isolated;

beforeAll(async () => {
  execFileSync('bash', [projectPath('ops', 'redis-cluster.sh')], { stdio: 'ignore' });
  world = await isolated('ops_cluster', { redisUrl: CLUSTER_URL });
  await ensureGroups(world.redis, world.config.REDIS_PREFIX, PARTITIONS, TOPOLOGY);
}, 120_000);

afterAll(async () => {
  await world?.cleanup();
});

const event = (eventId: string, keyHash: string): UsageEvent => ({
  tenantId: 'ten_c',
  eventId,
  eventType: 'mcp.tool_invoked',
  credential: { kind: 'api_key', keyHash },
  ingestNonce: 'n0nce',
  recordedAt: 1_700_000_000_000,
  ingestedAt: 1_700_000_000_100,
  toolName: 'read_database',
  durationMs: 12,
  status: 'SUCCESS',
  inputTokens: 10,
  outputTokens: 5,
  retryCount: 0,
  isParallel: false,
});

describe('ops commands on a Redis Cluster', () => {
  it('status reads the streams of every partition, on whichever master holds them', async () => {
    const prefix = world.config.REDIS_PREFIX;
    for (let p = 0; p < PARTITIONS; p++) {
      for (let i = 0; i <= p; i++) await world.redis.xadd(partitionedKey(prefix, STREAMS.ingested, p), '*', 'd', encodePayload({ eventId: `e${p}.${i}` }));
    }
    const masters = new Set(Array.from({ length: PARTITIONS }, (_, p) => keySlot(partitionedKey(prefix, STREAMS.ingested, p))).map((slot) => (world.redis as Cluster).slots[slot][0]));
    expect(masters.size).toBeGreaterThan(1);
    const { snapshot } = await collectStatus(world.redis, { prefix, partitions: PARTITIONS, topology: TOPOLOGY });
    // One row per partition, each read on its own master.
    const ingested = snapshot.streams.filter((s) => s.stream === STREAMS.ingested);
    expect(ingested.map((s) => s.length)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(ingested.map((s) => s.groups[0].lag)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(snapshot.stages.find((s) => s.stage === 'key-resolve')).toMatchObject({ lag: 21, pending: 0 });
  });

  it('replays a dead letter into its partition, and a rejected event into its ingest partition on another master, once', async () => {
    const prefix = world.config.REDIS_PREFIX;
    const redis = scripted(world.redis);
    const ctx = contextFrom(prefix, PARTITIONS, TOPOLOGY);

    // A dead letter of price in partition 4, as the harness leaves one.
    const input = partitionedKey(prefix, STREAMS.attributed, 4);
    const id = (await redis.xadd(input, '*', 'd', encodePayload(event('evt_dead', 'aa'.repeat(32)))))!;
    await redis.xreadgroup('GROUP', 'price', 'price-0', 'COUNT', 100, 'STREAMS', input, '>');
    expect(await redis.deadLetter(input, deadLetterKey(prefix, 'price', 4), `${prefix}errors:price:{p4}`, 'price', id, 5, 'price', STREAMS.attributed)).toBe(1);
    const [[deadId]] = await redis.xrange(deadLetterKey(prefix, 'price', 4), '-', '+');
    const replayed = await replayDeadLetters(redis, ctx, 'price', [deadId]);
    expect(replayed.moved).toMatchObject([{ stream: STREAMS.attributed, partition: 4, eventId: 'evt_dead' }]);
    expect(await redis.xlen(deadLetterKey(prefix, 'price', 4))).toBe(0);

    // A rejected event in a customer's partition whose ingest partition is on another master.
    let keyHash = '';
    let from = -1;
    let to = -1;
    for (let i = 0; i < 100 && from === -1; i++) {
      keyHash = i.toString(16).padStart(2, '0').repeat(32);
      const target = partitionOf(ingestPartitionKey('ten_c', { kind: 'api_key', keyHash }), PARTITIONS);
      const source = (target + 3) % PARTITIONS;
      const cluster = world.redis as Cluster;
      const master = (p: number) => cluster.slots[keySlot(partitionedKey(prefix, STREAMS.ingested, p))][0];
      if (master(source) !== master(target)) [from, to] = [source, target];
    }
    expect(from).toBeGreaterThanOrEqual(0);
    const resolved: ResolvedEvent = { ...event('evt_rej', keyHash), attribution: { customerId: 'cus_1', teamId: 'team_1', credentialId: 'key_1' } };
    const rejectedKey = partitionedKey(prefix, STREAMS.rejected, from);
    const ingestedKey = partitionedKey(prefix, STREAMS.ingested, to);
    expect(keySlot(rejectedKey)).not.toBe(keySlot(ingestedKey));
    const rejectedId = (await redis.xadd(rejectedKey, '*', 'd', encodePayload(rejection('subscription-snapshot', 'no_subscription', 'none', resolved))))!;
    // A replay that died between its two steps: the event was appended (with its marker), the rejected entry is still there.
    const marker = `${ingestedKey}:moved:${rejectedKey.replace(/[{}]/g, '')}:${rejectedId}`;
    await forwardOnce(redis, ingestedKey, [{ marker, fields: ['d', encodePayload(event('evt_rej', keyHash))] }], 60);
    const report = await replayRejected(redis, ctx, [rejectedId]);
    expect(report).toMatchObject({ missing: [], moved: [{ id: rejectedId, partition: to, stream: STREAMS.ingested, eventId: 'evt_rej' }] });
    expect(await redis.xlen(rejectedKey)).toBe(0);
    const ingested = (await redis.xrangeBuffer(ingestedKey, '-', '+')) as unknown as [Buffer, Buffer[]][];
    // Once: the replay found the marker and only deleted the source.
    expect(ingested.map(([, fields]) => decodePayload<UsageEvent>(fields[1])).filter((e) => e.eventId === 'evt_rej')).toEqual([event('evt_rej', keyHash)]);

    // A replay that runs whole moves the event and removes it from the rejected stream.
    const second = (await redis.xadd(rejectedKey, '*', 'd', encodePayload(rejection('subscription-snapshot', 'no_subscription', 'none', { ...resolved, eventId: 'evt_rej2' }))))!;
    expect((await replayRejected(redis, ctx, [second])).moved).toMatchObject([{ id: second, partition: to, eventId: 'evt_rej2' }]);
    expect(await redis.xlen(rejectedKey)).toBe(0);
    const after = (await redis.xrangeBuffer(ingestedKey, '-', '+')) as unknown as [Buffer, Buffer[]][];
    expect(after.map(([, fields]) => decodePayload<UsageEvent>(fields[1]).eventId).filter((e) => e.startsWith('evt_rej'))).toEqual(['evt_rej', 'evt_rej2']);
  });
});
