import { Decoder, Encoder } from '@msgpack/msgpack';

/**
 * Stream entries carry one msgpack field. bigint (money in nano-units) round-trips as int64,
 * so no amount is ever squeezed through a JS number on its way between stages.
 */
const encoder = new Encoder({ useBigInt64: true, ignoreUndefined: true });
const decoder = new Decoder({ useBigInt64: true });

export function encodePayload(value: unknown): Buffer {
  const bytes = encoder.encode(value);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function decodePayload<T>(bytes: Uint8Array): T {
  return decoder.decode(bytes) as T;
}
