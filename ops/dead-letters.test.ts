import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { decodePayload, encodePayload } from '../pipeline/codec.js';
import { ensureGroups, runStage } from '../pipeline/harness.js';
import { loadConfig } from '../pipeline/config.js';
import { createLogger } from '../pipeline/logger.js';
import { Metrics } from '../pipeline/metrics.js';
import { entryFields, FIELD } from '../pipeline/blocks.js';
import { projectPath } from '../pipeline/paths.js';
import type { StageDefinition } from '../pipeline/stage.js';
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
  type MoveStep,
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
  const fields: (string | Buffer)[] = ['d', encodePayload(payload)];
  if (tags) fields.push('t', tags);
  return deadLetterFields(fields, error);
}

/** deadLetter with the entry's fields as given. */
async function deadLetterFields(fields: (string | Buffer)[], error: string): Promise<string> {
  const prefix = world.config.REDIS_PREFIX;
  const input = partitionedKey(prefix, STREAMS.attributed, 0);
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
    expect(again).toEqual({ moved: [], missing: [deadId], failed: [] });
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

describe('dead letters: blocks, failures, limits, groups', () => {
  /** A dead letter's fields by name. */
  async function deadRecord(stage: string, id: string, partition = 0): Promise<Map<string, Buffer>> {
    const [[, flat]] = (await redis.xrangeBuffer(deadLetterKey(world.config.REDIS_PREFIX, stage, partition), id, id)) as [Buffer, Buffer[]][];
    return new Map(flat.flatMap((f, i) => (i % 2 === 0 ? [[f.toString(), flat[i + 1]] as [string, Buffer]] : [])));
  }

  it('dead-letters a block the stage cannot decode whole, with its bytes and origin, shows it, and replays it byte for byte', async () => {
    const prefix = world.config.REDIS_PREFIX;
    const input = 'dlq-undecodable:in';
    const inKey = partitionedKey(prefix, input, 0);
    const stage: StageDefinition<unknown> = {
      name: 'undecodable',
      input,
      outputs: [],
      batchSize: 10,
      async setup() {
        return { handle: async (batch) => batch.map(() => ({})) };
      },
    };
    const topology = [{ stream: input, group: 'undecodable' }];
    const config = loadConfig({
      ...process.env,
      ...world.env,
      BLOCK_MS: '100',
      MAX_DELIVERIES: '1',
      CLAIM_IDLE_MS: '60000',
      CLAIM_INTERVAL_MS: '50',
      TRIM_INTERVAL_MS: '100000',
    });
    // Its two events are intact, but a layer after them has one entry instead of two: this reader refuses it.
    const bytes = Buffer.concat([encodePayload([usageEvent('evt_b1'), usageEvent('evt_b2')]), encodePayload([null])]);
    const sourceId = (await redis.xadd(inKey, '*', 'b', bytes, 'o', 'origin-undecodable', 't', 'cap:a\ncap:b'))!;
    const running = await runStage(stage, { config, log: createLogger('dlq-test', 'silent'), metrics: new Metrics('dlq_test'), topology, onWorkerFailed: () => {} });
    const deadKey = deadLetterKey(prefix, 'undecodable', 0);
    try {
      const deadline = Date.now() + 15_000;
      while ((await redis.xlen(deadKey)) === 0) {
        if (Date.now() > deadline) throw new Error('the block was not dead-lettered in time');
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await running.stop();
    }
    const [[deadId]] = await redis.xrange(deadKey, '-', '+');
    const record = await deadRecord('undecodable', deadId);
    expect(record.get('b')).toEqual(bytes);
    expect(record.get('o')?.toString()).toBe('origin-undecodable');
    expect(record.get('t')?.toString()).toBe('cap:a\ncap:b');
    expect(record.has('d')).toBe(false);
    expect(record.get('source_id')?.toString()).toBe(sourceId);

    const ctx2 = contextFrom(prefix, 1, topology);
    const shown = await showDeadLetter(redis, ctx2, 'undecodable', deadId);
    expect(shown!.block).toMatchObject({ bytes: bytes.length, origin: 'origin-undecodable', eventsWritten: 2 });
    expect(shown!.block!.error).toMatch(/undecodable block: a layer/);
    expect(shown!.payload).toEqual({ error: shown!.block!.error });
    expect(renderDeadLetters(await listDeadLetters(redis, ctx2, { stage: 'undecodable', limit: 10 }), 1)).toContain(`(undecodable block, ${bytes.length} bytes)`);

    const report = await replayDeadLetters(redis, ctx2, 'undecodable', [deadId]);
    expect(report).toMatchObject({ missing: [], failed: [], moved: [{ id: deadId, stream: input }] });
    const [[, fields]] = (await redis.xrangeBuffer(inKey, report.moved[0].newId, report.moved[0].newId)) as [Buffer, Buffer[]][];
    expect(fields.map((f) => f.toString('latin1'))).toEqual(['b', bytes.toString('latin1'), 'o', 'origin-undecodable', 't', 'cap:a\ncap:b', 'g', 'undecodable']);
  });

  it('shows a block dead letter that decodes: its events and their payloads', async () => {
    const deadId = await deadLetterFields(entryFields([usageEvent('evt_c1'), usageEvent('evt_c2')], 'origin-ok'), 'boom');
    const shown = await showDeadLetter(redis, ctx, 'price', deadId);
    expect(shown).toMatchObject({ block: { origin: 'origin-ok', events: 2 }, tenantId: 'ten_1' });
    expect((shown!.payload as UsageEvent[]).map((e) => e.eventId)).toEqual(['evt_c1', 'evt_c2']);
    expect(renderDeadLetters(await listDeadLetters(redis, ctx, { limit: 10 }), 1)).toContain('(block of 2 events)');
  });

  it('replay --all moves the dead letters around one it cannot replay, reports that one as failed, and says so as it goes', async () => {
    const prefix = world.config.REDIS_PREFIX;
    const first = await deadLetter(usageEvent('evt_f1'), 'x');
    // A dead letter without a payload (as one written before blocks kept their bytes).
    const bad = (await redis.xadd(deadLetterKey(prefix, 'price', 0), '*', 'd', '', 't', '', 'source', STREAMS.attributed, 'source_id', '1-0', 'stage', 'price', 'deliveries', '6', 'error', 'x'))!;
    const last = await deadLetter(usageEvent('evt_f2'), 'x');
    const steps: MoveStep[] = [];
    const report = await replayDeadLetters(redis, ctx, 'price', { all: true, limit: 100 }, (step) => steps.push(step));
    expect(report.moved.map((m) => [m.id, m.eventId])).toEqual([
      [first, 'evt_f1'],
      [last, 'evt_f2'],
    ]);
    expect(report.failed).toEqual([{ id: bad, error: expect.stringContaining('has no payload') }]);
    expect(report.missing).toEqual([]);
    expect(steps.map((s) => s.kind)).toEqual(['moved', 'failed', 'moved']);
    expect((await redis.xrange(deadLetterKey(prefix, 'price', 0), '-', '+')).map(([id]) => id)).toEqual([bad]);
    expect(renderMoves('dead:price', report)).toMatch(/failed: dead:price .* has no payload[\s\S]*replayed 2 dead:price entries, 1 failed/);

    // The command line: each entry printed as it goes, the summary, exit code 1.
    await deadLetter(usageEvent('evt_f3'), 'x');
    const cli = spawnSync(process.execPath, ['--import', 'tsx', projectPath('ops', 'dead-letters.ts'), 'replay', 'price', '--all'], {
      env: { ...process.env, ...world.env, PARTITIONS: '1' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(cli.stdout).toMatch(/replayed dead:price \S+ -> events:attributed \S+ \(event evt_f3/);
    expect(cli.stdout).toMatch(new RegExp(`failed: dead:price ${bad}: .*has no payload`));
    expect(cli.stdout).toMatch(/replayed 1 dead:price entry, 1 failed/);
    expect(cli.status).toBe(1);
  });

  it('--all --limit N moves at most N over every partition (PARTITIONS=2), for dead letters and rejected events', async () => {
    const prefix = world.config.REDIS_PREFIX;
    const ctx2 = contextFrom(prefix, 2, TOPOLOGY);
    for (const p of [0, 1]) {
      for (const n of [1, 2]) {
        await redis.xadd(deadLetterKey(prefix, 'price', p), '*', 'd', encodePayload(usageEvent(`evt_p${p}_${n}`)), 'source', STREAMS.attributed, 'error', 'x');
        await redis.xadd(partitionedKey(prefix, STREAMS.rejected, p), '*', 'd', encodePayload(rejection('key-resolve', 'unknown_key', 'x', usageEvent(`evt_r${p}_${n}`))));
      }
    }
    expect((await replayDeadLetters(redis, ctx2, 'price', { all: true, limit: 1 })).moved.map((m) => m.eventId)).toEqual(['evt_p0_1']);
    expect((await replayDeadLetters(redis, ctx2, 'price', { all: true, limit: 2 })).moved.map((m) => m.eventId)).toEqual(['evt_p0_2', 'evt_p1_1']);
    expect((await replayRejected(redis, ctx2, { all: true, limit: 1 })).moved).toHaveLength(1);
    expect((await replayRejected(redis, ctx2, { all: true, limit: 2 })).moved).toHaveLength(2);
    expect((await dropDeadLetters(redis, ctx2, 'price', { all: true, limit: 1 })).dropped).toHaveLength(1);
  });

  it("replays for the dead letter's own group only: the entry carries g, and keeps the one it had", async () => {
    const prefix = world.config.REDIS_PREFIX;
    const input = partitionedKey(prefix, STREAMS.attributed, 0);
    const plain = await deadLetter(usageEvent('evt_g1'), 'x', 'cap:a');
    const forGroup = await deadLetterFields(['d', encodePayload(usageEvent('evt_g2')), FIELD.forGroup, 'price'], 'x');
    expect((await deadRecord('price', forGroup)).get(FIELD.forGroup)?.toString()).toBe('price');
    const report = await replayDeadLetters(redis, ctx, 'price', [plain, forGroup]);
    expect(report.moved).toHaveLength(2);
    const replayed = await Promise.all(report.moved.map(async (m) => ((await redis.xrangeBuffer(input, m.newId, m.newId)) as [Buffer, Buffer[]][])[0][1].map((f) => f.toString())));
    expect(replayed[0].slice(0, 2)).toEqual(['d', expect.any(String)]);
    expect(replayed[0].slice(2)).toEqual(['t', 'cap:a', FIELD.forGroup, 'price']);
    expect(replayed[1].slice(2)).toEqual([FIELD.forGroup, 'price']);
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
