import { loadConfigOrExit } from './config.js';
import { exitOnBadRedisTarget } from './redis.js';
import type { Server } from 'node:http';
import { describeError, surviveDependencyRejections } from './errors.js';
import { createLogger } from './logger.js';
import { Metrics, serveMetrics } from './metrics.js';
import { runStage, type RunningStage } from './harness.js';
import type { AnyStage, Topology } from './stage.js';

const METRICS_BIND_RETRY_MAX_MS = 30_000;

/**
 * Runs one or more stages in this process: validates the configuration, serves /metrics,
 * /healthz and /readyz on METRICS_PORT (when set), and on SIGTERM or SIGINT finishes and acks
 * the batch in hand of every stage, then exits 0. Stages sharing a process stay what they are
 * on their own: each reads its own stream through its own consumer group, with its own
 * connections, claims, dead letters and backpressure, so any of them can be split out again.
 */
export async function runStageProcess(stages: AnyStage[], topology: Topology): Promise<void> {
  const config = loadConfigOrExit();
  await exitOnBadRedisTarget(config.REDIS_URL);
  const names = stages.map((stage) => stage.name).join(',');
  const log = createLogger(`stage:${names}`, config.LOG_LEVEL);
  surviveDependencyRejections(log);
  const metrics = new Metrics(`${names}-${config.WORKER_SLOT}`);
  const running: RunningStage[] = [];
  for (const stage of stages) running.push(await runStage(stage, { config, log, metrics, topology }));
  let server: Server | undefined;
  let bindRetry: NodeJS.Timeout | undefined;
  // Metrics are for watching the work, not a condition of it: a port that cannot be bound (taken
  // by another pipeline on the host, or by a client socket) is logged and tried again with
  // backoff, and the stages run on meanwhile.
  const bindMetrics = async (attempt: number) => {
    try {
      server = await serveMetrics(metrics, config.METRICS_PORT, config.HTTP_HOST, { ready: () => running.every((r) => r.ready()) });
      if (attempt > 0) log.info({ port: config.METRICS_PORT }, 'metrics served');
    } catch (err) {
      const retryInMs = Math.min(1_000 * 2 ** attempt, METRICS_BIND_RETRY_MAX_MS);
      if (attempt === 0) log.warn({ port: config.METRICS_PORT, err: describeError(err), retryInMs }, 'cannot serve metrics on this port; running without, retrying');
      bindRetry = setTimeout(() => void bindMetrics(attempt + 1), retryInMs);
      bindRetry.unref();
    }
  };
  if (config.METRICS_PORT) await bindMetrics(0);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping: finishing the batch in hand');
    const forceExit = setTimeout(() => {
      log.error('did not stop within 30 s; exiting');
      process.exit(1);
    }, 30_000);
    forceExit.unref();
    clearTimeout(bindRetry);
    await Promise.all(running.map((r) => r.stop()));
    server?.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}
