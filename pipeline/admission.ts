import { randomBytes } from 'node:crypto';
import type { Redis } from './redis.js';
import { luaSource } from './scripts.js';

/**
 * Typed arguments and replies of `pipeline/lua/authorize-1.lua` and
 * `pipeline/lua/releaseReservations-1.lua`: admission checks (flags, a sliding window, a bounded
 * set of sessions, budgets with reservations) answered in one Redis round trip. The key names
 * are the caller's, all in one partition (one hash tag); this module knows nothing of billing.
 */
export interface AdmissionRequest {
  /** Any one set stops the request; its value is returned. */
  flagKeys: string[];
  /** A sliding window of admitted requests (a ZSET). */
  rate?: { key: string; limit?: number; windowMs: number; member: string };
  /** A bounded set of sessions seen within idleMs (a ZSET); a session not in it is refused when it is full. */
  sessions?: { key: string; max?: number; session?: string; idleMs: number };
  /**
   * Running totals with a limit; a hard one refuses an estimate that does not fit (unless its
   * override key exists). With a window, a rolling total (lua/lib/window.lua).
   */
  budgets: { counterKey: string; limit: bigint; hard: boolean; overrideKey?: string; window?: WindowSpec }[];
  /**
   * With an estimate, every budget reserves it under reservationId for ttlMs; with an owner, only
   * a release naming that owner (or one naming none: the settling event's) releases it.
   */
  reservation?: { estimate: bigint; id: string; ttlMs: number; owner?: string };
}

/**
 * Ids unique to one process and call, for a rate window's members and reservations: a random
 * prefix per instance, then a counter.
 */
export class AdmissionIds {
  private readonly prefix = randomBytes(6).toString('base64url');
  private sequence = 0;

  next(prefix = ''): string {
    return `${prefix}${this.prefix}${(this.sequence++).toString(36)}`;
  }
}

/** A rolling total: the last `buckets` buckets of `bucketMs` each. */
export interface WindowSpec {
  bucketMs: number;
  buckets: number;
}

type AdmissionVerdict =
  | { kind: 'ok' }
  | { kind: 'flag'; value: string }
  | { kind: 'rate'; retryAfterMs: number }
  | { kind: 'sessions'; active: number }
  | { kind: 'budget'; index: number };

export interface AdmissionReply {
  verdict: AdmissionVerdict;
  /** How many requests were admitted: 1, or up to the grant asked (a lease); 0 when refused. */
  granted: number;
  /** Requests in the window, this one included when admitted. */
  rateUsed: number;
  /** Sessions active, this one included when admitted. */
  sessionsActive: number;
  /**
   * Per budget, in order: the running total and the sum of live reservations (this one's
   * included); for a rolling one, freesAt: when spent + reserved + (the estimate, or 1 nano)
   * fits under the limit as old spend leaves the window (or when the oldest spend leaves, when
   * it fits already; undefined when nothing is counted).
   */
  budgets: { spent: bigint; reserved: bigint; freesAt?: number }[];
}

type ScriptArg = string | number;

interface AdmissionRedis {
  authorizeAdmission(anchorKey: string, ...args: ScriptArg[]): Promise<string>;
  releaseReservations(anchorKey: string, ...args: ScriptArg[]): Promise<number>;
  windowTotals(anchorKey: string, ...args: ScriptArg[]): Promise<[string, number][]>;
}

const defined = new WeakSet<Redis>();

function withScripts(redis: Redis): Redis & AdmissionRedis {
  if (!defined.has(redis)) {
    redis.defineCommand('authorizeAdmission', { lua: luaSource('authorize-1.lua', 'window.lua'), numberOfKeys: 1 });
    redis.defineCommand('releaseReservations', { lua: luaSource('releaseReservations-1.lua'), numberOfKeys: 1 });
    redis.defineCommand('windowTotals', { lua: luaSource('windowTotals-1.lua', 'window.lua'), numberOfKeys: 1 });
    defined.add(redis);
  }
  return redis as Redis & AdmissionRedis;
}

/**
 * One request as authorize-1.lua reads it: a JSON array of strings, one script argument (Redis
 * decodes it with cjson, in C). About 35 arguments per request cost the caller a RESP header and
 * a string concatenation each (ioredis) and most of its allocations on this path; one JSON string
 * per request costs one JSON.stringify. The fields that are the same on every call of one caller
 * (keys, limits) come first: `admissionPrefix` encodes them once for a caller that keeps it.
 */
export function admissionPrefix(request: AdmissionRequest): string {
  const rate = request.rate;
  const sessions = request.sessions;
  const fields: string[] = [String(request.flagKeys.length), ...request.flagKeys];
  fields.push(rate?.key ?? '', rate?.limit !== undefined ? String(rate.limit) : '', String(rate?.windowMs ?? 0));
  fields.push(sessions?.key ?? '', sessions?.max !== undefined ? String(sessions.max) : '', sessions?.session ?? '', String(sessions?.idleMs ?? 0));
  fields.push(String(request.budgets.length));
  for (const budget of request.budgets) {
    fields.push(budget.counterKey, budget.limit.toString(), budget.hard ? '1' : '0', budget.overrideKey ?? '', budget.window ? `${budget.window.bucketMs}:${budget.window.buckets}` : '');
  }
  const json = jsonForCjson(fields);
  return json.slice(0, -1) + ',';
}

/** What changes from one call of a caller to the next: the fields `admissionPrefix` leaves out. */
export interface AdmissionCall {
  /** The rate window's member for this call (when the request has a rate window). */
  member?: string;
  reservation?: AdmissionRequest['reservation'];
  /**
   * Admit up to this many requests at once (never with a reservation): the rate window gets
   * `member:0` .. `member:<granted - 1>`, all counted now. See AdmissionLeases.
   */
  grant?: number;
}

/** The whole argument of one call: the caller's prefix (from `admissionPrefix`) and what changes per call. */
export function admissionArg(prefix: string, call: AdmissionCall): string {
  const reservation = call.reservation;
  return (
    prefix +
    jsonForCjson([
      call.member ?? '',
      reservation ? reservation.estimate.toString() : '',
      reservation?.id ?? '',
      String(reservation?.ttlMs ?? 0),
      String(call.grant ?? 1),
      reservation?.owner ?? '',
    ]).slice(1)
  );
}

function wholeArg(request: AdmissionRequest): string {
  return admissionArg(admissionPrefix(request), { member: request.rate?.member, reservation: request.reservation });
}

function jsonForCjson(fields: string[]): string {
  const json = JSON.stringify(fields);
  // A lone surrogate (possible in a session id from a JSON body) is escaped as \udXXX, which
  // cjson refuses: send it as the UTF-8 encoding sent it before, U+FFFD. (A backslash sent as
  // such is escaped too, so '\\ud' text only costs this slower encoding, never a wrong one.)
  return json.includes('\\ud') ? JSON.stringify(fields.map((field) => Buffer.from(field, 'utf8').toString('utf8'))) : json;
}

function parseReply(raw: (string | number)[]): AdmissionReply {
  const [kind, detail, rateUsed, sessionsActive, granted, ...totals] = raw;
  const verdict: AdmissionVerdict =
    kind === 'flag' ? { kind, value: String(detail) }
    : kind === 'rate' ? { kind, retryAfterMs: Number(detail) }
    : kind === 'sessions' ? { kind, active: Number(detail) }
    : kind === 'budget' ? { kind, index: Number(detail) - 1 }
    : { kind: 'ok' };
  const budgets: AdmissionReply['budgets'] = [];
  for (let i = 0; i + 2 < totals.length; i += 3) {
    const freesAt = Number(totals[i + 2]);
    budgets.push({ spent: BigInt(totals[i]), reserved: BigInt(totals[i + 1]), ...(freesAt > 0 ? { freesAt } : {}) });
  }
  return { verdict, granted: Number(granted), rateUsed: Number(rateUsed), sessionsActive: Number(sessionsActive), budgets };
}

/**
 * Decides requests that share a partition in one script call (one round trip). `anchorKey` is any
 * key with that partition's hash tag; `now` is passed in, so every request of a call sees one clock.
 */
export function admit(redis: Redis, anchorKey: string, requests: AdmissionRequest[], now = Date.now()): Promise<AdmissionReply[]> {
  return admitEncoded(redis, anchorKey, requests.map(wholeArg), now);
}

async function admitEncoded(redis: Redis, anchorKey: string, encoded: string[], now: number): Promise<AdmissionReply[]> {
  const replies = JSON.parse(await withScripts(redis).authorizeAdmission(anchorKey, now, encoded.length, ...encoded)) as (string | number)[][];
  return replies.map(parseReply);
}

/**
 * Releases reservations by (counter key, reservation id); unknown ones are ignored, and so, with
 * an `owner`, is one another owner made (or one made without an owner). Without an owner (the
 * event that settles it) whoever made it. Returns how many were released.
 */
export async function releaseReservations(redis: Redis, anchorKey: string, releases: { counterKey: string; id: string; owner?: string }[]): Promise<number> {
  if (releases.length === 0) return 0;
  const args: ScriptArg[] = [releases.length];
  for (const release of releases) args.push(release.counterKey, release.id, release.owner ?? '');
  return withScripts(redis).releaseReservations(anchorKey, ...args);
}

interface Waiting {
  /** The request as the script reads it (admissionArg). */
  arg: string;
  resolve: (answer: { reply: AdmissionReply; now: number }) => void;
  reject: (err: unknown) => void;
}

interface AnchorQueue {
  waiting: Waiting[];
  inFlight: number;
  scheduled: boolean;
}

/**
 * Coalesces the admission requests of many concurrent callers into few script calls: requests of
 * one partition (anchor key) that arrive in the same turn of the event loop, or while that
 * partition's previous call is still in flight, go together in the next call (group commit). Under
 * load a process sends one script call per Redis round trip and partition instead of one per
 * request, which is where its CPU went (a write to the Redis socket is dearer than the request's
 * whole decision); alone, a request waits for nothing but the end of its turn. Each call decides
 * its requests in order in one step, so what one admits the next sees; calls in flight on one
 * connection run in the order they were sent, so with maxInFlight 2 (authorize) the second
 * sees what the first admitted.
 */
export class AdmissionBatcher {
  /** One queue per anchor key: as many as there are partitions. */
  private readonly queues = new Map<string, AnchorQueue>();

  constructor(
    private readonly redis: Redis,
    private readonly options: { maxInFlight?: number; maxBatch?: number } = {},
  ) {}

  /**
   * The reply to one request, and the clock its script call ran with.
   */
  admit(anchorKey: string, request: AdmissionRequest): Promise<{ reply: AdmissionReply; now: number }> {
    return this.admitArg(anchorKey, wholeArg(request));
  }

  /** The same, for a caller that keeps its request's prefix: `arg` is `admissionArg(prefix, call)`. */
  admitArg(anchorKey: string, arg: string): Promise<{ reply: AdmissionReply; now: number }> {
    let queue = this.queues.get(anchorKey);
    if (!queue) {
      queue = { waiting: [], inFlight: 0, scheduled: false };
      this.queues.set(anchorKey, queue);
    }
    const q = queue;
    return new Promise((resolve, reject) => {
      q.waiting.push({ arg, resolve, reject });
      if (!q.scheduled && q.inFlight < (this.options.maxInFlight ?? 1)) {
        q.scheduled = true;
        setImmediate(() => {
          q.scheduled = false;
          this.send(anchorKey, q);
        });
      }
    });
  }

  /**
   * Sends what waits over the free script calls: with two free and 16 waiting, two calls of 8
   * (Redis decides the first while this process writes the second, and answers the first while
   * Redis decides the second); with one free, everything (up to maxBatch) in one.
   */
  private send(anchorKey: string, queue: AnchorQueue): void {
    const maxInFlight = this.options.maxInFlight ?? 1;
    while (queue.waiting.length > 0 && queue.inFlight < maxInFlight) {
      const share = Math.ceil(queue.waiting.length / (maxInFlight - queue.inFlight));
      this.sendOne(anchorKey, queue, Math.min(share, this.options.maxBatch ?? 256));
    }
  }

  private sendOne(anchorKey: string, queue: AnchorQueue, size: number): void {
    const batch = queue.waiting.splice(0, size);
    queue.inFlight++;
    const now = Date.now();
    admitEncoded(this.redis, anchorKey, batch.map((w) => w.arg), now).then(
      (replies) => {
        queue.inFlight--;
        this.send(anchorKey, queue);
        for (const [i, w] of batch.entries()) w.resolve({ reply: replies[i], now });
      },
      (err: unknown) => {
        queue.inFlight--;
        this.send(anchorKey, queue);
        for (const w of batch) w.reject(err);
      },
    );
  }
}

/**
 * Rolling totals as they stand at `now` (old buckets taken out first), with, given a limit, when
 * each is under it again as old spend leaves the window (undefined when nothing is counted).
 */
export async function windowTotals(
  redis: Redis,
  anchorKey: string,
  totals: { key: string; window: WindowSpec; limit?: bigint }[],
  now = Date.now(),
): Promise<{ total: bigint; freesAt?: number }[]> {
  if (totals.length === 0) return [];
  const args: ScriptArg[] = [now, totals.length];
  for (const t of totals) args.push(t.key, `${t.window.bucketMs}:${t.window.buckets}`, t.limit?.toString() ?? '');
  const replies = await withScripts(redis).windowTotals(anchorKey, ...args);
  return replies.map(([total, freesAt]) => ({ total: BigInt(total), ...(Number(freesAt) > 0 ? { freesAt: Number(freesAt) } : {}) }));
}
