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
  private readonly kept = new Map<string, Kept>();
  private readonly handed = new Map<string, Handed>();

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
    const readers = this.groups.get(streamKey)?.size ?? 0;
    if (readers < 2) return decodeEntry<T>(id, fields, handed);
    const key = entryKey(streamKey, id);
    const kept = this.kept.get(key);
    if (kept) {
      if (++kept.taken >= readers) this.kept.delete(key);
      return kept.entry as DecodedEntry<T>;
    }
    const entry = decodeEntry<T>(id, fields, handed);
    forgetOld(this.kept, MAX_KEPT, now);
    this.kept.set(key, { entry, taken: 1, at: now });
    return entry;
  }

  get size(): number {
    return this.kept.size;
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
