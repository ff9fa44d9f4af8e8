// The console with a month of data: a scratch world whose tenant has 1,000,000 ledger rows over
// the last 30 days (bulk SQL, with their COGS rows, sessions, invoice aggregates, cap totals and
// pauses, and the same rows in ClickHouse through its materialized views), then every console
// page and API timed over HTTP against the real API (createApp). Prints p50/p95/max per endpoint.
//   npm run bench:console                          1,000,000 rows, 100 requests per endpoint
//   npm run bench:console -- --rows 200000 --requests 50 --concurrency 4
//   npm run bench:console -- --smoke               20,000 rows, 10 requests (CI)
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { createApp } from '../../api/server.js';
import { isMain, numberFlag, parseArgs, runCli, UsageError } from '../../ops/cli.js';
import { DEMO_COST_MODEL, DEMO_PLAN, seedTenant, type SeededTenant } from '../../ops/seed.js';
import { renderTable } from '../../ops/table.js';
import { partitionedKey, partitionOf } from '../../pipeline/keys.js';
import { createLogger } from '../../pipeline/logger.js';
import { Metrics } from '../../pipeline/metrics.js';
import { connectRedis } from '../../pipeline/redis.js';
import { capCounterKey } from '../../store/caps.js';
import { pauseKey } from '../../store/pauses.js';
import { customerPartitionKey } from '../../domain/flow.js';
import type { SpendCap } from '../../store/caps.js';
import { ClickHouseLogLevel, createClient } from '@clickhouse/client';
import { connectPostgres } from '../../pipeline/postgres.js';
import { reconcile } from '../../store/reconcile.js';
import { INVOCATION_COLUMNS } from '../../stages/analytics-dispatch/rows.js';
import { createScratchWorld, type ScratchWorld } from './world.js';

const USAGE = `usage: npm run bench:console -- [--rows N] [--requests N] [--concurrency N] [--smoke] [--keep]
  --rows N         ledger rows of the tenant over the last 30 days (default 1000000)
  --requests N     timed requests per endpoint (default 100), after 5 untimed ones
  --concurrency N  requests in flight at once per endpoint (default 1)
  --smoke          20000 rows, 10 requests: checks that the bench works (CI)
  --keep           leave the scratch world and the API running afterwards, to look at the console
                   with a month of data (prints the URL and the admin token; Ctrl-C removes it all)`;

const DAY_MS = 86_400_000;
const SPAN_MS = 30 * DAY_MS;

const step = async <T>(label: string, work: () => Promise<T>): Promise<T> => {
  const started = performance.now();
  process.stderr.write(`[bench:console] ${label} ...`);
  const result = await work();
  process.stderr.write(` ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  return result;
};

/** 1M ledger rows in one INSERT ... SELECT: actors, tools, tokens, durations and statuses drawn from the row number. */
async function generateLedger(world: ScratchWorld, tenant: SeededTenant, rows: number, now: number): Promise<void> {
  const { sql } = world;
  await sql`
    CREATE TEMP TABLE bench_actors AS
    SELECT row_number() OVER (ORDER BY x.credential_id) - 1 AS i, x.*
    FROM (
      SELECT k.id AS credential_id, a.id AS agent_id, NULL::text AS app_id, a.team_id, t.customer_id, a.product_id
      FROM api_keys k JOIN agents a ON a.tenant_id = k.tenant_id AND a.id = k.agent_id JOIN teams t ON t.tenant_id = a.tenant_id AND t.id = a.team_id
      WHERE k.tenant_id = ${tenant.tenantId}
      UNION ALL
      SELECT k.id, NULL, p.id, p.team_id, t.customer_id, p.product_id
      FROM api_keys k JOIN apps p ON p.tenant_id = k.tenant_id AND p.id = k.app_id JOIN teams t ON t.tenant_id = p.tenant_id AND t.id = p.team_id
      WHERE k.tenant_id = ${tenant.tenantId}
    ) x`;
  await sql`CREATE TEMP TABLE bench_subs AS SELECT customer_id, id AS subscription_id FROM subscriptions WHERE tenant_id = ${tenant.tenantId}`;
  const [{ n }] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM bench_actors`;
  await sql`
    INSERT INTO usage_ledger (tenant_id, event_id, ingest_nonce, event_type, recorded_at, ingested_at, customer_id, team_id, agent_id, app_id,
      credential_id, product_id, subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version, period_start, session_id, tool_name,
      priced_tool, mcp_server_id, model, execution_status, duration_ms, input_tokens, output_tokens, retry_count, cost_nano, cost_breakdown, currency)
    SELECT ${tenant.tenantId}, 'b' || g, 'n' || g, e.event_type, e.recorded_at, e.recorded_at + interval '1 second', a.customer_id, a.team_id, a.agent_id, a.app_id,
      a.credential_id, a.product_id, s.subscription_id, ${tenant.ratePlanId}, ${tenant.ratePlanVersionId}, 1,
      date_trunc('month', e.recorded_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
      'bs_' || a.i || '_' || floor(extract(epoch FROM e.recorded_at) / 21600)::bigint,
      e.tool, CASE WHEN e.tool IN ('transform_schema', 'validate_credentials', 'read_database') THEN e.tool ELSE '*' END, NULL,
      CASE WHEN g % 2 = 0 THEN 'claude-sonnet' END, CASE WHEN g % 17 = 0 THEN 'FAILED' ELSE 'SUCCESS' END,
      e.duration_ms, e.input_tokens, e.output_tokens, 0,
      CASE WHEN e.tool IS NULL THEN 0 ELSE
        (CASE e.tool WHEN 'transform_schema' THEN 100000000 WHEN 'read_database' THEN 50000000 WHEN 'validate_credentials' THEN 1000000 ELSE 2000000 END)
        + e.input_tokens * 1000 + e.output_tokens * 2000
        + (CASE WHEN e.duration_ms <= 60000 THEN 10000000 WHEN e.duration_ms <= 300000 THEN 50000000 ELSE 250000000 END) END,
      '{}'::jsonb, 'USD'
    FROM generate_series(1, ${rows}::bigint) g
    CROSS JOIN LATERAL (
      SELECT to_timestamp(${now / 1000}::float8 - (g::float8 * ${SPAN_MS / 1000}::float8 / ${rows}::float8)) AS recorded_at,
             CASE WHEN g % 25 = 0 THEN 'session.completed' ELSE 'mcp.tool_invoked' END AS event_type,
             CASE WHEN g % 25 = 0 THEN NULL
                  ELSE (ARRAY['transform_schema', 'read_database', 'validate_credentials', 'search_docs', 'execute_transform'])[1 + ((g * 31) % 97) % 5] END AS tool,
             CASE WHEN g % 25 = 0 THEN 0 ELSE (g * 13) % 4000 END AS input_tokens,
             CASE WHEN g % 25 = 0 THEN 0 ELSE (g * 17) % 600 END AS output_tokens,
             CASE WHEN g % 25 = 0 THEN 0 WHEN g % 50 = 1 THEN 400000 ELSE (g * 37) % 120000 END AS duration_ms
    ) e
    JOIN bench_actors a ON a.i = (g * 7919) % ${n}
    JOIN bench_subs s ON s.customer_id = a.customer_id`;
}

async function deriveTables(world: ScratchWorld, tenant: SeededTenant, now: number): Promise<void> {
  const { sql } = world;
  const t = tenant.tenantId;
  await sql`
    INSERT INTO cogs_ledger (tenant_id, event_id, event_type, customer_id, team_id, agent_id, app_id, session_id, tool_name, model, recorded_at,
      currency, price_nano, cogs_nano, margin_nano, breakdown, cost_model_id)
    SELECT tenant_id, event_id, event_type, customer_id, team_id, agent_id, app_id, session_id, tool_name, model, recorded_at,
      currency, cost_nano, cost_nano * 3 / 10, cost_nano - cost_nano * 3 / 10, '{}'::jsonb, NULL
    FROM usage_ledger WHERE tenant_id = ${t} AND event_type NOT LIKE 'session.%'`;
  // What the cogs stage keeps in PostgreSQL: hourly sums per tool, agent and customer (as
  // migration 090 derives them from per-event rows). The per-event rows above stay this bench's
  // own source of each event's COGS for the ClickHouse copy; the product reads only the sums.
  await sql`
    INSERT INTO cogs_rollup (tenant_id, dimension, hour, currency, key, with_session, costed, events, price_nano, cogs_nano)
    SELECT c.tenant_id, d.dimension, date_trunc('hour', c.recorded_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', c.currency,
           CASE d.dimension WHEN 'tool' THEN c.tool_name WHEN 'agent' THEN c.agent_id ELSE c.customer_id END,
           c.session_id IS NOT NULL AND c.session_id <> '', c.cost_model_id IS NOT NULL,
           count(*), sum(c.price_nano), sum(c.cogs_nano)
    FROM cogs_ledger c CROSS JOIN (VALUES ('tool'), ('agent'), ('customer')) AS d (dimension)
    WHERE c.tenant_id = ${t}
    GROUP BY 1, 2, 3, 4, 5, 6, 7`;
  await sql`
    INSERT INTO mcp_sessions (tenant_id, session_id, customer_id, team_id, agent_id, app_id, credential_id, status, started_at, last_event_at,
      ended_at, events, tool_calls, input_tokens, output_tokens, duration_ms, errors, cost_nano)
    SELECT tenant_id, session_id, min(customer_id), min(team_id), min(agent_id), min(app_id), min(credential_id),
      CASE WHEN max(recorded_at) > ${new Date(now - 3_600_000)} THEN 'ACTIVE' ELSE 'COMPLETED' END, min(recorded_at), max(recorded_at),
      CASE WHEN max(recorded_at) > ${new Date(now - 3_600_000)} THEN NULL ELSE max(recorded_at) END,
      count(*), count(*) FILTER (WHERE event_type NOT LIKE 'session.%'), sum(input_tokens), sum(output_tokens), sum(duration_ms),
      count(*) FILTER (WHERE execution_status <> 'SUCCESS'), sum(cost_nano)
    FROM usage_ledger WHERE tenant_id = ${t} GROUP BY tenant_id, session_id`;
  // The invoice aggregates of the current period, as invoice-rollup keeps them for this plan: per tool and per duration bucket.
  const periodStart = new Date(Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth(), 1));
  await sql`
    INSERT INTO invoice_usage (tenant_id, subscription_id, period_start, kind, key, counters)
    SELECT tenant_id, subscription_id, period_start, 'tool', priced_tool,
      jsonb_build_object('calls', count(*)::text, 'included_calls', '0', 'input_tokens', sum(input_tokens)::text, 'output_tokens', sum(output_tokens)::text)
    FROM usage_ledger WHERE tenant_id = ${t} AND period_start = ${periodStart} AND event_type NOT LIKE 'session.%'
    GROUP BY tenant_id, subscription_id, period_start, priced_tool
    UNION ALL
    SELECT tenant_id, subscription_id, period_start, 'duration', (CASE WHEN duration_ms <= 60000 THEN 0 WHEN duration_ms <= 300000 THEN 1 ELSE 2 END)::text,
      jsonb_build_object('calls', count(*)::text)
    FROM usage_ledger WHERE tenant_id = ${t} AND period_start = ${periodStart} AND event_type NOT LIKE 'session.%'
    GROUP BY 1, 2, 3, 5`;
  await sql`
    INSERT INTO invoice_period_calls (tenant_id, subscription_id, period_start, calls, cost_nano, events)
    SELECT tenant_id, subscription_id, period_start, count(*) FILTER (WHERE event_type NOT LIKE 'session.%'), sum(cost_nano), count(*)
    FROM usage_ledger WHERE tenant_id = ${t} GROUP BY 1, 2, 3`;
  // Cap totals as cap-check keeps them in Redis, for today and this month; a pause on every fifth capped agent.
  const day = new Date(now).toISOString().slice(0, 10);
  const month = day.slice(0, 7);
  const dayStart = new Date(`${day}T00:00:00Z`);
  const totals = new Map<string, { total: string; customer_id: string }>();
  for (const [kind, column] of [['agent', sql`l.agent_id`], ['team', sql`l.team_id`], ['customer', sql`l.customer_id`]] as const) {
    const rows = await sql<{ id: string; total: string; customer_id: string }[]>`
      SELECT c.id, sum(l.cost_nano)::text AS total, min(l.customer_id) AS customer_id
      FROM spend_caps c JOIN usage_ledger l ON l.tenant_id = c.tenant_id AND ${column} = c.scope_id
      WHERE c.tenant_id = ${t} AND c.scope_kind = ${kind} AND l.recorded_at >= (CASE c.period WHEN 'day' THEN ${dayStart}::timestamptz ELSE ${periodStart}::timestamptz END)
      GROUP BY c.id`;
    for (const row of rows) totals.set(row.id, row);
  }
  for (const [i, cap] of tenant.caps.entries()) {
    const found = totals.get(cap.id);
    if (!found) continue;
    const partition = partitionOf(customerPartitionKey(t, found.customer_id), world.config.PARTITIONS);
    const periodKey = cap.period === 'day' ? day : month;
    await world.redis.set(partitionedKey(world.config.REDIS_PREFIX, capCounterKey({ tenantId: t, id: cap.id } as SpendCap, periodKey), partition), found.total);
    if (cap.scopeKind === 'agent' && i % 5 === 0) {
      await sql`INSERT INTO cap_pauses (tenant_id, cap_id, scope_kind, scope_id, period_key, event_id, limit_nano, paused_at)
                VALUES (${t}, ${cap.id}, 'agent', ${cap.scopeId}, ${periodKey}, 'b1', ${cap.limitNano.toString()}, ${new Date(now - 600_000)})`;
      await world.redis.set(partitionedKey(world.config.REDIS_PREFIX, pauseKey(t, 'agent', cap.scopeId), partition), JSON.stringify({ capId: cap.id }), 'EX', 86_400);
    }
  }
  await sql`ANALYZE`;
}

/** The ledger rows into ClickHouse's invocations (COPY out, TabSeparated in): the materialized views fill the rollups. */
async function copyToClickHouse(world: ScratchWorld, tenant: SeededTenant): Promise<void> {
  // One INSERT streams every row through the materialized views: minutes on a busy machine.
  const clickhouse = createClient({
    url: world.config.CLICKHOUSE_URL,
    database: world.dbName,
    username: world.config.CLICKHOUSE_USER,
    password: world.config.CLICKHOUSE_PASSWORD,
    request_timeout: 900_000,
    // Local, no load balancer in between: the client's warning about progress headers does not apply.
    log: { level: ClickHouseLogLevel.OFF },
  });
  try {
    if (!/^[A-Za-z0-9_]+$/.test(tenant.tenantId)) throw new Error(`unexpected tenant id ${tenant.tenantId}`);
    // A connection of its own for the COPY stream: postgres.js leaves a connection that served
    // COPY TO STDOUT unusable for the next query, so it is closed afterwards.
    const copier = connectPostgres(world.config.DATABASE_URL, { max: 1, name: 'bench-copy' });
    const rows = await copier
      .unsafe(
        `COPY (SELECT l.tenant_id, l.event_id, l.event_type, l.customer_id, l.team_id, coalesce(l.agent_id, ''), coalesce(l.app_id, ''), l.credential_id,
           coalesce(l.product_id, ''), coalesce(l.session_id, ''), coalesce(l.tool_name, ''), coalesce(l.priced_tool, ''), coalesce(l.mcp_server_id, ''),
           coalesce(l.model, ''), l.execution_status, '', l.duration_ms, l.input_tokens, l.output_tokens, l.input_tokens + l.output_tokens, l.retry_count, 0,
           l.cost_nano, coalesce(c.cogs_nano, 0), l.currency, l.over_cap::int, l.subscription_id, l.rate_plan_id, l.rate_plan_version_id, l.rate_plan_version,
           to_char(l.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), to_char(l.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
           to_char(l.ingested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
         FROM usage_ledger l LEFT JOIN cogs_ledger c ON c.tenant_id = l.tenant_id AND c.event_id = l.event_id
         WHERE l.tenant_id = '${tenant.tenantId}') TO STDOUT`,
      )
      .readable();
    await clickhouse.insert({
      table: 'invocations',
      values: rows,
      format: 'TabSeparated',
      columns: [...INVOCATION_COLUMNS],
    });
    await copier.end({ timeout: 1 }).catch(() => {});
    const today = new Date().toISOString().slice(0, 10);
    const { differences, compared } = await reconcile(world.sql, clickhouse, { from: new Date(Date.now() - 31 * DAY_MS).toISOString().slice(0, 10), to: today });
    if (differences.length) throw new Error(`the generated ClickHouse rows differ from the ledger: ${differences.length} differences`);
    process.stderr.write(`[bench:console] reconcile: ${compared} tenant-days, 0 differences\n`);
  } finally {
    await clickhouse.close();
  }
}

interface Timing {
  endpoint: string;
  status: number;
  bytes: number;
  samples: number[];
}

async function time(baseUrl: string, endpoint: string, headers: Record<string, string>, requests: number, concurrency: number): Promise<Timing> {
  const samples: number[] = [];
  let status = 0;
  let bytes = 0;
  const once = async () => {
    const started = performance.now();
    const response = await fetch(`${baseUrl}${endpoint}`, { headers });
    const body = await response.arrayBuffer();
    const ms = performance.now() - started;
    status = response.status;
    bytes = body.byteLength;
    return ms;
  };
  for (let i = 0; i < 5; i++) await once();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < requests) {
        next++;
        samples.push(await once());
      }
    }),
  );
  return { endpoint, status, bytes, samples: samples.sort((a, b) => a - b) };
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['rows', 'requests', 'concurrency'], booleans: ['smoke', 'keep', 'help'] });
  if (args.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  if (args.positional.length) throw new UsageError(`unexpected argument ${args.positional[0]}`);
  const smoke = args.flags.has('smoke');
  const rows = numberFlag(args, 'rows', smoke ? 20_000 : 1_000_000, { min: 1000 });
  const requests = numberFlag(args, 'requests', smoke ? 10 : 100, { min: 1 });
  const concurrency = numberFlag(args, 'concurrency', 1, { min: 1 });

  const world = await createScratchWorld();
  let stop = async () => {};
  const interrupted = () =>
    void stop()
      .catch(() => {})
      .then(() => world.cleanup())
      .then(() => process.exit(130));
  process.once('SIGINT', interrupted);
  try {
    const now = Date.now();
    const tenant = await step('seeding a tenant: 50 customers x 2 teams x 5 agents, 100 apps', () =>
      seedTenant(world.sql, {
        name: 'console bench',
        pricing: DEMO_PLAN,
        costModel: DEMO_COST_MODEL,
        customers: 50,
        teamsPerCustomer: 2,
        agentsPerTeam: 5,
        appsPerTeam: 1,
        caps: [
          { scope: 'agent', period: 'day', limitNano: 50_000_000_000n },
          { scope: 'team', period: 'month', limitNano: 2_000_000_000_000n, action: 'alert' },
          { scope: 'customer', period: 'month', limitNano: 10_000_000_000_000n },
        ],
      }),
    );
    await step(`generating ${rows.toLocaleString('en-US')} ledger rows over 30 days (bulk SQL)`, () => generateLedger(world, tenant, rows, now));
    await step('deriving COGS rows, sessions, invoice aggregates, cap totals and pauses', () => deriveTables(world, tenant, now));
    await step('copying the ledger to ClickHouse (materialized views fill the rollups), reconciling', () => copyToClickHouse(world, tenant));
    const [{ sessions }] = await world.sql`SELECT count(*)::int AS sessions FROM mcp_sessions`;

    const log = createLogger('bench-console', 'warn');
    const sql = connectPostgres(world.config.DATABASE_URL, { max: world.config.PG_POOL_SIZE, name: 'bench-api' });
    const redis = connectRedis(world.config.REDIS_URL, `${world.config.REDIS_PREFIX}bench-api`);
    const { app } = createApp({ config: world.config, sql, redis, log, metrics: new Metrics('api') });
    const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
    });
    stop = async () => {
      await new Promise((resolve) => server.close(resolve));
      await sql.end({ timeout: 5 });
      redis.disconnect();
    };
    const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const headers = { authorization: `Bearer ${tenant.adminToken}` };
    const monthStart = new Date(Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth(), 1)).toISOString();
    const until = new Date(now + 60_000).toISOString();
    const endpoints = [
      '/console',
      '/console?range=30d',
      '/console/fragment?range=24h',
      `/console/customers/${tenant.customers[0].id}`,
      `/console/customers/${tenant.customers[0].id}/fragment`,
      `/console/api/usage?query=spend_by_agent&from=${monthStart}&to=${until}`,
      `/console/api/usage?query=revenue_hourly&from=${new Date(now - 7 * DAY_MS).toISOString()}&to=${until}`,
      `/console/api/usage?query=session_lengths_daily&from=${new Date(now - 30 * DAY_MS).toISOString()}&to=${until}`,
      `/console/api/usage?query=top_tools_by_margin&from=${new Date(now - 30 * DAY_MS).toISOString()}&to=${until}`,
    ];
    const loadBefore = loadavg()[0];
    const timings: Timing[] = [];
    for (const endpoint of endpoints) {
      timings.push(await step(`timing GET ${endpoint.slice(0, 60)} x ${requests}`, () => time(baseUrl, endpoint, headers, requests, concurrency)));
    }
    const all = timings.flatMap((t) => t.samples).sort((a, b) => a - b);
    console.log(
      `\nconsole bench: ${rows.toLocaleString('en-US')} ledger rows over 30 days, ${sessions.toLocaleString('en-US')} sessions, 600 agents and apps; ` +
        `${requests} requests per endpoint, ${concurrency} at a time, after 5 untimed; one API process (PG pool ${world.config.PG_POOL_SIZE}); ` +
        `load average ${loadBefore.toFixed(1)} before the timing, ${loadavg()[0].toFixed(1)} after, on ${cpus().length} cores\n`,
    );
    console.log(
      renderTable(
        ['ENDPOINT', 'STATUS', 'BYTES', 'P50 ms', 'P95 ms', 'MAX ms'],
        [
          ...timings.map((t) => [t.endpoint.replace(/from=[^&]+&to=[^&]+/, 'from=..&to=..'), t.status, t.bytes, quantile(t.samples, 0.5).toFixed(1), quantile(t.samples, 0.95).toFixed(1), t.samples.at(-1)!.toFixed(1)]),
          ['all endpoints', '', '', quantile(all, 0.5).toFixed(1), quantile(all, 0.95).toFixed(1), all.at(-1)!.toFixed(1)],
        ],
        { right: [1, 2, 3, 4, 5] },
      ),
    );
    if (args.flags.has('keep')) {
      console.log(`\nkept: open ${baseUrl}/console and sign in with ${tenant.adminToken}\n  env: ${Object.entries(world.env).map(([k, v]) => `${k}=${v}`).join(' ')}\n(Ctrl-C to stop and remove the scratch world)`);
      await new Promise(() => {});
    }
    const failed = timings.filter((t) => t.status !== 200);
    const p95 = quantile(all, 0.95);
    console.log(`\np95 over every endpoint: ${p95.toFixed(1)} ms (bar: < 200 ms) ${p95 < 200 ? 'met' : 'NOT met'}`);
    return failed.length ? 1 : 0;
  } finally {
    process.off('SIGINT', interrupted);
    await stop();
    await world.cleanup();
  }
}

if (isMain(import.meta.url)) await runCli(USAGE, main);
