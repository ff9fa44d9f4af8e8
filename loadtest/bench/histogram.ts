/**
 * A latency histogram with logarithmic buckets (each 4% wider than the last, from 10 µs to
 * about 2 minutes): constant memory, mergeable across processes, percentiles within 2%.
 * Values are milliseconds.
 */
const MIN_MS = 0.01;
const GROWTH = 1.04;
const LOG_GROWTH = Math.log(GROWTH);
export const BUCKETS = Math.ceil(Math.log(120_000 / MIN_MS) / LOG_GROWTH) + 1;

export class Histogram {
  readonly counts: Float64Array;
  count = 0;
  sum = 0;
  max = 0;

  constructor(counts?: ArrayLike<number>) {
    this.counts = new Float64Array(BUCKETS);
    if (counts) {
      this.counts.set(counts);
      for (let i = 0; i < BUCKETS; i++) this.count += this.counts[i];
    }
  }

  static bucketOf(ms: number): number {
    if (!(ms > MIN_MS)) return 0;
    return Math.min(BUCKETS - 1, Math.ceil(Math.log(ms / MIN_MS) / LOG_GROWTH));
  }

  /** The upper bound of a bucket, in ms. */
  static upperOf(bucket: number): number {
    return MIN_MS * GROWTH ** bucket;
  }

  record(ms: number, times = 1): void {
    this.counts[Histogram.bucketOf(ms)] += times;
    this.count += times;
    this.sum += ms * times;
    if (ms > this.max) this.max = ms;
  }

  merge(other: Histogram | SparseHistogram): void {
    if (other instanceof Histogram) {
      for (let i = 0; i < BUCKETS; i++) this.counts[i] += other.counts[i];
      this.count += other.count;
      this.sum += other.sum;
      this.max = Math.max(this.max, other.max);
      return;
    }
    for (let i = 0; i < other.buckets.length; i++) this.counts[other.buckets[i]] += other.counts[i];
    this.count += other.count;
    this.sum += other.sum;
    this.max = Math.max(this.max, other.max);
  }

  /** The value at quantile q (0..1), as the upper bound of its bucket (capped by the maximum seen). */
  quantile(q: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(Histogram.upperOf(i), this.max);
    }
    return this.max;
  }

  mean(): number {
    return this.count ? this.sum / this.count : NaN;
  }

  /** Only the non-empty buckets: what a process sends to another. */
  sparse(): SparseHistogram {
    const buckets: number[] = [];
    const counts: number[] = [];
    for (let i = 0; i < BUCKETS; i++) {
      if (this.counts[i]) {
        buckets.push(i);
        counts.push(this.counts[i]);
      }
    }
    return { buckets, counts, count: this.count, sum: this.sum, max: this.max };
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sum = 0;
    this.max = 0;
  }
}

export interface SparseHistogram {
  buckets: number[];
  counts: number[];
  count: number;
  sum: number;
  max: number;
}
