import { describe, expect, it } from 'vitest';
import { AttributionResolver } from '../../store/attribution.js';
import { attributionCacheKey } from '../../store/attribution-keys.js';
import { hashApiKey, sha256 } from '../../store/credentials.js';
import { SECOND_INVALIDATION_MS } from './announce.js';
import { adminWorld, created, listAll, seedHierarchy } from './test-world.js';

const t = adminWorld('admin-credentials');

function resolve(credential: { kind: 'api_key'; keyHash: string } | { kind: 'client_id'; clientId: string }) {
  return new AttributionResolver(t.world.sql, t.world.redis, t.world.config.REDIS_PREFIX, 600).resolve(t.a.tenantId, credential);
}

async function storedRows(table: 'api_keys' | 'client_credentials', tenantId: string) {
  return JSON.stringify(await t.world.sql`SELECT * FROM ${t.world.sql(table)} WHERE tenant_id = ${tenantId}`);
}

describe('API keys', () => {
  it('shows the raw key once and stores only its hash, prefix and last four', async () => {
    const { agent } = await seedHierarchy(t.a.call, 'Keys');
    const key = await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id, name: 'ci' });
    expect(key.key).toMatch(/^sk_live_[A-Za-z0-9]{32}$/);
    expect(key).toMatchObject({ agent_id: agent.id, app_id: null, name: 'ci', status: 'active', prefix: key.key.slice(0, 12), last4: key.key.slice(-4) });

    const read = await t.a.call('GET', `/v1/admin/api-keys/${key.id}`);
    expect(read.body.key).toBeUndefined();
    expect(JSON.stringify(read.body)).not.toContain(key.key);
    const [row] = await t.world.sql`SELECT key_hash FROM api_keys WHERE id = ${key.id}`;
    expect(row.key_hash).toBe(hashApiKey(key.key));
    expect(await storedRows('api_keys', t.a.tenantId)).not.toContain(key.key);
    expect(await resolve({ kind: 'api_key', keyHash: hashApiKey(key.key) })).toMatchObject({ ok: true });
  });

  it('drops a cached "unknown key" answer when the key is created', async () => {
    const { app } = await seedHierarchy(t.a.call, 'Negative');
    const key = await created(t.a.call, '/v1/admin/api-keys', { app_id: app.id });
    const cacheKey = attributionCacheKey(t.world.config.REDIS_PREFIX, t.a.tenantId, { kind: 'api_key', keyHash: hashApiKey(key.key) });
    expect(await t.world.redis.exists(cacheKey)).toBe(0);
    expect(await t.takeControl()).toContainEqual({ type: 'credentials.changed', tenantId: t.a.tenantId, keyHashes: [hashApiKey(key.key)], clientIds: [] });
  });

  it('refuses a key for both or neither of agent and app', async () => {
    const { agent, app } = await seedHierarchy(t.a.call, 'Owners');
    const both = await t.a.call('POST', '/v1/admin/api-keys', { agent_id: agent.id, app_id: app.id });
    expect(both.status).toBe(400);
    expect(both.body.error.message).toMatch(/exactly one of agent_id or app_id/);
    expect((await t.a.call('POST', '/v1/admin/api-keys', {})).status).toBe(400);
    expect((await t.a.call('POST', '/v1/admin/api-keys', { agent_id: agent.id, expires_at: 'tomorrow' })).status).toBe(400);
    const yearZero = await t.a.call('POST', '/v1/admin/api-keys', { agent_id: agent.id, expires_at: '0000-01-01T00:00:00Z' });
    expect(yearZero.status).toBe(400);
    expect(yearZero.body.error.details).toEqual([{ path: 'expires_at', message: 'the year must be 0001 or later' }]);
  });

  it('rotates without grace: the new key works and the old one is revoked at once', async () => {
    const { agent } = await seedHierarchy(t.a.call, 'Rotate');
    const old = await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id, name: 'prod' });
    const oldCredential = { kind: 'api_key' as const, keyHash: hashApiKey(old.key) };
    expect((await resolve(oldCredential)).ok).toBe(true);
    await t.takeControl();

    const rotated = await t.a.call('POST', `/v1/admin/api-keys/${old.id}/rotate`);
    expect(rotated.status).toBe(201);
    expect(rotated.body).toMatchObject({ agent_id: agent.id, name: 'prod', status: 'active', rotated_from: old.id });
    expect(rotated.body.key).not.toBe(old.key);
    expect(rotated.body.previous).toMatchObject({ id: old.id, status: 'revoked' });
    expect(rotated.body.previous.revoked_at).not.toBeNull();

    expect(await resolve(oldCredential)).toMatchObject({ ok: false, code: 'revoked' });
    expect(await resolve({ kind: 'api_key', keyHash: hashApiKey(rotated.body.key) })).toMatchObject({ ok: true });
    expect(await t.takeControl()).toEqual([
      { type: 'credentials.changed', tenantId: t.a.tenantId, keyHashes: [oldCredential.keyHash, hashApiKey(rotated.body.key)], clientIds: [] },
    ]);

    const rotateAgain = await t.a.call('POST', `/v1/admin/api-keys/${old.id}/rotate`);
    expect(rotateAgain.status).toBe(409);
    expect(rotateAgain.body.error.code).toBe('credential_revoked');
  });

  it('rotates with a grace period: both keys work until it ends; revoking ends it early', async () => {
    const { app } = await seedHierarchy(t.a.call, 'Grace');
    const old = await created(t.a.call, '/v1/admin/api-keys', { app_id: app.id });
    const oldCredential = { kind: 'api_key' as const, keyHash: hashApiKey(old.key) };
    await resolve(oldCredential);

    const rotated = await t.a.call('POST', `/v1/admin/api-keys/${old.id}/rotate`, { grace_seconds: 3600 });
    expect(rotated.status).toBe(201);
    expect(rotated.body.previous.status).toBe('active');
    const graceEnd = Date.parse(rotated.body.previous.expires_at);
    expect(graceEnd).toBeGreaterThan(Date.now() + 3_590_000);
    expect(graceEnd).toBeLessThan(Date.now() + 3_610_000);
    expect(await resolve(oldCredential)).toMatchObject({ ok: true });
    expect(await resolve({ kind: 'api_key', keyHash: hashApiKey(rotated.body.key) })).toMatchObject({ ok: true });

    const revoked = await t.a.call('POST', `/v1/admin/api-keys/${old.id}/revoke`);
    expect(revoked.status).toBe(200);
    expect(revoked.body.status).toBe('revoked');
    expect(await resolve(oldCredential)).toMatchObject({ ok: false, code: 'revoked' });
  });

  it('lists by status as each credential shows it: active, expired (past its expires_at) or revoked', async () => {
    const { agent } = await seedHierarchy(t.a.call, 'Status filter');
    const live = await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id });
    const ended = await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id });
    await t.world.sql`UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = ${ended.id}`;
    const revoked = await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id });
    await t.a.call('POST', `/v1/admin/api-keys/${revoked.id}/revoke`);
    const listed = async (status: string) => {
      const page = await t.a.call('GET', `/v1/admin/api-keys?agent_id=${agent.id}&status=${status}`);
      expect(page.status).toBe(200);
      return page.body.data.map((k: { id: string; status: string }) => [k.id, k.status]);
    };
    expect(await listed('active')).toEqual([[live.id, 'active']]);
    expect(await listed('expired')).toEqual([[ended.id, 'expired']]);
    expect(await listed('revoked')).toEqual([[revoked.id, 'revoked']]);
    const credential = await created(t.a.call, '/v1/admin/client-credentials', { agent_id: agent.id });
    await t.world.sql`UPDATE client_credentials SET expires_at = now() - interval '1 minute' WHERE id = ${credential.id}`;
    const credentials = await t.a.call('GET', `/v1/admin/client-credentials?agent_id=${agent.id}&status=expired`);
    expect(credentials.body.data.map((c: { id: string }) => c.id)).toEqual([credential.id]);
    expect((await t.a.call('GET', `/v1/admin/client-credentials?agent_id=${agent.id}&status=active`)).body.data).toEqual([]);
  });

  it('revokes idempotently, effective in the pipeline at once', async () => {
    const { agent } = await seedHierarchy(t.a.call, 'Revoke');
    const key = await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id, expires_at: new Date(Date.now() + 86_400_000).toISOString() });
    const credential = { kind: 'api_key' as const, keyHash: hashApiKey(key.key) };
    expect((await resolve(credential)).ok).toBe(true);
    const cacheKey = attributionCacheKey(t.world.config.REDIS_PREFIX, t.a.tenantId, credential);
    expect(await t.world.redis.exists(cacheKey)).toBe(1);
    await t.takeControl();

    const first = await t.a.call('POST', `/v1/admin/api-keys/${key.id}/revoke`);
    expect(first.body).toMatchObject({ id: key.id, status: 'revoked' });
    expect(await t.world.redis.exists(cacheKey)).toBe(0);
    expect(await t.takeControl()).toEqual([{ type: 'credentials.changed', tenantId: t.a.tenantId, keyHashes: [credential.keyHash], clientIds: [] }]);
    expect(await resolve(credential)).toMatchObject({ ok: false, code: 'revoked' });

    const second = await t.a.call('POST', `/v1/admin/api-keys/${key.id}/revoke`);
    expect(second.status).toBe(200);
    expect(second.body.revoked_at).toBe(first.body.revoked_at);
    expect((await t.a.call('GET', `/v1/admin/api-keys?agent_id=${agent.id}&status=revoked`)).body.data).toHaveLength(1);
  });

  it('deletes the cache entry again shortly after, in case a resolver cached the old answer in between', async () => {
    const { agent } = await seedHierarchy(t.a.call, 'Race');
    const key = await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id });
    const cacheKey = attributionCacheKey(t.world.config.REDIS_PREFIX, t.a.tenantId, { kind: 'api_key', keyHash: hashApiKey(key.key) });
    await t.a.call('POST', `/v1/admin/api-keys/${key.id}/revoke`);
    // What a resolver that read PostgreSQL before the revoke committed would write now.
    await t.world.redis.set(cacheKey, '{"resolution":{"ok":true}}', 'EX', 600);
    await new Promise((resolve) => setTimeout(resolve, SECOND_INVALIDATION_MS + 200));
    expect(await t.world.redis.exists(cacheKey)).toBe(0);
  });

  it('lists keys by owner with pagination', async () => {
    const { agent } = await seedHierarchy(t.a.call, 'Many keys');
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id })).id);
    const { items, pages } = await listAll(t.a.call, `/v1/admin/api-keys?agent_id=${agent.id}`, 2);
    expect(items.map((k: { id: string }) => k.id)).toEqual(ids);
    expect(pages).toBe(3);
    expect(items.every((k: { key?: string }) => k.key === undefined)).toBe(true);
  });
});

describe('client credentials', () => {
  it('issues client_id and secret once, stores the secret hashed, rotates to a new pair and revokes', async () => {
    const { agent } = await seedHierarchy(t.a.call, 'Clients');
    const issued = await created(t.a.call, '/v1/admin/client-credentials', { agent_id: agent.id });
    expect(issued.client_id).toMatch(/^cli_/);
    expect(issued.client_secret).toMatch(/^cs_[A-Za-z0-9]{40}$/);
    expect(issued).toMatchObject({ agent_id: agent.id, status: 'active', prefix: issued.client_secret.slice(0, 7), last4: issued.client_secret.slice(-4) });
    const [row] = await t.world.sql<{ secret_hash: Buffer }[]>`SELECT secret_hash FROM client_credentials WHERE id = ${issued.id}`;
    expect(row.secret_hash.equals(sha256(issued.client_secret))).toBe(true);
    expect(await storedRows('client_credentials', t.a.tenantId)).not.toContain(issued.client_secret);
    expect((await t.a.call('GET', `/v1/admin/client-credentials/${issued.id}`)).body.client_secret).toBeUndefined();
    const oldClient = { kind: 'client_id' as const, clientId: issued.client_id };
    expect((await resolve(oldClient)).ok).toBe(true);

    const rotated = await t.a.call('POST', `/v1/admin/client-credentials/${issued.id}/rotate`, {});
    expect(rotated.status).toBe(201);
    expect(rotated.body.client_id).not.toBe(issued.client_id);
    expect(rotated.body.client_secret).not.toBe(issued.client_secret);
    expect(rotated.body.previous).toMatchObject({ id: issued.id, status: 'revoked' });
    expect(await resolve(oldClient)).toMatchObject({ ok: false, code: 'revoked' });
    const newClient = { kind: 'client_id' as const, clientId: rotated.body.client_id };
    expect((await resolve(newClient)).ok).toBe(true);

    await t.takeControl();
    const revoked = await t.a.call('POST', `/v1/admin/client-credentials/${rotated.body.id}/revoke`);
    expect(revoked.body.status).toBe('revoked');
    expect(await resolve(newClient)).toMatchObject({ ok: false, code: 'revoked' });
    expect(await t.takeControl()).toEqual([{ type: 'credentials.changed', tenantId: t.a.tenantId, keyHashes: [], clientIds: [rotated.body.client_id] }]);
  });

  it('refuses a grace period beyond 30 days and credentials for an app', async () => {
    const { agent, app } = await seedHierarchy(t.a.call, 'Client limits');
    const issued = await created(t.a.call, '/v1/admin/client-credentials', { agent_id: agent.id });
    const tooLong = await t.a.call('POST', `/v1/admin/client-credentials/${issued.id}/rotate`, { grace_seconds: 31 * 86_400 });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body.error.details[0].path).toBe('grace_seconds');
    expect((await t.a.call('POST', '/v1/admin/client-credentials', { agent_id: app.id })).status).toBe(404);
  });
});

describe('tenant isolation', () => {
  it("cannot issue, read, rotate or revoke credentials of another tenant's agents", async () => {
    const { agent, app } = await seedHierarchy(t.a.call, 'Guarded');
    const key = await created(t.a.call, '/v1/admin/api-keys', { agent_id: agent.id });
    const client = await created(t.a.call, '/v1/admin/client-credentials', { agent_id: agent.id });
    expect((await t.b.call('POST', '/v1/admin/api-keys', { agent_id: agent.id })).status).toBe(404);
    expect((await t.b.call('POST', '/v1/admin/api-keys', { app_id: app.id })).status).toBe(404);
    expect((await t.b.call('POST', '/v1/admin/client-credentials', { agent_id: agent.id })).status).toBe(404);
    for (const path of [`/v1/admin/api-keys/${key.id}`, `/v1/admin/client-credentials/${client.id}`]) {
      expect((await t.b.call('GET', path)).status).toBe(404);
      expect((await t.b.call('POST', `${path}/rotate`)).status).toBe(404);
      expect((await t.b.call('POST', `${path}/revoke`)).status).toBe(404);
    }
    expect((await t.b.call('GET', `/v1/admin/api-keys?agent_id=${agent.id}`)).body.data).toEqual([]);
    expect((await t.a.call('GET', `/v1/admin/api-keys/${key.id}`)).body.status).toBe('active');
    expect((await t.a.call('GET', `/v1/admin/client-credentials/${client.id}`)).body.status).toBe('active');
  });
});
