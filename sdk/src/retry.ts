/** Retry timing: exponential backoff with full jitter, or the server's Retry-After when it gives one. */
export interface RetryPolicy {
  /** Upper bound of the first wait (ms); doubles each attempt. Default 200. */
  initialDelayMs: number;
  /** Upper bound of any backoff wait (ms). Default 30,000. */
  maxDelayMs: number;
  /** Give a batch up after this long of failed attempts (ms). Default 10 minutes. */
  maxElapsedMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { initialDelayMs: 200, maxDelayMs: 30_000, maxElapsedMs: 600_000 };

/** Statuses worth another try of the same request: the server is busy, restarting or behind. */
export const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([408, 429, 500, 502, 503, 504]);

/** The longest Retry-After taken as given (a misconfigured proxy could say an hour). */
const MAX_RETRY_AFTER_MS = 300_000;

/**
 * How long to wait before attempt `attempt + 1` (attempt counts from 0): the server's Retry-After
 * plus up to 10% (so clients told the same thing do not return together), else a uniformly random
 * wait up to min(maxDelay, initial x 2^attempt).
 */
export function retryDelayMs(policy: RetryPolicy, attempt: number, retryAfterMs: number | undefined, random = Math.random): number {
  if (retryAfterMs !== undefined) return retryAfterMs + random() * Math.min(1_000, retryAfterMs * 0.1);
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.min(attempt, 30));
  return random() * ceiling;
}

/**
 * How long the server asked to wait, in ms: its Retry-After-Ms when it gives one (agentmeter's
 * 429s do: Retry-After counts whole seconds, longer than its queues take to drain), else
 * Retry-After; undefined when neither is there or readable.
 */
export function retryAfterOf(headers: { get(name: string): string | null }, now = Date.now()): number | undefined {
  const ms = headers.get('retry-after-ms')?.trim();
  if (ms && /^\d+(\.\d+)?$/.test(ms)) return Math.min(Number(ms), MAX_RETRY_AFTER_MS);
  return parseRetryAfter(headers.get('retry-after'), now);
}

/** Retry-After as delta seconds or an HTTP date, in ms from `now`; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.min(Number(text) * 1_000, MAX_RETRY_AFTER_MS);
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.min(Math.max(0, at - now), MAX_RETRY_AFTER_MS);
}

/**
 * Resolves after `ms`, or at once when the signal aborts. The timer does not keep a Node process
 * alive by itself: a background retry must not hold a process that is done. While a flush or
 * close() is in progress the client holds the process (AgentMeter.holdProcess), so a backoff met
 * then is waited for, up to close()'s deadline.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    unrefTimer(timer);
    signal?.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
  });
}

/** Node timers have unref(); edge runtimes return a number. */
export function unrefTimer(timer: unknown): void {
  (timer as { unref?: () => void } | undefined)?.unref?.();
}
