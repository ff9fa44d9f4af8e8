import { loadConfigOrExit } from './config.js';
import { createLogger } from './logger.js';
import { Metrics, serveMetrics } from './metrics.js';
import { runStage } from './harness.js';
import type { AnyStage, Topology } from './stage.js';

/**
 * Runs one stage as a process: validates the configuration, serves /metrics, /healthz and
 * /readyz on METRICS_PORT (when set), and on SIGTERM or SIGINT finishes and acks the batch
 * in hand, then exits 0.
 */
export async function runStageProcess(stage: AnyStage, topology: Topology): Promise<void> {
  const config = loadConfigOrExit();
  const log = createLogger(`stage:${stage.name}`, config.LOG_LEVEL);
  const metrics = new Metrics(`${stage.name}-${config.WORKER_SLOT}`);
  const running = await runStage(stage, { config, log, metrics, topology });
  const server = config.METRICS_PORT
    ? await serveMetrics(metrics, config.METRICS_PORT, config.HTTP_HOST, { ready: () => running.ready() })
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
    await running.stop();
    server?.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}
