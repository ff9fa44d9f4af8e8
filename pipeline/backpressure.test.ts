import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Redis } from './redis.js';
import { Watermark, type GateBound, type QueueProbe } from './backpressure.js';

/** A gate over a queue the test sets, on a clock the test moves. */
function gateOver(high: number, low: number) {
  vi.useFakeTimers({ toFake: ['Date'] });
  let now = 1_000_000;
  vi.setSystemTime(now);
  const queue = { entries: 0 };
  const probe: QueueProbe = async () => ({ entries: queue.entries, ageMs: 0 });
  const gate = new Watermark(undefined as unknown as Redis, ['events:ingested'], high, low, { probe });
  const readAfter = async (ms: number, entries: number) => {
    now += ms;
    vi.setSystemTime(now);
    queue.entries = entries;
    return gate.open();
  };
  return { gate, readAfter };
}

describe('Watermark.retryHintMs', () => {
  afterEach(() => vi.useRealTimers());

  it('says about when the queue is below the low mark again, from the rate it was seen draining, stretched by the share of the last second it was closed', async () => {
    const { gate, readAfter } = gateOver(1_000, 500);
    expect(await readAfter(0, 1_200)).toBe(false);
    expect(gate.retryHintMs()).toBe(250); // no drain seen yet

    // 100 ms later 200 fewer wait: 2 per ms, and 500 above the low mark take 250 ms; the gate was
    // closed for those 100 ms (a share of 1 - e^-0.1 of the last second), so a little longer.
    expect(await readAfter(100, 1_000)).toBe(false);
    const closedShare = 1 - Math.exp(-0.1);
    expect(gate.retryHintMs()).toBe(Math.round(250 / (1 - closedShare)));

    // Never below 50 ms: 100 above the mark at 2.6 per ms (0.7 x 2 + 0.3 x 4).
    expect(await readAfter(100, 600)).toBe(false);
    expect(gate.retryHintMs()).toBe(50);

    // Drained below the low mark: open again.
    expect(await readAfter(100, 100)).toBe(true);
  });

  it('tells clients to wait a second when the gate has been closed nearly all of the last seconds, however fast the queue drains', async () => {
    const { gate, readAfter } = gateOver(1_000, 500);
    expect(await readAfter(0, 2_000)).toBe(false);
    // Every 25 ms the stages take 100 and the clients bring 100 back: 4 per ms drained, never below the mark.
    for (let i = 0; i < 80; i++) expect(await readAfter(25, 1_600 + (i % 2) * 100)).toBe(false);
    expect(gate.retryHintMs()).toBe(1_000);
  });

  it('counts what this process added since its last read as drained only once it has left', async () => {
    const { gate, readAfter } = gateOver(950, 400);
    expect(await readAfter(0, 900)).toBe(true);
    // 300 written by this process, 200 taken by the stages in 100 ms: 1,000 wait, 2 per ms left;
    // the gate was open until now, so the hint is not stretched.
    gate.added(300);
    expect(await readAfter(100, 1_000)).toBe(false);
    expect(gate.retryHintMs()).toBe(300); // (1,000 - 400) / 2
  });
});

describe('Watermark closedAnswerMs', () => {
  it('answers closed after closedAnswerMs while a read of a closed gate is slow, and opens once the read finds room', async () => {
    let entries = 2_000;
    let delayMs = 0;
    const probe: QueueProbe = async () => {
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      return { entries, ageMs: 0 };
    };
    const gate = new Watermark(undefined as unknown as Redis, ['events:ingested'], 1_000, 500, { probe, closedAnswerMs: 10 });
    expect(await gate.open()).toBe(false);

    // The queue drained, but the next read takes 300 ms: callers are answered closed within about 10 ms.
    await new Promise((resolve) => setTimeout(resolve, 30)); // past the closed gate's recheck interval
    entries = 100;
    delayMs = 300;
    const started = performance.now();
    expect(await gate.open()).toBe(false);
    expect(await gate.open()).toBe(false); // a caller during the same read: the same answer, no second read
    expect(performance.now() - started).toBeLessThan(150);

    // Once that read is in, the gate is open.
    await new Promise((resolve) => setTimeout(resolve, 320));
    expect(await gate.open()).toBe(true);
  });

  it('waits for the read when it is not set', async () => {
    let entries = 2_000;
    const probe: QueueProbe = async () => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      return { entries, ageMs: 0 };
    };
    const gate = new Watermark(undefined as unknown as Redis, ['events:ingested'], 1_000, 500, { probe });
    expect(await gate.open()).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 30));
    entries = 100;
    expect(await gate.open()).toBe(true);
  });
});

describe('Watermark.knownClosed', () => {
  afterEach(() => vi.useRealTimers());

  it('is true only while a closed read is fresh enough for open() to answer without reading, and reads nothing itself', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    let now = 1_000_000;
    vi.setSystemTime(now);
    let reads = 0;
    const probe: QueueProbe = async () => {
      reads++;
      return { entries: 2_000, ageMs: 0 };
    };
    const gate = new Watermark(undefined as unknown as Redis, ['events:ingested'], 1_000, 500, { probe, cacheMs: 100 });
    expect(gate.knownClosed()).toBe(false); // nothing read yet
    expect(await gate.open()).toBe(false);
    expect(reads).toBe(1);
    expect(gate.knownClosed()).toBe(true);
    expect(gate.open()).toBe(false); // the same answer, at once, without a read
    expect(reads).toBe(1);

    now += 30; // past the closed gate's recheck interval
    vi.setSystemTime(now);
    expect(gate.knownClosed()).toBe(false);
    expect(reads).toBe(1); // it started no read
    expect(await gate.open()).toBe(false);
    expect(reads).toBe(2);
  });
});

describe('Watermark.closedByLastRead', () => {
  afterEach(() => vi.useRealTimers());

  it('stays true while the last read closed the gate, starts one shared read when that read is stale without waiting for it, and turns with the read', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    let now = 1_000_000;
    vi.setSystemTime(now);
    let reads = 0;
    let entries = 2_000;
    let release: () => void = () => {};
    let slow = false;
    const probe: QueueProbe = async () => {
      reads++;
      if (slow) await new Promise<void>((resolve) => (release = resolve));
      return { entries, ageMs: 0 };
    };
    const gate = new Watermark(undefined as unknown as Redis, ['events:ingested'], 1_000, 500, { probe, cacheMs: 100 });
    expect(gate.closedByLastRead()).toBe(false); // nothing read yet: the caller asks open()
    expect(await gate.open()).toBe(false);
    expect(gate.closedByLastRead()).toBe(true);
    expect(reads).toBe(1); // fresh: no read

    now += 30; // stale
    vi.setSystemTime(now);
    slow = true;
    entries = 100;
    expect(gate.closedByLastRead()).toBe(true); // answered at once, the read under way
    expect(gate.closedByLastRead()).toBe(true);
    expect(reads).toBe(2); // one read, shared
    slow = false;
    release();
    await vi.waitFor(() => expect(gate.closedByLastRead()).toBe(false)); // the read found room
    expect(reads).toBe(2);
    expect(await gate.open()).toBe(true); // and the callers after it are let in
  });

  it('is false after a read that failed, so the caller meets the failure in open(), and true again once a read succeeds', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    let now = 1_000_000;
    vi.setSystemTime(now);
    let failing = false;
    const probe: QueueProbe = async () => {
      if (failing) throw new Error('Redis says no');
      return { entries: 2_000, ageMs: 0 };
    };
    const gate = new Watermark(undefined as unknown as Redis, ['events:ingested'], 1_000, 500, { probe, cacheMs: 100 });
    expect(await gate.open()).toBe(false);
    now += 30;
    vi.setSystemTime(now);
    failing = true;
    expect(gate.closedByLastRead()).toBe(true); // the stale read starts, and fails
    await vi.waitFor(() => expect(gate.closedByLastRead()).toBe(false));
    vi.setSystemTime(Date.now() + 30); // vi.waitFor moves the faked clock: past the recheck interval from there
    await expect(Promise.resolve(gate.open())).rejects.toThrow('Redis says no');
    failing = false;
    vi.setSystemTime(Date.now() + 30);
    expect(await gate.open()).toBe(false); // a read that succeeds, still closed
    expect(gate.closedByLastRead()).toBe(true);
  });
});

describe('Watermark downstream marks', () => {
  afterEach(() => vi.useRealTimers());

  /** A gate over a queue (marks 1,000 / 500) and the stream after it (6,000 / 3,000), on a clock the test moves. */
  function gateWithRoomAfter() {
    vi.useFakeTimers({ toFake: ['Date'] });
    let now = 1_000_000;
    const state = { entries: 0, downstream: 0 };
    const probe: QueueProbe = async () => ({ entries: state.entries, ageMs: 0, downstream: state.downstream });
    const heldMs: Record<GateBound, number> = { queue: 0, age: 0, after: 0 };
    const gate = new Watermark(undefined as unknown as Redis, ['events:ingested'], 1_000, 500, {
      probe,
      downstream: { high: 6_000, low: 3_000 },
      onHeld: (bound, ms) => {
        heldMs[bound] += ms;
      },
    });
    const readAfter = async (ms: number, entries: number, downstream: number) => {
      now += ms;
      vi.setSystemTime(now);
      Object.assign(state, { entries, downstream });
      return gate.open();
    };
    return { gate, readAfter, heldMs };
  }

  it('closes while the stream after the queue holds more than its high mark, whatever the queue, and reopens only below its low mark', async () => {
    const { gate, readAfter } = gateWithRoomAfter();
    expect(await readAfter(0, 1_000, 6_000)).toBe(true); // both at their marks, not above them
    expect(await readAfter(100, 800, 6_001)).toBe(false); // the queue drains, but there is no room after it
    // The hint counts from what is after the queue: 3,001 above its low mark at the 2 per ms the
    // queue was seen draining is past a second (from the queue alone it would say 150 ms).
    expect(gate.retryHintMs()).toBe(1_000);
    expect(await readAfter(100, 0, 3_500)).toBe(false); // an empty queue, and between the marks after it: stays closed
    // Below its low mark after it: open, though the queue is between its own marks (it did not close the gate).
    expect(await readAfter(100, 700, 2_999)).toBe(true);
  });

  it('once the queue closed it, reopens when the queue is below its low mark while the stream after it is between its marks', async () => {
    const { gate, readAfter, heldMs } = gateWithRoomAfter();
    expect(await readAfter(0, 1_200, 2_000)).toBe(false); // the queue past its mark
    // The stages after it are mid-batch (5,000 unread: below their high mark): they did not close the
    // gate, so they do not keep it closed once the queue drained below its low mark.
    expect(await readAfter(100, 600, 5_000)).toBe(false);
    // The hint counts what holds the gate: 100 above the queue's low mark at 6 per ms (the floor, 50
    // ms), not the 2,000 the stream after it is above its low mark (that would say ~370 ms).
    expect(gate.retryHintMs()).toBe(50);
    expect(await readAfter(100, 400, 5_000)).toBe(true);
    // Past the mark after it, it holds the gate until below its own low mark, whatever the queue.
    expect(await readAfter(100, 0, 6_500)).toBe(false);
    expect(await readAfter(100, 0, 3_500)).toBe(false);
    expect(await readAfter(100, 0, 2_500)).toBe(true);
    // Each read counts the time since the one before for the bounds that held the gate over it: the
    // queue from the first read to the third, the stream after it from the fourth to the sixth.
    expect(heldMs).toEqual({ queue: 200, age: 0, after: 200 });
  });

  it('without downstream marks, ignores what the probe says of the stream after the queue', async () => {
    const probe: QueueProbe = async () => ({ entries: 0, ageMs: 0, downstream: 1_000_000 });
    const gate = new Watermark(undefined as unknown as Redis, ['events:ingested'], 1_000, 500, { probe });
    expect(await gate.open()).toBe(true);
  });
});
