import type { Sql } from '../pipeline/postgres.js';
import { issueApiKey, issueClientSecret, newClientId, newId } from '../store/credentials.js';
import { createTenant } from '../store/tenants.js';
import { validateRatePlan } from '../domain/rating/plan.js';
import { validateCostModel } from '../schemas/cost-model.js';

/**
 * Seeds a tenant with a whole billing hierarchy in a few statements: products of the four
 * kinds, customers, teams, agents (each with an API key and client credentials), apps with
 * keys, one rate plan, a subscription per customer, optional spend caps and a cost model.
 * Used by `seed-demo`, the benchmark and the end-to-end tests.
 */
export interface SeedSpec {
  name: string;
  currency?: string;
  pricing: unknown;
  costModel?: unknown;
  customers: number;
  teamsPerCustomer: number;
  agentsPerTeam: number;
  appsPerTeam?: number;
  /** Spend caps on the first agent / team / customer of every customer. */
  caps?: { scope: 'agent' | 'team' | 'customer'; period: 'session' | 'day' | 'month'; limitNano: bigint; action?: 'pause' | 'alert' }[];
  subscriptionsFrom?: Date;
}

export interface SeededAgent {
  id: string;
  apiKey: string;
  keyHash: string;
  clientId: string;
  clientSecret: string;
}

export interface SeededTenant {
  tenantId: string;
  ingestToken: string;
  adminToken: string;
  ratePlanId: string;
  ratePlanVersionId: string;
  products: Record<'standard_api' | 'agentic_api' | 'managed_agent' | 'mcp_server', string>;
  customers: {
    id: string;
    subscriptionId: string;
    teams: { id: string; agents: SeededAgent[]; apps: { id: string; apiKey: string }[] }[];
  }[];
  caps: { id: string; scopeKind: string; scopeId: string; period: string; limitNano: bigint }[];
}

export async function seedTenant(sql: Sql, spec: SeedSpec): Promise<SeededTenant> {
  const currency = spec.currency ?? 'USD';
  const plan = validateRatePlan(spec.pricing);
  if (!plan.ok) throw new Error(`seed: invalid rate plan: ${plan.errors.map((e) => `${e.path} ${e.message}`).join('; ')}`);
  if (spec.costModel !== undefined) {
    const model = validateCostModel(spec.costModel);
    if (!model.ok) throw new Error(`seed: invalid cost model: ${model.errors.map((e) => `${e.path} ${e.message}`).join('; ')}`);
  }
  const tenant = await createTenant(sql, spec.name);
  const tenantId = tenant.tenantId;
  const products = {
    standard_api: newId('prd'),
    agentic_api: newId('prd'),
    managed_agent: newId('prd'),
    mcp_server: newId('prd'),
  };
  const ratePlanId = newId('plan');
  const ratePlanVersionId = newId('planv');
  const from = spec.subscriptionsFrom ?? new Date(Date.UTC(2020, 0, 1));

  const rows = {
    customers: [] as Record<string, unknown>[],
    teams: [] as Record<string, unknown>[],
    agents: [] as Record<string, unknown>[],
    apps: [] as Record<string, unknown>[],
    apiKeys: [] as Record<string, unknown>[],
    clients: [] as Record<string, unknown>[],
    subscriptions: [] as Record<string, unknown>[],
    caps: [] as Record<string, unknown>[],
  };
  const seeded: SeededTenant = { ...tenant, ratePlanId, ratePlanVersionId, products, customers: [], caps: [] };
  const agentTypes = ['CLAUDE', 'GPT', 'LANGCHAIN', 'CREWAI', 'AUTOGEN', 'CUSTOM'];
  let agentCount = 0;

  for (let c = 0; c < spec.customers; c++) {
    const customerId = newId('cus');
    const subscriptionId = newId('sub');
    rows.customers.push({ id: customerId, tenant_id: tenantId, name: `Customer ${c + 1}` });
    rows.subscriptions.push({
      id: subscriptionId,
      tenant_id: tenantId,
      customer_id: customerId,
      rate_plan_version_id: ratePlanVersionId,
      effective_from: from,
    });
    const customer: SeededTenant['customers'][number] = { id: customerId, subscriptionId, teams: [] };
    for (let t = 0; t < spec.teamsPerCustomer; t++) {
      const teamId = newId('team');
      rows.teams.push({ id: teamId, tenant_id: tenantId, customer_id: customerId, name: `Team ${t + 1}` });
      const team: SeededTenant['customers'][number]['teams'][number] = { id: teamId, agents: [], apps: [] };
      for (let a = 0; a < spec.agentsPerTeam; a++) {
        const agentId = newId('agt');
        const product = agentCount++ % 2 === 0 ? products.mcp_server : products.managed_agent;
        rows.agents.push({
          id: agentId,
          tenant_id: tenantId,
          team_id: teamId,
          product_id: product,
          name: `Agent ${c + 1}.${t + 1}.${a + 1}`,
          agent_type: agentTypes[agentCount % agentTypes.length],
        });
        const key = issueApiKey();
        rows.apiKeys.push({
          id: newId('key'),
          tenant_id: tenantId,
          agent_id: agentId,
          app_id: null,
          key_hash: key.keyHash,
          prefix: key.prefix,
          last4: key.last4,
        });
        const secret = issueClientSecret();
        const clientId = newClientId();
        rows.clients.push({
          id: newId('cred'),
          tenant_id: tenantId,
          agent_id: agentId,
          client_id: clientId,
          secret_hash: secret.secretHash,
          prefix: secret.prefix,
          last4: secret.last4,
        });
        team.agents.push({ id: agentId, apiKey: key.secret, keyHash: key.keyHash, clientId, clientSecret: secret.secret });
      }
      for (let p = 0; p < (spec.appsPerTeam ?? 0); p++) {
        const appId = newId('app');
        rows.apps.push({
          id: appId,
          tenant_id: tenantId,
          team_id: teamId,
          product_id: p % 2 === 0 ? products.standard_api : products.agentic_api,
          name: `App ${c + 1}.${t + 1}.${p + 1}`,
        });
        const key = issueApiKey();
        rows.apiKeys.push({ id: newId('key'), tenant_id: tenantId, agent_id: null, app_id: appId, key_hash: key.keyHash, prefix: key.prefix, last4: key.last4 });
        team.apps.push({ id: appId, apiKey: key.secret });
      }
      customer.teams.push(team);
    }
    for (const cap of spec.caps ?? []) {
      const scopeId = cap.scope === 'customer' ? customerId : cap.scope === 'team' ? customer.teams[0].id : customer.teams[0].agents[0].id;
      const id = newId('cap');
      rows.caps.push({
        id,
        tenant_id: tenantId,
        scope_kind: cap.scope,
        scope_id: scopeId,
        period: cap.period,
        limit_nano: cap.limitNano.toString(),
        action: cap.action ?? 'pause',
      });
      seeded.caps.push({ id, scopeKind: cap.scope, scopeId, period: cap.period, limitNano: cap.limitNano });
    }
    seeded.customers.push(customer);
  }

  await sql.begin(async (tx) => {
    await tx`INSERT INTO products ${tx(
      Object.entries(products).map(([kind, id]) => ({ id, tenant_id: tenantId, name: kind.replace('_', ' '), kind })),
    )}`;
    await tx`INSERT INTO rate_plans ${tx({ id: ratePlanId, tenant_id: tenantId, name: `${spec.name} plan`, currency })}`;
    await tx`INSERT INTO rate_plan_versions ${tx({
      id: ratePlanVersionId,
      tenant_id: tenantId,
      rate_plan_id: ratePlanId,
      version: 1,
      pricing: tx.json(spec.pricing as never),
    })}`;
    for (const [table, list] of [
      ['customers', rows.customers],
      ['teams', rows.teams],
      ['agents', rows.agents],
      ['apps', rows.apps],
      ['api_keys', rows.apiKeys],
      ['client_credentials', rows.clients],
      ['subscriptions', rows.subscriptions],
      ['spend_caps', rows.caps],
    ] as const) {
      // Chunks keep each statement under PostgreSQL's 65,535 parameters.
      for (let i = 0; i < list.length; i += 1000) {
        const chunk = list.slice(i, i + 1000);
        if (chunk.length) await tx`INSERT INTO ${tx(table)} ${tx(chunk)}`;
      }
    }
    if (spec.costModel !== undefined) {
      await tx`INSERT INTO cost_models ${tx({
        id: newId('cost'),
        tenant_id: tenantId,
        name: `${spec.name} costs`,
        currency,
        model: tx.json(spec.costModel as never),
      })}`;
    }
  });
  return seeded;
}

/** The demo tenant's rate plan (npm run seed-demo, the console test): tools, tokens and durations all priced. */
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

/** The demo tenant's cost model: what its tools, models and compute cost the tenant. */
export const DEMO_COST_MODEL = {
  tools: { transform_schema: '0.02', read_database: '0.01' },
  default_tool: '0.0005',
  models: { 'claude-sonnet': { input_tokens: '0.000003', output_tokens: '0.000015' } },
  default_model: { input_tokens: '0.0000005', output_tokens: '0.0000015' },
  compute_per_ms: '0.0000001',
};
