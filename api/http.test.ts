import { describe, expect, it } from 'vitest';
import { RequestDeadlines } from './http.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check: () => boolean, ms = 2_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await sleep(5);
  }
}

describe('RequestDeadlines', () => {
  it('expires a request still in hand at its deadline (not before), never one settled before, and stops its timer when nothing is in hand', async () => {
    const deadlines = new RequestDeadlines(100);
    const expired: { name: string; after: number }[] = [];
    const started = performance.now();
    deadlines.track(() => expired.push({ name: 'late', after: performance.now() - started }));
    const settled = deadlines.track(() => expired.push({ name: 'settled', after: performance.now() - started }));
    await sleep(50);
    deadlines.settle(settled);
    await until(() => expired.length > 0);
    await sleep(50);
    expect(expired.map((e) => e.name)).toEqual(['late']);
    expect(expired[0].after).toBeGreaterThanOrEqual(100);
    // Within a tenth of the deadline on a quiet box; a loaded one may run the timer late.
    expect(expired[0].after).toBeLessThan(400);
    expect(deadlines.size).toBe(0);
    // A later request starts the timer again.
    deadlines.track(() => expired.push({ name: 'again', after: 0 }));
    await until(() => expired.length === 2);
    expect(expired[1].name).toBe('again');
  });

  it('expires requests in the order they came, each no earlier than its own deadline', async () => {
    const deadlines = new RequestDeadlines(60);
    const expired: { n: number; at: number }[] = [];
    const first = performance.now();
    deadlines.track(() => expired.push({ n: 1, at: performance.now() - first }));
    await sleep(30);
    const second = performance.now() - first;
    deadlines.track(() => expired.push({ n: 2, at: performance.now() - first }));
    await until(() => expired.length === 2);
    expect(expired.map((e) => e.n)).toEqual([1, 2]);
    expect(expired[0].at).toBeGreaterThanOrEqual(60);
    expect(expired[1].at).toBeGreaterThanOrEqual(second + 60);
  });
});
