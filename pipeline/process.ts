import { loadConfigOrExit } from './config.js';
import { createLogger } from './logger.js';
import { Metrics, serveMetrics } from './metrics.js';
import { runStage, type RunningStage } from './harness.js';
import type { AnyStage, Topology } from './stage.js';

/**
 * Runs one or more stages in this process: validates the configuration, serves /metrics,
 * /healthz and /readyz on METRICS_PORT (when set), and on SIGTERM or SIGINT finishes and acks
 * the batch in hand of every stage, then exits 0. Stages sharing a process stay what they are
 * on their own: each reads its own stream through its own consumer group, with its own
 * connections, claims, dead letters and backpressure, so any of them can be split out again.
 */
export async function runStageProcess(stages: AnyStage[], topology: Topology): Promise<void> {
  const config = loadConfigOrExit();
  const names = stages.map((stage) => stage.name).join(',');
  const log = createLogger(`stage:${names}`, config.LOG_LEVEL);
  const metrics = new Metrics(`${names}-${config.WORKER_SLOT}`);
  const running: RunningStage[] = [];
  for (const stage of stages) running.push(await runStage(stage, { config, log, metrics, topology }));
  const server = config.METRICS_PORT
    ? await serveMetrics(metrics, config.METRICS_PORT, config.HTTP_HOST, { ready: () => running.every((r) => r.ready()) })
    : undefined;

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
    await Promise.all(running.map((r) => r.stop()));
    server?.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}
