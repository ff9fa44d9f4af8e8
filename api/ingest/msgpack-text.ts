import { isUtf8 } from 'node:buffer';

/**
 * The byte offset of the first MessagePack string (value or map key) whose bytes are not UTF-8,
 * or undefined when every string is. The decoder does not check: it turns such bytes into other
 * characters (0xFF becomes "ÿ"), so an event would be stored as something its sender never sent.
 * Bytes this scan cannot follow (a truncated body, the unused 0xC1) are left to the decoder.
 */
export function firstInvalidUtf8String(bytes: Uint8Array): number | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = bytes.byteLength;
  let pos = 0;
  while (pos < end) {
    const head = bytes[pos];
    let headerLength = 1;
    let payload = 0;
    let isString = false;
    if (head <= 0x7f || head >= 0xe0 || (head >= 0x80 && head <= 0x9f) || head === 0xc0 || head === 0xc2 || head === 0xc3) {
      // fixint, fixmap, fixarray, nil, bool: the header is the whole value (a container's items follow).
    } else if (head >= 0xa0 && head <= 0xbf) {
      payload = head & 0x1f;
      isString = true;
    } else {
      const sized = SIZED[head];
      if (sized === undefined || pos + sized.header > end) return undefined;
      headerLength = sized.header;
      const at = pos + 1;
      payload = sized.length === 1 ? bytes[at] : sized.length === 2 ? view.getUint16(at) : sized.length === 4 ? view.getUint32(at) : sized.fixed;
      payload += sized.extra;
      isString = sized.string;
    }
    const start = pos + headerLength;
    if (start + payload > end) return undefined;
    if (isString && !asciiOnly(bytes, start, start + payload) && !isUtf8(bytes.subarray(start, start + payload))) return pos;
    pos = start + payload;
  }
  return undefined;
}

/** Most strings are ASCII: checked here without a subarray and a native call each. */
function asciiOnly(bytes: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (bytes[i] >= 0x80) return false;
  return true;
}

/**
 * Headers with a size after the first byte: `length` bytes of big-endian payload length (0 for
 * fixed-size values, whose payload is `fixed`), `extra` payload bytes besides (an ext's type byte),
 * `header` bytes in all. Containers (array 16/32, map 16/32) have no payload of their own.
 */
type Sized = { header: number; length: 0 | 1 | 2 | 4; fixed: number; extra: number; string: boolean };
const fixed = (payload: number): Sized => ({ header: 1, length: 0, fixed: payload, extra: 0, string: false });
const lengthOf = (length: 1 | 2 | 4, extra = 0, string = false): Sized => ({ header: 1 + length, length, fixed: 0, extra, string });
const container = (countBytes: number): Sized => ({ header: 1 + countBytes, length: 0, fixed: 0, extra: 0, string: false });

const SIZED: Record<number, Sized> = {
  0xc4: lengthOf(1), // bin 8
  0xc5: lengthOf(2), // bin 16
  0xc6: lengthOf(4), // bin 32
  0xc7: lengthOf(1, 1), // ext 8
  0xc8: lengthOf(2, 1), // ext 16
  0xc9: lengthOf(4, 1), // ext 32
  0xca: fixed(4), // float 32
  0xcb: fixed(8), // float 64
  0xcc: fixed(1), // uint 8
  0xcd: fixed(2),
  0xce: fixed(4),
  0xcf: fixed(8),
  0xd0: fixed(1), // int 8
  0xd1: fixed(2),
  0xd2: fixed(4),
  0xd3: fixed(8),
  0xd4: fixed(2), // fixext 1 (type byte + 1)
  0xd5: fixed(3),
  0xd6: fixed(5),
  0xd7: fixed(9),
  0xd8: fixed(17),
  0xd9: lengthOf(1, 0, true), // str 8
  0xda: lengthOf(2, 0, true), // str 16
  0xdb: lengthOf(4, 0, true), // str 32
  0xdc: container(2), // array 16
  0xdd: container(4), // array 32
  0xde: container(2), // map 16
  0xdf: container(4), // map 32
};
