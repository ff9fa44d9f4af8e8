// Where the load generator keeps the bytes of its requests until they are taken: in fixed-size
// chunks of a few large Buffers, outside V8's heap. Under a 3x overload thousands of refused
// requests (~50 KB each) wait for their retry. Kept as text they lived in V8's young generation
// until promoted, and every scavenge copied them: 141 scavenges in a 45 s run, 18 ms each on
// average and up to 54 ms, each one a stall of the generator counted into the latencies it
// measures (BENCHMARKS.md, issue 13, thirtieth session). One Buffer per request instead put
// thousands of small external allocations on V8's books, and it ran a full collection every
// ~1.5 s (twenty-ninth session). Chunks of a few slabs, reused, do neither.

/** A request's bytes: `bytes` to write, and the chunk they are in (none for a request too large for one). */
export interface StoredRequest {
  bytes: Buffer;
  chunk?: Buffer;
}

export class RequestStore {
  private readonly free: Buffer[] = [];
  private nextSlabChunks: number;
  /** Bytes held in slabs (external memory), for the tests. */
  slabBytes = 0;

  /**
   * @param chunkBytes the most a request may take to go in a chunk (larger ones get a Buffer of their own)
   * @param firstSlabChunks chunks in the first slab; each further slab is twice the one before, up to maxSlabChunks
   */
  constructor(
    readonly chunkBytes = 64 * 1024,
    firstSlabChunks = 256,
    private readonly maxSlabChunks = 4096,
  ) {
    this.nextSlabChunks = firstSlabChunks;
  }

  /** The text's UTF-8 bytes, in a free chunk when they fit in one. */
  store(text: string): StoredRequest {
    const length = Buffer.byteLength(text);
    if (length > this.chunkBytes) return { bytes: Buffer.from(text) };
    if (this.free.length === 0) this.grow();
    const chunk = this.free.pop()!;
    chunk.write(text, 0, 'utf8');
    return { bytes: chunk.subarray(0, length), chunk };
  }

  /** Gives a request's chunk back. Only once the server has read the whole request: its bytes may be reused at once. */
  release(stored: StoredRequest): void {
    if (stored.chunk) this.free.push(stored.chunk);
    stored.chunk = undefined;
  }

  /** Chunks free now, for the tests. */
  freeChunks(): number {
    return this.free.length;
  }

  private grow(): void {
    const chunks = this.nextSlabChunks;
    const slab = Buffer.allocUnsafeSlow(chunks * this.chunkBytes);
    for (let i = chunks - 1; i >= 0; i--) this.free.push(slab.subarray(i * this.chunkBytes, (i + 1) * this.chunkBytes));
    this.slabBytes += slab.length;
    this.nextSlabChunks = Math.min(this.maxSlabChunks, chunks * 2);
  }
}
