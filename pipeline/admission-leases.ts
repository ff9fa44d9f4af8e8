import { AdmissionIds, admissionArg, type AdmissionBatcher, type AdmissionReply, type AdmissionRequest } from './admission.js';
import { Cluster } from 'ioredis';
import { limitFlagsChannel } from './keys.js';
import type { Logger } from './logger.js';
import { reportRedisErrors, runPipelinePerKey, type Redis } from './redis.js';

/**
 * What holds a lease: one caller's admission request, the same on every call (see Authorizer's
 * CallerPlan). Holders with the same prefix share one lease (a caller's plan built again).
 */
export interface LeaseHolder {
  /** Any key of the request's partition: routes its script calls. */
  readonly anchorKey: string;
  /** `admissionPrefix(request)`: every key and limit of the request; names its lease. */
  readonly prefix: string;
  readonly request: AdmissionRequest;
}

interface Lease {
  holder: LeaseHolder;
  /** The flag channel of the holder's partition: the lease answers only while it is subscribed. */
  channel: string;
  /** Admissions granted and not yet answered: the rate window members `base:next` .. `base:(end - 1)`. */
  chunks: { base: string; next: number; end: number }[];
  unused: number;
  /** The reply of the latest grant: what an answer from the lease says (with its own rateUsed). */
  reply: AdmissionReply | undefined;
  rateUsed: number;
  grantedAt: number;
  validUntil: number;
  /** How many to ask for next: what the caller's recent pace uses in leaseMs. */
  grant: number;
  /** Answers given since the latest grant (the pace). */
  takes: number;
  /** The grant asked for in the background, until its answer is held (or the lease dropped). */
  renewal: Promise<void> | undefined;
  lastUsed: number;
}

/** The most admissions one script call grants ahead. */
const MAX_GRANT = 64;
/** A rate limit is leased at most 1/16th at a time (a limit under 32 a minute is never leased ahead). */
const RATE_SHARE = 16;

/**
 * Admissions granted ahead, answered from memory: the script call that admits a caller may admit
 * its next few calls too (a grant), counting each in the rate window at once, touching its session
 * and checking its flags; those calls are then answered here, with no round trip, while the lease
 * is younger than `leaseMs`. Before it runs out or grows old one call renews it in the background,
 * so a busy caller waits for Redis about never, and one script call answers many of its calls.
 *
 * What stays exact: every admission is counted in the shared rate window before it is answered
 * (a grant is a reservation), so no process admits more than the limit; a small limit is not
 * leased ahead at all. A session is touched at each grant. A flag set while a lease is held is
 * announced on its partition's channel (limitFlagsChannel) by whoever sets it (the ack script in the same step): the
 * leases of every caller it concerns are dropped as the message arrives. Redis sends it with the
 * answers of that step, so a call sent by anyone after seeing the flag arrives behind it (within
 * one process, a reply read in the same turn may come first); a lost message (a reconnect) drops every lease, and no lease
 * outlives `leaseMs`. What is not fresh: the running totals an answer from a lease reports are
 * those of its grant (at most `leaseMs` old), and its members enter the rate window at the grant
 * (they leave it up to `leaseMs` early). Members granted and never answered are taken back out of
 * the window when their lease expires or is dropped.
 *
 * Nothing is leased without the flag subscription in place: until it is, every call goes to Redis.
 * A request with a reservation (an estimate) always goes to Redis.
 */
export class AdmissionLeases {
  /** By the holder's prefix. */
  private readonly leases = new Map<string, Lease>();
  /** The leases whose holder lists the flag key. */
  private readonly byFlag = new Map<string, Set<Lease>>();
  private readonly ids = new AdmissionIds();
  /** Bumped by every flag announced: a grant sent before one is answered but not kept as a lease. */
  private epoch = 0;
  private subscriber: Redis | undefined;
  /** The flag channels asked for, and whether each is subscribed now. */
  private readonly channels = new Map<string, boolean>();
  private readonly waitingForChannel: { channel: string; resolve: () => void }[] = [];
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly redis: Redis,
    private readonly batcher: AdmissionBatcher,
    private readonly options: { leaseMs: number; name: string; log?: Logger },
  ) {}

  /** Resolves once the flag channel of the holder's partition is subscribed (its leases are kept from then on). */
  ready(holder: LeaseHolder): Promise<void> {
    const channel = limitFlagsChannel(holder.anchorKey);
    if (channel === undefined || this.closed) return Promise.resolve();
    this.watch(channel);
    return this.channels.get(channel) ? Promise.resolve() : new Promise((resolve) => this.waitingForChannel.push({ channel, resolve }));
  }

  /** An admission answered from the holder's lease, or undefined (the caller then asks Redis: `admit`). */
  take(holder: LeaseHolder, now: number): AdmissionReply | undefined {
    const lease = this.leases.get(holder.prefix);
    if (!lease || lease.unused === 0 || !this.channels.get(lease.channel)) return undefined;
    if (now >= lease.validUntil) {
      // Out of the window before the call that goes to Redis now is decided (sent first, on the same connection).
      this.takeBackUnused(lease);
      return undefined;
    }
    const chunk = lease.chunks[0];
    if (++chunk.next === chunk.end) lease.chunks.shift();
    lease.unused--;
    lease.takes++;
    lease.lastUsed = now;
    if (!lease.renewal && (lease.unused <= lease.grant >> 1 || now - lease.grantedAt >= this.options.leaseMs / 2)) this.renew(lease, now);
    if (holder.request.rate?.limit !== undefined) lease.rateUsed++;
    return { ...lease.reply!, rateUsed: lease.rateUsed };
  }

  /**
   * One admission for a call `take` could not answer. While the holder's next grant is on its way
   * the call waits for it and is answered from it, so a caller's calls are answered in the order
   * they came, with one script call; otherwise Redis decides it (`admitNow`).
   */
  admit(holder: LeaseHolder): Promise<{ reply: AdmissionReply; now: number }> {
    const renewal = this.leases.get(holder.prefix)?.renewal;
    if (!renewal) return this.admitNow(holder);
    return renewal.then(() => {
      const now = Date.now();
      const reply = this.take(holder, now);
      return reply ? { reply, now } : this.admit(holder);
    });
  }

  /**
   * One admission decided by Redis, asking for the holder's next grant with it: what is granted
   * beyond this call is kept as the holder's lease.
   */
  private admitNow(holder: LeaseHolder): Promise<{ reply: AdmissionReply; now: number }> {
    const channel = limitFlagsChannel(holder.anchorKey);
    if (channel !== undefined) this.watch(channel);
    let lease = this.leases.get(holder.prefix);
    const grant = channel !== undefined && this.channels.get(channel) ? Math.min(lease?.grant ?? 1, maxGrant(holder)) : 1;
    const member = holder.request.rate ? this.ids.next() : undefined;
    const epoch = this.epoch;
    return this.batcher.admitArg(holder.anchorKey, admissionArg(holder.prefix, { member, grant })).then((answer) => {
      const { reply, now } = answer;
      if (reply.verdict.kind !== 'ok') {
        if (lease) this.drop(lease);
        return answer;
      }
      lease = this.leases.get(holder.prefix) ?? this.open(holder, channel ?? '', now);
      if (grant === 1) lease.grant = Math.min(2, maxGrant(holder));
      else if (reply.granted > 1) this.hold(lease, member, 1, reply, now, epoch);
      lease.lastUsed = now;
      return answer;
    });
  }

  /**
   * Drops the holder's lease: for a change the lease's reply does not show (a reservation made or
   * released for the same caller), so that the caller's next answer reads it.
   */
  forget(holder: LeaseHolder): void {
    const lease = this.leases.get(holder.prefix);
    if (lease) this.drop(lease);
  }

  /** Stops listening and sweeping; what is granted and unused is taken back. */
  async close(): Promise<void> {
    this.closed = true;
    this.channels.clear();
    if (this.sweeper) clearInterval(this.sweeper);
    for (const lease of this.leases.values()) this.drop(lease);
    this.subscriber?.disconnect();
    for (const { resolve } of this.waitingForChannel.splice(0)) resolve();
    await this.flushReturns();
  }

  private open(holder: LeaseHolder, channel: string, now: number): Lease {
    const lease: Lease = { holder, channel, chunks: [], unused: 0, reply: undefined, rateUsed: 0, grantedAt: now, validUntil: now, grant: 1, takes: 0, renewal: undefined, lastUsed: now };
    this.leases.set(holder.prefix, lease);
    for (const key of holder.request.flagKeys) {
      let set = this.byFlag.get(key);
      if (!set) this.byFlag.set(key, (set = new Set()));
      set.add(lease);
    }
    return lease;
  }

  /** Keeps a grant's admissions from `from` on; one sent before a flag was announced is taken back instead. */
  private hold(lease: Lease, member: string | undefined, from: number, reply: AdmissionReply, now: number, epoch: number): void {
    const base = member ?? '';
    if (epoch !== this.epoch || this.closed || this.leases.get(lease.holder.prefix) !== lease) {
      this.giveBack(lease.holder, base, from, reply.granted);
      return;
    }
    if (lease.holder.request.rate?.limit !== undefined) {
      // reply.rateUsed counts the window with the grant's first admission, and with what this lease
      // still holds unanswered; the caller that asked answered that first one when from is 1.
      lease.rateUsed = reply.rateUsed - (from === 0 ? 1 : 0) - lease.unused;
    }
    if (from < reply.granted) {
      lease.chunks.push({ base, next: from, end: reply.granted });
      lease.unused += reply.granted - from;
    }
    lease.reply = reply;
    lease.grantedAt = now;
    lease.takes = 0;
    lease.validUntil = now + this.options.leaseMs;
  }

  /** Asks for what the caller's pace since the latest grant uses in leaseMs (at least one). */
  private renew(lease: Lease, now: number): void {
    const holder = lease.holder;
    const member = holder.request.rate ? this.ids.next() : undefined;
    const epoch = this.epoch;
    const pace = Math.ceil((lease.takes * this.options.leaseMs) / Math.max(this.options.leaseMs / 10, now - lease.grantedAt));
    const grant = (lease.grant = Math.max(1, Math.min(pace, maxGrant(holder))));
    lease.renewal = this.batcher.admitArg(holder.anchorKey, admissionArg(holder.prefix, { member, grant })).then(
      ({ reply, now }) => {
        lease.renewal = undefined;
        if (reply.verdict.kind === 'ok') this.hold(lease, member, 0, reply, now, epoch);
        else this.drop(lease);
      },
      (err: unknown) => {
        lease.renewal = undefined;
        this.drop(lease);
        this.options.log?.warn({ err }, 'admission lease: cannot renew; calls go to Redis');
      },
    );
  }

  /** Forgets a lease (its holder's calls go to Redis again) and takes back what it held. */
  private drop(lease: Lease): void {
    this.takeBackUnused(lease);
    if (this.leases.get(lease.holder.prefix) === lease) this.leases.delete(lease.holder.prefix);
    for (const key of lease.holder.request.flagKeys) {
      const set = this.byFlag.get(key);
      set?.delete(lease);
      if (set?.size === 0) this.byFlag.delete(key);
    }
  }

  private takeBackUnused(lease: Lease): void {
    for (const chunk of lease.chunks) this.giveBack(lease.holder, chunk.base, chunk.next, chunk.end);
    lease.chunks = [];
    lease.unused = 0;
  }

  private returns = new Map<string, string[]>();
  private flushScheduled = false;

  /** Takes members `base:from` .. `base:(end - 1)` back out of the holder's rate window (batched, best effort). */
  private giveBack(holder: LeaseHolder, base: string, from: number, end: number): void {
    const key = holder.request.rate?.key;
    if (!key || holder.request.rate?.limit === undefined || from >= end) return;
    let members = this.returns.get(key);
    if (!members) this.returns.set(key, (members = []));
    for (let i = from; i < end; i++) members.push(`${base}:${i}`);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => void this.flushReturns());
    }
  }

  private async flushReturns(): Promise<void> {
    this.flushScheduled = false;
    if (this.returns.size === 0) return;
    const returns = this.returns;
    this.returns = new Map();
    // A member not taken back only counts until it leaves the window.
    await runPipelinePerKey(this.redis, [...returns.keys()], (pipeline, key) => pipeline.zrem(key, ...returns.get(key)!)).catch((err: unknown) =>
      this.options.log?.warn({ err }, 'admission lease: cannot take unused admissions back out of their rate windows'),
    );
  }

  /** Leases expired: unused admissions taken back; one idle for ten lease times forgotten. */
  private sweep(): void {
    const now = Date.now();
    for (const lease of this.leases.values()) {
      if (now < lease.validUntil) continue;
      if (lease.unused > 0) this.takeBackUnused(lease);
      if (now - lease.lastUsed > 10 * this.options.leaseMs && !lease.renewal) this.drop(lease);
    }
  }

  /**
   * Subscribes to a partition's flag channel (once): on a cluster, through a connection to the node
   * that holds the partition (sharded pub/sub), so an announcement leaves with the step that set
   * the flag. Leases of the partition are kept only while it is subscribed; a lost connection
   * drops every lease, and the channels are subscribed again once it is back.
   */
  private watch(channel: string): void {
    if (this.closed || this.channels.has(channel)) return;
    this.channels.set(channel, false);
    const subscriber = this.subscriber ?? this.connect();
    if (subscriber.status === 'ready') this.subscribe(subscriber, channel);
  }

  private subscribe(subscriber: Redis, channel: string): void {
    subscriber.ssubscribe(channel).then(
      () => {
        if (this.closed || !this.channels.has(channel)) return;
        this.channels.set(channel, true);
        for (const waiting of this.waitingForChannel.filter((w) => w.channel === channel)) {
          this.waitingForChannel.splice(this.waitingForChannel.indexOf(waiting), 1);
          waiting.resolve();
        }
      },
      (err: unknown) => this.options.log?.warn({ err, channel }, 'admission lease: cannot subscribe to the flag channel; calls go to Redis'),
    );
  }

  private connect(): Redis {
    const subscriber = this.redis instanceof Cluster ? this.redis.duplicate([], { shardedSubscribers: true }) : this.redis.duplicate();
    this.subscriber = subscriber;
    reportRedisErrors(subscriber, this.options.name, this.options.log);
    subscriber.on('smessage', (_channel: string, key: string) => this.announced(key));
    const lost = () => {
      for (const channel of this.channels.keys()) this.channels.set(channel, false);
      for (const lease of this.leases.values()) this.drop(lease);
    };
    subscriber.on('close', lost);
    subscriber.on('end', lost);
    subscriber.on('ready', () => {
      for (const channel of this.channels.keys()) this.subscribe(subscriber, channel);
    });
    this.sweeper = setInterval(() => this.sweep(), this.options.leaseMs);
    this.sweeper.unref();
    return subscriber;
  }

  private announced(key: string): void {
    this.epoch++;
    const leases = this.byFlag.get(key);
    if (leases) for (const lease of [...leases]) this.drop(lease);
  }
}

/** Announces a limit flag set outside the ack script (by hand, by an admin route): call it after the flag is set. */
export async function announceLimitFlag(redis: Redis, flagKey: string): Promise<void> {
  const channel = limitFlagsChannel(flagKey);
  if (channel !== undefined) await redis.spublish(channel, flagKey);
}

function maxGrant(holder: LeaseHolder): number {
  const limit = holder.request.rate?.limit;
  return limit === undefined ? MAX_GRANT : Math.max(1, Math.min(MAX_GRANT, Math.floor(limit / RATE_SHARE)));
}
