import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { TenantTokens } from './tenant-tokens.js';
import { createTenant, rotateTenantToken } from './tenants.js';

let world: Isolated;
beforeAll(async () => {
  world = await isolated('tenants');
});
afterAll(async () => {
  await world?.cleanup();
});

describe('createTenant', () => {
  it('issues an ingest and an admin token that verify, storing only their digests', async () => {
    const tenant = await createTenant(world.sql, 'Acme MCP');
    const tokens = new TenantTokens(world.sql, 0);
    expect(await tokens.verify(tenant.ingestToken)).toEqual({ tenantId: tenant.tenantId, kind: 'ingest', tokenId: expect.stringMatching(/^tok_/) });
    expect(await tokens.verify(tenant.adminToken)).toEqual({ tenantId: tenant.tenantId, kind: 'admin', tokenId: expect.stringMatching(/^tok_/) });
    const rows = await world.sql`SELECT * FROM tenant_tokens WHERE tenant_id = ${tenant.tenantId}`;
    expect(rows).toHaveLength(2);
    const stored = JSON.stringify(rows);
    expect(stored).not.toContain(tenant.adminToken);
    expect(stored).not.toContain(tenant.ingestToken);
  });
});

describe('rotateTenantToken', () => {
  it('retires the old token at once without grace', async () => {
    const tenant = await createTenant(world.sql, 'Rotate now');
    const rotated = await rotateTenantToken(world.sql, tenant.tenantId, 'admin');
    const tokens = new TenantTokens(world.sql, 0);
    expect(await tokens.verify(tenant.adminToken)).toBeUndefined();
    expect(await tokens.verify(rotated.token)).toEqual({ tenantId: tenant.tenantId, kind: 'admin', tokenId: expect.stringMatching(/^tok_/) });
    expect(await tokens.verify(tenant.ingestToken)).toBeDefined();
    expect(rotated.retiredTokenIds).toHaveLength(1);
  });

  it('keeps the old token working through the grace period', async () => {
    const tenant = await createTenant(world.sql, 'Rotate with grace');
    const rotated = await rotateTenantToken(world.sql, tenant.tenantId, 'ingest', { graceSeconds: 600 });
    const tokens = new TenantTokens(world.sql, 0);
    // verify names the token too (an admin action is recorded with it): here the retired one.
    expect(await tokens.verify(tenant.ingestToken)).toEqual({ tenantId: tenant.tenantId, kind: 'ingest', tokenId: rotated.retiredTokenIds[0] });
    expect(await tokens.verify(rotated.token)).toEqual({ tenantId: tenant.tenantId, kind: 'ingest', tokenId: expect.stringMatching(/^tok_/) });
    const [old] = await world.sql<{ status: string; expires_at: Date }[]>`
      SELECT status, expires_at FROM tenant_tokens WHERE id = ${rotated.retiredTokenIds[0]}`;
    expect(old.status).toBe('revoked');
    expect(old.expires_at.getTime()).toBeGreaterThan(Date.now() + 590_000);
  });

  it('a rotation without grace ends a token still in the grace of an earlier rotation', async () => {
    const tenant = await createTenant(world.sql, 'Leaked after a graced rotation');
    const graced = await rotateTenantToken(world.sql, tenant.tenantId, 'ingest', { graceSeconds: 30 * 86_400 });
    const now = await rotateTenantToken(world.sql, tenant.tenantId, 'ingest');
    const tokens = new TenantTokens(world.sql, 0);
    expect(await tokens.verify(tenant.ingestToken)).toBeUndefined();
    expect(await tokens.verify(graced.token)).toBeUndefined();
    expect(await tokens.verify(now.token)).toBeDefined();
    expect(now.retiredTokenIds).toHaveLength(2);
    expect(now.retiredTokenIds).toContain(graced.retiredTokenIds[0]);
  });

  it('a second graced rotation does not lengthen the grace of a token already retired', async () => {
    const tenant = await createTenant(world.sql, 'Grace kept short');
    const first = await rotateTenantToken(world.sql, tenant.tenantId, 'admin', { graceSeconds: 60 });
    await rotateTenantToken(world.sql, tenant.tenantId, 'admin', { graceSeconds: 86_400 });
    const [original] = await world.sql<{ expires_at: Date }[]>`SELECT expires_at FROM tenant_tokens WHERE id = ${first.retiredTokenIds[0]}`;
    expect(original.expires_at.getTime()).toBeLessThan(Date.now() + 61_000);
  });

  it('rotations at the same time leave exactly one active token of the kind', async () => {
    const tenant = await createTenant(world.sql, 'Rotate at once');
    const tokens = new TenantTokens(world.sql, 0);
    for (let round = 0; round < 5; round++) {
      const rotated = await Promise.all(Array.from({ length: 6 }, () => rotateTenantToken(world.sql, tenant.tenantId, 'ingest')));
      const valid = await Promise.all(rotated.map(async (r) => (await tokens.verify(r.token)) !== undefined));
      expect(valid.filter(Boolean)).toHaveLength(1);
      const [{ n }] = await world.sql<{ n: number }[]>`
        SELECT count(*)::int AS n FROM tenant_tokens WHERE tenant_id = ${tenant.tenantId} AND kind = 'ingest' AND status = 'active'`;
      expect(n).toBe(1);
    }
  });
});
