import { once } from 'node:events';
import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError, apiErrorHandler, tooManyRequests } from './errors.js';

const silent = { warn: () => {}, error: () => {} } as unknown as Parameters<typeof apiErrorHandler>[0];

describe('ApiError replies on a Node server', () => {
  let server: Server;
  let port: number;

  beforeAll(async () => {
    const app = new Hono();
    app.post('/refused', () => {
      throw tooManyRequests('busy', 'too many requests in flight; retry later', 250);
    });
    app.post('/invalid', () => {
      throw new ApiError(400, 'validation_failed', 'events[0].type: required', [{ field: 'events[0].type', message: 'required' }]);
    });
    app.onError(apiErrorHandler(silent));
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
    if (!server.listening) await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });

  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** One request on a raw connection: the head as sent, not as a client library rewrites it. */
  function post(path: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, method: 'POST', headers: { 'content-length': 2 } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      });
      req.on('error', reject);
      req.end('{}');
    });
  }

  it('answers with a Content-Length and the one error body, not a chunked stream, keeping its own headers', async () => {
    const refused = await post('/refused');
    expect(refused.status).toBe(429);
    // A text body goes out with its head in one write; Response.json's stream went out chunked, in three.
    expect(refused.headers['transfer-encoding']).toBeUndefined();
    expect(refused.headers['content-length']).toBe(String(Buffer.byteLength(refused.body)));
    expect(refused.headers['content-type']).toBe('application/json');
    expect(refused.headers['retry-after-ms']).toBe('250');
    expect(refused.headers['retry-after']).toBe('1');
    expect(JSON.parse(refused.body)).toEqual({ error: { code: 'busy', message: 'too many requests in flight; retry later' } });

    const invalid = await post('/invalid');
    expect(invalid.status).toBe(400);
    expect(invalid.headers['transfer-encoding']).toBeUndefined();
    expect(JSON.parse(invalid.body)).toEqual({
      error: { code: 'validation_failed', message: 'events[0].type: required', details: [{ field: 'events[0].type', message: 'required' }] },
    });
  });
});
