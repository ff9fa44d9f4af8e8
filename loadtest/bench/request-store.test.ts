import { describe, expect, it } from 'vitest';
import { RequestStore } from './request-store.js';

describe('RequestStore', () => {
  it('keeps a request as its UTF-8 bytes in a chunk, multi-byte characters included', () => {
    const store = new RequestStore(64, 4);
    const text = 'POST /v1/events HTTP/1.1\r\n\r\n{"a":"é€😀"}';
    const stored = store.store(text);
    expect(stored.bytes.equals(Buffer.from(text))).toBe(true);
    expect(stored.chunk?.length).toBe(64);
    expect(store.slabBytes).toBe(4 * 64);
  });

  it('reuses a released chunk for the next request, and gives each held request its own', () => {
    const store = new RequestStore(16, 2);
    const a = store.store('aaaa');
    const b = store.store('bbbbbbbb');
    expect(store.freeChunks()).toBe(0);
    expect(a.chunk).not.toBe(b.chunk);
    const chunkOfA = a.chunk;
    store.release(a);
    store.release(a); // a second release gives nothing back twice
    expect(store.freeChunks()).toBe(1);
    const c = store.store('cc');
    expect(c.chunk).toBe(chunkOfA);
    expect(c.bytes.toString()).toBe('cc');
    expect(b.bytes.toString()).toBe('bbbbbbbb');
  });

  it('grows by slabs twice the size of the one before, up to the bound', () => {
    const store = new RequestStore(8, 1, 4);
    const held = Array.from({ length: 1 + 2 + 4 + 4 }, (_, i) => store.store(String(i)));
    expect(store.slabBytes).toBe((1 + 2 + 4 + 4) * 8);
    expect(store.freeChunks()).toBe(0);
    expect(held.map((h) => h.bytes.toString())).toEqual(held.map((_, i) => String(i)));
  });

  it('gives a request larger than a chunk a Buffer of its own, outside the slabs', () => {
    const store = new RequestStore(8, 1);
    const big = store.store('x'.repeat(9));
    expect(big.chunk).toBeUndefined();
    expect(big.bytes.toString()).toBe('x'.repeat(9));
    expect(store.slabBytes).toBe(0);
    store.release(big);
    expect(store.freeChunks()).toBe(0);
  });
});
