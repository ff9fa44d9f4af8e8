import { describe, expect, it } from 'vitest';
import { AttributionResolver } from '../../store/attribution.js';
import { hashApiKey } from '../../store/credentials.js';
import { adminWorld, created, listAll, seedHierarchy } from './test-world.js';

const t = adminWorld('admin-products');

describe('products', () => {
  it('creates one of each of the four kinds, filters by kind, and refuses a fifth kind', async () => {
    const kinds = ['standard_api', 'agentic_api', 'managed_agent', 'mcp_server'];
    for (const kind of kinds) {
      const product = await created(t.a.call, '/v1/admin/products', { name: `A ${kind}`, kind });
      expect(product).toMatchObject({ kind, name: `A ${kind}` });
      expect(product.id).toMatch(/^prod_/);
    }
    const mcp = await t.a.call('GET', '/v1/admin/products?kind=mcp_server');
    expect(mcp.body.data.map((p: { kind: string }) => p.kind)).toEqual(['mcp_server']);
    const bad = await t.a.call('POST', '/v1/admin/products', { name: 'Toaster', kind: 'hardware' });
    expect(bad.status).toBe(400);
    expect(bad.body.error.details[0].path).toBe('kind');
  });

  it("changing a product's kind reaches the cached attribution of its agents' keys", async () => {
    const product = await created(t.a.call, '/v1/admin/products', { name: 'Shifting', kind: 'agentic_api' });
    const { team } = await seedHierarchy(t.a.call, 'Kind');
    const agent = await created(t.a.call, '/v1/admin/agents', { team_id: team.id, product_id: product.id, name: 'Kinded', agent_type: 'GPT' });
    const key = await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id });
    const resolver = new AttributionResolver(t.world.sql, t.world.redis, t.world.config.REDIS_PREFIX, 600);
    const credential = { kind: 'api_key' as const, keyHash: hashApiKey(key.key) };
    expect(await resolver.resolve(t.a.tenantId, credential)).toMatchObject({ ok: true, attribution: { productKind: 'agentic_api' } });
    await t.takeControl();
    const changed = await t.a.call('PATCH', `/v1/admin/products/${product.id}`, { kind: 'managed_agent' });
    expect(changed.body.kind).toBe('managed_agent');
    expect(await resolver.resolve(t.a.tenantId, credential)).toMatchObject({ ok: true, attribution: { productKind: 'managed_agent' } });
    expect(await t.takeControl()).toEqual([
      { type: 'credentials.changed', tenantId: t.a.tenantId, keyHashes: [credential.keyHash], clientIds: [] },
      { type: 'hierarchy.changed', tenantId: t.a.tenantId },
    ]);
  });
});

describe('MCP servers and tools', () => {
  it('registers a server and its tools with aliases, and updates them', async () => {
    const product = await created(t.a.call, '/v1/admin/products', { name: 'Docs MCP', kind: 'mcp_server' });
    const server = await created(t.a.call, '/v1/admin/mcp-servers', { name: 'docs', product_id: product.id });
    expect(server).toMatchObject({ name: 'docs', product_id: product.id });
    const search = await created(t.a.call, `/v1/admin/mcp-servers/${server.id}/tools`, { name: 'search', aliases: ['find', 'search@v1'], version: '2' });
    expect(search).toMatchObject({ mcp_server_id: server.id, name: 'search', aliases: ['find', 'search@v1'], version: '2', deprecated: false });
    const fetchTool = await created(t.a.call, `/v1/admin/mcp-servers/${server.id}/tools`, { name: 'fetch' });
    expect(fetchTool.aliases).toEqual([]);

    const deprecated = await t.a.call('PATCH', `/v1/admin/mcp-servers/${server.id}/tools/${fetchTool.id}`, { deprecated: true, aliases: ['get'] });
    expect(deprecated.body).toMatchObject({ deprecated: true, aliases: ['get'] });
    const { items } = await listAll(t.a.call, `/v1/admin/mcp-servers/${server.id}/tools`, 1);
    expect(items.map((tool: { name: string }) => tool.name)).toEqual(['search', 'fetch']);
    const onlyDeprecated = await t.a.call('GET', `/v1/admin/mcp-servers/${server.id}/tools?deprecated=true`);
    expect(onlyDeprecated.body.data.map((tool: { id: string }) => tool.id)).toEqual([fetchTool.id]);
    expect((await t.a.call('GET', `/v1/admin/mcp-servers/${server.id}/tools/${search.id}`)).body).toEqual(search);
    const control = await t.takeControl();
    expect(control).toContainEqual({ type: 'hierarchy.changed', tenantId: t.a.tenantId });
    // The price stage drops its cached tool aliases of the tenant.
    expect(control).toContainEqual({ type: 'mcp-tools.changed', tenantId: t.a.tenantId });
  });

  it('refuses a name or alias that already names another tool of the server', async () => {
    const server = await created(t.a.call, '/v1/admin/mcp-servers', { name: 'clashes' });
    const search = await created(t.a.call, `/v1/admin/mcp-servers/${server.id}/tools`, { name: 'search', aliases: ['find'] });
    const aliasTaken = await t.a.call('POST', `/v1/admin/mcp-servers/${server.id}/tools`, { name: 'lookup', aliases: ['find'] });
    expect(aliasTaken.status).toBe(409);
    expect(aliasTaken.body.error).toMatchObject({ code: 'alias_conflict', message: expect.stringMatching(/find already names tool search/) });
    const nameTakenAsAlias = await t.a.call('POST', `/v1/admin/mcp-servers/${server.id}/tools`, { name: 'find' });
    expect(nameTakenAsAlias.status).toBe(409);
    const duplicateName = await t.a.call('POST', `/v1/admin/mcp-servers/${server.id}/tools`, { name: 'search' });
    expect(duplicateName.status).toBe(409);
    const selfAlias = await t.a.call('POST', `/v1/admin/mcp-servers/${server.id}/tools`, { name: 'echo', aliases: ['echo'] });
    expect(selfAlias.status).toBe(409);
    const repeated = await t.a.call('POST', `/v1/admin/mcp-servers/${server.id}/tools`, { name: 'ping', aliases: ['p', 'p'] });
    expect(repeated.status).toBe(400);
    // A tool may keep its own aliases when updated.
    const kept = await t.a.call('PATCH', `/v1/admin/mcp-servers/${server.id}/tools/${search.id}`, { aliases: ['find', 'query'] });
    expect(kept.status).toBe(200);
    // The same name on another server is fine.
    const other = await created(t.a.call, '/v1/admin/mcp-servers', { name: 'other' });
    expect((await t.a.call('POST', `/v1/admin/mcp-servers/${other.id}/tools`, { name: 'search', aliases: ['find'] })).status).toBe(201);
  });

  it('answers 404 for a tool read through the wrong server', async () => {
    const first = await created(t.a.call, '/v1/admin/mcp-servers', { name: 'first' });
    const second = await created(t.a.call, '/v1/admin/mcp-servers', { name: 'second' });
    const tool = await created(t.a.call, `/v1/admin/mcp-servers/${first.id}/tools`, { name: 'only-here' });
    expect((await t.a.call('GET', `/v1/admin/mcp-servers/${second.id}/tools/${tool.id}`)).status).toBe(404);
    expect((await t.a.call('PATCH', `/v1/admin/mcp-servers/${second.id}/tools/${tool.id}`, { deprecated: true })).status).toBe(404);
    expect((await t.a.call('GET', '/v1/admin/mcp-servers/mcp_missing/tools')).status).toBe(404);
  });
});

describe('tenant isolation', () => {
  it("keeps another tenant's products, servers and tools out of reach", async () => {
    const product = await created(t.a.call, '/v1/admin/products', { name: 'Secret', kind: 'mcp_server' });
    const server = await created(t.a.call, '/v1/admin/mcp-servers', { name: 'secret', product_id: product.id });
    const tool = await created(t.a.call, `/v1/admin/mcp-servers/${server.id}/tools`, { name: 'vault' });
    for (const path of [`/v1/admin/products/${product.id}`, `/v1/admin/mcp-servers/${server.id}`, `/v1/admin/mcp-servers/${server.id}/tools/${tool.id}`]) {
      expect((await t.b.call('GET', path)).status).toBe(404);
      expect((await t.b.call('PATCH', path, { name: 'taken' })).status).toBe(404);
    }
    expect((await t.b.call('GET', `/v1/admin/mcp-servers/${server.id}/tools`)).status).toBe(404);
    expect((await t.b.call('POST', `/v1/admin/mcp-servers/${server.id}/tools`, { name: 'implant' })).status).toBe(404);
    expect((await t.b.call('POST', '/v1/admin/mcp-servers', { name: 'borrowed', product_id: product.id })).status).toBe(404);
    expect((await t.a.call('GET', `/v1/admin/mcp-servers/${server.id}/tools/${tool.id}`)).body.name).toBe('vault');
  });
});
