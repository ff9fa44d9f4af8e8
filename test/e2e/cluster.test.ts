/**
 * The pipeline on the local Redis Cluster (3 masters + 3 replicas, ops/redis-cluster.sh, started
 * here if it is not up): PARTITIONS=6, two workers of every stage (two processes of each stage
 * group, each its own consumer), INGEST_DURABILITY=replica. While events arrive over HTTP, stage
 * processes are SIGKILLed and the master holding partition 0's first stream is failed over to
 * its replica (CLUSTER FAILOVER FORCE: the replica takes over without waiting for the master, so
 * whatever the master took and did not replicate is lost). Every event the API answered 202 for
 * must be in the ledger once, the cap counters must equal the ledger's sums, nothing may be left
 * pending or dead-lettered.
 */
import { execFileSync } from 'node:child_process';
import { type Cluster, Redis as Standalone } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerPartitionKey } from '../../domain/flow.js';
import { seededRandom } from '../../ops/demo-traffic.js';
import { seedTenant, type SeededTenant } from '../../ops/seed.js';
import { isStageProcess, pipelineProcesses } from '../../ops/start.js';
import { deadLetterKey, partitionedKey, partitionOf } from '../../pipeline/keys.js';
import { createLogger } from '../../pipeline/logger.js';
import { projectPath } from '../../pipeline/paths.js';
import { keySlot } from '../../pipeline/redis.js';
import { supervise, type Supervisor } from '../../pipeline/supervisor.js';
import { STAGES } from '../../stages/registry.js';
import { STREAMS } from '../../store/streams.js';
import { isolated, type Isolated } from '../support/isolated.js';
import { freePortRange, pipelineDrained, waitFor } from '../support/pipeline.js';

// A cluster of its own (ports 7110-7115): the failover this test forces must not move the
// masters under the other cluster tests, which run at the same time on 7100-7105.
const CLUSTER_BASE_PORT = 7110;
const CLUSTER_URL = `redis+cluster://127.0.0.1:${CLUSTER_BASE_PORT}`;
const PARTITIONS = 6;
const DISTINCT = 6_000;
const REPEATS = 300;
const BATCH = 100;
const PLAN = {
  tool_invocations: { transform_schema: '0.10', read_database: '0.05', '*': '0.002' },
  token_multipliers: { input_tokens: '0.000001', output_tokens: '0.000002' },
};
const TOOLS = ['transform_schema', 'read_database', 'search_docs'];

let world: Isolated;
let tenant: SeededTenant;
let supervisor: Supervisor;
let baseUrl: string;
const log = createLogger('cluster-e2e', process.env.TEST_LOG_LEVEL ?? 'silent');

beforeAll(async () => {
  // Idempotent: starts the six nodes and forms the cluster only when it is not up.
  execFileSync('bash', [projectPath('ops', 'redis-cluster.sh')], {
    stdio: 'ignore',
    env: { ...process.env, CLUSTER_BASE_PORT: String(CLUSTER_BASE_PORT), CLUSTER_DIR: `/tmp/agentmeter-redis-cluster-${CLUSTER_BASE_PORT}` },
  });
  world = await isolated('cluster_e2e', { redisUrl: CLUSTER_URL, clickhouse: true });
  tenant = await seedTenant(world.sql, {
    name: 'cluster',
    pricing: PLAN,
    customers: 12,
    teamsPerCustomer: 1,
    agentsPerTeam: 2,
    caps: [
      { scope: 'agent', period: 'day', limitNano: 5_000_000_000n },
      { scope: 'customer', period: 'month', limitNano: 1_000_000_000_000n, action: 'alert' },
    ],
  });
  const port = await freePortRange(8);
  baseUrl = `http://127.0.0.1:${port}`;
  const env = {
    ...world.env,
    HTTP_PORT: String(port),
    PARTITIONS: String(PARTITIONS),
    INGEST_DURABILITY: 'replica',
    INGEST_DURABILITY_TIMEOUT_MS: '2000',
    BLOCK_MS: '300',
    CLAIM_IDLE_MS: '4000',
    CLAIM_INTERVAL_MS: '1000',
    TRIM_INTERVAL_MS: '1000',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'error',
  };
  // The two stage groups (to the ledger, from the ledger), each in two processes (worker slots 0
  // and 1): two workers of every stage on this 2-core machine, without twenty processes.
  const base = pipelineProcesses({ layout: 'grouped', metricsBasePort: port + 1, env }).filter((spec) => spec.name === 'api' || isStageProcess(spec));
  const second = base.filter(isStageProcess).map((spec, i) => ({
    ...spec,
    name: spec.name.replace('#0', '#1'),
    env: { ...spec.env, WORKER_SLOT: '1', METRICS_PORT: String(port + 4 + i) },
  }));
  const specs = [...base, ...second];
  expect(specs.map((s) => s.name).sort()).toEqual(['api', 'from-ledger#0', 'from-ledger#1', 'to-ledger#0', 'to-ledger#1']);
  supervisor = supervise(specs, log, 10_000);
  const ready = (url: string) => fetch(url).then((r) => r.ok, () => false);
  await waitFor(async () => (await Promise.all([ready(`${baseUrl}/readyz`), ...specs.filter((s) => s.env?.METRICS_PORT).map((s) => ready(`http://127.0.0.1:${s.env!.METRICS_PORT}/readyz`))])).every(Boolean), 120_000, 'the pipeline ready');
}, 180_000);

afterAll(async () => {
  await supervisor?.stop();
  await world?.cleanup();
}, 60_000);

function events(now: number): Record<string, unknown>[] {
  const rand = seededRandom(1010);
  const agents = tenant.customers.flatMap((c) => c.teams.flatMap((t) => t.agents));
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < DISTINCT; i++) {
    const a = Math.floor(rand() * agents.length);
    out.push({
      event_id: `cl_${i}`,
      event_type: 'mcp.tool_invoked',
      api_key: agents[a].apiKey,
      session_id: `sess_${a}_${Math.floor(i / 200)}`,
      tool_name: TOOLS[Math.floor(rand() * TOOLS.length)],
      input_tokens: Math.floor(rand() * 5000),
      output_tokens: Math.floor(rand() * 800),
      execution_status: 'SUCCESS',
      recorded_timestamp: new Date(now - Math.floor(rand() * 300_000)).toISOString(),
    });
  }
  for (let r = 0; r < REPEATS; r++) out.splice(BATCH + r * 19, 0, { ...out[Math.floor(rand() * BATCH)] });
  return out;
}

/** Sends until the API answers 202 (429 and 503, also not_durable, are retried as a client would); counts the refusals. */
async function post(batch: Record<string, unknown>[], refusals: Map<string, number>): Promise<string[]> {
  for (let attempt = 0; attempt < 200; attempt++) {
    let status = 0;
    let code = 'connection';
    try {
      const response = await fetch(`${baseUrl}/v1/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(batch),
        signal: AbortSignal.timeout(20_000),
      });
      status = response.status;
      const body = (await response.json()) as { accepted?: number; error?: { code: string } };
      if (status === 202) return batch.map((e) => e.event_id as string);
      code = `${status} ${body.error?.code ?? ''}`;
      if (status !== 429 && status !== 503) throw new Error(`ingest answered ${status}: ${JSON.stringify(body)}`);
    } catch (err) {
      if (status !== 0 && status !== 429 && status !== 503) throw err;
    }
    refusals.set(code, (refusals.get(code) ?? 0) + 1);
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error('ingest refused a batch 200 times');
}

/** What is still undelivered or pending, per stream, partition and group (for a failure's message). */
async function streamState(): Promise<string[]> {
  const state: string[] = [];
  const fields = (reply: unknown[]) => Object.fromEntries(reply.flatMap((v, i) => (i % 2 === 0 ? [[v, reply[i + 1]]] : [])));
  for (let p = 0; p < PARTITIONS; p++) {
    for (const stage of STAGES) {
      const key = partitionedKey(world.config.REDIS_PREFIX, stage.input, p);
      const last = fields((await world.redis.xinfo('STREAM', key)) as unknown[])['last-generated-id'];
      for (const group of (await world.redis.xinfo('GROUPS', key)) as unknown[][]) {
        const info = fields(group);
        if (Number(info.pending) || info['last-delivered-id'] !== last) state.push(`${stage.input}{p${p}}/${info.name}: pending ${info.pending}, delivered ${info['last-delivered-id']} of ${last}, lag ${info.lag}`);
      }
    }
  }
  return state;
}

/** Fails over the master that holds partition 0's first stream: its replica takes over at once (FORCE). */
async function failOver(): Promise<{ from: string; to: string }> {
  const cluster = world.redis as Cluster;
  const slot = keySlot(partitionedKey(world.config.REDIS_PREFIX, STREAMS.ingested, 0));
  // Asked of the cluster, not the client's slot cache: a replica that attached after the client
  // connected (a cluster just formed) is not in the cache yet.
  let from = '';
  let to = '';
  await waitFor(
    async () => {
      const ranges = (await cluster.call('CLUSTER', 'SLOTS')) as [number, number, ...[string, number][]][];
      const range = ranges.find(([start, end]) => slot >= start && slot <= end);
      if (!range || range.length < 4) return false;
      from = `${range[2][0]}:${range[2][1]}`;
      to = `${range[3][0]}:${range[3][1]}`;
      return true;
    },
    30_000,
    `a replica of slot ${slot}`,
  );
  const [host, port] = to.split(':');
  const replica = new Standalone({ host, port: Number(port) });
  try {
    await replica.call('CLUSTER', 'FAILOVER', 'FORCE');
    await waitFor(async () => /role:master/.test(await replica.info('replication')), 30_000, `${to} promoted`);
  } finally {
    replica.disconnect();
  }
  return { from, to };
}

describe('the pipeline on a Redis Cluster', () => {
  it('PARTITIONS=6, two workers per stage, SIGKILLs and a master failover under load: every accepted event ledgered once, caps exact, nothing pending', async () => {
    const now = Date.now();
    const sends = events(now);
    const accepted = new Set<string>();
    const refusals = new Map<string, number>();
    const disruptions: string[] = [];
    const at = (share: number) => Math.floor((sends.length * share) / BATCH) * BATCH;
    for (let i = 0; i < sends.length; i += BATCH) {
      // Sent in parallel with the disruption, not after it: the failover happens under load.
      const sending = post(sends.slice(i, i + BATCH), refusals);
      if (i === at(0.25)) {
        supervisor.children().get('to-ledger#1')?.kill('SIGKILL');
        disruptions.push('SIGKILL to-ledger#1');
      }
      if (i === at(0.45)) {
        const { from, to } = await failOver();
        disruptions.push(`failover ${from} -> ${to}`);
      }
      if (i === at(0.65)) {
        supervisor.children().get('from-ledger#0')?.kill('SIGKILL');
        supervisor.children().get('to-ledger#0')?.kill('SIGKILL');
        disruptions.push('SIGKILL from-ledger#0, to-ledger#0');
      }
      for (const id of await sending) accepted.add(id);
    }
    expect(disruptions).toHaveLength(3);
    expect(accepted.size).toBe(DISTINCT);

    const drained = () => pipelineDrained(world.redis, world.config.REDIS_PREFIX, PARTITIONS);
    const ledgerCount = async () => (await world.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM usage_ledger WHERE tenant_id = ${tenant.tenantId}`)[0].n;
    try {
      await waitFor(async () => (await ledgerCount()) >= DISTINCT && (await drained()), 150_000, 'the ledger holding every event and the streams drained');
    } catch (err) {
      console.log(`not drained: ${await ledgerCount()} ledger rows; ${JSON.stringify(await streamState())}; ${disruptions.join('; ')}; refusals ${JSON.stringify(Object.fromEntries(refusals))}`);
      throw err;
    }
    await new Promise((r) => setTimeout(r, 1_000));
    await waitFor(drained, 30_000, 'drained again');

    // Every accepted event exactly once.
    const rows = await world.sql<{ event_id: string }[]>`SELECT event_id FROM usage_ledger WHERE tenant_id = ${tenant.tenantId}`;
    expect(rows.length).toBe(DISTINCT);
    const ledgered = new Set(rows.map((r) => r.event_id));
    expect(ledgered.size).toBe(DISTINCT);
    expect([...accepted].filter((id) => !ledgered.has(id))).toEqual([]);

    // Caps: each running total, in its customer's partition, equals the ledger's sum for its scope and period.
    const customerOf = new Map<string, string>();
    for (const c of tenant.customers) {
      customerOf.set(c.id, c.id);
      for (const t of c.teams) {
        customerOf.set(t.id, c.id);
        for (const a of t.agents) customerOf.set(a.id, c.id);
      }
    }
    let capsChecked = 0;
    for (const cap of tenant.caps) {
      const column = cap.scopeKind === 'agent' ? world.sql`agent_id` : world.sql`customer_id`;
      const periodOf = cap.period === 'day' ? world.sql`to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')` : world.sql`to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM')`;
      const sums = await world.sql<{ period_key: string; total: string }[]>`
        SELECT ${periodOf} AS period_key, sum(cost_nano)::text AS total FROM usage_ledger
        WHERE tenant_id = ${tenant.tenantId} AND ${column} = ${cap.scopeId} AND cost_nano > 0 GROUP BY 1`;
      const partition = partitionOf(customerPartitionKey(tenant.tenantId, customerOf.get(cap.scopeId)!), PARTITIONS);
      for (const { period_key, total } of sums) {
        const key = partitionedKey(world.config.REDIS_PREFIX, `cap:${tenant.tenantId}:${cap.id}:${period_key}`, partition);
        expect({ cap: cap.id, period_key, total: await world.redis.get(key) }).toEqual({ cap: cap.id, period_key, total });
        capsChecked++;
      }
    }
    expect(capsChecked).toBeGreaterThan(0);

    // Nothing left behind in any partition: no dead letters, no rejected events (pending: drained above).
    for (let p = 0; p < PARTITIONS; p++) {
      for (const stage of STAGES) expect({ stage: stage.name, p, dead: await world.redis.xlen(deadLetterKey(world.config.REDIS_PREFIX, stage.name, p)) }).toEqual({ stage: stage.name, p, dead: 0 });
      expect(await world.redis.xlen(partitionedKey(world.config.REDIS_PREFIX, STREAMS.rejected, p))).toBe(0);
    }
    log.info({ disruptions, refusals: Object.fromEntries(refusals) }, 'cluster run');
    console.log(`cluster e2e: ${DISTINCT} events over ${PARTITIONS} partitions; ${disruptions.join('; ')}; refusals retried: ${JSON.stringify(Object.fromEntries(refusals))}`);
  }, 300_000);
});
