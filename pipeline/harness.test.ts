import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { loadConfig, type Config } from './config.js';
import { createLogger } from './logger.js';
import { Metrics } from './metrics.js';
import { decodePayload, decodeSequence, encodePayload } from './codec.js';
import { streamLag } from './backpressure.js';
import { deadLetterKey, errorsKey, limitFlagsChannel, partitionedKey } from './keys.js';
import { ensureGroups, runStage, StageServices, type RunningStage } from './harness.js';
import { publishControl } from './control.js';
import { TcpProxy } from '../test/support/tcp-proxy.js';
import { scripted, type KnownReadReply } from './scripts.js';
import { ackArguments, parseAckReply } from './ack.js';
import { entryFields, eventsOfEntries } from './blocks.js';
import { emit, type AnyStage, type EntryResult, type StageDefinition, type StageEntry, type Topology } from './stage.js';
import { deleteKeysWithPrefix } from './redis.js';
import { projectPath } from './paths.js';
import { sharedReads } from './shared-reads.js';

const PREFIX = `t:harness:${process.pid}:`;
const log = createLogger('harness-test', 'silent');
let redis: Redis;

function config(overrides: Record<string, string> = {}, prefix = PREFIX): Config {
  return loadConfig({
    REDIS_PREFIX: prefix,
    BLOCK_MS: '100',
    CLAIM_IDLE_MS: '300',
    CLAIM_INTERVAL_MS: '100',
    TRIM_INTERVAL_MS: '100000',
    ...overrides,
  });
}

let suite = 0;
/** Every test gets stream names of its own. */
function names() {
  suite++;
  const input = `s${suite}:in`;
  const output = `s${suite}:out`;
  return { input, output, inKey: partitionedKey(PREFIX, input, 0), outKey: partitionedKey(PREFIX, output, 0) };
}

function doubler(
  input: string,
  output: string,
  handle?: (batch: StageEntry<{ n: number }>[]) => Promise<EntryResult[]>,
  batchSize = 10,
  name = 'doubler',
): StageDefinition<{ n: number }> {
  return {
    name,
    input,
    outputs: [output],
    batchSize,
    async setup() {
      return {
        handle:
          handle ??
          (async (batch) => batch.map((e) => ({ outputs: [emit(output, { n: e.payload.n * 2 })] }))),
      };
    },
  };
}

async function feed(key: string, count: number, from = 0): Promise<void> {
  const pipeline = redis.pipeline();
  for (let i = from; i < from + count; i++) pipeline.xadd(key, '*', 'd', encodePayload({ n: i }));
  await pipeline.exec();
}

async function outputs(key: string): Promise<number[]> {
  const entries = (await redis.xrangeBuffer(key, '-', '+')) as [Buffer, Buffer[]][];
  return entries.map(([, fields]) => decodePayload<{ n: number }>(fields[1]).n);
}

async function until(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Reads and acks a stream as consumer group `group` would, until `count` entries or the time is up; returns how many. */
async function consume(key: string, group: string, count: number, timeoutMs: number): Promise<number> {
  const sink = new Redis(loadConfig({}).REDIS_URL);
  let consumed = 0;
  const deadline = Date.now() + timeoutMs;
  try {
    while (consumed < count && Date.now() < deadline) {
      const reply = (await sink.xreadgroup('GROUP', group, 'c', 'COUNT', 25, 'BLOCK', 200, 'STREAMS', key, '>')) as
        | [string, [string, string[]][]][]
        | null;
      if (!reply) continue;
      const ids = reply[0][1].map(([id]) => id);
      await sink.xack(key, group, ...ids);
      consumed += ids.length;
    }
  } finally {
    sink.disconnect();
  }
  return consumed;
}

function start(stage: AnyStage, topology: Topology, cfg = config(), consumer?: string): Promise<RunningStage> {
  return runStage(stage, { config: cfg, log, metrics: new Metrics('test'), topology, consumer });
}

beforeAll(() => {
  redis = new Redis(loadConfig({}).REDIS_URL);
});

afterAll(async () => {
  await deleteKeysWithPrefix(redis, PREFIX);
  redis.disconnect();
});

describe('stage harness', () => {
  it('reads, handles and forwards every entry once, in order', async () => {
    const { input, output, inKey, outKey } = names();
    await feed(inKey, 95);
    const stage = await start(doubler(input, output), [{ stream: input, group: 'doubler' }]);
    await until(async () => (await redis.xlen(outKey)) === 95);
    await stage.stop();
    expect(await outputs(outKey)).toEqual(Array.from({ length: 95 }, (_, i) => i * 2));
    expect(((await redis.xpending(inKey, 'doubler')) as [number])[0]).toBe(0);
  });

  it('a batch redelivered after another consumer acked it forwards nothing', async () => {
    const { input, output, inKey, outKey } = names();
    await feed(inKey, 5);
    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    let slowHandled = 0;
    // The slow consumer reads the batch, then stalls past the claim bound.
    const slow = await start(
      doubler(input, output, async (batch) => {
        await stalled;
        slowHandled += batch.length;
        return batch.map((e) => ({ outputs: [emit(output, { n: e.payload.n * 2 })] }));
      }),
      [{ stream: input, group: 'doubler' }],
      config(),
      'slow',
    );
    await until(async () => ((await redis.xpending(inKey, 'doubler')) as [number])[0] === 5);
    // A second consumer claims the idle entries, handles and forwards them.
    const fast = await start(doubler(input, output), [{ stream: input, group: 'doubler' }], config(), 'fast');
    await until(async () => (await redis.xlen(outKey)) === 5);
    release();
    await until(async () => slowHandled === 5);
    await new Promise((r) => setTimeout(r, 200));
    await Promise.all([slow.stop(), fast.stop()]);
    expect(await outputs(outKey)).toEqual([0, 2, 4, 6, 8]);
  });

  it('never lingers so long that another consumer claims the batch being gathered (a linger past CLAIM_IDLE_MS)', async () => {
    const { input, output, inKey, outKey } = names();
    const handled = new Map<number, number>();
    const lingering = (): StageDefinition<{ n: number }> => ({
      ...doubler(input, output, async (batch) => {
        for (const e of batch) handled.set(e.payload.n, (handled.get(e.payload.n) ?? 0) + 1);
        return batch.map((e) => ({ outputs: [emit(output, { n: e.payload.n * 2 })] }));
      }, 1000),
      lingerMs: 3000,
    });
    const topology = [{ stream: input, group: 'doubler' }];
    const [a, b] = [await start(lingering(), topology, config(), 'a'), await start(lingering(), topology, config(), 'b')];
    // Entries keep coming for longer than CLAIM_IDLE_MS (300 ms): a 3 s linger would hold the first ones idle that long.
    for (let i = 0; i < 30; i++) {
      await feed(inKey, 1, i);
      await new Promise((r) => setTimeout(r, 50));
    }
    await until(async () => (await redis.xlen(outKey)) >= 30);
    await new Promise((r) => setTimeout(r, 600));
    await Promise.all([a.stop(), b.stop()]);
    expect([...handled.values()].every((times) => times === 1)).toBe(true);
    expect(handled.size).toBe(30);
    expect((await outputs(outKey)).sort((x, y) => x - y)).toEqual(Array.from({ length: 30 }, (_, i) => i * 2));
  });

  it('pipelined, reads the next batch and acks the last while one is handled, forwards every entry once and in order, and a stop leaves nothing read unacked', async () => {
    const { input, output, inKey, outKey } = names();
    await feed(inKey, 200);
    let mostPending = 0;
    const reading: StageDefinition<{ n: number }> = {
      ...doubler(input, output, async (batch) => {
        await new Promise((r) => setTimeout(r, 40));
        mostPending = Math.max(mostPending, ((await redis.xpending(inKey, 'doubler')) as [number])[0]);
        return batch.map((e) => ({ outputs: [emit(output, { n: e.payload.n * 2 })] }));
      }),
      pipelined: true,
    };
    const topology = [{ stream: input, group: 'doubler' }];
    const first = await start(reading, topology);
    await until(async () => (await redis.xlen(outKey)) >= 50);
    await first.stop();
    // The batch in hand and the one read ahead were both handled and acked: whole batches only, none pending.
    const afterStop = await redis.xlen(outKey);
    expect(afterStop).toBeLessThan(200);
    expect(afterStop % 10).toBe(0);
    expect(((await redis.xpending(inKey, 'doubler')) as [number])[0]).toBe(0);
    // While a batch of 10 was in hand, the next 10 had been read already (and the last 10 may not have been acked yet).
    expect(mostPending).toBeGreaterThanOrEqual(20);
    expect(mostPending).toBeLessThanOrEqual(30);
    const second = await start(reading, topology);
    await until(async () => (await redis.xlen(outKey)) === 200);
    await second.stop();
    expect(await outputs(outKey)).toEqual(Array.from({ length: 200 }, (_, i) => i * 2));
  });

  it('claims the pending entries of a dead consumer', async () => {
    const { input, output, inKey, outKey } = names();
    await feed(inKey, 20);
    await ensureGroups(redis, PREFIX, 1, [{ stream: input, group: 'doubler' }]);
    // A consumer that read everything and died without acking.
    await redis.xreadgroup('GROUP', 'doubler', 'dead-one', 'COUNT', 100, 'STREAMS', inKey, '>');
    const stage = await start(doubler(input, output), [{ stream: input, group: 'doubler' }]);
    await until(async () => (await redis.xlen(outKey)) === 20);
    await stage.stop();
    expect((await outputs(outKey)).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i * 2));
    expect(((await redis.xpending(inKey, 'doubler')) as [number])[0]).toBe(0);
  });

  it('retries a failed entry at the next pass and dead-letters it, with its last error, once delivered more than MAX_DELIVERIES times', async () => {
    const { input, output, inKey, outKey } = names();
    await feed(inKey, 6);
    let poisonAttempts = 0;
    const stage = await start(
      doubler(input, output, async (batch) =>
        batch.map((e) => {
          if (e.payload.n === 3) {
            poisonAttempts++;
            return { error: new Error('n=3 cannot be doubled') };
          }
          return { outputs: [emit(output, { n: e.payload.n * 2 })] };
        }),
      ),
      [{ stream: input, group: 'doubler' }],
      config({ MAX_DELIVERIES: '3', CLAIM_IDLE_MS: '60000', CLAIM_INTERVAL_MS: '50' }),
    );
    const deadKey = deadLetterKey(PREFIX, 'doubler', 0);
    await until(async () => (await redis.xlen(deadKey)) === 1);
    await stage.stop();
    expect(poisonAttempts).toBe(3);
    const [[, fields]] = (await redis.xrange(deadKey, '-', '+')) as [string, string[]][];
    const record = Object.fromEntries(fields.flatMap((f, i) => (i % 2 === 0 ? [[f, fields[i + 1]]] : [])));
    expect(record.error).toContain('n=3 cannot be doubled');
    expect(record.deliveries).toBe('4'); // three failed deliveries; the fourth is the move
    expect(record.stage).toBe('doubler');
    expect((await outputs(outKey)).sort((a, b) => a - b)).toEqual([0, 2, 4, 8, 10]);
    expect(((await redis.xpending(inKey, 'doubler')) as [number])[0]).toBe(0);
  });

  it('keeps a batch in hand through a dependency outage without counting deliveries', async () => {
    const { input, output, inKey, outKey } = names();
    await feed(inKey, 4);
    let failures = 0;
    const stage = await start(
      doubler(input, output, async (batch) => {
        if (failures < 3) {
          failures++;
          throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8123'), { code: 'ECONNREFUSED' });
        }
        return batch.map((e) => ({ outputs: [emit(output, { n: e.payload.n * 2 })] }));
      }, 10, 'outage'),
      [{ stream: input, group: 'outage' }],
      config({ MAX_DELIVERIES: '1' }),
    );
    await until(async () => (await redis.xlen(outKey)) === 4);
    await stage.stop();
    expect(failures).toBe(3);
    expect(await redis.xlen(deadLetterKey(PREFIX, 'outage', 0))).toBe(0);
  });

  it('does not sit forever on a handler that never settles: the worker gives up, and a fresh start of the consumer finishes the batch', async () => {
    const { input, output, inKey, outKey } = names();
    await feed(inKey, 3);
    const cfg = config({ STAGE_HANDLER_TIMEOUT_MS: '1000', CLAIM_IDLE_MS: '60000' });
    const topology = [{ stream: input, group: 'wedge' }];
    let failure: unknown;
    const wedged = await runStage(
      doubler(input, output, () => new Promise<EntryResult[]>(() => {}), 10, 'wedge'),
      { config: cfg, log, metrics: new Metrics('test'), topology, consumer: 'wedge-1', onWorkerFailed: (err) => (failure = err) },
    );
    await until(async () => failure !== undefined, 5_000);
    expect(String(failure)).toMatch(/WedgedError: the wedge handler did not settle within 1000 ms/);
    await wedged.stop();
    expect(await redis.xlen(outKey)).toBe(0);
    // As the supervisor would: the same consumer started afresh takes its pending entries back.
    const fresh = await start(doubler(input, output, undefined, 10, 'wedge'), topology, cfg, 'wedge-1');
    await until(async () => (await redis.xlen(outKey)) === 3);
    await fresh.stop();
    expect(await outputs(outKey)).toEqual([0, 2, 4]);
  });

  it('pauses reading while the output lag is over the high watermark and resumes below the low one', async () => {
    const { input, output, inKey, outKey } = names();
    await feed(inKey, 300);
    const topology = [
      { stream: input, group: 'doubler' },
      { stream: output, group: 'sink' },
    ];
    const metrics = new Metrics('test');
    const stage = await runStage(doubler(input, output), {
      config: config({ BACKPRESSURE_HIGH: '50', BACKPRESSURE_LOW: '20' }),
      log,
      metrics,
      topology,
    });
    await until(async () => (await redis.xlen(outKey)) >= 50);
    await new Promise((r) => setTimeout(r, 300));
    // Stopped at the mark: at most one batch beyond it.
    const held = await redis.xlen(outKey);
    expect(held).toBeGreaterThan(50);
    expect(held).toBeLessThanOrEqual(60);
    expect((await metrics.paused.get()).values[0].value).toBe(1);
    // The sink consumes; the stage resumes and finishes.
    const consumed = await consume(outKey, 'sink', 300, 60_000);
    await stage.stop();
    expect(consumed).toBe(300);
  });

  it('trimming never removes an entry some group has not acked', async () => {
    const { input, inKey } = names();
    await feed(inKey, 100);
    await ensureGroups(redis, PREFIX, 1, [
      { stream: input, group: 'fast' },
      { stream: input, group: 'slow' },
    ]);
    // fast acks everything; slow reads 60, acks only 10..59 except 30, leaving 0..9 and 30 pending, 60..99 unread.
    const fast = (await redis.xreadgroup('GROUP', 'fast', 'c', 'COUNT', 100, 'STREAMS', inKey, '>')) as [string, [string, string[]][]][];
    await redis.xack(inKey, 'fast', ...fast[0][1].map(([id]) => id));
    const slow = (await redis.xreadgroup('GROUP', 'slow', 'c', 'COUNT', 60, 'STREAMS', inKey, '>')) as [string, [string, string[]][]][];
    const slowIds = slow[0][1].map(([id]) => id);
    await redis.xack(inKey, 'slow', ...slowIds.slice(10).filter((_, i) => i + 10 !== 30));
    const removed = await scripted(redis).trimAcked(inKey);
    expect(removed).toBe(0); // slow's oldest pending is the very first entry
    await redis.xack(inKey, 'slow', ...slowIds.slice(0, 10));
    expect(await scripted(redis).trimAcked(inKey)).toBe(30); // 0..29 go, 30 (pending) stays
    const left = (await redis.xrange(inKey, '-', '+')) as [string, string[]][];
    expect(left.length).toBe(70);
    expect(left[0][0]).toBe(slowIds[30]);
    await redis.xack(inKey, 'slow', slowIds[30]);
    // Nothing pending now: trimmed up to slow's last delivered entry (59), the unread 60..99 stay.
    expect(await scripted(redis).trimAcked(inKey)).toBe(29);
    expect(await redis.xlen(inKey)).toBe(41);
  });

  it('mends a phantom lag (a group that read everything, reported behind after Redis reloads its AOF) so it cannot pause a stage for good', async () => {
    const { input, inKey } = names();
    await feed(inKey, 30);
    await ensureGroups(redis, PREFIX, 1, [{ stream: input, group: 'caught-up' }]);
    const read = (await redis.xreadgroup('GROUP', 'caught-up', 'c', 'COUNT', 100, 'STREAMS', inKey, '>')) as [string, [string, string[]][]][];
    await redis.xack(inKey, 'caught-up', ...read[0][1].map(([id]) => id));
    // What an AOF reload can leave behind: the group's entries-read counter short of what it read.
    await redis.xgroup('SETID', inKey, 'caught-up', read[0][1].at(-1)![0], 'ENTRIESREAD', 5);
    const lagOf = async () => {
      const [group] = (await redis.xinfo('GROUPS', inKey)) as unknown[][];
      return Number(group[group.indexOf('lag') + 1]);
    };
    expect(await lagOf()).toBe(25);
    await redis.xadd(inKey, '*', 'd', encodePayload({ n: 99 })); // the stream goes on meanwhile
    expect(await streamLag(redis, inKey)).toBeLessThanOrEqual(await redis.xlen(inKey));
    await redis.xreadgroup('GROUP', 'caught-up', 'c', 'COUNT', 100, 'STREAMS', inKey, '>');
    await scripted(redis).trimAcked(inKey);
    expect(await lagOf()).toBe(0);
  });

  it('applies counter effects once per acked entry, tags outputs over the limit and flags the crossing (announced once)', async () => {
    const { input, output, inKey, outKey } = names();
    const listener = new Redis(loadConfig({}).REDIS_URL);
    const announced: string[] = [];
    listener.on('smessage', (_channel: string, key: string) => {
      if (key.startsWith(PREFIX)) announced.push(key);
    });
    await listener.ssubscribe(limitFlagsChannel(partitionedKey(PREFIX, 'flag', 0))!);
    await feed(inKey, 10);
    const crossedSeen: string[][] = [];
    const stage: StageDefinition<{ n: number }> = {
      ...doubler(input, output),
      async setup() {
        return {
          async handle(batch) {
            return batch.map((e) => ({
              outputs: [emit(output, e.payload)],
              counters: [
                {
                  key: 'total',
                  by: BigInt(e.payload.n),
                  ttlSeconds: 60,
                  limit: 20n,
                  tag: 'over',
                  onLimit: { key: 'flag', value: `crossed-by-${e.payload.n}`, ttlSeconds: 60 },
                },
              ],
            }));
          },
          async afterAck(_batch, results) {
            crossedSeen.push(...results.filter((r) => r.crossed.length).map((r) => r.crossed));
          },
        };
      },
    };
    const running = await start(stage, [{ stream: input, group: 'doubler' }]);
    await until(async () => (await redis.xlen(outKey)) === 10);
    await running.stop();
    // 0+1+...+5 = 15 < 20; +6 = 21 crosses at n=6; 7..9 stay over.
    expect(await redis.get(partitionedKey(PREFIX, 'total', 0))).toBe('45');
    expect(await redis.get(partitionedKey(PREFIX, 'flag', 0))).toBe('crossed-by-6');
    expect(crossedSeen).toEqual([['over']]);
    // Announced in the ack's own step: by the time the flag can be read, the message is on its way.
    try {
      await until(async () => announced.length > 0);
      expect(announced).toEqual([partitionedKey(PREFIX, 'flag', 0)]);
    } finally {
      listener.disconnect();
    }
    const tagged = ((await redis.xrange(outKey, '-', '+')) as [string, string[]][]).map(([, f]) => f[3] ?? '');
    expect(tagged).toEqual(['', '', '', '', '', '', 'over', 'over', 'over', 'over']);

    // Replaying the same ids through the ack script changes nothing.
    const ids = ((await redis.xrange(inKey, '-', '+')) as [string, string[]][]).map(([id]) => id);
    const inputs = ids.map((id) => ({
      id,
      clearError: false,
      groups: [],
      counted: [{ counters: [{ counterKey: partitionedKey(PREFIX, 'total', 0), by: 5n, ttlSeconds: 60 }], refs: [] }],
      retries: [],
    }));
    const { keys, args } = ackArguments(inKey, 'unused-errors', 'doubler', inputs);
    const reply = parseAckReply(inputs, await scripted(redis).ackAndForward(keys.length, ...keys, ...args));
    expect(reply.every((r) => r.kind === 'not-acked')).toBe(true);
    expect(await redis.get(partitionedKey(PREFIX, 'total', 0))).toBe('45');
  });

  it('narrows a failing batch down by halves: a bad entry costs a few attempts, not one per entry, and goes to the dead letters (issue 9, defect 1)', async () => {
    const { input, output, inKey, outKey } = names();
    await feed(inKey, 64);
    let calls = 0;
    const stage = await start(
      doubler(
        input,
        output,
        async (batch) => {
          calls++;
          // A row the store refuses: PostgreSQL 22021 (a data error, not an outage).
          if (batch.some((e) => e.payload.n === 13)) throw Object.assign(new Error('invalid byte sequence for encoding "UTF8": 0x00'), { code: '22021' });
          return batch.map((e) => ({ outputs: [emit(output, { n: e.payload.n * 2 })] }));
        },
        64,
        'halves',
      ),
      [{ stream: input, group: 'halves' }],
      config({ MAX_DELIVERIES: '2', CLAIM_IDLE_MS: '60000', CLAIM_INTERVAL_MS: '50' }),
    );
    const deadKey = deadLetterKey(PREFIX, 'halves', 0);
    await until(async () => (await redis.xlen(deadKey)) === 1);
    await stage.stop();
    expect((await outputs(outKey)).length).toBe(63);
    // First pass: 1 + 2 x log2(64) handler calls; then one per retry of the bad entry.
    expect(calls).toBeLessThanOrEqual(16);
    const [[, fields]] = (await redis.xrange(deadKey, '-', '+')) as [string, string[]][];
    expect(fields[fields.indexOf('error') + 1]).toContain('invalid byte sequence');
  });

  it('hands a control message again to a listener that failed on it (a reload during an outage), until it takes it (issue 9, defect 8)', async () => {
    const services = new StageServices('control-retry', config(), log);
    const seen: string[] = [];
    let failures = 0;
    try {
      await services.onControl(async (message) => {
        if (message.type !== 'caps.changed') return;
        seen.push(message.tenantId);
        if (failures < 2) {
          failures++;
          throw new Error('connect ECONNREFUSED 127.0.0.1:5432');
        }
      });
      await publishControl(redis, PREFIX, { type: 'caps.changed', tenantId: 'ten_retry' });
      await until(async () => seen.length === 3, 10_000);
      await new Promise((r) => setTimeout(r, 1_000));
      expect(seen).toEqual(['ten_retry', 'ten_retry', 'ten_retry']);
    } finally {
      await services.close();
    }
  });

  it('survives a Redis command timing out in its backpressure check (after a freeze) and goes on (issue 9, defect 8)', async () => {
    const { input, output, inKey, outKey } = names();
    const proxy = await TcpProxy.start({ port: Number(new URL(loadConfig({}).REDIS_URL).port || 6379) });
    const topology = [
      { stream: input, group: 'doubler' },
      { stream: output, group: 'sink' },
    ];
    await ensureGroups(redis, PREFIX, 1, topology);
    await feed(inKey, 30);
    const stage = await start(
      doubler(input, output),
      topology,
      config({ REDIS_URL: `redis://${proxy.url}`, REDIS_COMMAND_TIMEOUT_MS: '300', BACKPRESSURE_HIGH: '5', BACKPRESSURE_LOW: '2' }),
    );
    try {
      // One batch of 10 out, then paused at the mark, reading the output's lag every 50 ms.
      await until(async () => (await redis.xlen(outKey)) === 10);
      proxy.cut('blackhole');
      await new Promise((r) => setTimeout(r, 1_200)); // several lag reads time out
      proxy.restore();
      expect(await consume(outKey, 'sink', 30, 20_000)).toBe(30);
    } finally {
      await stage.stop();
      await proxy.close();
    }
  });

  /** A stage that forwards each entry and adds `by` (from the payload, a decimal string) to one capped counter. */
  function counting(input: string, output: string, limit: bigint): StageDefinition<{ n: number; by: string }> {
    return {
      name: 'counting',
      input,
      outputs: [output],
      batchSize: 10,
      async setup() {
        return {
          async handle(batch) {
            return batch.map((e) => ({
              outputs: [emit(output, e.payload)],
              counters: [{ key: `${input}:total`, by: BigInt(e.payload.by), ttlSeconds: 60, limit, tag: 'over' }],
            }));
          },
        };
      },
    };
  }

  async function feedCounted(key: string, bys: bigint[]): Promise<void> {
    const pipeline = redis.pipeline();
    for (const [n, by] of bys.entries()) pipeline.xadd(key, '*', 'd', encodePayload({ n, by: by.toString() }));
    await pipeline.exec();
  }

  it('never acks what it then fails to forward: a counter increment past int64 pins the total and every entry goes on (issue 9, defect 2)', async () => {
    const { input, output, inKey, outKey } = names();
    const INT64_MAX = 2n ** 63n - 1n;
    await redis.set(partitionedKey(PREFIX, `${input}:total`, 0), (INT64_MAX - 10n).toString());
    // Five entries of 2^62 each: the first already overflows the running total.
    await feedCounted(inKey, [2n ** 62n, 2n ** 62n, 5n, 2n ** 62n, 1n]);
    const started = Date.now();
    const stage = await start(counting(input, output, 1000n), [{ stream: input, group: 'counting' }], config({ CLAIM_IDLE_MS: '60000' }));
    await until(async () => (await redis.xlen(outKey)) === 5, 10_000);
    await stage.stop();
    expect(Date.now() - started).toBeLessThan(5_000);
    expect((await outputs(outKey)).sort()).toEqual([0, 1, 2, 3, 4]);
    const forwarded = (await redis.xrange(outKey, '-', '+')) as [string, string[]][];
    expect(forwarded.map(([, f]) => f[3])).toEqual(['over', 'over', 'over', 'over', 'over']);
    expect(await redis.get(partitionedKey(PREFIX, `${input}:total`, 0))).toBe(INT64_MAX.toString());
    expect(((await redis.xpending(inKey, 'counting')) as [number])[0]).toBe(0);
    expect(await redis.xlen(deadLetterKey(PREFIX, 'counting', 0))).toBe(0);
  });

  it('judges limits on exact totals beyond 2^53 (a double would round the limit down and tag early)', async () => {
    const { input, output, inKey, outKey } = names();
    const limit = 2n ** 53n + 1n;
    await feedCounted(inKey, [2n ** 53n, 1n]);
    const stage = await start(counting(input, output, limit), [{ stream: input, group: 'counting' }]);
    await until(async () => (await redis.xlen(outKey)) === 2);
    await stage.stop();
    const tags = ((await redis.xrange(outKey, '-', '+')) as [string, string[]][]).map(([, f]) => f[3] ?? '');
    expect(tags).toEqual(['', 'over']);
    expect(await redis.get(partitionedKey(PREFIX, `${input}:total`, 0))).toBe((2n ** 53n + 1n).toString());
  });

  it('an output that cannot be encoded (an amount beyond 64 bits) fails its entry alone, never wrapped (issue 9, defect 3)', async () => {
    const { input, output, inKey, outKey } = names();
    await feed(inKey, 4);
    const stage = await start(
      doubler(input, output, async (batch) =>
        batch.map((e) => ({ outputs: [emit(output, { n: e.payload.n, cost: e.payload.n === 2 ? 2n ** 64n + 7n : BigInt(e.payload.n) })] })),
        10,
        'wide',
      ),
      [{ stream: input, group: 'wide' }],
      config({ MAX_DELIVERIES: '2', CLAIM_IDLE_MS: '60000', CLAIM_INTERVAL_MS: '50' }),
    );
    const deadKey = deadLetterKey(PREFIX, 'wide', 0);
    await until(async () => (await redis.xlen(deadKey)) === 1);
    await stage.stop();
    expect(await outputs(outKey)).toEqual([0, 1, 3]);
    const [[, fields]] = (await redis.xrange(deadKey, '-', '+')) as [string, string[]][];
    expect(fields[fields.indexOf('error') + 1]).toMatch(/does not fit a 64-bit integer/);
  });

  it('runs on when its metrics port cannot be bound (another pipeline on the host has it), instead of crash-looping (issue 9, defect 8)', async () => {
    const prefix = `${PREFIX}metrics-port:`;
    const inKey = partitionedKey(prefix, 'slow:in', 0);
    const outKey = partitionedKey(prefix, 'slow:out', 0);
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as AddressInfo).port;
    const child = spawn(process.execPath, ['--import', 'tsx', projectPath('test', 'support', 'slow-stage.ts')], {
      env: { ...process.env, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent', METRICS_PORT: String(port), HTTP_HOST: '127.0.0.1' },
      stdio: 'ignore',
    });
    let exitCode: number | null | undefined;
    const exited = new Promise<void>((resolve) =>
      child.on('exit', (code) => {
        exitCode = code;
        resolve();
      }),
    );
    try {
      await feed(inKey, 20);
      await until(async () => exitCode !== undefined || (await redis.xlen(outKey)) === 20, 30_000);
      expect(exitCode).toBeUndefined();
      child.kill('SIGTERM');
      await exited;
      expect(exitCode).toBe(0);
    } finally {
      child.kill('SIGKILL');
      taken.close();
    }
  }, 60_000);

  it('on SIGTERM finishes and acks the batch in hand, exits 0, and loses nothing', async () => {
    const prefix = `${PREFIX}sigterm:`;
    const inKey = partitionedKey(prefix, 'slow:in', 0);
    const outKey = partitionedKey(prefix, 'slow:out', 0);
    await feed(inKey, 200);
    const runOnce = () =>
      new Promise<{ code: number | null; child: ReturnType<typeof spawn> }>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', projectPath('test', 'support', 'slow-stage.ts')], {
          env: { ...process.env, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent' },
          stdio: 'ignore',
        });
        child.on('exit', (code) => resolve({ code, child }));
        // Stop it while a batch is in hand (the handler takes 150 ms per batch of 10).
        void until(async () => (await redis.xlen(outKey)) >= 30, 20_000).then(() => child.kill('SIGTERM'));
      });
    const first = await runOnce();
    expect(first.code).toBe(0);
    const afterStop = await redis.xlen(outKey);
    expect(afterStop).toBeLessThan(200);
    expect(afterStop % 10).toBe(0); // whole batches only: the one in hand was finished and acked
    expect(((await redis.xpending(inKey, 'slow')) as [number])[0]).toBe(0);
    // A restart picks up the rest.
    const child = spawn(process.execPath, ['--import', 'tsx', projectPath('test', 'support', 'slow-stage.ts')], {
      env: { ...process.env, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent' },
      stdio: 'ignore',
    });
    await until(async () => (await redis.xlen(outKey)) === 200, 30_000);
    child.kill('SIGTERM');
    await new Promise((r) => child.on('exit', r));
    expect((await outputs(outKey)).sort((a, b) => a - b)).toEqual(Array.from({ length: 200 }, (_, i) => i));
  }, 60_000);
});

describe('stage harness: blocks of events', () => {
  /** Writes each list of numbers as one entry (a block, or a single entry for one). */
  async function feedBlocks(key: string, blocks: number[][]): Promise<void> {
    for (const [b, ns] of blocks.entries()) await redis.xadd(key, '*', ...entryFields(ns.map((n) => ({ n })), `origin-${b}`));
  }

  async function entriesOf(key: string): Promise<[Buffer, Buffer[]][]> {
    return (await redis.xrangeBuffer(key, '-', '+')) as [Buffer, Buffer[]][];
  }

  it('acks and forwards a block as one entry with its origin; the handler sees its events', async () => {
    const { input, output, inKey, outKey } = names();
    await feedBlocks(inKey, [[0, 1, 2, 3], [4], [5, 6]]);
    const seen: number[] = [];
    const stage = await start(
      doubler(input, output, async (batch) => {
        seen.push(...batch.map((e) => e.payload.n));
        return batch.map((e) => ({ outputs: [emit(output, { n: e.payload.n * 2 })] }));
      }),
      [{ stream: input, group: 'doubler' }, { stream: output, group: 'sink' }],
    );
    await until(async () => (await redis.xlen(outKey)) === 3);
    await stage.stop();
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6]);
    const out = eventsOfEntries<{ n: number }>(await entriesOf(outKey));
    expect(out.map((e) => e.payload.n)).toEqual([0, 2, 4, 6, 8, 10, 12]);
    expect([...new Set(out.filter((e) => e.payload.n !== 8).map((e) => e.origin))]).toEqual(['origin-0', 'origin-2']);
    expect(((await redis.xpending(inKey, 'doubler')) as [number])[0]).toBe(0);
  });

  /** The `b` field of an entry. */
  const blockField = ([, fields]: [Buffer, Buffer[]]): Buffer => fields[fields.findIndex((f, i) => i % 2 === 0 && f.toString() === 'b') + 1];

  it('forwards a block whose events a stage only added to as the bytes it read plus one layer of what it added', async () => {
    const { input, output, inKey, outKey } = names();
    await feedBlocks(inKey, [[0, 1, 2, 3]]);
    const stage = await start(
      doubler(input, output, async (batch) => batch.map((e) => ({ outputs: [emit(output, { ...e.payload, doubled: e.payload.n * 2 })] })), 10, 'layering'),
      [{ stream: input, group: 'layering' }, { stream: output, group: 'sink' }],
    );
    await until(async () => (await redis.xlen(outKey)) === 1);
    await stage.stop();
    const [read] = await entriesOf(inKey);
    const [written] = await entriesOf(outKey);
    const base = blockField(read);
    const out = blockField(written);
    expect(out.subarray(0, base.length).equals(base)).toBe(true);
    expect(decodeSequence(out.subarray(base.length))).toEqual([[{ doubled: 0 }, { doubled: 2 }, { doubled: 4 }, { doubled: 6 }]]);
    expect(eventsOfEntries<{ n: number; doubled: number }>([written]).map((e) => e.payload)).toEqual([0, 1, 2, 3].map((n) => ({ n, doubled: n * 2 })));
  });

  it('forwards a block one of whose events went elsewhere as the bytes it read, a drop layer and a layer; one whose outputs drop a field whole', async () => {
    const { input, output, inKey, outKey } = names();
    const rejected = `${output}:rejected`;
    await feedBlocks(inKey, [[0, 1, 2, 3], [4, 5, 6]]);
    const stage: StageDefinition<{ n: number }> = {
      ...doubler(input, output, undefined, 10, 'unlayered'),
      outputs: [output, rejected],
      async setup() {
        return {
          async handle(batch) {
            return batch.map((e) => {
              if (e.payload.n === 2) return { outputs: [emit(rejected, e.payload)] };
              // The second block: its outputs keep only a new field (the input's `n` is dropped).
              return { outputs: [emit(output, e.payload.n < 4 ? { ...e.payload, seen: true } : { m: e.payload.n })] };
            });
          },
        };
      },
    };
    const running = await start(stage, [{ stream: input, group: 'unlayered' }, { stream: output, group: 'sink' }]);
    await until(async () => (await redis.xlen(outKey)) === 2);
    await running.stop();
    const written = await entriesOf(outKey);
    const [firstRead] = await entriesOf(inKey);
    const base = blockField(firstRead);
    const first = blockField(written[0]);
    expect(first.subarray(0, base.length).equals(base)).toBe(true);
    expect(decodeSequence(first.subarray(base.length))).toEqual([{ drop: [2] }, [{ seen: true }, { seen: true }, { seen: true }]]);
    expect(decodeSequence(blockField(written[1])).length).toBe(1);
    expect(eventsOfEntries<unknown>(written).map((e) => e.payload)).toEqual([
      { n: 0, seen: true }, { n: 1, seen: true }, { n: 3, seen: true }, { m: 4 }, { m: 5 }, { m: 6 },
    ]);
  });

  it('encodes an output block whole when a stage forwards an event twice (not at most one output per event, in order)', async () => {
    const { input, output, inKey, outKey } = names();
    await feedBlocks(inKey, [[0, 1, 2]]);
    const running = await start(
      doubler(input, output, async (batch) => batch.map((e) => ({ outputs: e.payload.n === 1 ? [emit(output, e.payload), emit(output, { ...e.payload, again: true })] : [emit(output, e.payload)] })), 10, 'fanout'),
      [{ stream: input, group: 'fanout' }, { stream: output, group: 'sink' }],
    );
    await until(async () => (await redis.xlen(outKey)) === 1);
    await running.stop();
    const written = await entriesOf(outKey);
    expect(decodeSequence(blockField(written[0])).length).toBe(1);
    expect(eventsOfEntries<unknown>(written).map((e) => e.payload)).toEqual([{ n: 0 }, { n: 1 }, { n: 1, again: true }, { n: 2 }]);
  });

  it('splits a block with one bad event: the others go on at once, the bad one is retried alone and dead-lettered with its reason', async () => {
    const { input, output, inKey, outKey } = names();
    await feedBlocks(inKey, [[0, 1, 2, 3, 4]]);
    let poisonAttempts = 0;
    const stage = await start(
      doubler(input, output, async (batch) =>
        batch.map((e) => {
          if (e.payload.n === 3) {
            poisonAttempts++;
            return { error: new Error('n=3 cannot be doubled') };
          }
          return { outputs: [emit(output, { n: e.payload.n * 2 })] };
        }),
        10,
        'splitter',
      ),
      [{ stream: input, group: 'splitter' }, { stream: output, group: 'sink' }],
      config({ MAX_DELIVERIES: '2', CLAIM_IDLE_MS: '60000', CLAIM_INTERVAL_MS: '50' }),
    );
    const deadKey = deadLetterKey(PREFIX, 'splitter', 0);
    await until(async () => (await redis.xlen(deadKey)) === 1);
    await stage.stop();
    // The block's four good events went on together as one block.
    const out = await entriesOf(outKey);
    expect(out).toHaveLength(1);
    expect(eventsOfEntries<{ n: number }>(out).map((e) => e.payload.n)).toEqual([0, 2, 4, 8]);
    // The bad one: its first try in the block, then twice alone, then the move.
    expect(poisonAttempts).toBe(3);
    const [[, fields]] = (await redis.xrangeBuffer(deadKey, '-', '+')) as [Buffer, Buffer[]][];
    const record = Object.fromEntries(fields.flatMap((f, i) => (i % 2 === 0 ? [[f.toString(), fields[i + 1]]] : [])));
    expect(record.error.toString()).toContain('n=3 cannot be doubled');
    expect(decodePayload<{ n: number }>(record.d)).toEqual({ n: 3 });
    expect(((await redis.xpending(inKey, 'splitter')) as [number])[0]).toBe(0);
  });

  it('judges counter limits per event inside a block: the crossing event flags, the events after it are tagged', async () => {
    const { input, output, inKey, outKey } = names();
    await feedBlocks(inKey, [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]);
    const crossedSeen: string[][] = [];
    const stage: StageDefinition<{ n: number }> = {
      ...doubler(input, output, undefined, 10, 'block-counting'),
      async setup() {
        return {
          async handle(batch) {
            return batch.map((e) => ({
              outputs: [emit(output, e.payload)],
              counters: [
                { key: `${input}:total`, by: BigInt(e.payload.n), ttlSeconds: 60, limit: 20n, tag: 'over', onLimit: { key: `${input}:flag`, value: `crossed-by-${e.payload.n}`, ttlSeconds: 60 } },
              ],
            }));
          },
          async afterAck(_batch, results) {
            crossedSeen.push(...results.filter((r) => r.crossed.length).map((r) => r.crossed));
          },
        };
      },
    };
    const running = await start(stage, [{ stream: input, group: 'block-counting' }, { stream: output, group: 'sink' }]);
    await until(async () => (await redis.xlen(outKey)) === 1);
    await running.stop();
    expect(await redis.get(partitionedKey(PREFIX, `${input}:total`, 0))).toBe('45');
    expect(await redis.get(partitionedKey(PREFIX, `${input}:flag`, 0))).toBe('crossed-by-6');
    expect(crossedSeen).toEqual([['over']]);
    const out = eventsOfEntries<{ n: number }>(await entriesOf(outKey));
    expect(out.map((e) => e.tags.join(','))).toEqual(['', '', '', '', '', '', 'over', 'over', 'over', 'over']);
  });

  it('splits a block delivered too often (a handler of blocks that keeps failing on it) into single entries: only the event at fault is dead-lettered', async () => {
    const { input, output, inKey, outKey } = names();
    await feedBlocks(inKey, [[0, 1, 2, 3]]);
    const stage: StageDefinition<{ n: number }> = {
      ...doubler(input, output, undefined, 10, 'block-failing'),
      async setup() {
        return {
          handle: async () => {
            throw new Error('not used');
          },
          async handleBlocks(blocks) {
            if (blocks.some((b) => b.events.some((e) => e.payload.n === 2))) throw new Error('a block with n=2 fails whole');
            return blocks.map((b) => b.events.map((e) => ({ outputs: [emit(output, { n: e.payload.n * 2 })] })));
          },
        };
      },
    };
    const running = await start(stage, [{ stream: input, group: 'block-failing' }, { stream: output, group: 'sink' }], config({ MAX_DELIVERIES: '2', CLAIM_IDLE_MS: '60000', CLAIM_INTERVAL_MS: '50' }));
    const deadKey = deadLetterKey(PREFIX, 'block-failing', 0);
    await until(async () => (await redis.xlen(deadKey)) === 1);
    await running.stop();
    expect((await outputs(outKey)).sort((a, b) => a - b)).toEqual([0, 2, 6]);
    const [[, fields]] = (await redis.xrangeBuffer(deadKey, '-', '+')) as [Buffer, Buffer[]][];
    expect(decodePayload<{ n: number }>(fields[1])).toEqual({ n: 2 });
    expect(((await redis.xpending(inKey, 'block-failing')) as [number])[0]).toBe(0);
  });
});

describe('stage harness: groups of one process reading one stream', () => {
  /** A stage at the end of the flow that records the events it handled. */
  function recorder(input: string, name: string, seen: number[]): StageDefinition<{ n: number }> {
    return {
      name,
      input,
      outputs: [],
      batchSize: 40,
      lingerMs: 50,
      async setup() {
        return {
          handle: async (batch) => {
            seen.push(...batch.map((e) => e.payload.n));
            return batch.map(() => ({}));
          },
        };
      },
    };
  }

  async function feedBlocksSlowly(key: string, blocks: number, perBlock: number): Promise<number[]> {
    const all: number[] = [];
    for (let b = 0; b < blocks; b++) {
      const ns = Array.from({ length: perBlock }, (_, i) => b * perBlock + i);
      all.push(...ns);
      await redis.xadd(key, '*', ...entryFields(ns.map((n) => ({ n })), `origin-${b}`));
      if (b % 5 === 4) await new Promise((r) => setTimeout(r, 20));
    }
    return all;
  }

  it("carries a block's bytes to one group: the others read its id and take it decoded, and every group handles every event once", async () => {
    const { input, inKey } = names();
    const groups = ['sessions', 'rollup', 'alerts'];
    const topology = groups.map((group) => ({ stream: input, group }));
    const seen = groups.map(() => [] as number[]);
    const takenBefore = sharedReads.stats.taken;
    const running = await Promise.all(groups.map((group, g) => start(recorder(input, group, seen[g]), topology)));
    const fed = await feedBlocksSlowly(inKey, 60, 5);
    await until(async () => seen.every((s) => s.length >= fed.length));
    await Promise.all(running.map((r) => r.stop()));
    for (const s of seen) expect([...s].sort((a, b) => a - b)).toEqual(fed);
    // Entries reach the groups that read after the first as ids: not all (groups reading at once
    // each carry the bytes; 34-43 of 120 here, most under load, where reads are spread out).
    expect(sharedReads.stats.taken - takenBefore).toBeGreaterThan(10);
    for (const group of groups) expect(((await redis.xpending(inKey, group)) as [number])[0]).toBe(0);
  });

  it('an event split off a block goes back on the stream for its own group only: the groups that applied the block never apply it again, and its error is cleared once it succeeds', async () => {
    const { input, inKey } = names();
    const seenOk: number[] = [];
    const seenFailing: number[] = [];
    const seenBlockFailing: number[] = [];
    let failures = 0;
    const retriedAsRedelivered: boolean[] = [];
    // Fails n=2 once, as part of its block: the block goes on without it, n=2 is retried alone.
    const failingOnce: StageDefinition<{ n: number }> = {
      ...recorder(input, 'fails-one-event', seenFailing),
      async setup() {
        return {
          handle: async (batch) =>
            batch.map((e) => {
              if (e.payload.n === 2 && failures++ === 0) return { error: new Error('n=2 fails the first time') };
              // Alone again, it is marked as possibly applied (a stage that cannot check its own
              // writes in one transaction, analytics-dispatch, looks for it first).
              if (e.payload.n === 2) retriedAsRedelivered.push(e.redelivered === true);
              seenFailing.push(e.payload.n);
              return {};
            }),
        };
      },
    };
    // Fails every block holding n=6 whole: after MAX_DELIVERIES the block is split into single entries.
    const failingBlocks: StageDefinition<{ n: number }> = {
      ...recorder(input, 'fails-whole-blocks', seenBlockFailing),
      async setup() {
        return {
          handle: async () => {
            throw new Error('not used');
          },
          async handleBlocks(blocks) {
            if (blocks.some((b) => b.events.length > 1 && b.events.some((e) => e.payload.n === 6))) throw new Error('a block with n=6 fails whole');
            for (const b of blocks) seenBlockFailing.push(...b.events.map((e) => e.payload.n));
            return blocks.map((b) => b.events.map(() => ({})));
          },
        };
      },
    };
    const groups = ['records-all', 'fails-one-event', 'fails-whole-blocks'];
    const topology = groups.map((group) => ({ stream: input, group }));
    const cfg = config({ MAX_DELIVERIES: '2', CLAIM_IDLE_MS: '60000', CLAIM_INTERVAL_MS: '50' });
    const running = await Promise.all([
      start(recorder(input, 'records-all', seenOk), topology, cfg),
      start(failingOnce, topology, cfg),
      start(failingBlocks, topology, cfg),
    ]);
    await redis.xadd(inKey, '*', ...entryFields([0, 1, 2, 3].map((n) => ({ n })), 'origin-a'));
    await redis.xadd(inKey, '*', ...entryFields([4, 5, 6, 7].map((n) => ({ n })), 'origin-b'));
    const all = [0, 1, 2, 3, 4, 5, 6, 7];
    await until(async () => seenFailing.length >= 8 && seenBlockFailing.length >= 8 && seenOk.length >= 8);
    // What would be applied twice shows up within a few reads.
    await new Promise((r) => setTimeout(r, 500));
    await Promise.all(running.map((r) => r.stop()));
    expect([...seenOk].sort((a, b) => a - b)).toEqual(all);
    expect([...seenFailing].sort((a, b) => a - b)).toEqual(all);
    expect([...seenBlockFailing].sort((a, b) => a - b)).toEqual(all);
    expect(retriedAsRedelivered).toEqual([true]);
    for (const group of groups) {
      expect(((await redis.xpending(inKey, group)) as [number])[0]).toBe(0);
      expect(await redis.hlen(errorsKey(PREFIX, group, 0))).toBe(0);
    }
  });

  it('reads again by id an entry handed over by id whose decoded entry is gone by the time it is taken, and loses nothing', async () => {
    const { input, inKey } = names();
    // Two groups of this process that never come keep every entry decoded here; the real group is
    // handed each of them by id, and each is gone when the worker takes it (aged out in between).
    const leaveX = sharedReads.join(inKey, 'x');
    const leaveY = sharedReads.join(inKey, 'y');
    const seen: number[] = [];
    const readAgainBefore = sharedReads.stats.readAgain;
    const take = sharedReads.take;
    try {
      await ensureGroups(redis, PREFIX, 1, [{ stream: input, group: 'late' }]);
      // A group made on an empty stream has no entries-read counter until its first read: set one.
      await redis.xgroup('SETID', inKey, 'late', '0', 'ENTRIESREAD', 0);
      const fed = await feedBlocksSlowly(inKey, 10, 3);
      const entries = (await redis.xrangeBuffer(inKey, '-', '+')) as [Buffer, Buffer[]][];
      for (const [id, fields] of entries) sharedReads.decode(inKey, id.toString(), fields);
      sharedReads.take = () => undefined;
      const running = await start(recorder(input, 'late', seen), [{ stream: input, group: 'late' }]);
      await until(async () => seen.length >= fed.length);
      await running.stop();
      expect([...seen].sort((a, b) => a - b)).toEqual(fed);
      expect(sharedReads.stats.readAgain - readAgainBefore).toBe(10);
      expect(((await redis.xpending(inKey, 'late')) as [number])[0]).toBe(0);
    } finally {
      sharedReads.take = take;
      leaveX();
      leaveY();
    }
  });

  it('reads plainly, and loses nothing, when what the process keeps is not what its group reads next', async () => {
    const { input, inKey } = names();
    // Kept here: two ids around every entry of the stream, for two groups that never come. The
    // real group's next entries are none of them.
    const leaveX = sharedReads.join(inKey, 'x');
    const leaveY = sharedReads.join(inKey, 'y');
    const stale = entryFields([{ n: -1 }, { n: -2 }], 'stale').map((f) => (typeof f === 'string' ? Buffer.from(f) : f));
    sharedReads.decode(inKey, '0-1', stale);
    sharedReads.decode(inKey, '9999999999999-0', stale);
    const seen: number[] = [];
    const readAgainBefore = sharedReads.stats.readAgain;
    try {
      await ensureGroups(redis, PREFIX, 1, [{ stream: input, group: 'late' }]);
      const fed = await feedBlocksSlowly(inKey, 10, 3);
      const running = await start(recorder(input, 'late', seen), [{ stream: input, group: 'late' }]);
      await until(async () => seen.length >= fed.length);
      await running.stop();
      expect([...seen].sort((a, b) => a - b)).toEqual(fed);
      expect(sharedReads.stats.readAgain - readAgainBefore).toBe(0);
      expect(((await redis.xpending(inKey, 'late')) as [number])[0]).toBe(0);
      expect(await streamLag(redis, inKey)).toBe(0);
    } finally {
      leaveX();
      leaveY();
    }
  });

  /** readKnown-1.lua's entries, where the test expects entries (not 0: read plainly). */
  function entriesOf(reply: KnownReadReply | 0): KnownReadReply {
    if (reply === 0) throw new Error('readKnown-1.lua answered 0 (read plainly) where entries were expected');
    return reply;
  }

  it('readKnown-1.lua leaves out the fields of the entries in the known range and hands every entry to the consumer', async () => {
    const { inKey } = names();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await redis.xadd(inKey, '*', 'd', encodePayload({ n: i })))!);
    await redis.xgroup('CREATE', inKey, 'g', '0');
    const reply = entriesOf(await scripted(redis).readKnownBuffer(inKey, 'g', 'c', 10, ids[1], ids[2]));
    expect(reply.map(([id, fields]) => [id.toString(), fields === undefined ? 'id only' : decodePayload<{ n: number }>(fields[1]).n])).toEqual([
      [ids[0], 0],
      [ids[1], 'id only'],
      [ids[2], 'id only'],
      [ids[3], 3],
      [ids[4], 4],
    ]);
    expect(((await redis.xpending(inKey, 'g')) as [number])[0]).toBe(5);
    expect(await scripted(redis).readKnownBuffer(inKey, 'g', 'c', 10, '', '')).toEqual([]);
  });

  /** The group's XINFO GROUPS fields by name. */
  async function groupInfo(key: string, group: string): Promise<Record<string, unknown>> {
    for (const fields of (await redis.xinfo('GROUPS', key)) as unknown[][]) {
      const info: Record<string, unknown> = {};
      for (let i = 0; i < fields.length; i += 2) info[String(fields[i])] = fields[i + 1];
      if (info.name === group) return info;
    }
    throw new Error(`no group ${group}`);
  }

  it('readKnown-1.lua hands the held ids that come next to the consumer by id alone, as a first delivery, with the group lag right', async () => {
    const { inKey } = names();
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push((await redis.xadd(inKey, '*', 'd', encodePayload({ n: i })))!);
    await redis.xgroup('CREATE', inKey, 'g', '0');
    await redis.xgroup('CREATE', inKey, 'twin', '0');
    // The group's counter is known once it has read (a group that has read nothing may not have one).
    expect(await scripted(redis).readKnownBuffer(inKey, 'g', 'c', 2, '', '')).toHaveLength(2);
    await redis.xreadgroup('GROUP', 'twin', 'c', 'COUNT', 2, 'STREAMS', inKey, '>');

    // Held: ids[1] (read already: skipped), then ids[2..5]; count 3 takes ids[2..4].
    const reply = entriesOf(await scripted(redis).readKnownBuffer(inKey, 'g', 'c', 3, ids[1], ids[5], ...ids.slice(1, 6)));
    expect(reply.map((entry) => [entry[0].toString(), entry.length])).toEqual([
      [ids[2], 1],
      [ids[3], 1],
      [ids[4], 1],
    ]);
    // As XREADGROUP would have left it: the same pending entries, delivered once, the same position and lag.
    await redis.xreadgroup('GROUP', 'twin', 'c', 'COUNT', 3, 'STREAMS', inKey, '>');
    const pending = (group: string) => redis.xpending(inKey, group, '-', '+', 10) as Promise<[string, string, number, number][]>;
    expect((await pending('g')).map(([id, consumer, , deliveries]) => [id, consumer, deliveries])).toEqual(
      (await pending('twin')).map(([id, consumer, , deliveries]) => [id, consumer, deliveries]),
    );
    const [mine, twin] = [await groupInfo(inKey, 'g'), await groupInfo(inKey, 'twin')];
    expect(mine['last-delivered-id']).toBe(ids[4]);
    expect([mine['entries-read'], mine.lag]).toEqual([twin['entries-read'], twin.lag]);
    expect(mine.lag).toBe(3);
    expect(await streamLag(redis, inKey)).toBe(3);

    const rest = await scripted(redis).readKnownBuffer(inKey, 'g', 'c', 10, ids[5], ids[5], ids[5]);
    expect(entriesOf(rest).map((entry) => [entry[0].toString(), entry.length])).toEqual([[ids[5], 1]]);
    // Past everything held: nothing read, the caller reads plainly.
    expect(await scripted(redis).readKnownBuffer(inKey, 'g', 'c', 10, ids[5], ids[5], ids[5])).toBe(0);
    expect((await groupInfo(inKey, 'g')).lag).toBe(2);
  });

  it('readKnown-1.lua never hands over by id past an entry it does not hold, nor ids out of order, nor without a known counter', async () => {
    const { inKey } = names();
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await redis.xadd(inKey, '*', 'd', encodePayload({ n: i })))!);
    await redis.xgroup('CREATE', inKey, 'g', '0');
    const read = (count: number, ...held: string[]) => scripted(redis).readKnownBuffer(inKey, 'g', 'c', count, held[0] ?? '', held[held.length - 1] ?? '', ...held);
    const shown = (reply: Awaited<ReturnType<typeof read>>) =>
      reply === 0 ? 'read plainly' : reply.map((entry) => `${entry[0].toString()}:${entry.length === 1 ? 'id' : decodePayload<{ n: number }>(entry[1]![1]).n}`);
    const position = async () => {
      const info = await groupInfo(inKey, 'g');
      return [info['last-delivered-id'], info['entries-read']];
    };
    const plainRead = (count: number) => redis.xreadgroup('GROUP', 'g', 'c', 'COUNT', count, 'STREAMS', inKey, '>');

    // A group that has read nothing yet has no entries-read counter here: nothing is handed over
    // by id (the caller's plain XREADGROUP sets the counter).
    expect((await groupInfo(inKey, 'g'))['entries-read']).toBeNull();
    expect(shown(await read(1, ids[0], ids[1]))).toBe('read plainly');
    expect(await position()).toEqual(['0-0', null]);
    await plainRead(1);
    expect(await position()).toEqual([ids[0], 1]);

    // ids[2] is not held: the run stops before it (ids[1] by id), then nothing comes next by id.
    expect(shown(await read(2, ids[1], ids[3]))).toEqual([`${ids[1]}:id`]);
    expect(shown(await read(2, ids[3]))).toBe('read plainly');
    expect(await position()).toEqual([ids[1], 2]);
    await plainRead(2);

    // Held out of order: the run stops where the order breaks (ids[4] by id); held ids all read
    // already: nothing by id.
    expect(shown(await read(5, ids[4], ids[0]))).toEqual([`${ids[4]}:id`]);
    expect(shown(await read(5, ids[1]))).toBe('read plainly');
    expect(await position()).toEqual([ids[4], 5]);
    await plainRead(5);
    const info = await groupInfo(inKey, 'g');
    expect([info['last-delivered-id'], info['entries-read'], info.lag]).toEqual([ids[5], 6, 0]);
    expect(((await redis.xpending(inKey, 'g')) as [number])[0]).toBe(6);

    // An id held that is not in the stream is never a place to move the group to: the entry added
    // after it, with a lower id, is still read.
    expect(shown(await read(5, '9999999999999-0'))).toBe('read plainly');
    expect(await position()).toEqual([ids[5], 6]);
    const added = (await redis.xadd(inKey, '*', 'd', encodePayload({ n: 6 })))!;
    expect(((await plainRead(5)) as [string, [string, string[]][]][])[0][1].map(([id]) => id)).toEqual([added]);
  });

  it('readKnown-1.lua and trimAcked-1.lua order ids as the stream does, not as strings (9-1 before 10-0)', async () => {
    const { inKey } = names();
    for (const id of ['9-0', '9-1', '10-0', '11-0']) await redis.xadd(inKey, id, 'd', encodePayload({ id }));
    await redis.xgroup('CREATE', inKey, 'a', '0');
    await redis.xgroup('CREATE', inKey, 'b', '0');
    const reply = entriesOf(await scripted(redis).readKnownBuffer(inKey, 'a', 'c', 10, '9-1', '10-0'));
    expect(reply.map(([id, fields]) => `${id.toString()}:${fields === undefined ? 'id only' : 'fields'}`)).toEqual([
      '9-0:fields',
      '9-1:id only',
      '10-0:id only',
      '11-0:fields',
    ]);
    await redis.xack(inKey, 'a', '9-0', '9-1', '10-0', '11-0');
    await redis.xreadgroup('GROUP', 'b', 'c', 'COUNT', 2, 'STREAMS', inKey, '>');
    await redis.xack(inKey, 'b', '9-0', '9-1');
    // b has read up to 9-1: only 9-0 may go, though '10-0' < '9-1' as strings.
    expect(await scripted(redis).trimAcked(inKey)).toBe(1);
    expect(((await redis.xrange(inKey, '-', '+')) as [string, string[]][]).map(([id]) => id)).toEqual(['9-1', '10-0', '11-0']);
  });
});
