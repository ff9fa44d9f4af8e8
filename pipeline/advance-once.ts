/**
 * The argument builder and reply parser of lua/advanceOnce.lua, beside it: counters advanced
 * once per marker, with each item's (event's) running view worked out here. A batch names each
 * distinct key once (its increments summed per marker), so the script's cost follows the keys a
 * batch touches, not its events; the values it returns are those before the call, and every
 * item's view is the running total from there, in item order, as if the items had been applied
 * one at a time. The key names are the caller's, all in one partition (one hash tag).
 */
import type { Redis } from './redis.js';
import { scripted } from './scripts.js';

export type AdvanceCounter =
  /** Adds `by` when the item's marker is set by this call (the counter's ttl is then renewed). */
  | { op: 'add'; key: string; by: bigint; ttlSeconds: number }
  /** Keeps the least value seen (whatever the marker: a redelivery may still lower it). */
  | { op: 'min'; key: string; value: bigint; ttlSeconds: number }
  | { op: 'get'; key: string };

export interface AdvanceItem {
  /** The applied marker's key: the items sharing one are applied together, once. */
  marker: string;
  counters: AdvanceCounter[];
}

interface AdvanceCall {
  keys: string[];
  args: string[];
  /** How many of the keys are markers (they come first). */
  markers: number;
  /** Per item, its marker's number (0-based) and its counters' numbers (0-based, after the markers). */
  markerOf: number[];
  countersOf: number[][];
}

const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);

/** What INCRBY leaves: the script pins a counter past the int64 range at the max. */
const pinned = (value: bigint): bigint => (value > INT64_MAX || value < INT64_MIN ? INT64_MAX : value);

interface KeyPlan {
  op: AdvanceCounter['op'];
  ttlSeconds: number;
  /** 'add': the increments per marker, summed over consecutive items of one marker. */
  parts: [marker: number, by: bigint][];
  /** 'min': the least value of the batch. */
  least?: bigint;
}

/** KEYS and ARGV for advanceOnce.lua: the markers, then each distinct counter key once. */
function advanceOnceArguments(items: readonly AdvanceItem[], markerTtlSeconds: number): AdvanceCall {
  const markers = new Map<string, number>();
  const plans = new Map<string, KeyPlan>();
  const counterNumber = new Map<string, number>();
  const markerOf: number[] = [];
  const countersOf: number[][] = [];
  for (const item of items) {
    let marker = markers.get(item.marker);
    if (marker === undefined) markers.set(item.marker, (marker = markers.size));
    markerOf.push(marker);
    const numbers: number[] = [];
    for (const counter of item.counters) {
      let plan = plans.get(counter.key);
      if (!plan) {
        plan = { op: counter.op, ttlSeconds: 0, parts: [] };
        plans.set(counter.key, plan);
        counterNumber.set(counter.key, counterNumber.size);
      } else if (plan.op === 'get') {
        plan.op = counter.op;
      } else if (counter.op !== 'get' && counter.op !== plan.op) {
        throw new Error(`advanceOnce: ${counter.key} is both ${plan.op} and ${counter.op}`);
      }
      if (counter.op === 'add') {
        plan.ttlSeconds = counter.ttlSeconds;
        const last = plan.parts[plan.parts.length - 1];
        if (last && last[0] === marker) last[1] += counter.by;
        else plan.parts.push([marker, counter.by]);
      } else if (counter.op === 'min') {
        plan.ttlSeconds = counter.ttlSeconds;
        if (plan.least === undefined || counter.value < plan.least) plan.least = counter.value;
      }
      numbers.push(counterNumber.get(counter.key)!);
    }
    countersOf.push(numbers);
  }
  const args: string[] = [String(markers.size), String(markerTtlSeconds)];
  for (const plan of plans.values()) {
    if (plan.op === 'add') {
      args.push('add', String(plan.ttlSeconds), String(plan.parts.length));
      for (const [marker, by] of plan.parts) args.push(String(marker + 1), by.toString());
    } else if (plan.op === 'min') {
      args.push('min', String(plan.ttlSeconds), plan.least!.toString());
    } else {
      args.push('get');
    }
  }
  return { keys: [...markers.keys(), ...plans.keys()], args, markers: markers.size, markerOf, countersOf };
}

/**
 * Reads the script's reply into each item's view: per counter of the item, in its order, the
 * value once the item is applied (its own increments included when its marker was fresh).
 * Increments are summed per marker in the script and added one by one here: the same totals
 * for increments that are not negative (costs, counts), where pinning at the max commutes.
 */
function parseAdvanceOnceReply(items: readonly AdvanceItem[], call: AdvanceCall, reply: readonly (string | null)[]): bigint[][] {
  if (reply.length !== call.keys.length - call.markers + 1 || typeof reply[0] !== 'string' || reply[0].length !== call.markers) {
    throw new Error(`advanceOnce replied ${reply.length} elements for ${call.markers} markers and ${call.keys.length - call.markers} counters`);
  }
  const fresh = reply[0];
  const running: (bigint | undefined)[] = reply.slice(1).map((value) => (value === null ? undefined : BigInt(value)));
  return items.map((item, i) => {
    const isFresh = fresh[call.markerOf[i]] === '1';
    const numbers = call.countersOf[i];
    item.counters.forEach((counter, c) => {
      const n = numbers[c];
      if (counter.op === 'add' && isFresh) running[n] = pinned((running[n] ?? 0n) + counter.by);
      else if (counter.op === 'min' && (running[n] === undefined || counter.value < running[n])) running[n] = counter.value;
    });
    return numbers.map((n) => running[n] ?? 0n);
  });
}

/**
 * Applies the items' counters in one script call (every key, markers included, in one
 * partition) and returns each item's view, in item order.
 */
export async function advanceOnce(redis: Redis, items: readonly AdvanceItem[], markerTtlSeconds: number): Promise<bigint[][]> {
  if (items.length === 0) return [];
  const call = advanceOnceArguments(items, markerTtlSeconds);
  const reply = await scripted(redis).advanceOnce(call.keys.length, ...call.keys, ...call.args);
  return parseAdvanceOnceReply(items, call, reply);
}
