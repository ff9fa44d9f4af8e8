import { encode } from '@msgpack/msgpack';
import { describe, expect, it } from 'vitest';
import { checkEvent, contentEncodingError, decodeBody, eventsOf, normalizeBatch, timeWindowError } from './normalize.js';

const NOW = Date.parse('2026-03-31T14:27:00.000Z');
const window = { now: NOW, maxFutureSeconds: 300, maxAgeDays: 35 };

const event = (overrides: Record<string, unknown> = {}) => ({
  event_id: 'evt_1',
  event_type: 'mcp.tool_invoked',
  api_key: 'sk_live_xxxxxxxxxxxx',
  tool_name: 'transform_schema',
  recorded_timestamp: '2026-03-31T14:26:59.045Z',
  ...overrides,
});

describe('timeWindowError', () => {
  it('accepts exactly the configured bounds and refuses one millisecond past them', () => {
    expect(timeWindowError(NOW + 300_000, window)).toBeUndefined();
    expect(timeWindowError(NOW + 300_001, window)).toMatch(/301 s ahead/);
    expect(timeWindowError(NOW - 35 * 86_400_000, window)).toBeUndefined();
    expect(timeWindowError(NOW - 35 * 86_400_000 - 1, window)).toMatch(/older than 35 days \(the oldest accepted now is 2026-02-24T14:27:00.000Z\)/);
  });

  it('refuses a time before notBefore whatever the age allowed (backfill: nothing before 1970)', () => {
    const backfill = { ...window, maxAgeDays: 36_500, notBefore: 0 };
    expect(timeWindowError(0, backfill)).toBeUndefined();
    expect(timeWindowError(-1, backfill)).toMatch(/before 1970-01-01T00:00:00.000Z/);
    expect(timeWindowError(Date.parse('0000-01-01T00:00:00Z'), backfill)).toMatch(/before 1970-01-01T00:00:00.000Z/);
  });
});

describe('checkEvent', () => {
  it('takes a MessagePack timestamp (decoded to a Date) as the instant it is', () => {
    const decoded = decodeBody(encode(event({ recorded_timestamp: new Date(NOW - 1500) })), 'application/msgpack');
    expect(decoded.ok).toBe(true);
    const checked = checkEvent((decoded as { value: unknown }).value, window);
    expect(checked).toMatchObject({ ok: true, recordedAt: NOW - 1500 });
  });

  it('reads offsets in recorded_timestamp and refuses a time without a zone', () => {
    expect(checkEvent(event({ recorded_timestamp: '2026-03-31T16:26:00+02:00' }), window)).toMatchObject({ ok: true, recordedAt: NOW - 60_000 });
    expect(checkEvent(event({ recorded_timestamp: '2026-03-31T14:26:00' }), window)).toMatchObject({
      ok: false,
      errors: [{ field: 'recorded_timestamp' }],
    });
  });
});

describe('decodeBody and eventsOf', () => {
  it('reads JSON when no content type is given and accepts +json and msgpack variants', () => {
    const bytes = new TextEncoder().encode('[1]');
    expect(decodeBody(bytes, undefined)).toEqual({ ok: true, value: [1] });
    expect(decodeBody(bytes, 'application/json; charset=utf-8')).toEqual({ ok: true, value: [1] });
    expect(decodeBody(bytes, 'application/vnd.agentmeter+json')).toEqual({ ok: true, value: [1] });
    expect(decodeBody(encode([1]), 'application/x-msgpack')).toEqual({ ok: true, value: [1] });
    expect(decodeBody(bytes, 'text/plain')).toMatchObject({ ok: false, status: 415 });
  });

  it('reads JSON as UTF-8 only: refuses another declared charset (415) and bytes that are not UTF-8 (400)', () => {
    const latin1 = new Uint8Array(Buffer.from('["caf\u00e9"]', 'latin1'));
    expect(decodeBody(latin1, 'application/json')).toMatchObject({ ok: false, status: 400, code: 'invalid_body', message: expect.stringMatching(/not valid UTF-8/) });
    expect(decodeBody(latin1, undefined)).toMatchObject({ ok: false, status: 400 });
    expect(decodeBody(latin1, 'application/json; charset=ISO-8859-1')).toMatchObject({ ok: false, status: 415, code: 'unsupported_charset' });
    expect(decodeBody(new TextEncoder().encode('[1]'), 'application/cloudevents-batch+json; charset=utf-16')).toMatchObject({ ok: false, status: 415 });
    const utf8 = new TextEncoder().encode('["caf\u00e9"]');
    for (const type of [undefined, 'application/json', 'application/json;charset=utf-8', 'application/json; charset="UTF-8"', 'application/json; charset=utf8'])
      expect(decodeBody(utf8, type)).toEqual({ ok: true, value: ['caf\u00e9'] });
  });

  it('refuses a MessagePack string that is not UTF-8 (400) instead of storing other characters', () => {
    const bytes = encode(['caf\u00e9', 'ok']);
    expect(decodeBody(bytes, 'application/msgpack')).toEqual({ ok: true, value: ['caf\u00e9', 'ok'] });
    bytes.set([0xff], 1 + 1 + 3); // the first byte of "é" (fixarray, fixstr header, "caf")
    expect(decodeBody(bytes, 'application/msgpack')).toMatchObject({ ok: false, status: 400, code: 'invalid_body', message: expect.stringMatching(/string at byte 1 is not valid UTF-8/) });
  });

  it('accepts no Content-Encoding or identity, and refuses any other with 415', () => {
    for (const encoding of [undefined, '', 'identity', ' Identity ']) expect(contentEncodingError(encoding)).toBeUndefined();
    for (const encoding of ['gzip', 'br', 'deflate', 'gzip, identity'])
      expect(contentEncodingError(encoding)).toMatchObject({ ok: false, status: 415, code: 'unsupported_content_encoding', message: expect.stringMatching(/identity is the only encoding supported/) });
  });

  it('counts the batch limit inclusively', () => {
    expect(eventsOf([1, 2, 3], 3)).toMatchObject({ ok: true });
    expect(eventsOf({ events: [1, 2, 3, 4] }, 3)).toMatchObject({ ok: false, code: 'batch_too_large', message: expect.stringMatching(/4 events.*at most 3/) });
  });
});

describe('normalizeBatch', () => {
  it('hashes each distinct key once and never carries the raw key', () => {
    const batch = normalizeBatch('ten_1', [event({ event_id: 'a' }), event({ event_id: 'b' }), event({ event_id: 'c', api_key: 'sk_live_other_key' })], window);
    expect(batch.accepted).toHaveLength(3);
    const hashes = batch.accepted.map((e) => (e.credential as { keyHash: string }).keyHash);
    expect(hashes[0]).toBe(hashes[1]);
    expect(hashes[2]).not.toBe(hashes[0]);
    expect(JSON.stringify(batch.accepted)).not.toContain('sk_live_');
  });
});
