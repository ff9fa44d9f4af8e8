import { describe, expect, it } from 'vitest';
import { entryFields } from './blocks.js';
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
});
