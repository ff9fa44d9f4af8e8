import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../pipeline/metrics.js';
import { partitionedKey } from '../pipeline/keys.js';
import { capCounterKey, type SpendCap } from '../store/caps.js';
import type { SeededTenant } from '../ops/seed.js';
import { seedSmall } from '../test/support/billing.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { createApp } from './server.js';

let world: Isolated;
let tenant: SeededTenant;
let app: ReturnType<typeof createApp>['app'];

beforeAll(async () => {
  world = await isolated('spend-routes');
  tenant = await seedSmall(world.sql, { customers: 1, teamsPerCustomer: 1, agentsPerTeam: 2, appsPerTeam: 0 });
  app = createApp({ config: world.config, sql: world.sql, redis: world.redis, log: pino({ level: 'silent' }), metrics: new Metrics('spend-test') }).app;
});
afterAll(async () => {
  await world?.cleanup();
});

let sequence = 0;
async function ledger(agentId: string, recordedAt: Date, tool: string, costNano: bigint, sessionId = 'sess_live') {
  const customer = tenant.customers[0];
  const breakdown = { tool: (costNano - 1000n).toString(), input_tokens: '1000' };
  await world.sql`
    INSERT INTO usage_ledger (tenant_id, event_id, ingest_nonce, event_type, recorded_at, ingested_at, customer_id, team_id, agent_id,
      credential_id, subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version, period_start, session_id, tool_name, priced_tool,
      execution_status, duration_ms, input_tokens, output_tokens, retry_count, cost_nano, cost_breakdown, currency)
    VALUES (${tenant.tenantId}, ${`evt_spend_${++sequence}`}, 'n', 'mcp.tool_invoked', ${recordedAt}, ${recordedAt}, ${customer.id},
      ${customer.teams[0].id}, ${agentId}, 'key', ${customer.subscriptionId}, ${tenant.ratePlanId}, ${tenant.ratePlanVersionId}, 1,
      ${new Date(Date.UTC(recordedAt.getUTCFullYear(), recordedAt.getUTCMonth(), 1))}, ${sessionId}, ${tool}, ${tool}, 'SUCCESS', 10, 1000, 0, 0,
      ${costNano.toString()}, ${world.sql.json(breakdown)}, 'USD')`;
}

describe('GET /v1/spend/{agents,teams,customers}/{id}', () => {
  it('reports spend by dimension and tool, the projection, caps with spent/limit/remaining and live sessions', async () => {
    const customer = tenant.customers[0];
    const agent = customer.teams[0].agents[0];
    const other = customer.teams[0].agents[1];
    const now = Date.now();
    const monthStart = new Date(Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth(), 1));
    // Earlier this month (outside the recent window unless the month is young) and in the last hour.
    const early = new Date(Math.max(monthStart.getTime(), now - 10 * 86_400_000));
    await ledger(agent.id, early, 'transform_schema', 2_000_000_000n);
    // In the first half hour of a month, "minutes ago" would fall in the month before: kept inside this one.
    const minutesAgo = (minutes: number) => new Date(Math.max(monthStart.getTime(), now - minutes * 60_000));
    await ledger(agent.id, minutesAgo(30), 'read_database', 500_000_000n);
    await ledger(agent.id, minutesAgo(20), 'transform_schema', 100_000_000n);
    await ledger(other.id, minutesAgo(20), 'transform_schema', 7_000_000_000n, 'sess_other');
    await world.sql`
      INSERT INTO mcp_sessions (tenant_id, session_id, customer_id, team_id, agent_id, credential_id, status, started_at, last_event_at, tool_calls, cost_nano)
      VALUES (${tenant.tenantId}, 'sess_live', ${customer.id}, ${customer.teams[0].id}, ${agent.id}, 'key', 'ACTIVE', ${new Date(now - 3_600_000)}, ${new Date(now - 60_000)}, 3, 2600000000),
             (${tenant.tenantId}, 'sess_done', ${customer.id}, ${customer.teams[0].id}, ${agent.id}, 'key', 'COMPLETED', ${new Date(now - 3_600_000)}, ${new Date(now - 60_000)}, 1, 5)`;
    const capId = 'cap_spend_route';
    await world.sql`INSERT INTO spend_caps (id, tenant_id, scope_kind, scope_id, period, limit_nano) VALUES (${capId}, ${tenant.tenantId}, 'agent', ${agent.id}, 'month', 10000000000)`;
    const cap = { id: capId, tenantId: tenant.tenantId } as SpendCap;
    await world.redis.set(partitionedKey(world.config.REDIS_PREFIX, capCounterKey(cap, new Date(now).toISOString().slice(0, 7)), 0), '2600000000');

    const res = await app.request(`/v1/spend/agents/${agent.id}`, { headers: { authorization: `Bearer ${tenant.ingestToken}` } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as any;
    expect(body).toMatchObject({ scope_kind: 'agent', scope_id: agent.id, customer_id: customer.id, period_start: monthStart.toISOString() });
    expect(body.spend).toEqual([
      {
        currency: 'USD',
        total: '2.6',
        events: 3,
        by_dimension: { tool: '2.599997', input_tokens: '0.000003' },
        by_tool: [
          { tool: 'transform_schema', amount: '2.1' },
          { tool: 'read_database', amount: '0.5' },
        ],
      },
    ]);
    const [projection] = body.projected;
    // The recent window holds 0.6 (or all 2.6 when the month is younger than the window): the projection is at least the spend so far.
    expect(Number(projection.end_of_period)).toBeGreaterThanOrEqual(2.6);
    expect(['0.6', '2.6']).toContain(projection.recent);
    expect(body.caps).toEqual([
      expect.objectContaining({ cap_id: capId, action: 'pause', period: 'month', limit: '10', spent: '2.6', reserved: '0', remaining: '7.4', paused: false }),
    ]);
    expect(body.active_sessions).toEqual([expect.objectContaining({ session_id: 'sess_live', status: 'ACTIVE', tool_calls: 3, cost: '2.6' })]);

    const team = (await (await app.request(`/v1/spend/teams/${customer.teams[0].id}`, { headers: { authorization: `Bearer ${tenant.ingestToken}` } })).json()) as any;
    expect(team.spend[0]).toMatchObject({ total: '9.6', events: 4 });
    const cust = (await (await app.request(`/v1/spend/customers/${customer.id}`, { headers: { authorization: `Bearer ${tenant.ingestToken}` } })).json()) as any;
    expect(cust.spend[0].total).toBe('9.6');
  });

  it('answers 404 for an id of another tenant or none, and 401 without the ingest token', async () => {
    const other = await seedSmall(world.sql, { customers: 1, teamsPerCustomer: 1, agentsPerTeam: 1, appsPerTeam: 0 });
    const res = await app.request(`/v1/spend/agents/${other.customers[0].teams[0].agents[0].id}`, { headers: { authorization: `Bearer ${tenant.ingestToken}` } });
    expect(res.status).toBe(404);
    expect((await app.request('/v1/spend/customers/cus_none', { headers: { authorization: `Bearer ${tenant.ingestToken}` } })).status).toBe(404);
    expect((await app.request(`/v1/spend/customers/${tenant.customers[0].id}`)).status).toBe(401);
  });
});
