import { compareIds } from './keys.js';
import { decodeEntry, sameBlockBytes, type BlockBytes, type DecodedEntry } from './blocks.js';

/** How long a decoded entry waits for the other groups of its stream in this process. */
const KEEP_MS = 2_000;
/** At most this many decoded entries are kept (a group far behind the others decodes for itself). */
const MAX_KEPT = 1_000;

/** At most this many blocks handed over are kept (a stage that stopped reading leaves them to age out). */
const MAX_HANDED = 200;

interface Handed {
  bytes: BlockBytes;
  payloads: readonly unknown[];
  at: number;
}

interface Kept {
  entry: DecodedEntry<unknown>;
  /** Groups of this process that took it so far. */
  taken: number;
  at: number;
}

/**
 * Decoded entries shared by the consumer groups of one process that read the same stream: the
 * stages after the ledger run in one process on a small machine, each its own group on
 * `events:ledgered`, and each used to decode every block for itself (a fifth of that process's
 * allocations). The first group to read an entry decodes it; the others take the same payloads
 * while it is kept. Stream entries never change, so an id names one content; handlers only read
 * their payloads (frozen under vitest: see blocks.ts).
 *
 * The bytes need not cross from Redis once per group either: while one worker of the process is in
 * a blocking read of a stream, the others wait for what it brings (wait), then read without
 * blocking through readKnown-1.lua, which leaves out the fields of the ids kept here (keptRange);
 * the worker takes those decoded (take). From-ledger's five groups each read every ledgered block
 * as a whole before (2.65 KB read per event), and most of that process's scavenges were started
 * by those Buffers (V8 scavenges once young Buffers hold 32 MiB: BENCHMARKS.md, "Thirty-fourth
 * session").
 *
 * A block one stage of this process writes to a stream that another stage of it reads is handed
 * over the same way: the writer offers the payloads it encoded, and the reader takes them instead
 * of decoding when the bytes it read are the bytes written (the next stage before the ledger used
 * to decode again what the last one had in hand: a third of that process's allocations, and most
 * of what its collector copied, since decoded blocks live across round trips). Tags are still read
 * from the entry (the ack script adds some).
 */
export class SharedReads {
  /** Per stream key: how many workers of each group of this process read it. */
  private readonly groups = new Map<string, Map<string, number>>();
  /** Per stream key: its decoded entries by id, in the order they were read. */
  private readonly kept = new Map<string, Map<string, Kept>>();
  /** Per stream key: the newest id kept since its kept entries were last all gone. */
  private readonly newest = new Map<string, string>();
  private readonly handed = new Map<string, Handed>();
  /** Per stream key: how many workers of this process are in a blocking read of it. */
  private readonly blocked = new Map<string, number>();
  /** Entries read as ids and taken from here (their bytes not carried), and those read again after ageing out. */
  readonly stats = { taken: 0, readAgain: 0 };
  /** Per stream key: the workers waiting for an entry of it to be kept here. */
  private readonly waiting = new Map<string, Set<() => void>>();

  /** A worker of `group` reads `streamKey`; returns the call that says it stopped. */
  join(streamKey: string, group: string): () => void {
    let groups = this.groups.get(streamKey);
    if (!groups) this.groups.set(streamKey, (groups = new Map()));
    groups.set(group, (groups.get(group) ?? 0) + 1);
    return () => {
      const left = (groups.get(group) ?? 1) - 1;
      if (left > 0) groups.set(group, left);
      else groups.delete(group);
      if (groups.size === 0) this.groups.delete(streamKey);
    };
  }

  /**
   * A block about to be written to `streamKey` (its `b` field and origin) with the payloads it
   * holds; kept only while a group of this process reads that stream. The payloads must not change
   * after this (handlers make new objects for what they change).
   */
  offer(streamKey: string, origin: string, bytes: BlockBytes, payloads: readonly unknown[], now = Date.now()): void {
    if (!this.groups.has(streamKey)) return;
    forgetOld(this.handed, MAX_HANDED, now);
    this.handed.set(entryKey(streamKey, origin), { bytes, payloads, at: now });
  }

  decode<T>(streamKey: string, id: string, fields: Buffer[], now = Date.now()): DecodedEntry<T> {
    const handed =
      this.handed.size === 0
        ? undefined
        : (origin: string, block: Buffer) => {
            const key = entryKey(streamKey, origin);
            const offered = this.handed.get(key);
            if (!offered) return undefined;
            this.handed.delete(key);
            return sameBlockBytes(offered.bytes, block) ? offered.payloads : undefined;
          };
    const readers = this.readers(streamKey);
    if (readers < 2) return decodeEntry<T>(id, fields, handed);
    const taken = this.take<T>(streamKey, id);
    if (taken) return taken;
    const entry = decodeEntry<T>(id, fields, handed);
    let kept = this.kept.get(streamKey);
    if (!kept) this.kept.set(streamKey, (kept = new Map()));
    forgetOld(kept, MAX_KEPT, now);
    kept.set(id, { entry, taken: 1, at: now });
    const newest = this.newest.get(streamKey);
    if (newest === undefined || compareIds(id, newest) > 0) this.newest.set(streamKey, id);
    this.wakeAll(streamKey);
    return entry;
  }

  /** How many groups of this process read the stream (shared reads pay off from two). */
  readers(streamKey: string): number {
    return this.groups.get(streamKey)?.size ?? 0;
  }

  /**
   * The entry another group of this process decoded, counted as taken by one more group; undefined
   * when it is not kept (never read here, every group took it, or it aged out).
   */
  take<T>(streamKey: string, id: string): DecodedEntry<T> | undefined {
    const kept = this.kept.get(streamKey);
    const found = kept?.get(id);
    if (!kept || !found) return undefined;
    if (++found.taken >= this.readers(streamKey)) {
      kept.delete(id);
      if (kept.size === 0) this.forget(streamKey);
    }
    return found.entry as DecodedEntry<T>;
  }

  /**
   * The ids whose entries a read of the stream need not carry, as [oldest, newest] kept: most
   * entries between them are kept here (one that is not is read again by its id). Undefined when
   * nothing is kept.
   */
  keptRange(streamKey: string): [string, string] | undefined {
    const kept = this.kept.get(streamKey);
    if (!kept) return undefined;
    forgetOld(kept, MAX_KEPT, Date.now());
    const oldest = kept.keys().next().value;
    if (oldest === undefined) {
      this.forget(streamKey);
      return undefined;
    }
    return [oldest, this.newest.get(streamKey)!];
  }

  /**
   * The ids kept for the stream that come after `after` ('' for all), ascending, at most `max`:
   * those a group that read up to `after` may be handed by id alone (readKnown-1.lua).
   */
  keptIdsAfter(streamKey: string, after: string, max: number): string[] {
    const kept = this.kept.get(streamKey);
    const ids: string[] = [];
    if (!kept) return ids;
    let ascending = true;
    for (const id of kept.keys()) {
      if (after !== '' && compareIds(id, after) <= 0) continue;
      if (ascending && ids.length > 0 && compareIds(id, ids[ids.length - 1]) < 0) ascending = false;
      ids.push(id);
    }
    if (!ascending) ids.sort(compareIds);
    return ids.length > max ? ids.slice(0, max) : ids;
  }

  /**
   * A blocking read of the stream starts; returns the call that says it ended. One blocking read
   * per stream is enough for the groups of a process: the others wait for what it brings (wait).
   */
  blocking(streamKey: string): () => void {
    this.blocked.set(streamKey, (this.blocked.get(streamKey) ?? 0) + 1);
    return () => {
      const left = (this.blocked.get(streamKey) ?? 1) - 1;
      if (left > 0) this.blocked.set(streamKey, left);
      else this.blocked.delete(streamKey);
    };
  }

  isBlocked(streamKey: string): boolean {
    return this.blocked.has(streamKey);
  }

  /** Resolves when an entry of the stream is next kept here, on wakeAll, or after `ms`. */
  wait(streamKey: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let waiting = this.waiting.get(streamKey);
      if (!waiting) this.waiting.set(streamKey, (waiting = new Set()));
      const timer = setTimeout(done, ms);
      const set = waiting;
      function done() {
        clearTimeout(timer);
        set.delete(done);
        resolve();
      }
      waiting.add(done);
    });
  }

  /** Wakes every worker waiting on the stream (an entry of it was kept here, or a worker is stopping). */
  wakeAll(streamKey: string): void {
    const waiting = this.waiting.get(streamKey);
    if (!waiting?.size) return;
    this.waiting.delete(streamKey);
    for (const done of waiting) done();
  }

  private forget(streamKey: string): void {
    this.kept.delete(streamKey);
    this.newest.delete(streamKey);
  }

  get size(): number {
    let size = 0;
    for (const kept of this.kept.values()) size += kept.size;
    return size;
  }

  get handedSize(): number {
    return this.handed.size;
  }
}

/** An entry of a stream, by its id or its block's origin. */
const entryKey = (streamKey: string, name: string) => `${streamKey}\u0000${name}`;

/**
 * Drops the oldest of `map` (in insertion order) while it holds `max` or more, and what waited past
 * the keep time (a group that is behind, or one that never reads this entry: claims).
 */
function forgetOld(map: Map<string, { at: number }>, max: number, now: number): void {
  for (const [key, value] of map) {
    if (map.size < max && now - value.at < KEEP_MS) return;
    map.delete(key);
  }
}

/** The process's shared reads: every worker of every stage in this process goes through it. */
export const sharedReads = new SharedReads();
