import { describe, expect, it } from 'vitest';
import { AttributionResolver } from '../../store/attribution.js';
import { hashApiKey } from '../../store/credentials.js';
import { adminWorld, created, listAll, seedHierarchy } from './test-world.js';

const t = adminWorld('admin-agents');

function resolver() {
  return new AttributionResolver(t.world.sql, t.world.redis, t.world.config.REDIS_PREFIX, 600);
}

describe('agents', () => {
  it('registers an agent with its type and limits, reads, lists and updates it', async () => {
    const { team } = await seedHierarchy(t.a.call, 'Agents');
    const product = await created(t.a.call, '/v1/admin/products', { name: 'Search MCP', kind: 'mcp_server' });
    const agent = await created(t.a.call, '/v1/admin/agents', {
      team_id: team.id,
      product_id: product.id,
      name: 'Researcher',
      agent_type: 'LANGCHAIN',
      max_concurrent_sessions: 5,
      rate_limit_per_minute: 600,
    });
    expect(agent).toMatchObject({
      team_id: team.id,
      product_id: product.id,
      name: 'Researcher',
      agent_type: 'LANGCHAIN',
      max_concurrent_sessions: 5,
      rate_limit_per_minute: 600,
      status: 'active',
    });
    expect(agent.id).toMatch(/^agt_/);
    expect((await t.a.call('GET', `/v1/admin/agents/${agent.id}`)).body).toEqual(agent);

    const updated = await t.a.call('PATCH', `/v1/admin/agents/${agent.id}`, { rate_limit_per_minute: null, agent_type: 'CUSTOM' });
    expect(updated.body).toMatchObject({ rate_limit_per_minute: null, agent_type: 'CUSTOM', max_concurrent_sessions: 5 });

    const byType = await t.a.call('GET', `/v1/admin/agents?team_id=${team.id}&agent_type=CUSTOM`);
    expect(byType.body.data.map((a: { id: string }) => a.id)).toEqual([agent.id]);
    const messages = await t.takeControl();
    expect(messages).toContainEqual(expect.objectContaining({ type: 'hierarchy.changed', tenantId: t.a.tenantId, agentIds: [agent.id] }));
  });

  it('refuses an unknown agent_type, a non-positive limit and a missing team', async () => {
    const { team } = await seedHierarchy(t.a.call, 'Invalid');
    const badType = await t.a.call('POST', '/v1/admin/agents', { team_id: team.id, name: 'x', agent_type: 'SKYNET' });
    expect(badType.status).toBe(400);
    expect(badType.body.error.details).toEqual([expect.objectContaining({ path: 'agent_type' })]);
    const badLimit = await t.a.call('POST', '/v1/admin/agents', { team_id: team.id, name: 'x', agent_type: 'GPT', max_concurrent_sessions: 0 });
    expect(badLimit.status).toBe(400);
    expect(badLimit.body.error.details[0].path).toBe('max_concurrent_sessions');
    const noTeam = await t.a.call('POST', '/v1/admin/agents', { team_id: 'team_missing', name: 'x', agent_type: 'GPT' });
    expect(noTeam.status).toBe(404);
    const noProduct = await t.a.call('POST', '/v1/admin/agents', { team_id: team.id, product_id: 'prod_missing', name: 'x', agent_type: 'GPT' });
    expect(noProduct.status).toBe(404);
  });

  it('moves an agent between teams of its customer, never to another customer', async () => {
    const { customer, agent } = await seedHierarchy(t.a.call, 'Mover');
    const sibling = await created(t.a.call, '/v1/admin/teams', { customer_id: customer.id, name: 'Sibling team' });
    const moved = await t.a.call('PATCH', `/v1/admin/agents/${agent.id}`, { team_id: sibling.id });
    expect(moved.status).toBe(200);
    expect(moved.body.team_id).toBe(sibling.id);

    const elsewhere = await seedHierarchy(t.a.call, 'Elsewhere');
    const refused = await t.a.call('PATCH', `/v1/admin/agents/${agent.id}`, { team_id: elsewhere.team.id });
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('cross_customer_move');
  });

  it('suspension takes effect in the pipeline at once and reactivation restores it', async () => {
    const { agent, team, customer } = await seedHierarchy(t.a.call, 'Suspendable');
    const key = await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id });
    const client = await created(t.a.call, '/v1/admin/client-credentials', { agent_id: agent.id });
    const keyCredential = { kind: 'api_key' as const, keyHash: hashApiKey(key.key) };
    const clientCredential = { kind: 'client_id' as const, clientId: client.client_id };

    // Warm the attribution cache the way the pipeline does.
    const before = await resolver().resolveMany([
      { tenantId: t.a.tenantId, credential: keyCredential },
      { tenantId: t.a.tenantId, credential: clientCredential },
    ]);
    expect(before.map((r) => r.ok)).toEqual([true, true]);
    await t.takeControl();

    const suspended = await t.a.call('POST', `/v1/admin/agents/${agent.id}/suspend`);
    expect(suspended.status).toBe(200);
    expect(suspended.body.status).toBe('suspended');
    const during = await resolver().resolveMany([
      { tenantId: t.a.tenantId, credential: keyCredential },
      { tenantId: t.a.tenantId, credential: clientCredential },
    ]);
    expect(during).toEqual([
      expect.objectContaining({ ok: false, code: 'suspended' }),
      expect.objectContaining({ ok: false, code: 'suspended' }),
    ]);
    expect(await t.takeControl()).toEqual([
      { type: 'credentials.changed', tenantId: t.a.tenantId, keyHashes: [keyCredential.keyHash], clientIds: [client.client_id] },
      { type: 'hierarchy.changed', tenantId: t.a.tenantId, agentIds: [agent.id], customerIds: [customer.id] },
    ]);

    const again = await t.a.call('POST', `/v1/admin/agents/${agent.id}/suspend`);
    expect(again.body.status).toBe('suspended');

    await t.a.call('POST', `/v1/admin/agents/${agent.id}/reactivate`);
    const after = await resolver().resolve(t.a.tenantId, keyCredential);
    expect(after).toEqual({ ok: true, attribution: expect.objectContaining({ agentId: agent.id, teamId: team.id, customerId: customer.id }) });
  });

  it('a move between teams reaches the cached attribution at once', async () => {
    const { customer, agent } = await seedHierarchy(t.a.call, 'Cached move');
    const key = await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id });
    const credential = { kind: 'api_key' as const, keyHash: hashApiKey(key.key) };
    await resolver().resolve(t.a.tenantId, credential);
    const other = await created(t.a.call, '/v1/admin/teams', { customer_id: customer.id, name: 'New home' });
    await t.a.call('PATCH', `/v1/admin/agents/${agent.id}`, { team_id: other.id });
    expect(await resolver().resolve(t.a.tenantId, credential)).toEqual({ ok: true, attribution: expect.objectContaining({ teamId: other.id }) });
  });
});

describe('apps', () => {
  it('creates, updates, suspends and reactivates an app, dropping the cache of its keys', async () => {
    const { team } = await seedHierarchy(t.a.call, 'Apps');
    const app = await created(t.a.call, '/v1/admin/apps', { team_id: team.id, name: 'Checkout API', metadata: { env: 'prod' } });
    expect(app).toMatchObject({ team_id: team.id, name: 'Checkout API', status: 'active', product_id: null, metadata: { env: 'prod' } });
    const key = await created(t.a.call, '/v1/admin/api-keys', { app_id: app.id });
    const credential = { kind: 'api_key' as const, keyHash: hashApiKey(key.key) };
    expect((await resolver().resolve(t.a.tenantId, credential)).ok).toBe(true);

    const suspended = await t.a.call('POST', `/v1/admin/apps/${app.id}/suspend`);
    expect(suspended.body.status).toBe('suspended');
    expect(await resolver().resolve(t.a.tenantId, credential)).toMatchObject({ ok: false, code: 'suspended' });
    await t.a.call('POST', `/v1/admin/apps/${app.id}/reactivate`);
    expect((await resolver().resolve(t.a.tenantId, credential)).ok).toBe(true);

    const renamed = await t.a.call('PATCH', `/v1/admin/apps/${app.id}`, { name: 'Checkout API v2' });
    expect(renamed.body.name).toBe('Checkout API v2');
    const { items } = await listAll(t.a.call, `/v1/admin/apps?team_id=${team.id}`, 1);
    expect(items.map((a: { id: string }) => a.id)).toContain(app.id);
  });
});

describe('tenant isolation', () => {
  it("keeps another tenant's agents and apps out of reach", async () => {
    const { agent, app, team } = await seedHierarchy(t.a.call, 'Private');
    for (const path of [`/v1/admin/agents/${agent.id}`, `/v1/admin/apps/${app.id}`]) {
      expect((await t.b.call('GET', path)).status).toBe(404);
      expect((await t.b.call('PATCH', path, { name: 'mine now' })).status).toBe(404);
      expect((await t.b.call('POST', `${path}/suspend`)).status).toBe(404);
    }
    expect((await t.b.call('POST', '/v1/admin/agents', { team_id: team.id, name: 'Mole', agent_type: 'GPT' })).status).toBe(404);
    const bTeam = (await seedHierarchy(t.b.call, 'B')).team;
    expect((await t.a.call('PATCH', `/v1/admin/agents/${agent.id}`, { team_id: bTeam.id })).status).toBe(404);
    expect((await t.b.call('GET', `/v1/admin/agents?team_id=${team.id}`)).body.data).toEqual([]);
    expect((await t.a.call('GET', `/v1/admin/agents/${agent.id}`)).body.status).toBe('active');
  });
});
