import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { HttpPool, requestText } from './http-client.js';
import { RequestStore } from './request-store.js';

let server: Server | undefined;
let connections = 0;

async function serve(handler: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<URL> {
  connections = 0;
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, res, Buffer.concat(chunks).toString('utf8')));
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/events`);
}

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  server = undefined;
});

/** Answers every request 200 "ok", keeping the connection. */
function answerOk(_req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(200, { 'content-length': 2 });
  res.end('ok');
}

const post = (url: URL, body: string) => requestText('POST', url, { 'content-type': 'application/json' }, body);

describe('HttpPool', () => {
  it('sends requests over one kept-alive connection and reads status, headers and body', async () => {
    const url = await serve((req, res, body) => {
      res.writeHead(429, { 'retry-after-ms': '120', 'content-type': 'application/json' });
      res.end(JSON.stringify({ echo: body, path: req.url, length: req.headers['content-length'] }));
    });
    const pool = new HttpPool(url.hostname, Number(url.port), 4, 5_000);
    const store = new RequestStore(256, 2);
    try {
      // Each request as text, and as bytes kept in a RequestStore chunk (how the generator holds its requests).
      const requests = ['{"a":1}', '{"b":"ünï"}', '{}'].flatMap((text) => [
        { text, request: post(url, text) },
        { text, request: store.store(post(url, text)).bytes },
      ]);
      for (const { text, request } of requests) {
        const answer = await pool.send(request);
        expect(answer.status).toBe(429);
        expect(answer.headers.get('retry-after-ms')).toBe('120');
        expect(JSON.parse(answer.body.toString('utf8'))).toEqual({ echo: text, path: '/v1/events', length: String(Buffer.byteLength(text)) });
      }
      expect(connections).toBe(1);
    } finally {
      pool.destroy();
    }
  });

  it('reads a chunked answer, and a body split across many packets', async () => {
    const url = await serve((_req, res) => {
      res.writeHead(202, { 'content-type': 'application/json' });
      res.write('{"accepted":');
      setTimeout(() => res.end('3}'), 20);
    });
    const pool = new HttpPool(url.hostname, Number(url.port), 1, 5_000);
    try {
      const answers = [await pool.send(post(url, '[]')), await pool.send(post(url, '[]'))];
      for (const answer of answers) {
        expect(answer.headers.get('transfer-encoding')).toBe('chunked');
        expect(JSON.parse(answer.body.toString('utf8'))).toEqual({ accepted: 3 });
      }
    } finally {
      pool.destroy();
    }
  });

  it('opens at most max connections; the requests beyond wait for a free one', async () => {
    let inHandler = 0;
    let mostInHandler = 0;
    const url = await serve((_req, res, body) => {
      mostInHandler = Math.max(mostInHandler, ++inHandler);
      setTimeout(() => {
        inHandler--;
        res.writeHead(200, { 'content-length': Buffer.byteLength(body) });
        res.end(body);
      }, 10);
    });
    const pool = new HttpPool(url.hostname, Number(url.port), 3, 5_000);
    try {
      const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => pool.send(post(url, String(i)))));
      expect(answers.map((a) => a.body.toString())).toEqual(Array.from({ length: 12 }, (_, i) => String(i)));
      expect(connections).toBe(3);
      expect(mostInHandler).toBe(3);
    } finally {
      pool.destroy();
    }
  });

  it('fails the request of a connection the server drops, and opens a new one for the next', async () => {
    let calls = 0;
    const url = await serve((req, res) => {
      if (++calls === 1) return req.socket.destroy();
      res.writeHead(200, { 'content-length': 2, connection: 'close' });
      res.end('ok');
    });
    const pool = new HttpPool(url.hostname, Number(url.port), 1, 5_000);
    try {
      await expect(pool.send(post(url, '{}'))).rejects.toThrow(/closed|reset/);
      expect((await pool.send(post(url, '{}'))).body.toString()).toBe('ok');
      expect((await pool.send(post(url, '{}'))).body.toString()).toBe('ok'); // the server said close: a third connection
      expect(connections).toBe(3);
    } finally {
      pool.destroy();
    }
  });

  it('closes a connection idle for idleMs instead of reusing it (the server may be closing it)', async () => {
    const url = await serve(answerOk);
    const pool = new HttpPool(url.hostname, Number(url.port), 2, 5_000, 60);
    try {
      await Promise.all([pool.send(post(url, '{}')), pool.send(post(url, '{}'))]);
      expect(connections).toBe(2);
      await pool.send(post(url, '{}')); // freed last, so the other stays idle at the bottom
      await new Promise((r) => setTimeout(r, 100));
      // Both are now idle past 60 ms: a new connection carries the request.
      expect((await pool.send(post(url, '{}'))).body.toString()).toBe('ok');
      expect(connections).toBe(3);
      expect((await pool.send(post(url, '{}'))).body.toString()).toBe('ok'); // a fresh one is reused
      expect(connections).toBe(3);
    } finally {
      pool.destroy();
    }
  });

  it('keeps a connection freed lately while it closes the idle one below it', async () => {
    const url = await serve(answerOk);
    const pool = new HttpPool(url.hostname, Number(url.port), 2, 5_000, 400);
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    try {
      await Promise.all([pool.send(post(url, '{}')), pool.send(post(url, '{}'))]);
      await pause(250);
      await pool.send(post(url, '{}')); // the top one, freed again now
      await pause(250); // the bottom one idle 500 ms, the top one 250
      await pool.send(post(url, '{}'));
      expect(connections).toBe(2); // the top one carried it
      await Promise.all([pool.send(post(url, '{}')), pool.send(post(url, '{}'))]);
      expect(connections).toBe(3); // the bottom one was closed: one new beside it
    } finally {
      pool.destroy();
    }
  });

  it('fails a request that is not answered in time', async () => {
    const url = await serve(() => {});
    const pool = new HttpPool(url.hostname, Number(url.port), 1, 50);
    try {
      await expect(pool.send(post(url, '{}'))).rejects.toThrow(/timed out/);
    } finally {
      pool.destroy();
    }
  });

  it('fails when nothing listens', async () => {
    const url = await serve(() => {});
    const port = Number(url.port);
    server!.close();
    await new Promise((r) => setTimeout(r, 10));
    const pool = new HttpPool('127.0.0.1', port, 1, 1_000);
    await expect(pool.send(post(url, '{}'))).rejects.toThrow(/ECONNREFUSED/);
    // More requests waiting than connections being opened: each failed open fails one and tries again for the rest.
    const waiting = Array.from({ length: 3 }, () => pool.send(post(url, '{}')));
    for (const request of waiting) await expect(request).rejects.toThrow(/ECONNREFUSED/);
    pool.destroy();
  });
});
