import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectPath } from '../pipeline/paths.js';
import { createTenant, type CreatedTenant } from '../store/tenants.js';
import { isolated, type Isolated } from '../test/support/isolated.js';

// The API process as it runs (api/main.ts), with a request deadline of 500 ms.
let world: Isolated;
let tenant: CreatedTenant;
let child: ChildProcess | undefined;
let port: number;

beforeAll(async () => {
  world = await isolated('api-main');
  tenant = await createTenant(world.sql, 'Main');
  port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port: free } = probe.address() as AddressInfo;
      probe.close(() => resolve(free));
    });
  });
  child = spawn(process.execPath, ['--import', 'tsx', projectPath('api', 'main.ts')], {
    env: { ...process.env, ...world.env, HTTP_PORT: String(port), HTTP_REQUEST_TIMEOUT_MS: '500', API_PROCESSES: '1' },
    stdio: 'ignore',
  });
  for (let attempt = 0; ; attempt++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) break;
    } catch {
      if (attempt > 300) throw new Error('api/main.ts did not start');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}, 60_000);

afterAll(async () => {
  child?.kill('SIGTERM');
  await world?.cleanup();
});

/** Opens a connection, writes `head`, then a byte every 100 ms; resolves when the server closes it (or after 8 s). */
function trickle(head: string): Promise<{ closedAfterMs: number | undefined; answer: string }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = connect(port, '127.0.0.1');
    let answer = '';
    socket.on('data', (d) => (answer += d));
    socket.on('error', () => {});
    const drip = setInterval(() => socket.writable && socket.write(' '), 100);
    const giveUp = setTimeout(() => {
      socket.removeAllListeners('close');
      clearInterval(drip);
      socket.destroy();
      resolve({ closedAfterMs: undefined, answer });
    }, 8_000);
    socket.on('close', () => {
      clearInterval(drip);
      clearTimeout(giveUp);
      resolve({ closedAfterMs: Date.now() - started, answer });
    });
    socket.write(head);
  });
}

describe('api/main.ts: the server', () => {
  it('closes a connection whose headers have not all arrived within the request deadline (and a second), not after 66 s', async () => {
    const { closedAfterMs, answer } = await trickle(`POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Slow:`);
    expect(closedAfterMs).toBeDefined();
    expect(closedAfterMs).toBeLessThan(3_000);
    expect(answer).toMatch(/^HTTP\/1.1 408/);
  });

  it('closes a connection whose body has not all arrived within the request deadline (and a second), not after 300 s', async () => {
    // POST /v1/authorize reads Node's request itself (no Hono layer to drain it): only the server's requestTimeout ends it.
    const head = `POST /v1/authorize HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tenant.ingestToken}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"api_key": "`;
    const { closedAfterMs } = await trickle(head);
    expect(closedAfterMs).toBeDefined();
    expect(closedAfterMs).toBeLessThan(3_000);
  });

  it('keeps an idle keep-alive connection past the request deadline', async () => {
    const answers = await new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      let data = '';
      socket.on('data', (d) => (data += d));
      socket.on('error', reject);
      socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      setTimeout(() => socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'), 2_500);
      setTimeout(() => {
        socket.destroy();
        resolve(data);
      }, 3_000);
    });
    expect(answers.match(/HTTP\/1.1 200/g)).toHaveLength(2);
  });
});
