import type { IncomingMessage, ServerResponse } from 'node:http';
import { unavailable } from '../errors.js';
import { readLimitedBody, RequestDeadlines, type TrackedRequest } from '../http.js';

/**
 * The bodies of the requests of a route, each read before its request's deadline
 * (HTTP_REQUEST_TIMEOUT_MS, the deadline of the timeout middleware of api/server.ts).
 *
 * That middleware answers 503 at the deadline but cannot stop the handler: a handler still
 * reading a body that trickles in kept its request (and an ingest in-flight slot) for as long as
 * the client kept sending, up to Node's requestTimeout (300 s by default): a few slow senders held
 * every INGEST_MAX_IN_FLIGHT slot and every tenant heard 429 busy. At the deadline the read is
 * cancelled (the handler answers 503 timeout and lets go of its slot) and Node's request is
 * destroyed once its answer is written (the connection is closed, the client sends no more).
 *
 * One timer for all the requests (RequestDeadlines), not one each: the cost per request is an
 * object and a Set entry. A request is expired within a tenth of the deadline after it.
 */
export class TimedBodies {
  private readonly deadlines: RequestDeadlines;

  constructor(private readonly ms: number) {
    this.deadlines = new RequestDeadlines(ms);
  }

  /** Starts the deadline of a request, as it comes: `env` is Hono's (`c.env`: Node's request and response under @hono/node-server). */
  start(env: unknown): TimedBody {
    const body = new TimedBody(env, this.ms);
    body.tracked = this.deadlines.track(() => body.expire());
    return body;
  }

  /** The request ended (or its body was read): its deadline no longer matters. */
  end(body: TimedBody): void {
    if (body.tracked) this.deadlines.settle(body.tracked);
  }
}

/** One request's body, read before the request's deadline. */
export class TimedBody {
  tracked: TrackedRequest | undefined;
  private reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  private expired = false;
  private finished = false;

  constructor(
    private readonly env: unknown,
    private readonly ms: number,
  ) {}

  /** readLimitedBody (api/http.ts) before the request's deadline: 503 `timeout` when the deadline passes first. */
  async readLimited(request: Request, limit: number): Promise<Uint8Array | undefined> {
    if (this.expired) throw this.late();
    try {
      const bytes = await readLimitedBody(request, limit, (reader) => {
        this.reader = reader;
      });
      // A cancelled read ends as if the body did: the deadline tells them apart.
      if (this.expired) throw this.late();
      return bytes;
    } finally {
      this.reader = undefined;
      this.finished = true;
    }
  }

  /** The deadline passed: a read under way stops, and Node's request is closed once answered. */
  expire(): void {
    if (this.finished) return;
    this.expired = true;
    void this.reader?.cancel().catch(() => {});
    const { incoming, outgoing } = (this.env ?? {}) as { incoming?: IncomingMessage; outgoing?: ServerResponse };
    if (!incoming || typeof incoming.destroy !== 'function' || incoming.destroyed || incoming.readableEnded) return;
    // Not before the answer (503 timeout) is written: destroying the request closes the socket.
    const close = () => incoming.destroy();
    if (!outgoing || outgoing.writableFinished || outgoing.destroyed) close();
    else {
      outgoing.once('finish', close);
      outgoing.once('close', close);
    }
  }

  private late() {
    return unavailable('timeout', `the request body did not arrive within ${this.ms} ms; nothing was accepted, retry later`, 2);
  }
}
