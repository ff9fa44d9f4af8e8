import { describe, expect, it } from 'vitest';
import { blockPartsWithLayer, blockWithLayer, decodeEntry, entryFields, FIELD, sameBlockBytes } from './blocks.js';
import { decodeSequence, encodePayload } from './codec.js';

type Event = { eventId: string; attribution: { customerId: string }; cost?: { total: bigint; tool: string }; overCap?: boolean };

const events = (n: number): Event[] => Array.from({ length: n }, (_, i) => ({ eventId: `evt_${i}`, attribution: { customerId: `cus_${i % 3}` } }));

/** A `b` entry as the harness reads it: field names and values as buffers. */
function blockEntry(b: Buffer, origin = 'origin-1'): Buffer[] {
  return [Buffer.from(FIELD.block), b, Buffer.from(FIELD.origin), Buffer.from(origin)];
}

function decoded<T>(b: Buffer): T[] {
  return decodeEntry<T>('1-0', blockEntry(b)).events.map((e) => e.payload);
}

describe('blocks: layers', () => {
  it('writes the base as read and a layer after it, and decodes to what the whole block encoded again decodes to', () => {
    const base = entryFields(events(4), 'origin-1')[1] as Buffer;
    const inputs = decoded<Event>(base);
    const outputs = inputs.map((e, i) => ({ ...e, cost: { total: BigInt(i) * 1_000_000_000n, tool: 'search' } }));
    const layered = blockWithLayer(base, inputs, outputs)!;
    expect(layered.subarray(0, base.length).equals(base)).toBe(true);
    expect(layered.length).toBeGreaterThan(base.length);
    expect(decodeSequence(layered)).toHaveLength(2);
    expect(decoded(layered)).toEqual(outputs);
    expect(decoded(layered)).toEqual(decoded(encodePayload(outputs)));
  });

  it('stacks layers hop after hop, a later layer setting a field an earlier one set', () => {
    const base = encodePayload(events(3));
    const read = decoded<Event>(base);
    const first = read.map((e) => ({ ...e, overCap: false }));
    const once = blockWithLayer(base, read, first)!;
    const readAgain = decoded<Event>(once);
    const second = readAgain.map((e, i) => (i === 1 ? { ...e, overCap: true, attribution: { customerId: 'cus_moved' } } : e));
    const twice = blockWithLayer(once, readAgain, second)!;
    expect(twice.subarray(0, once.length).equals(once)).toBe(true);
    expect(decodeSequence(twice)).toHaveLength(3);
    // Only the event that changed is in the second layer.
    expect(decodeSequence(twice)[2]).toEqual([null, { overCap: true, attribution: { customerId: 'cus_moved' } }, null]);
    expect(decoded(twice)).toEqual(second);
  });

  it('drops the events a stage did not forward with a drop layer before its layer, and later layers apply to the events left', () => {
    const base = entryFields(events(5), 'origin-1')[1] as Buffer;
    const read = decoded<Event>(base);
    const kept = [0, 2, 3];
    const outputs = kept.map((k) => ({ ...read[k], overCap: k === 3 }));
    const once = blockWithLayer(base, kept.map((k) => read[k]), outputs, ['overCap'], [1, 4])!;
    expect(once.subarray(0, base.length).equals(base)).toBe(true);
    expect(decodeSequence(once.subarray(base.length))).toEqual([{ drop: [1, 4] }, [{ overCap: false }, { overCap: false }, { overCap: true }]]);
    expect(decoded(once)).toEqual(outputs);
    expect(decoded(once)).toEqual(decoded(encodePayload(outputs)));

    // The next hop drops the middle one of the three left and changes nothing else: just a drop layer.
    const readAgain = decoded<Event>(once);
    const twice = blockWithLayer(once, [readAgain[0], readAgain[2]], [readAgain[0], readAgain[2]], undefined, [1])!;
    expect(decodeSequence(twice.subarray(once.length))).toEqual([{ drop: [1] }]);
    expect(decoded<Event>(twice).map((e) => e.eventId)).toEqual(['evt_0', 'evt_3']);
  });

  it('refuses a drop layer out of order or out of range, and one that leaves no event', () => {
    const base = encodePayload(events(3));
    for (const drop of [[2, 1], [3], [-1], [0.5], [1, 1], [0, 1, 2]]) {
      expect(() => decoded(Buffer.concat([base, encodePayload({ drop })]))).toThrow(/drop layer|holds no events/);
    }
    expect(() => decoded(encodePayload([]))).toThrow(/holds no events/);
  });

  it('keeps money exact through a layer: bigint at both ends of the 64-bit range', () => {
    const base = encodePayload(events(3));
    const totals = [2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n - 1n];
    const inputs = decoded<Event>(base);
    const outputs = inputs.map((e, i) => ({ ...e, cost: { total: totals[i], tool: '' } }));
    const back = decoded<Event>(blockWithLayer(base, inputs, outputs)!);
    expect(back.map((e) => e.cost?.total)).toEqual(totals);
    expect(typeof back[0].cost?.total).toBe('bigint');
  });

  it('refuses an amount beyond 64 bits in a layer by name, as a block encoded whole does', () => {
    const base = encodePayload(events(2));
    const inputs = decoded<Event>(base);
    const outputs = inputs.map((e, i) => ({ ...e, cost: { total: i === 1 ? 2n ** 64n : 1n, tool: 'search' } }));
    expect(() => blockWithLayer(base, inputs, outputs, ['cost'])).toThrow(/18446744073709551616 does not fit a 64-bit integer/);
  });

  it('keeps a field an output sets to undefined, as the whole block encoded again would', () => {
    const base = encodePayload(events(2));
    const inputs = decoded<Event>(base);
    const back = decoded<Event>(blockWithLayer(base, inputs, inputs.map((e) => ({ ...e, overCap: undefined })))!);
    expect(back.map((e) => Object.hasOwn(e, 'overCap'))).toEqual([true, true]);
    expect(back).toEqual(decoded(encodePayload(inputs.map((e) => ({ ...e, overCap: undefined })))));
  });

  it('returns the base itself when no event changed, and nothing (encode it whole) when an output drops a field or is no object', () => {
    const base = encodePayload(events(3));
    const inputs = decoded<Event>(base);
    expect(blockWithLayer(base, inputs, [...inputs])).toBe(base);
    const { attribution: _dropped, ...withoutAttribution } = inputs[2];
    expect(blockWithLayer(base, inputs, [inputs[0], inputs[1], { ...withoutAttribution, overCap: true }])).toBeUndefined();
    expect(blockWithLayer(base, inputs, [inputs[0], inputs[1], 'text'])).toBeUndefined();
    expect(blockWithLayer(base, inputs, inputs.slice(1))).toBeUndefined();
  });

  it('with the fields a stage names (sets), writes the same block as when every field is compared', () => {
    const base = encodePayload(events(4));
    const inputs = decoded<Event>(base);
    const outputs = inputs.map((e, i) => (i === 2 ? e : { ...e, cost: { total: BigInt(i), tool: 'search' }, overCap: i === 1 }));
    const named = blockWithLayer(base, inputs, outputs, ['cost', 'overCap'])!;
    expect(named.equals(blockWithLayer(base, inputs, outputs)!)).toBe(true);
    expect(decoded(named)).toEqual(outputs);
    expect(blockWithLayer(base, inputs, [...inputs], ['cost'])).toBe(base);
    const { attribution: _dropped, ...withoutAttribution } = inputs[0];
    expect(blockWithLayer(base, inputs, [withoutAttribution, ...inputs.slice(1)], ['attribution'])).toBeUndefined();
  });

  it('throws under vitest when a stage changes a field it does not name in sets (production would not see the change)', () => {
    const base = encodePayload(events(2));
    const inputs = decoded<Event>(base);
    const outputs = inputs.map((e) => ({ ...e, cost: { total: 1n, tool: 'search' }, attribution: { customerId: 'cus_other' } }));
    expect(() => blockWithLayer(base, inputs, outputs, ['cost'])).toThrow(/besides the ones it names in sets \(cost\)/);
  });

  it('writes a value that several events of a layer share once, and decodes it to one object with the same fields', () => {
    const base = entryFields(events(100), 'origin-1')[1] as Buffer;
    const inputs = decoded<Event>(base);
    const subscriptions = [0, 1].map((k) => ({ subscriptionId: `sub_${k}_${'x'.repeat(20)}`, ratePlanId: 'plan_abcdefghijklmnopqrst', periodStart: 1_796_083_200_000 }));
    const outputs = inputs.map((e, i) => ({ ...e, subscription: subscriptions[i % 2] }));
    const shared = blockWithLayer(base, inputs, outputs, ['subscription'])!;
    // Each event's own copy of the same value: what the layer would cost without sharing.
    const unshared = blockWithLayer(base, inputs, outputs.map((e) => ({ ...e, subscription: { ...e.subscription } })), ['subscription'])!;
    expect(shared.length - base.length).toBeLessThan((unshared.length - base.length) / 5);
    const back = decoded<Event & { subscription: unknown }>(shared);
    expect(back).toEqual(outputs);
    expect(back[0].subscription).toBe(back[2].subscription);
    expect(back[0].subscription).not.toBe(back[1].subscription);
    expect(decoded(unshared)).toEqual(outputs);
  });

  it('still decodes a block written whole (a sequence of one value), and refuses a layer that does not fit the block', () => {
    const plain = entryFields(events(2), 'o')[1] as Buffer;
    expect(decoded(plain)).toEqual(events(2));
    const short = Buffer.concat([plain, encodePayload([{ overCap: true }])]);
    expect(() => decoded(short)).toThrow(/does not have one entry for each of its 2 events/);
  });

  it('hands out payloads frozen to the bottom under vitest, so a stage that changes its input in place fails its tests', () => {
    const base = encodePayload(events(2));
    const inputs = decoded<Event>(base);
    const layered = blockWithLayer(base, inputs, inputs.map((e) => ({ ...e, cost: { total: 1n, tool: 't' } })))!;
    const [event] = decoded<Event>(layered);
    expect(() => {
      event.overCap = true;
    }).toThrow(TypeError);
    expect(() => {
      event.attribution.customerId = 'cus_other';
    }).toThrow(TypeError);
    expect(() => {
      event.cost!.total = 2n;
    }).toThrow(TypeError);
    const single = decodeEntry<Event>('1-0', [Buffer.from(FIELD.single), encodePayload(events(1)[0])]).events[0].payload;
    expect(Object.isFrozen(single.attribution)).toBe(true);
  });
});

describe('blocks: written in parts', () => {
  it('hands the base as read and the layer as parts, never joined, and compares parts with the bytes read', () => {
    const base = entryFields(events(4), 'origin-1')[1] as Buffer;
    const inputs = decoded<Event>(base);
    const outputs = inputs.map((e) => ({ ...e, overCap: true }));
    const parts = blockPartsWithLayer(base, inputs, outputs, ['overCap'], []);
    if (parts === undefined || Buffer.isBuffer(parts)) throw new Error('expected parts');
    expect(parts.bulkParts[0]).toBe(base);
    const joined = Buffer.concat(parts.bulkParts);
    expect(joined.equals(blockWithLayer(base, inputs, outputs, ['overCap'])!)).toBe(true);
    expect(decoded(joined)).toEqual(outputs);

    expect(sameBlockBytes(parts, joined)).toBe(true);
    expect(sameBlockBytes(parts, joined.subarray(0, joined.length - 1))).toBe(false);
    expect(sameBlockBytes(parts, Buffer.concat([joined, Buffer.from([0])]))).toBe(false);
    const changed = Buffer.from(joined);
    changed[changed.length - 1] ^= 1;
    expect(sameBlockBytes(parts, changed)).toBe(false);
    expect(sameBlockBytes(base, base)).toBe(true);
    // Nothing set: the base alone, as read.
    expect(blockPartsWithLayer(base, inputs, [...inputs], ['overCap'])).toBe(base);
  });
});
