/**
 * The whole flow, every stage a real process against real Redis, PostgreSQL and ClickHouse:
 * 20,000 events, 5% of them repeated event ids, sent over HTTP while stage workers are killed
 * with SIGKILL and restarted. After the drain every sink must agree with the ledger, and the
 * ledger with a total computed here, independently of the rating engine, to the nano-unit.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../pipeline/logger.js';
import { STREAMS } from '../../store/streams.js';
import { partitionedKey, deadLetterKey } from '../../pipeline/keys.js';
import { supervise, type Supervisor } from '../../pipeline/supervisor.js';
import { seededRandom as random } from '../../ops/demo-traffic.js';
import { pipelineProcesses } from '../../ops/start.js';
import { seedTenant, type SeededTenant } from '../../ops/seed.js';
import { STAGES } from '../../stages/registry.js';
import { reconcile } from '../../store/reconcile.js';
import { isolated, type Isolated } from '../support/isolated.js';
import { pipelineDrained } from '../support/pipeline.js';

const DISTINCT = 19_000;
const REPEATS = 1_000;
const BATCH = 100;
const KILLS = 4;

// Prices in nano-units, written out by hand: the oracle does not use the rating engine.
const TOOL_NANO: Record<string, bigint> = {
  transform_schema: 100_000_000n,
  read_database: 50_000_000n,
  validate_credentials: 1_000_000n,
  '*': 2_000_000n,
};
const INPUT_TOKEN_NANO = 1_000n;
const OUTPUT_TOKEN_NANO = 2_000n;
const TRANSFORM_MULTIPLIER_TENTHS = 15n; // 1.5x on transform_schema's tokens
const BUCKETS: [maxMs: number, nano: bigint][] = [
  [1_000, 1_000_000n],
  [30_000, 10_000_000n],
  [Number.POSITIVE_INFINITY, 100_000_000n],
];
const PLAN = {
  tool_invocations: { transform_schema: '0.10', read_database: '0.05', validate_credentials: '0.001', '*': '0.002' },
  token_multipliers: { input_tokens: '0.000001', output_tokens: '0.000002' },
  tool_multipliers: { transform_schema: '1.5' },
  duration_buckets: [
    { max_seconds: 1, rate: '0.001' },
    { max_seconds: 30, rate: '0.01' },
    { max_seconds: null, rate: '0.1' },
  ],
};
// COGS oracle: tools, tokens by model, compute per millisecond.
const COGS_TOOL_NANO: Record<string, bigint> = { transform_schema: 20_000_000n, read_database: 10_000_000n, '*': 500_000n };
const COGS_MODELS: Record<string, [bigint, bigint]> = { 'claude-sonnet': [3_000n, 15_000n], '*': [500n, 1_500n] };
const COGS_PER_MS_NANO = 100n;
const COST_MODEL = {
  tools: { transform_schema: '0.02', read_database: '0.01' },
  default_tool: '0.0005',
  models: { 'claude-sonnet': { input_tokens: '0.000003', output_tokens: '0.000015' } },
  default_model: { input_tokens: '0.0000005', output_tokens: '0.0000015' },
  compute_per_ms: '0.0000001',
};

interface SentEvent {
  body: Record<string, unknown>;
  customerId: string;
  scope: { agentId?: string; appId?: string; teamId: string };
  usage: boolean;
  cost: bigint;
  cogs: bigint;
}

function expectedCost(tool: string, input: number, output: number, durationMs: number): bigint {
  const call = TOOL_NANO[tool] ?? TOOL_NANO['*'];
  let tokens = BigInt(input) * INPUT_TOKEN_NANO + BigInt(output) * OUTPUT_TOKEN_NANO;
  if (tool === 'transform_schema') tokens = (tokens * TRANSFORM_MULTIPLIER_TENTHS) / 10n;
  const bucket = BUCKETS.find(([maxMs]) => durationMs <= maxMs)![1];
  return call + tokens + bucket;
}

function expectedCogs(tool: string, model: string | undefined, input: number, output: number, durationMs: number): bigint {
  const [inRate, outRate] = COGS_MODELS[model ?? '*'] ?? COGS_MODELS['*'];
  return (COGS_TOOL_NANO[tool] ?? COGS_TOOL_NANO['*']) + BigInt(input) * inRate + BigInt(output) * outRate + BigInt(durationMs) * COGS_PER_MS_NANO;
}

function generate(tenant: SeededTenant, now: number): SentEvent[] {
  const rand = random(20261126);
  const pick = <T>(list: T[]) => list[Math.floor(rand() * list.length)];
  const tools = ['transform_schema', 'read_database', 'validate_credentials', 'execute_transform', 'search_docs'];
  const toolWeights = [0.35, 0.25, 0.2, 0.15, 0.05];
  const skewedTool = () => {
    let r = rand();
    for (let i = 0; i < tools.length; i++) if ((r -= toolWeights[i]) < 0) return tools[i];
    return tools[0];
  };
  const actors = tenant.customers.flatMap((customer) =>
    customer.teams.flatMap((team) => [
      ...team.agents.map((agent) => ({ customerId: customer.id, teamId: team.id, agent, app: undefined })),
      ...team.apps.map((app) => ({ customerId: customer.id, teamId: team.id, agent: undefined, app })),
    ]),
  );
  const events: SentEvent[] = [];
  const openSessions = new Map<string, { id: string; calls: number }>();
  for (let i = 0; i < DISTINCT; i++) {
    const actor = pick(actors);
    // Within the last five minutes: no session may expire (one hour idle) while the test runs.
    const recorded = new Date(now - Math.floor(rand() * 300_000)).toISOString();
    const actorKey = actor.agent?.id ?? actor.app!.id;
    let session = openSessions.get(actorKey);
    if (!session) openSessions.set(actorKey, (session = { id: `sess_${i}_${actorKey}`, calls: 0 }));
    // About one event in 25 closes its actor's session.
    if (actor.agent && session.calls > 0 && rand() < 0.04) {
      events.push({
        body: {
          event_id: `e2e_${i}`,
          event_type: rand() < 0.8 ? 'session.completed' : 'session.failed',
          api_key: actor.agent.apiKey,
          session_id: session.id,
          recorded_timestamp: recorded,
        },
        customerId: actor.customerId,
        scope: { agentId: actor.agent.id, teamId: actor.teamId },
        usage: false,
        cost: 0n,
        cogs: 0n,
      });
      openSessions.delete(actorKey);
      continue;
    }
    session.calls++;
    const tool = skewedTool();
    const input = Math.floor(rand() * 5_000);
    const output = Math.floor(rand() * 800);
    const roll = rand();
    const duration = roll < 0.6 ? Math.floor(rand() * 1_000) : roll < 0.95 ? 1_001 + Math.floor(rand() * 28_999) : 30_001 + Math.floor(rand() * 60_000);
    const model = rand() < 0.5 ? 'claude-sonnet' : undefined;
    const status = rand() < 0.05 ? 'FAILED' : 'SUCCESS';
    const body: Record<string, unknown> = {
      event_id: `e2e_${i}`,
      session_id: session.id,
      tool_name: tool,
      input_tokens: input,
      output_tokens: output,
      execution_duration_ms: duration,
      execution_status: status,
      recorded_timestamp: recorded,
      ...(model ? { model } : {}),
    };
    if (actor.agent) {
      body.event_type = rand() < 0.7 ? 'mcp.tool_invoked' : 'agent.tool_invoked';
      if (rand() < 0.3) body.client_id = actor.agent.clientId;
      else body.api_key = actor.agent.apiKey;
    } else {
      body.event_type = 'api.request';
      body.api_key = actor.app!.apiKey;
    }
    events.push({
      body,
      customerId: actor.customerId,
      scope: { agentId: actor.agent?.id, appId: actor.app?.id, teamId: actor.teamId },
      usage: true,
      cost: expectedCost(tool, input, output, duration),
      cogs: expectedCogs(tool, model, input, output, duration),
    });
  }
  return events;
}

let world: Isolated;
let tenant: SeededTenant;
let supervisor: Supervisor;
let baseUrl: string;
const log = createLogger('e2e', process.env.TEST_LOG_LEVEL ?? 'silent');

beforeAll(async () => {
  world = await isolated('e2e', { clickhouse: true });
  tenant = await seedTenant(world.sql, {
    name: 'e2e',
    pricing: PLAN,
    costModel: COST_MODEL,
    customers: 5,
    teamsPerCustomer: 2,
    agentsPerTeam: 3,
    appsPerTeam: 1,
    caps: [
      { scope: 'agent', period: 'day', limitNano: 20_000_000_000n },
      { scope: 'team', period: 'month', limitNano: 500_000_000_000n, action: 'alert' },
      { scope: 'customer', period: 'day', limitNano: 10_000_000_000_000n },
    ],
  });
  // Below the ephemeral range (32768+), where a client socket of any process could hold the port.
  const port = 20_000 + Math.floor(Math.random() * 12_000);
  baseUrl = `http://127.0.0.1:${port}`;
  const specs = pipelineProcesses({
      metricsBasePort: port + 1,
      env: {
        ...world.env,
        HTTP_PORT: String(port),
        BLOCK_MS: '500',
        CLAIM_IDLE_MS: '5000',
        CLAIM_INTERVAL_MS: '1000',
        TRIM_INTERVAL_MS: '1000',
        LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'error',
      },
    });
  // The default layout of this machine (grouped on a small one): the kills below hit whole processes.
  supervisor = supervise(specs, log);
  await waitFor(async () => (await fetch(`${baseUrl}/readyz`).catch(() => undefined))?.ok === true, 60_000);
  await waitFor(async () => {
    const ready = await Promise.all(
      specs
        .filter((spec) => spec.env?.METRICS_PORT)
        .map((spec) => fetch(`http://127.0.0.1:${spec.env!.METRICS_PORT}/readyz`).then((r) => r.ok).catch(() => false)),
    );
    return ready.every(Boolean);
  }, 60_000);
}, 180_000);

afterAll(async () => {
  await supervisor?.stop();
  await world?.cleanup();
}, 60_000);

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function post(events: Record<string, unknown>[]): Promise<{ accepted: number; duplicates: unknown[]; rejected: unknown[] }> {
  for (;;) {
    const response = await fetch(`${baseUrl}/v1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(events),
    });
    if (response.status === 202) return (await response.json()) as never;
    if (response.status === 429 || response.status === 503) {
      await new Promise((r) => setTimeout(r, 200 * Number(response.headers.get('retry-after') ?? 1)));
      continue;
    }
    throw new Error(`ingest answered ${response.status}: ${await response.text()}`);
  }
}

/** True when every group of every stream has nothing undelivered and nothing pending. */
const drained = () => pipelineDrained(world.redis, world.config.REDIS_PREFIX);

describe('the pipeline end to end', () => {
  it('bills 20,000 events with 5% repeats exactly once through worker crashes, and every sink agrees with the ledger', async () => {
    const now = Date.now();
    const distinct = generate(tenant, now);
    const rand = random(7);
    // 5% of the sends repeat an event id already sent (an SDK retrying after a lost reply).
    const sends: Record<string, unknown>[] = [];
    for (let i = 0; i < distinct.length; i++) {
      sends.push(distinct[i].body);
      if (i > 0 && i % Math.floor(DISTINCT / REPEATS) === 0 && sends.length - DISTINCT < REPEATS) {
        sends.push(distinct[Math.floor(rand() * i)].body);
      }
    }
    while (sends.length < DISTINCT + REPEATS) sends.push(distinct[Math.floor(rand() * DISTINCT)].body);
    expect(sends.length).toBe(20_000);

    let accepted = 0;
    let reportedDuplicates = 0;
    let kills = 0;
    const killEvery = Math.floor(sends.length / (KILLS + 1));
    const killed: string[] = [];
    for (let i = 0; i < sends.length; i += BATCH) {
      const reply = await post(sends.slice(i, i + BATCH));
      expect(reply.rejected).toEqual([]);
      accepted += reply.accepted;
      reportedDuplicates += reply.duplicates.length;
      if (i > 0 && Math.floor(i / killEvery) > kills && kills < KILLS) {
        // SIGKILL a stage worker mid-run (never the HTTP server); the supervisor restarts it.
        const workers = [...supervisor.children().entries()].filter(([name]) => name !== 'api');
        const [name, child] = workers[(kills * 3 + 1) % workers.length];
        child.kill('SIGKILL');
        killed.push(name);
        kills++;
      }
    }
    expect(kills).toBeGreaterThanOrEqual(3);
    expect(accepted + reportedDuplicates).toBe(20_000);

    await waitFor(async () => {
      const [{ count }] = await world.sql`SELECT count(*)::int AS count FROM usage_ledger`;
      return count === DISTINCT && (await drained());
    }, 180_000);
    // Let the last batches of the four ledger consumers commit, then drain once more.
    await new Promise((r) => setTimeout(r, 1_500));
    await waitFor(drained, 60_000);

    const { sql, redis, config } = world;
    const expectedTotal = distinct.reduce((sum, e) => sum + e.cost, 0n);

    // The ledger: one row per distinct event, the exact total, duplicates counted.
    const [ledger] = await sql`SELECT count(*)::int AS rows, sum(cost_nano)::text AS total FROM usage_ledger`;
    expect(ledger.rows).toBe(DISTINCT);
    expect(BigInt(ledger.total)).toBe(expectedTotal);
    const [{ dupes }] = await sql`SELECT count(*)::int AS dupes FROM ledger_duplicates`;
    expect(dupes + reportedDuplicates).toBe(REPEATS);
    const perEvent = await sql`SELECT event_id, cost_nano FROM usage_ledger`;
    const costOf = new Map(distinct.map((e) => [e.body.event_id as string, e.cost]));
    expect(perEvent.filter((row) => BigInt(row.cost_nano) !== costOf.get(row.event_id))).toEqual([]);

    // Sessions: counters equal the ledger's per session.
    const sessionMismatches = await sql`
      WITH l AS (
        SELECT session_id, count(*) FILTER (WHERE event_type NOT LIKE 'session.%') AS calls,
               count(*) FILTER (WHERE event_type NOT LIKE 'session.%' AND execution_status <> 'SUCCESS') AS errors,
               sum(cost_nano) AS cost, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens
        FROM usage_ledger WHERE session_id IS NOT NULL GROUP BY session_id)
      SELECT l.session_id, l.calls, s.tool_calls, l.cost, s.cost_nano
      FROM l FULL JOIN mcp_sessions s ON s.session_id = l.session_id AND s.tenant_id = ${tenant.tenantId}
      WHERE s.session_id IS NULL OR l.session_id IS NULL OR l.calls <> s.tool_calls OR l.cost <> s.cost_nano
         OR l.errors <> s.errors OR l.input_tokens <> s.input_tokens OR l.output_tokens <> s.output_tokens`;
    expect(sessionMismatches).toEqual([]);
    const [{ ended }] = await sql`SELECT count(*)::int AS ended FROM mcp_sessions WHERE status IN ('COMPLETED', 'FAILED')`;
    expect(ended).toBe(distinct.filter((e) => !e.usage).length);

    // Spend caps: every Redis running total equals the ledger's sum for its scope and period.
    for (const cap of tenant.caps) {
      const column = cap.scopeKind === 'agent' ? sql`agent_id` : cap.scopeKind === 'team' ? sql`team_id` : sql`customer_id`;
      const periodOf = cap.period === 'day' ? sql`to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')` : sql`to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM')`;
      const sums = await sql`
        SELECT ${periodOf} AS period_key, sum(cost_nano)::text AS total FROM usage_ledger
        WHERE ${column} = ${cap.scopeId} AND cost_nano > 0 GROUP BY 1`;
      expect(sums.length).toBeGreaterThan(0);
      for (const { period_key, total } of sums) {
        const key = partitionedKey(config.REDIS_PREFIX, `cap:${tenant.tenantId}:${cap.id}:${period_key}`, 0);
        expect({ cap: cap.id, period_key, total: await redis.get(key) }).toEqual({ cap: cap.id, period_key, total });
      }
    }

    // COGS: every billable call (session control events have neither price nor cost) summed once per dimension, the same price, the provider cost computed here.
    for (const dimension of ['tool', 'agent', 'customer']) {
      const [sums] = await sql`SELECT sum(events)::int AS rows, sum(price_nano)::text AS price, sum(cogs_nano)::text AS cogs FROM cogs_rollup WHERE dimension = ${dimension}`;
      expect({ dimension, ...sums }).toEqual({ dimension, rows: distinct.filter((e) => e.usage).length, price: expectedTotal.toString(), cogs: distinct.reduce((sum, e) => sum + e.cogs, 0n).toString() });
    }
    const [cogs] = await sql`SELECT sum(events)::int AS rows, sum(price_nano)::text AS price, sum(cogs_nano)::text AS cogs,
                                    sum(price_nano - cogs_nano)::text AS margin FROM cogs_rollup WHERE dimension = 'customer'`;
    const expectedCogsTotal = distinct.reduce((sum, e) => sum + e.cogs, 0n);
    expect(cogs.rows).toBe(distinct.filter((e) => e.usage).length);
    expect(BigInt(cogs.price)).toBe(expectedTotal);
    expect(BigInt(cogs.cogs)).toBe(expectedCogsTotal);
    expect(BigInt(cogs.margin)).toBe(expectedTotal - expectedCogsTotal);

    // ClickHouse: the same count and total, read through the replacing engine's FINAL, once
    // analytics-dispatch has flushed its batch.
    const analytics = async () => {
      const result = await world.clickhouse!.query({
        query: `SELECT count() AS rows, toString(sum(cost_nano)) AS total FROM ${world.env.CLICKHOUSE_DATABASE}.invocations FINAL`,
        format: 'JSONEachRow',
      });
      const [row] = (await result.json()) as { rows: string; total: string }[];
      return { rows: Number(row.rows), total: BigInt(row.total) };
    };
    await waitFor(async () => (await analytics()).rows >= DISTINCT, 60_000);
    expect(await analytics()).toEqual({ rows: DISTINCT, total: expectedTotal });

    // npm run reconcile: invocations and every rollup agree with the ledger (and COGS with the sums of cogs_rollup), per tenant and day.
    const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);
    const reconciled = await reconcile(sql, world.clickhouse!, { from: day(now - 86_400_000), to: day(Date.now()) });
    expect(reconciled.compared).toBeGreaterThan(0);
    expect(reconciled.differences).toEqual([]);

    // Invoices: per subscription, the period aggregates hold the ledger's cost and calls.
    const invoiceMismatches = await sql`
      WITH l AS (
        SELECT subscription_id, period_start, count(*) AS events, sum(cost_nano) AS cost,
               count(*) FILTER (WHERE event_type NOT LIKE 'session.%') AS calls
        FROM usage_ledger GROUP BY 1, 2)
      SELECT l.*, p.events AS p_events, p.cost_nano AS p_cost, p.calls AS p_calls
      FROM l FULL JOIN invoice_period_calls p ON p.subscription_id = l.subscription_id AND p.period_start = l.period_start
      WHERE p.subscription_id IS NULL OR l.subscription_id IS NULL OR l.events <> p.events OR l.cost <> p.cost_nano OR l.calls <> p.calls`;
    expect(invoiceMismatches).toEqual([]);
    const toolMismatches = await sql`
      WITH l AS (SELECT subscription_id, period_start, priced_tool, count(*) AS calls, sum(input_tokens) AS input_tokens
                 FROM usage_ledger WHERE event_type NOT LIKE 'session.%' GROUP BY 1, 2, 3)
      SELECT l.*, u.counters FROM l FULL JOIN invoice_usage u
        ON u.subscription_id = l.subscription_id AND u.period_start = l.period_start AND u.kind = 'tool' AND u.key = l.priced_tool
      WHERE (u.kind IS NULL OR u.kind = 'tool')
        AND (u.key IS NULL OR l.priced_tool IS NULL OR (u.counters ->> 'calls')::numeric <> l.calls
             OR (u.counters ->> 'input_tokens')::numeric <> l.input_tokens)`;
    expect(toolMismatches).toEqual([]);
    // The draft invoice of a customer: its usage subtotal is the ledger's total for that customer, exactly.
    const customer = tenant.customers[0];
    const invoice = (await (
      await fetch(`${baseUrl}/v1/customers/${customer.id}/invoices/current?at=${new Date(now).toISOString()}`, {
        headers: { authorization: `Bearer ${tenant.ingestToken}` },
      })
    ).json()) as { subtotal_nano: string };
    const customerTotal = distinct.filter((e) => e.customerId === customer.id).reduce((sum, e) => sum + e.cost, 0n);
    expect(BigInt(invoice.subtotal_nano)).toBe(customerTotal);

    // Nothing left behind: no dead letters, no rejected events.
    for (const stage of STAGES) expect({ stage: stage.name, dead: await redis.xlen(deadLetterKey(config.REDIS_PREFIX, stage.name, 0)) }).toEqual({ stage: stage.name, dead: 0 });
    expect(await redis.xlen(partitionedKey(config.REDIS_PREFIX, STREAMS.rejected, 0))).toBe(0);
    log.info({ killed }, 'workers killed during the run');
  }, 600_000);
});
