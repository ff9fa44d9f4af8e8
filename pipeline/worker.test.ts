import { describe, expect, it } from 'vitest';
import { batchesOf } from './worker.js';

/** Blocks of these many events each, named by their position. */
function blocks(...sizes: number[]): { name: number; events: null[] }[] {
  return sizes.map((size, name) => ({ name, events: new Array<null>(size).fill(null) }));
}

const shape = (batches: { name: number }[][]) => batches.map((batch) => batch.map((block) => block.name));

describe('batchesOf', () => {
  it('cuts a read into batches of at most batchSize events, whole blocks each', () => {
    expect(shape(batchesOf(blocks(100, 100, 100, 100, 100), 200))).toEqual([[0, 1], [2, 3], [4]]);
    expect(shape(batchesOf(blocks(150, 100, 50), 200))).toEqual([[0], [1, 2]]);
  });

  it('lets a tail of at most a quarter of a batch go with the batch before it, rather than make a batch of its own', () => {
    // ClickHouse's case: batches of 20,000, the read brought one block of 500 more.
    expect(shape(batchesOf(blocks(...new Array<number>(40).fill(500), 500), 20_000))).toEqual([Array.from({ length: 41 }, (_, i) => i)]);
    expect(shape(batchesOf(blocks(500, 500, 500, 500, 300), 2_000))).toEqual([[0, 1, 2, 3, 4]]);
    expect(shape(batchesOf(blocks(500, 500, 500, 500, 300, 200), 2_000))).toEqual([[0, 1, 2, 3, 4, 5]]);
  });

  it('keeps a tail of more than a quarter of a batch a batch of its own: a batch passes batchSize (or its first block) by at most a quarter', () => {
    expect(shape(batchesOf(blocks(500, 500, 500, 500, 300, 201), 2_000))).toEqual([[0, 1, 2, 3], [4, 5]]);
    const sizes = [7, 130, 64, 200, 3, 99, 180, 45, 12, 160, 88, 1, 150];
    for (const batchSize of [50, 100, 200, 333, 1000]) {
      const batches = batchesOf(blocks(...sizes), batchSize);
      expect(batches.flat().map((b) => b.name)).toEqual(sizes.map((_, i) => i));
      for (const batch of batches) {
        const events = batch.reduce((n, b) => n + b.events.length, 0);
        expect(events).toBeLessThanOrEqual(Math.max(batchSize, batch[0].events.length) + batchSize / 4);
      }
    }
  });

  it('gives a block larger than a batch a batch of its own, and counts empty blocks (deleted entries) as nothing', () => {
    expect(shape(batchesOf(blocks(50, 700, 50), 200))).toEqual([[0], [1, 2]]);
    expect(shape(batchesOf(blocks(0, 200, 0, 0), 200))).toEqual([[0, 1, 2, 3]]);
    expect(batchesOf([], 200)).toEqual([]);
  });
});
