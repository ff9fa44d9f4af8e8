/**
 * Group commit per partition: at most one write in flight per partition; the groups submitted
 * meanwhile wait and go together in the next write, so that under load a partition gets fewer,
 * larger blocks (every later hop pays its costs per block) and with nothing in flight a group is
 * written at once (no added wait at a low rate). A write holds whole groups: the writer packs
 * them (packGroups) and writes them atomically (one XADD, or one MULTI/EXEC). When a write
 * fails, every group in it fails with the same error.
 */
export class GroupCommit<T> {
  private readonly queues = new Map<number, Waiting<T>[]>();
  private readonly busy = new Set<number>();

  constructor(private readonly write: (partition: number, groups: readonly (readonly T[])[]) => Promise<void>) {}

  /** Resolves once the write holding `group` succeeded; rejects with that write's error. */
  submit(partition: number, group: readonly T[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const queue = this.queues.get(partition);
      if (queue) queue.push({ group, resolve, reject });
      else this.queues.set(partition, [{ group, resolve, reject }]);
      if (!this.busy.has(partition)) void this.drain(partition);
    });
  }

  /** Writes what waits in a partition, one write at a time, until nothing waits. */
  private async drain(partition: number): Promise<void> {
    this.busy.add(partition);
    try {
      for (let waiting = this.take(partition); waiting.length; waiting = this.take(partition)) {
        try {
          await this.write(
            partition,
            waiting.map((w) => w.group),
          );
          for (const w of waiting) w.resolve();
        } catch (err) {
          for (const w of waiting) w.reject(err);
        }
      }
    } finally {
      this.busy.delete(partition);
    }
  }

  private take(partition: number): Waiting<T>[] {
    const waiting = this.queues.get(partition) ?? [];
    this.queues.delete(partition);
    return waiting;
  }
}

interface Waiting<T> {
  group: readonly T[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Packs groups into blocks of at most `max` items, in order, never splitting a group across two
 * blocks, except a group larger than `max`: it is cut into blocks of its own (full, then the rest).
 */
export function packGroups<T>(groups: readonly (readonly T[])[], max: number): T[][] {
  const blocks: T[][] = [];
  let current: T[] = [];
  for (const group of groups) {
    if (group.length > max) {
      if (current.length) blocks.push(current);
      current = [];
      for (let from = 0; from < group.length; from += max) blocks.push(group.slice(from, from + max));
      continue;
    }
    if (current.length + group.length > max) {
      blocks.push(current);
      current = [];
    }
    current.push(...group);
  }
  if (current.length) blocks.push(current);
  return blocks;
}
