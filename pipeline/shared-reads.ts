import { decodeEntry, type DecodedEntry } from './blocks.js';

/** How long a decoded entry waits for the other groups of its stream in this process. */
const KEEP_MS = 2_000;
/** At most this many decoded entries are kept (a group far behind the others decodes for itself). */
const MAX_KEPT = 1_000;

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
 */
export class SharedReads {
  /** Per stream key: how many workers of each group of this process read it. */
  private readonly groups = new Map<string, Map<string, number>>();
  private readonly kept = new Map<string, Kept>();

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

  decode<T>(streamKey: string, id: string, fields: Buffer[], now = Date.now()): DecodedEntry<T> {
    const readers = this.groups.get(streamKey)?.size ?? 0;
    if (readers < 2) return decodeEntry<T>(id, fields);
    const key = `${streamKey}\u0000${id}`;
    const kept = this.kept.get(key);
    if (kept) {
      if (++kept.taken >= readers) this.kept.delete(key);
      return kept.entry as DecodedEntry<T>;
    }
    const entry = decodeEntry<T>(id, fields);
    this.forgetOld(now);
    this.kept.set(key, { entry, taken: 1, at: now });
    return entry;
  }

  /** Drops what waited too long (a group that is behind, or one that never reads this entry: claims). */
  private forgetOld(now: number): void {
    for (const [key, kept] of this.kept) {
      if (this.kept.size < MAX_KEPT && now - kept.at < KEEP_MS) return;
      this.kept.delete(key);
    }
  }

  get size(): number {
    return this.kept.size;
  }
}

/** The process's shared reads: every worker of every stage in this process goes through it. */
export const sharedReads = new SharedReads();
