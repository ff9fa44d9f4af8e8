import type { Redis } from '../../pipeline/redis.js';
import { decodeEntry } from '../../pipeline/blocks.js';
import { encodePayload } from '../../pipeline/codec.js';
import { Histogram } from './histogram.js';

/**
 * Follows a few events a second through the streams to tell where the ingest-to-ledger time
 * goes. A stream entry's id is the time (ms) of its XADD, so for one event the ids of its
 * entries in consecutive streams give the time each stage held it (waiting in its input
 * stream plus processing plus the ack-and-forward). Entries are matched by the msgpack bytes
 * of `eventId` and its value inside the payload, without decoding anything.
 * It reads at most `scanLimit` entries per stream per pass, so its cost on Redis stays small;
 * at high rates some traces are not found within that window and are left out (counted).
 */
export interface Hop {
  /** The stage the time is charged to. */
  stage: string;
  /** The stream whose XADD time ends the hop. */
  stream: string;
}

interface Trace {
  needle: Buffer;
  /** The submission's nonce: a later re-send of the same event_id is another submission, not this one. */
  nonce: Buffer;
  ingestedAt: number;
  /** XADD time per stream, in flow order. */
  times: (number | undefined)[];
  startedAt: number;
}

/** How many of the slowest traces the summary lists. */
const SLOWEST_KEPT = 8;

export class HopTracer {
  private readonly open: Trace[] = [];
  /** Ingest entries already followed: at a low rate the newest entry is the same for several passes. */
  private readonly followed = new Set<string>();
  readonly hops: Histogram[];
  readonly total = new Histogram();
  completed = 0;
  abandoned = 0;
  /** The slowest traces: when each was ingested and the time of every hop, to tell a stall at one hop from slowness everywhere. */
  private readonly slowest: { ingestedAt: number; totalMs: number; hopMs: number[] }[] = [];
  /** Only events ingested from this time (epoch ms) on are followed: the steady window. */
  from = Infinity;

  /**
   * @param streams stream keys in flow order, the first being the ingest stream
   * @param names   one label per stream (the stage that writes it)
   */
  constructor(
    private readonly redis: Redis,
    private readonly streams: string[],
    readonly names: string[],
    private readonly perPass = 3,
    private readonly scanLimit = 1000,
  ) {
    this.hops = streams.map(() => new Histogram());
  }

  async pass(): Promise<void> {
    const now = Date.now();
    if (now < this.from) return;
    // New traces: the newest few entries of the ingest stream.
    const newest = (await this.redis.xrevrangeBuffer(this.streams[0], '+', '-', 'COUNT', this.perPass)) as [Buffer, Buffer[]][];
    for (const [id, fields] of newest) {
      if (this.followed.has(id.toString())) continue;
      let event: { eventId?: unknown; ingestNonce?: unknown; ingestedAt?: unknown } | undefined;
      try {
        const events = decodeEntry<typeof event>(id.toString(), fields).events;
        event = events[events.length - 1]?.payload;
      } catch {
        continue;
      }
      if (typeof event?.eventId !== 'string' || typeof event.ingestNonce !== 'string') continue;
      const needle = encodePayload(event.eventId);
      if (this.open.some((t) => t.needle.equals(needle))) continue;
      const ingestedMs = Number(id.toString().split('-')[0]);
      if (ingestedMs < this.from) continue;
      const times: (number | undefined)[] = this.streams.map(() => undefined);
      times[0] = ingestedMs;
      const ingestedAt = typeof event.ingestedAt === 'number' ? event.ingestedAt : ingestedMs;
      this.followed.add(id.toString());
      this.open.push({ needle, nonce: encodePayload(event.ingestNonce), ingestedAt, times, startedAt: now });
    }
    // Look for the open traces in every later stream, from the earliest time one of them could be there.
    for (let s = 1; s < this.streams.length; s++) {
      const waiting = this.open.filter((t) => t.times[s] === undefined && t.times[s - 1] !== undefined);
      if (waiting.length === 0) continue;
      const from = Math.min(...waiting.map((t) => t.times[s - 1]!));
      const entries = (await this.redis.xrangeBuffer(this.streams[s], String(from), '+', 'COUNT', this.scanLimit)) as [Buffer, Buffer[]][];
      for (const [id, fields] of entries) {
        const payload = fields[1];
        for (const trace of waiting) {
          if (trace.times[s] === undefined && payload.indexOf(trace.needle) >= 0 && payload.indexOf(trace.nonce) >= 0) {
            trace.times[s] = Number(id.toString().split('-')[0]);
          }
        }
      }
    }
    for (let i = this.open.length - 1; i >= 0; i--) {
      const trace = this.open[i];
      if (trace.times.every((t) => t !== undefined)) {
        const t = trace.times as number[];
        this.hops[0].record(Math.max(0, t[0] - trace.ingestedAt));
        for (let s = 1; s < t.length; s++) this.hops[s].record(Math.max(0, t[s] - t[s - 1]));
        const totalMs = Math.max(0, t[t.length - 1] - trace.ingestedAt);
        this.total.record(totalMs);
        this.keepIfSlow({ ingestedAt: trace.ingestedAt, totalMs, hopMs: t.map((at, s) => Math.max(0, at - (s === 0 ? trace.ingestedAt : t[s - 1]))) });
        this.completed++;
        this.open.splice(i, 1);
      } else if (now - trace.startedAt > 30_000) {
        this.abandoned++;
        this.open.splice(i, 1);
      }
    }
  }

  private keepIfSlow(trace: { ingestedAt: number; totalMs: number; hopMs: number[] }): void {
    this.slowest.push(trace);
    this.slowest.sort((a, b) => b.totalMs - a.totalMs);
    if (this.slowest.length > SLOWEST_KEPT) this.slowest.pop();
  }

  summary(): { traced: number; abandoned: number; hops: { stage: string; p50: number; p90: number; p99: number; max: number }[]; total: { p50: number; p90: number; p99: number; max: number }; slowest: { ingestedAt: string; totalMs: number; hopMs: number[] }[] } {
    const r = (v: number) => (Number.isFinite(v) ? Math.round(v * 10) / 10 : NaN);
    return {
      traced: this.completed,
      abandoned: this.abandoned,
      hops: this.hops.map((h, i) => ({ stage: this.names[i], p50: r(h.quantile(0.5)), p90: r(h.quantile(0.9)), p99: r(h.quantile(0.99)), max: r(h.max) })),
      total: { p50: r(this.total.quantile(0.5)), p90: r(this.total.quantile(0.9)), p99: r(this.total.quantile(0.99)), max: r(this.total.max) },
      slowest: this.slowest.map((t) => ({ ingestedAt: new Date(t.ingestedAt).toISOString(), totalMs: t.totalMs, hopMs: t.hopMs })),
    };
  }
}
