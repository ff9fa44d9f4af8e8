import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { createApp } from '../../api/server.js';
import { loadConfig, type Config } from '../../pipeline/config.js';
import { ensureGroups, runStage, type RunningStage } from '../../pipeline/harness.js';
import { createLogger } from '../../pipeline/logger.js';
import { Metrics } from '../../pipeline/metrics.js';
import { connectRedis } from '../../pipeline/redis.js';
import { STAGES, TOPOLOGY } from '../../stages/registry.js';
import { connectPostgres } from '../../pipeline/postgres.js';
import type { Isolated } from './isolated.js';
import { pipelineDrained } from './pipeline.js';

export interface InProcessPipeline {
  baseUrl: string;
  config: Config;
  /** Resolves once every consumer group has been given everything and acked it. */
  drain(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The whole pipeline inside the test process, against the isolated world's Redis, PostgreSQL
 * and ClickHouse: the HTTP API (createApp, on a free port) and every stage under the real
 * harness (runStage), short blocking reads so that a test drains in seconds.
 */
export async function startInProcessPipeline(world: Isolated, env: Record<string, string> = {}, options: { workersPerStage?: number } = {}): Promise<InProcessPipeline> {
  const config = loadConfig({ ...process.env, ...world.env, BLOCK_MS: '200', ANALYTICS_FLUSH_MS: '200', TRIM_INTERVAL_MS: '1000', ...env });
  const log = createLogger('pipeline', config.LOG_LEVEL);
  await ensureGroups(world.redis, config.REDIS_PREFIX, config.PARTITIONS, TOPOLOGY);
  const stages: RunningStage[] = [];
  // More than one worker per stage: each its own consumer of the stage's group, as separate processes would be.
  for (let slot = 0; slot < (options.workersPerStage ?? 1); slot++) {
    for (const stage of STAGES) {
      stages.push(await runStage(stage, { config, log, metrics: new Metrics(stage.name), topology: TOPOLOGY, consumer: `${stage.name}-test-${slot}` }));
    }
  }
  const sql = connectPostgres(config.DATABASE_URL, { max: 4, name: 'test-api' });
  const redis = connectRedis(config.REDIS_URL, `${config.REDIS_PREFIX}test-api`);
  const { app } = createApp({ config, sql, redis, log, metrics: new Metrics('api') });
  const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  const port = (server.address() as AddressInfo).port;

  const drained = () => pipelineDrained(world.redis, config.REDIS_PREFIX, config.PARTITIONS);

  return {
    baseUrl: `http://127.0.0.1:${port}`,
    config,
    async drain(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      // Twice in a row, some time apart: a consumer may hold a batch it has read but not acked yet.
      for (let calm = 0; calm < 2; ) {
        if (Date.now() > deadline) throw new Error(`the pipeline did not drain within ${timeoutMs} ms`);
        calm = (await drained()) ? calm + 1 : 0;
        await new Promise((r) => setTimeout(r, 300));
      }
    },
    async stop() {
      await new Promise((resolve) => server.close(resolve));
      await Promise.all(stages.map((s) => s.stop()));
      await sql.end({ timeout: 5 });
      redis.disconnect();
    },
  };
}
