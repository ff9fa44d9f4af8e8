import { partitionedKey } from './keys.js';
import { masterFor, type Redis } from './redis.js';
import type { scripted } from './scripts.js';
import type { BlockBytes } from './blocks.js';

/**
 * Moves between partitions in two steps (lua/forwardOnce.lua): the keys of two partitions sit in
 * different hash slots, on different nodes of a Redis Cluster, and no script may touch both.
 *   1. append to the target partition's stream, once per marker: the marker (in the target's
 *      slot, named after the origin of what is moved) is set in the same step;
 *   2. then ack (or delete) the source in its own slot.
 * A crash between the two leaves the source to be handled again; step 1 then appends nothing
 * twice. With INGEST_DURABILITY=replica, step 2 waits until a replica of the target has step 1
 * (waitForReplicas): a failover of the target's master must not lose a block the source no
 * longer holds. A marker outlives any redelivery: it expires after MOVE_MARKER_TTL_SECONDS, and a
 * worker that held a batch longer than half of that gives the batch back instead of moving it
 * (pipeline/worker.ts).
 */

/** The marker of one moved entry: in the target partition's slot, named after the stream and the origin. */
export function moveMarkerKey(prefix: string, stream: string, origin: string, partition: number): string {
  return partitionedKey(prefix, `moved:${stream}:${origin}`, partition);
}

export interface MovedEntry {
  marker: string;
  fields: (string | BlockBytes)[];
}

/**
 * Step 1: appends each entry to `target` unless its marker is already set. Every marker must be
 * in the target's slot. Returns the new ids, undefined for an entry appended before.
 */
export async function forwardOnce(
  redis: ReturnType<typeof scripted>,
  target: string,
  entries: readonly MovedEntry[],
  ttlSeconds: number,
): Promise<(string | undefined)[]> {
  if (entries.length === 0) return [];
  const args: (string | BlockBytes)[] = [String(ttlSeconds)];
  for (const entry of entries) args.push(String(entry.fields.length), ...entry.fields);
  const reply = await redis.forwardOnce(1 + entries.length, target, ...entries.map((e) => e.marker), ...args);
  return reply.map((id) => (id === null || id === undefined ? undefined : String(id)));
}

/** Waits until `replicas` replicas of the node holding `key` have every write sent on its connection so far; throws otherwise (the source is then not acked, and the move is done again). */
export async function waitForReplicas(redis: Redis, key: string, replicas: number, timeoutMs: number): Promise<void> {
  const node = masterFor(redis, key);
  if (!node) throw new Error(`no master known for the slot of ${key}: the move is retried`);
  const confirmed = Number(await node.call('WAIT', replicas, timeoutMs));
  if (confirmed < replicas) throw new Error(`WAIT: ${confirmed} of ${replicas} replicas of ${key} within ${timeoutMs} ms: the move is retried`);
}
