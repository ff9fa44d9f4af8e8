// The load generator's HTTP/1.1 client: keep-alive connections with one request in flight on
// each, each request written whole (one text, see requestText, or its bytes), answers parsed
// for what the generator reads (status, a few headers, the body by content-length or chunked).
// node:http's client cost the generator about 300 us of CPU per request: under a 3x overload it
// answered ~1,400 429s a second and took 42% of a core from the pipeline it measured, with
// event-loop stalls (p99 107 ms) counted into the answers' latencies.
import { connect, type Socket } from 'node:net';

export interface HttpAnswer {
  status: number;
  /** Header names in lower case. */
  headers: Map<string, string>;
  body: Buffer;
}

const HEAD_END = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');

interface Waiting {
  resolve: (answer: HttpAnswer) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** An answer being read: its head once complete, and where its body stands. */
interface Reading {
  status: number;
  headers: Map<string, string>;
  /** Bytes of body still expected (content-length), or -1 when chunked. */
  remaining: number;
  chunks: Buffer[];
  close: boolean;
}

class Connection {
  /** When it was last freed (performance.now(), which no clock step moves): a connection idle too long is not reused (HttpPool.idleMs). */
  freedAt = 0;
  private buffered: Buffer = Buffer.alloc(0);
  private waiting?: Waiting;
  private reading?: Reading;
  private closed = false;

  constructor(
    private readonly socket: Socket,
    private readonly onFree: (conn: Connection) => void,
    private readonly onClosed: (conn: Connection) => void,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.received(chunk));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed')));
  }

  send(request: string | Buffer, timeoutMs: number): Promise<HttpAnswer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error('request timed out')), timeoutMs);
      this.waiting = { resolve, reject, timer };
      this.socket.write(request);
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  private fail(err: Error): void {
    if (!this.closed) {
      this.closed = true;
      this.socket.destroy();
      this.onClosed(this);
    }
    const waiting = this.waiting;
    this.waiting = undefined;
    if (waiting) {
      clearTimeout(waiting.timer);
      waiting.reject(err);
    }
  }

  private received(chunk: Buffer): void {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    try {
      while (this.step());
    } catch (err) {
      this.fail(err as Error);
    }
  }

  /** Reads what it can of the answer; true when it made progress and may make more. */
  private step(): boolean {
    if (!this.reading) {
      const end = this.buffered.indexOf(HEAD_END);
      if (end < 0) return false;
      this.reading = parseHead(this.buffered.toString('latin1', 0, end));
      this.buffered = this.buffered.subarray(end + HEAD_END.length);
    }
    const reading = this.reading;
    if (reading.remaining >= 0) {
      const take = Math.min(reading.remaining, this.buffered.length);
      if (take > 0) reading.chunks.push(this.buffered.subarray(0, take));
      this.buffered = this.buffered.subarray(take);
      reading.remaining -= take;
      if (reading.remaining > 0) return false;
      this.answered(reading);
      return this.buffered.length > 0;
    }
    // Chunked: a size line, that many bytes and CRLF; a size of 0 ends it (trailers, then CRLF).
    const lineEnd = this.buffered.indexOf(CRLF);
    if (lineEnd < 0) return false;
    const size = parseInt(this.buffered.toString('latin1', 0, lineEnd), 16);
    if (Number.isNaN(size)) throw new Error('malformed chunk size');
    if (size === 0) {
      const end = this.buffered.indexOf(HEAD_END, lineEnd); // no trailers: "0\r\n\r\n"
      if (end < 0) return false;
      this.buffered = this.buffered.subarray(end + HEAD_END.length);
      this.answered(reading);
      return this.buffered.length > 0;
    }
    if (this.buffered.length < lineEnd + 2 + size + 2) return false;
    reading.chunks.push(this.buffered.subarray(lineEnd + 2, lineEnd + 2 + size));
    this.buffered = this.buffered.subarray(lineEnd + 2 + size + 2);
    return true;
  }

  private answered(reading: Reading): void {
    this.reading = undefined;
    const waiting = this.waiting;
    this.waiting = undefined;
    if (!waiting) throw new Error('an answer nobody asked for');
    clearTimeout(waiting.timer);
    const body = reading.chunks.length === 1 ? reading.chunks[0] : Buffer.concat(reading.chunks);
    if (reading.close) this.fail(new Error('connection closed by the server'));
    else this.onFree(this);
    waiting.resolve({ status: reading.status, headers: reading.headers, body });
  }
}

function parseHead(text: string): Reading {
  const lines = text.split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
  if (!status) throw new Error(`malformed status line: ${lines[0].slice(0, 80)}`);
  const headers = new Map<string, string>();
  for (let i = 1; i < lines.length; i++) {
    const colon = lines[i].indexOf(':');
    if (colon > 0) headers.set(lines[i].slice(0, colon).trim().toLowerCase(), lines[i].slice(colon + 1).trim());
  }
  const chunked = /chunked/i.test(headers.get('transfer-encoding') ?? '');
  const length = headers.get('content-length');
  if (!chunked && length === undefined) throw new Error('an answer without content-length or chunked encoding');
  return {
    status: Number(status[1]),
    headers,
    remaining: chunked ? -1 : Number(length),
    chunks: [],
    close: /close/i.test(headers.get('connection') ?? ''),
  };
}

/**
 * Keep-alive connections to one server, at most `max` of them, each carrying one request at a
 * time; a request finds a free connection, opens one, or waits for one to be free. A connection
 * that fails or is closed fails its request (the caller decides whether to send it again) and is
 * replaced on the next request.
 *
 * A connection idle for `idleMs` is closed rather than reused: the API closes a keep-alive
 * connection idle for 65 s, and a request written as it closes fails (ECONNRESET). The pool
 * reuses the connection freed last, so under a light load the ones below it can sit idle that
 * long: one request of a 10,000 events/s run failed so, 67 s after the ramp began (20 s of ramp,
 * 4 s of drain, 43 s into the load).
 */
export class HttpPool {
  private readonly free: Connection[] = [];
  private readonly all = new Set<Connection>();
  private readonly queued: { request: string | Buffer; resolve: (a: HttpAnswer) => void; reject: (e: Error) => void }[] = [];
  private opening = 0;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly max: number,
    private readonly timeoutMs: number,
    private readonly idleMs = 55_000,
  ) {}

  /** Sends a whole request (head and body, as `requestText` builds it, or its bytes) and resolves with the answer. */
  send(request: string | Buffer): Promise<HttpAnswer> {
    const conn = this.freeConnection();
    if (conn) return conn.send(request, this.timeoutMs);
    return new Promise((resolve, reject) => {
      this.queued.push({ request, resolve, reject });
      if (this.all.size + this.opening < this.max) this.open();
    });
  }

  destroy(): void {
    for (const conn of this.all) conn.destroy();
    for (const q of this.queued.splice(0)) q.reject(new Error('pool destroyed'));
  }

  private open(): void {
    this.opening++;
    const socket = connect({ host: this.host, port: this.port });
    const failed = (err: Error) => {
      this.opening--;
      this.queued.shift()?.reject(err);
      // The rest waited on this connection too: each failed open fails one request, so a dead server ends them all.
      if (this.queued.length > 0 && this.all.size + this.opening < this.max) this.open();
    };
    socket.once('error', failed);
    socket.once('connect', () => {
      socket.off('error', failed);
      this.opening--;
      const conn = new Connection(
        socket,
        (c) => this.freed(c),
        (c) => {
          if (!this.all.delete(c)) return; // closed by the pool itself (idle too long): replaced when needed
          const at = this.free.indexOf(c);
          if (at >= 0) this.free.splice(at, 1);
          if (this.queued.length > 0 && this.all.size + this.opening < this.max) this.open();
        },
      );
      this.all.add(conn);
      this.freed(conn);
    });
  }

  /** The connection freed last, once those idle too long are closed (they are the oldest: at the bottom). */
  private freeConnection(): Connection | undefined {
    const stale = performance.now() - this.idleMs;
    let fresh = 0;
    while (fresh < this.free.length && this.free[fresh].freedAt <= stale) fresh++;
    for (const conn of this.free.splice(0, fresh)) {
      this.all.delete(conn);
      conn.destroy();
    }
    return this.free.pop();
  }

  private freed(conn: Connection): void {
    const next = this.queued.shift();
    if (next) conn.send(next.request, this.timeoutMs).then(next.resolve, next.reject);
    else {
      conn.freedAt = performance.now();
      this.free.push(conn);
    }
  }
}

/** A whole request as text (sent as UTF-8): the head (method, path, host, the given headers, content-length) and the body. */
export function requestText(method: string, url: URL, headers: Record<string, string>, body: string): string {
  let head = `${method} ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\n`;
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
  return `${head}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}
