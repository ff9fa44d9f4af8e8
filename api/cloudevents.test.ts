import { CloudEvent, HTTP } from 'cloudevents';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventsOfEntries } from '../pipeline/blocks.js';
import { STREAMS } from '../store/streams.js';
import { partitionedKey } from '../pipeline/keys.js';
import type { UsageEvent } from '../domain/events.js';
import { createIngestRoutes } from './ingest/routes.js';
import { hashApiKey } from '../store/credentials.js';
import { createTenant, type CreatedTenant } from '../store/tenants.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { TenantTokens } from '../store/tenant-tokens.js';
import { cloudEventPath, cloudEventsMode, fromCloudEvents } from './cloudevents.js';

const NOW = Date.parse('2026-11-26T14:30:00.000Z');
const API_KEY = 'sk_live_ABCDEFGHIJKLMNOPQRSTUVWXyz012345';

function ce(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    specversion: '1.0',
    id: 'ce_1',
    source: '//mcp.example.com/docs',
    type: 'mcp.tool_invoked',
    time: '2026-11-26T14:26:59.045Z',
    apikey: API_KEY,
    datacontenttype: 'application/json',
    data: { tool_name: 'search_docs', input_tokens: 120, session_id: 'sess_1' },
    ...overrides,
  };
}

const map = (mode: 'structured' | 'batch', body: unknown) => fromCloudEvents(mode, body, { maxBatch: 10, now: NOW });

describe('cloudEventsMode', () => {
  it('recognizes structured and batch content types, parameters and case aside', () => {
    expect(cloudEventsMode('application/cloudevents+json; charset=utf-8')).toBe('structured');
    expect(cloudEventsMode('Application/CloudEvents-Batch+JSON')).toBe('batch');
    expect(cloudEventsMode('application/json')).toBeUndefined();
    expect(cloudEventsMode(undefined)).toBeUndefined();
  });
});

describe('fromCloudEvents', () => {
  it('maps id, type, time, the credential and data to a wire event', () => {
    const result = map('structured', ce());
    expect(result).toMatchObject({
      ok: true,
      value: [
        {
          event_id: 'ce_1',
          event_type: 'mcp.tool_invoked',
          recorded_timestamp: '2026-11-26T14:26:59.045Z',
          api_key: API_KEY,
          tool_name: 'search_docs',
          input_tokens: 120,
          session_id: 'sess_1',
        },
      ],
    });
  });

  it('takes the credential from clientid, or from subject (a client id by its cli_ prefix), and the arrival time without time', () => {
    const batch = map('batch', [
      ce({ id: 'a', apikey: undefined, clientid: 'cli_abc' }),
      ce({ id: 'b', apikey: undefined, subject: 'cli_def', time: undefined }),
      ce({ id: 'c', apikey: undefined, subject: API_KEY, data: undefined, data_base64: Buffer.from(JSON.stringify({ tool_name: 'x' })).toString('base64') }),
    ]);
    expect(batch.ok).toBe(true);
    if (!batch.ok) return;
    expect(batch.value.map((e) => [e.event_id, e.client_id ?? e.api_key, e.recorded_timestamp, e.tool_name])).toEqual([
      ['a', 'cli_abc', '2026-11-26T14:26:59.045Z', 'search_docs'],
      ['b', 'cli_def', new Date(NOW).toISOString(), 'search_docs'],
      ['c', API_KEY, '2026-11-26T14:26:59.045Z', 'x'],
    ]);
  });

  it('names every problem of every CloudEvent by its JSON path', () => {
    const result = map('batch', [
      ce(),
      ce({ specversion: '0.3', id: '', time: 'yesterday', apikey: undefined }),
      ce({ data: { event_id: 'x', tool_name: 'y' }, datacontenttype: 'text/plain', Bad_Name: 1 }),
      42,
    ]);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.code).toBe('validation_failed');
    expect(result.details.map((d) => d.path)).toEqual([
      '$[1].specversion',
      '$[1].id',
      '$[1].time',
      '$[1].subject',
      '$[2].datacontenttype',
      '$[2].Bad_Name',
      '$[2].data.event_id',
      '$[3]',
    ]);
    expect(result.message).toMatch(/^invalid CloudEvents, nothing was accepted: \$\[1\]\.specversion: must be "1.0"/);
  });

  it('refuses an apikey or clientid that is not a string, by its path (as subject), instead of accepting it as its String()', () => {
    for (const apikey of [{ a: 1 }, 123456789, [API_KEY], null, true]) {
      expect(map('structured', ce({ apikey }))).toMatchObject({ ok: false, details: [{ path: '$.apikey', message: 'must be a string' }] });
    }
    expect(map('batch', [ce(), ce({ id: 'ce_2', apikey: undefined, clientid: ['cli_abc'] })])).toMatchObject({
      ok: false,
      details: [{ path: '$[1].clientid', message: 'must be a string' }],
    });
    expect(map('structured', ce({ apikey: undefined, clientid: 'cli_abc' }))).toMatchObject({ ok: true, value: [{ client_id: 'cli_abc' }] });
  });

  it('refuses a batch in which one id comes from two sources (the id is the event_id: the second would never be billed)', () => {
    const result = map('batch', [ce({ id: 'same', source: '//a' }), ce({ id: 'other', source: '//a' }), ce({ id: 'same', source: '//b' })]);
    expect(result).toMatchObject({ ok: false, code: 'validation_failed', details: [{ path: '$[2].id', message: expect.stringMatching(/"same" is also the id of \$\[0\] from source "\/\/a".*unique per tenant across sources/) }] });
    expect((result as { message: string }).message).toMatch(/\$\[2\]\.id/);
    // The same id from the same source is a duplicate, as it always was (the first is taken).
    expect(map('batch', [ce({ id: 'same', source: '//a' }), ce({ id: 'same', source: '//a' })])).toMatchObject({ ok: true });
  });

  it('refuses a body of the wrong shape, an empty batch and one over the limit', () => {
    expect(map('structured', [ce()])).toMatchObject({ ok: false, details: [{ path: '$' }] });
    expect(map('batch', ce())).toMatchObject({ ok: false, details: [{ path: '$' }] });
    expect(map('batch', [])).toMatchObject({ ok: false, code: 'empty_batch' });
    expect(map('batch', Array.from({ length: 11 }, () => ce()))).toMatchObject({ ok: false, code: 'batch_too_large' });
  });

  it('turns an ingest field error into the JSON path of the attribute it came from', () => {
    const result = map('structured', ce());
    if (!result.ok) throw new Error('expected a mapping');
    const [origins] = result.origins;
    expect(cloudEventPath(origins, 'input_tokens', '$')).toBe('$.data.input_tokens');
    expect(cloudEventPath(origins, 'recorded_timestamp', '$')).toBe('$.time');
    expect(cloudEventPath(origins, 'api_key', '$')).toBe('$.apikey');
    expect(cloudEventPath(origins, 'event_type', '$')).toBe('$.type');
    expect(cloudEventPath(origins, 'metadata.k', '$')).toBe('$.data.metadata.k');
    expect(cloudEventPath(origins, 'execution_status', '$')).toBe('$.data.execution_status');
    expect(cloudEventPath(origins, '', '$[2]')).toBe('$[2]');
  });
});

describe('POST /v1/events with CloudEvents (sent as the cloudevents SDK formats them)', () => {
  let world: Isolated;
  let tenant: CreatedTenant;
  beforeAll(async () => {
    world = await isolated('cloudevents');
    tenant = await createTenant(world.sql, 'CloudEvents sender');
  });
  afterAll(async () => {
    await world?.cleanup();
  });

  const app = () =>
    createIngestRoutes({ config: world.config, redis: world.redis, tokens: new TenantTokens(world.sql), log: pino({ level: 'silent' }) });
  const send = (headers: Record<string, string>, body: string) =>
    app().request('/v1/events', { method: 'POST', headers: { ...headers, authorization: `Bearer ${tenant.ingestToken}` }, body });
  const written = async () =>
    eventsOfEntries<UsageEvent>(
      (await world.redis.xrangeBuffer(partitionedKey(world.config.REDIS_PREFIX, STREAMS.ingested, 0), '-', '+')) as [Buffer, Buffer[]][],
    ).map((e) => e.payload);
  const recent = new Date(Date.now() - 60_000).toISOString();

  it('accepts a structured CloudEvent and a batch, as events of the pipeline', async () => {
    const event = new CloudEvent({ id: 'ce_s1', source: '/docs', type: 'mcp.tool_invoked', time: recent, apikey: API_KEY, data: { tool_name: 'search_docs', output_tokens: 7 } });
    const message = HTTP.structured(event);
    const one = await send(message.headers as Record<string, string>, message.body as string);
    expect(one.status).toBe(202);
    expect(await one.json()).toEqual({ accepted: 1, duplicates: [], rejected: [] });

    const batch = [1, 2].map((i) => new CloudEvent({ id: `ce_b${i}`, source: '/docs', type: 'mcp.tool_invoked', time: recent, subject: 'cli_batch', data: { tool_name: 'read_database' } }));
    const two = await send({ 'content-type': 'application/cloudevents-batch+json' }, JSON.stringify(batch));
    expect(await two.json()).toEqual({ accepted: 2, duplicates: [], rejected: [] });

    const events = await written();
    expect(events.map((e) => [e.eventId, e.toolName, e.credential])).toEqual([
      ['ce_s1', 'search_docs', { kind: 'api_key', keyHash: hashApiKey(API_KEY) }],
      ['ce_b1', 'read_database', { kind: 'client_id', clientId: 'cli_batch' }],
      ['ce_b2', 'read_database', { kind: 'client_id', clientId: 'cli_batch' }],
    ]);
    expect(events[0]).toMatchObject({ outputTokens: 7, recordedAt: Date.parse(recent) });
  });

  it('answers 400 and writes nothing for one id from two sources, or a credential that is not a string (both were 202)', async () => {
    const before = (await written()).length;
    const a = new CloudEvent({ id: 'ce_same', source: '/a', type: 'mcp.tool_invoked', time: recent, apikey: API_KEY, data: { tool_name: 'x' } });
    const b = new CloudEvent({ id: 'ce_same', source: '/b', type: 'mcp.tool_invoked', time: recent, apikey: API_KEY, data: { tool_name: 'y' } });
    const twoSources = await send({ 'content-type': 'application/cloudevents-batch+json' }, JSON.stringify([a, b]));
    expect(twoSources.status).toBe(400);
    expect(((await twoSources.json()) as { error: { details: { path: string }[] } }).error.details.map((d) => d.path)).toEqual(['$[1].id']);
    const objectKey = await send({ 'content-type': 'application/cloudevents+json' }, JSON.stringify(ce({ id: 'ce_obj', time: recent, apikey: { key: API_KEY } })));
    expect(objectKey.status).toBe(400);
    expect(((await objectKey.json()) as { error: { details: { path: string }[] } }).error.details.map((d) => d.path)).toEqual(['$.apikey']);
    expect((await written()).length).toBe(before);
  });

  it('answers 400 with JSON paths and writes nothing when one CloudEvent maps to an invalid event', async () => {
    const before = (await written()).length;
    const good = new CloudEvent({ id: 'ce_ok', source: '/docs', type: 'mcp.tool_invoked', time: recent, apikey: API_KEY, data: { tool_name: 'x' } });
    const bad = new CloudEvent({ id: 'ce_bad', source: '/docs', type: 'mcp.tool_called', time: '2001-01-01T00:00:00Z', apikey: API_KEY, data: { tool_name: 'x', input_tokens: -1 } });
    const res = await send({ 'content-type': 'application/cloudevents-batch+json' }, JSON.stringify([good, bad]));
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; details: { path: string; message: string }[] } };
    expect(body.error.code).toBe('validation_failed');
    // The unknown type stops the schema early; the time window is still checked beside it.
    expect(body.error.details.map((d) => d.path).sort()).toEqual(['$[1].time', '$[1].type']);

    const late = new CloudEvent({ id: 'ce_late', source: '/docs', type: 'mcp.tool_invoked', time: '2001-01-01T00:00:00Z', apikey: API_KEY, data: { tool_name: 'x', input_tokens: -1 } });
    const message = HTTP.structured(late);
    const res2 = await send(message.headers as Record<string, string>, message.body as string);
    expect(res2.status).toBe(400);
    const body2 = (await res2.json()) as { error: { details: { path: string; message: string }[] } };
    expect(body2.error.details.map((d) => d.path).sort()).toEqual(['$.data.input_tokens', '$.time']);
    expect(body2.error.details.find((d) => d.path === '$.time')?.message).toMatch(/older than/);
    expect((await written()).length).toBe(before);
  });
});
