import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatNano } from '../domain/money.js';
import { seedTenant, type SeededTenant } from '../ops/seed.js';
import { insertJsonRows } from '../store/clickhouse.js';
import { newId } from '../store/credentials.js';
import { projectToPeriodEnd } from '../store/usage-reads.js';
import { billingPeriod } from '../store/subscriptions.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { startInProcessPipeline, type InProcessPipeline } from '../test/support/in-process-pipeline.js';
import { sendEvents } from '../test/support/traffic.js';

/**
 * The usage read routes against the whole pipeline in process: events go in through ingest and
 * every stage, then the routes read the ledger (PostgreSQL) and invocations (ClickHouse 18.16).
 */

const PRICING = {
  tool_invocations: { analyze_schema: 0.1, read_query: 0.001, '*': 0.002 },
  token_multipliers: { input_tokens: 0.000001, output_tokens: 0.000002, by_model: { 'claude-opus-4': { input_tokens: 0.000015, output_tokens: 0.000075 } } },
  tool_multipliers: { analyze_schema: 2 },
  mcp_servers: { mcp_db: { tool_invocations: { analyze_schema: 0.25, '*': 0.003 } } },
  duration_buckets: [
    { max_seconds: 60, rate: 0.01 },
    { max_seconds: 3600, rate: 0.5 },
  ],
  error_rate_penalties: { threshold: 0.05, multiplier: 1.5 },
};
const COMMITTED = { billing_mode: 'COMMITTED', commitment: { committed_amount: 100, committed_price: 10 }, tool_invocations: { '*': 0.01 } };

let world: Isolated;
let pipeline: InProcessPipeline;
let acme: SeededTenant;
let enterprise: SeededTenant;
let other: SeededTenant;
let allocatedAgent: string;

/** Recorded a minute ago, but never before this period began (so every event is in the current period). */
const recordedAt = () => new Date(Math.max(Date.now() - 60_000, billingPeriod(Date.now()).start + 1000)).toISOString();

function event(tenant: SeededTenant, customer: number, agent: number, fields: Record<string, unknown>): Record<string, unknown> {
  return {
    event_id: newId('evt'),
    event_type: 'mcp.tool_invoked',
    api_key: tenant.customers[customer].teams[0].agents[agent].apiKey,
    execution_status: 'SUCCESS',
    execution_duration_ms: 500,
    recorded_timestamp: recordedAt(),
    ...fields,
  };
}

const EXPLAINED = newId('evt');

beforeAll(async () => {
  world = await isolated('usage-api', { clickhouse: true });
  const shape = { customers: 2, teamsPerCustomer: 1, agentsPerTeam: 2, subscriptionsFrom: new Date(Date.UTC(2020, 0, 1)) };
  acme = await seedTenant(world.sql, { name: 'acme', pricing: PRICING, ...shape, caps: [{ scope: 'agent', period: 'month', limitNano: 1_000_000_000_000n }] });
  enterprise = await seedTenant(world.sql, { name: 'enterprise', pricing: COMMITTED, ...shape });
  other = await seedTenant(world.sql, { name: 'other', pricing: { tool_invocations: { '*': 1 } }, ...shape });
  // The MCP server's tool registry: "analyze" is an alias of analyze_schema on mcp_db.
  await world.sql`INSERT INTO mcp_servers (id, tenant_id, name) VALUES ('mcp_db', ${acme.tenantId}, 'DatabaseToolkit')`;
  await world.sql`INSERT INTO mcp_tools (id, tenant_id, mcp_server_id, name, aliases) VALUES (${newId('tool')}, ${acme.tenantId}, 'mcp_db', 'analyze_schema', ${['analyze']})`;
  // Enterprise: an agent of the first customer gets its own subscription on the same plan with an allocation of 60 calls.
  allocatedAgent = enterprise.customers[0].teams[0].agents[1].id;
  await world.sql`INSERT INTO subscriptions (id, tenant_id, customer_id, agent_id, rate_plan_version_id, effective_from, allocation)
                  VALUES (${newId('sub')}, ${enterprise.tenantId}, ${enterprise.customers[0].id}, ${allocatedAgent}, ${enterprise.ratePlanVersionId},
                          '2020-01-01', ${world.sql.json({ [allocatedAgent]: 60 })})`;

  pipeline = await startInProcessPipeline(world);
  const acmeEvents = [
    event(acme, 0, 0, {
      event_id: EXPLAINED,
      session_id: 'sess_a',
      tool_name: 'analyze',
      mcp_server_id: 'mcp_db',
      model: 'claude-opus-4',
      input_tokens: 1000,
      output_tokens: 100,
      execution_duration_ms: 2 * 3_600_000,
    }),
    ...Array.from({ length: 5 }, () => event(acme, 0, 1, { session_id: 'sess_b', tool_name: 'read_query', input_tokens: 10 })),
    ...Array.from({ length: 3 }, () => event(acme, 1, 0, { session_id: 'sess_c', tool_name: 'analyze_schema', execution_status: 'FAILED' })),
  ];
  const enterpriseEvents = [
    ...Array.from({ length: 30 }, () => event(enterprise, 0, 0, { tool_name: 'run_task' })),
    ...Array.from({ length: 12 }, () => event(enterprise, 0, 1, { tool_name: 'run_task' })),
  ];
  await sendEvents(pipeline.baseUrl, acme.ingestToken, acmeEvents);
  await sendEvents(pipeline.baseUrl, enterprise.ingestToken, enterpriseEvents);
  await sendEvents(pipeline.baseUrl, other.ingestToken, [event(other, 0, 0, { tool_name: 'read_query' })]);
  await pipeline.drain();
  // analytics-dispatch flushes to ClickHouse on its own clock: wait until it holds every event.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const result = await world.clickhouse!.query({ query: 'SELECT count() AS n FROM invocations FINAL', format: 'JSONEachRow' });
    const [{ n }] = await result.json<{ n: string }>();
    if (Number(n) === acmeEvents.length + enterpriseEvents.length + 1) break;
    if (Date.now() > deadline) throw new Error(`ClickHouse holds ${n} events`);
    await new Promise((r) => setTimeout(r, 300));
  }
}, 180_000);

afterAll(async () => {
  await pipeline?.stop();
  await world?.cleanup();
});

async function get(path: string, token = acme.adminToken): Promise<{ status: number; body: any }> {
  const response = await fetch(`${pipeline.baseUrl}${path}`, { headers: { authorization: `Bearer ${token}` } });
  return { status: response.status, body: await response.json() };
}

describe('GET /v1/usage/events/{event_id}/charge', () => {
  it('explains each dimension with its plan rule, through the MCP tool alias, per-model and per-server prices', async () => {
    const { status, body } = await get(`/v1/usage/events/${EXPLAINED}/charge`);
    expect(status).toBe(200);
    expect(body.ledger).toMatchObject({
      tool_name: 'analyze',
      priced_tool: 'mcp_db analyze_schema',
      model: 'claude-opus-4',
      mcp_server_id: 'mcp_db',
      input_tokens: 1000,
      duration_ms: 7_200_000,
      cost: '0.795',
      cost_nano: '795000000',
      currency: 'USD',
    });
    expect(body.plan).toMatchObject({ rate_plan_id: acme.ratePlanId, rate_plan_version_id: acme.ratePlanVersionId, version: 1, pricing: { mcp_servers: { mcp_db: {} } } });
    expect(body.dimensions.map((d: Record<string, unknown>) => [d.dimension, d.rule, d.quantity, d.unit_price, d.amount, d.matches_plan])).toEqual([
      ['tool', 'calls x $.mcp_servers.mcp_db.tool_invocations.analyze_schema', '1', '0.25', '0.25', true],
      // 1,000 x 0.000015 x 2 (the tool multiplier of analyze_schema)
      ['input_tokens', "input_tokens x $.token_multipliers.by_model['claude-opus-4'].input_tokens x $.tool_multipliers.analyze_schema", '1000', '0.00003', '0.03', true],
      ['output_tokens', "output_tokens x $.token_multipliers.by_model['claude-opus-4'].output_tokens x $.tool_multipliers.analyze_schema", '100', '0.00015', '0.015', true],
      // two hours, past the bounded last bucket: priced at it
      ['duration', 'calls x $.duration_buckets[1].rate', '1', '0.5', '0.5', true],
    ]);
    expect(body.dimensions[3].description).toBe('Call of 7200 s, over 60 s (bucket up to 3600 s, longer calls too): 1 x 0.5');
    expect(body.total).toBe('0.795');
    expect(body.period_rules).toEqual([expect.objectContaining({ rule: '$.error_rate_penalties' })]);
    const cap = acme.caps.find((c) => c.scopeId === acme.customers[0].teams[0].agents[0].id)!;
    expect(body.caps).toEqual([
      expect.objectContaining({ cap_id: cap.id, scope_kind: 'agent', period: 'month', period_key: recordedAt().slice(0, 7), limit: '1000', period_spend: '0.795', paused_by_this_event: false }),
    ]);
    expect(body.over_cap).toBe(false);
  });

  it("answers 404 for an unknown event and for another tenant's, 401 with the ingest token", async () => {
    expect((await get('/v1/usage/events/evt_nope/charge')).status).toBe(404);
    const foreign = await get(`/v1/usage/events/${EXPLAINED}/charge`, other.adminToken);
    expect(foreign).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
    expect((await get(`/v1/usage/events/${EXPLAINED}/charge`, acme.ingestToken)).status).toBe(401);
  });
});

describe('GET /v1/usage/summary', () => {
  const range = () => {
    const period = billingPeriod(Date.now());
    return `from=${new Date(period.start).toISOString()}&to=${new Date(period.end).toISOString()}`;
  };

  it('sums the current period from the ledger by agent, with exact costs', async () => {
    const { status, body } = await get('/v1/usage/summary?group_by=agent');
    expect(status).toBe(200);
    expect(body).toMatchObject({ group_by: 'agent', source: 'postgresql', customer_id: null, truncated: false });
    const agents = acme.customers.map((c) => c.teams[0].agents.map((a) => a.id));
    expect(body.rows.map((r: Record<string, unknown>) => [r.key, r.calls, r.errors, r.cost])).toEqual([
      [agents[0][0], 1, 0, '0.795'],
      // 3 x analyze_schema (0.10) + 3 x the first duration bucket (0.01)
      [agents[1][0], 3, 3, '0.33'],
      // 5 x (read_query 0.001 + 10 input tokens 0.00001 + 0.01)
      [agents[0][1], 5, 0, '0.05505'],
    ]);
  });

  it('answers the same figures from ClickHouse for a range, for every grouping', async () => {
    for (const group of ['agent', 'app', 'tool', 'session', 'day']) {
      const ledger = await get(`/v1/usage/summary?group_by=${group}`);
      const analytics = await get(`/v1/usage/summary?group_by=${group}&${range()}`);
      expect(analytics.status, JSON.stringify(analytics.body)).toBe(200);
      expect(analytics.body.source).toBe('clickhouse');
      expect(analytics.body.rows, group).toEqual(ledger.body.rows);
    }
    const sessions = await get(`/v1/usage/summary?group_by=session&${range()}`);
    expect(sessions.body.rows.map((r: Record<string, unknown>) => [r.key, r.calls, r.input_tokens])).toEqual([
      ['sess_a', 1, 1000],
      ['sess_c', 3, 0],
      ['sess_b', 5, 50],
    ]);
    const days = await get('/v1/usage/summary?group_by=day');
    expect(days.body.rows).toEqual([expect.objectContaining({ key: recordedAt().slice(0, 10), events: 9, cost: '1.18005', cost_nano: '1180050000' })]);
  });

  it('narrows to one customer, and only ever shows the caller tenant', async () => {
    const one = await get(`/v1/usage/summary?group_by=tool&customer_id=${acme.customers[1].id}`);
    expect(one.body.rows.map((r: Record<string, unknown>) => [r.key, r.calls])).toEqual([['analyze_schema', 3]]);
    const theirs = await get('/v1/usage/summary?group_by=tool', other.adminToken);
    expect(theirs.body.rows.map((r: Record<string, unknown>) => [r.key, r.cost])).toEqual([['read_query', '1']]);
    expect((await get(`/v1/usage/summary?group_by=tool&customer_id=${acme.customers[1].id}`, other.adminToken)).status).toBe(404);
  });

  it('refuses a bad grouping or range with the path of each problem', async () => {
    const bad = async (query: string) => {
      const { status, body } = await get(`/v1/usage/summary?${query}`);
      expect(status, query).toBe(400);
      expect(body.error.code).toBe('validation_failed');
      return body.error.details.map((d: { path: string }) => d.path);
    };
    expect(await bad('group_by=team')).toEqual(['group_by']);
    expect(await bad('')).toEqual(['group_by']);
    expect(await bad('group_by=day&from=2026-03-01T00:00:00Z')).toEqual(['to']);
    expect(await bad('group_by=day&from=yesterday&to=2026-03-01T00:00:00Z')).toEqual(['from']);
    expect(await bad('group_by=day&from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z')).toEqual(['to']);
    expect(await bad('group_by=day&from=2025-01-01T00:00:00Z&to=2026-03-01T00:00:00Z')).toEqual(['to']);
    expect(await bad('group_by=day&limit=3')).toEqual(['limit']);
    // ClickHouse keeps recorded times to the second, and its DateTime ends in 2106 (on 18.16 a later one wraps around).
    expect(await bad('group_by=day&from=2026-03-10T12:00:00.500Z&to=2026-03-10T12:10:00Z')).toEqual(['from']);
    expect(await bad('group_by=day&from=2163-01-10T00:00:00Z&to=2163-01-11T00:00:00Z')).toEqual(['from', 'to']);
  });

  it('orders a range by the exact cost of each group, however many events make it up', async () => {
    // One call of 1.00 against two of 0.80: the second agent's 1.60 comes first.
    const customer = other.customers[0];
    const [first, second] = customer.teams[0].agents.map((a) => a.id);
    const at = '2026-03-10 12:00:00';
    const row = (agentId: string, costNano: number) => ({
      tenant_id: other.tenantId, event_id: newId('evt'), event_type: 'mcp.tool_invoked', customer_id: customer.id, team_id: customer.teams[0].id,
      agent_id: agentId, app_id: '', credential_id: '', product_id: '', session_id: '', tool_name: 'x', priced_tool: 'x', mcp_server_id: '', model: '',
      execution_status: 'SUCCESS', error_type: '', duration_ms: 1, input_tokens: 0, output_tokens: 0, total_tokens: 0, retry_count: 0, is_parallel: 0,
      cost_nano: costNano, currency: 'USD', over_cap: 0, subscription_id: customer.subscriptionId, rate_plan_id: '', rate_plan_version_id: '',
      rate_plan_version: 1, recorded_at: at, recorded_date: at.slice(0, 10), ingested_at: at, cogs_nano: 0,
    });
    await insertJsonRows(world.clickhouse!, 'invocations', [row(first, 1_000_000_000), row(second, 800_000_000), row(second, 800_000_000)]);
    const { body } = await get('/v1/usage/summary?group_by=agent&from=2026-03-10T00:00:00Z&to=2026-03-11T00:00:00Z', other.adminToken);
    expect(body.rows.map((r: Record<string, unknown>) => [r.key, r.cost])).toEqual([
      [second, '1.6'],
      [first, '1'],
    ]);
  });
});

describe('GET /v1/usage/customers/{id}/commitment', () => {
  it('shows calls against the commitment and each allocation, projected to the period end', async () => {
    const customer = enterprise.customers[0].id;
    const { status, body } = await get(`/v1/usage/customers/${customer}/commitment`, enterprise.adminToken);
    expect(status).toBe(200);
    const period = billingPeriod(Date.parse(body.as_of));
    const projected = (calls: bigint) => projectToPeriodEnd(calls, period, Date.parse(body.as_of)).toString();
    expect(body).toMatchObject({ customer_id: customer, currency: 'USD', period_start: new Date(period.start).toISOString() });
    expect(body.commitments).toEqual([
      expect.objectContaining({
        group: `rate plan ${enterprise.ratePlanId}`,
        committed_calls: '100',
        committed_price: '10',
        overage_rate: '0.01',
        used_calls: '42',
        used_value: '0.42',
        used_percent: '42.00',
        projected_calls: projected(42n),
        allocations: [{ agent_id: allocatedAgent, allocated_calls: '60', used_calls: '12', projected_calls: projected(12n) }],
      }),
    ]);
    // The commitment is billed whole from the first day: 10.00 so far.
    expect(body.invoice_to_date).toBe('10');
    const overage = BigInt(projected(42n)) > 100n ? (BigInt(projected(42n)) - 100n) * 10_000_000n : 0n;
    expect(body.commitments[0].projected_total).toBe(formatNano(10_000_000_000n + overage));
  });

  it('answers 404 for a customer of another tenant, and 400 for a bad time', async () => {
    expect((await get(`/v1/usage/customers/${enterprise.customers[0].id}/commitment`)).status).toBe(404);
    const bad = await get(`/v1/usage/customers/${acme.customers[0].id}/commitment?at=soon`);
    expect(bad.status).toBe(400);
    expect(bad.body.error.details[0].path).toBe('at');
    // A customer without a commitment: its invoice so far, projected, and no commitment.
    const payg = await get(`/v1/usage/customers/${acme.customers[1].id}/commitment`);
    expect(payg.body).toMatchObject({ invoice_to_date: expect.any(String), commitments: [] });
  });
});
