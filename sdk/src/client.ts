import { AuthorizeCache, DEFAULT_AUTHORIZE, parseError, type AuthorizeDecision, type AuthorizeOptions, type AuthorizeRequest } from './authorize.js';
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
   * once there is room (await it to slow the producer down). `drop-oldest`: the oldest buffered
   * event not yet in flight is dropped, counted in `stats().dropped` and passed to `onDrop`.
   */
  whenFull?: 'block' | 'drop-oldest';
  onDrop?: (event: WireEvent, droppedSoFar: number) => void;
  /** Requests in flight at once. Default 2. */
  maxConcurrentRequests?: number;
  /** Timeout of one ingest request (ms). Default 10,000. */
  requestTimeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  authorize?: Partial<AuthorizeOptions>;
  /** Flush on `beforeExit` and close on SIGINT/SIGTERM where there is a Node process. Default true. */
  flushOnExit?: boolean;
  /** Longest wait of close() for what is still buffered (ms). Default 10,000. */
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
  /** Events dropped by the drop-oldest policy. */
  dropped: number;
  /** Requests sent again after a network error or a retryable status. */
  retries: number;
  requests: number;
  /** Events held now (buffered and in flight). */
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
  rejected: { index: number; event_id?: string; errors: { field: string; message: string }[] }[];
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
  private readonly waiters: Waiter[] = [];
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
  private readonly giveUp = new AbortController();
  private readonly closeHooks = new Set<() => void | Promise<void>>();
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
        : flushOnExit({ flush: () => this.flush(), hasPending: () => this.held() > 0, close: () => this.close() });
  }

  /**
   * Buffers one event for sending; fills in `event_id` (time ordered) and `recorded_timestamp`
   * (now) when left out, and returns the event id. The promise resolves once the event is in the
   * buffer: at once, unless the buffer is full under the `block` policy. Delivery happens in the
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
      this.counters.dropped++;
      this.options.onDrop?.(victim.event, this.counters.dropped);
      if (victim !== pending) this.enqueue(pending);
      this.notifySettled();
      return Promise.resolve(wire.event_id);
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
    try {
      while (this.oldestUnsettled() < upTo) {
        const settled = new Promise<void>((resolve) => this.settledListeners.push(resolve));
        this.pump();
        await settled;
      }
    } finally {
      this.flushing--;
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
   * `closeTimeoutMs`, then gives up on what is left (reported as DeliveryError). Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const hooks = [...this.closeHooks];
      this.closeHooks.clear();
      for (const hook of hooks) await hook();
      this.closed = true;
      const deadline = setTimeout(() => this.giveUp.abort(), this.closeTimeoutMs);
      unrefTimer(deadline);
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

  /** Runs before close() flushes, e.g. to track the end of open sessions. Returns its removal. */
  onClose(hook: () => void | Promise<void>): () => void {
    this.closeHooks.add(hook);
    return () => void this.closeHooks.delete(hook);
  }

  stats(): MeterStats {
    return { ...this.counters, buffered: this.held() };
  }

  private toWire(event: MeterEvent): WireEvent {
    const time = event.recorded_timestamp;
    return {
      ...event,
      event_id: event.event_id ?? this.ids.next(),
      recorded_timestamp: time === undefined ? new Date().toISOString() : time instanceof Date ? time.toISOString() : time,
    } as WireEvent;
  }

  private held(): number {
    return this.queue.length + this.inFlightEvents;
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
    while (this.waiters.length && this.held() < this.maxBuffered) {
      const waiter = this.waiters.shift()!;
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
    if (this.waiters.length) oldest = Math.min(oldest, this.waiters[0].pending.seq);
    for (const batch of this.inFlight) oldest = Math.min(oldest, batch.items[0].seq);
    return oldest;
  }

  /** Sends one batch until it is answered for good; never throws. */
  private async deliver(events: WireEvent[]): Promise<void> {
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      let retryAfter: number | undefined;
      let lastProblem: string;
      let cause: unknown;
      try {
        this.counters.requests++;
        const response = await this.fetchImpl(this.endpoint, {
          method: 'POST',
          headers: this.headers,
          body: JSON.stringify({ events }),
          signal: withDeadline(AbortSignal.timeout(this.requestTimeoutMs), this.giveUp.signal),
        });
        if (response.status === 202) return this.settleAccepted(events, (await response.json()) as IngestReply);
        const text = await response.text().catch(() => '');
        const error = parseError(text);
        if (response.status === 413 && events.length > 1) {
          const half = Math.ceil(events.length / 2);
          await this.deliver(events.slice(0, half));
          return this.deliver(events.slice(half));
        }
        if (response.status === 400) {
          const problems: EventProblem[] = (error?.details ?? []).map((d) => ({ index: -1, path: d.path, message: d.message }));
          return this.fail(events, new BadRequestError(error?.code ?? 'bad_request', error?.message ?? text, problems, events));
        }
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
        lastProblem = `request failed: ${(err as Error).message}`;
      }
      const delay = retryDelayMs(this.retry, attempt, retryAfter);
      if (this.giveUp.signal.aborted || Date.now() - started + delay > this.retry.maxElapsedMs) {
        const why = this.giveUp.signal.aborted ? 'still unsent when close() timed out' : `gave up after ${attempt + 1} attempts`;
        return this.fail(events, new DeliveryError(`${events.length} event(s) ${why}; last: ${lastProblem}`, events, cause));
      }
      this.counters.retries++;
      await sleep(delay, this.giveUp.signal);
    }
  }

  private settleAccepted(events: WireEvent[], reply: IngestReply): void {
    this.counters.accepted += reply.accepted;
    this.counters.duplicates += reply.duplicates.length;
    if (reply.rejected.length) {
      this.counters.rejected += reply.rejected.length;
      const problems: EventProblem[] = reply.rejected.flatMap((r) =>
        r.errors.map((e) => ({ index: r.index, ...(r.event_id !== undefined ? { eventId: r.event_id } : {}), path: e.field, message: e.message })),
      );
      this.report(new InvalidEventsError(problems, reply.rejected.map((r) => events[r.index])));
    }
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

/** The request's own timeout, and close()'s deadline where the runtime can combine signals. */
function withDeadline(timeout: AbortSignal, deadline: AbortSignal): AbortSignal {
  return typeof AbortSignal.any === 'function' ? AbortSignal.any([timeout, deadline]) : timeout;
}

/** setImmediate where there is one (Node, Bun), else a zero timeout (edge runtimes, browsers). */
const immediate = (globalThis as { setImmediate?: (run: () => void) => unknown }).setImmediate;
const nextTurn: (run: () => void) => void = typeof immediate === 'function' ? (run) => void immediate(run) : (run) => void setTimeout(run, 0);
