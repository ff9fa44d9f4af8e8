import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { Decoder } from '@msgpack/msgpack';
import { firstInvalidUtf8String } from './msgpack-text.js';
import type { z } from 'zod';
import type { Credential, UsageEvent } from '../../domain/events.js';
import { wireEventSchema, type WireEvent } from '../../schemas/events.js';
import { hashApiKey } from '../../store/credentials.js';
import { fastCheck } from './fast-check.js';

/** One problem with one field of one event, named by its dotted path ('' is the event itself). */
interface FieldError {
  field: string;
  message: string;
}

export interface RejectedItem {
  index: number;
  event_id?: string;
  errors: FieldError[];
}

export interface DuplicateItem {
  index: number;
  event_id: string;
}

type BodyRefusal = { ok: false; status: 400 | 415; code: string; message: string };
export type BodyResult<T> = { ok: true; value: T } | BodyRefusal;

const MSGPACK_TYPE = /^application\/(?:x-|vnd\.)?msgpack\s*(?:;|$)/i;
const JSON_TYPE = /^application\/(?:[\w.+-]*\+)?json\s*(?:;|$)/i;
const CHARSET = /;\s*charset\s*=\s*"?([^";\s]*)/i;
const UTF8 = /^utf-?8$/i;
// Integers beyond 2^53 decode to (imprecise) numbers, which the schema then refuses as out of range.
const msgpack = new Decoder();

function bad(code: string, message: string, status: 400 | 415 = 400): BodyRefusal {
  return { ok: false, status, code, message };
}

/**
 * A Content-Encoding the routes cannot read (415), or undefined for none or `identity`: bodies are
 * read as sent, so a gzip body would otherwise be refused as "not valid JSON".
 */
export function contentEncodingError(encoding: string | undefined): BodyRefusal | undefined {
  if (encoding === undefined) return undefined;
  const value = encoding.trim();
  if (value === '' || value.toLowerCase() === 'identity') return undefined;
  return bad('unsupported_content_encoding', `content-encoding ${value} is not accepted: send the body uncompressed (identity is the only encoding supported)`, 415);
}

/**
 * Decodes a request body by its content type: JSON (the default when none is given) or MessagePack.
 * JSON is read as UTF-8 only: a declared charset other than utf-8 is refused (415), and so are
 * bytes that are not UTF-8 (400) rather than decoded to U+FFFD, which would store (and price, and
 * hash as an API key) text other than what was sent; so is a MessagePack string that is not UTF-8.
 */
export function decodeBody(bytes: Uint8Array, contentType: string | undefined): BodyResult<unknown> {
  if (bytes.byteLength === 0) return bad('invalid_body', 'the request body is empty');
  const type = contentType?.trim() ?? '';
  if (MSGPACK_TYPE.test(type)) {
    let value: unknown;
    try {
      value = msgpack.decode(bytes);
    } catch (err) {
      return bad('invalid_body', `the body is not valid MessagePack: ${(err as Error).message}`);
    }
    const invalidAt = firstInvalidUtf8String(bytes);
    if (invalidAt !== undefined) return bad('invalid_body', `the MessagePack string at byte ${invalidAt} is not valid UTF-8: send strings encoded as UTF-8 (bytes go in bin)`);
    return { ok: true, value };
  }
  if (type === '' || JSON_TYPE.test(type)) {
    const charset = type.includes(';') ? CHARSET.exec(type)?.[1] : undefined;
    if (charset !== undefined && !UTF8.test(charset)) {
      return bad('unsupported_charset', `charset ${charset} is not accepted: send the body as UTF-8 (charset=utf-8, or no charset)`, 415);
    }
    if (!isUtf8(bytes)) return bad('invalid_body', 'the body is not valid UTF-8: send JSON encoded as UTF-8');
    try {
      return { ok: true, value: JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')) };
    } catch (err) {
      return bad('invalid_body', `the body is not valid JSON: ${(err as Error).message}`);
    }
  }
  return bad('unsupported_media_type', `content-type ${type} is not accepted: send application/json or application/msgpack`, 415);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

/** The events of a body: one event object, an array of events, or `{ "events": [...] }`. */
export function eventsOf(body: unknown, maxBatch: number): BodyResult<unknown[]> {
  let events: unknown[];
  if (Array.isArray(body)) events = body;
  else if (isRecord(body) && Object.hasOwn(body, 'events')) {
    const extra = Object.keys(body).filter((key) => key !== 'events');
    if (extra.length) return bad('invalid_body', `unknown top-level field(s) ${extra.join(', ')}: send { "events": [...] }`);
    if (!Array.isArray(body.events)) return bad('invalid_body', '"events" must be an array of events');
    events = body.events;
  } else if (isRecord(body)) events = [body];
  else return bad('invalid_body', 'the body must be an event object, an array of events, or { "events": [...] }');
  if (events.length === 0) return bad('empty_batch', 'the body holds no events');
  if (events.length > maxBatch) return bad('batch_too_large', `${events.length} events in one request; at most ${maxBatch} are accepted`);
  return { ok: true, value: events };
}

function fieldErrors(issues: readonly z.core.$ZodIssue[]): FieldError[] {
  const errors: FieldError[] = [];
  for (const issue of issues) {
    const base = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) errors.push({ field: base ? `${base}.${key}` : key, message: 'unknown field' });
    } else errors.push({ field: base, message: issue.message });
  }
  return errors;
}

export interface TimeWindow {
  /** Server clock, epoch ms. */
  now: number;
  maxFutureSeconds: number;
  maxAgeDays: number;
  /** The earliest recorded time accepted whatever the age (epoch ms), e.g. 0: the stores hold no time before 1970. */
  notBefore?: number;
}

/** Why a recorded time falls outside the accepted window, or undefined when it is inside. */
export function timeWindowError(recordedAt: number, window: TimeWindow): string | undefined {
  const ahead = recordedAt - window.now;
  if (ahead > window.maxFutureSeconds * 1000) {
    return `recorded_timestamp is ${Math.ceil(ahead / 1000)} s ahead of the server clock; at most ${window.maxFutureSeconds} s in the future is accepted`;
  }
  if (window.notBefore !== undefined && recordedAt < window.notBefore) {
    return `recorded_timestamp is before ${new Date(window.notBefore).toISOString()}, the earliest time accepted (the event store holds no earlier time)`;
  }
  const oldest = window.now - window.maxAgeDays * 86_400_000;
  if (recordedAt < oldest) {
    return `recorded_timestamp is older than ${window.maxAgeDays} days (the oldest accepted now is ${new Date(oldest).toISOString()})`;
  }
  return undefined;
}

export type Checked = { ok: true; event: WireEvent; recordedAt: number } | { ok: false; errors: FieldError[] };

/** Validates one wire event: every schema error, plus the time window (checked even when other fields fail). */
export function checkEvent(raw: unknown, window: TimeWindow): Checked {
  if (isRecord(raw) && raw.recorded_timestamp instanceof Date) {
    // A MessagePack timestamp decodes to a Date: take it as the instant it is.
    const time = raw.recorded_timestamp.getTime();
    if (!Number.isNaN(time)) raw.recorded_timestamp = new Date(time).toISOString();
  }
  const fast = fastCheck(raw);
  if (fast) {
    const recordedAt = Date.parse(fast.recorded_timestamp);
    const outside = timeWindowError(recordedAt, window);
    if (outside) return { ok: false, errors: [{ field: 'recorded_timestamp', message: outside }] };
    return { ok: true, event: fast, recordedAt };
  }
  const parsed = wireEventSchema.safeParse(raw);
  if (parsed.success) {
    const recordedAt = Date.parse(parsed.data.recorded_timestamp);
    const outside = timeWindowError(recordedAt, window);
    if (outside) return { ok: false, errors: [{ field: 'recorded_timestamp', message: outside }] };
    return { ok: true, event: parsed.data, recordedAt };
  }
  const errors = fieldErrors(parsed.error.issues);
  if (isRecord(raw) && typeof raw.recorded_timestamp === 'string' && !errors.some((e) => e.field === 'recorded_timestamp')) {
    const recordedAt = Date.parse(raw.recorded_timestamp);
    const outside = Number.isNaN(recordedAt) ? undefined : timeWindowError(recordedAt, window);
    if (outside) errors.push({ field: 'recorded_timestamp', message: outside });
  }
  return { ok: false, errors };
}

/**
 * SHA-256 digests of the API keys seen lately, kept briefly (a minute, a bounded number) so a
 * client sending request after request with the same key is not hashed every time. Only the
 * digest leaves this process; the cache is in memory and forgets.
 */
class DigestCache {
  private entries = new Map<string, { digest: string; until: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly max: number,
  ) {}

  of(rawKey: string, now: number): string {
    const cached = this.entries.get(rawKey);
    if (cached && cached.until > now) return cached.digest;
    if (this.entries.size >= this.max) this.entries = new Map();
    const digest = hashApiKey(rawKey);
    this.entries.set(rawKey, { digest, until: now + this.ttlMs });
    return digest;
  }
}

const digests = new DigestCache(60_000, 10_000);

export interface NormalizedBatch {
  accepted: UsageEvent[];
  duplicates: DuplicateItem[];
  rejected: RejectedItem[];
}

/**
 * Turns the raw events of one request into UsageEvents: validated, the API key replaced by its
 * hash (each distinct key hashed once per request), a random nonce each, times in epoch ms.
 * The first valid event of an event_id is accepted; later ones in the same request are duplicates.
 */
export function normalizeBatch(tenantId: string, raws: readonly unknown[], window: TimeWindow): NormalizedBatch {
  const accepted: UsageEvent[] = [];
  const duplicates: DuplicateItem[] = [];
  const rejected: RejectedItem[] = [];
  const seen = new Set<string>();
  const hashes = new Map<string, string>();
  const nonces = randomBytes(8 * raws.length);
  for (let index = 0; index < raws.length; index++) {
    const raw = raws[index];
    const checked = checkEvent(raw, window);
    if (!checked.ok) {
      const eventId = isRecord(raw) && typeof raw.event_id === 'string' ? raw.event_id.slice(0, 256) : undefined;
      rejected.push({ index, ...(eventId !== undefined ? { event_id: eventId } : {}), errors: checked.errors });
      continue;
    }
    const event = checked.event;
    if (seen.has(event.event_id)) {
      duplicates.push({ index, event_id: event.event_id });
      continue;
    }
    seen.add(event.event_id);
    let credential: Credential;
    if (event.api_key !== undefined) {
      let keyHash = hashes.get(event.api_key);
      if (keyHash === undefined) hashes.set(event.api_key, (keyHash = digests.of(event.api_key, window.now)));
      credential = { kind: 'api_key', keyHash };
    } else credential = { kind: 'client_id', clientId: event.client_id! };
    accepted.push(toUsageEvent(tenantId, event, credential, nonces.toString('hex', index * 8, index * 8 + 8), checked.recordedAt, window.now));
  }
  return { accepted, duplicates, rejected };
}

/**
 * The pipeline's form of a valid wire event. Absent optional fields stay undefined, and the codec
 * writes them so: every event carries the same keys (one msgpack record, one hidden class when
 * decoded). One object literal, no spreads: this runs for every event. Session control events
 * carry no invocation: zero usage, so nothing downstream can bill them.
 */
function toUsageEvent(
  tenantId: string,
  event: WireEvent,
  credential: Credential,
  ingestNonce: string,
  recordedAt: number,
  ingestedAt: number,
): UsageEvent {
  const call = 'tool_name' in event ? event : undefined;
  return {
    tenantId,
    eventId: event.event_id,
    eventType: event.event_type,
    credential,
    ingestNonce,
    recordedAt,
    ingestedAt,
    reportedAgentId: event.agent_id,
    sessionId: event.session_id,
    toolName: call?.tool_name,
    mcpServerId: call?.mcp_server_id,
    model: call?.model,
    durationMs: call?.execution_duration_ms ?? 0,
    status: call?.execution_status ?? 'SUCCESS',
    inputTokens: call?.input_tokens ?? 0,
    outputTokens: call?.output_tokens ?? 0,
    retryCount: call?.retry_count ?? 0,
    isParallel: call?.is_parallel_call ?? false,
    parentInvocationId: call?.parent_tool_invocation_id ?? undefined,
    errorType: call?.error_type ?? undefined,
    httpStatus: event.event_type === 'api.request' ? event.http_status : undefined,
  };
}
