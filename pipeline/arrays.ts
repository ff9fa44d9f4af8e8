/**
 * `items.map(fn)` for arrays as long as a stage's batch (up to ANALYTICS_BATCH_ROWS or
 * AGGREGATE_BATCH_EVENTS events, 20,000). V8 11 (Node 20) inlines Array.prototype.map into an
 * optimized caller with its result preallocated as a fast array, and deoptimizes the whole caller
 * when the array holds more than 16,382 items, at every such call: TurboFan never learns, so the
 * caller was compiled again for each batch (analytics-dispatch's `dispatchBatch` and
 * `insertInvocations` 22-26 times in 45 s at --rate max; BENCHMARKS.md, issue 13, forty-first
 * session). A loop that pushes has no such bound.
 */
export function mapBatch<T, U>(items: readonly T[], fn: (item: T, index: number) => U): U[] {
  const mapped: U[] = [];
  for (let i = 0; i < items.length; i++) mapped.push(fn(items[i], i));
  return mapped;
}
