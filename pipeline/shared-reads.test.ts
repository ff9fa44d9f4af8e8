import { describe, expect, it } from 'vitest';
import { entryFields, FIELD } from './blocks.js';
import { encodePayload } from './codec.js';
import { SharedReads } from './shared-reads.js';

const fields = (payloads: unknown[]) => entryFields(payloads, 'origin-1').map((f) => (typeof f === 'string' ? Buffer.from(f) : f));

describe('SharedReads', () => {
  it('decodes an entry once for the groups of a process that read its stream, then forgets it', () => {
    const reads = new SharedReads();
    reads.join('s', 'session-update');
    reads.join('s', 'cogs');
    const raw = fields([{ n: 1n }, { n: 2n }]);
    const first = reads.decode<{ n: bigint }>('s', '1-0', raw, 0);
    expect(reads.size).toBe(1);
    const second = reads.decode<{ n: bigint }>('s', '1-0', raw, 1);
    expect(second).toBe(first);
    expect(second.events.map((e) => e.payload.n)).toEqual([1n, 2n]);
    expect(second.origin).toBe('origin-1');
    expect(reads.size).toBe(0);
    // Taken by every group: a later read (a redelivery) decodes afresh.
    expect(reads.decode('s', '1-0', raw, 2)).not.toBe(first);
  });

  it('keeps nothing for a stream read by one group, however many workers it has', () => {
    const reads = new SharedReads();
    reads.join('s', 'price');
    reads.join('s', 'price');
    const raw = fields([{ n: 1 }, { n: 2 }]);
    expect(reads.decode('s', '1-0', raw)).not.toBe(reads.decode('s', '1-0', raw));
    expect(reads.size).toBe(0);
  });

  it('stops waiting for a group that left, and for one that does not come within the keep time', () => {
    const reads = new SharedReads();
    reads.join('s', 'a');
    const leaveB = reads.join('s', 'b');
    reads.decode('s', '1-0', fields([{ n: 1 }, { n: 2 }]), 0);
    expect(reads.size).toBe(1);
    // A newer entry evicts the one kept longer than the keep time.
    reads.decode('s', '2-0', fields([{ n: 3 }, { n: 4 }]), 5_000);
    expect(reads.size).toBe(1);
    leaveB();
    const alone = fields([{ n: 5 }, { n: 6 }]);
    expect(reads.decode('s', '3-0', alone)).not.toBe(reads.decode('s', '3-0', alone));
  });

  it('tells streams apart: the same entry id on two streams is two entries', () => {
    const reads = new SharedReads();
    for (const stream of ['x', 'y']) {
      reads.join(stream, 'a');
      reads.join(stream, 'b');
    }
    const onX = reads.decode<{ s: string }>('x', '1-0', fields([{ s: 'x' }, { s: 'x' }]));
    const onY = reads.decode<{ s: string }>('y', '1-0', fields([{ s: 'y' }, { s: 'y' }]));
    expect(onX.events[0].payload.s).toBe('x');
    expect(onY.events[0].payload.s).toBe('y');
  });

  it('hands an entry another group decoded to a group that read only its id, and names the ids it keeps', () => {
    const reads = new SharedReads();
    reads.join('s', 'a');
    reads.join('s', 'b');
    reads.join('s', 'c');
    expect(reads.keptRange('s')).toBeUndefined();
    const first = reads.decode<{ n: number }>('s', '5-0', fields([{ n: 1 }, { n: 2 }]));
    reads.decode('s', '7-1', fields([{ n: 3 }, { n: 4 }]));
    expect(reads.keptRange('s')).toEqual(['5-0', '7-1']);
    expect(reads.take('s', '5-0')).toBe(first);
    expect(reads.take('s', '6-0')).toBeUndefined();
    // Taken by the third group: gone, and the range starts at the next one kept.
    expect(reads.take('s', '5-0')).toBe(first);
    expect(reads.take('s', '5-0')).toBeUndefined();
    expect(reads.keptRange('s')).toEqual(['7-1', '7-1']);
    reads.take('s', '7-1');
    reads.take('s', '7-1');
    expect(reads.keptRange('s')).toBeUndefined();
  });

  it('names the ids it keeps after a given one, in stream order, at most as many as asked', () => {
    const reads = new SharedReads();
    reads.join('s', 'a');
    reads.join('s', 'b');
    expect(reads.keptIdsAfter('s', '', 10)).toEqual([]);
    // Kept in the order read: a group behind the others read 9-0 and 10-0 after 11-0 was kept.
    for (const id of ['11-0', '9-0', '10-0', '12-0']) reads.decode('s', id, fields([{ n: 1 }]));
    expect(reads.keptIdsAfter('s', '', 10)).toEqual(['9-0', '10-0', '11-0', '12-0']);
    expect(reads.keptIdsAfter('s', '9-0', 10)).toEqual(['10-0', '11-0', '12-0']);
    expect(reads.keptIdsAfter('s', '10-0', 1)).toEqual(['11-0']);
    expect(reads.keptIdsAfter('s', '12-0', 10)).toEqual([]);
    expect(reads.keptIdsAfter('other', '', 10)).toEqual([]);
  });

  it('wakes the groups waiting on a stream when an entry of it is kept, or when asked, or at their time', async () => {
    const reads = new SharedReads();
    reads.join('s', 'a');
    reads.join('s', 'b');
    const done = reads.blocking('s');
    expect(reads.isBlocked('s')).toBe(true);
    let woken = 0;
    const waiting = [reads.wait('s', 60_000).then(() => woken++), reads.wait('s', 60_000).then(() => woken++)];
    reads.decode('other', '1-0', fields([{ n: 1 }, { n: 2 }]));
    await new Promise((r) => setTimeout(r, 5));
    expect(woken).toBe(0);
    reads.decode('s', '1-0', fields([{ n: 1 }, { n: 2 }]));
    await Promise.all(waiting);
    expect(woken).toBe(2);
    const asked = reads.wait('s', 60_000);
    reads.wakeAll('s');
    await asked;
    const started = Date.now();
    await reads.wait('s', 30);
    expect(Date.now() - started).toBeGreaterThanOrEqual(25);
    done();
    expect(reads.isBlocked('s')).toBe(false);
  });

  describe('blocks handed to the next stage of the process', () => {
    const block = (payloads: unknown[], tags?: string) => {
      const bytes = encodePayload(payloads);
      const raw = [Buffer.from(FIELD.block), bytes, Buffer.from(FIELD.origin), Buffer.from('o-1')];
      if (tags !== undefined) raw.push(Buffer.from(FIELD.tags), Buffer.from(tags));
      return { bytes, raw };
    };

    it('takes the payloads written instead of decoding the same bytes, once, with the tags read from the entry', () => {
      const reads = new SharedReads();
      reads.join('s', 'price');
      const payloads = [{ n: 1n, name: 'a' }, { n: 2n, name: 'b' }];
      const { bytes, raw } = block(payloads, 'cap:1\n');
      reads.offer('s', 'o-1', bytes, payloads);
      expect(reads.handedSize).toBe(1);
      const entry = reads.decode<{ n: bigint }>('s', '1-0', raw);
      expect(entry.events.map((e) => e.payload)).toEqual(payloads);
      expect(entry.events[0].payload).toBe(payloads[0]);
      expect(entry.events.map((e) => e.tags)).toEqual([['cap:1'], []]);
      expect(reads.handedSize).toBe(0);
      // A redelivery of the same entry decodes it.
      expect(reads.decode<{ n: bigint }>('s', '1-0', raw).events[0].payload).not.toBe(payloads[0]);
    });

    it('decodes what it read when the bytes are not the ones offered, or the stream is not read here', () => {
      const reads = new SharedReads();
      reads.join('s', 'price');
      const offered = [{ n: 1 }, { n: 2 }];
      reads.offer('s', 'o-1', encodePayload(offered), offered);
      const other = block([{ n: 3 }, { n: 4 }]);
      expect(reads.decode<{ n: number }>('s', '1-0', other.raw).events.map((e) => e.payload.n)).toEqual([3, 4]);
      reads.offer('not-read-here', 'o-1', encodePayload(offered), offered);
      expect(reads.handedSize).toBe(0);
    });

    it('under vitest, refuses payloads that are not what decoding their bytes gives', () => {
      const reads = new SharedReads();
      reads.join('s', 'price');
      const written = [{ n: 1n, at: 'x' }, { n: 2n, at: 'y' }];
      const { bytes, raw } = block(written);
      reads.offer('s', 'o-1', bytes, [{ n: 1, at: 'x' }, { n: 2n, at: 'y' }]);
      expect(() => reads.decode('s', '1-0', raw)).toThrow(/differs from its bytes decoded at \[0\]\.n/);
      reads.offer('s', 'o-1', bytes, [{ n: 1n }, { n: 2n, at: 'y' }]);
      expect(() => reads.decode('s', '1-0', raw)).toThrow(/differs from its bytes decoded at \[0\] \(its fields: n \/ n, at/);
      // A stage's output may name its fields in another order than decoding gives: the same payload.
      const reordered = [{ at: 'x', n: 1n }, { n: 2n, at: 'y' }];
      reads.offer('s', 'o-1', bytes, reordered);
      expect(reads.decode('s', '1-0', raw).events[0].payload).toBe(reordered[0]);
      // A field set to undefined is as one not set (a part a stage has not set yet); a value is not.
      const unsetPart = [{ n: 1n, at: 'x', cost: undefined }, { n: 2n, at: 'y' }];
      reads.offer('s', 'o-1', bytes, unsetPart);
      expect(reads.decode('s', '1-0', raw).events[0].payload).toBe(unsetPart[0]);
      reads.offer('s', 'o-1', bytes, [{ n: 1n, at: 'x', cost: null }, { n: 2n, at: 'y' }]);
      expect(() => reads.decode('s', '1-0', raw)).toThrow(/differs/);
    });

    it('keeps at most 200 blocks, and none longer than the keep time', () => {
      const reads = new SharedReads();
      reads.join('s', 'price');
      const payloads = [{ n: 1 }, { n: 2 }];
      const bytes = encodePayload(payloads);
      for (let i = 0; i < 250; i++) reads.offer('s', `o-${i}`, bytes, payloads, 0);
      expect(reads.handedSize).toBe(200);
      reads.offer('s', 'late', bytes, payloads, 5_000);
      expect(reads.handedSize).toBe(1);
    });
  });
});
