import { encode, ExtData } from '@msgpack/msgpack';
import { describe, expect, it } from 'vitest';
import { firstInvalidUtf8String } from './msgpack-text.js';

/** `encode(value)` with the bytes of `marker` (an ASCII string in it) replaced by `replacement`, and where the marker was. */
function withBytes(value: unknown, marker: string, replacement: number[]): Uint8Array & { at: number } {
  const bytes = encode(value);
  const at = Buffer.from(bytes).indexOf(Buffer.from(marker));
  expect(at).toBeGreaterThan(0);
  bytes.set(replacement, at);
  return Object.assign(bytes, { at });
}

describe('firstInvalidUtf8String', () => {
  it('passes UTF-8 strings of every length header, and bytes outside strings that are not UTF-8', () => {
    const value = {
      fix: 'héllo ✓ 𝄞',
      str8: 'é'.repeat(40),
      str16: 'ü'.repeat(300),
      str32: 'x'.repeat(70_000),
      bin: new Uint8Array([0xff, 0xfe, 0xc1, 0xa1]),
      numbers: [0, -1, -33, 200, 70_000, 2 ** 33, -(2 ** 33), 1.5, 2 ** 70],
      nested: [{ deep: ['ok', null, true, false] }],
      big: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
      when: new Date(1_700_000_000_123),
    };
    expect(firstInvalidUtf8String(encode(value))).toBeUndefined();
  });

  it('finds a value string that is not UTF-8, in a map, an array or a long string', () => {
    expect(firstInvalidUtf8String(withBytes({ event_id: 'evt_AB' }, 'AB', [0xff, 0x41]))).toBeDefined();
    expect(firstInvalidUtf8String(withBytes({ event_id: 'evt_AB' }, 'AB', [0x80, 0x41]))).toBeDefined();
    expect(firstInvalidUtf8String(withBytes([1, ['ok', 'xxCD']], 'CD', [0xc3, 0x28]))).toBeDefined();
    expect(firstInvalidUtf8String(withBytes({ text: `${'a'.repeat(40)}YY` }, 'YY', [0xf0, 0x28]))).toBeDefined();
    expect(firstInvalidUtf8String(withBytes({ text: `${'a'.repeat(300)}ZZ` }, 'ZZ', [0xed, 0xa0]))).toBeDefined();
  });

  it('follows every kind of value to the string after them (the offset is its header)', () => {
    // Every payload byte is 0xDB (or text of U+06DB, bytes DB 9B): a scan that loses its place
    // reads a str 32 header with a length past the end and gives up, instead of the offset.
    const dbText = (n: number) => '\u06db'.repeat(n);
    const dbBytes = (n: number) => new Uint8Array(n).fill(0xdb);
    const dbDouble = Buffer.from('dbdbdbdbdbdbdbdb', 'hex').readDoubleBE(0);
    const dbFloat = Buffer.from('dbdbdbdb', 'hex').readFloatBE(0);
    const values = {
      ints: [219, -37, 56_283, -9_253, 3_688_618_971, -606_348_325, 0xdbdbdbdbdbdbdbdbn, -0x2424242424242425n, dbDouble],
      strings: [dbText(8), dbText(20), dbText(200), dbText(35_000)],
      bins: [dbBytes(40), dbBytes(300), dbBytes(70_000)],
      exts: [1, 2, 4, 8, 16, 3, 300, 70_000].map((n) => new ExtData(1, dbBytes(n))),
      // Counts of 0xDBDB and 0x0001DBDB: their headers are DC DB DB, DD 00 01 DB DB, ...
      array16: new Array(0xdbdb).fill(219),
      array32: new Array(0x1dbdb).fill(219),
      map16: Object.fromEntries(Array.from({ length: 0xdbdb }, (_, i) => [`${dbText(2)}${i}`, 56_283])),
      map32: Object.fromEntries(Array.from({ length: 0x1dbdb }, (_, i) => [`${dbText(2)}${i}`, 219])),
    };
    const bytes = Buffer.concat([encode(values, { useBigInt64: true }), encode(dbFloat, { forceFloat32: true }), encode({ last: 'WW' })]);
    const at = bytes.indexOf(Buffer.from('WW'));
    bytes.set([0xc0, 0x80], at);
    expect(firstInvalidUtf8String(bytes)).toBe(at - 1);
    expect(firstInvalidUtf8String(bytes.subarray(0, at - 1))).toBeUndefined();
  });

  it('finds a map key that is not UTF-8, and names the byte where its header is', () => {
    const bytes = withBytes({ QQ: 1 }, 'QQ', [0xe2, 0x82]);
    expect(firstInvalidUtf8String(bytes)).toBe(1);
  });

  it('leaves a truncated body to the decoder', () => {
    const bytes = encode({ tool: 'search' });
    expect(firstInvalidUtf8String(bytes.subarray(0, bytes.length - 2))).toBeUndefined();
  });
});
