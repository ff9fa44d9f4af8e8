// The HTTP server: ingest, authorize, admin API, quotes, invoices, COGS.
// API_PROCESSES > 1 forks that many processes sharing the port (node:cluster).
import cluster from 'node:cluster';
import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import { loadConfigOrExit } from '../pipeline/config.js';
import { subscribeControl } from '../pipeline/control.js';
import { createLogger } from '../pipeline/logger.js';
import { Metrics } from '../pipeline/metrics.js';
import { surviveDependencyRejections } from '../pipeline/errors.js';
import { connectRedis, exitOnBadRedisTarget } from '../pipeline/redis.js';
import { connectPostgres } from '../pipeline/postgres.js';
import { createApp } from './server.js';

const config = loadConfigOrExit();
await exitOnBadRedisTarget(config.REDIS_URL, config.INGEST_DURABILITY);
const processes = Math.max(1, Number(process.env.API_PROCESSES ?? 1) || 1);

if (processes > 1 && cluster.isPrimary) {
  const log = createLogger('api-primary', config.LOG_LEVEL);
  let stopping = false;
  for (let i = 0; i < processes; i++) cluster.fork({ WORKER_SLOT: String(i) });
  cluster.on('exit', (worker, code) => {
    if (stopping) return;
    log.warn({ pid: worker.process.pid, code }, 'api process exited; starting another');
    cluster.fork();
  });
  const stop = () => {
    stopping = true;
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
    const wait = setInterval(() => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    }, 50);
    wait.unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const log = createLogger(`api-${config.WORKER_SLOT}`, config.LOG_LEVEL);
  surviveDependencyRejections(log);
  const metrics = new Metrics(`api-${config.WORKER_SLOT}`);
  const sql = connectPostgres(config.DATABASE_URL, { max: config.PG_POOL_SIZE, name: 'api' });
  const redis = connectRedis(config.REDIS_URL, `${config.REDIS_PREFIX}api:${process.pid}`, { commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS, log });
  const { app, applyControl, createServer, close } = createApp({ config, sql, redis, log, metrics });
  const control = subscribeControl(config.REDIS_URL, config.REDIS_PREFIX, applyControl, log);
  // A request (headers and body) must arrive within its deadline, HTTP_REQUEST_TIMEOUT_MS, and a
  // second of grace (the route's own 503 timeout comes first): Node's default, 300 s, let a client
  // trickling a body hold its connection, and a route's work, for minutes. Checked every second
  // (Node's default: every 30 s). Idle keep-alive connections are not counted (Node 18+).
  const requestTimeout = config.HTTP_REQUEST_TIMEOUT_MS + 1_000;
  const serverOptions = { requestTimeout, headersTimeout: requestTimeout, connectionsCheckingInterval: 1_000 };
  const server = serve({ fetch: app.fetch, port: config.HTTP_PORT, hostname: config.HTTP_HOST, createServer, serverOptions }, (info) =>
    log.info({ port: info.port, host: config.HTTP_HOST }, 'api listening'),
  ) as Server;
  // Keep idle keep-alive connections longer than clients and load balancers do (commonly 60 s):
  // a server that closes first races the client's next request on that socket (ECONNRESET).
  server.keepAliveTimeout = 65_000;
  const stop = async () => {
    log.info('stopping: closing the server');
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    server.close();
    await control.close();
    await close();
    await sql.end({ timeout: 5 });
    redis.disconnect();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}
