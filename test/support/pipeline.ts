import { createServer } from 'node:net';
import type { Redis } from '../../pipeline/redis.js';
import { createLogger } from '../../pipeline/logger.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { supervise, type Supervisor } from '../../pipeline/supervisor.js';
import { pipelineProcesses } from '../../ops/start.js';
import { STAGES, TOPOLOGY } from '../../stages/registry.js';
import type { Isolated } from './isolated.js';

/**
 * The real pipeline for a test world: the HTTP server and every stage as processes under the
 * supervisor (as `npm start` runs them), on free ports. Used by the end-to-end tests of the SDK,
 * the MCP wrapper and the proxy, and by the SDK soak benchmark.
 */
export interface RunningPipeline {
  baseUrl: string;
  supervisor: Supervisor;
  /** Kills the HTTP server process (SIGKILL: mid-request), which the supervisor restarts. */
  killApi(signal?: NodeJS.Signals): void;
  waitReady(timeoutMs?: number): Promise<void>;
  /** True when every consumer group has nothing undelivered and nothing pending. */
  drained(): Promise<boolean>;
  stop(): Promise<void>;
}

/**
 * `count` consecutive free ports (checked by binding each), from a random start below the
 * ephemeral range (32768+), where a client socket of any process could take one meanwhile.
 */
export async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * (12_000 - count));
    let ok = true;
    for (let port = base; port < base + count && ok; port++) ok = await portFree(port);
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/** Waits until `url` answers 2xx; fails early when `alive` says the process behind it is gone. */
export async function waitHttp(url: string, timeoutMs: number, what: string, alive?: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (alive && !alive()) throw new Error(`${what} exited before it was ready`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      // not yet
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`${what} was not ready within ${timeoutMs / 1000} s (${url})`);
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

export async function startPipeline(world: Pick<Isolated, 'env' | 'redis' | 'config'>, env: Record<string, string> = {}): Promise<RunningPipeline> {
  const port = await freePortRange(STAGES.length + 2);
  const baseUrl = `http://127.0.0.1:${port}`;
  const specs = pipelineProcesses({
      metricsBasePort: port + 1,
      env: {
        ...world.env,
        HTTP_PORT: String(port),
        BLOCK_MS: '200',
        CLAIM_IDLE_MS: '5000',
        CLAIM_INTERVAL_MS: '1000',
        TRIM_INTERVAL_MS: '1000',
        LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'error',
        ...env,
      },
    });
  const stagePorts = specs.flatMap((spec) => (spec.env?.METRICS_PORT ? [spec.env.METRICS_PORT] : []));
  const supervisor = supervise(specs, createLogger('test-pipeline', process.env.TEST_LOG_LEVEL ?? 'silent'), 10_000);
  const ready = async (url: string) => (await fetch(url).catch(() => undefined))?.ok === true;
  const running: RunningPipeline = {
    baseUrl,
    supervisor,
    killApi(signal = 'SIGKILL') {
      supervisor.children().get('api')?.kill(signal);
    },
    async waitReady(timeoutMs = 180_000) {
      await waitFor(async () => {
        const checks = [ready(`${baseUrl}/readyz`), ...stagePorts.map((p) => ready(`http://127.0.0.1:${p}/readyz`))];
        return (await Promise.all(checks)).every(Boolean);
      }, timeoutMs);
    },
    drained: () => pipelineDrained(world.redis, world.config.REDIS_PREFIX, Number(env.PARTITIONS ?? world.config.PARTITIONS)),
    stop: () => supervisor.stop(),
  };
  try {
    await running.waitReady();
  } catch (err) {
    // Never leave the processes behind (they would outlive the world they point at).
    await supervisor.stop();
    throw err;
  }
  return running;
}

const fieldsOf = (reply: unknown[]) => Object.fromEntries(reply.flatMap((v, i) => (i % 2 === 0 ? [[v, reply[i + 1]]] : [])));

/**
 * True when every consumer group of every stream (in each of `partitions` partitions) has been
 * given every entry and acked it: its last delivered id is the stream's last id and nothing is pending. (The lag Redis
 * reports is not trusted for this: after Redis reloads its append-only file it can read too high.)
 */
export async function pipelineDrained(redis: Redis, prefix: string, partitions = 1): Promise<boolean> {
  for (let partition = 0; partition < partitions; partition++) {
    if (!(await partitionDrained(redis, prefix, partition))) return false;
  }
  return true;
}

async function partitionDrained(redis: Redis, prefix: string, partition: number): Promise<boolean> {
  for (const { stream } of TOPOLOGY) {
    const key = partitionedKey(prefix, stream, partition);
    const groups = (await redis.xinfo('GROUPS', key)) as unknown[][];
    if (groups.length === 0) continue;
    const lastId = fieldsOf((await redis.xinfo('STREAM', key)) as unknown[])['last-generated-id'];
    for (const group of groups) {
      const info = fieldsOf(group);
      if (Number(info.pending) !== 0 || info['last-delivered-id'] !== lastId) return false;
    }
  }
  return true;
}

export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
