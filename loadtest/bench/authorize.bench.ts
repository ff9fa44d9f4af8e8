/**
 * How fast `POST /v1/authorize` is: the Hono app of one API process on a real port, against the
 * real Redis and a scratch PostgreSQL database (created, migrated and dropped here). 64 agents of
 * 8 customers, each agent with a hard month cap, a cap on its customer, rate_limit_per_minute and
 * max_concurrent_sessions set, so every call runs the whole check: 6 pause flags (API key, agent,
 * team, customer, session), 2 caps with their reservations, the sliding rate window and the
 * sessions in use. Calls go round the agents, each naming a session. A busy caller's calls are
 * answered from its grant (pipeline/admission-leases.ts) between script calls: the whole check runs
 * once per grant, and the Redis CPU per call below shows how often.
 *
 * The load comes from a worker thread (its own event loop, raw keep-alive HTTP/1.1 sockets, see
 * CLIENT), so the server's event loop does only the server's work; prints calls/s, p50/p99 of the server's own time (from
 * Server-Timing) and of the round trip as the client sees it.
 *
 *   npm run bench:authorize -- [--requests 50000] [--concurrency 1,16] [--estimate] [--rate 10000] [--client-nice 19] [--floor] [--lease-ms 0]
 *
 * --rate: the calls offered per second by all connections together, due one after another (at
 * most `concurrency` in flight); without it each connection calls again as soon as it is answered,
 * which measures the most one process answers (a closed loop, with every core busy).
 * --estimate: every call also asks estimated_cost (a reservation per cap, expiring after 5 min).
 * --lease-ms: how long a grant is answered from memory (100 by default, as deployed); 0 sends every
 * call to Redis (the design before grants).
 * --floor: the same server process, client and calls, but each request answered by a bare node:http
 * handler after one Redis round trip (a one-line script), no authorize code: what Node's HTTP
 * server, one script call and this client cost on this box, the floor under authorize's figures.
 *
 * `npm run bench:authorize` runs it with the V8 flags ops/start.ts gives the API process (one GC
 * thread, 8 MiB semi-spaces, a 256 MiB old-generation floor), so the server here is the server as
 * deployed.
 */
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { createServer, type IncomingMessage, type RequestListener, type ServerOptions, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { TenantTokens } from '../../store/tenant-tokens.js';
import { createAuthorizeRoutes } from '../../api/authorize.js';
import { writeJson } from '../../api/http.js';
import { AttributionResolver } from '../../store/attribution.js';
import { issueApiKey, newId } from '../../store/credentials.js';
import { createTenant } from '../../store/tenants.js';
import { isolated } from '../../test/support/isolated.js';
import { machineTicks } from './sampler.js';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '50000' },
    concurrency: { type: 'string', default: '1,16' },
    estimate: { type: 'boolean', default: false },
    rate: { type: 'string', default: '0' },
    'client-nice': { type: 'string', default: '0' },
    floor: { type: 'boolean', default: false },
    'lease-ms': { type: 'string' },
  },
});
const requests = Number(values.requests);
const concurrencies = values.concurrency.split(',').map(Number);
/** Calls per second offered by all connections together; 0: each connection calls again as soon as it is answered. */
const rate = Number(values.rate);
/**
 * The load generator's thread niceness (0-19). In a deployment the callers are on other machines;
 * here the client thread shares the two cores with the server and Redis, and at nice 0 the
 * scheduler may run it while either of them waits for a core. Above 0 it runs behind them.
 */
const clientNice = Number(values['client-nice']);
if (!Number.isInteger(clientNice) || clientNice < 0 || clientNice > 19) throw new Error('--client-nice must be an integer from 0 to 19');
const CUSTOMERS = 8;
const AGENTS_PER_CUSTOMER = 8;

function percentile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

// The load generator: plain JavaScript in a worker thread, a wrk-style HTTP/1.1 client on raw
// keep-alive sockets (one call at a time per connection, each request's bytes built once), so the
// client spends a write and a read per call and little else: node:http's client cost about as much
// CPU per call as the server it measured, on the same 2 cores. Every answer is parsed and checked
// (status 200, allowed, a Server-Timing header); posts back server and round-trip times.
const CLIENT = `
const { parentPort, workerData } = require('node:worker_threads');
const net = require('node:net');
const { port, headers, bodies, requests, concurrency, rate, clientNice } = workerData;
// setpriority(2) takes a thread id on Linux: this thread's is the last part of /proc/thread-self.
if (clientNice > 0) require('node:os').setPriority(Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop()), clientNice);
const head = Object.entries(headers).map(([k, v]) => k + ': ' + v + '\\r\\n').join('');
const wires = bodies.map((body) => Buffer.from('POST /v1/authorize HTTP/1.1\\r\\nhost: 127.0.0.1:' + port + '\\r\\n' + head +
  'content-length: ' + Buffer.byteLength(body) + '\\r\\n\\r\\n' + body));
function connect() {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => resolve(conn));
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    let text = '';
    let waiting;
    const conn = {
      call(i, due) {
        return new Promise((res, rej) => {
          waiting = { res, rej, start: due };
          socket.write(wires[i % wires.length]);
        });
      },
      close() { socket.destroy(); },
    };
    socket.on('data', (chunk) => {
      text += chunk;
      const end = text.indexOf('\\r\\n\\r\\n');
      if (end < 0) return;
      const headText = text.slice(0, end);
      const length = /\\r\\ncontent-length: *(\\d+)/i.exec(headText);
      if (!length) return fail(new Error('no content-length: ' + headText));
      const total = end + 4 + Number(length[1]);
      if (text.length < total) return;
      const body = text.slice(end + 4, total);
      text = text.slice(total);
      const w = waiting;
      waiting = undefined;
      if (!w) return fail(new Error('an answer nobody asked for'));
      if (!headText.startsWith('HTTP/1.1 200 ') || !body.startsWith('{"allowed":true')) return w.rej(new Error('unexpected answer ' + headText.slice(0, 12) + ': ' + body));
      const timing = /\\r\\nserver-timing: *app;dur=([\\d.]+)/i.exec(headText);
      if (!timing) return w.rej(new Error('no Server-Timing header'));
      w.res([Number(timing[1]), performance.now() - w.start]);
    });
    function fail(err) { if (waiting) waiting.rej(err); else reject(err); socket.destroy(); }
    socket.on('error', fail);
    socket.on('close', () => { if (waiting) waiting.rej(new Error('connection closed')); });
  });
}
(async () => {
  const server = new Float64Array(requests);
  const roundTrip = new Float64Array(requests);
  const conns = await Promise.all(Array.from({ length: concurrency }, connect));
  let next = 0;
  const started = performance.now();
  // Paced (rate > 0): call i is due at started + i / rate; a connection that is free waits for the
  // next due call on a 1 ms tick (no spinning: the client shares the two cores with the server),
  // and its round trip counts from when it was due, so a late send is not hidden.
  const tick = () => new Promise((resolve) => setTimeout(resolve, 1));
  await Promise.all(conns.map(async (conn) => {
    while (next < requests) {
      const i = next++;
      let due = performance.now();
      if (rate > 0) {
        due = started + (i * 1000) / rate;
        while (performance.now() < due) await tick();
      }
      const [s, r] = await conn.call(i, due);
      server[i] = s;
      roundTrip[i] = r;
    }
  }));
  const seconds = (performance.now() - started) / 1000;
  for (const conn of conns) conn.close();
  parentPort.postMessage({ seconds, server, roundTrip });
})().catch((err) => parentPort.postMessage({ error: String(err && err.stack || err) }));
`;

function load(port: number, headers: Record<string, string>, bodies: string[], n: number, concurrency: number, rate = 0) {
  return new Promise<{ seconds: number; server: Float64Array; roundTrip: Float64Array }>((resolve, reject) => {
    const worker = new Worker(CLIENT, { eval: true, workerData: { port, headers, bodies, requests: n, concurrency, rate, clientNice } });
    worker.once('message', (message: { error?: string; seconds: number; server: Float64Array; roundTrip: Float64Array }) => {
      void worker.terminate();
      if (message.error) reject(new Error(message.error));
      else resolve(message);
    });
    worker.once('error', reject);
  });
}

interface Cpu {
  server: number;
  rest: number;
  redis: number;
  /** The whole machine (every core, every process, the kernel): busy and idle seconds, from /proc/stat. */
  machineBusy: number;
  machineIdle: number;
}

/**
 * CPU seconds so far: the server's thread (the main thread: utime + stime of /proc/self/task/<pid>,
 * in clock ticks), the rest of this process (the client's worker thread, GC and libuv helpers),
 * and Redis (INFO cpu: the server process, main thread and all).
 */
async function cpuNow(): Promise<Cpu> {
  const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const server = (Number(fields[11]) + Number(fields[12])) / 100; // fields 14 and 15 of proc(5), after pid and comm
  const usage = process.cpuUsage();
  const info = await redis.info('cpu');
  const seconds = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  const machine = machineTicks();
  return { server, rest: (usage.user + usage.system) / 1e6 - server, redis: seconds('used_cpu_sys') + seconds('used_cpu_user'), machineBusy: machine.busy / 100, machineIdle: machine.idle / 100 };
}

const world = await isolated('authbench');
const { sql, redis, config } = world;
/** --floor: read the body, one script call, answer as authorize does (status, JSON, Server-Timing). */
function floorListener(req: IncomingMessage, res: ServerResponse): void {
  const start = performance.now();
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    JSON.parse(Buffer.concat(chunks).toString('utf8'));
    redis.eval('return 1', 0).then(
      () => writeJson(res, 200, '{"allowed":true}', { 'server-timing': `app;dur=${(performance.now() - start).toFixed(3)}` }),
      (err: unknown) => {
        res.writeHead(500);
        res.end(String(err));
      },
    );
  });
}

let closeRoutes = async (): Promise<void> => {};
const httpServer = await (async () => {
  if (values.floor) {
    const server = createServer(floorListener).listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    return server;
  }
  const resolver = new AttributionResolver(sql, redis, config.REDIS_PREFIX, config.KEY_CACHE_TTL_SECONDS);
  const leaseMs = values['lease-ms'] === undefined ? undefined : Number(values['lease-ms']);
  if (leaseMs !== undefined && !(Number.isInteger(leaseMs) && leaseMs >= 0)) throw new Error('--lease-ms must be a whole number of milliseconds, 0 or more');
  const routes = createAuthorizeRoutes({ config, redis, resolver, tokens: new TenantTokens(sql, 60_000), sql, ...(leaseMs !== undefined ? { leaseMs } : {}) });
  closeRoutes = () => routes.close();
  // As api/main.ts serves it: POST /v1/authorize straight on Node's request, the rest through Hono.
  const server = serve({
    fetch: routes.app.fetch,
    port: 0,
    hostname: '127.0.0.1',
    createServer: ((options: ServerOptions, listener: RequestListener) =>
      createServer(options, (req, res) => {
        if (!routes.serveNode(req, res)) listener(req, res);
      })) as typeof createServer,
  });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  return server;
})();

try {
  const tenant = await createTenant(sql, 'Authorize bench');
  const bodies: string[] = [];
  for (let c = 0; c < CUSTOMERS; c++) {
    const [customerId, teamId] = [newId('cus'), newId('team')];
    await sql`INSERT INTO customers (id, tenant_id, name) VALUES (${customerId}, ${tenant.tenantId}, 'Bench customer')`;
    await sql`INSERT INTO teams (id, tenant_id, customer_id, name) VALUES (${teamId}, ${tenant.tenantId}, ${customerId}, 'Bench team')`;
    await sql`INSERT INTO spend_caps (id, tenant_id, scope_kind, scope_id, period, limit_nano) VALUES (${newId('cap')}, ${tenant.tenantId}, 'customer', ${customerId}, 'month', ${(10n ** 18n).toString()})`;
    for (let a = 0; a < AGENTS_PER_CUSTOMER; a++) {
      const agentId = newId('agt');
      const key = issueApiKey();
      await sql`
        INSERT INTO agents (id, tenant_id, team_id, name, agent_type, rate_limit_per_minute, max_concurrent_sessions)
        VALUES (${agentId}, ${tenant.tenantId}, ${teamId}, 'Bench agent', 'CLAUDE', 1000000000, 1000)`;
      await sql`
        INSERT INTO api_keys (id, tenant_id, agent_id, key_hash, prefix, last4)
        VALUES (${newId('key')}, ${tenant.tenantId}, ${agentId}, ${key.keyHash}, ${key.prefix}, ${key.last4})`;
      await sql`INSERT INTO spend_caps (id, tenant_id, scope_kind, scope_id, period, limit_nano) VALUES (${newId('cap')}, ${tenant.tenantId}, 'agent', ${agentId}, 'month', ${(10n ** 17n).toString()})`;
      bodies.push(
        JSON.stringify({
          api_key: key.secret,
          session_id: `sess_${a}`,
          tool: 'transform_schema',
          ...(values.estimate ? { estimated_cost: '0.01' } : {}),
        }),
      );
    }
  }
  const port = (httpServer.address() as AddressInfo).port;
  const headers = { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' };
  await load(port, headers, bodies, 5_000, 4); // warm the caches, the token check and the JIT
  if (values.floor) console.log('--floor: a bare node:http handler and one Redis script call per request, no authorize code');
  console.log(
    `POST /v1/authorize, ${requests} calls per run over ${bodies.length} agents (6 pause flags, 2 caps, rate window, sessions in use${values.estimate ? ', estimated_cost reserved' : ''}), ` +
      (rate > 0 ? `offered at ${rate} calls/s (round trip counted from each call's due time)` : 'each connection calling again as soon as it is answered'),
  );
  for (const concurrency of concurrencies) {
    const before = await cpuNow();
    const loopDelay = monitorEventLoopDelay({ resolution: 1 });
    loopDelay.enable();
    const run = await load(port, headers, bodies, requests, concurrency, rate);
    const after = await cpuNow();
    loopDelay.disable();
    const perCall = (key: keyof Cpu) => `${Math.round(((after[key] - before[key]) * 1e6) / requests)} us`;
    run.server.sort();
    run.roundTrip.sort();
    const f = (ms: number) => `${ms.toFixed(3)} ms`;
    console.log(
      `concurrency ${String(concurrency).padStart(3)}: server p50 ${f(percentile(run.server, 0.5))} p90 ${f(percentile(run.server, 0.9))} p99 ${f(percentile(run.server, 0.99))} p99.9 ${f(percentile(run.server, 0.999))}` +
        ` | round trip p50 ${f(percentile(run.roundTrip, 0.5))} p99 ${f(percentile(run.roundTrip, 0.99))}` +
        ` | ${Math.round(requests / run.seconds)} calls/s` +
        ` | CPU per call: server thread ${perCall('server')}, rest of the process (client thread, GC helpers) ${perCall('rest')}, Redis ${perCall('redis')},` +
        ` whole machine ${perCall('machineBusy')} (${Math.round((100 * (after.machineBusy - before.machineBusy)) / (after.machineBusy - before.machineBusy + after.machineIdle - before.machineIdle))}% of ${cpus().length} cores busy)` +
        ` | server event loop delay p99 ${f(loopDelay.percentile(99) / 1e6)} max ${f(loopDelay.max / 1e6)}`,
    );
  }
} finally {
  httpServer.close();
  await closeRoutes();
  await world.cleanup();
}
