import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { describeIssues } from '../domain/validation.js';
import type { Redis } from '../pipeline/redis.js';
import { validationFailed } from './errors.js';

/**
 * Reads a request body of at most `limit` bytes. A Content-Length over the limit is refused
 * before anything is read; a body without one (chunked) is counted as it streams and dropped
 * the moment it passes the limit. Returns undefined when the body is too large. `onReader` gets
 * the stream's reader as the read starts (to cancel it at a deadline: the read then ends as if
 * the body had).
 */
export async function readLimitedBody(
  request: Request,
  limit: number,
  onReader?: (reader: ReadableStreamDefaultReader<Uint8Array>) => void,
): Promise<Uint8Array | undefined> {
  const declared = request.headers.get('content-length');
  if (declared !== null && Number(declared) > limit) return undefined;
  const stream = request.body;
  if (!stream) return new Uint8Array(0);
  const reader = stream.getReader();
  onReader?.(reader);
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      return undefined;
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  return Buffer.concat(chunks, size);
}

/** A JSON answer written on Node's response in one call: what the routes served before Hono answer with. */
export function writeJson(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * JSON answers written together once the event loop has run the I/O callbacks of a pass (in a
 * setImmediate), not each the moment it is decided, as Redis writes its replies just before it
 * sleeps. A write to a caller waiting on its socket wakes that caller; answers written one by one,
 * as each request is read, wake it once per answer, and on a 2-vCPU VM each wake-up cost the
 * writing thread more than the write itself: authorize's server thread took 71-113 us a call
 * writing every answer at once, 57-65 us writing them in fours (BENCHMARKS.md, forty-fourth
 * session). An answer waits for at most three others decided in the same pass.
 * `startedAt` (performance.now() when the request came) adds `Server-Timing: app;dur=<ms>`,
 * counted up to the write: the wait for the pass included.
 */
export class BatchedAnswers {
  private queued: QueuedAnswer[] = [];

  /**
   * `onError`: a write that threw (its response is left to the caller: destroy it); the others are
   * written. `most`: answers held at once; the one that makes them `most` writes them all, so an
   * answer waits for at most `most - 1` others. Holding every answer of a pass took authorize's
   * server p99 (counted up to the write) to 2-3 ms at concurrency 16; 4 kept it at 0.3-0.7 ms and
   * most of the gain in calls/s.
   */
  constructor(
    private readonly onError: (err: unknown, res: ServerResponse) => void,
    private readonly most = 4,
  ) {}

  write(res: ServerResponse, status: number, body: string, headers: Record<string, string> | undefined, startedAt?: number): void {
    this.queued.push({ res, status, body, headers, startedAt });
    if (this.queued.length === 1) setImmediate(this.flush);
    else if (this.queued.length >= this.most) this.flush();
  }

  private readonly flush = (): void => {
    if (this.queued.length === 0) return;
    const answers = this.queued;
    this.queued = [];
    for (const { res, status, body, headers, startedAt } of answers) {
      try {
        writeJson(res, status, body, startedAt === undefined ? headers : { ...headers, 'server-timing': `app;dur=${(performance.now() - startedAt).toFixed(3)}` });
      } catch (err) {
        this.onError(err, res);
      }
    }
  };
}

interface QueuedAnswer {
  res: ServerResponse;
  status: number;
  body: string;
  headers: Record<string, string> | undefined;
  startedAt: number | undefined;
}

/**
 * True while the connection is lost (reconnecting or closed). Connections made by connectRedis
 * queue commands until Redis is back, up to their command timeout; an HTTP request should hear
 * 503 at once instead of holding its body in memory that long.
 */
export function redisDown(redis: Redis): boolean {
  return redis.status === 'reconnecting' || redis.status === 'close' || redis.status === 'end';
}

/**
 * readLimitedBody straight from Node's IncomingMessage when the app runs under
 * @hono/node-server (`c.env.incoming`): the hot routes skip building a WHATWG Request and its
 * stream. Falls back to the Request elsewhere (tests calling app.request, other runtimes).
 */
export function readLimitedNodeBody(env: unknown, request: Request, limit: number): Promise<Uint8Array | undefined> {
  const incoming = (env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (!incoming || typeof incoming.on !== 'function' || incoming.readableEnded) return readLimitedBody(request, limit);
  const declared = incoming.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    incoming.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.byteLength;
      if (size > limit) {
        done = true;
        incoming.resume();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    });
    incoming.once('end', () => {
      if (done) return;
      done = true;
      resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    });
    incoming.once('error', (err) => {
      if (done) return;
      done = true;
      reject(err);
    });
  });
}

/** A request in hand under RequestDeadlines. */
export interface TrackedRequest {
  readonly due: number;
  readonly expire: () => void;
}

/**
 * The deadlines of requests in hand, kept by one timer rather than one per request: a timer per
 * authorize call cost about 5% of the calls one process answers (BENCHMARKS.md, issue 14). A
 * request still in hand at its deadline is expired within a tenth of the deadline after it (at
 * least 10 ms); requests are tracked in the order they come, all with the same deadline, so a
 * sweep stops at the first one not due.
 */
export class RequestDeadlines {
  private readonly inHand = new Set<TrackedRequest>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly ms: number) {}

  /** Calls `expire` if the request is not settled within the deadline. */
  track(expire: () => void): TrackedRequest {
    const request = { due: performance.now() + this.ms, expire };
    this.inHand.add(request);
    if (!this.sweeper) {
      this.sweeper = setInterval(() => this.sweep(), Math.max(10, Math.floor(this.ms / 10)));
      this.sweeper.unref();
    }
    return request;
  }

  settle(request: TrackedRequest): void {
    this.inHand.delete(request);
  }

  get size(): number {
    return this.inHand.size;
  }

  private sweep(): void {
    const now = performance.now();
    for (const request of this.inHand) {
      if (request.due > now) break;
      this.inHand.delete(request);
      request.expire();
    }
    if (this.inHand.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}

/**
 * A request's query parameters through a strict schema, or 400 validation_failed naming each
 * problem by its parameter: an unknown parameter by its own name (zod reports it at the root).
 */
export function parseQuery<T extends z.ZodType>(schema: T, input: unknown): z.output<T> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const details = parsed.error.issues.flatMap((issue) =>
    issue.code === 'unrecognized_keys'
      ? issue.keys.map((key) => ({ path: key, message: 'unknown query parameter' }))
      : describeIssues(new z.ZodError([issue])),
  );
  throw validationFailed(`invalid query: ${details[0].path ? `${details[0].path}: ` : ''}${details[0].message}`, details);
}
