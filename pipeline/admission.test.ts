import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdmissionBatcher, admit, type AdmissionRequest } from './admission.js';
import { loadConfig } from './config.js';
import { partitionedKey } from './keys.js';
import { deleteKeysWithPrefix } from './redis.js';
import { TcpProxy } from '../test/support/tcp-proxy.js';

const PREFIX = `t:admission_${randomBytes(4).toString('hex')}:`;
let redis: Redis;
let watcher: Redis;
/** The anchor keys of every script call Redis received, in order (from MONITOR). */
const scriptCalls: string[] = [];

function anchor(name: string): string {
  return partitionedKey(PREFIX, name, 0);
}

/** A request on a sliding window of `limit` calls a minute. */
function rated(window: string, limit: number): AdmissionRequest {
  return { flagKeys: [], budgets: [], rate: { key: anchor(window), limit, windowMs: 60_000, member: randomBytes(6).toString('hex') } };
}

/** Waits until MONITOR has reported the calls made so far (it is a separate connection). */
async function settled(): Promise<void> {
  const marker = anchor(`marker-${randomBytes(3).toString('hex')}`);
  await admit(redis, marker, [{ flagKeys: [], budgets: [] }]);
  for (let i = 0; i < 100 && !scriptCalls.includes(marker); i++) await new Promise((r) => setTimeout(r, 10));
}

beforeAll(async () => {
  redis = new Redis(loadConfig({}).REDIS_URL);
  await admit(redis, anchor('warm'), [{ flagKeys: [], budgets: [] }]); // the script is loaded before anything is counted
  watcher = await new Redis(loadConfig({}).REDIS_URL).monitor();
  watcher.on('monitor', (_time: string, args: string[]) => {
    if (/^eval(sha)?$/i.test(args[0]) && args[3]?.startsWith(PREFIX)) scriptCalls.push(args[3]);
  });
});

afterAll(async () => {
  watcher.disconnect();
  await deleteKeysWithPrefix(redis, PREFIX);
  redis.disconnect();
});

describe('AdmissionBatcher', () => {
  it('decides the requests of one turn in one script call, in the order they came', async () => {
    const batcher = new AdmissionBatcher(redis);
    const key = anchor('turn');
    const answers = await Promise.all(Array.from({ length: 10 }, () => batcher.admit(key, rated('turn-window', 3))));
    expect(answers.map((a) => a.reply.verdict.kind)).toEqual(['ok', 'ok', 'ok', 'rate', 'rate', 'rate', 'rate', 'rate', 'rate', 'rate']);
    expect(answers.map((a) => a.reply.rateUsed)).toEqual([1, 2, 3, 3, 3, 3, 3, 3, 3, 3]);
    expect(new Set(answers.map((a) => a.now)).size).toBe(1);
    await settled();
    expect(scriptCalls.filter((k) => k === key)).toHaveLength(1);
  });

  it('sends what arrives while a call is in flight together in the next call (group commit)', async () => {
    // The batcher's connection goes through a proxy that holds the first call in flight for as long as the test likes.
    const proxy = await TcpProxy.start({ port: Number(new URL(loadConfig({}).REDIS_URL).port || 6379) });
    const held = new Redis(proxy.port, '127.0.0.1');
    try {
      await held.ping();
      const batcher = new AdmissionBatcher(held);
      const key = anchor('inflight');
      proxy.cut('blackhole');
      const first = batcher.admit(key, rated('inflight-window', 100));
      const later: ReturnType<AdmissionBatcher['admit']>[] = [];
      for (let i = 0; i < 6; i++) {
        await new Promise((r) => setImmediate(r)); // each in a turn of its own, the first call still unanswered
        later.push(batcher.admit(key, rated('inflight-window', 100)));
      }
      proxy.restore();
      const answers = await Promise.all([first, ...later]);
      expect(answers.map((a) => a.reply.rateUsed)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(new Set(answers.slice(1).map((a) => a.now)).size).toBe(1); // one call for the six
      await settled();
      expect(scriptCalls.filter((k) => k === key)).toHaveLength(2);
    } finally {
      held.disconnect();
      await proxy.close();
    }
  });

  it('with two calls in flight, splits what waits between them, and Redis still decides in arrival order', async () => {
    const batcher = new AdmissionBatcher(redis, { maxInFlight: 2 });
    const key = anchor('split');
    const answers = await Promise.all(Array.from({ length: 16 }, () => batcher.admit(key, rated('split-window', 12))));
    expect(answers.map((a) => a.reply.rateUsed)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 12, 12, 12, 12]);
    expect(answers.map((a) => a.reply.verdict.kind)).toEqual([...Array<string>(12).fill('ok'), 'rate', 'rate', 'rate', 'rate']);
    await settled();
    expect(scriptCalls.filter((k) => k === key)).toHaveLength(2);
  });

  it('fails every request of a call that fails, and goes on with the next', async () => {
    const batcher = new AdmissionBatcher(redis);
    const key = anchor('failing');
    await redis.set(anchor('not-a-zset'), 'x');
    const doomed = [batcher.admit(key, rated('fine-window', 5)), batcher.admit(key, rated('not-a-zset', 5))];
    for (const answer of await Promise.allSettled(doomed)) {
      expect(answer.status).toBe('rejected');
      expect(String((answer as PromiseRejectedResult).reason)).toMatch(/WRONGTYPE/);
    }
    expect((await batcher.admit(key, rated('fine-window', 5))).reply.verdict.kind).toBe('ok');
  });
});

describe('admit', () => {
  it('slides the rate window on the clock it is given: each admission frees its slot a window after it, a refusal takes none', async () => {
    const at = async (ms: number) => (await admit(redis, anchor('sliding'), [rated('sliding-window', 3)], 1_000_000 + ms))[0];
    expect((await at(0)).verdict.kind).toBe('ok');
    expect((await at(0)).verdict.kind).toBe('ok');
    expect((await at(20_000)).rateUsed).toBe(3);
    expect((await at(30_000)).verdict).toEqual({ kind: 'rate', retryAfterMs: 30_000 });
    // Only the two admitted at 0 have left: a window that never slid would admit none, one reset every minute three.
    const after = [await at(60_001), await at(60_001), await at(60_001)];
    expect(after.map((reply) => reply.verdict)).toEqual([{ kind: 'ok' }, { kind: 'ok' }, { kind: 'rate', retryAfterMs: 19_999 }]);
    expect((await at(80_001)).verdict.kind).toBe('ok');
  });

  it('carries any session id to Redis as UTF-8 did (quotes, backslashes, non-ASCII; a lone surrogate as U+FFFD)', async () => {
    const sessions = anchor('sessions-odd');
    const odd = ['a"b\\c', 'ünï\u{1F600}', '\\ud800 as text', 'lone\ud800'];
    const replies = await admit(
      redis,
      anchor('odd'),
      odd.map((session) => ({ flagKeys: [anchor('no-flag')], budgets: [], sessions: { key: sessions, max: 10, session, idleMs: 60_000 } })),
    );
    expect(replies.map((r) => r.verdict.kind)).toEqual(['ok', 'ok', 'ok', 'ok']);
    expect((await redis.zrange(sessions, 0, -1)).sort()).toEqual(['a"b\\c', 'ünï\u{1F600}', '\\ud800 as text', 'lone\uFFFD'].sort());
  });
});
