import { describe, expect, it } from 'vitest';
import { attributionCacheKey } from '../../store/attribution-keys.js';
import { adminWorld, created, listAll, seedHierarchy } from './test-world.js';

const t = adminWorld('admin-customers');

describe('customers', () => {
  it('creates, reads, lists and updates a customer', async () => {
    const customer = await created(t.a.call, '/v1/admin/customers', { name: 'Initech', external_ref: 'crm-42', metadata: { tier: 'gold' } });
    expect(customer).toMatchObject({ name: 'Initech', external_ref: 'crm-42', status: 'active', metadata: { tier: 'gold' } });
    expect(customer.id).toMatch(/^cus_/);
    expect(Date.parse(customer.created_at)).toBeGreaterThan(0);

    const read = await t.a.call('GET', `/v1/admin/customers/${customer.id}`);
    expect(read).toEqual({ status: 200, body: customer });

    const updated = await t.a.call('PATCH', `/v1/admin/customers/${customer.id}`, { name: 'Initech Ltd', external_ref: null });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ id: customer.id, name: 'Initech Ltd', external_ref: null, metadata: { tier: 'gold' } });

    const listed = await t.a.call('GET', '/v1/admin/customers?external_ref=crm-42');
    expect(listed.body).toEqual({ data: [], next_cursor: null });
    expect((await t.a.call('GET', '/v1/admin/customers?status=active')).body.data.map((c: { id: string }) => c.id)).toContain(customer.id);
  });

  it('refuses bad bodies with 400, a code, a message and the paths at fault', async () => {
    const missing = await t.a.call('POST', '/v1/admin/customers', { metadata: { a: 1 } });
    expect(missing.status).toBe(400);
    expect(missing.body.error.code).toBe('validation_failed');
    expect(missing.body.error.message).toMatch(/name/);
    expect(missing.body.error.details).toEqual([expect.objectContaining({ path: 'name' })]);

    const unknown = await t.a.call('POST', '/v1/admin/customers', { name: 'x', nmae: 'y' });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.message).toMatch(/nmae/);

    const notJson = await t.a.call('POST', '/v1/admin/customers', '{"name": ');
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.code).toBe('invalid_json');

    const emptyPatch = await t.a.call('PATCH', `/v1/admin/customers/cus_nothing`, {});
    expect(emptyPatch.status).toBe(400);

    const tooBig = await t.a.call('POST', '/v1/admin/customers', { name: 'x', metadata: { blob: 'y'.repeat(300 * 1024) } });
    expect(tooBig.status).toBe(413);
    expect(tooBig.body.error.code).toBe('payload_too_large');

    const badQuery = await t.a.call('GET', '/v1/admin/customers?limit=0');
    expect(badQuery.status).toBe(400);
    expect(badQuery.body.error.details[0].path).toBe('limit');
  });

  it('refuses a text PostgreSQL cannot store (NUL, a lone surrogate) with 400 and its JSON path, in a key or a value, however deep', async () => {
    const inValue = await t.a.call('POST', '/v1/admin/customers', { name: 'x', metadata: { k: 'a\u0000b' } });
    expect(inValue.status).toBe(400);
    expect(inValue.body.error).toMatchObject({ code: 'validation_failed', details: [{ path: 'metadata.k', message: expect.stringMatching(/NUL/) }] });
    const inKey = await t.a.call('POST', '/v1/admin/customers', { name: 'x', metadata: { tiers: [{ 'a\u0000': 1 }] } });
    expect(inKey.status).toBe(400);
    expect(inKey.body.error.details).toEqual([{ path: 'metadata.tiers.0.a\u0000', message: expect.stringMatching(/^key must not contain NUL/) }]);
    const surrogate = await t.a.call('POST', '/v1/admin/customers', { name: 'x\ud800' });
    expect(surrogate.status).toBe(400);
    expect(surrogate.body.error.details).toEqual([{ path: 'name', message: expect.stringMatching(/lone surrogate/) }]);
    const customer = await created(t.a.call, '/v1/admin/customers', { name: 'Stored' });
    const patched = await t.a.call('PATCH', `/v1/admin/customers/${customer.id}`, { metadata: { 'a\u0000': 1 } });
    expect(patched.status).toBe(400);
    expect(patched.body.error.details[0].path).toBe('metadata.a\u0000');
    const plan = await t.a.call('POST', '/v1/admin/rate-plans', { name: 'p', currency: 'USD', pricing: { tool_invocations: { '*': '0.01', 'se\u0000arch': '0.05' } } });
    expect(plan.status).toBe(400);
    expect(plan.body.error.details[0].path).toBe('pricing.tool_invocations.se\u0000arch');
    const query = await t.a.call('GET', '/v1/admin/customers?external_ref=a%00b');
    expect(query.status).toBe(400);
    expect(query.body.error.details[0].path).toBe('external_ref');
  });

  it('answers 409 for a duplicate external_ref', async () => {
    await created(t.a.call, '/v1/admin/customers', { name: 'One', external_ref: 'dup-1' });
    const second = await t.a.call('POST', '/v1/admin/customers', { name: 'Two', external_ref: 'dup-1' });
    expect(second.status).toBe(409);
    expect(second.body.error).toMatchObject({ code: 'conflict', message: expect.stringMatching(/external_ref/) });
  });

  it('pages through customers in a stable order with an opaque cursor', async () => {
    const made = [];
    for (let i = 0; i < 7; i++) made.push((await created(t.b.call, '/v1/admin/customers', { name: `Paged ${i}` })).id);
    const { items, pages } = await listAll(t.b.call, '/v1/admin/customers', 3);
    expect(pages).toBe(3);
    expect(items.map((c: { id: string }) => c.id)).toEqual(made);

    const first = await t.b.call('GET', '/v1/admin/customers?limit=3');
    expect(first.body.next_cursor).not.toContain(made[2]);
    const bad = await t.b.call('GET', '/v1/admin/customers?cursor=not-a-cursor');
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('invalid_cursor');
  });

  it('suspending a customer drops the cached attribution of every credential below it and announces it', async () => {
    const { customer, agent, app } = await seedHierarchy(t.a.call, 'Suspend');
    const agentKey = await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id });
    const appKey = await created(t.a.call, '/v1/admin/api-keys', { app_id: app.id });
    const client = await created(t.a.call, '/v1/admin/client-credentials', { agent_id: agent.id });
    const { redis, config } = t.world;
    const { keyHash: agentHash } = (await t.world.sql`SELECT key_hash AS "keyHash" FROM api_keys WHERE id = ${agentKey.id}`)[0];
    const { keyHash: appHash } = (await t.world.sql`SELECT key_hash AS "keyHash" FROM api_keys WHERE id = ${appKey.id}`)[0];
    const cacheKeys = [
      attributionCacheKey(config.REDIS_PREFIX, t.a.tenantId, { kind: 'api_key', keyHash: agentHash }),
      attributionCacheKey(config.REDIS_PREFIX, t.a.tenantId, { kind: 'api_key', keyHash: appHash }),
      attributionCacheKey(config.REDIS_PREFIX, t.a.tenantId, { kind: 'client_id', clientId: client.client_id }),
    ];
    for (const key of cacheKeys) await redis.set(key, '{"stale":true}', 'EX', 600);
    await t.takeControl();

    const suspended = await t.a.call('POST', `/v1/admin/customers/${customer.id}/suspend`);
    expect(suspended.status).toBe(200);
    expect(suspended.body.status).toBe('suspended');
    expect(await redis.exists(...cacheKeys)).toBe(0);
    const messages = await t.takeControl();
    expect(messages).toContainEqual({
      type: 'credentials.changed',
      tenantId: t.a.tenantId,
      keyHashes: expect.arrayContaining([agentHash, appHash]),
      clientIds: [client.client_id],
    });
    expect(messages).toContainEqual({ type: 'hierarchy.changed', tenantId: t.a.tenantId, customerIds: [customer.id] });

    const reactivated = await t.a.call('POST', `/v1/admin/customers/${customer.id}/reactivate`);
    expect(reactivated.body.status).toBe('active');
  });
});

describe('teams', () => {
  it('creates a team under a customer, lists it by customer and renames it', async () => {
    const customer = await created(t.a.call, '/v1/admin/customers', { name: 'Team owner' });
    const team = await created(t.a.call, '/v1/admin/teams', { customer_id: customer.id, name: 'Research' });
    expect(team).toMatchObject({ customer_id: customer.id, name: 'Research', metadata: {} });
    const listed = await t.a.call('GET', `/v1/admin/teams?customer_id=${customer.id}`);
    expect(listed.body.data).toEqual([team]);
    const renamed = await t.a.call('PATCH', `/v1/admin/teams/${team.id}`, { name: 'R&D' });
    expect(renamed.body.name).toBe('R&D');
    const moved = await t.a.call('PATCH', `/v1/admin/teams/${team.id}`, { customer_id: 'cus_other' });
    expect(moved.status).toBe(400);
    expect(await t.takeControl()).toContainEqual({ type: 'hierarchy.changed', tenantId: t.a.tenantId, customerIds: [customer.id] });
  });

  it('answers 404 for a customer that does not exist', async () => {
    const reply = await t.a.call('POST', '/v1/admin/teams', { customer_id: 'cus_missing', name: 'Orphans' });
    expect(reply.status).toBe(404);
    expect(reply.body.error).toEqual({ code: 'not_found', message: 'customer cus_missing not found' });
  });
});

describe('tenant isolation', () => {
  it("never lets one tenant read, list, change or build on another tenant's customers and teams", async () => {
    const { customer, team } = await seedHierarchy(t.a.call, 'Isolated');
    for (const path of [`/v1/admin/customers/${customer.id}`, `/v1/admin/teams/${team.id}`]) {
      expect((await t.b.call('GET', path)).status).toBe(404);
      expect((await t.b.call('PATCH', path, { name: 'hijacked' })).status).toBe(404);
    }
    expect((await t.b.call('POST', `/v1/admin/customers/${customer.id}/suspend`)).status).toBe(404);
    expect((await t.b.call('POST', '/v1/admin/teams', { customer_id: customer.id, name: 'Intruders' })).status).toBe(404);
    const listed = await listAll(t.b.call, '/v1/admin/customers', 200);
    expect(listed.items.map((c: { id: string }) => c.id)).not.toContain(customer.id);
    expect((await t.b.call('GET', `/v1/admin/teams?customer_id=${customer.id}`)).body.data).toEqual([]);
    expect((await t.a.call('GET', `/v1/admin/customers/${customer.id}`)).body.name).toBe('Isolated customer');
  });

  it('requires an admin token', async () => {
    const anonymous = await t.app.request('/v1/admin/customers');
    expect(anonymous.status).toBe(401);
    const withIngest = await t.app.request('/v1/admin/customers', { headers: { authorization: `Bearer ${t.a.ingestToken}` } });
    expect(withIngest.status).toBe(401);
    expect(((await withIngest.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
  });
});
