import { Decoder, Encoder } from '@msgpack/msgpack';

/**
 * Stream entries carry one msgpack field. bigint (money in nano-units) round-trips as int64,
 * so no amount is ever squeezed through a JS number on its way between stages.
 */
const encoder = new Encoder({ useBigInt64: true, ignoreUndefined: true });
const decoder = new Decoder({ useBigInt64: true });

/** msgpack holds an integer as int64 or uint64; the encoder would silently wrap anything outside. */
const SMALLEST = -(2n ** 63n);
const BEYOND_LARGEST = 2n ** 64n;
const writeBigInt = (encoder as unknown as { encodeBigInt64(value: bigint): void }).encodeBigInt64;
(encoder as unknown as { encodeBigInt64(value: bigint): void }).encodeBigInt64 = function (value: bigint) {
  if (value < SMALLEST || value >= BEYOND_LARGEST) throw new RangeError(`${value} does not fit a 64-bit integer: refusing to wrap it`);
  writeBigInt.call(this, value);
};

export function encodePayload(value: unknown): Buffer {
  const bytes = encoder.encode(value);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function decodePayload<T>(bytes: Uint8Array): T {
  return decoder.decode(bytes) as T;
}
