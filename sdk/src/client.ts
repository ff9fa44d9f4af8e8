import { AuthorizeCache, DEFAULT_AUTHORIZE, parseError, pathProblems, rejectedItems, type AuthorizeDecision, type AuthorizeOptions, type AuthorizeRequest, type ErrorBody, type RejectedItem } from './authorize.js';
import { AgentMeterError, ApiResponseError, BadRequestError, DeliveryError, InvalidEventsError, UnauthorizedError, type EventProblem } from './errors.js';
import type { MeterEvent, WireEvent } from './events.js';
import { flushOnExit } from './exit.js';
import { EventIdGenerator } from './ids.js';
import { DEFAULT_RETRY, retryAfterOf, RETRYABLE_STATUSES, retryDelayMs, sleep, unrefTimer, type RetryPolicy } from './retry.js';

export interface AgentMeterOptions {
  /** Where agentmeter's HTTP API is, e.g. `https://meter.example.com`. */
  baseUrl: string;
  /** The tenant's ingest token (`amt_...`). */
  ingestToken: string;
  /** Events per request. Default 100 (the API takes up to 1,000). */
  batchSize?: number;
  /** A batch leaves at the latest this long after its first event was tracked (ms). Default 5,000. */
  flushIntervalMs?: number;
  /** Events held in memory at most, buffered or in flight. Default 10,000. */
  maxBufferedEvents?: number;
  /**
   * What track() does when the buffer is full. `block` (the default): its promise resolves only
   * once there is room (await it to slow the producer down); at most `maxBufferedEvents` events
   * wait so, and past them the new event is dropped: counted in `stats().dropped`, passed to
   * `onDrop`, and its track() promise rejects with an AgentMeterError `buffer_full` (so a caller
   * that does not await track() must catch it). `drop-oldest`: the oldest buffered event not yet
   * in flight is dropped, counted in `stats().dropped` and passed to `onDrop`.
   */
  whenFull?: 'block' | 'drop-oldest';
  /** Called with every dropped event (either policy); its api_key is the caller's: do not log the event as is. */
  onDrop?: (event: WireEvent, droppedSoFar: number) => void;
  /** Requests in flight at once. Default 2. */
  maxConcurrentRequests?: number;
  /** Timeout of one ingest request (ms). Default 10,000. */
  requestTimeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  authorize?: Partial<AuthorizeOptions>;
  /**
   * Flush on `beforeExit` (for at most `closeTimeoutMs`) and close on SIGINT/SIGTERM where there
   * is a Node process. Default true.
   */
  flushOnExit?: boolean;
  /**
   * Longest wait of close() (and of the flush at `beforeExit`) for what is still buffered, retries
   * included (ms); what is unsent then is given up as a DeliveryError. Default 10,000.
   */
  closeTimeoutMs?: number;
  /** Every error met while sending in the background: InvalidEventsError, BadRequestError, UnauthorizedError, DeliveryError... */
  onError?: (error: AgentMeterError) => void;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
}

export interface MeterStats {
  /** Events track() took. */
  tracked: number;
  /** Events the API answered 202 for (an event sent again after a lost answer counts again; the ledger bills it once). */
  accepted: number;
  /** Events the API reported as repeated within one request. */
  duplicates: number;
  /** Events the API rejected as invalid (never retried). */
  rejected: number;
  /** Events given up on: 400/401 for the whole request, retry budget spent, or still unsent at close. */
  failed: number;
  /** Events dropped: the oldest ones under drop-oldest; under block, new ones while maxBufferedEvents already wait for room. */
  dropped: number;
  /** Requests sent again after a network error or a retryable status. */
  retries: number;
  requests: number;
  /** Events held now: buffered, in flight, and waiting for room (block). */
  buffered: number;
}

export type FlushResult = Omit<MeterStats, 'buffered'>;

interface Pending {
  event: WireEvent;
  seq: number;
}

interface Waiter {
  pending: Pending;
  resolve: () => void;
}

interface Batch {
  items: Pending[];
  done: Promise<void>;
}

interface IngestReply {
  accepted: number;
  duplicates: { index: number; event_id: string }[];
  rejected: RejectedItem[];
}

/**
 * The agentmeter client: `track()` events (batched, retried, idempotent by client-made ids),
 * `authorize()` a credential before a call (cached briefly, fail-open or fail-closed),
 * `flush()` and `close()`. Uses only `fetch`, timers and Web Crypto: Node 20+, Deno, Bun and
 * edge runtimes.
 */
export class AgentMeter {
  private readonly endpoint: string;
  private readonly headers: Record<string, string>;
  private readonly fetchImpl: typeof fetch;
  private readonly batchSize: number;
  private readonly flushIntervalMs: number;
  private readonly maxBuffered: number;
  private readonly whenFull: 'block' | 'drop-oldest';
  private readonly maxConcurrent: number;
  private readonly requestTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly ids = new EventIdGenerator();
  private readonly authorizer: AuthorizeCache;
  private readonly counters: Omit<MeterStats, 'buffered'> = { tracked: 0, accepted: 0, duplicates: 0, rejected: 0, failed: 0, dropped: 0, retries: 0, requests: 0 };

  private readonly queue: Pending[] = [];
  /** track() calls waiting for room (block), oldest first from `waitersHead`: a queue without shift(). */
  private waiters: (Waiter | undefined)[] = [];
  private waitersHead = 0;
  private readonly inFlight = new Set<Batch>();
  private inFlightEvents = 0;
  private seq = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private partialBatchesDue = false;
  private pumpScheduled = false;
  private flushing = 0;
  private settledListeners: (() => void)[] = [];
  private closed = false;
  private closing: Promise<void> | undefined;
  /** Aborted (and replaced) at a deadline: close()'s, or the exit flush's. Each delivery keeps the signal it started with. */
  private giveUp = new AbortController();
  /** Flushes in progress, and the timer that keeps a Node process alive meanwhile. */
  private holders = 0;
  private holdTimer: ReturnType<typeof setInterval> | undefined;
  private readonly closeHooks = new Set<() => void | Promise<void>>();
  /** Why each aborted signal was aborted (the DeliveryError of what it cut says so). */
  private readonly abandoned = new WeakMap<AbortSignal, string>();
  private readonly unregisterExit: () => void;

  constructor(private readonly options: AgentMeterOptions) {
    if (!options.baseUrl) throw new AgentMeterError('invalid_options', 'baseUrl is required');
    if (!options.ingestToken) throw new AgentMeterError('invalid_options', 'ingestToken is required');
    const base = options.baseUrl.replace(/\/+$/, '');
    this.endpoint = `${base}/v1/events`;
    this.headers = { authorization: `Bearer ${options.ingestToken}`, 'content-type': 'application/json' };
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
    this.batchSize = positive('batchSize', options.batchSize ?? 100);
    this.flushIntervalMs = positive('flushIntervalMs', options.flushIntervalMs ?? 5_000);
    this.maxBuffered = positive('maxBufferedEvents', options.maxBufferedEvents ?? 10_000);
    this.whenFull = options.whenFull ?? 'block';
    this.maxConcurrent = positive('maxConcurrentRequests', options.maxConcurrentRequests ?? 2);
    this.requestTimeoutMs = positive('requestTimeoutMs', options.requestTimeoutMs ?? 10_000);
    this.closeTimeoutMs = positive('closeTimeoutMs', options.closeTimeoutMs ?? 10_000);
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    const authorizeOptions = { ...DEFAULT_AUTHORIZE, ...options.authorize };
    this.authorizer = new AuthorizeCache(
      (body, signal) => this.fetchImpl(`${base}/v1/authorize`, { method: 'POST', headers: this.headers, body: JSON.stringify(body), signal }),
      authorizeOptions,
    );
    this.unregisterExit =
      options.flushOnExit === false
        ? () => {}
        : flushOnExit({ flush: () => this.flushBeforeExit(), hasPending: () => this.held() + this.waiting() > 0, close: () => this.close() });
  }

  /**
   * Buffers one event for sending; fills in `event_id` (time ordered) and `recorded_timestamp`
   * (now) when left out, and returns the event id. The promise resolves once the event is in the
   * buffer: at once, unless the buffer is full under the `block` policy; it rejects (`buffer_full`)
   * when `maxBufferedEvents` more already wait there (see `whenFull`). Delivery happens in the
   * background; problems go to `onError` and the counters of `stats()`.
   */
  track(event: MeterEvent): Promise<string> {
    if (this.closed) return Promise.reject(new AgentMeterError('closed', 'track() after close()'));
    const wire = this.toWire(event);
    this.counters.tracked++;
    const pending: Pending = { event: wire, seq: this.seq++ };
    if (this.held() < this.maxBuffered) {
      this.enqueue(pending);
      return Promise.resolve(wire.event_id);
    }
    // Full: a batch waiting for its turn of the event loop leaves now, before an event is dropped or waits.
    if (this.pumpScheduled) this.pump();
    if (this.whenFull === 'drop-oldest') {
      const victim = this.queue.shift() ?? pending;
      this.drop(victim.event);
      if (victim !== pending) this.enqueue(pending);
      this.notifySettled();
      return Promise.resolve(wire.event_id);
    }
    // Callers that do not await track() (a proxy, a server's handlers) would park a waiter per
    // call for as long as the API is down: as many as the buffer, then the new event is dropped.
    if (this.waiting() >= this.maxBuffered) {
      this.drop(wire);
      return Promise.reject(new AgentMeterError('buffer_full', `the buffer is full and ${this.waiting()} track() calls already wait for room: event ${wire.event_id} dropped`));
    }
    return new Promise((resolve) => this.waiters.push({ pending, resolve: () => resolve(wire.event_id) }));
  }

  /** Asks `POST /v1/authorize` whether this credential (and session) may act now; see AuthorizeOptions. */
  authorize(request: AuthorizeRequest): Promise<AuthorizeDecision> {
    return this.authorizer.authorize(request);
  }

  /** Forgets cached authorize answers. */
  clearAuthorizeCache(): void {
    this.authorizer.clear();
  }

  /**
   * Sends everything tracked before this call and waits until each of those events is settled
   * (accepted, rejected or given up). Returns what happened to the events settled meanwhile.
   */
  async flush(): Promise<FlushResult> {
    const before = { ...this.counters };
    const upTo = this.seq;
    this.flushing++;
    // The SDK's timers (the batch timer, a retry's backoff) do not keep a Node process alive; a
    // flush in progress does, or a process flushing at exit would end in the middle of a backoff.
    this.holdProcess();
    try {
      while (this.oldestUnsettled() < upTo) {
        const settled = new Promise<void>((resolve) => this.settledListeners.push(resolve));
        this.pump();
        await settled;
      }
    } finally {
      this.flushing--;
      this.releaseProcess();
    }
    const after = this.counters;
    return {
      tracked: after.tracked - before.tracked,
      accepted: after.accepted - before.accepted,
      duplicates: after.duplicates - before.duplicates,
      rejected: after.rejected - before.rejected,
      failed: after.failed - before.failed,
      dropped: after.dropped - before.dropped,
      retries: after.retries - before.retries,
      requests: after.requests - before.requests,
    };
  }

  /**
   * Runs the close hooks (the MCP wrapper ends its open sessions there), flushes for at most
   * `closeTimeoutMs` (retries included; a Node process stays alive meanwhile), then gives up on
   * what is left (reported as DeliveryError). Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const hooks = [...this.closeHooks];
      this.closeHooks.clear();
      for (const hook of hooks) await hook();
      this.closed = true;
      const deadline = setTimeout(() => this.abandon('still unsent when close() timed out'), this.closeTimeoutMs);
      try {
        await this.flush();
      } finally {
        clearTimeout(deadline);
        if (this.timer) clearTimeout(this.timer);
        this.unregisterExit();
      }
    })();
    return this.closing;
  }

  /**
   * The flush at `beforeExit`: as flush(), for at most `closeTimeoutMs`; what is unsent then is
   * given up (DeliveryError) so the process can end. The client stays usable.
   */
  private async flushBeforeExit(): Promise<void> {
    const deadline = setTimeout(() => this.abandon('still unsent when the process was exiting (closeTimeoutMs)'), this.closeTimeoutMs);
    try {
      await this.flush();
    } finally {
      clearTimeout(deadline);
    }
  }

  /** Runs before close() flushes, e.g. to track the end of open sessions. Returns its removal. */
  onClose(hook: () => void | Promise<void>): () => void {
    this.closeHooks.add(hook);
    return () => void this.closeHooks.delete(hook);
  }

  stats(): MeterStats {
    return { ...this.counters, buffered: this.held() + this.waiting() };
  }

  private toWire(event: MeterEvent): WireEvent {
    const time = event.recorded_timestamp;
    return {
      ...event,
      event_id: event.event_id ?? this.ids.next(),
      recorded_timestamp: time === undefined ? new Date().toISOString() : time instanceof Date ? time.toISOString() : time,
    } as WireEvent;
  }

  /** Events buffered and in flight (what maxBufferedEvents bounds; waiting track() calls come on top). */
  private held(): number {
    return this.queue.length + this.inFlightEvents;
  }

  private waiting(): number {
    return this.waiters.length - this.waitersHead;
  }

  private takeWaiter(): Waiter {
    const waiter = this.waiters[this.waitersHead]!;
    this.waiters[this.waitersHead++] = undefined;
    if (this.waitersHead === this.waiters.length) {
      this.waiters = [];
      this.waitersHead = 0;
    } else if (this.waitersHead >= 1_024 && this.waitersHead * 2 >= this.waiters.length) {
      this.waiters = this.waiters.slice(this.waitersHead);
      this.waitersHead = 0;
    }
    return waiter;
  }

  private drop(event: WireEvent): void {
    this.counters.dropped++;
    try {
      this.options.onDrop?.(event, this.counters.dropped);
    } catch {
      // A throwing callback must not break track().
    }
  }

  /** Keeps a Node process alive while a flush is in progress (a referenced timer that does nothing). */
  private holdProcess(): void {
    if (this.holders++ === 0) this.holdTimer = setInterval(() => {}, 1_000_000_000);
  }

  private releaseProcess(): void {
    if (--this.holders === 0 && this.holdTimer !== undefined) {
      clearInterval(this.holdTimer);
      this.holdTimer = undefined;
    }
  }

  /**
   * A deadline passed (close()'s, or the exit flush's): the requests in flight are cut and their
   * events given up as they end; what is buffered or waiting is given up now. Deliveries started
   * from here on use a fresh signal.
   */
  private abandon(why: string): void {
    const giveUp = this.giveUp;
    this.giveUp = new AbortController();
    this.abandoned.set(giveUp.signal, why);
    giveUp.abort();
    const left = this.queue.splice(0);
    while (this.waiting()) {
      const waiter = this.takeWaiter();
      left.push(waiter.pending);
      waiter.resolve();
    }
    if (left.length) {
      const events = left.map((p) => p.event);
      this.fail(events, new DeliveryError(`${events.length} event(s) ${why}`, events));
    }
    this.notifySettled();
  }

  private enqueue(pending: Pending): void {
    this.queue.push(pending);
    if (this.queue.length >= this.batchSize) this.schedulePump();
    else this.armTimer();
  }

  /**
   * A full batch is cut, serialized and handed to fetch on the next turn of the event loop, not
   * inside the track() that filled it: a caller tracking on its request path (the MCP proxy, a
   * server's handler) does not pay for a whole batch in one of its requests. flush() and close()
   * pump at once.
   */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    nextTurn(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** A partial batch leaves flushIntervalMs after it started waiting. */
  private armTimer(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.partialBatchesDue = true;
      this.pump();
    }, this.flushIntervalMs);
    unrefTimer(this.timer);
  }

  /** Starts requests while there is a full batch (or any events, when a flush or the timer asks) and a free slot. */
  private pump(): void {
    while (this.inFlight.size < this.maxConcurrent && this.queue.length > 0) {
      const partialOk = this.flushing > 0 || this.partialBatchesDue || this.closed;
      if (this.queue.length < this.batchSize && !partialOk) break;
      const items = this.queue.splice(0, this.batchSize);
      this.inFlightEvents += items.length;
      const batch: Batch = { items, done: Promise.resolve() };
      this.inFlight.add(batch);
      batch.done = this.deliver(items.map((p) => p.event)).finally(() => {
        this.inFlight.delete(batch);
        this.inFlightEvents -= items.length;
        this.admitWaiters();
        this.notifySettled();
        this.pump();
      });
    }
    if (this.queue.length === 0) {
      this.partialBatchesDue = false;
      if (this.timer) {
        clearTimeout(this.timer);
        this.timer = undefined;
      }
    } else if (this.inFlight.size < this.maxConcurrent) this.armTimer();
  }

  private admitWaiters(): void {
    while (this.waiting() && this.held() < this.maxBuffered) {
      const waiter = this.takeWaiter();
      this.enqueue(waiter.pending);
      waiter.resolve();
    }
  }

  private notifySettled(): void {
    for (const listener of this.settledListeners.splice(0)) listener();
  }

  private oldestUnsettled(): number {
    let oldest = Number.POSITIVE_INFINITY;
    if (this.queue.length) oldest = this.queue[0].seq;
    if (this.waiting()) oldest = Math.min(oldest, this.waiters[this.waitersHead]!.pending.seq);
    for (const batch of this.inFlight) oldest = Math.min(oldest, batch.items[0].seq);
    return oldest;
  }

  /** Sends one batch until it is answered for good, or `giveUp` aborts (a deadline); never throws. */
  private async deliver(events: WireEvent[], giveUp = this.giveUp.signal): Promise<void> {
    const started = Date.now();
    let lastProblem = '';
    for (let attempt = 0; ; attempt++) {
      let retryAfter: number | undefined;
      let cause: unknown;
      const request = requestSignal(this.requestTimeoutMs, giveUp);
      try {
        this.counters.requests++;
        const response = await this.fetchImpl(this.endpoint, {
          method: 'POST',
          headers: this.headers,
          body: JSON.stringify({ events }),
          signal: request.signal,
        });
        if (response.status === 202) return this.settleAccepted(events, (await response.json()) as IngestReply);
        const text = await response.text().catch(() => '');
        const error = parseError(text);
        if (response.status === 413 && events.length > 1) {
          const half = Math.ceil(events.length / 2);
          await this.deliver(events.slice(0, half), giveUp);
          return this.deliver(events.slice(half), giveUp);
        }
        if (response.status === 400) return this.settleRefused(events, error, text);
        if (response.status === 401) return this.fail(events, new UnauthorizedError(error?.message ?? 'the ingest token was refused', events));
        if (!RETRYABLE_STATUSES.has(response.status)) {
          return this.fail(events, new ApiResponseError(response.status, error?.code ?? 'unexpected_status', `ingest answered ${response.status}: ${error?.message ?? text}`, events));
        }
        retryAfter = retryAfterOf(response.headers);
        lastProblem = `ingest answered ${response.status}${error ? ` ${error.code}` : ''}`;
      } catch (err) {
        // Network error, reset connection, or our timeout: the API may or may not have taken the
        // batch. Sending the same ids again is safe: the ledger bills an event id once.
        cause = err;
        lastProblem = giveUp.aborted ? (lastProblem ? `${lastProblem} (the retry in flight was cut)` : 'the request in flight was cut') : `request failed: ${(err as Error).message}`;
      } finally {
        request.release();
      }
      const delay = retryDelayMs(this.retry, attempt, retryAfter);
      if (giveUp.aborted || Date.now() - started + delay > this.retry.maxElapsedMs) {
        const why = giveUp.aborted ? this.abandonedWhy(giveUp) : `gave up after ${attempt + 1} attempts`;
        return this.fail(events, new DeliveryError(`${events.length} event(s) ${why}; last: ${lastProblem}`, events, cause));
      }
      await sleep(delay, giveUp);
      if (giveUp.aborted) return this.fail(events, new DeliveryError(`${events.length} event(s) ${this.abandonedWhy(giveUp)}; last: ${lastProblem}`, events, cause));
      this.counters.retries++;
    }
  }

  private abandonedWhy(signal: AbortSignal): string {
    return this.abandoned.get(signal) ?? 'given up at a deadline';
  }

  private settleAccepted(events: WireEvent[], reply: IngestReply): void {
    this.counters.accepted += reply.accepted;
    this.counters.duplicates += reply.duplicates.length;
    if (reply.rejected.length) this.reject(events, reply.rejected);
  }

  /** Events the API rejected as invalid: counted rejected (never retried), reported as one InvalidEventsError. */
  private reject(events: WireEvent[], rejected: RejectedItem[]): void {
    this.counters.rejected += rejected.length;
    const problems: EventProblem[] = rejected.flatMap((r) =>
      r.errors.map((e) => ({ index: r.index, ...(r.event_id !== undefined ? { eventId: r.event_id } : {}), path: e.field, message: e.message })),
    );
    this.report(new InvalidEventsError(problems, rejected.map((r) => events[r.index])));
  }

  /**
   * A 400 for the whole request. When no event of it is valid the API answers 400
   * `validation_failed` naming each event (`{ index, event_id, errors: [{ field, message }] }`, as
   * the `rejected` of a 202): those are rejected, as in a 202. Otherwise (`invalid_body`, problems
   * by path) the events fail with a BadRequestError.
   */
  private settleRefused(events: WireEvent[], error: ErrorBody | undefined, text: string): void {
    const code = error?.code ?? 'bad_request';
    const message = error?.message ?? text;
    const named = new Map<number, RejectedItem>();
    for (const r of rejectedItems(error?.details)) if (r.index >= 0 && r.index < events.length && !named.has(r.index)) named.set(r.index, r);
    if (named.size === 0) {
      this.fail(events, new BadRequestError(code, message, pathProblems(error?.details), events));
      return;
    }
    this.reject(events, [...named.values()]);
    // Not named (never seen from the API): given up with the 400.
    const rest = events.filter((_, i) => !named.has(i));
    if (rest.length) this.fail(rest, new BadRequestError(code, message, [], rest));
  }

  private fail(events: WireEvent[], error: AgentMeterError): void {
    this.counters.failed += events.length;
    this.report(error);
  }

  private report(error: AgentMeterError): void {
    try {
      this.options.onError?.(error);
    } catch {
      // A throwing callback must not stop delivery.
    }
  }
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) throw new AgentMeterError('invalid_options', `${name} must be a positive number, got ${value}`);
  return value;
}

/**
 * A request's signal: aborted at its own timeout, or when `deadline` (close()'s, long-lived) is.
 * `release` unhooks it from the deadline once the request is over. AbortSignal.any would do the
 * same, but on Node 20 every signal it makes stays referenced by its long-lived source: ~50 bytes
 * a request for as long as the client lives.
 */
function requestSignal(timeoutMs: number, deadline: AbortSignal): { signal: AbortSignal; release: () => void } {
  const controller = new AbortController();
  const onDeadline = () => controller.abort(deadline.reason);
  if (deadline.aborted) onDeadline();
  else deadline.addEventListener('abort', onDeadline, { once: true });
  const timer = setTimeout(() => controller.abort(new DOMException(`no answer within ${timeoutMs} ms`, 'TimeoutError')), timeoutMs);
  unrefTimer(timer);
  return {
    signal: controller.signal,
    release: () => {
      clearTimeout(timer);
      deadline.removeEventListener('abort', onDeadline);
    },
  };
}

/** setImmediate where there is one (Node, Bun), else a zero timeout (edge runtimes, browsers). */
const immediate = (globalThis as { setImmediate?: (run: () => void) => unknown }).setImmediate;
const nextTurn: (run: () => void) => void = typeof immediate === 'function' ? (run) => void immediate(run) : (run) => void setTimeout(run, 0);
