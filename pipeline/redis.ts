import { Cluster, Redis as Standalone, type ChainableCommander, type RedisOptions } from 'ioredis';
import { describeError } from './errors.js';
import { hashTag } from './keys.js';
import type { Logger } from './logger.js';

/**
 * A connection to Redis: one node, or a Redis Cluster (`redis+cluster://host:port[,host:port...]`).
 * Every multi-key command and script the pipeline sends touches one hash slot (the partition tag
 * `{pN}`), so the same code runs on both; what differs (SCAN, keys of many slots) is below.
 */
export type Redis = Standalone | Cluster;

const CLUSTER_SCHEME = 'redis+cluster:';

/** The seed nodes of a `redis+cluster://` URL, or undefined for a plain `redis://` URL. */
export function clusterNodes(url: string): { host: string; port: number }[] | undefined {
  if (!url.startsWith(`${CLUSTER_SCHEME}//`)) return undefined;
  const rest = url.slice(CLUSTER_SCHEME.length + 2).replace(/\/.*$/, '');
  return rest.split(',').map((node) => {
    const [host, port] = node.split(':');
    return { host: host || '127.0.0.1', port: Number(port || 6379) };
  });
}

/** A connection's errors are logged at most this often: an outage is one line per connection, not one per reconnect attempt. */
const ERROR_LOG_INTERVAL_MS = 10_000;

/**
 * Logs the errors of a connection, at most one line per ERROR_LOG_INTERVAL_MS, and says when it
 * is back. Without a listener ioredis prints "[ioredis] Unhandled error event" on every attempt.
 */
export function reportRedisErrors(redis: Redis, name: string, log?: Logger): void {
  let loggedAt = 0;
  let failing = false;
  redis.on('error', (err: Error) => {
    failing = true;
    const now = Date.now();
    if (now - loggedAt < ERROR_LOG_INTERVAL_MS) return;
    loggedAt = now;
    log?.warn({ connection: name, err: describeError(err) }, 'Redis connection failing; reconnecting');
  });
  redis.on('ready', () => {
    if (!failing) return;
    failing = false;
    loggedAt = 0;
    log?.info({ connection: name }, 'Redis connection back');
  });
}

/**
 * Every connection is named (CLIENT LIST shows who holds what). A blocking reader gets a
 * connection of its own with no command timeout: the BLOCK argument bounds its wait, and
 * the harness's watchdog catches a wedged socket.
 */
export function connectRedis(
  url: string,
  name: string,
  options: { blocking?: boolean; commandTimeoutMs?: number; log?: Logger } = {},
): Redis {
  const common: RedisOptions = {
    connectionName: name,
    enableAutoPipelining: false,
    // Commands wait for a reconnect instead of failing fast; the harness retries around outages.
    maxRetriesPerRequest: null,
    retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2_000),
  };
  const nodeOptions: RedisOptions = options.blocking ? common : { ...common, commandTimeout: options.commandTimeoutMs ?? 15_000 };
  const seeds = clusterNodes(url);
  const redis: Redis = seeds
    ? new Cluster(seeds, {
        redisOptions: { connectionName: name, enableAutoPipelining: false, maxRetriesPerRequest: null, ...(options.blocking ? {} : { commandTimeout: nodeOptions.commandTimeout }) },
        clusterRetryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2_000),
        // A failover moves slots: commands wait for the new master instead of failing.
        retryDelayOnFailover: 200,
        retryDelayOnClusterDown: 200,
        enableOfflineQueue: true,
      })
    : new Standalone(url, nodeOptions);
  if (redis instanceof Cluster) routeXinfoBySlot(redis);
  reportRedisErrors(redis, name, options.log);
  return redis;
}

/**
 * XINFO names its key after the subcommand, where the cluster client's command table knows of no
 * key: unrouted, it goes to any node, and a MOVED reply from a node that does not hold the stream
 * makes the client reload the whole slot map (a new connection, CLUSTER SLOTS and a pass over the
 * 16,384 slots). The backpressure marks read XINFO GROUPS of every partition of every output
 * several times a second, so most of those reads cost a reload. Routed by its key's slot, it
 * goes straight to the master holding the stream.
 */
function routeXinfoBySlot(cluster: Cluster): void {
  const send = cluster.sendCommand.bind(cluster);
  cluster.sendCommand = ((command, stream, node) => {
    // Command.getSlot() keeps a slot set before it is asked (ioredis 5).
    const routed = command as unknown as { name: string; args: unknown[]; slot?: number | null };
    if (!node && routed.name.toLowerCase() === 'xinfo' && routed.slot === undefined && routed.args.length >= 2) routed.slot = keySlot(String(routed.args[1]));
    return send(command, stream, node);
  }) as Cluster['sendCommand'];
}

/**
 * Checks that the URL names what it says, before a process starts work: a cluster URL must reach a
 * node in cluster mode with every slot served by a master; a plain URL must not reach a cluster
 * node (whose MOVED replies would fail half the commands). One line that says what is wrong, or
 * undefined (also when Redis cannot be reached now: a process waits for it as always).
 */
export async function redisTargetProblem(url: string): Promise<string | undefined> {
  const seeds = clusterNodes(url);
  const probeOptions: RedisOptions = { lazyConnect: true, connectTimeout: 3_000, maxRetriesPerRequest: 1, retryStrategy: () => null };
  const probe = seeds ? new Standalone({ ...seeds[0], ...probeOptions }) : new Standalone(url, probeOptions);
  probe.on('error', () => {});
  try {
    await probe.connect();
  } catch {
    return undefined;
  }
  try {
    const clusterMode = /cluster_enabled:1/.test(await probe.info('cluster'));
    if (!seeds) return clusterMode ? `REDIS_URL ${url} reaches a Redis Cluster node: write it redis+cluster://${url.replace(/^rediss?:\/\//, '')}` : undefined;
    if (!clusterMode) return `REDIS_URL ${url} names a Redis Cluster, but ${seeds[0].host}:${seeds[0].port} is a standalone Redis: write it redis://${seeds[0].host}:${seeds[0].port}`;
    const state = String(await probe.call('CLUSTER', 'INFO'));
    const served = Number(/cluster_slots_ok:(\d+)/.exec(state)?.[1] ?? 0);
    if (served < 16384 || !/cluster_state:ok/.test(state)) return `the Redis Cluster at ${url} serves ${served} of 16384 slots: a slot has no master (see CLUSTER INFO)`;
    return undefined;
  } finally {
    probe.disconnect();
  }
}

/**
 * What INGEST_DURABILITY=fsync needs of every master: the append-only file on, and before Redis
 * 7.2 (no WAITAOF) `appendfsync always`, so that EXEC answers after the fsync. One line that says
 * what is missing, or undefined (also for the other modes, and when Redis cannot be reached now).
 */
export async function durabilityProblem(url: string, mode: 'ack' | 'replica' | 'fsync'): Promise<string | undefined> {
  if (mode !== 'fsync') return undefined;
  const seeds = clusterNodes(url);
  const probeOptions: RedisOptions = { lazyConnect: true, connectTimeout: 3_000, maxRetriesPerRequest: 1, retryStrategy: () => null };
  const open = async (target: { host: string; port: number } | string): Promise<Standalone | undefined> => {
    const probe = typeof target === 'string' ? new Standalone(target, probeOptions) : new Standalone({ ...target, ...probeOptions });
    probe.on('error', () => {});
    try {
      await probe.connect();
      return probe;
    } catch {
      probe.disconnect();
      return undefined;
    }
  };
  const first = await open(seeds ? seeds[0] : url);
  if (!first) return undefined;
  const masters: { host: string; port: number }[] = [];
  if (seeds) {
    const nodes = String(await first.call('CLUSTER', 'NODES'));
    for (const line of nodes.split('\n')) {
      const [, address, flags] = line.split(' ');
      if (!flags?.includes('master') || flags.includes('fail')) continue;
      const [host, port] = address.split('@')[0].split(':');
      masters.push({ host: host || seeds[0].host, port: Number(port) });
    }
    first.disconnect();
  }
  for (const target of seeds ? masters : [url]) {
    const node = typeof target === 'string' ? first : await open(target);
    if (!node) continue;
    try {
      const where = typeof target === 'string' ? url : `${target.host}:${target.port}`;
      const version = /redis_version:(\d+)\.(\d+)/.exec(await node.info('server'));
      const waitAof = version ? Number(version[1]) > 7 || (Number(version[1]) === 7 && Number(version[2]) >= 2) : false;
      if (!/aof_enabled:1/.test(await node.info('persistence'))) return `INGEST_DURABILITY=fsync needs the append-only file: Redis at ${where} runs with appendonly no`;
      if (waitAof) continue;
      const fsync = (await node.config('GET', 'appendfsync').catch(() => [])) as string[];
      if (fsync[1] !== 'always') {
        return `INGEST_DURABILITY=fsync on Redis before 7.2 (no WAITAOF) needs appendfsync always: Redis at ${where} has appendfsync ${fsync[1] ?? 'unknown (CONFIG GET refused)'}`;
      }
    } finally {
      node.disconnect();
    }
  }
  return undefined;
}

/** Stops the process with one line when REDIS_URL names the wrong kind of Redis (see redisTargetProblem). */
export async function exitOnBadRedisTarget(url: string, durability: 'ack' | 'replica' | 'fsync' = 'ack'): Promise<void> {
  const problem = (await redisTargetProblem(url)) ?? (await durabilityProblem(url, durability));
  if (!problem) return;
  console.error(problem);
  process.exit(2);
}

/** The nodes to SCAN: every master of a cluster, or the one node. */
function scanTargets(redis: Redis): Standalone[] {
  return redis instanceof Cluster ? redis.nodes('master') : [redis];
}

/**
 * GET of many keys, in order. On one node one MGET; on a cluster one MGET per hash slot (a
 * multi-key command must stay in one slot), sent together.
 */
export async function getMany(redis: Redis, keys: string[]): Promise<(string | null)[]> {
  if (keys.length === 0) return [];
  if (!(redis instanceof Cluster)) return redis.mget(...keys);
  const bySlot = new Map<number, number[]>();
  keys.forEach((key, i) => {
    const slot = keySlot(key);
    const list = bySlot.get(slot);
    if (list) list.push(i);
    else bySlot.set(slot, [i]);
  });
  const values: (string | null)[] = new Array(keys.length).fill(null);
  await Promise.all(
    [...bySlot.values()].map(async (indexes) => {
      const got = await redis.mget(...indexes.map((i) => keys[i]));
      indexes.forEach((keyIndex, j) => {
        values[keyIndex] = got[j];
      });
    }),
  );
  return values;
}

/**
 * Builds a pipeline of commands on keys of one hash slot (one node on a cluster), runs it, and
 * throws the first command's error, if any.
 */
export async function runPipeline(redis: Redis, build: (pipeline: ChainableCommander) => void): Promise<void> {
  const pipeline = redis.pipeline();
  build(pipeline);
  const failed = (await pipeline.exec())?.find(([err]) => err)?.[0];
  if (failed) throw failed;
}

/** Items grouped by their key's hash slot on a cluster (one group on one node): what one pipeline or multi-key command may carry. */
function bySlot<T>(redis: Redis, items: readonly T[], keyOf: (item: T) => string): T[][] {
  const groups = new Map<number, T[]>();
  for (const item of items) {
    const slot = redis instanceof Cluster ? keySlot(keyOf(item)) : 0;
    const list = groups.get(slot);
    if (list) list.push(item);
    else groups.set(slot, [item]);
  }
  return [...groups.values()];
}

/** SET with a TTL of many keys (a cache: a failed SET is not an error): one pipeline on one node, one per hash slot on a cluster. */
export async function setManyWithTtl(redis: Redis, entries: readonly { key: string; value: string; ttlSeconds: number }[]): Promise<void> {
  await Promise.all(
    bySlot(redis, entries, (entry) => entry.key).map(async (group) => {
      const pipeline = redis.pipeline();
      for (const { key, value, ttlSeconds } of group) pipeline.set(key, value, 'EX', ttlSeconds);
      await pipeline.exec();
    }),
  );
}

/** The commands `add` puts in for each key: one pipeline on one node, one per hash slot on a cluster; throws the first error. */
export async function runPipelinePerKey(redis: Redis, keys: readonly string[], add: (pipeline: ChainableCommander, key: string) => void): Promise<void> {
  await Promise.all(
    bySlot(redis, keys, (key) => key).map((group) =>
      runPipeline(redis, (pipeline) => {
        for (const key of group) add(pipeline, key);
      }),
    ),
  );
}

/** EXPIRE of many keys with one TTL (runPipelinePerKey). */
export async function expireMany(redis: Redis, keys: readonly string[], ttlSeconds: number): Promise<void> {
  await runPipelinePerKey(redis, keys, (pipeline, key) => pipeline.expire(key, ttlSeconds));
}

/** DEL of many keys (one command on one node, one per hash slot on a cluster). */
export async function deleteMany(redis: Redis, keys: string[]): Promise<void> {
  await Promise.all(bySlot(redis, keys, (key) => key).map((group) => redis.unlink(...group)));
}

/** The Redis Cluster hash slot of a key: CRC16 (XMODEM) of its hash tag, or of the whole key, mod 16384. */
export function keySlot(key: string): number {
  let crc = 0;
  for (const byte of Buffer.from(hashTag(key) ?? key)) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

/** The keys matching a pattern, a SCAN batch at a time (never KEYS, which blocks Redis). */
export async function* scanKeys(redis: Redis, pattern: string): AsyncGenerator<string[]> {
  for (const node of scanTargets(redis)) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (keys.length) yield keys;
    } while (cursor !== '0');
  }
}

/** Deletes every key under a prefix (a test's or a benchmark's scratch keys), by SCAN and UNLINK. */
export async function deleteKeysWithPrefix(redis: Redis, prefix: string): Promise<void> {
  for await (const keys of scanKeys(redis, `${prefix}*`)) await deleteMany(redis, keys);
}

/**
 * The connection to the node that holds a key: the one node, or the master of its slot on a
 * cluster (the connection the cluster client routes that slot's commands through, so a WAIT sent
 * on it covers them). Undefined when no master is known for the slot (the slot map is refreshed).
 */
export function masterFor(redis: Redis, key: string): Standalone | undefined {
  if (!(redis instanceof Cluster)) return redis;
  const owner = redis.slots[keySlot(key)]?.[0];
  const node = owner ? redis.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === owner) : undefined;
  if (!node) redis.refreshSlotsCache();
  return node;
}
