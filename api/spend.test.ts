import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
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
afterEach(() => {
  vi.useRealTimers();
});

/** The route reads the clock once (its as_of): fixing Date alone fixes the period and the recent window. */
function clockAt(iso: string): number {
  const at = Date.parse(iso);
  vi.useFakeTimers({ toFake: ['Date'], now: at });
  return at;
}

let sequence = 0;
async function ledger(agentId: string, recordedAt: Date, tool: string, costNano: bigint, { sessionId = 'sess_live', into = tenant } = {}) {
  const customer = into.customers[0];
  const breakdown = { tool: (costNano - 1000n).toString(), input_tokens: '1000' };
  await world.sql`
    INSERT INTO usage_ledger (tenant_id, event_id, ingest_nonce, event_type, recorded_at, ingested_at, customer_id, team_id, agent_id,
      credential_id, subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version, period_start, session_id, tool_name, priced_tool,
      execution_status, duration_ms, input_tokens, output_tokens, retry_count, cost_nano, cost_breakdown, currency)
    VALUES (${into.tenantId}, ${`evt_spend_${++sequence}`}, 'n', 'mcp.tool_invoked', ${recordedAt}, ${recordedAt}, ${customer.id},
      ${customer.teams[0].id}, ${agentId}, 'key', ${customer.subscriptionId}, ${into.ratePlanId}, ${into.ratePlanVersionId}, 1,
      ${new Date(Date.UTC(recordedAt.getUTCFullYear(), recordedAt.getUTCMonth(), 1))}, ${sessionId}, ${tool}, ${tool}, 'SUCCESS', 10, 1000, 0, 0,
      ${costNano.toString()}, ${world.sql.json(breakdown)}, 'USD')`;
}

describe('GET /v1/spend/{agents,teams,customers}/{id}', () => {
  it("reports spend by dimension and tool, the projection (spend so far + the last 6 hours' spend (or the period's so far, when younger) x the time left / that window, rounded down to the nano-unit), caps with spent/limit/remaining and live sessions", async () => {
    const customer = tenant.customers[0];
    const agent = customer.teams[0].agents[0];
    const other = customer.teams[0].agents[1];
    const now = clockAt('2026-04-10T12:00:00.000Z');
    const monthStart = new Date('2026-04-01T00:00:00.000Z');
    // 2 on the 1st (outside the recent window), 0.6 in the last hour (inside it).
    await ledger(agent.id, monthStart, 'transform_schema', 2_000_000_000n);
    await ledger(agent.id, new Date('2026-04-10T11:30:00.000Z'), 'read_database', 500_000_000n);
    await ledger(agent.id, new Date('2026-04-10T11:40:00.000Z'), 'transform_schema', 100_000_000n);
    await ledger(other.id, new Date('2026-04-10T11:40:00.000Z'), 'transform_schema', 7_000_000_000n, { sessionId: 'sess_other' });
    await world.sql`
      INSERT INTO mcp_sessions (tenant_id, session_id, customer_id, team_id, agent_id, credential_id, status, started_at, last_event_at, tool_calls, cost_nano)
      VALUES (${tenant.tenantId}, 'sess_live', ${customer.id}, ${customer.teams[0].id}, ${agent.id}, 'key', 'ACTIVE', ${new Date(now - 3_600_000)}, ${new Date(now - 60_000)}, 3, 2600000000),
             (${tenant.tenantId}, 'sess_done', ${customer.id}, ${customer.teams[0].id}, ${agent.id}, 'key', 'COMPLETED', ${new Date(now - 3_600_000)}, ${new Date(now - 60_000)}, 1, 5)`;
    const capId = 'cap_spend_route';
    await world.sql`INSERT INTO spend_caps (id, tenant_id, scope_kind, scope_id, period, limit_nano) VALUES (${capId}, ${tenant.tenantId}, 'agent', ${agent.id}, 'month', 10000000000)`;
    const cap = { id: capId, tenantId: tenant.tenantId } as SpendCap;
    await world.redis.set(partitionedKey(world.config.REDIS_PREFIX, capCounterKey(cap, '2026-04'), 0), '2600000000');

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
    // 0.6 in 6 hours, carried over the 20.5 days left (82 x 6 hours): 2.6 + 82 x 0.6 = 51.8.
    expect(body.as_of).toBe('2026-04-10T12:00:00.000Z');
    expect(body.projected).toEqual([{ currency: 'USD', end_of_period: '51.8', recent: '0.6', recent_window_seconds: 21_600 }]);
    expect(body.caps).toEqual([
      expect.objectContaining({ cap_id: capId, action: 'pause', period: 'month', limit: '10', spent: '2.6', reserved: '0', remaining: '7.4', paused: false }),
    ]);
    expect(body.active_sessions).toEqual([expect.objectContaining({ session_id: 'sess_live', status: 'ACTIVE', tool_calls: 3, cost: '2.6' })]);

    const team = (await (await app.request(`/v1/spend/teams/${customer.teams[0].id}`, { headers: { authorization: `Bearer ${tenant.ingestToken}` } })).json()) as any;
    expect(team.spend[0]).toMatchObject({ total: '9.6', events: 4 });
    const cust = (await (await app.request(`/v1/spend/customers/${customer.id}`, { headers: { authorization: `Bearer ${tenant.ingestToken}` } })).json()) as any;
    expect(cust.spend[0].total).toBe('9.6');
  });

  it.each([
    {
      when: 'with no spend in the last 6 hours, it is the spend so far',
      at: '2026-04-10T12:00:00.000Z',
      spent: [['2026-04-10T05:59:59.999Z', 2_000_000_000n]] as const,
      projected: { end_of_period: '2', recent: '0', recent_window_seconds: 21_600 },
    },
    {
      // 3 x 1000 ms / 21,600,000 ms = 0.000138888...: kept to the nano-unit below.
      when: 'a second before the period ends, it adds only that second at the recent rate, rounded down to the nano-unit',
      at: '2026-04-30T23:59:59.000Z',
      spent: [
        ['2026-04-02T00:00:00.000Z', 5_000_000_000n],
        ['2026-04-30T18:00:00.000Z', 3_000_000_000n],
      ] as const,
      projected: { end_of_period: '8.000138888', recent: '3', recent_window_seconds: 21_600 },
    },
    {
      // 1 in the 2 hours of the period so far, carried over the 718 hours left: 1 + 359 x 1.
      when: 'in a period younger than 6 hours, the rate is that of the period so far',
      at: '2026-04-01T02:00:00.000Z',
      spent: [['2026-04-01T01:00:00.000Z', 1_000_000_000n]] as const,
      projected: { end_of_period: '360', recent: '1', recent_window_seconds: 7_200 },
    },
  ])('projects the end of the period exactly: $when', async ({ at, spent, projected }) => {
    const own = await seedSmall(world.sql, { customers: 1, teamsPerCustomer: 1, agentsPerTeam: 1, appsPerTeam: 0 });
    const agent = own.customers[0].teams[0].agents[0];
    for (const [recordedAt, nano] of spent) await ledger(agent.id, new Date(recordedAt), 'transform_schema', nano, { into: own });
    clockAt(at);
    const res = await app.request(`/v1/spend/agents/${agent.id}`, { headers: { authorization: `Bearer ${own.ingestToken}` } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as any).projected).toEqual([{ currency: 'USD', ...projected }]);
  });

  it('answers 404 for an id of another tenant or none, and 401 without the ingest token', async () => {
    const other = await seedSmall(world.sql, { customers: 1, teamsPerCustomer: 1, agentsPerTeam: 1, appsPerTeam: 0 });
    const res = await app.request(`/v1/spend/agents/${other.customers[0].teams[0].agents[0].id}`, { headers: { authorization: `Bearer ${tenant.ingestToken}` } });
    expect(res.status).toBe(404);
    expect((await app.request('/v1/spend/customers/cus_none', { headers: { authorization: `Bearer ${tenant.ingestToken}` } })).status).toBe(404);
    expect((await app.request(`/v1/spend/customers/${tenant.customers[0].id}`)).status).toBe(401);
  });
});
