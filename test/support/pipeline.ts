import { createServer } from 'node:net';
import type { Redis } from 'ioredis';
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

/** `count` consecutive free ports (checked by binding each), from a random start. */
export async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    let ok = true;
    for (let port = base; port < base + count && ok; port++) ok = await portFree(port);
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
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
    drained: () => pipelineDrained(world.redis, world.config.REDIS_PREFIX),
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

/** True when every consumer group of every stream (partition 0) has nothing undelivered and nothing pending. */
export async function pipelineDrained(redis: Redis, prefix: string): Promise<boolean> {
  for (const { stream } of TOPOLOGY) {
    const groups = (await redis.xinfo('GROUPS', partitionedKey(prefix, stream, 0))) as unknown[][];
    for (const group of groups) {
      const info = Object.fromEntries(group.flatMap((v, i) => (i % 2 === 0 ? [[v, group[i + 1]]] : [])));
      if (Number(info.pending) !== 0 || (info.lag !== null && Number(info.lag) !== 0)) return false;
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
