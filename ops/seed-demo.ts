// Creates a demo tenant (customers, teams, agents, apps, keys, client credentials, a rate plan,
// subscriptions, a spend cap per agent and a cost model) and prints one JSON object on stdout:
// the HTTP base URL, the tokens, and the demo API keys and client ids.
import { loadConfig } from '../pipeline/config.js';
import { connectPostgres } from '../pipeline/postgres.js';
import { seedTenant } from './seed.js';

export const DEMO_PLAN = {
  tool_invocations: { transform_schema: '0.10', validate_credentials: '0.001', read_database: '0.05', execute_transform: '0.02', '*': '0.002' },
  token_multipliers: { input_tokens: '0.000001', output_tokens: '0.000002' },
  tool_multipliers: { transform_schema: '2', '*': '1' },
  duration_buckets: [
    { max_seconds: 60, rate: '0.01' },
    { max_seconds: 300, rate: '0.05' },
    { max_seconds: null, rate: '0.25' },
  ],
};

export const DEMO_COST_MODEL = {
  tools: { transform_schema: '0.02', read_database: '0.01' },
  default_tool: '0.0005',
  models: { 'claude-sonnet': { input_tokens: '0.000003', output_tokens: '0.000015' } },
  default_model: { input_tokens: '0.0000005', output_tokens: '0.0000015' },
  compute_per_ms: '0.0000001',
};

const config = loadConfig();
const sql = connectPostgres(config.DATABASE_URL, { max: 2, name: 'seed-demo' });
try {
  const seeded = await seedTenant(sql, {
    name: 'Demo MCP vendor',
    pricing: DEMO_PLAN,
    costModel: DEMO_COST_MODEL,
    customers: 3,
    teamsPerCustomer: 2,
    agentsPerTeam: 2,
    appsPerTeam: 1,
    caps: [{ scope: 'agent', period: 'day', limitNano: 50_000_000_000n }],
  });
  const agents = seeded.customers.flatMap((customer) =>
    customer.teams.flatMap((team) =>
      team.agents.map((agent) => ({
        customer_id: customer.id,
        team_id: team.id,
        agent_id: agent.id,
        api_key: agent.apiKey,
        client_id: agent.clientId,
        client_secret: agent.clientSecret,
      })),
    ),
  );
  const apps = seeded.customers.flatMap((customer) =>
    customer.teams.flatMap((team) => team.apps.map((app) => ({ customer_id: customer.id, team_id: team.id, app_id: app.id, api_key: app.apiKey }))),
  );
  const host = config.HTTP_HOST === '0.0.0.0' ? '127.0.0.1' : config.HTTP_HOST;
  process.stdout.write(
    JSON.stringify(
      {
        base_url: `http://${host}:${config.HTTP_PORT}`,
        tenant_id: seeded.tenantId,
        ingest_token: seeded.ingestToken,
        admin_token: seeded.adminToken,
        rate_plan_id: seeded.ratePlanId,
        customers: seeded.customers.map((c) => c.id),
        agents,
        apps,
      },
      null,
      2,
    ) + '\n',
  );
} finally {
  await sql.end({ timeout: 5 });
}
