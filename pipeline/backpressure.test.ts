import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Redis } from './redis.js';
import { Watermark, type QueueProbe } from './backpressure.js';

describe('Watermark.retryHintMs', () => {
  afterEach(() => vi.useRealTimers());

  it('says how long the queue above the low mark takes to drain at the rate it was seen draining, within 50 ms to 1 s', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(1_000_000);
    let entries = 0;
    const probe: QueueProbe = async () => ({ entries, ageMs: 0 });
    const gate = new Watermark(undefined as unknown as Redis, ['events:ingested'], 1_000, 500, { probe });

    entries = 1_200;
    expect(await gate.open()).toBe(false);
    expect(gate.retryHintMs()).toBe(250); // no drain seen yet

    // 100 ms later 200 fewer wait: 2 per ms, and 500 above the low mark take 250 ms.
    vi.setSystemTime(1_000_100);
    entries = 1_000;
    expect(await gate.open()).toBe(false);
    expect(gate.retryHintMs()).toBe(250);
    vi.setSystemTime(1_000_200);
    entries = 600;
    expect(await gate.open()).toBe(false);
    // 4 per ms now (a decaying average: 0.7 x 2 + 0.3 x 4 = 2.6), 100 above the mark: 38 ms, at least 50.
    expect(gate.retryHintMs()).toBe(50);

    // A queue that stopped draining: the hint is bounded by a second.
    vi.setSystemTime(1_000_300);
    entries = 5_000;
    expect(await gate.open()).toBe(false);
    vi.setSystemTime(1_000_400);
    expect(await gate.open()).toBe(false);
    expect(gate.retryHintMs()).toBe(1_000);

    // Drained below the low mark: open again.
    vi.setSystemTime(1_000_500);
    entries = 100;
    expect(await gate.open()).toBe(true);
  });

  it('counts what this process added since its last read as drained only once it has left', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(2_000_000);
    let entries = 900;
    const gate = new Watermark(undefined as unknown as Redis, ['events:ingested'], 950, 400, { probe: async () => ({ entries, ageMs: 0 }) });
    expect(await gate.open()).toBe(true);
    // 300 written by this process, 200 taken by the stages in 100 ms: 1,000 wait, 2 per ms left.
    gate.added(300);
    vi.setSystemTime(2_000_100);
    entries = 1_000;
    expect(await gate.open()).toBe(false);
    expect(gate.retryHintMs()).toBe(300); // (1,000 - 400) / 2
  });
});
