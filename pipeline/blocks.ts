import { randomBytes } from 'node:crypto';
import { decodePayload, encodePayload } from './codec.js';

/**
 * The wire format of a stream entry. The unit on a stream is a block of events (the events of
 * one ingest request for one partition, bounded), so that every hop pays its costs (XADD, read,
 * ack, Lua arguments) once per block rather than once per event:
 *
 *   b  msgpack array of the events' payloads
 *   o  origin id of the block: the same on every redelivery, so a consumer can record the
 *      blocks it applied (one row per block, not per event)
 *   t  (optional) the events' tags, one comma-joined list per event, joined by newlines
 *
 * A block of one event is written as a single entry, the format every tool reads:
 *
 *   d  msgpack payload of the event
 *   t  (optional) comma-joined tags
 *
 * Its origin is its stream entry id.
 */
export const FIELD = { single: 'd', block: 'b', origin: 'o', tags: 't' } as const;

/** Most events in one block: an ingest request larger than this is cut into several blocks. */
export const MAX_BLOCK_EVENTS = 500;

export interface DecodedEvent<T> {
  payload: T;
  tags: string[];
}

export interface DecodedEntry<T> {
  origin: string;
  /** True for a `b` entry (even of one event), false for a single `d` entry. */
  block: boolean;
  events: DecodedEvent<T>[];
}

const splitTags = (text: string): string[] => (text ? text.split(',') : []);

/** Decodes an entry's fields; throws when the entry carries no payload or an undecodable one. */
export function decodeEntry<T>(id: string, fields: Buffer[]): DecodedEntry<T> {
  let single: Buffer | undefined;
  let block: Buffer | undefined;
  let origin: string | undefined;
  let tags = '';
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i].toString();
    if (name === FIELD.single) single = fields[i + 1];
    else if (name === FIELD.block) block = fields[i + 1];
    else if (name === FIELD.origin) origin = fields[i + 1].toString();
    else if (name === FIELD.tags) tags = fields[i + 1].toString();
  }
  if (block !== undefined) {
    const payloads = decodePayload<T[]>(block);
    if (!Array.isArray(payloads) || payloads.length === 0) throw new Error('block entry holds no events');
    const perEvent = tags ? tags.split('\n') : [];
    return {
      origin: origin ?? id,
      block: true,
      events: payloads.map((payload, i) => ({ payload, tags: splitTags(perEvent[i] ?? '') })),
    };
  }
  if (single === undefined) throw new Error('entry has no payload field');
  const payload = decodePayload<T>(single);
  if (payload === undefined) throw new Error('entry has no payload field');
  return { origin: origin ?? id, block: false, events: [{ payload, tags: splitTags(tags) }] };
}

/** A fresh origin id for a block first written to a stream (the ingest API): 12 url-safe characters. */
export function newOrigin(): string {
  return randomBytes(9).toString('base64url');
}

/** The fields of an entry holding these payloads: a single entry for one, a block otherwise. */
export function entryFields(payloads: readonly unknown[], origin: string): (string | Buffer)[] {
  if (payloads.length === 1) return [FIELD.single, encodePayload(payloads[0])];
  return [FIELD.block, encodePayload(payloads), FIELD.origin, origin];
}

/** Every event of a stream's entries, in order (tools and tests that read a stream by hand). */
export function eventsOfEntries<T>(entries: [Buffer | string, Buffer[]][]): (DecodedEvent<T> & { id: string; origin: string })[] {
  return entries.flatMap(([id, fields]) => {
    const entry = decodeEntry<T>(id.toString(), fields);
    return entry.events.map((event) => ({ ...event, id: id.toString(), origin: entry.origin }));
  });
}
