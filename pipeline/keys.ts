/**
 * Every Redis key the pipeline touches. Partitioned keys end in a Redis Cluster hash tag
 * `{pN}`: all keys one event touches after key-resolve (its streams, cap counters, pause
 * flags) share its customer's partition, so a single Lua script can update them atomically
 * on one node. One Redis runs PARTITIONS=1; a Cluster runs PARTITIONS=N.
 */
export function partitionedKey(prefix: string, name: string, partition: number): string {
  return `${prefix}${name}:{p${partition}}`;
}

export function deadLetterKey(prefix: string, stage: string, partition: number): string {
  return partitionedKey(prefix, `dead:${stage}`, partition);
}

/** Last processing error per pending entry of a stage, kept until the entry is acked or dead-lettered. */
export function errorsKey(prefix: string, stage: string, partition: number): string {
  return partitionedKey(prefix, `errors:${stage}`, partition);
}

/**
 * Where every limit flag set is announced (its key as the message), by the ack script
 * (lua/ackAndForward.lua builds the same name) and by whoever sets a flag by hand: what answers
 * from leases (admission-leases.ts) drops those the flag concerns. A sharded channel (SPUBLISH)
 * with the flag key's hash tag: on a Redis Cluster it lives on the node that holds the flag, so
 * the announcement leaves that node with the step that set the flag. One channel per partition for
 * every prefix (pub/sub knows no databases); a reader ignores keys it does not hold. Undefined for
 * a key without a hash tag (never a partitioned key).
 */
export function limitFlagsChannel(key: string): string | undefined {
  const tag = hashTag(key);
  return tag === undefined ? undefined : `agentmeter:limit-flags:{${tag}}`;
}

/**
 * A key's Redis Cluster hash tag, as Redis reads it: what is between its first `{` and the next
 * `}`, when not empty; undefined otherwise (the whole key is hashed).
 */
export function hashTag(key: string): string | undefined {
  const open = key.indexOf('{');
  const close = open === -1 ? -1 : key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : undefined;
}

export function controlStreamKey(prefix: string): string {
  return `${prefix}control`;
}

/** Orders Redis stream entry ids (`<ms>-<seq>`) as Redis does. */
export function compareIds(a: string, b: string): number {
  const [aMs, aSeq] = a.split('-').map(BigInt);
  const [bMs, bSeq] = b.split('-').map(BigInt);
  return aMs !== bMs ? (aMs < bMs ? -1 : 1) : aSeq === bSeq ? 0 : aSeq < bSeq ? -1 : 1;
}

/** FNV-1a 32-bit: a stable, fast partition hash (the same in every process and language). */
export function partitionOf(value: string, partitions: number): number {
  if (partitions <= 1) return 0;
  let hash = 0x811c9dc5;
  for (let i = 0; i < value.length; i++) {
    hash ^= value.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % partitions;
}
