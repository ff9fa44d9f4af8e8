/**
 * The argument builder and reply parser of lua/ackAndForward.lua, beside it and named after
 * it: the script's layout lives in one place on each side, so neither drifts from the other.
 */

import type { BlockBytes } from './blocks.js';
import type { RollingWindow } from './stage.js';

/** One counter effect with its keys resolved (prefix and partition applied). */
interface AckCounter {
  counterKey: string;
  by: bigint;
  ttlSeconds: number;
  limit?: bigint;
  tag?: string;
  flagKey?: string;
  flagValue?: string;
  flagTtlSeconds?: number;
  window?: RollingWindow;
}

/** One output stream entry: a block of nEvents events, or a single entry when nEvents is 1. */
export interface AckGroup {
  groupKey: string;
  payload: BlockBytes;
  nEvents: number;
  origin: string;
}

/** An event with counter effects: its counters, and where its outputs sit (to tag them). */
export interface AckCounted {
  counters: AckCounter[];
  /** groupIndex is 1-based into the input's groups, position 1-based within the group. */
  refs: { groupIndex: number; position: number }[];
}

/** An event that failed alone: appended to the input stream as a single entry. */
export interface AckRetry {
  payload: Buffer;
  tags: string;
  reason: string;
}

export interface AckInput {
  id: string;
  clearError: boolean;
  groups: AckGroup[];
  counted: AckCounted[];
  retries: AckRetry[];
}

export type AckReply =
  /** Another consumer acked it first: nothing was forwarded. */
  | { kind: 'not-acked' }
  /** The checks refused it: not acked, it stays pending. */
  | { kind: 'refused'; reason: string }
  /** Acked and forwarded; the tags of the limits each counted event crossed, in order. */
  | { kind: 'acked'; crossed: string[][] };

export interface AckCall {
  keys: string[];
  args: (string | BlockBytes)[];
}

/** KEYS and ARGV for ackAndForward.lua. */
export function ackArguments(inputKey: string, errorsKey: string, group: string, inputs: readonly AckInput[]): AckCall {
  const keys: string[] = [inputKey, errorsKey];
  const keyIndex = new Map<string, number>();
  const indexOf = (key: string): string => {
    let index = keyIndex.get(key);
    if (index === undefined) {
      keys.push(key);
      index = keys.length; // Lua indexes from 1
      keyIndex.set(key, index);
    }
    return String(index);
  };
  const args: (string | BlockBytes)[] = [group, String(inputs.length)];
  for (const input of inputs) {
    args.push(input.id, input.clearError ? '1' : '0', String(input.groups.length), String(input.counted.length), String(input.retries.length));
    for (const g of input.groups) args.push(indexOf(g.groupKey), g.payload, String(g.nEvents), g.origin);
    for (const event of input.counted) {
      args.push(String(event.counters.length), String(event.refs.length));
      for (const c of event.counters) {
        args.push(
          indexOf(c.counterKey),
          c.by.toString(),
          String(c.ttlSeconds),
          c.limit === undefined ? '' : c.limit.toString(),
          c.tag ?? '',
          c.flagKey === undefined ? '' : indexOf(c.flagKey),
          c.flagValue ?? '',
          String(c.flagTtlSeconds ?? 0),
          c.window ? `${c.window.bucketMs}:${c.window.buckets}:${c.window.now}` : '',
        );
      }
      for (const ref of event.refs) args.push(String(ref.groupIndex), String(ref.position));
    }
    for (const r of input.retries) args.push(r.payload, r.tags, r.reason);
  }
  return { keys, args };
}

/** Reads the script's reply: one element per input, in order. */
export function parseAckReply(inputs: readonly AckInput[], reply: readonly (string | null)[]): AckReply[] {
  if (reply.length !== inputs.length) throw new Error(`ackAndForward replied ${reply.length} elements for ${inputs.length} inputs`);
  return inputs.map((input, i): AckReply => {
    const value = reply[i];
    if (value === null || value === undefined) return { kind: 'not-acked' };
    if (value.startsWith('!')) return { kind: 'refused', reason: value.slice(1) };
    if (input.counted.length === 0) return { kind: 'acked', crossed: [] };
    return { kind: 'acked', crossed: value.split('\n').map((tags) => (tags ? tags.split(',') : [])) };
  });
}
