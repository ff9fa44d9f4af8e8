/**
 * The argument builder and reply parser of lua/advanceOnce.lua, beside it: counters advanced
 * once per marker, with each item's (event's) running view worked out here. A batch names each
 * distinct key once (by the total of its increments, or, when a marker of the batch was applied
 * before, by its increments summed per marker), so the script's cost follows the keys a batch
 * touches, not its events or blocks; from what it returns comes each counter's value before the
 * call, and every item's view is the running total from there, in item order, as if the items
 * had been applied one at a time. The key names are the caller's, all in one partition (one hash tag).
 */
import type { Redis } from './redis.js';
import { scripted } from './scripts.js';

type AdvanceCounter =
  /** Adds `by` when the item's marker is set by this call (a counter this creates gets the ttl; it is never renewed). */
  | { op: 'add'; key: string; by: bigint; ttlSeconds: number }
  /** Keeps the least value seen (whatever the marker: a redelivery may still lower it). */
  | { op: 'min'; key: string; value: bigint; ttlSeconds: number }
  | { op: 'get'; key: string };

export interface AdvanceItem {
  /** The applied marker's key: the items sharing one are applied together, once. */
  marker: string;
  counters: AdvanceCounter[];
}

const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);

/** What INCRBY leaves: the script pins a counter past the int64 range at the max. */
const pinned = (value: bigint): bigint => (value > INT64_MAX || value < INT64_MIN ? INT64_MAX : value);

type Form = 'total' | 'each';
type ReplyValue = string | number | null | [string];
type Reply = ReplyValue[];

const ADD = 0;
const MIN = 1;
const GET = 2;
type Op = typeof ADD | typeof MIN | typeof GET;
const OP_NAMES = ['add', 'min', 'get'] as const;

interface KeyPlan {
  op: Op;
  ttlSeconds: number;
  /** ADD: the increments per marker (marker numbers and sums), summed over consecutive items of one marker. */
  markers: number[];
  sums: bigint[];
  /** MIN: the least value of the batch. */
  least?: bigint;
}

/** An ADD plan's increments summed over its markers. */
function totalOf(plan: KeyPlan): bigint {
  let total = 0n;
  for (const sum of plan.sums) total += sum;
  return total;
}

/**
 * One script call's worth of items, built counter by counter without an object per counter:
 * `item(marker)` opens an item, then `add`, `min` and `get` name its counters in order. After
 * `run`, `view(slot)` is a counter's value once its item is applied (its own increment included
 * when its marker was fresh), slots numbered in the order the counters were named.
 */
export class AdvanceBatch {
  private readonly markers = new Map<string, number>();
  private readonly plans = new Map<string, number>();
  private readonly keyPlans: KeyPlan[] = [];
  private readonly keys: string[] = [];
  private previousMarker?: string;
  private marker = -1;
  /** Per slot: its item's marker number, its key's plan number, its op and its value (ADD: by, MIN: value). */
  private readonly slotMarker: number[] = [];
  private readonly slotPlan: number[] = [];
  private readonly slotOp: Op[] = [];
  private readonly slotValue: (bigint | undefined)[] = [];
  private views?: bigint[];

  /** Opens an item applied once by `marker` (the items of a block come together and share it). */
  item(marker: string): void {
    if (marker === this.previousMarker) return;
    this.previousMarker = marker;
    const known = this.markers.get(marker);
    if (known === undefined) this.markers.set(marker, (this.marker = this.markers.size));
    else this.marker = known;
  }

  /** Adds `by` when the item's marker is fresh (a counter this creates gets the ttl). Returns the slot. */
  add(key: string, by: bigint, ttlSeconds: number): number {
    const index = this.planOf(key, ADD);
    const plan = this.keyPlans[index];
    plan.ttlSeconds = ttlSeconds;
    const last = plan.markers.length - 1;
    if (last >= 0 && plan.markers[last] === this.marker) plan.sums[last] += by;
    else {
      plan.markers.push(this.marker);
      plan.sums.push(by);
    }
    return this.slot(index, ADD, by);
  }

  /** Keeps the least value seen (whatever the marker: a redelivery may still lower it). Returns the slot. */
  min(key: string, value: bigint, ttlSeconds: number): number {
    const index = this.planOf(key, MIN);
    const plan = this.keyPlans[index];
    plan.ttlSeconds = ttlSeconds;
    if (plan.least === undefined || value < plan.least) plan.least = value;
    return this.slot(index, MIN, value);
  }

  /** Reads the counter (0 when absent). Returns the slot. */
  get(key: string): number {
    return this.slot(this.planOf(key, GET), GET, undefined);
  }

  get size(): number {
    return this.slotOp.length;
  }

  /** Applies the batch in one script call, two for a redelivery (every key, markers included, in one partition). */
  async run(redis: Redis, markerTtlSeconds: number): Promise<void> {
    if (this.slotOp.length === 0) {
      this.views = [];
      return;
    }
    // First with each key's total: the markers are fresh unless the batch is a redelivery.
    let form: Form = 'total';
    let reply = await this.call(redis, markerTtlSeconds, form);
    if (reply.length === 1 && reply[0] === 'each') reply = await this.call(redis, markerTtlSeconds, (form = 'each'));
    this.views = this.parse(reply, form);
  }

  /** One script call: an 'add' names its total (applied only when every marker is fresh), or each marker's increment. */
  private call(redis: Redis, markerTtlSeconds: number, form: Form): Promise<Reply> {
    const args: string[] = [String(this.markers.size), String(markerTtlSeconds), form];
    for (const plan of this.keyPlans) {
      if (plan.op === ADD) {
        args.push('add', String(plan.ttlSeconds));
        if (form === 'total') args.push(totalOf(plan).toString());
        else {
          args.push(String(plan.markers.length));
          for (let m = 0; m < plan.markers.length; m++) args.push(String(plan.markers[m] + 1), plan.sums[m].toString());
        }
      } else if (plan.op === MIN) {
        args.push('min', String(plan.ttlSeconds), plan.least!.toString());
      } else {
        args.push('get');
      }
    }
    return scripted(redis).advanceOnce(this.markers.size + this.keys.length, ...this.markers.keys(), ...this.keys, ...args);
  }

  /** A counter's value once its item is applied (0 when absent). */
  view(slot: number): bigint {
    if (!this.views) throw new Error('advanceOnce: view() before run()');
    return this.views[slot];
  }

  /**
   * A counter's value before the call (undefined when absent) from its place in the reply: an
   * 'add' of the 'total' form replies its value after (or, pinned, [its value before]).
   */
  private before(k: number, value: ReplyValue, form: Form): bigint | undefined {
    if (Array.isArray(value)) return BigInt(value[0]);
    if (value === null) return undefined;
    const plan = this.keyPlans[k];
    return form === 'total' && plan.op === ADD ? BigInt(value) - totalOf(plan) : BigInt(value);
  }

  /** The number of the key's plan (added on first sight), its op checked against `op`. */
  private planOf(key: string, op: Op): number {
    const known = this.plans.get(key);
    if (known === undefined) {
      this.plans.set(key, this.keyPlans.length);
      this.keyPlans.push({ op, ttlSeconds: 0, markers: [], sums: [] });
      this.keys.push(key);
      return this.keyPlans.length - 1;
    }
    const plan = this.keyPlans[known];
    if (plan.op === GET) plan.op = op;
    else if (op !== GET && op !== plan.op) throw new Error(`advanceOnce: ${key} is both ${OP_NAMES[plan.op]} and ${OP_NAMES[op]}`);
    return known;
  }

  private slot(plan: number, op: Op, value: bigint | undefined): number {
    if (this.marker < 0) throw new Error('advanceOnce: a counter before item()');
    this.slotMarker.push(this.marker);
    this.slotPlan.push(plan);
    this.slotOp.push(op);
    this.slotValue.push(value);
    return this.slotOp.length - 1;
  }

  /**
   * Each slot's view from the script's reply: the running value from each counter's value before
   * the call, in slot order. Increments are summed per marker in the script and added one by one
   * here: the same totals for increments that are not negative (costs, counts), where pinning at
   * the max commutes.
   */
  private parse(reply: Reply, form: Form): bigint[] {
    const markers = this.markers.size;
    if (reply.length !== this.keys.length + 1 || typeof reply[0] !== 'string' || reply[0].length !== markers) {
      throw new Error(`advanceOnce replied ${reply.length} elements for ${markers} markers and ${this.keys.length} counters`);
    }
    const fresh = reply[0];
    const running: (bigint | undefined)[] = new Array(this.keys.length);
    for (let k = 0; k < this.keys.length; k++) running[k] = this.before(k, reply[k + 1], form);
    const views: bigint[] = new Array(this.slotOp.length);
    for (let s = 0; s < this.slotOp.length; s++) {
      const k = this.slotPlan[s];
      const op = this.slotOp[s];
      if (op === ADD) {
        if (fresh.charCodeAt(this.slotMarker[s]) === 49 /* '1' */) running[k] = pinned((running[k] ?? 0n) + this.slotValue[s]!);
      } else if (op === MIN) {
        const value = this.slotValue[s]!;
        if (running[k] === undefined || value < running[k]!) running[k] = value;
      }
      views[s] = running[k] ?? 0n;
    }
    return views;
  }
}

/**
 * Applies the items' counters in one script call (every key, markers included, in one
 * partition) and returns each item's view: per counter of the item, in its order, the value once
 * the item is applied.
 */
export async function advanceOnce(redis: Redis, items: readonly AdvanceItem[], markerTtlSeconds: number): Promise<bigint[][]> {
  if (items.length === 0) return [];
  const batch = new AdvanceBatch();
  const slots = items.map((item) => {
    batch.item(item.marker);
    return item.counters.map((c) => (c.op === 'add' ? batch.add(c.key, c.by, c.ttlSeconds) : c.op === 'min' ? batch.min(c.key, c.value, c.ttlSeconds) : batch.get(c.key)));
  });
  await batch.run(redis, markerTtlSeconds);
  return slots.map((list) => list.map((slot) => batch.view(slot)));
}
