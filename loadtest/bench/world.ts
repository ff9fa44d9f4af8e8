import { randomBytes } from 'node:crypto';
import { Redis as Standalone } from 'ioredis';
import { loadConfig, type Config } from '../../pipeline/config.js';
import { clusterNodes, connectRedis, deleteKeysWithPrefix, type Redis } from '../../pipeline/redis.js';
import { connectPostgres, type Sql } from '../../pipeline/postgres.js';
import { migrateClickHouse, migratePostgres } from '../../store/migrate.js';
import { createClient } from '@clickhouse/client';
import { seedTenant } from '../../ops/seed.js';
import type { BenchActor, BenchWorld } from './events.js';

/**
 * The scratch world of a benchmark (or chaos) run: a PostgreSQL database of its own (migrated),
 * a Redis key prefix and a ClickHouse database, all named `am_<kind>_<tag>` / `<kind>:<tag>:`,
 * removed by cleanup(). Real data is never touched.
 */
export interface ScratchWorld {
  tag: string;
  dbName: string;
  config: Config;
  /** Environment variables that point a pipeline process at this world. */
  env: Record<string, string>;
  sql: Sql;
  redis: Redis;
  cleanup(): Promise<void>;
}

const ADMIN_PG = process.env.BENCH_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export async function createScratchWorld(extraEnv: Record<string, string> = {}, kind = 'bench'): Promise<ScratchWorld> {
  const tag = randomBytes(4).toString('hex');
  const dbName = `am_${kind}_${tag}`;
  const base = loadConfig({ ...process.env, ...extraEnv });
  const databaseUrl = new URL(base.DATABASE_URL);
  databaseUrl.pathname = `/${dbName}`;
  const env: Record<string, string> = {
    DATABASE_URL: databaseUrl.toString(),
    REDIS_PREFIX: `${kind}:${tag}:`,
    CLICKHOUSE_DATABASE: dbName,
  };
  const config = loadConfig({ ...process.env, ...extraEnv, ...env });

  const admin = connectPostgres(ADMIN_PG, { max: 1, name: 'bench-admin' });
  await admin.unsafe(`CREATE DATABASE ${dbName}`);
  await admin.end();
  const sql = connectPostgres(config.DATABASE_URL, { max: 4, name: 'bench' });
  const redis: Redis = clusterNodes(config.REDIS_URL)
    ? connectRedis(config.REDIS_URL, `bench:${tag}`)
    : new Standalone(config.REDIS_URL, { maxRetriesPerRequest: 3, connectionName: `bench:${tag}` });

  let cleaned = false;
  const world: ScratchWorld = {
    tag,
    dbName,
    config,
    env,
    sql,
    redis,
    async cleanup() {
      if (cleaned) return;
      cleaned = true;
      const problems: string[] = [];
      try {
        await deleteKeysWithPrefix(redis, config.REDIS_PREFIX);
      } catch (err) {
        problems.push(`redis: ${(err as Error).message}`);
      }
      redis.disconnect();
      await sql.end({ timeout: 5 }).catch(() => {});
      try {
        const admin = connectPostgres(ADMIN_PG, { max: 1, name: 'bench-admin' });
        await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
        await admin.end();
      } catch (err) {
        problems.push(`postgres: ${(err as Error).message}`);
      }
      try {
        const ch = createClient({ url: config.CLICKHOUSE_URL, username: config.CLICKHOUSE_USER, password: config.CLICKHOUSE_PASSWORD });
        await ch.command({ query: `DROP DATABASE IF EXISTS ${dbName}` });
        await ch.close();
      } catch (err) {
        problems.push(`clickhouse: ${(err as Error).message}`);
      }
      if (problems.length) console.error(`bench: cleanup incomplete: ${problems.join('; ')}`);
    },
  };
  try {
    await migratePostgres(sql);
    try {
      await migrateClickHouse({
        url: config.CLICKHOUSE_URL,
        database: dbName,
        username: config.CLICKHOUSE_USER,
        password: config.CLICKHOUSE_PASSWORD,
      });
    } catch (err) {
      // No ClickHouse migrations yet (the analytics stage is not wired): the empty database is enough.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  } catch (err) {
    await world.cleanup();
    throw err;
  }
  return world;
}


/**
 * The benchmark tenant's rate plan and cost model: the popular tools of the event mix have
 * rates of their own, the rest fall to `*`; tokens, tool multipliers and duration buckets are
 * all in play, so the price stage does its full work on every event.
 */
export const BENCH_PLAN = {
  tool_invocations: {
    read_database: '0.004', transform_schema: '0.05', search_docs: '0.002', web_search: '0.01', code_interpreter: '0.03',
    call_llm: '0.001', 'POST /v1/search': '0.0005', 'POST /v1/completions': '0.002', '*': '0.001',
  },
  token_multipliers: { input_tokens: '0.0000008', output_tokens: '0.000004' },
  tool_multipliers: { code_interpreter: '1.5', '*': '1' },
  duration_buckets: [
    { max_seconds: 10, rate: '0' },
    { max_seconds: 120, rate: '0.002' },
    { max_seconds: null, rate: '0.02' },
  ],
};

export const BENCH_COST_MODEL = {
  tools: { web_search: '0.004', code_interpreter: '0.01', transform_schema: '0.01' },
  default_tool: '0.0002',
  models: {
    'claude-sonnet': { input_tokens: '0.000003', output_tokens: '0.000015' },
    'gpt-4o': { input_tokens: '0.0000025', output_tokens: '0.00001' },
  },
  default_model: { input_tokens: '0.0000004', output_tokens: '0.0000016' },
  compute_per_ms: '0.00000005',
};

/**
 * One tenant: 50 customers x 2 teams x 5 agents (500 agents, half on the MCP server product,
 * half managed agents) and one app per team (100 apps, standard and agentic API), one
 * subscription per customer, no spend caps (a cap would pause agents and drop their events
 * from the comparison).
 */
export async function seedBenchWorld(sql: Sql, shape = { customers: 50, teamsPerCustomer: 2, agentsPerTeam: 5, appsPerTeam: 1 }): Promise<BenchWorld> {
  const seeded = await seedTenant(sql, { name: 'bench', pricing: BENCH_PLAN, costModel: BENCH_COST_MODEL, ...shape });
  const productKind = new Map<string, BenchActor['product']>(
    Object.entries(seeded.products).map(([kind, id]) => [id, kind as BenchActor['product']]),
  );
  const agentProducts = new Map(
    (await sql<{ id: string; product_id: string }[]>`SELECT id, product_id FROM agents WHERE tenant_id = ${seeded.tenantId}`).map((r) => [
      r.id,
      r.product_id,
    ]),
  );
  const appProducts = new Map(
    (await sql<{ id: string; product_id: string }[]>`SELECT id, product_id FROM apps WHERE tenant_id = ${seeded.tenantId}`).map((r) => [
      r.id,
      r.product_id,
    ]),
  );
  const actors: BenchActor[] = [];
  seeded.customers.forEach((customer, c) => {
    for (const team of customer.teams) {
      for (const agent of team.agents) {
        actors.push({ kind: 'agent', product: productKind.get(agentProducts.get(agent.id)!)!, customer: c, apiKey: agent.apiKey, clientId: agent.clientId });
      }
      for (const app of team.apps) {
        actors.push({ kind: 'app', product: productKind.get(appProducts.get(app.id)!)!, customer: c, apiKey: app.apiKey });
      }
    }
  });
  return { tenantId: seeded.tenantId, ingestToken: seeded.ingestToken, actors };
}
