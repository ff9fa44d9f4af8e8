/**
 * The client's HTTP behaviour against a scripted HTTP server: batching, retries and their
 * timing, typed errors, the full-buffer policies, authorize caching and fail modes, flush on
 * exit. Against the real pipeline: test/e2e/sdk-mcp.test.ts.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentMeter, type AgentMeterOptions } from './client.js';
import { AgentMeterError, ApiResponseError, BadRequestError, DeliveryError, InvalidEventsError, UnauthorizedError } from './errors.js';
import type { MeterEvent } from './events.js';
import { EventIdGenerator, eventIdTime } from './ids.js';
import { parseRetryAfter, retryAfterOf, retryDelayMs, DEFAULT_RETRY } from './retry.js';
import { acceptAll as accept, json, scriptedServer, type Script, type Seen } from './testing/scripted-server.js';

const servers: { close(): Promise<void> }[] = [];
const meters: AgentMeter[] = [];

afterEach(async () => {
  for (const meter of meters.splice(0)) await meter.close();
  for (const server of servers.splice(0)) await server.close();
});

async function scripted(script: Script) {
  const server = await scriptedServer(script);
  servers.push(server);
  return server;
}

function meter(url: string, options: Partial<AgentMeterOptions> = {}): AgentMeter {
  const m = new AgentMeter({ baseUrl: url, ingestToken: 'amt_test', flushOnExit: false, retry: { initialDelayMs: 10, maxDelayMs: 50 }, ...options });
  meters.push(m);
  return m;
}

const call = (i: number): MeterEvent => ({ event_type: 'mcp.tool_invoked', api_key: 'sk_live_test_key', tool_name: 'search', input_tokens: i });
const ids = (seen: Seen[]) => seen.flatMap((s) => (s.body.events ?? []).map((e) => e.event_id));

describe('event ids', () => {
  it('are time ordered, increase within a millisecond, and fit the API id pattern', () => {
    const generator = new EventIdGenerator();
    const made = Array.from({ length: 5_000 }, (_, i) => generator.next(1_780_000_000_000 + Math.floor(i / 1000)));
    expect([...made].sort()).toEqual(made);
    expect(new Set(made).size).toBe(made.length);
    for (const id of made.slice(0, 10)) expect(id).toMatch(/^evt_[0-9A-HJKMNP-TV-Z]{26}$/);
    expect(eventIdTime(made[4_999])).toBe(1_780_000_000_004);
    // A clock that steps back keeps the order.
    const later = generator.next(1_700_000_000_000);
    expect(later > made[4_999]).toBe(true);
  });

  it('take fresh random bits each millisecond, past the end of their random pool', () => {
    const generator = new EventIdGenerator();
    const made = Array.from({ length: 1_000 }, (_, i) => generator.next(1_780_000_000_000 + i));
    const randomParts = new Set(made.map((id) => id.slice(14)));
    expect(randomParts.size).toBe(1_000);
    // Not a counter: consecutive ids of different milliseconds share no long prefix of random digits.
    expect(made.slice(1).filter((id, i) => id.slice(14, 20) === made[i].slice(14, 20)).length).toBeLessThan(3);
  });
});

describe('retry timing', () => {
  it('waits a random time under the doubling ceiling, or the Retry-After plus at most 10%', () => {
    expect(retryDelayMs(DEFAULT_RETRY, 0, undefined, () => 0.999)).toBeLessThan(200);
    expect(retryDelayMs(DEFAULT_RETRY, 3, undefined, () => 0.999)).toBeCloseTo(1598.4, 0);
    expect(retryDelayMs(DEFAULT_RETRY, 40, undefined, () => 1)).toBe(30_000);
    expect(retryDelayMs(DEFAULT_RETRY, 0, 2_000, () => 0)).toBe(2_000);
    expect(retryDelayMs(DEFAULT_RETRY, 0, 2_000, () => 1)).toBe(2_200);
    expect(parseRetryAfter('2')).toBe(2_000);
    expect(parseRetryAfter(new Date(Date.now() + 5_000).toUTCString())).toBeGreaterThan(3_000);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter('86400')).toBe(300_000);
    // Retry-After-Ms, when the server gives it, says more than whole seconds.
    expect(retryAfterOf(new Headers({ 'retry-after': '1', 'retry-after-ms': '180' }))).toBe(180);
    expect(retryAfterOf(new Headers({ 'retry-after': '1', 'retry-after-ms': 'soon' }))).toBe(1_000);
    expect(retryAfterOf(new Headers({ 'retry-after-ms': '86400000' }))).toBe(300_000);
    expect(retryAfterOf(new Headers())).toBeUndefined();
  });
});

describe('track and batching', () => {
  it('sends full batches at once and the rest when the interval passes, ids and times filled in', async () => {
    const { url, seen } = await scripted(accept);
    const m = meter(url, { batchSize: 100, flushIntervalMs: 300 });
    const started = Date.now();
    for (let i = 0; i < 250; i++) await m.track(call(i));
    await until(() => seen.length === 3, 3_000);
    expect(seen.map((s) => s.body.events!.length)).toEqual([100, 100, 50]);
    expect(seen[2].at - started).toBeGreaterThanOrEqual(250);
    const events = seen.flatMap((s) => s.body.events!);
    expect(events.map((e) => e.input_tokens)).toEqual(Array.from({ length: 250 }, (_, i) => i));
    expect(new Set(ids(seen)).size).toBe(250);
    expect(Date.parse(events[0].recorded_timestamp)).toBeGreaterThanOrEqual(started - 5);
    expect(seen[0].path).toBe('/v1/events');
    await until(() => m.stats().accepted === 250, 3_000);
    expect(m.stats()).toMatchObject({ tracked: 250, accepted: 250, failed: 0, buffered: 0 });
  });

  it('hands a full batch to fetch on the next turn of the event loop, not inside the track() that filled it', async () => {
    const { url, seen } = await scripted(accept);
    let fetched = 0;
    const counted: typeof fetch = (input, init) => {
      fetched++;
      return fetch(input, init);
    };
    const m = meter(url, { batchSize: 3, fetch: counted });
    for (let i = 0; i < 3; i++) void m.track(call(i));
    expect(fetched).toBe(0);
    await new Promise((r) => setImmediate(r));
    expect(fetched).toBe(1);
    await until(() => seen.length === 1, 3_000);
    expect(seen[0].body.events!.map((e) => e.input_tokens)).toEqual([0, 1, 2]);
  });

  it('keeps given ids and times', async () => {
    const { url, seen } = await scripted(accept);
    const m = meter(url);
    await m.track({ ...call(1), event_id: 'mine_1', recorded_timestamp: new Date('2026-01-02T03:04:05.000Z') });
    expect(await m.flush()).toMatchObject({ accepted: 1, requests: 1 });
    expect(seen[0].body.events![0]).toMatchObject({ event_id: 'mine_1', recorded_timestamp: '2026-01-02T03:04:05.000Z' });
  });
});

describe('retries', () => {
  it('sends the same batch again after 503 and 429, honouring Retry-After, and after a dropped connection', async () => {
    let n = 0;
    const { url, seen } = await scripted((s, req, res) => {
      n++;
      if (n === 1) return json(res, 503, { error: { code: 'unavailable', message: 'x' } }, { 'retry-after': '1' });
      if (n === 2) return req.socket.destroy();
      if (n === 3) return json(res, 429, { error: { code: 'backpressure', message: 'x' } });
      accept(s, req, res);
    });
    const m = meter(url);
    for (let i = 0; i < 5; i++) await m.track(call(i));
    const result = await m.flush();
    expect(result).toMatchObject({ accepted: 5, failed: 0, retries: 3, requests: 4 });
    expect(seen).toHaveLength(4);
    expect(seen[1].at - seen[0].at).toBeGreaterThanOrEqual(1_000);
    expect(seen[1].at - seen[0].at).toBeLessThan(1_400);
    for (const s of seen) expect(s.body.events!.map((e) => e.event_id)).toEqual(seen[0].body.events!.map((e) => e.event_id));
  });

  it('gives a batch up after maxElapsedMs with a DeliveryError carrying its events', async () => {
    const { url } = await scripted((_s, _req, res) => json(res, 503, { error: { code: 'unavailable', message: 'x' } }));
    const errors: AgentMeterError[] = [];
    const m = meter(url, { retry: { initialDelayMs: 10, maxDelayMs: 20, maxElapsedMs: 200 }, onError: (e) => errors.push(e) });
    await m.track(call(1));
    expect(await m.flush()).toMatchObject({ failed: 1, accepted: 0 });
    expect(errors[0]).toBeInstanceOf(DeliveryError);
    expect((errors[0] as DeliveryError).events).toHaveLength(1);
  });
});

describe('typed errors', () => {
  it('400 and 401 fail the batch without retrying; rejected events in a 202 come with their problems', async () => {
    let n = 0;
    const { url, seen } = await scripted((s, _req, res) => {
      n++;
      if (n === 1) return json(res, 400, { error: { code: 'validation_failed', message: 'bad', details: [{ path: '$[0].data.input_tokens', message: 'must be >= 0' }] } });
      if (n === 2) return json(res, 401, { error: { code: 'unauthorized', message: 'a valid ingest token is required' } });
      const events = s.body.events!;
      json(res, 202, { accepted: events.length - 1, duplicates: [], rejected: [{ index: 1, event_id: events[1].event_id, errors: [{ field: 'input_tokens', message: 'Too small: expected number to be >=0' }] }] });
    });
    const errors: AgentMeterError[] = [];
    const m = meter(url, { batchSize: 2, onError: (e) => errors.push(e) });
    for (let i = 0; i < 6; i++) await m.track(call(i));
    const result = await m.flush();
    expect(seen).toHaveLength(3);
    expect(result).toMatchObject({ accepted: 1, rejected: 1, failed: 4, retries: 0 });
    const bad = errors.find((e) => e instanceof BadRequestError) as BadRequestError;
    expect(bad.problems).toEqual([{ index: -1, path: '$[0].data.input_tokens', message: 'must be >= 0' }]);
    expect(bad.events).toHaveLength(2);
    expect(errors.find((e) => e instanceof UnauthorizedError)?.message).toMatch(/ingest token/);
    const invalid = errors.find((e) => e instanceof InvalidEventsError) as InvalidEventsError;
    expect(invalid.problems).toEqual([{ index: 1, eventId: seen[2].body.events![1].event_id, path: 'input_tokens', message: expect.any(String) }]);
    expect(invalid.events).toEqual([seen[2].body.events![1]]);
  });

  it('a 400 naming every event as invalid (the API took none) rejects them with their problems, as a 202 would', async () => {
    // The API's body when no event of a request is valid (api/ingest/routes.ts refuseIfNothingTaken).
    const { url } = await scripted((s, _req, res) => {
      const events = s.body.events!;
      json(res, 400, {
        error: {
          code: 'validation_failed',
          message: 'no event was accepted; event 0: input_tokens: Too small: expected number to be >=0',
          details: [
            { index: 0, event_id: events[0].event_id, errors: [{ field: 'input_tokens', message: 'Too small: expected number to be >=0' }] },
            { index: 1, event_id: events[1].event_id, errors: [{ field: 'output_tokens', message: 'Too small: expected number to be >=0' }] },
          ],
        },
      });
    });
    const errors: AgentMeterError[] = [];
    const m = meter(url, { onError: (e) => errors.push(e) });
    const first = await m.track({ event_type: 'mcp.tool_invoked', api_key: 'sk_live_test_key', tool_name: 'search', input_tokens: -1 });
    const second = await m.track({ event_type: 'mcp.tool_invoked', api_key: 'sk_live_test_key', tool_name: 'search', output_tokens: -5 });
    expect(await m.flush()).toMatchObject({ rejected: 2, failed: 0, retries: 0 });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(InvalidEventsError);
    const invalid = errors[0] as InvalidEventsError;
    expect(invalid.problems).toEqual([
      { index: 0, eventId: first, path: 'input_tokens', message: 'Too small: expected number to be >=0' },
      { index: 1, eventId: second, path: 'output_tokens', message: 'Too small: expected number to be >=0' },
    ]);
    expect(invalid.events.map((e) => (e as { event_id: string }).event_id)).toEqual([first, second]);
    expect(invalid.message).toMatch(/2 event\(s\) rejected: .*input_tokens: Too small/);
  });

  it('keep their events readable but out of what loggers print (the events carry API keys)', async () => {
    const { url } = await scripted((_s, _req, res) => json(res, 401, { error: { code: 'unauthorized', message: 'a valid ingest token is required' } }));
    const errors: AgentMeterError[] = [];
    const m = meter(url, { onError: (e) => errors.push(e) });
    await m.track(call(1));
    await m.flush();
    const event = { event_type: 'mcp.tool_invoked', api_key: 'sk_live_test_key' };
    const all: (AgentMeterError & { events: readonly object[] })[] = [
      errors[0] as UnauthorizedError,
      new DeliveryError('x', [event]),
      new BadRequestError('invalid_body', 'x', [], [event]),
      new InvalidEventsError([], [event]),
      new ApiResponseError(418, 'teapot', 'x', [event]),
    ];
    expect(errors[0]).toBeInstanceOf(UnauthorizedError);
    for (const error of all) {
      expect(error.events).toHaveLength(1);
      expect((error.events[0] as { api_key: string }).api_key).toBe('sk_live_test_key');
      expect(Object.keys(error)).not.toContain('events');
      expect(JSON.stringify(error)).not.toContain('sk_live');
      expect(JSON.stringify({ ...error })).not.toContain('sk_live');
      expect(error).toBeInstanceOf(AgentMeterError);
    }
  });
});

describe('a full buffer', () => {
  it('drop-oldest drops the oldest buffered events, counts them and calls back', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const { url, seen } = await scripted((s, req, res) => void held.then(() => accept(s, req, res)));
    const dropped: [string, number][] = [];
    const m = meter(url, { batchSize: 5, maxConcurrentRequests: 1, maxBufferedEvents: 10, whenFull: 'drop-oldest', onDrop: (e, n) => dropped.push([e.event_id, n]) });
    const tracked: string[] = [];
    for (let i = 0; i < 14; i++) tracked.push(await m.track(call(i)));
    // 5 in flight (held by the server), 5 buffered; 4 more pushed the 4 oldest buffered ones out.
    expect(dropped).toEqual(tracked.slice(5, 9).map((id, i) => [id, i + 1]));
    expect(m.stats()).toMatchObject({ dropped: 4, buffered: 10 });
    release();
    await m.flush();
    expect(ids(seen)).toEqual([...tracked.slice(0, 5), ...tracked.slice(9)]);
  });

  it('block makes track() wait for room, and loses nothing', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const { url, seen } = await scripted((s, req, res) => void held.then(() => accept(s, req, res)));
    const m = meter(url, { batchSize: 5, maxConcurrentRequests: 1, maxBufferedEvents: 10, whenFull: 'block' });
    for (let i = 0; i < 10; i++) await m.track(call(i));
    let admitted = false;
    const waiting = m.track(call(10)).then(() => (admitted = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(admitted).toBe(false);
    release();
    await waiting;
    await m.flush();
    expect(ids(seen)).toHaveLength(11);
    expect(m.stats()).toMatchObject({ dropped: 0, accepted: 11 });
  });

  it('block parks at most maxBufferedEvents waiting track() calls: past them the new event is dropped, counted, passed to onDrop, and its track() rejects', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const { url, seen } = await scripted((s, req, res) => void held.then(() => accept(s, req, res)));
    const dropped: [number, number][] = [];
    const m = meter(url, { batchSize: 5, maxConcurrentRequests: 1, maxBufferedEvents: 10, onDrop: (e, n) => dropped.push([(e as { input_tokens?: number }).input_tokens!, n]) });
    for (let i = 0; i < 10; i++) await m.track(call(i));
    // A caller that never awaits track() (the proxy, the MCP wrapper) while the API does not answer.
    const outcomes = Array.from({ length: 30 }, (_, i) =>
      m.track(call(10 + i)).then(
        () => 'taken',
        (err: AgentMeterError) => err.code,
      ),
    );
    await new Promise((r) => setTimeout(r, 50));
    // 10 held (5 in flight, 5 buffered) and 10 waiting; the 20 after them dropped.
    expect(m.stats()).toMatchObject({ tracked: 40, buffered: 20, dropped: 20 });
    expect(dropped).toEqual(Array.from({ length: 20 }, (_, i) => [20 + i, i + 1]));
    release();
    expect(await Promise.all(outcomes)).toEqual([...Array(10).fill('taken'), ...Array(20).fill('buffer_full')]);
    await m.flush();
    expect(seen.flatMap((s) => s.body.events!).map((e) => e.input_tokens)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(m.stats()).toMatchObject({ buffered: 0, dropped: 20, accepted: 20, failed: 0 });
  });
});

const exitChild = fileURLToPath(new URL('./testing/exit-child.ts', import.meta.url));

/** Runs testing/exit-child.ts; SIGTERM once it is ready (modes wait and stop). */
function runChild(url: string, mode: string, closeTimeoutMs?: number) {
  return new Promise<{ code: number | null; signal: string | null; out: string; ms: number }>((resolve) => {
    const started = Date.now();
    const proc = spawn(process.execPath, ['--import', 'tsx', exitChild, url, mode, ...(closeTimeoutMs ? [String(closeTimeoutMs)] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (d.toString().includes('ready')) proc.kill('SIGTERM');
    });
    proc.on('exit', (code, signal) => resolve({ code, signal, out, ms: Date.now() - started }));
  });
}

describe('close', () => {
  it('flushes, runs close hooks first, and refuses track() afterwards', async () => {
    const { url, seen } = await scripted(accept);
    const m = meter(url, { flushIntervalMs: 60_000 });
    m.onClose(() => void m.track(call(99)));
    await m.track(call(1));
    await m.close();
    expect(ids(seen)).toHaveLength(2);
    await expect(m.track(call(2))).rejects.toMatchObject({ code: 'closed' });
  });

  it('flushes when a Node process runs out of work, and on SIGTERM before it exits', async () => {
    const { url, seen } = await scripted(accept);
    expect(await runChild(url, 'idle')).toMatchObject({ code: 0, signal: null });
    expect(seen.flatMap((s) => s.body.events!).map((e) => e.tool_name)).toEqual(['idle', 'idle', 'idle']);
    expect(await runChild(url, 'wait')).toMatchObject({ code: null, signal: 'SIGTERM' });
    expect(seen.flatMap((s) => s.body.events!).filter((e) => e.tool_name === 'wait')).toHaveLength(3);
  });

  it('keeps the process alive through a retry met while flushing at exit (beforeExit, SIGTERM)', async () => {
    // The first request of each child answers 503: the flush backs off, then sends again.
    const refusedOnce = new Set<string>();
    const { url, seen } = await scripted((s, req, res) => {
      const mode = s.body.events![0].tool_name as string;
      if (refusedOnce.has(mode)) return accept(s, req, res);
      refusedOnce.add(mode);
      json(res, 503, { error: { code: 'unavailable', message: 'restarting' } });
    });
    const requestsOf = (mode: string) => seen.filter((s) => s.body.events![0].tool_name === mode).map((s) => s.body.events!.length);
    for (const mode of ['idle', 'stop']) {
      const run = await runChild(url, mode);
      expect(run, mode).toMatchObject({ code: 0, signal: null, out: mode === 'stop' ? 'ready\n' : '' });
      expect(requestsOf(mode), mode).toEqual([3, 3]);
    }
  });

  it('gives up what is still unsent at the close timeout when flushing at exit, reported, and the process ends', async () => {
    const { url, seen } = await scripted((_s, _req, res) => json(res, 503, { error: { code: 'unavailable', message: 'restarting' } }));
    const idle = await runChild(url, 'idle', 600);
    expect(idle).toMatchObject({ code: 0, signal: null });
    expect(idle.out).toMatch(/^error delivery_failed 3 event\(s\) still unsent when the process was exiting \(closeTimeoutMs\); last: ingest answered 503 unavailable( \(the retry in flight was cut\))?\n$/);
    expect(idle.ms).toBeGreaterThanOrEqual(600);
    const stop = await runChild(url, 'stop', 600);
    expect(stop).toMatchObject({ code: 0, signal: null });
    expect(stop.out).toMatch(/^ready\nerror delivery_failed 3 event\(s\) still unsent when close\(\) timed out; last: ingest answered 503 unavailable( \(the retry in flight was cut\))?\n$/);
    expect(seen.length).toBeGreaterThanOrEqual(4);
  });

  it('close() gives up at closeTimeoutMs what is in flight, buffered or waiting, as DeliveryErrors holding the events', async () => {
    const { url } = await scripted((_s, _req, res) => json(res, 503, { error: { code: 'unavailable', message: 'x' } }));
    const errors: AgentMeterError[] = [];
    const m = meter(url, { batchSize: 2, maxConcurrentRequests: 1, maxBufferedEvents: 4, closeTimeoutMs: 300, onError: (e) => errors.push(e) });
    for (let i = 0; i < 4; i++) await m.track(call(i));
    const waiting = m.track(call(4));
    const started = Date.now();
    await m.close();
    await waiting;
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(m.stats()).toMatchObject({ failed: 5, accepted: 0, buffered: 0 });
    expect(errors.every((e) => e instanceof DeliveryError && /still unsent when close\(\) timed out/.test(e.message))).toBe(true);
    expect(errors.flatMap((e) => (e as DeliveryError).events)).toHaveLength(5);
  });
});

describe('authorize', () => {
  it('caches answers briefly, refreshes them ahead of expiry, and shares calls in flight', async () => {
    let paused = false;
    const { url, seen } = await scripted((_s, _req, res) => json(res, 200, paused ? { allowed: false, code: 'paused', reason: 'cap' } : { allowed: true }));
    const m = meter(url, { authorize: { cacheTtlMs: 400 } });
    const ask = () => m.authorize({ apiKey: 'sk_live_test_key', sessionId: 's1' });
    const [a, b] = await Promise.all([ask(), ask()]);
    expect([a.source, b.source, seen.length]).toEqual(['api', 'api', 1]);
    expect(seen[0]).toMatchObject({ path: '/v1/authorize', body: { api_key: 'sk_live_test_key', session_id: 's1' } });
    expect((await ask()).source).toBe('cache');
    expect(seen).toHaveLength(1);
    paused = true;
    await new Promise((r) => setTimeout(r, 250));
    // Past half the TTL: the cached answer is served once more while it refreshes.
    expect(await ask()).toMatchObject({ allowed: true, source: 'cache' });
    await until(() => seen.length === 2, 1_000);
    // The refreshed answer is cached when its reply arrives, a moment after the server saw the request.
    let next = await ask();
    for (const deadline = Date.now() + 150; next.allowed && Date.now() < deadline; next = await ask()) await new Promise((r) => setTimeout(r, 5));
    expect(next).toMatchObject({ allowed: false, code: 'paused', source: 'cache' });
    expect(seen).toHaveLength(2);
  });

  it('fails open or closed when the API cannot answer, and throws on a refused token', async () => {
    const { url, server } = await scripted((_s, _req, res) => json(res, 401, { error: { code: 'unauthorized', message: 'no' } }));
    await expect(meter(url).authorize({ clientId: 'cli_x' })).rejects.toBeInstanceOf(UnauthorizedError);
    await new Promise((r) => server.close(r));
    expect(await meter(url).authorize({ apiKey: 'sk_live_test_key' })).toMatchObject({ allowed: true, code: 'fail_open', source: 'fail-open' });
    expect(await meter(url, { authorize: { failMode: 'closed' } }).authorize({ apiKey: 'sk_live_test_key' })).toMatchObject({
      allowed: false,
      code: 'unavailable',
      source: 'fail-closed',
    });
  });

  it('takes a 408, or a 200 that is not a decision, as the API not answering: the fail mode decides', async () => {
    const answers: [number, string, string][] = [
      [408, 'text/plain', 'Request Timeout'],
      [200, 'text/html', '<html>gateway</html>'],
      [200, 'application/json', '{"allowed":'],
      [200, 'application/json', '{"status":"ok"}'],
    ];
    let n = 0;
    const { url } = await scripted((_s, _req, res) => {
      const [status, type, body] = answers[n++ % answers.length];
      res.writeHead(status, { 'content-type': type }).end(body);
    });
    const open = meter(url);
    for (const [status] of answers) expect(await open.authorize({ apiKey: 'sk_live_test_key' }), String(status)).toMatchObject({ allowed: true, code: 'fail_open', source: 'fail-open' });
    const closed = meter(url, { authorize: { failMode: 'closed' } });
    for (const [status] of answers) expect(await closed.authorize({ apiKey: 'sk_live_test_key' }), String(status)).toMatchObject({ allowed: false, code: 'unavailable', source: 'fail-closed' });
  });
});

async function until(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
