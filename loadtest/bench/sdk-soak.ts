/**
 * The SDK through API restarts: N events tracked as fast as the client takes them while the
 * HTTP server process is killed (SIGKILL, mid-request) and restarted by the supervisor, then
 * the ledger checked id by id and to the nano-unit against a total computed here. An event sent
 * again because its answer was lost is counted in ledger_duplicates, not billed twice.
 *
 *   npm run bench:sdk-soak                       # 100,000 events, 3 restarts, in a scratch world
 *   npm run bench:sdk-soak -- --events 20000 --kills 2
 *
 * The test (test/e2e/sdk-mcp.test.ts) runs the same with 5,000 events and one kill.
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AgentMeter, type AgentMeterError, type MeterEvent } from '@agentmeter/sdk';
import { seededRandom } from '../../ops/demo-traffic.js';
import { seedTenant, type SeededTenant } from '../../ops/seed.js';
import type { Sql } from '../../pipeline/postgres.js';
import { startPipeline, waitFor, type RunningPipeline } from '../../test/support/pipeline.js';
import { createScratchWorld } from './world.js';

/** Prices in nano-units written out by hand: the check does not use the rating engine. */
export const SOAK_PLAN = {
  tool_invocations: { search_docs: '0.002', read_database: '0.004', transform_schema: '0.05', '*': '0.001' },
  token_multipliers: { input_tokens: '0.000001', output_tokens: '0.000002' },
  duration_buckets: [{ max_seconds: null, rate: '0' }],
};
const TOOL_NANO: Record<string, bigint> = { search_docs: 2_000_000n, read_database: 4_000_000n, transform_schema: 50_000_000n, call_llm: 1_000_000n };
const TOOLS = Object.keys(TOOL_NANO);

export interface SoakResult {
  events: number;
  kills: number;
  seconds: number;
  trackedPerSecond: number;
  retries: number;
  requests: number;
  failed: number;
  dropped: number;
  ledgerRows: number;
  missing: number;
  extra: number;
  /** Events the API took twice (an answer lost in a restart), recognized by the ledger and not billed. */
  resentRecognized: number;
  ledgerTotalNano: bigint;
  expectedTotalNano: bigint;
  exact: boolean;
  errors: string[];
}

export async function seedSoakTenant(sql: Sql): Promise<SeededTenant> {
  return seedTenant(sql, { name: 'sdk-soak', pricing: SOAK_PLAN, customers: 4, teamsPerCustomer: 1, agentsPerTeam: 5 });
}

export async function runSdkSoak(options: {
  sql: Sql;
  pipeline: RunningPipeline;
  tenant: SeededTenant;
  events: number;
  kills: number;
  progress?: (line: string) => void;
}): Promise<SoakResult> {
  const { sql, pipeline, tenant } = options;
  const agents = tenant.customers.flatMap((c) => c.teams.flatMap((t) => t.agents));
  const errors: string[] = [];
  const meter = new AgentMeter({
    baseUrl: pipeline.baseUrl,
    ingestToken: tenant.ingestToken,
    batchSize: 500,
    maxConcurrentRequests: 4,
    maxBufferedEvents: 20_000,
    whenFull: 'block',
    flushIntervalMs: 200,
    flushOnExit: false,
    retry: { initialDelayMs: 100, maxDelayMs: 2_000, maxElapsedMs: 300_000 },
    onError: (err: AgentMeterError) => errors.push(`${err.code}: ${err.message}`),
  });
  const random = seededRandom(15);
  const sent = new Set<string>();
  let expectedTotal = 0n;
  const killAt = new Set(Array.from({ length: options.kills }, (_, k) => Math.floor((options.events * (k + 1)) / (options.kills + 1))));
  let kills = 0;
  const started = Date.now();
  for (let i = 0; i < options.events; i++) {
    const tool = TOOLS[Math.floor(random() * TOOLS.length)];
    const input = Math.floor(random() * 4_000);
    const output = Math.floor(random() * 600);
    const agent = agents[i % agents.length];
    const event: MeterEvent = {
      event_type: 'mcp.tool_invoked',
      api_key: agent.apiKey,
      session_id: `soak_${i % 97}`,
      tool_name: tool,
      input_tokens: input,
      output_tokens: output,
      execution_duration_ms: Math.floor(random() * 2_000),
    };
    sent.add(await meter.track(event));
    expectedTotal += TOOL_NANO[tool] + BigInt(input) * 1_000n + BigInt(output) * 2_000n;
    if (killAt.has(i)) {
      // Mid-batch: requests are in flight all the time at this pace.
      pipeline.killApi('SIGKILL');
      kills++;
      options.progress?.(`killed the API process at event ${i} (requests so far ${meter.stats().requests})`);
    }
  }
  await meter.flush();
  const seconds = (Date.now() - started) / 1000;
  const stats = meter.stats();
  options.progress?.(`tracked ${options.events} in ${seconds.toFixed(1)} s; retries ${stats.retries}, requests ${stats.requests}, failed ${stats.failed}`);
  await meter.close();

  const countRows = async () => (await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM usage_ledger WHERE tenant_id = ${tenant.tenantId}`)[0].n;
  await waitFor(async () => (await countRows()) >= options.events && (await pipeline.drained()), 300_000, 'the ledger holding every event');
  const rows = await sql<{ event_id: string }[]>`SELECT event_id FROM usage_ledger WHERE tenant_id = ${tenant.tenantId}`;
  const ledgerIds = new Set(rows.map((r) => r.event_id));
  let missing = 0;
  for (const id of sent) if (!ledgerIds.has(id)) missing++;
  const extra = rows.filter((r) => !sent.has(r.event_id)).length;
  const [{ total }] = await sql<{ total: string }[]>`SELECT coalesce(sum(cost_nano), 0)::text AS total FROM usage_ledger WHERE tenant_id = ${tenant.tenantId}`;
  const [{ resent }] = await sql<{ resent: number }[]>`SELECT count(*)::int AS resent FROM ledger_duplicates WHERE tenant_id = ${tenant.tenantId}`;
  const ledgerTotal = BigInt(total);
  return {
    events: options.events,
    kills,
    seconds,
    trackedPerSecond: Math.round(options.events / seconds),
    retries: stats.retries,
    requests: stats.requests,
    failed: stats.failed,
    dropped: stats.dropped,
    ledgerRows: rows.length,
    missing,
    extra,
    resentRecognized: resent,
    ledgerTotalNano: ledgerTotal,
    expectedTotalNano: expectedTotal,
    exact: missing === 0 && extra === 0 && rows.length === options.events && ledgerTotal === expectedTotal && stats.failed === 0,
    errors,
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({ options: { events: { type: 'string', default: '100000' }, kills: { type: 'string', default: '3' } } });
  const world = await createScratchWorld({ LOG_LEVEL: 'error' });
  let pipeline: RunningPipeline | undefined;
  let exit = 1;
  try {
    const tenant = await seedSoakTenant(world.sql);
    console.log(`sdk-soak: scratch world ${world.dbName}; starting the pipeline`);
    pipeline = await startPipeline(world, { LOG_LEVEL: 'error' });
    const result = await runSdkSoak({ sql: world.sql, pipeline, tenant, events: Number(values.events), kills: Number(values.kills), progress: (line) => console.log(`sdk-soak: ${line}`) });
    console.log(JSON.stringify({ ...result, ledgerTotalNano: String(result.ledgerTotalNano), expectedTotalNano: String(result.expectedTotalNano), errors: result.errors.slice(0, 5) }, null, 2));
    console.log(
      `sdk-soak: ${result.events} events, ${result.kills} API kills, ${result.seconds.toFixed(1)} s (${result.trackedPerSecond}/s tracked); ` +
        `ledger ${result.ledgerRows} rows, missing ${result.missing}, extra ${result.extra}, total ${result.ledgerTotalNano === result.expectedTotalNano ? 'exact' : 'WRONG'}; ` +
        `${result.resentRecognized} re-sent events recognized as duplicates; ${result.retries} retries: ${result.exact ? 'EXACT' : 'NOT EXACT'}`,
    );
    exit = result.exact ? 0 : 1;
  } finally {
    await pipeline?.stop();
    await world.cleanup();
  }
  process.exit(exit);
}
