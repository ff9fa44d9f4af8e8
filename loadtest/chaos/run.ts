// The chaos run: the whole pipeline on this machine, driven at a steady rate while faults are
// injected on a schedule, then every figure checked against the ledger.
//   npm run chaos                      full run (~4 min of load, ~6 min in all)
//   npm run chaos -- --short           the CI version (~50 s of load, ~2 min in all)
//   npm run chaos -- --duration 120 --rate 300
//   CHAOS_KEEP_FAILED=1 npm run chaos -- --short   a failed run leaves its scratch database to inspect
//   CHAOS_LOG_LEVEL=warn npm run chaos -- --short   the processes' warnings (retries, outages) on stdout
//
// Faults: a Redis server of its own (redis-server, AOF) killed with SIGKILL and started again;
// PostgreSQL and ClickHouse cut off (connections reset, or blackholed) through TCP proxies the run
// starts; stage workers killed with SIGKILL (the supervisor restarts them) and frozen with
// SIGSTOP/SIGCONT. The client retries what was refused (429/503, a reset connection) with the same
// event ids, and re-sends ~1% of the events it had accepted, as an SDK would.
// It prints what was accepted, ledgered, missing and duplicated, every aggregate against the
// ledger, and ClickHouse against the ledger once the export has caught up; exit 0 only when all
// of them agree.
import { createClient } from '@clickhouse/client';
import { reportRedisErrors } from '../../pipeline/redis.js';
import { createLogger } from '../../pipeline/logger.js';
import { supervise, type Supervisor } from '../../pipeline/supervisor.js';
import { seededRandom } from '../../ops/demo-traffic.js';
import { seedTenant, type SeededTenant } from '../../ops/seed.js';
import { pipelineProcesses } from '../../ops/start.js';
import { TcpProxy } from '../../test/support/tcp-proxy.js';
import { freePort, freePortRange, pipelineDrained as drained, waitHttp } from '../../test/support/pipeline.js';
import { createScratchWorld, type ScratchWorld } from '../bench/world.js';
import { ScratchRedis } from './redis-server.js';
import { clickHouseTotals, verify, type Verdict } from './verify.js';

interface Options {
  durationS: number;
  rate: number;
  short: boolean;
}

function parseOptions(argv: string[]): Options {
  const short = argv.includes('--short');
  const value = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? Number(argv[i + 1]) : undefined;
  };
  const options = { short, durationS: value('--duration') ?? (short ? 50 : 240), rate: value('--rate') ?? (short ? 100 : 200) };
  if (!(options.durationS >= 30) || !(options.rate > 0)) {
    console.error('usage: npm run chaos [-- --short] [--duration seconds (>= 30)] [--rate events/s]');
    process.exit(2);
  }
  return options;
}

const PLAN = {
  tool_invocations: { transform_schema: '0.10', read_database: '0.05', '*': '0.002' },
  token_multipliers: { input_tokens: '0.000001', output_tokens: '0.000002' },
  duration_buckets: [
    { max_seconds: 1, rate: '0.001' },
    { max_seconds: null, rate: '0.01' },
  ],
};
const COST_MODEL = { default_tool: '0.0005', default_model: { input_tokens: '0.0000005', output_tokens: '0.0000015' }, compute_per_ms: '0.0000001' };

const say = (message: string) => console.log(`chaos: ${message}`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The fault schedule, as fractions of the load's duration; the lengths scale with it too. */
function schedule(durationS: number) {
  const at = (fraction: number) => Math.round(durationS * fraction * 1000);
  const lasting = (fraction: number, min: number) => Math.max(min, Math.round(durationS * fraction)) * 1000;
  return [
    { at: at(0.08), fault: 'kill', target: 'price#0' },
    { at: at(0.15), fault: 'stop', target: 'ledger-write#0', ms: lasting(0.07, 5) },
    { at: at(0.3), fault: 'redis', ms: lasting(0.02, 2) },
    { at: at(0.42), fault: 'postgres', mode: 'reset', ms: lasting(0.08, 8) },
    { at: at(0.56), fault: 'clickhouse', ms: lasting(0.25, 12) },
    { at: at(0.6), fault: 'kill', target: 'ledger-write#1' },
    { at: at(0.66), fault: 'kill', target: 'invoice-rollup#0' },
    { at: at(0.72), fault: 'stop', target: 'cap-check#0', ms: lasting(0.04, 3) },
    { at: at(0.78), fault: 'postgres', mode: 'blackhole', ms: lasting(0.04, 4) },
    { at: at(0.86), fault: 'redis', ms: lasting(0.01, 1) },
    { at: at(0.92), fault: 'kill', target: 'key-resolve#0' },
  ] as { at: number; fault: 'kill' | 'stop' | 'redis' | 'postgres' | 'clickhouse'; target?: string; mode?: 'reset' | 'blackhole'; ms?: number }[];
}

interface Load {
  accepted: Set<string>;
  sent: number;
  resends: number;
  refusals: Map<string, number>;
  stop(): Promise<void>;
}

/** Lanes of a client: each sends a batch of events, and the same batch again until it is answered 202. */
function startLoad(baseUrl: string, tenant: SeededTenant, rate: number): Load {
  const rand = seededRandom(9_2026);
  const actors = tenant.customers.flatMap((c) => c.teams.flatMap((t) => [...t.agents.map((a) => ({ key: a.apiKey, agent: true })), ...t.apps.map((a) => ({ key: a.apiKey, agent: false }))]));
  const tools = ['transform_schema', 'read_database', 'search_docs', 'validate'];
  const bodies: Record<string, unknown>[] = [];
  const load: Load = { accepted: new Set(), sent: 0, resends: 0, refusals: new Map(), stop: async () => {} };
  let sequence = 0;
  let stopping = false;
  const nextBatch = (size: number) => {
    const batch: Record<string, unknown>[] = [];
    for (let i = 0; i < size; i++) {
      if (bodies.length > 100 && rand() < 0.01) {
        // An SDK re-sending an event it had sent before (a lost reply): billed once.
        batch.push(bodies[Math.floor(rand() * bodies.length)]);
        load.resends++;
        continue;
      }
      const actor = actors[Math.floor(rand() * actors.length)];
      const n = sequence++;
      const session = `sess_${Math.floor(n / 40)}_${actors.indexOf(actor)}`;
      const body: Record<string, unknown> =
        actor.agent && n % 37 === 0
          ? { event_id: `chaos_${n}`, event_type: 'session.completed', api_key: actor.key, session_id: session, recorded_timestamp: new Date().toISOString() }
          : {
              event_id: `chaos_${n}`,
              event_type: actor.agent ? 'mcp.tool_invoked' : 'api.request',
              api_key: actor.key,
              session_id: session,
              tool_name: tools[Math.floor(rand() * tools.length)],
              input_tokens: Math.floor(rand() * 5000),
              output_tokens: Math.floor(rand() * 800),
              execution_duration_ms: Math.floor(rand() * 3000),
              recorded_timestamp: new Date().toISOString(),
            };
      bodies.push(body);
      batch.push(body);
    }
    return batch;
  };
  const refused = (why: string) => load.refusals.set(why, (load.refusals.get(why) ?? 0) + 1);
  const lane = async (batchSize: number, intervalMs: number) => {
    while (!stopping) {
      const started = Date.now();
      const batch = nextBatch(batchSize);
      for (;;) {
        let status: number | string;
        let retryAfterMs = 250;
        try {
          const response = await fetch(`${baseUrl}/v1/events`, {
            method: 'POST',
            headers: { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' },
            body: JSON.stringify(batch),
            signal: AbortSignal.timeout(10_000),
          });
          status = response.status;
          const text = await response.text();
          if (status === 202) {
            const reply = JSON.parse(text) as { rejected: { index: number }[] };
            if (reply.rejected.length) throw new Error(`ingest refused chaos events: ${text.slice(0, 300)}`);
            for (const body of batch) load.accepted.add(body.event_id as string);
            load.sent += batch.length;
            break;
          }
          retryAfterMs = Math.max(250, Number(response.headers.get('retry-after') ?? 1) * 250);
        } catch (err) {
          if (String(err).includes('ingest refused')) throw err;
          status = (err as Error).name === 'TimeoutError' ? 'timeout' : 'network';
        }
        refused(String(status));
        await sleep(retryAfterMs);
      }
      await sleep(Math.max(0, intervalMs - (Date.now() - started)));
    }
  };
  const LANES = 4;
  const batchSize = 20;
  const intervalMs = (1000 * batchSize * LANES) / rate;
  const lanes = Array.from({ length: LANES }, () => lane(batchSize, intervalMs));
  load.stop = async () => {
    stopping = true;
    await Promise.all(lanes);
  };
  return load;
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    for (const step of cleanups.reverse()) await step().catch((err) => console.error(`chaos: cleanup: ${(err as Error).message}`));
  };
  let interrupted = false;
  process.on('SIGINT', () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    say('interrupted: cleaning up (Ctrl-C again to force)');
    void cleanup().then(() => process.exit(130));
  });

  try {
    const redisServer = new ScratchRedis(await freePort());
    await redisServer.start();
    cleanups.push(() => redisServer.stop());
    const world: ScratchWorld = await createScratchWorld({ REDIS_URL: redisServer.url }, 'chaos');
    let passed = false;
    cleanups.push(() => {
      if (passed || process.env.CHAOS_KEEP_FAILED !== '1') return world.cleanup();
      say(`kept the scratch database ${world.dbName} (PostgreSQL and ClickHouse) to inspect; drop it when done`);
      return Promise.resolve();
    });
    reportRedisErrors(world.redis, 'chaos-monitor'); // quiet while the run kills its Redis
    const pgProxy = await TcpProxy.start({ port: Number(new URL(world.config.DATABASE_URL).port || 5432) });
    const chProxy = await TcpProxy.start({ port: Number(new URL(world.config.CLICKHOUSE_URL).port || 8123) });
    cleanups.push(() => pgProxy.close(), () => chProxy.close());
    say(`scratch world ${world.dbName}: redis-server :${redisServer.port} (AOF), PostgreSQL via :${pgProxy.port}, ClickHouse via :${chProxy.port}`);

    const tenant = await seedTenant(world.sql, {
      name: 'chaos',
      pricing: PLAN,
      costModel: COST_MODEL,
      customers: 4,
      teamsPerCustomer: 2,
      agentsPerTeam: 3,
      appsPerTeam: 1,
      caps: [
        { scope: 'agent', period: 'day', limitNano: 10n ** 15n, action: 'alert' },
        { scope: 'customer', period: 'month', limitNano: 10n ** 16n, action: 'alert' },
      ],
    });

    const httpPort = await freePort();
    // One process per stage, so each fault hits one stage (two ledger-write workers: one can claim from the other).
    const layout = 'per-stage' as const;
    const workers = { 'ledger-write': 2 };
    const count = pipelineProcesses({ layout, workers }).length;
    const metricsBasePort = await freePortRange(count);
    const pgUrl = new URL(world.config.DATABASE_URL);
    pgUrl.port = String(pgProxy.port);
    const env = {
      ...world.env,
      REDIS_URL: redisServer.url,
      DATABASE_URL: pgUrl.toString(),
      CLICKHOUSE_URL: `http://${chProxy.url}`,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: String(httpPort),
      LOG_LEVEL: process.env.CHAOS_LOG_LEVEL ?? 'fatal',
      BLOCK_MS: '500',
      CLAIM_IDLE_MS: '10000',
      CLAIM_INTERVAL_MS: '2000',
      TRIM_INTERVAL_MS: '2000',
      ANALYTICS_FLUSH_MS: '500',
    };
    const specs = pipelineProcesses({ layout, workers, metricsBasePort, env });
    const supervisor: Supervisor = supervise(specs, createLogger('chaos-supervisor', 'fatal'), 20_000);
    cleanups.push(() => supervisor.stop());
    const baseUrl = `http://127.0.0.1:${httpPort}`;
    await waitHttp(`${baseUrl}/readyz`, 120_000, 'the API');
    for (const spec of specs) if (spec.env?.METRICS_PORT) await waitHttp(`http://127.0.0.1:${spec.env.METRICS_PORT}/readyz`, 120_000, spec.name);
    say(`pipeline up (${specs.map((s) => s.name).join(', ')}); load ${options.rate} events/s for ${options.durationS} s with faults`);

    const load = startLoad(baseUrl, tenant, options.rate);
    const started = Date.now();
    const faults: string[] = [];
    const running: Promise<void>[] = [];
    const note = (text: string) => {
      const line = `${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s  ${text}`;
      faults.push(line);
      say(line);
    };
    for (const step of schedule(options.durationS)) {
      await sleep(Math.max(0, step.at - (Date.now() - started)));
      const child = step.target ? supervisor.children().get(step.target) : undefined;
      if (step.fault === 'kill') {
        child?.kill('SIGKILL');
        note(`SIGKILL ${step.target} (pid ${child?.pid}); the supervisor restarts it`);
      } else if (step.fault === 'stop' && child) {
        child.kill('SIGSTOP');
        note(`SIGSTOP ${step.target} for ${step.ms! / 1000} s`);
        running.push(sleep(step.ms!).then(() => void child.kill('SIGCONT')));
      } else if (step.fault === 'redis') {
        await redisServer.kill();
        note(`Redis killed with SIGKILL; back in ${step.ms! / 1000} s from its AOF`);
        running.push(sleep(step.ms!).then(() => redisServer.start()));
      } else if (step.fault === 'postgres') {
        pgProxy.cut(step.mode);
        note(`PostgreSQL cut (${step.mode}) for ${step.ms! / 1000} s`);
        running.push(sleep(step.ms!).then(() => pgProxy.restore()));
      } else if (step.fault === 'clickhouse') {
        chProxy.cut('reset');
        note(`ClickHouse cut for ${step.ms! / 1000} s`);
        running.push(sleep(step.ms!).then(() => chProxy.restore()));
      }
    }
    await sleep(Math.max(0, options.durationS * 1000 - (Date.now() - started)));
    await Promise.all(running);
    await load.stop();
    say(`load over: ${load.accepted.size} distinct events accepted (${load.resends} re-sent ids); refusals retried: ${JSON.stringify(Object.fromEntries(load.refusals))}`);

    // Drain: every group caught up, then the ClickHouse export.
    const drainStarted = Date.now();
    const ledgerRows = async () => (await world.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM usage_ledger`)[0].n;
    while (!(await drained(world.redis, world.config.REDIS_PREFIX).catch(() => false))) {
      if (Date.now() - drainStarted > 300_000) throw new Error('the pipeline did not drain within 300 s');
      await sleep(500);
    }
    const clickhouse = createClient({ url: world.config.CLICKHOUSE_URL, database: world.dbName, username: world.config.CLICKHOUSE_USER, password: world.config.CLICKHOUSE_PASSWORD });
    cleanups.push(() => clickhouse.close());
    while ((await clickHouseTotals(clickhouse, tenant.tenantId)).rows < (await ledgerRows()) || !(await drained(world.redis, world.config.REDIS_PREFIX))) {
      if (Date.now() - drainStarted > 300_000) break;
      await sleep(500);
    }
    const caughtUpS = (Date.now() - drainStarted) / 1000;
    await sleep(1_500); // the last batches of the ledger's consumers commit
    const verdict = await verify(world.sql, world.redis, world.config.REDIS_PREFIX, clickhouse, tenant, load.accepted);
    const code = report(verdict, faults, caughtUpS);
    passed = code === 0;
    return code;
  } finally {
    await cleanup();
  }
}

function report(v: Verdict, faults: string[], caughtUpS: number): number {
  const n = (x: number) => x.toLocaleString('en');
  console.log('');
  say('faults injected:');
  for (const line of faults) console.log(`  ${line}`);
  say(`accepted ${n(v.accepted)} distinct events | ledgered ${n(v.ledgered)} | missing ${v.missing} | extra ${v.extra} | rejected ${v.rejected} | dead letters ${v.deadLetters}`);
  say(`re-sent ids recognized as duplicates: ${n(v.duplicatesRecognized)}`);
  const duplicated = v.sinks.reduce((sum, s) => sum + s.over, 0);
  const short = v.sinks.reduce((sum, s) => sum + s.short, 0);
  say(`duplicated (billed twice in any aggregate): ${duplicated}`);
  for (const sink of v.sinks) say(`  ${sink.over === 0 && sink.short === 0 ? 'ok ' : 'BAD'} ${sink.name}: ${sink.detail}`);
  say(`ClickHouse vs ledger after catch-up (${caughtUpS.toFixed(1)} s after the load): ${n(v.clickhouse.rows)} rows, cost ${v.clickhouse.cost} nano vs ledger ${v.ledgerCost}`);
  if (v.missingSamples.length) say(`missing, e.g.: ${v.missingSamples.join(', ')}`);
  const pass = v.missing === 0 && v.extra === 0 && v.rejected === 0 && v.deadLetters === 0 && duplicated === 0 && short === 0 && v.ledgered === v.accepted;
  say(pass ? 'PASS: nothing lost, nothing billed twice, every aggregate = ledger, ClickHouse = ledger' : 'FAIL');
  return pass ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`chaos: ${(err as Error).stack ?? err}`);
    process.exit(1);
  },
);
