import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AdmissionBatcher, admissionPrefix, type AdmissionReply, type AdmissionRequest } from './admission.js';
import { AdmissionLeases, announceLimitFlag, type LeaseHolder } from './admission-leases.js';
import { loadConfig } from './config.js';
import { partitionedKey } from './keys.js';
import { clusterNodes, connectRedis, deleteKeysWithPrefix, type Redis } from './redis.js';

const PREFIX = `t:leases_${randomBytes(4).toString('hex')}:`;
let redis: Redis;
const opened: AdmissionLeases[] = [];

function key(name: string, partition = 0): string {
  return partitionedKey(PREFIX, name, partition);
}

/** A caller with a rate window of `limit` calls a minute, a flag and a session, in a partition (0 unless said). */
function holder(name: string, limit: number, partition = 0): LeaseHolder {
  const request: AdmissionRequest = {
    flagKeys: [key(`${name}:flag`, partition)],
    budgets: [],
    rate: { key: key(`${name}:rate`, partition), limit, windowMs: 60_000, member: '' },
    sessions: { key: key(`${name}:sessions`, partition), session: 's1', idleMs: 60_000 },
  };
  return { anchorKey: key('anchor', partition), prefix: admissionPrefix(request), request };
}

/** A process's leases: its own batcher (its own script calls), subscribed before it is used. */
async function leasesOf(leaseMs = 1_000): Promise<AdmissionLeases> {
  const leases = new AdmissionLeases(redis, new AdmissionBatcher(redis, { maxInFlight: 2 }), { leaseMs, name: `${PREFIX}leases` });
  opened.push(leases);
  await leases.ready(holder('any', 1)); // every holder here is in partition 0: one channel
  return leases;
}

/** One call as the authorizer makes it: from the lease when it answers, else from Redis. */
async function call(leases: AdmissionLeases, h: LeaseHolder): Promise<{ reply: AdmissionReply; local: boolean }> {
  const local = leases.take(h, Date.now());
  if (local) return { reply: local, local: true };
  return { reply: (await leases.admit(h)).reply, local: false };
}

/** Lets renewals and given-back admissions reach Redis and come back. */
const turn = () => new Promise((r) => setTimeout(r, 2));

/** `n` calls one after another, as a busy caller makes them (a turn between): its lease grows and renews. */
async function calls(leases: AdmissionLeases, h: LeaseHolder, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await call(leases, h);
    await turn();
  }
}

/**
 * Lets an announcement reach the subscriber. On one Redis it is on its way before PUBLISH
 * answers; on a cluster (CI runs this file on one too) it may cross the cluster bus to the node
 * the subscriber reads from.
 */
const announcedTurn = async () => {
  await new Promise((r) => setTimeout(r, clusterNodes(loadConfig({}).REDIS_URL) ? 50 : 2));
  // A timer that came due while this process waited for a core runs before the sockets are read: one poll phase more.
  await new Promise((r) => setImmediate(r));
};

beforeAll(() => {
  redis = connectRedis(loadConfig({}).REDIS_URL, `${PREFIX}test`);
});

afterAll(async () => {
  for (const leases of opened) await leases.close();
  await deleteKeysWithPrefix(redis, PREFIX);
  redis.disconnect();
});

describe('AdmissionLeases', () => {
  it('answers a busy caller from memory, every admission counted in the rate window before it is answered', async () => {
    const leases = await leasesOf();
    const h = holder('busy', 100_000);
    let local = 0;
    const used: number[] = [];
    for (let i = 0; i < 300; i++) {
      const answer = await call(leases, h);
      expect(answer.reply.verdict.kind).toBe('ok');
      if (answer.local) local++;
      used.push(answer.reply.rateUsed);
      // Never fewer admissions in the shared window than were answered.
      if (i % 50 === 0) expect(await redis.zcard(h.request.rate!.key)).toBeGreaterThanOrEqual(i + 1);
      await turn();
    }
    expect(local).toBeGreaterThan(250);
    expect(used).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(await redis.zscore(h.request.sessions!.key, 's1')).not.toBeNull();
    // Closing gives back what was granted and not answered: the window holds exactly the answered ones.
    await leases.close();
    expect(await redis.zcard(h.request.rate!.key)).toBe(300);
  });

  it('drops the lease of a caller whose flag is announced, before its next call: that call is refused by Redis', async () => {
    const leases = await leasesOf();
    const h = holder('flagged', 100_000);
    await calls(leases, h, 20);
    expect((await call(leases, h)).local).toBe(true);
    await redis.set(h.request.flagKeys[0], 'paused by hand');
    await announceLimitFlag(redis, h.request.flagKeys[0]);
    await announcedTurn();
    const next = await call(leases, h);
    expect(next).toMatchObject({ local: false, reply: { verdict: { kind: 'flag', value: 'paused by hand' } } });
    // Nothing granted ahead stays counted for a caller that is refused.
    await turn();
    expect(await redis.zcard(h.request.rate!.key)).toBe(21);
    // A flag of another caller leaves this one's lease alone.
    await redis.del(h.request.flagKeys[0]);
    const other = holder('other', 100_000);
    await calls(leases, h, 20);
    await announceLimitFlag(redis, other.request.flagKeys[0]);
    await announcedTurn();
    expect((await call(leases, h)).local).toBe(true);
  });

  it('listens to each partition it grants in: a flag announced in another partition (another node of a cluster) drops that lease', async () => {
    const leases = await leasesOf();
    const h = holder('elsewhere', 100_000, 2); // on the local cluster {p2} is on another master than {p0}
    await leases.ready(h);
    await calls(leases, h, 20);
    expect((await call(leases, h)).local).toBe(true);
    await redis.set(h.request.flagKeys[0], 'paused in partition 2');
    await announceLimitFlag(redis, h.request.flagKeys[0]);
    await announcedTurn();
    expect(await call(leases, h)).toMatchObject({ local: false, reply: { verdict: { kind: 'flag', value: 'paused in partition 2' } } });
  });

  it('never leases a small rate limit ahead: each call is decided by Redis, exactly', async () => {
    const leases = await leasesOf();
    const h = holder('small', 5);
    const answers = [];
    for (let i = 0; i < 8; i++) answers.push(await call(leases, h));
    expect(answers.map((a) => a.local)).toEqual(Array(8).fill(false));
    expect(answers.map((a) => a.reply.verdict.kind)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok', 'rate', 'rate', 'rate']);
    expect(await redis.zcard(h.request.rate!.key)).toBe(5);
  });

  it('admits a caller at its limit again once the window slides: exactly as many as left it, answered from a lease too', async () => {
    const leases = await leasesOf();
    const h = holder('sliding', 64);
    // Each script call runs at the batcher's Date.now(), each lease answer at the caller's: the test moves it (timers stay real).
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      const start = Date.now();
      let local = 0;
      /** Calls at `ms` after the start until one is refused: how many were admitted. */
      const admittedAt = async (ms: number, most = 64) => {
        vi.setSystemTime(start + ms);
        let admitted = 0;
        for (; admitted < most; admitted++) {
          const answer = await call(leases, h);
          if (answer.reply.verdict.kind !== 'ok') break;
          if (answer.local) local++;
          await turn();
        }
        return admitted;
      };
      expect(await admittedAt(0, 32)).toBe(32);
      expect(await admittedAt(20_000)).toBe(32);
      vi.setSystemTime(start + 40_000);
      expect((await call(leases, h)).reply.verdict).toEqual({ kind: 'rate', retryAfterMs: 20_000 });
      // The 32 admitted at 0 have left the window, the 32 admitted at 20 s have not.
      expect(await admittedAt(60_001)).toBe(32);
      expect(local).toBeGreaterThan(0);
      await turn();
      expect(await redis.zcard(h.request.rate!.key)).toBe(64);
    } finally {
      vi.useRealTimers();
    }
  });

  it('two processes leasing one rate window admit exactly its limit between them', async () => {
    const [a, b] = [await leasesOf(), await leasesOf()];
    const h = holder('shared', 320);
    let admitted = 0;
    let refusedInARow = 0;
    for (let i = 0; refusedInARow < 20 && i < 2_000; i++) {
      const answer = await call(i % 3 === 0 ? b : a, h);
      if (answer.reply.verdict.kind === 'ok') {
        admitted++;
        refusedInARow = 0;
      } else refusedInARow++;
      expect(admitted).toBeLessThanOrEqual(320);
      await turn();
    }
    expect(admitted).toBe(320);
    expect(await redis.zcard(h.request.rate!.key)).toBe(320);
  });

  it('takes back what a lease did not answer once it expires', async () => {
    const leases = await leasesOf(50);
    const h = holder('expiring', 100_000);
    await calls(leases, h, 40);
    expect(await redis.zcard(h.request.rate!.key)).toBeGreaterThan(40);
    const deadline = Date.now() + 2_000;
    while ((await redis.zcard(h.request.rate!.key)) !== 40 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(await redis.zcard(h.request.rate!.key)).toBe(40);
  });
});
