import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, Redis as Standalone } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectPath } from './paths.js';
import { clusterNodes, connectRedis, deleteKeysWithPrefix, getMany, keySlot, redisTargetProblem, scanKeys, type Redis } from './redis.js';

// The local cluster of ops/redis-cluster.sh (3 masters + 3 replicas), shared by tests that need one:
// each test keeps to its own key prefix and removes it.
const CLUSTER_URL = 'redis+cluster://127.0.0.1:7100';
const prefix = `clustertest:${process.pid}:`;
let cluster: Redis;

beforeAll(() => {
  execFileSync('bash', [projectPath('ops', 'redis-cluster.sh')], { stdio: 'ignore' });
  cluster = connectRedis(CLUSTER_URL, `${prefix}test`);
}, 120_000);

afterAll(async () => {
  await deleteKeysWithPrefix(cluster, prefix);
  cluster.disconnect();
});

describe('Redis Cluster connections', () => {
  it('a redis+cluster:// URL gives a cluster client; its seed nodes are read from the URL', () => {
    expect(cluster).toBeInstanceOf(Cluster);
    expect(clusterNodes('redis+cluster://10.0.0.1:7000,10.0.0.2:7001')).toEqual([
      { host: '10.0.0.1', port: 7000 },
      { host: '10.0.0.2', port: 7001 },
    ]);
    expect(clusterNodes('redis://127.0.0.1:6379')).toBeUndefined();
  });

  it('keySlot agrees with CLUSTER KEYSLOT, hash tags included', async () => {
    const keys = ['am:events:priced:{p0}', 'am:events:priced:{p5}', 'am:caps:t1:{p5}', 'plain-key', 'a{}b', '{user1000}.following', 'é{x'];
    for (const key of keys) expect(keySlot(key)).toBe(Number(await cluster.call('CLUSTER', 'KEYSLOT', key)));
  });

  it('getMany reads keys of many slots in order, where one MGET is refused with CROSSSLOT', async () => {
    const keys = Array.from({ length: 40 }, (_, i) => `${prefix}keycache:t${i}`);
    for (const [i, key] of keys.entries()) await cluster.set(key, `v${i}`);
    const slots = new Set(keys.map(keySlot));
    expect(slots.size).toBeGreaterThan(10);
    await expect(cluster.mget(...keys)).rejects.toThrow(/CROSSSLOT/);
    expect(await getMany(cluster, [...keys, `${prefix}absent`])).toEqual([...keys.map((_, i) => `v${i}`), null]);
  });

  it('scanKeys visits every master', async () => {
    const keys = Array.from({ length: 30 }, (_, i) => `${prefix}scan:${i}`);
    for (const key of keys) await cluster.set(key, '1');
    const owners = new Set<string>();
    for (const key of keys) {
      const slot = keySlot(key);
      const range = (cluster as Cluster).slots[slot];
      owners.add(range[0]);
    }
    expect(owners.size).toBe(3);
    const found: string[] = [];
    for await (const batch of scanKeys(cluster, `${prefix}scan:*`)) found.push(...batch);
    expect(found.sort()).toEqual([...keys].sort());
  });

  it('a script whose keys share a partition tag runs on the master of that slot', async () => {
    const streams = [`${prefix}events:in:{p3}`, `${prefix}events:out:{p3}`];
    const moved = await cluster.eval("redis.call('XADD', KEYS[1], '*', 'e', ARGV[1]); return redis.call('XADD', KEYS[2], '*', 'e', ARGV[1])", 2, ...streams, 'x');
    expect(String(moved)).toMatch(/^\d+-\d+$/);
    await expect(cluster.eval("return redis.call('XLEN', KEYS[1]) + redis.call('XLEN', KEYS[2])", 2, `${prefix}events:in:{p3}`, `${prefix}events:in:{p4}`)).rejects.toThrow(/CROSSSLOT/);
  });

  it('XINFO goes to the master of its key: no MOVED, so no reload of the slot map', async () => {
    const streams = Array.from({ length: 6 }, (_, p) => `${prefix}events:lag:{p${p}}`);
    for (const key of streams) {
      await cluster.xadd(key, '*', 'e', '1');
      await cluster.xgroup('CREATE', key, 'g', '0');
    }
    const masters = new Set(streams.map((key) => (cluster as Cluster).slots[keySlot(key)]?.[0]));
    expect(masters.size).toBeGreaterThan(1);
    await new Promise((resolve) => setTimeout(resolve, 300)); // a reload the connection started on its own is over
    let reloads = 0;
    const counted = () => reloads++;
    cluster.on('refresh', counted);
    try {
      for (let round = 0; round < 5; round++) {
        for (const key of streams) {
          const [group] = (await cluster.xinfo('GROUPS', key)) as unknown[][];
          expect(group[1]).toBe('g');
          expect((await cluster.xinfo('STREAM', key)) as unknown[]).toContain('length');
        }
      }
    } finally {
      cluster.off('refresh', counted);
    }
    expect(reloads).toBe(0);
  });
});

describe('a REDIS_URL that names the wrong kind of Redis', () => {
  it('is explained in one line: a cluster URL at a standalone node, a plain URL at a cluster node', async () => {
    expect(await redisTargetProblem('redis+cluster://127.0.0.1:6379')).toBe(
      'REDIS_URL redis+cluster://127.0.0.1:6379 names a Redis Cluster, but 127.0.0.1:6379 is a standalone Redis: write it redis://127.0.0.1:6379',
    );
    expect(await redisTargetProblem('redis://127.0.0.1:7100')).toBe('REDIS_URL redis://127.0.0.1:7100 reaches a Redis Cluster node: write it redis+cluster://127.0.0.1:7100');
    expect(await redisTargetProblem(CLUSTER_URL)).toBeUndefined();
    expect(await redisTargetProblem('redis://127.0.0.1:6379')).toBeUndefined();
    // Unreachable now: not judged, a process waits for Redis as always.
    expect(await redisTargetProblem('redis://127.0.0.1:1')).toBeUndefined();
  });

  it('a cluster with a slot that has no master is refused', async () => {
    const port = 7190 + (process.pid % 9);
    const dir = mkdtempSync(join(tmpdir(), 'am-slotless-'));
    const node = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--save', '', '--dir', dir], { stdio: 'ignore' });
    const probe = new Standalone({ port, lazyConnect: true, retryStrategy: () => 100 });
    probe.on('error', () => {});
    try {
      for (let i = 0; i < 50 && probe.status !== 'ready'; i++) await probe.connect().catch(() => new Promise((r) => setTimeout(r, 100)));
      // Half the slots, on the only master: the other half has none.
      await probe.call('CLUSTER', 'ADDSLOTSRANGE', '0', '8191');
      expect(await redisTargetProblem(`redis+cluster://127.0.0.1:${port}`)).toBe(
        `the Redis Cluster at redis+cluster://127.0.0.1:${port} serves 8192 of 16384 slots: a slot has no master (see CLUSTER INFO)`,
      );
    } finally {
      probe.disconnect();
      node.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('stops a stage process with that one line and exit code 2, not a stack trace', () => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', projectPath('stages', 'run.ts'), 'price'], {
      env: { ...process.env, REDIS_URL: 'redis+cluster://127.0.0.1:6379', LOG_LEVEL: 'silent' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(run.status).toBe(2);
    expect(run.stderr.trim()).toBe('REDIS_URL redis+cluster://127.0.0.1:6379 names a Redis Cluster, but 127.0.0.1:6379 is a standalone Redis: write it redis://127.0.0.1:6379');
  });
});
