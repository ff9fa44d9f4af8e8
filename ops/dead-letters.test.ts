import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { decodePayload, encodePayload } from '../pipeline/codec.js';
import { ensureGroups } from '../pipeline/harness.js';
import { STREAMS } from '../store/streams.js';
import { deadLetterKey, partitionedKey } from '../pipeline/keys.js';
import { scripted } from '../pipeline/scripts.js';
import type { UsageEvent } from '../domain/events.js';
import { rejection, type ResolvedEvent } from '../domain/flow.js';
import { deleteKeysWithPrefix } from '../pipeline/redis.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import {
  contextFrom,
  dropDeadLetters,
  listDeadLetters,
  listRejected,
  originalEvent,
  renderDeadLetters,
  renderMoves,
  replayDeadLetters,
  replayRejected,
  showDeadLetter,
  type DlqContext,
} from './dead-letters.js';

const TOPOLOGY = [
  { stream: STREAMS.ingested, group: 'key-resolve' },
  { stream: STREAMS.attributed, group: 'price' },
];

function usageEvent(eventId: string, extra: Partial<UsageEvent> = {}): UsageEvent {
  return {
    tenantId: 'ten_1',
    eventId,
    eventType: 'mcp.tool_invoked',
    credential: { kind: 'api_key', keyHash: 'ab'.repeat(32) },
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
    ...extra,
  };
}

let world: Isolated;
let redis: ReturnType<typeof scripted>;
let ctx: DlqContext;

beforeAll(async () => {
  world = await isolated('ops-dlq');
  redis = scripted(world.redis);
  ctx = contextFrom(world.config.REDIS_PREFIX, 1, TOPOLOGY);
});

afterAll(async () => {
  await world?.cleanup();
});

beforeEach(async () => {
  await deleteKeysWithPrefix(redis, world.config.REDIS_PREFIX);
  await ensureGroups(redis, world.config.REDIS_PREFIX, 1, TOPOLOGY);
});

/** Dead-letters an entry the way the harness does: read it, then the dead-letter script moves it. */
async function deadLetter(payload: unknown, error: string, tags = ''): Promise<string> {
  const prefix = world.config.REDIS_PREFIX;
  const input = partitionedKey(prefix, STREAMS.attributed, 0);
  const fields: (string | Buffer)[] = ['d', encodePayload(payload)];
  if (tags) fields.push('t', tags);
  const id = (await redis.xadd(input, '*', ...fields))!;
  // Read everything new (replays included): the entry is now pending, as a failing worker leaves it.
  await redis.xreadgroup('GROUP', 'price', 'price-test-0', 'COUNT', 1000, 'STREAMS', input, '>');
  await redis.hset(`${prefix}errors:price:{p0}`, id, error);
  expect(await redis.deadLetter(input, deadLetterKey(prefix, 'price', 0), `${prefix}errors:price:{p0}`, 'price', id, 5, 'price', STREAMS.attributed)).toBe(1);
  const [[deadId]] = (await redis.xrange(deadLetterKey(prefix, 'price', 0), '-', '+')).slice(-1);
  return deadId;
}

describe('dead letters', () => {
  it('lists and shows a dead letter with its decoded payload, bigint money intact', async () => {
    const deadId = await deadLetter({ ...usageEvent('evt_1'), cost: { total: 123_456_789_012n } }, 'Error: no rate for tool');
    const list = await listDeadLetters(redis, ctx, { limit: 10 });
    expect(list.total).toBe(1);
    expect(list.shown[0]).toMatchObject({ stage: 'price', id: deadId, deliveries: 5, error: 'Error: no rate for tool', eventId: 'evt_1', tenantId: 'ten_1' });
    expect(renderDeadLetters(list, 1)).toMatch(/price\s+5\s+evt_1\s+ten_1\s+Error: no rate for tool/);
    const shown = await showDeadLetter(redis, ctx, 'price', deadId);
    expect((shown!.payload as { cost: { total: bigint } }).cost.total).toBe(123_456_789_012n);
    expect(shown!.source).toBe(STREAMS.attributed);
  });

  it('replays an entry to the stage input (payload and tags), removing it from the dead letters, once', async () => {
    const prefix = world.config.REDIS_PREFIX;
    const deadId = await deadLetter(usageEvent('evt_2'), 'boom', 'cap:agent');
    const input = partitionedKey(prefix, STREAMS.attributed, 0);
    const report = await replayDeadLetters(redis, ctx, 'price', [deadId]);
    expect(report.missing).toEqual([]);
    expect(report.moved).toHaveLength(1);
    expect(report.moved[0]).toMatchObject({ stream: STREAMS.attributed, eventId: 'evt_2' });
    expect(await redis.xlen(deadLetterKey(prefix, 'price', 0))).toBe(0);

    // The consumer group is handed the replayed entry as a new one.
    const read = (await redis.callBuffer('XREADGROUP', 'GROUP', 'price', 'price-test-0', 'COUNT', 10, 'STREAMS', input, '>')) as [Buffer, [Buffer, Buffer[]][]][];
    const [[, entries]] = read;
    expect(entries).toHaveLength(1);
    const [id, fields] = entries[0];
    expect(id.toString()).toBe(report.moved[0].newId);
    expect(fields[2].toString()).toBe('t');
    expect(fields[3].toString()).toBe('cap:agent');
    expect(decodePayload<UsageEvent>(fields[1]).eventId).toBe('evt_2');

    const again = await replayDeadLetters(redis, ctx, 'price', [deadId]);
    expect(again).toEqual({ moved: [], missing: [deadId] });
    expect(renderMoves('dead:price', again)).toContain('not found');
  });

  it('two operators replaying the same entry at once re-add it only once', async () => {
    const deadId = await deadLetter(usageEvent('evt_3'), 'boom');
    const other = new Redis(world.config.REDIS_URL);
    try {
      const reports = await Promise.all([replayDeadLetters(redis, ctx, 'price', [deadId]), replayDeadLetters(other, ctx, 'price', [deadId])]);
      expect(reports.reduce((n, r) => n + r.moved.length, 0)).toBe(1);
      expect(await redis.xlen(partitionedKey(world.config.REDIS_PREFIX, STREAMS.attributed, 0))).toBe(2); // the original (acked) and the replay
    } finally {
      other.disconnect();
    }
  });

  it('replays --all and drops by id or all', async () => {
    const prefix = world.config.REDIS_PREFIX;
    const ids = [await deadLetter(usageEvent('evt_a'), 'x'), await deadLetter(usageEvent('evt_b'), 'x'), await deadLetter(usageEvent('evt_c'), 'x')];
    const limited = await replayDeadLetters(redis, ctx, 'price', { all: true, limit: 2 });
    expect(limited.moved.map((m) => m.eventId)).toEqual(['evt_a', 'evt_b']);
    expect(await redis.xlen(deadLetterKey(prefix, 'price', 0))).toBe(1);

    const more = [await deadLetter(usageEvent('evt_d'), 'x'), await deadLetter(usageEvent('evt_e'), 'x')];
    expect(await dropDeadLetters(redis, ctx, 'price', [ids[2], '1-1'])).toEqual({ dropped: [ids[2]], missing: ['1-1'] });
    expect((await dropDeadLetters(redis, ctx, 'price', { all: true, limit: Number.MAX_SAFE_INTEGER })).dropped).toEqual(more);
    expect(await redis.xlen(deadLetterKey(prefix, 'price', 0))).toBe(0);
  });
});

describe('rejected events', () => {
  const resolved = (eventId: string): ResolvedEvent => ({
    ...usageEvent(eventId),
    attribution: { customerId: 'cus_1', teamId: 'team_1', credentialId: 'key_1' },
  });

  async function reject(stage: string, code: string, event: UsageEvent): Promise<string> {
    const key = partitionedKey(world.config.REDIS_PREFIX, STREAMS.rejected, 0);
    return (await redis.xadd(key, '*', 'd', encodePayload(rejection(stage, code, `because ${code}`, event))))!;
  }

  it('strips what the stages added: the original event goes back', () => {
    const original = originalEvent(rejection('subscription-snapshot', 'no_subscription', 'none', resolved('evt_x')));
    expect(original).toEqual(usageEvent('evt_x'));
  });

  it('lists newest first with filters, and replays to events:ingested with the original event', async () => {
    const prefix = world.config.REDIS_PREFIX;
    const a = await reject('key-resolve', 'unknown_key', usageEvent('evt_r1'));
    const b = await reject('subscription-snapshot', 'no_subscription', resolved('evt_r2'));
    const c = await reject('subscription-snapshot', 'no_subscription', resolved('evt_r3'));

    const list = await listRejected(redis, ctx, { limit: 10 });
    expect(list.total).toBe(3);
    expect(list.shown.map((r) => r.id)).toEqual([c, b, a]);
    expect((await listRejected(redis, ctx, { limit: 10, code: 'unknown_key' })).shown.map((r) => r.eventId)).toEqual(['evt_r1']);

    const report = await replayRejected(redis, ctx, { all: true, limit: 100, code: 'no_subscription' });
    expect(report.moved.map((m) => m.eventId)).toEqual(['evt_r2', 'evt_r3']);
    expect(report.moved.every((m) => m.stream === STREAMS.ingested)).toBe(true);
    const remaining = await listRejected(redis, ctx, { limit: 10 });
    expect(remaining.shown.map((r) => r.id)).toEqual([a]);

    const ingested = (await redis.xrangeBuffer(partitionedKey(prefix, STREAMS.ingested, 0), '-', '+')) as unknown as [Buffer, Buffer[]][];
    const events = ingested.map(([, fields]) => decodePayload<UsageEvent & { attribution?: unknown }>(fields[1]));
    expect(events.map((e) => e.eventId)).toEqual(['evt_r2', 'evt_r3']);
    expect(events[0]).toEqual(usageEvent('evt_r2'));

    expect(await replayRejected(redis, ctx, [b, a])).toMatchObject({ missing: [b], moved: [{ id: a, eventId: 'evt_r1' }] });
  });
});
