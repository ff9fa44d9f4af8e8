import { describe, expect, it } from 'vitest';
import { decodePayload, decodeSequence, encodePayload } from './codec.js';

describe('codec', () => {
  it('round-trips money as bigint, whatever its size within 64 bits, and plain numbers as numbers', () => {
    const value = { zero: 0n, small: 7n, negative: -5n, largest: 2n ** 63n - 1n, unsigned: 2n ** 64n - 1n, ms: 1_764_490_000_123, ratio: 1.5 };
    const back = decodePayload<typeof value>(encodePayload(value));
    expect(back).toEqual(value);
    expect(typeof back.zero).toBe('bigint');
    expect(typeof back.ms).toBe('number');
  });

  it('decodes a block of events of several shapes, each payload on its own (no state shared between encoders)', () => {
    const block = [
      { eventId: 'e1', cost: { total: 10n }, sessionId: 's1' },
      { eventId: 'e2', cost: { total: 20n } },
      { eventId: 'e3', cost: { total: 30n }, sessionId: 's3' },
    ];
    const first = encodePayload(block);
    const second = encodePayload([{ other: 'shape' }]);
    expect(decodePayload(second)).toEqual([{ other: 'shape' }]);
    expect(decodePayload(first)).toEqual(block);
  });

  it('is smaller than one map per event for a block of same-shaped events', () => {
    const block = Array.from({ length: 100 }, (_, i) => ({ tenantId: 'ten_1', eventId: `evt_${i}`, eventType: 'mcp.tool_invoked', durationMs: i }));
    const one = encodePayload(block[0]).length;
    expect(encodePayload(block).length).toBeLessThan(one * 100 * 0.6);
  });

  it('compiles the reader of a record shape once per process, not once per payload that defines it (patches/msgpackr)', () => {
    const shape = `shape_${Math.random().toString(36).slice(2)}`;
    const payloads = Array.from({ length: 5 }, (_, p) => encodePayload(Array.from({ length: 10 }, (_, i) => ({ [shape]: `${p}-${i}`, n: i }))));
    const original = globalThis.Function;
    let compiled = 0;
    globalThis.Function = new Proxy(original, {
      construct(target, args) {
        compiled++;
        return Reflect.construct(target, args);
      },
    });
    try {
      for (const [p, payload] of payloads.entries()) {
        expect(decodePayload(payload)).toEqual(Array.from({ length: 10 }, (_, i) => ({ [shape]: `${p}-${i}`, n: i })));
      }
    } finally {
      globalThis.Function = original;
    }
    expect(compiled).toBe(1);
  });

  it('keeps apart record shapes whose keys read alike once joined', () => {
    const shapes = [['a\u0000b'], ['a', 'b'], ['a,b'], ['a', 'b', ''], ['"a","b"']];
    for (const round of [1, 2]) {
      for (const keys of shapes) {
        const objects = Array.from({ length: 6 }, (_, i) => Object.fromEntries(keys.map((key, k) => [key, `${round}-${i}-${k}`])));
        expect(decodePayload(encodePayload(objects))).toEqual(objects);
      }
    }
  });

  it('refuses an integer wider than 64 bits instead of wrapping it', () => {
    expect(() => encodePayload({ cost: { total: 2n ** 64n } })).toThrow(/18446744073709551616 does not fit a 64-bit integer/);
    expect(() => encodePayload([{ ok: 1n }, { by: -(2n ** 63n) - 1n }])).toThrow(/does not fit a 64-bit integer/);
  });

  it('decodes separately encoded payloads written one after the other, each bringing its own records over the same record ids', () => {
    // More shapes than one-byte record ids hold (64), in both values, so the second redefines ids the first used.
    const first = Array.from({ length: 100 }, (_, i) => ({ [`key${i}`]: i, eventId: `e${i}`, cost: { total: BigInt(i) } }));
    const second = Array.from({ length: 100 }, (_, i) => (i % 7 === 0 ? null : { [`other${i % 80}`]: `v${i}`, total: -BigInt(i) }));
    const third = [{ eventId: 'x', cost: { total: 2n ** 63n - 1n } }];
    const sequence = Buffer.concat([encodePayload(first), encodePayload(second), encodePayload(third)]);
    expect(decodeSequence(sequence)).toEqual([first, second, third]);
    expect(decodeSequence(encodePayload(first))).toEqual([first]);
  });
});
