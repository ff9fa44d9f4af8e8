import { randomBytes } from 'node:crypto';
import { loadConfig, type Config } from '../../pipeline/config.js';
import { Redis as Standalone } from 'ioredis';
import { clusterNodes, connectRedis, deleteKeysWithPrefix, type Redis } from '../../pipeline/redis.js';
import { connectPostgres, type Sql } from '../../pipeline/postgres.js';
import { connectClickHouse, type ClickHouseClient } from '../../store/clickhouse.js';
import { migrateClickHouse, migratePostgres } from '../../store/migrate.js';

const ADMIN_PG = process.env.TEST_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface Isolated {
  config: Config;
  /** Environment variables that point a child process at this isolated world. */
  env: Record<string, string>;
  sql: Sql;
  redis: Redis;
  clickhouse?: ClickHouseClient;
  cleanup(): Promise<void>;
}

/**
 * A world of its own for one test file: a fresh PostgreSQL database (migrated), a Redis key
 * prefix, and, when asked, a ClickHouse database. Everything is removed by cleanup().
 */
export async function isolated(name: string, options: { clickhouse?: boolean; redisUrl?: string } = {}): Promise<Isolated> {
  const tag = `${name.replace(/[^a-z0-9]/gi, '').toLowerCase().slice(0, 20)}_${randomBytes(4).toString('hex')}`;
  const dbName = `am_t_${tag}`;
  const admin = connectPostgres(ADMIN_PG, { max: 1 });
  await admin.unsafe(`CREATE DATABASE ${dbName}`);
  await admin.end();

  const env: Record<string, string> = {
    DATABASE_URL: `postgres://postgres@127.0.0.1:5432/${dbName}`,
    REDIS_PREFIX: `t:${tag}:`,
    CLICKHOUSE_DATABASE: dbName,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    // A world on a Redis of its own choosing (the local cluster): its child processes get it too.
    ...(options.redisUrl ? { REDIS_URL: options.redisUrl } : {}),
  };
  const config = loadConfig({ ...process.env, ...env });
  const sql = connectPostgres(config.DATABASE_URL, { max: 4, name: `test-${tag}` });
  await migratePostgres(sql);
  // REDIS_URL=redis+cluster://... runs a test against a Redis Cluster (bash ops/redis-cluster.sh).
  const redis: Redis = clusterNodes(config.REDIS_URL)
    ? connectRedis(config.REDIS_URL, `${config.REDIS_PREFIX}test`)
    : new Standalone(config.REDIS_URL, { lazyConnect: false, maxRetriesPerRequest: 3 });

  let clickhouse: ClickHouseClient | undefined;
  const chSettings = { url: config.CLICKHOUSE_URL, database: dbName };
  if (options.clickhouse) {
    await migrateClickHouse(chSettings);
    clickhouse = connectClickHouse(chSettings);
  }

  return {
    config,
    env,
    sql,
    redis,
    clickhouse,
    async cleanup() {
      await deleteKeysWithPrefix(redis, config.REDIS_PREFIX);
      redis.disconnect();
      await sql.end({ timeout: 5 });
      const admin = connectPostgres(ADMIN_PG, { max: 1 });
      await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
      await admin.end();
      if (clickhouse) {
        await clickhouse.close();
        // Dropping a database of tables and materialized views can take long on a loaded server (18.16).
        const dropper = connectClickHouse({ ...chSettings, requestTimeoutMs: 180_000 });
        await dropper.command({ query: `DROP DATABASE IF EXISTS ${dbName}` }).finally(() => dropper.close());
      }
    },
  };
}

