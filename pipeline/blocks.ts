import { randomBytes } from 'node:crypto';
import { decodePayload, decodeSequence, encodeLayer, encodePayload } from './codec.js';

/**
 * The wire format of a stream entry. The unit on a stream is a block of events (the events of
 * one ingest request for one partition, bounded), so that every hop pays its costs (XADD, read,
 * ack, Lua arguments) once per block rather than once per event:
 *
 *   b  a msgpack sequence: the array of the events' payloads, then any number of layers, in
 *      order, each applied to the events as the layers before it left them:
 *        - an array with one entry per event: the top-level fields a stage set on that event
 *          (merged over the payload), or null when it set none; a value several events share
 *          (one attribution per credential, one subscription per subscriber) is written once
 *          and referred to after (msgpack structured clone: codec.ts, encodeLayer);
 *        - a map { drop: [indexes] }: the events a stage did not forward (ledger-write drops a
 *          duplicate), taken out; the layers after it have one entry per event left. A reader
 *          from before drop layers refuses such a block (a layer that is not an array), so a
 *          dropped event is never counted by a reader that would not see it dropped.
 *   o  origin id of the block: the same on every redelivery, so a consumer can record the
 *      blocks it applied (one row per block, not per event)
 *   t  (optional) the events' tags, one comma-joined list per event, joined by newlines
 *
 * A stage that forwards a block as it got it plus a field or two (`{ ...event, cost }`), or some
 * of its events in order, writes the `b` it read, byte for byte, and its layers after it
 * (blockWithLayer): encoding every event whole again at every hop was a third of the busy time
 * of the process that runs the stages before the ledger (BENCHMARKS.md). A block written whole is
 * a sequence of one value.
 *
 * A block of one event is written as a single entry, the format every tool reads:
 *
 *   d  msgpack payload of the event
 *   t  (optional) comma-joined tags
 *
 * Its origin is its stream entry id.
 */
/**
 * `g` (forGroup) names the one consumer group an entry is for: an event split off a block (its
 * stage failed it alone, or the block was delivered too often) or a dead letter replayed goes back
 * on the stream every group of it reads, and the groups that applied it with its block must not
 * apply it again. The others ack it without handling it.
 */
export const FIELD = { single: 'd', block: 'b', origin: 'o', tags: 't', forGroup: 'g' } as const;

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
  /** The `b` field as read: what blockWithLayer extends. */
  blockBytes?: Buffer;
  /** The `g` field: the one consumer group this entry is for (an event split off, or a dead letter replayed). */
  forGroup?: string;
}

/**
 * Under vitest every decoded payload is deeply frozen. A stage that changed its input in place
 * (`event.x = 1` or `event.attribution.y = 2`) and forwarded it would see its change missing
 * from the layer (blockWithLayer compares with the input by identity), and the stages after it
 * would bill from the event as it was: in tests such a change throws instead.
 */
const FREEZE_DECODED = process.env.VITEST !== undefined;

const splitTags = (text: string): string[] => (text ? text.split(',') : []);

/**
 * The payloads of a block this process wrote itself, when it still holds them (SharedReads): the
 * block's origin and its `b` field as read; undefined when they must be decoded.
 */
export type HandedPayloads = (origin: string, block: Buffer) => readonly unknown[] | undefined;

/** Decodes an entry's fields; throws when the entry carries no payload or an undecodable one. */
export function decodeEntry<T>(id: string, fields: Buffer[], handed?: HandedPayloads): DecodedEntry<T> {
  let single: Buffer | undefined;
  let block: Buffer | undefined;
  let origin: string | undefined;
  let tags = '';
  let forGroup: string | undefined;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i].toString();
    if (name === FIELD.single) single = fields[i + 1];
    else if (name === FIELD.block) block = fields[i + 1];
    else if (name === FIELD.origin) origin = fields[i + 1].toString();
    else if (name === FIELD.tags) tags = fields[i + 1].toString();
    else if (name === FIELD.forGroup) forGroup = fields[i + 1].toString();
  }
  if (block !== undefined) {
    const kept = origin === undefined ? undefined : handed?.(origin, block);
    const payloads = (kept ?? mergedLayers(decodeSequence(block))) as T[];
    if (FREEZE_DECODED) {
      if (kept) assertSameAsDecoded(kept, block);
      payloads.forEach(deepFreeze);
    }
    const perEvent = tags ? tags.split('\n') : [];
    return {
      origin: origin ?? id,
      block: true,
      events: payloads.map((payload, i) => ({ payload, tags: splitTags(perEvent[i] ?? '') })),
      blockBytes: block,
      ...(forGroup === undefined ? {} : { forGroup }),
    };
  }
  if (single === undefined) throw new Error('entry has no payload field');
  const payload = decodePayload<T>(single);
  if (payload === undefined) throw new Error('entry has no payload field');
  if (FREEZE_DECODED) deepFreeze(payload);
  return { origin: origin ?? id, block: false, events: [{ payload, tags: splitTags(tags) }], ...(forGroup === undefined ? {} : { forGroup }) };
}

/**
 * Under vitest, payloads handed over instead of decoded are checked against the bytes decoded:
 * the same values of the same types (a bigint is not a number), with the same fields (in any
 * order). A field set to undefined counts as a missing one: a stage may hand on an object that
 * names every field its events will ever carry, those not set yet undefined (one hidden class for
 * all of them), while its layer carries only what it set.
 */
function assertSameAsDecoded(handed: readonly unknown[], block: Buffer): void {
  const decoded = mergedLayers(decodeSequence(block));
  const path = firstDifference(handed, decoded, '');
  if (path !== undefined) throw new Error(`a block handed to the next stage differs from its bytes decoded at ${path || 'the top'}`);
}

/** Where two values first differ (a path like `[3].cost`), or undefined when they are the same. */
function firstDifference(a: unknown, b: unknown, path: string): string | undefined {
  if (Object.is(a, b)) return undefined;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return path;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return path;
  if (a instanceof Date) return a.getTime() === (b as Date).getTime() ? undefined : path;
  if (ArrayBuffer.isView(a)) return Buffer.compare(a as Uint8Array, b as Uint8Array) === 0 ? undefined : path;
  if (Array.isArray(a)) {
    const other = b as unknown[];
    if (a.length !== other.length) return path;
    for (let i = 0; i < a.length; i++) {
      const at = firstDifference(a[i], other[i], `${path}[${i}]`);
      if (at !== undefined) return at;
    }
    return undefined;
  }
  const keys = definedKeys(a);
  const otherKeys = definedKeys(b);
  // The order of the fields may differ: a stage's output names its fields in its own order, decoding puts a layer's fields last.
  if (keys.length !== otherKeys.length || keys.some((key) => !Object.hasOwn(b, key))) return `${path} (its fields: ${keys.join(', ')} / ${otherKeys.join(', ')})`;
  for (const key of keys) {
    const at = firstDifference((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key], `${path}.${key}`);
    if (at !== undefined) return at;
  }
  return undefined;
}

/** The payloads of a block: its base with its layers applied, in order (fields set, events dropped). */
function mergedLayers([base, ...layers]: unknown[]): unknown[] {
  if (!Array.isArray(base)) throw new Error('block entry holds no events');
  let payloads: unknown[] = base;
  for (const layer of layers) {
    if (isRecord(layer) && Array.isArray(layer.drop)) {
      payloads = withoutDropped(payloads, layer.drop);
      continue;
    }
    if (!Array.isArray(layer) || layer.length !== payloads.length) {
      throw new Error(`a layer of the block does not have one entry for each of its ${payloads.length} events`);
    }
    layer.forEach((fields, i) => {
      if (fields !== null && fields !== undefined) Object.assign(payloads[i] as object, fields);
    });
  }
  if (payloads.length === 0) throw new Error('block entry holds no events');
  return payloads;
}

/** The payloads but those at `drop` (increasing indexes into `payloads`). */
function withoutDropped(payloads: unknown[], drop: unknown[]): unknown[] {
  const kept: unknown[] = [];
  let next = 0;
  for (const index of drop) {
    if (!Number.isInteger(index) || (index as number) < next || (index as number) >= payloads.length) {
      throw new Error(`a drop layer of the block names event ${String(index)} of ${payloads.length} out of order or range`);
    }
    for (; next < (index as number); next++) kept.push(payloads[next]);
    next++;
  }
  for (; next < payloads.length; next++) kept.push(payloads[next]);
  return kept;
}

export function deepFreeze(value: unknown): void {
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value) || Object.isFrozen(value)) return;
  Object.freeze(value);
  for (const item of Object.values(value)) deepFreeze(item);
}

/**
 * The `b` field of a block whose events a stage forwarded one for one, in order, with some
 * top-level fields set: `base` (the `b` field it read) and, after it, a layer of the fields of
 * each output that are not the very values of its input (compared by identity: a handler makes
 * a new object for anything it changes, which the frozen payloads enforce under vitest).
 * Undefined when an output is not an object or drops a field of its input: the block is then
 * encoded whole. `inputs` are the events each output came from: with `dropped` (the increasing
 * indexes, in the block as read, of the events it did not forward), a drop layer comes first.
 *
 * `sets`, when given, names the only fields the stage sets (StageDefinition.sets): just those are
 * compared, not every field of every event. Under vitest every field is compared as well, and a
 * stage that changed a field it did not name fails there, not silently in production.
 */
export function blockWithLayer(
  base: Buffer,
  inputs: readonly unknown[],
  outputs: readonly unknown[],
  sets?: readonly string[],
  dropped: readonly number[] = [],
): Buffer | undefined {
  const bytes = blockPartsWithLayer(base, inputs, outputs, sets, dropped);
  return bytes === undefined || Buffer.isBuffer(bytes) ? bytes : Buffer.concat(bytes.bulkParts);
}

/**
 * A block's `b` field as the parts it is made of (the bytes as read, then the layers a stage
 * adds), never joined in memory: Redis gets them as one argument (patches/ioredis+5.9.3.patch
 * writes the parts one after the other in one writev). Joining them cost every hop a copy of
 * the block and a Buffer of its size, and such Buffers, not a full young generation, were what
 * made V8 collect in the process of the stages before the ledger (BENCHMARKS.md, issue 13,
 * thirty-third session).
 */
export interface BlockParts {
  readonly bulkParts: readonly Buffer[];
}

/** A block's `b` field to write: whole, or in parts. */
export type BlockBytes = Buffer | BlockParts;

/** True when `bytes` (whole or in parts) are the bytes of `read`. */
export function sameBlockBytes(bytes: BlockBytes, read: Buffer): boolean {
  if (Buffer.isBuffer(bytes)) return bytes.equals(read);
  let at = 0;
  for (const part of bytes.bulkParts) {
    if (at + part.length > read.length || part.compare(read, at, at + part.length) !== 0) return false;
    at += part.length;
  }
  return at === read.length;
}

/** blockWithLayer without joining the parts: the base alone when no layer is needed. */
export function blockPartsWithLayer(
  base: Buffer,
  inputs: readonly unknown[],
  outputs: readonly unknown[],
  sets?: readonly string[],
  dropped: readonly number[] = [],
): BlockBytes | undefined {
  if (inputs.length !== outputs.length || inputs.length === 0) return undefined;
  const layer = layerOver(inputs, outputs, sets);
  if (layer && sets && FREEZE_DECODED) {
    const full = layerOver(inputs, outputs);
    const same = full?.every((fields, i) => sameFields(fields, layer[i]));
    if (!same) throw new Error(`a stage changed fields of the events it forwards besides the ones it names in sets (${sets.join(', ')})`);
  }
  if (!layer) return undefined;
  const parts = [base];
  if (dropped.length) parts.push(encodePayload({ drop: dropped }));
  if (layer.some((fields) => fields !== null)) parts.push(encodeLayer(layer));
  return parts.length === 1 ? base : { bulkParts: parts };
}

type Layer = (Record<string, unknown> | null)[];

/**
 * Each output's fields that differ from its input's: the named ones, or every field; undefined
 * when an output cannot be a layer over its input (not an object, or a field of the input dropped).
 */
function layerOver(inputs: readonly unknown[], outputs: readonly unknown[], sets?: readonly string[]): Layer | undefined {
  const layer: Layer = new Array(outputs.length);
  for (let i = 0; i < outputs.length; i++) {
    const input = inputs[i];
    const output = outputs[i];
    if (!isRecord(output) || !isRecord(input)) return undefined;
    for (const key of sets ?? Object.keys(input)) if (Object.hasOwn(input, key) && !Object.hasOwn(output, key)) return undefined;
    let fields: Record<string, unknown> | null = null;
    for (const key of sets ?? Object.keys(output)) {
      if (!Object.hasOwn(output, key)) continue;
      const value = output[key];
      if (value === input[key] && (value !== undefined || Object.hasOwn(input, key))) continue;
      fields ??= {};
      fields[key] = value;
    }
    layer[i] = fields;
  }
  return layer;
}

/** The same fields set to the same values; a field set to undefined is as one not set (see assertSameAsDecoded). */
function sameFields(a: Record<string, unknown> | null, b: Record<string, unknown> | null): boolean {
  const keys = a === null ? [] : definedKeys(a);
  const otherKeys = b === null ? [] : definedKeys(b);
  return keys.length === otherKeys.length && keys.every((key) => a![key] === b![key]);
}

function definedKeys(value: object): string[] {
  return Object.keys(value).filter((key) => (value as Record<string, unknown>)[key] !== undefined);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && !ArrayBuffer.isView(value);
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
