import { Packr } from 'msgpackr';

/**
 * Stream entries carry msgpack. bigint (money in nano-units) round-trips as int64, so no amount
 * is ever squeezed through a JS number on its way between stages.
 *
 * msgpackr's records write an object shape's keys once per payload and refer to it for every
 * other object of that shape, so a block of a hundred events of the same shape is about half the
 * bytes and a quarter of the CPU of plain msgpack maps (measured: 16 us -> 4 us per event to
 * encode and decode). Every payload carries its own record definitions (no shared state between
 * processes), so any process, tool or later version decodes any entry on its own. msgpackr
 * compiles a reader per record shape; patches/msgpackr+1.11.5.patch keeps one per shape for the
 * process, where msgpackr compiled one per payload (BENCHMARKS.md, issue 13, forty-first session).
 */
const PACK_OPTIONS = { useRecords: true, int64AsType: 'bigint', moreTypes: false } as const;
const packr = new Packr(PACK_OPTIONS);

/**
 * A block's layers (pipeline/blocks.ts) are written with msgpackr's structured clone: a value
 * that several events of a layer share (the same object, as key-resolve sets one attribution on
 * every event of a credential and subscription-snapshot one subscription per subscriber) is
 * written once and referred to after. Any decoder reads it (structuredClone is only refused
 * when set to false) and gives the events one shared object, as the stage that wrote it had.
 */
const layerPackr = new Packr({ ...PACK_OPTIONS, structuredClone: true });

export function encodeLayer(value: unknown): Buffer {
  return packWith(layerPackr, value);
}

const SMALLEST = -(2n ** 63n);
const BEYOND_LARGEST = 2n ** 64n;

export function encodePayload(value: unknown): Buffer {
  return packWith(packr, value);
}

/** Packs `value`; an integer beyond 64 bits is refused by name, never wrapped. */
function packWith(packer: Packr, value: unknown): Buffer {
  try {
    return packer.pack(value);
  } catch (error) {
    const wide = error instanceof RangeError ? widestInteger(value) : undefined;
    if (wide !== undefined) throw new RangeError(`${wide} does not fit a 64-bit integer: refusing to wrap it`);
    throw error;
  }
}

export function decodePayload<T>(bytes: Uint8Array): T {
  return packr.unpack(bytes) as T;
}

/**
 * Every value of separately encoded payloads written one after the other (a block's base and its
 * layers: pipeline/blocks.ts). Each carries its own record definitions, so the definitions a later
 * value brings replace those of an earlier one under the same record id before any use.
 */
export function decodeSequence(bytes: Uint8Array): unknown[] {
  return packr.unpackMultiple(bytes) as unknown[];
}

/** The first bigint in a value that msgpack cannot hold as int64 or uint64 (for the error message). */
function widestInteger(value: unknown, depth = 0): bigint | undefined {
  if (typeof value === 'bigint') return value < SMALLEST || value >= BEYOND_LARGEST ? value : undefined;
  if (depth > 32 || value === null || typeof value !== 'object') return undefined;
  for (const item of Array.isArray(value) ? value : Object.values(value)) {
    const wide = widestInteger(item, depth + 1);
    if (wide !== undefined) return wide;
  }
  return undefined;
}
