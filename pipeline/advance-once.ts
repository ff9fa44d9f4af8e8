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
  /** The counter's number among the call's counters (0-based). */
  index: number;
  op: AdvanceCounter['op'];
  ttlSeconds: number;
  /** 'add': the increments per marker (marker numbers and sums), summed over consecutive items of one marker. */
  markers: number[];
  sums: bigint[];
  /** 'min': the least value of the batch. */
  least?: bigint;
}

/** KEYS and ARGV for advanceOnce.lua: the markers, then each distinct counter key once. */
function advanceOnceArguments(items: readonly AdvanceItem[], markerTtlSeconds: number): AdvanceCall {
  const markers = new Map<string, number>();
  const plans = new Map<string, KeyPlan>();
  const markerOf: number[] = new Array(items.length);
  const countersOf: number[][] = new Array(items.length);
  let previousMarker: string | undefined;
  let marker = -1;
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    // The items of a block come together: its marker is looked up once.
    if (item.marker !== previousMarker) {
      previousMarker = item.marker;
      const known = markers.get(item.marker);
      if (known === undefined) markers.set(item.marker, (marker = markers.size));
      else marker = known;
    }
    markerOf[i] = marker;
    const numbers: number[] = new Array(item.counters.length);
    for (let c = 0; c < item.counters.length; c++) {
      const counter = item.counters[c];
      let plan = plans.get(counter.key);
      if (!plan) {
        plan = { index: plans.size, op: counter.op, ttlSeconds: 0, markers: [], sums: [] };
        plans.set(counter.key, plan);
      } else if (plan.op === 'get') {
        plan.op = counter.op;
      } else if (counter.op !== 'get' && counter.op !== plan.op) {
        throw new Error(`advanceOnce: ${counter.key} is both ${plan.op} and ${counter.op}`);
      }
      if (counter.op === 'add') {
        plan.ttlSeconds = counter.ttlSeconds;
        const last = plan.markers.length - 1;
        if (last >= 0 && plan.markers[last] === marker) plan.sums[last] += counter.by;
        else {
          plan.markers.push(marker);
          plan.sums.push(counter.by);
        }
      } else if (counter.op === 'min') {
        plan.ttlSeconds = counter.ttlSeconds;
        if (plan.least === undefined || counter.value < plan.least) plan.least = counter.value;
      }
      numbers[c] = plan.index;
    }
    countersOf[i] = numbers;
  }
  const args: string[] = [String(markers.size), String(markerTtlSeconds)];
  for (const plan of plans.values()) {
    if (plan.op === 'add') {
      args.push('add', String(plan.ttlSeconds), String(plan.markers.length));
      for (let m = 0; m < plan.markers.length; m++) args.push(String(plan.markers[m] + 1), plan.sums[m].toString());
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
