import { describe, expect, it } from 'vitest';
import { TenantTokens } from '../../store/tenant-tokens.js';
import { adminWorld } from './test-world.js';

const t = adminWorld('admin-tokens');

describe('tenant token rotation', () => {
  it('rotates the ingest token with a grace period, both working until it ends', async () => {
    await t.takeControl();
    const reply = await t.a.call('POST', '/v1/admin/tenant-tokens/rotate', { kind: 'ingest', grace_seconds: 600 });
    expect(reply.status).toBe(201);
    expect(reply.body).toMatchObject({ kind: 'ingest', token: expect.stringMatching(/^amt_/), retired_token_ids: [expect.any(String)] });
    const tokens = new TenantTokens(t.world.sql, 0);
    expect(await tokens.verify(reply.body.token)).toEqual({ tenantId: t.a.tenantId, kind: 'ingest', tokenId: expect.stringMatching(/^tok_/) });
    expect(await tokens.verify(t.a.ingestToken)).toEqual({ tenantId: t.a.tenantId, kind: 'ingest', tokenId: reply.body.retired_token_ids[0] });
    expect(await t.takeControl()).toEqual([{ type: 'tenant-tokens.changed', tenantId: t.a.tenantId }]);
  });

  it("rotating the admin token without grace ends the old one at once, in this process too, and only the caller's", async () => {
    expect((await t.a.call('GET', '/v1/admin/customers')).status).toBe(200);
    const reply = await t.a.call('POST', '/v1/admin/tenant-tokens/rotate', { kind: 'admin' });
    expect(reply.status).toBe(201);
    expect((await t.a.call('GET', '/v1/admin/customers')).status).toBe(401);
    const fresh = await t.app.request('/v1/admin/customers', { headers: { authorization: `Bearer ${reply.body.token}` } });
    expect(fresh.status).toBe(200);
    expect((await t.b.call('GET', '/v1/admin/customers')).status).toBe(200);
  });

  it('refuses an unknown kind', async () => {
    const reply = await t.b.call('POST', '/v1/admin/tenant-tokens/rotate', { kind: 'root' });
    expect(reply.status).toBe(400);
    expect(reply.body.error.details[0].path).toBe('kind');
  });
});
