import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Cluster, Redis as Standalone } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../pipeline/config.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { projectPath } from '../../pipeline/paths.js';
import { connectRedis, deleteKeysWithPrefix, durabilityProblem, keySlot, type Redis } from '../../pipeline/redis.js';
import { STREAMS } from '../../store/streams.js';
import { createTenant, type CreatedTenant } from '../../store/tenants.js';
import { TenantTokens } from '../../store/tenant-tokens.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { createIngestRoutes } from './routes.js';

// INGEST_DURABILITY: 202 only once the block is on a replica (WAIT) or fsynced; 503 otherwise.
// The replicas are those of the local Redis Cluster (ops/redis-cluster.sh); the standalone Redis
// of the tests has none.
const CLUSTER_URL = 'redis+cluster://127.0.0.1:7100';
const silent = pino({ level: 'silent' });
let iso: Isolated;
let tenant: CreatedTenant;
let tokens: TenantTokens;
let cluster: Redis;
let worlds = 0;

beforeAll(async () => {
  execFileSync('bash', [projectPath('ops', 'redis-cluster.sh')], { stdio: 'ignore' });
  iso = await isolated('durability');
  tenant = await createTenant(iso.sql, 'Durable');
  tokens = new TenantTokens(iso.sql);
  cluster = connectRedis(CLUSTER_URL, `${iso.config.REDIS_PREFIX}durability`);
}, 120_000);

afterAll(async () => {
  await deleteKeysWithPrefix(cluster, iso.config.REDIS_PREFIX);
  cluster.disconnect();
  await iso.cleanup();
});

function world(redis: Redis, overrides: Partial<Config>) {
  const config: Config = { ...iso.config, REDIS_PREFIX: `${iso.config.REDIS_PREFIX}w${++worlds}:`, ...overrides };
  const app = createIngestRoutes({ config, redis, tokens, log: silent });
  return {
    config,
    key: partitionedKey(config.REDIS_PREFIX, STREAMS.ingested, 0),
    post: (events: unknown[]) =>
      app.request('/v1/events', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${tenant.ingestToken}` },
        body: JSON.stringify(events),
      }),
  };
}

const event = (i: number) => ({
  event_id: `dur_${worlds}_${i}_${Math.random().toString(36).slice(2)}`,
  event_type: 'mcp.tool_invoked',
  api_key: 'sk_live_ABCDEFGHIJKLMNOPQRSTUVWXyz012345',
  tool_name: 'read_database',
  execution_status: 'SUCCESS',
  recorded_timestamp: new Date(Date.now() - 1000).toISOString(),
});

describe('INGEST_DURABILITY=replica', () => {
  it('answers 202 on a cluster once the replica of the slot has the block (it can be read there at once)', async () => {
    const w = world(cluster, { REDIS_URL: CLUSTER_URL, INGEST_DURABILITY: 'replica', INGEST_DURABILITY_TIMEOUT_MS: 2_000 });
    const res = await w.post([event(1), event(2), event(3)]);
    expect(res.status, await res.clone().text()).toBe(202);
    // The replica of the slot's master, read directly: WAIT returned only once it had the entry.
    const master = (cluster as Cluster).slots[keySlot(w.key)][0];
    const replicaAddress = (cluster as Cluster).slots[keySlot(w.key)][1];
    expect(replicaAddress).toBeDefined();
    expect(replicaAddress).not.toBe(master);
    const [host, port] = replicaAddress.split(':');
    const replica = new Standalone({ host, port: Number(port) });
    try {
      await replica.call('READONLY');
      expect(await replica.xlen(w.key)).toBe(1);
    } finally {
      replica.disconnect();
    }
  });

  it('answers 503 not_durable with Retry-After when no replica confirms in time (never 202), on one node and on a cluster', async () => {
    const alone = world(iso.redis, { INGEST_DURABILITY: 'replica', INGEST_DURABILITY_TIMEOUT_MS: 150 });
    const started = Date.now();
    const res = await alone.post([event(1)]);
    expect(res.status).toBe(503);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(res.headers.get('retry-after')).toBe('2');
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('not_durable');

    // Two replicas asked of a cluster with one per master.
    const two = world(cluster, { REDIS_URL: CLUSTER_URL, INGEST_DURABILITY: 'replica', INGEST_DURABILITY_REPLICAS: 2, INGEST_DURABILITY_TIMEOUT_MS: 150 });
    const refused = await two.post([event(2)]);
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('not_durable');
  });

  it('with INGEST_DURABILITY=ack (the default) answers 202 on the same node without waiting', async () => {
    const w = world(iso.redis, { INGEST_DURABILITY: 'ack' });
    expect((await w.post([event(1)])).status).toBe(202);
  });
});

describe('INGEST_DURABILITY=fsync', () => {
  it('is refused at start with one line when Redis runs without the append-only file, or (before 7.2) without appendfsync always', async () => {
    expect(await durabilityProblem('redis://127.0.0.1:6379', 'fsync')).toMatch(/^INGEST_DURABILITY=fsync needs the append-only file: Redis at redis:\/\/127\.0\.0\.1:6379 runs with appendonly no$/);
    expect(await durabilityProblem('redis://127.0.0.1:6379', 'replica')).toBeUndefined();
    expect(await durabilityProblem(CLUSTER_URL, 'fsync')).toMatch(/^INGEST_DURABILITY=fsync needs the append-only file: Redis at 127\.0\.0\.1:710\d runs with appendonly no$/);
  });

  it('answers 202 from a Redis with appendfsync always (EXEC answers after the fsync), which the start check accepts', async () => {
    const port = 7180 + (process.pid % 9);
    const dir = mkdtempSync(join(tmpdir(), 'am-aof-'));
    const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec', '--dir', dir], { stdio: 'ignore' });
    const url = `redis://127.0.0.1:${port}`;
    const redis = new Standalone(url, { lazyConnect: true, retryStrategy: () => 100 });
    redis.on('error', () => {});
    try {
      for (let i = 0; i < 50 && redis.status !== 'ready'; i++) await redis.connect().catch(() => new Promise((r) => setTimeout(r, 100)));
      const version = /redis_version:(\d+)\.(\d+)/.exec(await redis.info('server'))!;
      const before72 = Number(version[1]) < 7 || (Number(version[1]) === 7 && Number(version[2]) < 2);
      if (before72) expect(await durabilityProblem(url, 'fsync')).toBe(`INGEST_DURABILITY=fsync on Redis before 7.2 (no WAITAOF) needs appendfsync always: Redis at ${url} has appendfsync everysec`);
      await redis.config('SET', 'appendfsync', 'always');
      expect(await durabilityProblem(url, 'fsync')).toBeUndefined();
      const w = world(redis, { REDIS_URL: url, INGEST_DURABILITY: 'fsync', INGEST_DURABILITY_TIMEOUT_MS: 2_000 });
      expect((await w.post([event(1), event(2)])).status).toBe(202);
      expect((await w.post([event(3)])).status).toBe(202);
      expect(await redis.xlen(w.key)).toBe(2);
      expect(Number(/aof_enabled:(\d)/.exec(await redis.info('persistence'))![1])).toBe(1);
    } finally {
      redis.disconnect();
      server.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
