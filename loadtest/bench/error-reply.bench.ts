// npm run bench:error-reply: what an error reply of the HTTP API costs the server, in CPU per
// request: a 429 thrown by a Hono route and answered by `app.onError` (apiErrorHandler), as the
// ingest route refuses when the gate is not known closed, against the same 429 written straight on
// Node's response (`writeJson`, as `serveNode` refuses when it is). The server runs in a child
// process with the API's Node flags, served by @hono/node-server's listener as api/main.ts serves it; the
// client here keeps raw keep-alive connections. A micro-benchmark, not a test.
import { fork } from 'node:child_process';
import { createServer } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import { timeout } from 'hono/timeout';
import { apiErrorHandler, retryAfterHeaders, tooManyRequests } from '../../api/errors.js';
import { writeJson } from '../../api/http.js';
import { API_NODE_FLAGS } from '../../ops/start.js';

const MESSAGE = 'the pipeline is behind; nothing was accepted, retry the same request later';

if (process.argv[2] === '--serve') {
  const silent = { warn: () => {}, error: () => {} } as unknown as Parameters<typeof apiErrorHandler>[0];
  const app = new Hono();
  app.use('*', timeout(5_000));
  app.post('/hono', () => {
    throw tooManyRequests('backpressure', MESSAGE, 250);
  });
  app.onError(apiErrorHandler(silent));
  const raw = JSON.stringify(tooManyRequests('backpressure', MESSAGE, 250).body());
  const honoListener = getRequestListener(app.fetch);
  const server = createServer((req, res) => {
    if (req.url === '/node') {
      req.resume();
      writeJson(res, 429, raw, retryAfterHeaders(250));
    } else void honoListener(req, res);
  });
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as AddressInfo).port }));
  process.on('message', (message: { type: string }) => {
    if (message.type === 'cpu') process.send!({ cpu: process.cpuUsage() });
  });
} else {
  const { values } = parseArgs({
    options: {
      requests: { type: 'string', default: '20000' },
      connections: { type: 'string', default: '8' },
      rounds: { type: 'string', default: '3' },
    },
  });
  const REQUESTS = Number(values.requests);
  const CONNECTIONS = Number(values.connections);
  const ROUNDS = Number(values.rounds);

  const child = fork(import.meta.filename, ['--serve'], { execArgv: ['--import', 'tsx', ...API_NODE_FLAGS] });
  const port = await new Promise<number>((resolve) => child.once('message', (m: { port: number }) => resolve(m.port)));
  const serverCpu = () =>
    new Promise<number>((resolve) => {
      child.once('message', (m: { cpu: NodeJS.CpuUsage }) => resolve(m.cpu.user + m.cpu.system));
      child.send({ type: 'cpu' });
    });

  /** `count` requests one after another on one connection, each read whole (by Content-Length or the last chunk) before the next. */
  async function drive(path: string, count: number): Promise<void> {
    const body = '{"events":[]}';
    const request = `POST ${path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
    const socket: Socket = connect(port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    let buffered = '';
    for (let i = 0; i < count; i++) {
      await new Promise<void>((resolve) => {
        const onData = (chunk: Buffer) => {
          buffered += chunk.toString('latin1');
          const headEnd = buffered.indexOf('\r\n\r\n');
          if (headEnd < 0) return;
          const length = /content-length: (\d+)/i.exec(buffered.slice(0, headEnd));
          const end = length ? headEnd + 4 + Number(length[1]) : buffered.indexOf('\r\n0\r\n\r\n') + 7;
          if ((length && buffered.length < end) || (!length && end < 7)) return;
          buffered = buffered.slice(end);
          socket.off('data', onData);
          resolve();
        };
        socket.on('data', onData);
        socket.write(request);
      });
    }
    socket.destroy();
  }

  const perConnection = Math.ceil(REQUESTS / CONNECTIONS);
  for (const [name, path] of [
    ['429 thrown, answered by app.onError', '/hono'],
    ['429 written on Node response (serveNode)', '/node'],
  ] as const) {
    await Promise.all(Array.from({ length: CONNECTIONS }, () => drive(path, 500)));
    const perRequest: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const before = await serverCpu();
      await Promise.all(Array.from({ length: CONNECTIONS }, () => drive(path, perConnection)));
      perRequest.push(((await serverCpu()) - before) / (perConnection * CONNECTIONS));
    }
    perRequest.sort((a, b) => a - b);
    console.log(`${name.padEnd(44)} server CPU per request: ${perRequest[Math.floor(ROUNDS / 2)].toFixed(1)} us (rounds: ${perRequest.map((v) => v.toFixed(1)).join(', ')})`);
  }
  child.kill();
}
