// Creates a demo tenant (customers, teams, agents, apps, keys, client credentials, a rate plan,
// subscriptions, a spend cap per agent and a cost model) and prints one JSON object on stdout:
// the HTTP base URL, the tokens, and the demo API keys and client ids.
import { loadConfig } from '../pipeline/config.js';
import { connectPostgres } from '../pipeline/postgres.js';
import { DEMO_COST_MODEL, DEMO_PLAN, seedTenant } from './seed.js';

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
