import type { ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { BatchedAnswers, RequestDeadlines } from './http.js';

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

/** What BatchedAnswers does to a response: the status, headers and body it wrote, in the order written. */
interface Written {
  name: string;
  status: number;
  headers: Record<string, string | number>;
  body: string;
}

function recordingResponse(name: string, written: Written[], fail = false): ServerResponse {
  let head: { status: number; headers: Record<string, string | number> } | undefined;
  return {
    writeHead(status: number, headers: Record<string, string | number>) {
      if (fail) throw new Error(`cannot write ${name}`);
      head = { status, headers };
      return this;
    },
    end(body: string) {
      written.push({ name, status: head!.status, headers: head!.headers, body });
      return this;
    },
  } as unknown as ServerResponse;
}

const endOfPass = () => new Promise((resolve) => setImmediate(resolve));

describe('BatchedAnswers', () => {
  it('holds answers until the event loop pass ends, then writes each on its own response in the order decided', async () => {
    const written: Written[] = [];
    const answers = new BatchedAnswers(() => {
      throw new Error('no write fails here');
    });
    answers.write(recordingResponse('a', written), 200, '{"allowed":true}', { 'x-one': '1' });
    answers.write(recordingResponse('b', written), 429, '{"error":{}}', { 'retry-after': '2' });
    answers.write(recordingResponse('c', written), 200, '{"allowed":false}', undefined);
    expect(written).toEqual([]);
    await endOfPass();
    expect(written).toEqual([
      { name: 'a', status: 200, headers: { 'x-one': '1', 'content-type': 'application/json', 'content-length': 16 }, body: '{"allowed":true}' },
      { name: 'b', status: 429, headers: { 'retry-after': '2', 'content-type': 'application/json', 'content-length': 12 }, body: '{"error":{}}' },
      { name: 'c', status: 200, headers: { 'content-type': 'application/json', 'content-length': 17 }, body: '{"allowed":false}' },
    ]);
  });

  it('writes at once when it holds its most: an answer waits for at most that many less one', async () => {
    const written: Written[] = [];
    const answers = new BatchedAnswers(() => {}, 3);
    answers.write(recordingResponse('a', written), 200, '{}', undefined);
    answers.write(recordingResponse('b', written), 200, '{}', undefined);
    expect(written.map((w) => w.name)).toEqual([]);
    answers.write(recordingResponse('c', written), 200, '{}', undefined);
    expect(written.map((w) => w.name)).toEqual(['a', 'b', 'c']);
    answers.write(recordingResponse('d', written), 200, '{}', undefined);
    expect(written.map((w) => w.name)).toEqual(['a', 'b', 'c']);
    await endOfPass();
    expect(written.map((w) => w.name)).toEqual(['a', 'b', 'c', 'd']);
  });

  it('counts Server-Timing up to the write, the wait for the pass included', async () => {
    const written: Written[] = [];
    const answers = new BatchedAnswers(() => {});
    const startedAt = performance.now();
    answers.write(recordingResponse('a', written), 200, '{}', undefined, startedAt);
    const busyUntil = performance.now() + 20; // the rest of the pass: other requests decided
    while (performance.now() < busyUntil);
    await endOfPass();
    const timing = /^app;dur=(\d+\.\d{3})$/.exec(String(written[0].headers['server-timing']));
    expect(timing).not.toBeNull();
    expect(Number(timing![1])).toBeGreaterThanOrEqual(20);
  });

  it('hands a write that throws to onError with its response, and writes the others', async () => {
    const written: Written[] = [];
    const failed: { err: unknown; res: ServerResponse }[] = [];
    const answers = new BatchedAnswers((err, res) => failed.push({ err, res }));
    const broken = recordingResponse('broken', written, true);
    answers.write(recordingResponse('a', written), 200, '{}', undefined);
    answers.write(broken, 200, '{}', undefined);
    answers.write(recordingResponse('c', written), 200, '{}', undefined);
    await endOfPass();
    expect(written.map((w) => w.name)).toEqual(['a', 'c']);
    expect(failed).toHaveLength(1);
    expect(failed[0].res).toBe(broken);
    expect(String(failed[0].err)).toContain('cannot write broken');
  });
});
