import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { admit, windowTotals } from './admission.js';
import { ackArguments, parseAckReply, type AckInput } from './ack.js';
import { partitionedKey } from './keys.js';
import { scripted } from './scripts.js';
import { isolated, type Isolated } from '../test/support/isolated.js';

/**
 * Rolling totals (lua/lib/window.lua) as the three scripts that use them see them: counted in the
 * ack (with the pause flag of a crossing), read and reserved against by authorize, read by the
 * spend routes; with `now` given, so the window slides without waiting.
 */
let iso: Isolated;
const WINDOW = { bucketMs: 1_000, buckets: 60 }; // the last minute, in 1 s buckets
const T0 = 1_800_000_000_000; // a bucket boundary

beforeAll(async () => {
  iso = await isolated('window');
});
afterAll(async () => {
  await iso?.cleanup();
});

const key = (name: string) => partitionedKey(iso.config.REDIS_PREFIX, name, 0);

/** Acks one pending entry of a scratch stream with these counters, as a stage's ack does. */
async function count(counter: string, by: bigint, now: number, limit?: bigint, flag?: string): Promise<string[]> {
  const stream = key(`in:${counter}`);
  await iso.redis.xgroup('CREATE', stream, 'g', '0', 'MKSTREAM').catch(() => undefined);
  await iso.redis.xadd(stream, '*', 'd', 'x');
  const read = (await iso.redis.xreadgroup('GROUP', 'g', 'c', 'COUNT', 1, 'STREAMS', stream, '>')) as [string, [string, string[]][]][];
  const id = read[0][1][0][0];
  const input: AckInput = {
    id,
    clearError: false,
    groups: [{ groupKey: key(`out:${counter}`), payload: Buffer.from('x'), nEvents: 1, origin: '' }],
    counted: [
      {
        counters: [
          {
            counterKey: counter,
            by,
            ttlSeconds: 0,
            ...(limit !== undefined ? { limit, tag: 'cap:w' } : {}),
            ...(flag ? { flagKey: flag, flagValue: '{"capId":"w"}', flagTtlSeconds: 86_400 } : {}),
            window: { ...WINDOW, now },
          },
        ],
        refs: [{ groupIndex: 1, position: 1 }],
      },
    ],
    retries: [],
  };
  const call = ackArguments(stream, key(`errors:${counter}`), 'g', [input]);
  const reply = await scripted(iso.redis).ackAndForward(call.keys.length, ...call.keys, ...call.args);
  const [parsed] = parseAckReply([input], reply);
  if (parsed.kind !== 'acked') throw new Error(`not acked: ${JSON.stringify(parsed)}`);
  return parsed.crossed[0];
}

const totalAt = async (counter: string, now: number, limit?: bigint) =>
  (await windowTotals(iso.redis, key('authorize'), [{ key: counter, window: WINDOW, ...(limit !== undefined ? { limit } : {}) }], now))[0];

/**
 * Counts 0.6, 0.3 and 0.1 against a limit of 1 at base, base + 1 s and base + 2 s (base: the
 * clock's next second), the last crossing it; returns base. The flag ends when 0.6 leaves, at base + 60 s.
 */
async function crossAtTwoSeconds(counter: string, flag: string): Promise<number> {
  const base = Math.ceil(Date.now() / 1000) * 1000;
  await count(counter, 600_000_000n, base, 1_000_000_000n, flag);
  await count(counter, 300_000_000n, base + 1_000, 1_000_000_000n, flag);
  expect(await count(counter, 100_000_000n, base + 2_000, 1_000_000_000n, flag)).toEqual(['cap:w']);
  return base;
}

describe('rolling windows', () => {
  it('counts the spend of the last window exactly, taking out each bucket as it leaves', async () => {
    const counter = key('cap:t:roll:w');
    await count(counter, 300_000_000n, T0);
    await count(counter, 200_000_000n, T0 + 30_000);
    await count(counter, 9_007_199_254_740_993n, T0 + 59_999); // past 2^53: exact all the same
    expect((await totalAt(counter, T0 + 59_999)).total).toBe(9_007_199_754_740_993n);
    // T0's bucket leaves at T0 + 60 s, the next at T0 + 90 s, the last at T0 + 119 s.
    expect((await totalAt(counter, T0 + 60_000)).total).toBe(9_007_199_454_740_993n);
    expect((await totalAt(counter, T0 + 90_000)).total).toBe(9_007_199_254_740_993n);
    expect((await totalAt(counter, T0 + 119_000)).total).toBe(0n);
    expect(await iso.redis.get(counter)).toBe('0');
    // Counting resumes from nothing.
    await count(counter, 5n, T0 + 200_000);
    expect((await totalAt(counter, T0 + 200_000)).total).toBe(5n);
    // The keys expire a window after their last write.
    const ttl = await iso.redis.pttl(counter);
    expect(ttl).toBeGreaterThan(59_000);
    expect(ttl).toBeLessThanOrEqual(61_000);
  });

  it('sets the pause flag on the crossing event, for as long as it takes enough spend to leave the window', async () => {
    const counter2 = key('cap:t:pause2:w');
    const flag2 = key('paused:t:agent:b');
    const base = await crossAtTwoSeconds(counter2, flag2);
    const ttl = await iso.redis.pttl(flag2);
    // base + 60 s - (base + 2 s) = 58 s
    expect(ttl).toBeGreaterThan(57_000);
    expect(ttl).toBeLessThanOrEqual(58_000);
    // Another event while over: tagged, not crossing again.
    expect(await count(counter2, 1n, base + 3_000, 1_000_000_000n, flag2)).toEqual([]);
    const readBack = await totalAt(counter2, base + 3_000, 1_000_000_000n);
    expect(readBack).toEqual({ total: 1_000_000_001n, freesAt: base + 60_000 });
  });

  it('lengthens a pause flag still set by the spend counted while it holds, and never sets again one that was lifted', async () => {
    const counter = key('cap:t:pause3:w');
    const flag = key('paused:t:agent:c');
    const base = await crossAtTwoSeconds(counter, flag);
    expect(await iso.redis.pttl(flag)).toBeLessThanOrEqual(58_000); // under again at base + 60 s
    // Paused, yet 5 more are counted (a call in flight): the total is under 1 only once they leave, at base + 63 s.
    expect(await count(counter, 5_000_000_000n, base + 3_000, 1_000_000_000n, flag)).toEqual([]);
    const ttl = await iso.redis.pttl(flag);
    expect(ttl).toBeGreaterThan(59_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
    expect(await iso.redis.get(flag)).toBe('{"capId":"w"}');
    // A smaller spend frees nothing later: the flag keeps its end.
    await count(counter, 1n, base + 3_500, 1_000_000_000n, flag);
    expect(await iso.redis.pttl(flag)).toBeGreaterThan(59_000);
    // Lifted (the flag deleted): spend over the limit does not pause again; only a new crossing would.
    await iso.redis.del(flag);
    await count(counter, 1_000_000_000n, base + 4_000, 1_000_000_000n, flag);
    expect(await iso.redis.exists(flag)).toBe(0);
  });

  it('takes a duplicate back from the bucket it was counted in, and not at all once that bucket left the window', async () => {
    const counter = key('cap:t:back:w');
    await count(counter, 400n, T0);
    await count(counter, 100n, T0 + 10_000);
    await count(counter, -400n, T0); // ledger-write's take-back, in the bucket of T0
    expect((await totalAt(counter, T0 + 10_000)).total).toBe(100n);
    expect((await totalAt(counter, T0 + 60_000)).total).toBe(100n);
    await count(counter, 50n, T0 + 61_000);
    await count(counter, -100n, T0 + 10_000); // still in the window: taken back
    expect((await totalAt(counter, T0 + 61_000)).total).toBe(50n);
    await count(counter, -50n, T0 + 61_000);
    await count(counter, 7n, T0 + 130_000); // T0 + 61 s has left: a take-back for it changes nothing
    await count(counter, -999n, T0 + 61_000);
    expect((await totalAt(counter, T0 + 130_000)).total).toBe(7n);
  });

  it('authorize reads a rolling budget at its now, refuses an estimate that does not fit, and says when it will', async () => {
    const counter = key('cap:t:auth:w');
    await count(counter, 500_000_000n, T0);
    await count(counter, 300_000_000n, T0 + 10_000);
    const ask = (estimate: bigint, id: string) => ({
      flagKeys: [],
      budgets: [{ counterKey: counter, limit: 1_000_000_000n, hard: true, window: WINDOW }],
      reservation: { estimate, id, ttlMs: 600_000 },
    });
    const [fits] = await admit(iso.redis, key('authorize'), [ask(100_000_000n, 'r1')], T0 + 20_000);
    expect(fits.verdict).toEqual({ kind: 'ok' });
    expect(fits.budgets[0]).toMatchObject({ spent: 800_000_000n, reserved: 100_000_000n });
    // 0.8 spent + 0.1 reserved + 0.5 asked: fits once T0's 0.5 leaves, at T0 + 60 s.
    const [refused] = await admit(iso.redis, key('authorize'), [ask(500_000_000n, 'r2')], T0 + 20_000);
    expect(refused.verdict).toEqual({ kind: 'budget', index: 0 });
    expect(refused.budgets[0].freesAt).toBe(T0 + 60_000);
    // At T0 + 60 s it fits: the window holds 0.3.
    const [later] = await admit(iso.redis, key('authorize'), [ask(500_000_000n, 'r2')], T0 + 60_000);
    expect(later.verdict).toEqual({ kind: 'ok' });
    expect(later.budgets[0]).toMatchObject({ spent: 300_000_000n, reserved: 600_000_000n });
    // An estimate over the limit by itself fits only when everything has left (T0 + 10 s's bucket, at T0 + 70 s).
    const [never] = await admit(iso.redis, key('authorize'), [ask(2_000_000_000n, 'r3')], T0 + 60_000);
    expect(never.verdict).toEqual({ kind: 'budget', index: 0 });
    expect(never.budgets[0].freesAt).toBe(T0 + 70_000);
  });
});
