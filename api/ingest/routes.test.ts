import { encode } from '@msgpack/msgpack';
import { getRequestListener } from '@hono/node-server';
import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from '../../pipeline/redis.js';
import { TenantTokens } from '../../store/tenant-tokens.js';
import { eventsOfEntries, MAX_BLOCK_EVENTS } from '../../pipeline/blocks.js';
import type { Config } from '../../pipeline/config.js';
import { STREAMS } from '../../store/streams.js';
import { partitionOf, partitionedKey } from '../../pipeline/keys.js';
import { Metrics } from '../../pipeline/metrics.js';
import { connectRedis } from '../../pipeline/redis.js';
import type { UsageEvent } from '../../domain/events.js';
import { hashApiKey } from '../../store/credentials.js';
import { createTenant, type CreatedTenant } from '../../store/tenants.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { TcpProxy } from '../../test/support/tcp-proxy.js';
import { connectPostgres } from '../../pipeline/postgres.js';
import type { IngestReply } from './routes.js';
import { createIngestRoutes } from './routes.js';
import { ingestPartitionKey } from './writer.js';
import { createApp } from '../server.js';

const API_KEY = 'sk_live_ABCDEFGHIJKLMNOPQRSTUVWXyz012345';
const silent = pino({ level: 'silent' });

let iso: Isolated;
let tenant: CreatedTenant;
let tokens: TenantTokens;
let worlds = 0;

beforeAll(async () => {
  iso = await isolated('ingest');
  tenant = await createTenant(iso.sql, 'Acme MCP');
  tokens = new TenantTokens(iso.sql);
});

afterAll(async () => {
  await iso?.cleanup();
});

/** An ingest app with a key prefix of its own (under the isolated one), so each test sees only its own streams. */
function world(overrides: Partial<Config> = {}, redis?: Redis, tenantTokens: TenantTokens = tokens) {
  const config: Config = { ...iso.config, REDIS_PREFIX: `${iso.config.REDIS_PREFIX}w${++worlds}:`, ...overrides };
  const metrics = new Metrics('ingest-test');
  const app = createIngestRoutes({ config, redis: redis ?? iso.redis, tokens: tenantTokens, metrics, log: silent });
  const key = (partition = 0) => partitionedKey(config.REDIS_PREFIX, STREAMS.ingested, partition);
  /** The events written, one element per event (an entry may hold a block of them). */
  const entries = async (partition = 0): Promise<{ fields: string[]; bytes: Buffer; event: UsageEvent }[]> => {
    const rows = (await iso.redis.xrangeBuffer(key(partition), '-', '+')) as [Buffer, Buffer[]][];
    return rows.flatMap(([id, fields]) =>
      eventsOfEntries<UsageEvent>([[id, fields]]).map(({ payload }) => ({
        fields: fields.filter((_, i) => i % 2 === 0).map(String),
        bytes: Buffer.concat(fields),
        event: payload,
      })),
    );
  };
  return {
    app,
    config,
    metrics,
    key,
    post(body: unknown, options: { token?: string | null; type?: string; raw?: string | Uint8Array | ReadableStream<Uint8Array>; headers?: Record<string, string> } = {}) {
      const headers: Record<string, string> = { 'content-type': options.type ?? 'application/json', ...options.headers };
      const token = options.token === undefined ? tenant.ingestToken : options.token;
      if (token !== null) headers.authorization = `Bearer ${token}`;
      const payload = options.raw ?? (headers['content-type'].includes('msgpack') ? encode(body) : JSON.stringify(body));
      return app.request('/v1/events', { method: 'POST', headers, body: payload });
    },
    /**
     * Posts until the gate lets the request in (at most a second): a closed gate answers within
     * 10 ms, from its last read if the read under way is slower, so the first request after the
     * queue drained may still be refused on a busy machine.
     */
    async postOnceOpen(body: unknown): Promise<Response> {
      for (let attempt = 0; ; attempt++) {
        const res = await this.post(body);
        if (res.status !== 429 || attempt >= 40) return res;
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    entries,
    /** Events written (not entries). */
    length: async (partition = 0) => (await entries(partition)).length,
  };
}

function toolEvent(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    event_id: `evt_${Math.random().toString(36).slice(2)}`,
    event_type: 'mcp.tool_invoked',
    api_key: API_KEY,
    agent_id: 'agent_12345',
    agent_type: 'CLAUDE',
    session_id: 'sess_aaaaaa',
    tool_name: 'transform_schema',
    mcp_server_id: 'mcp_33333',
    execution_duration_ms: 847,
    execution_status: 'SUCCESS',
    input_tokens: 2400,
    output_tokens: 150,
    error_type: null,
    error_message: null,
    retry_count: 1,
    is_parallel_call: false,
    parent_tool_invocation_id: 'inv_parent',
    recorded_timestamp: new Date(Date.now() - 60_000).toISOString(),
    ...overrides,
  };
}

async function reply(res: Response): Promise<IngestReply> {
  return (await res.json()) as IngestReply;
}

describe('POST /v1/events: accepted events', () => {
  it('writes one entry per event with a single field d holding the normalized event, the API key replaced by its hash', async () => {
    const w = world();
    const event = toolEvent({ event_id: 'evt_one' });
    const before = Date.now();
    const res = await w.post(event);
    const after = Date.now();
    expect(res.status).toBe(202);
    expect(await reply(res)).toEqual({ accepted: 1, duplicates: [], rejected: [] });

    const [entry, ...rest] = await w.entries();
    expect(rest).toHaveLength(0);
    expect(entry.fields).toEqual(['d']);
    expect(entry.bytes.includes(Buffer.from(API_KEY))).toBe(false);
    expect(entry.bytes.includes(Buffer.from(API_KEY.slice(8)))).toBe(false);
    const { ingestNonce, ingestedAt, ...rest2 } = entry.event;
    expect(ingestNonce).toMatch(/^[0-9a-f]{16}$/);
    expect(ingestedAt).toBeGreaterThanOrEqual(before);
    expect(ingestedAt).toBeLessThanOrEqual(after);
    expect(rest2).toEqual({
      tenantId: tenant.tenantId,
      eventId: 'evt_one',
      eventType: 'mcp.tool_invoked',
      credential: { kind: 'api_key', keyHash: hashApiKey(API_KEY) },
      recordedAt: Date.parse(event.recorded_timestamp as string),
      reportedAgentId: 'agent_12345',
      sessionId: 'sess_aaaaaa',
      toolName: 'transform_schema',
      mcpServerId: 'mcp_33333',
      durationMs: 847,
      status: 'SUCCESS',
      inputTokens: 2400,
      outputTokens: 150,
      retryCount: 1,
      isParallel: false,
      parentInvocationId: 'inv_parent',
    });
    expect(typeof entry.event.inputTokens).toBe('number');
    expect(await w.metrics.registry.getSingleMetricAsString('am_events_out_total')).toMatch(/stream="events:ingested"[^\n]* 1/);
  });

  it('takes an array, a { events } wrapper and MessagePack, with a fresh nonce per event', async () => {
    const w = world();
    const array = await w.post([toolEvent(), toolEvent()]);
    expect(await reply(array)).toMatchObject({ accepted: 2 });
    const wrapped = await w.post({ events: [toolEvent(), toolEvent(), toolEvent()] });
    expect(await reply(wrapped)).toMatchObject({ accepted: 3 });
    const packed = await w.post(
      { events: [toolEvent({ recorded_timestamp: new Date(Date.now() - 1000), input_tokens: 7 })] },
      { type: 'application/msgpack' },
    );
    expect(packed.status).toBe(202);
    expect(await reply(packed)).toEqual({ accepted: 1, duplicates: [], rejected: [] });

    const entries = await w.entries();
    expect(entries).toHaveLength(6);
    expect(new Set(entries.map((e) => e.event.ingestNonce)).size).toBe(6);
    expect(entries[5].event.inputTokens).toBe(7);
    for (const e of entries) expect(e.bytes.includes(Buffer.from(API_KEY))).toBe(false);
  });

  it('normalizes client_id credentials, api.request and session control events', async () => {
    const w = world();
    const recorded = new Date(Date.now() - 5000).toISOString();
    const res = await w.post([
      { event_id: 's1', event_type: 'session.completed', client_id: 'cli_abc', session_id: 'sess_1', recorded_timestamp: recorded, reason: 'done' },
      { event_id: 'a1', event_type: 'api.request', api_key: API_KEY, tool_name: 'POST /v1/search', http_status: 429, execution_status: 'RATE_LIMITED', recorded_timestamp: recorded },
      { event_id: 't1', event_type: 'agent.tool_invoked', client_id: 'cli_abc', tool_name: 'search', error_type: 'timeout', execution_status: 'TIMEOUT', recorded_timestamp: recorded },
    ]);
    expect(await reply(res)).toEqual({ accepted: 3, duplicates: [], rejected: [] });
    const events = (await w.entries()).map((e) => e.event);
    expect(events[0]).toMatchObject({
      eventType: 'session.completed',
      credential: { kind: 'client_id', clientId: 'cli_abc' },
      sessionId: 'sess_1',
      durationMs: 0,
      inputTokens: 0,
      outputTokens: 0,
      retryCount: 0,
    });
    expect(events[0].toolName).toBeUndefined();
    expect(events[1]).toMatchObject({ eventType: 'api.request', toolName: 'POST /v1/search', httpStatus: 429, status: 'RATE_LIMITED', durationMs: 0 });
    expect(events[2]).toMatchObject({ eventType: 'agent.tool_invoked', status: 'TIMEOUT', errorType: 'timeout', isParallel: false });
  });

  it('spreads events over partitions by tenant and credential', async () => {
    const w = world({ PARTITIONS: 4 });
    const keys = Array.from({ length: 12 }, (_, i) => `sk_live_partition_key_${i}`);
    const res = await w.post(keys.map((api_key) => toolEvent({ api_key })));
    expect(await reply(res)).toMatchObject({ accepted: 12 });
    const seen = new Map<number, string[]>();
    for (let p = 0; p < 4; p++) seen.set(p, (await w.entries(p)).map((e) => (e.event.credential as { keyHash: string }).keyHash));
    for (const key of keys) {
      const hash = hashApiKey(key);
      expect(seen.get(partitionOf(`${tenant.tenantId}/${hash}`, 4))).toContain(hash);
    }
    expect([...seen.values()].filter((hashes) => hashes.length > 0).length).toBeGreaterThan(1);
  });
});

describe('POST /v1/events: rejected and duplicate events', () => {
  it('lists every field error of each rejected event by index and event_id, and accepts the rest', async () => {
    const w = world();
    const res = await w.post([
      toolEvent({ event_id: 'good' }),
      { event_id: 'bad1', event_type: 'mcp.tool_invoked', recorded_timestamp: 'yesterday', input_tokens: -3, imput_tokens: 5 },
      toolEvent({ event_id: 'bad2', execution_status: 'success', client_id: 'cli_x' }),
      42,
      toolEvent({ event_id: 'bad3', event_type: 'mcp.tool_called' }),
    ]);
    expect(res.status).toBe(202);
    const body = await reply(res);
    expect(body.accepted).toBe(1);
    expect(body.duplicates).toEqual([]);
    expect(body.rejected.map((r) => [r.index, r.event_id])).toEqual([
      [1, 'bad1'],
      [2, 'bad2'],
      [3, undefined],
      [4, 'bad3'],
    ]);
    const fields = (i: number) => body.rejected[i].errors.map((e) => e.field).sort();
    expect(fields(0)).toEqual(['api_key', 'imput_tokens', 'input_tokens', 'recorded_timestamp', 'tool_name']);
    expect(body.rejected[0].errors.find((e) => e.field === 'imput_tokens')?.message).toBe('unknown field');
    expect(fields(1)).toEqual(['api_key', 'execution_status']);
    expect(body.rejected[1].errors.find((e) => e.field === 'api_key')?.message).toMatch(/not both/);
    expect(fields(2)).toEqual(['']);
    expect(fields(3)).toEqual(['event_type']);
    for (const r of body.rejected) for (const e of r.errors) expect(e.message.length).toBeGreaterThan(0);
    expect((await w.entries()).map((e) => e.event.eventId)).toEqual(['good']);
  });

  it('accepts the first valid event of an event_id and reports the later ones as duplicates', async () => {
    const w = world();
    const res = await w.post([
      toolEvent({ event_id: 'A', input_tokens: 1 }),
      toolEvent({ event_id: 'B' }),
      toolEvent({ event_id: 'A', input_tokens: 2 }),
      toolEvent({ event_id: 'C', execution_status: 'nope' }),
      toolEvent({ event_id: 'C' }),
      toolEvent({ event_id: 'A', input_tokens: 3 }),
    ]);
    const body = await reply(res);
    expect(body.accepted).toBe(3);
    expect(body.duplicates).toEqual([
      { index: 2, event_id: 'A' },
      { index: 5, event_id: 'A' },
    ]);
    expect(body.rejected.map((r) => r.index)).toEqual([3]);
    const events = (await w.entries()).map((e) => [e.event.eventId, e.event.inputTokens]);
    expect(events).toEqual([
      ['A', 1],
      ['B', 2400],
      ['C', 2400],
    ]);
  });

  it('rejects recorded timestamps too far in the future or older than the window, with the reason', async () => {
    const w = world();
    const now = Date.now();
    const at = (ms: number) => new Date(now + ms).toISOString();
    const res = await w.post([
      toolEvent({ event_id: 'future-ok', recorded_timestamp: at(4 * 60_000) }),
      toolEvent({ event_id: 'future-bad', recorded_timestamp: at(6 * 60_000) }),
      toolEvent({ event_id: 'old-ok', recorded_timestamp: at(-34 * 86_400_000) }),
      toolEvent({ event_id: 'old-bad', recorded_timestamp: at(-36 * 86_400_000) }),
      toolEvent({ event_id: 'old-and-broken', recorded_timestamp: at(-40 * 86_400_000), retry_count: 'x' }),
      toolEvent({ event_id: 'offset', recorded_timestamp: '2020-01-01T00:00:00+02:00' }),
    ]);
    const body = await reply(res);
    expect(body.accepted).toBe(2);
    const byId = new Map(body.rejected.map((r) => [r.event_id, r.errors]));
    expect(byId.get('future-bad')).toEqual([{ field: 'recorded_timestamp', message: expect.stringMatching(/ahead of the server clock; at most 300 s/) }]);
    expect(byId.get('old-bad')).toEqual([{ field: 'recorded_timestamp', message: expect.stringMatching(/older than 35 days/) }]);
    expect(byId.get('old-and-broken')?.map((e) => e.field).sort()).toEqual(['recorded_timestamp', 'retry_count']);
    expect(byId.get('offset')?.[0].message).toMatch(/older than 35 days/);
  });

  it('takes the age window and future allowance from the configuration', async () => {
    const w = world({ MAX_EVENT_AGE_DAYS: 2, MAX_EVENT_FUTURE_SECONDS: 10 });
    const now = Date.now();
    const res = await w.post([
      toolEvent({ event_id: 'a', recorded_timestamp: new Date(now - 1 * 86_400_000).toISOString() }),
      toolEvent({ event_id: 'b', recorded_timestamp: new Date(now - 3 * 86_400_000).toISOString() }),
      toolEvent({ event_id: 'c', recorded_timestamp: new Date(now + 60_000).toISOString() }),
    ]);
    const body = await reply(res);
    expect(body.accepted).toBe(1);
    expect(body.rejected.map((r) => [r.event_id, r.errors[0].message])).toEqual([
      ['b', expect.stringMatching(/older than 2 days/)],
      ['c', expect.stringMatching(/at most 10 s in the future/)],
    ]);
  });
});

describe('POST /v1/events: refused requests', () => {
  it('answers 400 for a malformed body and writes nothing', async () => {
    const w = world({ INGEST_MAX_BATCH: 3 });
    const cases: [Response, string][] = [
      [await w.post(null, { raw: '{"event_id": ' }), 'invalid_body'],
      [await w.post(null, { raw: new Uint8Array([0xc1]), type: 'application/msgpack' }), 'invalid_body'],
      [await w.post(null, { raw: new Uint8Array([0x91, 0x01, 0x02]), type: 'application/msgpack' }), 'invalid_body'],
      [await w.post(null, { raw: '' }), 'invalid_body'],
      [await w.post(17), 'invalid_body'],
      [await w.post('an event'), 'invalid_body'],
      [await w.post({ events: { event_id: 'x' } }), 'invalid_body'],
      [await w.post({ events: [toolEvent()], extra: 1 }), 'invalid_body'],
      [await w.post([]), 'empty_batch'],
      [await w.post([toolEvent(), toolEvent(), toolEvent(), toolEvent()]), 'batch_too_large'],
    ];
    for (const [res, code] of cases) {
      expect(res.status).toBe(400);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe(code);
      expect(body.error.message.length).toBeGreaterThan(0);
    }
    expect(await w.length()).toBe(0);
    const ok = await w.post([toolEvent(), toolEvent(), toolEvent()]);
    expect(await reply(ok)).toMatchObject({ accepted: 3 });
  });

  it('refuses a content type it cannot read with 415', async () => {
    const w = world();
    const res = await w.post(null, { raw: 'event_id=1', type: 'application/x-www-form-urlencoded' });
    expect(res.status).toBe(415);
    expect(await w.length()).toBe(0);
  });

  it('refuses a Content-Encoding other than identity with 415, naming what is supported (not "not valid JSON")', async () => {
    const w = world();
    const res = await w.post(null, { raw: new Uint8Array(gzipSync(JSON.stringify([toolEvent()]))), headers: { 'content-encoding': 'gzip' } });
    expect(res.status).toBe(415);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error).toEqual({ code: 'unsupported_content_encoding', message: expect.stringMatching(/content-encoding gzip is not accepted.*identity is the only encoding supported/) });
    expect(await w.length()).toBe(0);
    expect((await w.post([toolEvent()], { headers: { 'content-encoding': 'identity' } })).status).toBe(202);
  });

  it('reads JSON as UTF-8 only: another declared charset is refused with 415, bytes that are not UTF-8 with 400, never stored as U+FFFD', async () => {
    const w = world();
    const cafe = toolEvent({ event_type: 'api.request', tool_name: 'GET /café', mcp_server_id: undefined, agent_id: undefined, http_status: 200 });
    const latin1 = new Uint8Array(Buffer.from(JSON.stringify(cafe), 'latin1'));
    const declared = await w.post(null, { raw: latin1, type: 'application/json; charset=iso-8859-1' });
    expect(declared.status).toBe(415);
    expect(((await declared.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: 'unsupported_charset', message: expect.stringMatching(/iso-8859-1.*UTF-8/) });
    const undeclared = await w.post(null, { raw: latin1 });
    expect(undeclared.status).toBe(400);
    expect(((await undeclared.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: 'invalid_body', message: expect.stringMatching(/not valid UTF-8/) });
    // Two keys differing only in invalid bytes would have hashed alike (both decoded to U+FFFD).
    const [before, after] = JSON.stringify(toolEvent({ api_key: 'sk_live_ABCDEFGHIJ@@' })).split('@@');
    for (const invalid of [[0xff], [0xfe, 0xff]]) {
      const raw = new Uint8Array(Buffer.concat([Buffer.from(before), Buffer.from(invalid), Buffer.from(after)]));
      expect((await w.post(null, { raw })).status).toBe(400);
    }
    expect(await w.length()).toBe(0);
    // UTF-8, declared or not, is taken as sent.
    expect((await w.post(cafe, { type: 'application/json; charset=UTF-8' })).status).toBe(202);
    expect((await w.post(toolEvent(), { type: 'application/json; charset="utf-8"' })).status).toBe(202);
    expect((await w.entries()).map((e) => e.event.toolName)).toEqual(['GET /café', 'transform_schema']);
  });

  it('answers 401 without a valid ingest token', async () => {
    const w = world();
    for (const token of [null, 'amt_AAAAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB', 'garbage', tenant.adminToken]) {
      const res = await w.post(toolEvent(), { token });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
    }
    expect(await w.length()).toBe(0);
  });

  it('answers 413 over the body limit, by content-length or while streaming a body without one', async () => {
    const w = world({ INGEST_MAX_BODY_BYTES: 2048 });
    const big = JSON.stringify(Array.from({ length: 20 }, () => toolEvent()));
    expect(big.length).toBeGreaterThan(2048);
    const declared = await w.post(null, { raw: big });
    expect(declared.status).toBe(413);
    expect(((await declared.json()) as { error: { code: string } }).error.code).toBe('body_too_large');

    const bytes = new TextEncoder().encode(big);
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 500) controller.enqueue(bytes.slice(i, i + 500));
        controller.close();
      },
    });
    const chunked = await w.app.request('/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    expect(chunked.status).toBe(413);
    expect(await w.length()).toBe(0);

    // A declared length over the limit is refused before a byte of the body is read.
    let pulled = false;
    const unread = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled = true;
        controller.enqueue(new TextEncoder().encode('[]'));
        controller.close();
      },
    }, { highWaterMark: 0 });
    const early = await w.app.request('/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json', 'content-length': '4096' },
      body: unread,
      duplex: 'half',
    } as RequestInit);
    expect(early.status).toBe(413);
    expect(pulled).toBe(false);

    const small = await w.post([toolEvent()]);
    expect(small.status).toBe(202);
  });

  it('answers 429 with Retry-After while the streams before the ledger hold more than INGEST_MAX_QUEUE_EVENTS, and writes nothing', async () => {
    const w = world({ INGEST_MAX_QUEUE_EVENTS: 4 });
    // Five requests of one event: five entries (a request's events in one partition are one entry, a block), one over the mark.
    for (let i = 0; i < 5; i++) expect(await reply(await w.post([toolEvent()]))).toMatchObject({ accepted: 1 });
    const refused = await w.post([toolEvent()]);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    // And in ms, when the queue is expected to be taken again (nothing drained yet: 250 ms).
    expect(refused.headers.get('retry-after-ms')).toBe('250');
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('backpressure');
    expect(await w.length()).toBe(5);

    // A consumer group that has acknowledged all but two: 2 waiting is below the mark but not below half of it, so the gate stays closed.
    await iso.redis.xgroup('CREATE', w.key(), 'key-resolve', '0');
    const consume = async (count: number) => {
      const [[, read]] = (await iso.redis.xreadgroup('GROUP', 'key-resolve', 'c1', 'COUNT', count, 'STREAMS', w.key(), '>')) as [string, [string, string[]][]][];
      await iso.redis.xack(w.key(), 'key-resolve', ...read.map(([id]) => id));
    };
    await consume(3);
    await new Promise((r) => setTimeout(r, 150));
    expect((await w.post([toolEvent()])).status).toBe(429);
    // Read but not acknowledged still counts: the events are not yet on their way.
    await iso.redis.xreadgroup('GROUP', 'key-resolve', 'c1', 'COUNT', 2, 'STREAMS', w.key(), '>');
    await new Promise((r) => setTimeout(r, 150));
    expect((await w.post([toolEvent()])).status).toBe(429);
    await iso.redis.xack(w.key(), 'key-resolve', ...((await iso.redis.xpending(w.key(), 'key-resolve', '-', '+', 10)) as [string][]).map(([id]) => id));
    await new Promise((r) => setTimeout(r, 150));
    const reopened = await w.postOnceOpen([toolEvent()]);
    expect(reopened.status).toBe(202);
    expect(await w.length()).toBe(6);
    // Why it refused, for an operator: the time the queue held the gate (at least the 300 ms waited above).
    const held = await w.metrics.registry.getSingleMetricAsString('am_gate_held_seconds_total');
    const queueSeconds = Number(/bound="queue"[^\n]*\} ([\d.e-]+)/.exec(held)?.[1]);
    expect(queueSeconds).toBeGreaterThanOrEqual(0.3);
    expect(held).not.toMatch(/bound="after"/);
  });
});

describe('POST /v1/events: backpressure in time', () => {
  it('answers 429 while the oldest event not yet acknowledged has waited longer than INGEST_MAX_QUEUE_MS, and takes events again once it is', async () => {
    const w = world({ INGEST_MAX_QUEUE_MS: 1000 });
    await iso.redis.xgroup('CREATE', w.key(), 'key-resolve', '0', 'MKSTREAM');
    // An event queued five seconds ago that no one has read yet: far fewer events than the high mark, but old.
    await iso.redis.xadd(w.key(), `${Date.now() - 5000}-0`, 'd', 'x');
    const refused = await w.post([toolEvent()]);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    // Read but not acknowledged: still on its way.
    const [[, [[id]]]] = (await iso.redis.xreadgroup('GROUP', 'key-resolve', 'c1', 'COUNT', 1, 'STREAMS', w.key(), '>')) as [string, [string, string[]][]][];
    await new Promise((r) => setTimeout(r, 150));
    expect((await w.post([toolEvent()])).status).toBe(429);
    await iso.redis.xack(w.key(), 'key-resolve', id);
    await new Promise((r) => setTimeout(r, 150));
    expect((await w.postOnceOpen([toolEvent()])).status).toBe(202);
  });

  it('judges the whole way to the ledger: waits on the later streams add up', async () => {
    const w = world({ INGEST_MAX_QUEUE_MS: 1000 });
    const later = (name: string) => partitionedKey(w.config.REDIS_PREFIX, STREAMS[name as keyof typeof STREAMS], 0);
    // Two hops each 600 ms behind: neither alone is over the bound, together they are.
    for (const [stream, group] of [['priced', 'cap-check'], ['checked', 'ledger-write']]) {
      await iso.redis.xgroup('CREATE', later(stream), group, '0', 'MKSTREAM');
      await iso.redis.xadd(later(stream), `${Date.now() - 600}-0`, 'd', 'x');
    }
    expect((await w.post([toolEvent()])).status).toBe(429);
    // Once both are read and acknowledged, the way is clear again.
    for (const [stream, group] of [['priced', 'cap-check'], ['checked', 'ledger-write']]) {
      const [[, [[id]]]] = (await iso.redis.xreadgroup('GROUP', group, 'c1', 'COUNT', 1, 'STREAMS', later(stream), '>')) as [string, [string, string[]][]][];
      await iso.redis.xack(later(stream), group, id);
    }
    await new Promise((r) => setTimeout(r, 150));
    expect((await w.postOnceOpen([toolEvent()])).status).toBe(202);
  });
});

describe('POST /v1/events: room after the ledger', () => {
  it('answers 429 while events:ledgered holds so much unread that the ledger would stop before the queue ahead of it drained, and takes events again once it is read', async () => {
    // The ledger stops at 20 unread after it; the queue before it may hold 10: ingest refuses above 10 (ledgerRoom).
    const w = world({ BACKPRESSURE_HIGH: 20, BACKPRESSURE_LOW: 10, INGEST_MAX_QUEUE_EVENTS: 10 });
    const ledgered = partitionedKey(w.config.REDIS_PREFIX, STREAMS.ledgered, 0);
    await iso.redis.xgroup('CREATE', ledgered, 'session-update', '0', 'MKSTREAM');
    for (let i = 0; i < 10; i++) await iso.redis.xadd(ledgered, '*', 'd', 'x');
    expect((await w.post([toolEvent()])).status).toBe(202); // 10 unread: at the mark
    await iso.redis.xadd(ledgered, '*', 'd', 'x');
    await new Promise((r) => setTimeout(r, 150)); // past the gate's cache of an open read
    const refused = await w.post([toolEvent()]);
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('backpressure');
    expect(await w.length()).toBe(1);
    // Handed to the stage after the ledger (read, not yet acknowledged): no longer in the ledger's way.
    await iso.redis.xreadgroup('GROUP', 'session-update', 'c1', 'COUNT', 100, 'STREAMS', ledgered, '>');
    expect((await w.postOnceOpen([toolEvent()])).status).toBe(202);
    expect(await w.length()).toBe(2);
  });

  it('keeps three queues of room below the ledger\'s mark: what is on its way to the ledger when ingest reads room still fits', async () => {
    // The ledger stops at 100 unread after it; a queue is 20: ingest refuses above 100 - 3 x 20 = 40.
    const w = world({ BACKPRESSURE_HIGH: 100, BACKPRESSURE_LOW: 10, INGEST_MAX_QUEUE_EVENTS: 20 });
    const ledgered = partitionedKey(w.config.REDIS_PREFIX, STREAMS.ledgered, 0);
    await iso.redis.xgroup('CREATE', ledgered, 'session-update', '0', 'MKSTREAM');
    const unread = async (n: number) => {
      for (let i = 0; i < n; i++) await iso.redis.xadd(ledgered, '*', 'd', 'x');
      await new Promise((r) => setTimeout(r, 150)); // past the gate's cache of an open read
    };
    await unread(40);
    expect((await w.post([toolEvent()])).status).toBe(202); // at the mark
    await unread(1);
    expect((await w.post([toolEvent()])).status).toBe(429); // one queue's room (80) would still take it
    expect(await w.length()).toBe(1);
  });

  it('takes events again once events:ledgered is read below three quarters of that room, not before', async () => {
    // Room 10 (as above): closed above 10 unread, open again below 7.
    const w = world({ BACKPRESSURE_HIGH: 20, BACKPRESSURE_LOW: 10, INGEST_MAX_QUEUE_EVENTS: 10 });
    const ledgered = partitionedKey(w.config.REDIS_PREFIX, STREAMS.ledgered, 0);
    await iso.redis.xgroup('CREATE', ledgered, 'session-update', '0', 'MKSTREAM');
    for (let i = 0; i < 11; i++) await iso.redis.xadd(ledgered, '*', 'd', 'x');
    expect((await w.post([toolEvent()])).status).toBe(429);
    const read = (count: number) => iso.redis.xreadgroup('GROUP', 'session-update', 'c1', 'COUNT', count, 'STREAMS', ledgered, '>');
    await read(4); // 7 unread: not below three quarters
    expect((await w.postOnceOpen([toolEvent()])).status).toBe(429);
    await read(1); // 6 unread
    expect((await w.postOnceOpen([toolEvent()])).status).toBe(202);
    expect(await w.length()).toBe(1);
  });
});

describe('POST /v1/events: the refusal on Node\'s request', () => {
  it('answers a known-closed gate before the Hono layers, the same 429 as the route, and hands every other request on', async () => {
    const w = world({ INGEST_MAX_QUEUE_EVENTS: 1 });
    // As api/server.ts serves it: serveNode first, Hono for what it does not take.
    const hono = getRequestListener(w.app.fetch);
    const servedByNode: boolean[] = [];
    const server = createServer((req, res) => {
      const taken = w.app.serveNode(req, res);
      servedByNode.push(taken);
      if (!taken) void hono(req, res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const post = async () => {
      const res = await fetch(`http://127.0.0.1:${port}/v1/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' },
        body: JSON.stringify([toolEvent()]),
      });
      return { status: res.status, headers: Object.fromEntries(res.headers), body: await res.text() };
    };
    try {
      // Open: both through the route. Two entries are over the mark of one.
      expect((await post()).status).toBe(202);
      expect((await post()).status).toBe(202);
      expect(servedByNode).toEqual([false, false]);
      // The route reads the queue and refuses; right after, the gate's answer is known without a read.
      const answers = [];
      for (let i = 0; i < 20 && !servedByNode.slice(2).includes(true); i++) answers.push(await post());
      const fromRoute = answers[servedByNode.slice(2).indexOf(false)];
      const fromNode = answers[servedByNode.slice(2).indexOf(true)];
      expect(fromRoute?.status).toBe(429);
      expect(fromNode?.status).toBe(429);
      expect(JSON.parse(fromNode.body)).toEqual(JSON.parse(fromRoute.body));
      expect(JSON.parse(fromNode.body).error.code).toBe('backpressure');
      for (const name of ['retry-after', 'retry-after-ms']) expect(fromNode.headers[name]).toBe(fromRoute.headers[name]);
      expect(fromNode.headers['content-type']).toMatch(/^application\/json/);
      expect(await w.length()).toBe(2);
      // Not a POST /v1/events: never taken.
      await fetch(`http://127.0.0.1:${port}/v1/events`);
      expect(servedByNode.at(-1)).toBe(false);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

/** POST /v1/events whose body streams: `first` now, the end only when `onRelease`'s function is called. */
function postStreamed(w: ReturnType<typeof world>, first: string, onRelease: (release: () => void) => void) {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(first));
      onRelease(() => controller.close());
    },
  });
  return w.app.request('/v1/events', {
    method: 'POST',
    headers: { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' },
    body,
    duplex: 'half',
  } as RequestInit);
}

describe('POST /v1/events: load shedding', () => {
  it('answers 429 busy at once past INGEST_MAX_IN_FLIGHT requests in flight, and takes requests again when they finish', async () => {
    const w = world({ INGEST_MAX_IN_FLIGHT: 2 });
    const releases: (() => void)[] = [];
    // Two requests whose bodies have not finished arriving hold both slots.
    const held = [0, 1].map(() => postStreamed(w, JSON.stringify([toolEvent()]), (release) => releases.push(release)));
    await new Promise((r) => setTimeout(r, 50));
    const refused = await w.post([toolEvent()]);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.headers.get('retry-after-ms')).toBe('100');
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('busy');
    for (const release of releases) release();
    expect((await Promise.all(held)).map((r) => r.status)).toEqual([202, 202]);
    expect((await w.post([toolEvent()])).status).toBe(202);
    expect(await w.length()).toBe(3);
  });
});

describe('POST /v1/events: a body that does not arrive in time', () => {
  /** A request whose body starts and never ends (a client trickling it, or stalled). */
  const stalled = (w: ReturnType<typeof world>) => postStreamed(w, '[{"event_id": "slow', () => {});

  it('stops reading at the request deadline (HTTP_REQUEST_TIMEOUT_MS): 503 timeout, and its in-flight slot is free again', async () => {
    const w = world({ INGEST_MAX_IN_FLIGHT: 1, HTTP_REQUEST_TIMEOUT_MS: 200 });
    const started = Date.now();
    const held = stalled(w);
    await new Promise((r) => setTimeout(r, 50));
    expect((await w.post([toolEvent()])).status).toBe(429); // the slot is taken meanwhile
    await new Promise((r) => setTimeout(r, 400));
    // Past the deadline (and its tenth of slack) the slot is free: before, it was held while the body trickled (up to Node's 300 s).
    expect((await w.post([toolEvent()])).status).toBe(202);
    const late = await Promise.race([held, new Promise<undefined>((r) => setTimeout(() => r(undefined), 1000))]);
    expect(late?.status).toBe(503);
    expect(((await late!.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: 'timeout', message: expect.stringMatching(/did not arrive within 200 ms/) });
    expect(Date.now() - started).toBeLessThan(1000);
    expect(await w.length()).toBe(1);
  });

  it('as served (behind the timeout middleware): closes the connection of a trickling body, and the slots are free for every tenant', async () => {
    const config: Config = { ...iso.config, REDIS_PREFIX: `${iso.config.REDIS_PREFIX}w${++worlds}:`, INGEST_MAX_IN_FLIGHT: 2, HTTP_REQUEST_TIMEOUT_MS: 300 };
    const created = createApp({ config, sql: iso.sql, redis: iso.redis, log: silent, metrics: new Metrics('ingest-deadline-test'), tokens });
    const server = created.createServer({}, getRequestListener(created.app.fetch));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const body = JSON.stringify([toolEvent()]);
    const sockets = [0, 1].map(() => {
      const socket = connect(port, '127.0.0.1');
      const seen = { answer: '', closedAt: 0 };
      socket.on('data', (d) => (seen.answer += d));
      socket.on('error', () => {});
      socket.on('close', () => (seen.closedAt = Date.now()));
      socket.write(`POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tenant.ingestToken}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`);
      return { socket, seen };
    });
    const started = Date.now();
    const trickle = setInterval(() => {
      for (const { socket } of sockets) if (!socket.destroyed) socket.write(' ');
    }, 50);
    try {
      await new Promise((r) => setTimeout(r, 1000));
      for (const { seen } of sockets) {
        expect(seen.answer).toMatch(/^HTTP\/1.1 503/);
        expect(seen.answer).toMatch(/"code":"timeout"/);
        expect(seen.closedAt - started).toBeGreaterThan(0);
        expect(seen.closedAt - started).toBeLessThan(1000);
      }
      const res = await fetch(`http://127.0.0.1:${port}/v1/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' },
        body,
      });
      expect(res.status).toBe(202);
    } finally {
      clearInterval(trickle);
      for (const { socket } of sockets) socket.destroy();
      await created.close();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('POST /v1/events: Redis failures', () => {
  /** The real connection, with MULTI/EXEC replaced by one that fails the given way. */
  function failingRedis(fail: () => Promise<[Error | null, unknown][] | null>): Redis {
    // A request's block in one partition is one XADD; more than MAX_BLOCK_EVENTS make a MULTI of several.
    const failedXadd = async () => {
      const results = await fail();
      throw results?.find(([error]) => error)?.[0] ?? new Error('transaction aborted');
    };
    return new Proxy(iso.redis, {
      get(target, prop) {
        if (prop === 'xadd') return failedXadd;
        if (prop === 'multi') {
          return () => {
            const multi = target.multi();
            return new Proxy(multi, {
              get(m, p) {
                if (p === 'exec') return fail; // the queued commands are never sent
                const value = Reflect.get(m, p, m);
                return typeof value === 'function' ? value.bind(m) : value;
              },
            });
          };
        }
        const value = Reflect.get(target, prop, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  }

  it('answers 503 store_full with Retry-After when Redis refuses writes for memory, and reports nothing accepted', async () => {
    const oom = Object.assign(new Error('EXECABORT Transaction discarded because of previous errors.'), {
      previousErrors: [new Error("OOM command not allowed when used memory > 'maxmemory'.")],
    });
    const w = world({}, failingRedis(() => Promise.reject(oom)));
    const res = await w.post([toolEvent(), toolEvent()]);
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBeTruthy();
    const body = (await res.json()) as { error: { code: string }; accepted?: number };
    expect(body.error.code).toBe('store_full');
    expect(body.accepted).toBeUndefined();
    expect(await w.length()).toBe(0);
    // A request of several blocks in one partition (one MULTI) fails the same way, all or nothing.
    const many = await w.post(Array.from({ length: MAX_BLOCK_EVENTS + 1 }, () => toolEvent()));
    expect(many.status).toBe(503);
    expect(((await many.json()) as { error: { code: string } }).error.code).toBe('store_full');
    expect(await w.length()).toBe(0);
  });

  it('answers 503 unavailable when a queued write fails or Redis cannot be reached', async () => {
    const w = world({}, failingRedis(() => Promise.resolve([[new Error('ERR something'), null]])));
    const res = await w.post([toolEvent()]);
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('unavailable');

    const { Redis: RedisClient } = await import('ioredis');
    const dead = new RedisClient({ port: 1, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      const down = world({}, dead);
      const refused = await down.post([toolEvent()]);
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('2');
    } finally {
      dead.disconnect();
    }
  });

  it('says some events may have been accepted when a partition failed after another was written (PARTITIONS > 1)', async () => {
    const w = world({ PARTITIONS: 2 });
    const keys: Record<number, string> = {};
    for (let i = 0; Object.keys(keys).length < 2; i++) {
      const key = `sk_live_partition_test_${i}`;
      keys[partitionOf(ingestPartitionKey(tenant.tenantId, { kind: 'api_key', keyHash: hashApiKey(key) }), 2)] ??= key;
    }
    await iso.redis.set(w.key(1), 'not a stream'); // partition 1's write fails (WRONGTYPE), as a failed node would
    const res = await w.post([toolEvent({ event_id: 'p0', api_key: keys[0] }), toolEvent({ event_id: 'p1', api_key: keys[1] })]);
    expect(res.status).toBe(503);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('unavailable');
    expect(body.error.message).toMatch(/some events may have been accepted.*retry the same request.*event ids make the retry safe/);
    expect(body.error.message).not.toMatch(/nothing was accepted/);
    expect((await w.entries(0)).map((e) => e.event.eventId)).toEqual(['p0']);
    // Only the failed partition written to: nothing was accepted, as before.
    const alone = await w.post([toolEvent({ event_id: 'p1b', api_key: keys[1] })]);
    expect(((await alone.json()) as { error: { message: string } }).error.message).toMatch(/nothing was accepted/);
    await iso.redis.del(w.key(1));
  });

  it('answers 503 at once while the connection is lost, instead of queueing until Redis returns', async () => {
    const lost = connectRedis('redis://127.0.0.1:1', 'ingest-test-lost');
    lost.on('error', () => {});
    try {
      while (lost.status !== 'reconnecting') await new Promise((r) => setTimeout(r, 10));
      const w = world({}, lost);
      const started = Date.now();
      const res = await w.post([toolEvent()]);
      expect(res.status).toBe(503);
      expect(Date.now() - started).toBeLessThan(1000);
    } finally {
      lost.disconnect();
    }
  });
});

/** Issue 9, defects 1, 3 and 4: what no store can hold exactly is refused at the door, by field path, never answered 202. */
describe('POST /v1/events: what the pipeline cannot store', () => {
  type Refusal = { error: { code: string; message: string; details: { index: number; errors: { field: string; message: string }[] }[] } };
  async function refused(w: ReturnType<typeof world>, event: Record<string, unknown>): Promise<{ field: string; message: string }[]> {
    const res = await w.post(event);
    expect(res.status).toBe(400);
    const body = (await res.json()) as Refusal;
    expect(body.error.code).toBe('validation_failed');
    return body.error.details[0].errors;
  }
  const apiRequest = (overrides: Record<string, unknown>) =>
    toolEvent({ event_type: 'api.request', tool_name: 'POST /v1/search', mcp_server_id: undefined, agent_id: undefined, ...overrides });

  it('refuses a lone UTF-16 surrogate in any text, by path (defect 1: it halted billing for every tenant)', async () => {
    const w = world();
    expect(await refused(w, toolEvent({ tool_name: 'read_database', error_type: '\ud800' }))).toEqual([
      { field: 'error_type', message: 'must be valid Unicode: lone surrogate \\ud800 at position 0' },
    ]);
    expect((await refused(w, apiRequest({ tool_name: 'GET /x\udc00' }))).map((e) => e.field)).toEqual(['tool_name']);
    expect((await refused(w, toolEvent({ error_message: 'ok \ud83d' }))).map((e) => e.field)).toEqual(['error_message']);
    expect((await refused(w, toolEvent({ metadata: { note: 'a\udfffb' } }))).map((e) => e.field)).toEqual(['metadata.note']);
    expect((await refused(w, toolEvent({ api_key: `${API_KEY}\ud800` }))).map((e) => e.field)).toEqual(['api_key']);
    expect(await w.length()).toBe(0);
    // A well-formed pair (an emoji) is fine.
    const ok = await w.post(toolEvent({ error_message: 'timeout \ud83d\ude00', error_type: 'E\u00e9' }));
    expect(ok.status).toBe(202);
  });

  it('refuses NUL in any text, and in MessagePack strings (overlong or raw)', async () => {
    const w = world();
    expect((await refused(w, apiRequest({ tool_name: 'read\u0000database' }))).map((e) => e.field)).toEqual(['tool_name']);
    expect((await refused(w, toolEvent({ error_type: 'x\u0000' }))).map((e) => e.field)).toEqual(['error_type']);
    expect((await refused(w, toolEvent({ metadata: { 'k\u0000': 'v' } }))).map((e) => e.field)).toEqual(['metadata.k\u0000']);
    const session = { event_id: 's1', event_type: 'session.completed', api_key: API_KEY, session_id: 'sess_1', reason: 'done\u0000', recorded_timestamp: new Date().toISOString() };
    expect((await refused(w, session)).map((e) => e.field)).toEqual(['reason']);
    const packed = await w.post(toolEvent({ error_type: 'a\u0000b' }), { type: 'application/msgpack' });
    expect(packed.status).toBe(400);
    expect(await w.length()).toBe(0);
  });

  it('refuses integers beyond the columns (retry_count int4) and token counts and durations beyond 10^12, accepting the limits', async () => {
    const w = world();
    expect((await refused(w, toolEvent({ retry_count: 2 ** 31 }))).map((e) => e.field)).toEqual(['retry_count']);
    expect((await refused(w, toolEvent({ output_tokens: 4611686018427388 }))).map((e) => e.field)).toEqual(['output_tokens']);
    expect((await refused(w, toolEvent({ input_tokens: 9007199254740991 }))).map((e) => e.field)).toEqual(['input_tokens']);
    expect((await refused(w, toolEvent({ input_tokens: 1e12 + 1 }))).map((e) => e.field)).toEqual(['input_tokens']);
    expect((await refused(w, toolEvent({ execution_duration_ms: 1e12 + 1 }))).map((e) => e.field)).toEqual(['execution_duration_ms']);
    expect(await w.length()).toBe(0);
    const limits = await w.post(toolEvent({ retry_count: 2 ** 31 - 1, input_tokens: 1e12, output_tokens: 1e12, execution_duration_ms: 1e12 }));
    expect(limits.status).toBe(202);
    const [entry] = await w.entries();
    expect(entry.event).toMatchObject({ retryCount: 2 ** 31 - 1, inputTokens: 1e12, outputTokens: 1e12, durationMs: 1e12 });
  });

  it('still takes the good events of a mixed request (202), listing the refused ones', async () => {
    const w = world();
    const res = await w.post([toolEvent({ event_id: 'good' }), toolEvent({ event_id: 'bad', error_type: '\ud800' })]);
    expect(res.status).toBe(202);
    expect(await reply(res)).toMatchObject({ accepted: 1, rejected: [{ index: 1, event_id: 'bad', errors: [{ field: 'error_type' }] }] });
  });
});

/** Issue 9, defect 5: with PostgreSQL out, token checks answered 500 (clients do not retry a 500) and hung up to 17 s. */
describe('POST /v1/events: a PostgreSQL outage', () => {
  it('keeps accepting with tokens verified before, answers 503 with Retry-After for the others, never 500, never hangs', async () => {
    const other = await createTenant(iso.sql, 'Other tenant');
    const proxy = await TcpProxy.start({ port: Number(new URL(iso.config.DATABASE_URL).port || 5432) });
    const viaProxy = connectPostgres(iso.config.DATABASE_URL.replace(/:\d+\//, `:${proxy.port}/`), { max: 2 });
    try {
      const w = world({}, undefined, new TenantTokens(viaProxy, 200));
      expect((await w.post(toolEvent())).status).toBe(202); // verified and remembered
      const timed = async (token: string) => {
        const started = Date.now();
        const res = await w.post(toolEvent(), { token });
        return { status: res.status, retryAfter: res.headers.get('retry-after'), ms: Date.now() - started };
      };
      for (const mode of ['reset', 'blackhole'] as const) {
        proxy.cut(mode);
        await new Promise((r) => setTimeout(r, 300)); // past the 200 ms cache
        for (let i = 0; i < 3; i++) {
          const known = await timed(tenant.ingestToken);
          expect({ mode, status: known.status }).toEqual({ mode, status: 202 });
          expect(known.ms).toBeLessThan(3_000);
          const unseen = await timed(other.ingestToken);
          expect({ mode, status: unseen.status, retryAfter: unseen.retryAfter }).toEqual({ mode, status: 503, retryAfter: '2' });
          expect(unseen.ms).toBeLessThan(3_000);
          await new Promise((r) => setTimeout(r, 400));
        }
        proxy.restore();
        await new Promise((r) => setTimeout(r, 1_100));
      }
      // Back: the other tenant's token verifies again.
      const back = await timed(other.ingestToken);
      expect(back.status).toBe(202);
    } finally {
      await viaProxy.end({ timeout: 1 });
      await proxy.close();
    }
  });
});
