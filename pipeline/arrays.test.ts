import { describe, expect, it } from 'vitest';
import { mapBatch } from './arrays.js';

describe('mapBatch', () => {
  it('maps every item with its index, past the length where V8 stops inlining Array.prototype.map', () => {
    const items = Array.from({ length: 20_000 }, (_, i) => ({ id: `e${i}` }));
    const mapped = mapBatch(items, (item, i) => `${item.id}@${i}`);
    expect(mapped).toHaveLength(20_000);
    expect(mapped[0]).toBe('e0@0');
    expect(mapped[16_383]).toBe('e16383@16383');
    expect(mapped[19_999]).toBe('e19999@19999');
  });

  it('gives an empty array for no items', () => {
    expect(mapBatch([], () => 1)).toEqual([]);
  });
});
