import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CostModelCache } from '../store/cost-model-cache.js';
import { recordCogsBatch } from '../stages/cogs/index.js';
import { ledgeredEvent, stageEntries, type LedgeredEventOverrides } from '../stages/testing.js';
import { createTenant, type CreatedTenant } from '../store/tenants.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { TenantTokens } from '../store/tenant-tokens.js';
import { createCogsRoutes, percentOf } from './cogs.js';

let world: Isolated;
let app: ReturnType<typeof createCogsRoutes>;
let acme: CreatedTenant;
let other: CreatedTenant;

const MARCH_10 = Date.UTC(2026, 2, 10, 9, 0, 0);
const APRIL_2 = Date.UTC(2026, 3, 2, 9, 0, 0);

beforeAll(async () => {
  world = await isolated('cogs-api');
  app = createCogsRoutes({ sql: world.sql, tokens: new TenantTokens(world.sql, 0) });
  acme = await createTenant(world.sql, 'Acme');
  other = await createTenant(world.sql, 'Other');
  await world.sql`
    INSERT INTO cost_models (id, tenant_id, name, currency, model)
    VALUES ('cm_acme', ${acme.tenantId}, 'providers', 'USD',
            ${world.sql.json({ tools: { transform_schema: '0.002', search: '0.0001' }, default_model: { input_tokens: '0.000001' } })})`;
  const e = (tenantId: string, overrides: LedgeredEventOverrides) => ledgeredEvent({ tenantId, recordedAt: MARCH_10, inputTokens: 1000, ...overrides });
  await recordCogsBatch(
    world.sql,
    new CostModelCache(world.sql),
    stageEntries([
      // transform_schema: cogs 0.002 + 0.001 = 0.003 each, billed 0.0125 each
      e(acme.tenantId, {}),
      e(acme.tenantId, { attribution: { agentId: 'agt_2' } }),
      // search: cogs 0.0001 + 0.001 = 0.0011, billed 0.001: a loss
      e(acme.tenantId, { toolName: 'search', cost: { total: 1_000_000n, tool: 'search' }, attribution: { customerId: 'cus_2', agentId: undefined, appId: 'app_1' } }),
      // April, outside the March range
      e(acme.tenantId, { recordedAt: APRIL_2, cost: { total: 1_000_000_000n } }),
      // EUR subscription: no cost model in EUR
      e(acme.tenantId, { toolName: 'search', subscription: { currency: 'EUR' }, cost: { total: 3n } }),
      e(other.tenantId, { cost: { total: 999n } }),
    ]),
  );
});
afterAll(async () => {
  await world?.cleanup();
});

const get = (query: string, token = acme.ingestToken) =>
  app.request(`/v1/cogs${query}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });

describe('GET /v1/cogs', () => {
  it('answers per tool with calls, price, cogs, margin and margin percentage as decimal strings', async () => {
    const res = await get('?group_by=tool&from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      group_by: 'tool',
      from: '2026-03-01T00:00:00.000Z',
      to: '2026-04-01T00:00:00.000Z',
      rows: [
        { key: 'transform_schema', currency: 'USD', calls: 2, uncosted_calls: 0, price: '0.025', cogs: '0.006', margin: '0.019', margin_pct: '76.00' },
        { key: 'search', currency: 'USD', calls: 1, uncosted_calls: 0, price: '0.001', cogs: '0.0011', margin: '-0.0001', margin_pct: '-10.00' },
        { key: 'search', currency: 'EUR', calls: 1, uncosted_calls: 1, price: '0.000000003', cogs: '0', margin: '0.000000003', margin_pct: '100.00' },
      ],
    });
  });

  it('groups by agent and by customer, over all time without a range', async () => {
    const agents = (await (await get('?group_by=agent')).json()) as { rows: { key: string | null; calls: number; price: string }[] };
    expect(agents.rows.map((r) => [r.key, r.calls, r.price])).toEqual([
      ['agt_test', 2, '1.0125'],
      ['agt_2', 1, '0.0125'],
      [null, 1, '0.001'],
      ['agt_test', 1, '0.000000003'], // in EUR, a row of its own
    ]);
    const customers = (await (await get('?group_by=customer&from=2026-04-01T00:00:00Z')).json()) as { rows: { key: string; cogs: string }[] };
    expect(customers.rows).toEqual([expect.objectContaining({ key: 'cus_test', calls: 1, cogs: '0.003', margin_pct: '99.70' })]);
  });

  it("shows only the caller's tenant", async () => {
    const res = await get('?group_by=customer', other.ingestToken);
    expect(((await res.json()) as { rows: unknown[] }).rows).toEqual([
      { key: 'cus_test', currency: 'USD', calls: 1, uncosted_calls: 1, price: '0.000000999', cogs: '0', margin: '0.000000999', margin_pct: '100.00' },
    ]);
  });

  it('refuses a missing or unknown grouping, a malformed time and an empty range', async () => {
    for (const query of ['', '?group_by=model', '?group_by=tool&from=yesterday', '?group_by=tool&from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z']) {
      const res = await get(query);
      expect(res.status, query).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('validation_failed');
    }
  });

  it('refuses a range that does not start and end on whole hours (COGS are kept per hour)', async () => {
    const res = await get('?group_by=tool&from=2026-03-01T00:30:00Z&to=2026-03-02T00:00:00.001Z');
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; details: { path: string }[] } };
    expect(body.error.code).toBe('validation_failed');
    expect(body.error.details.map((d) => d.path)).toEqual(['from', 'to']);
    // A whole hour in another offset is a whole hour.
    expect((await get(`?group_by=tool&from=${encodeURIComponent('2026-03-01T05:00:00+05:00')}`)).status).toBe(200);
  });

  it('refuses a time past year 9998 or before 1970 with its path', async () => {
    const res = await get(`?group_by=tool&from=1969-12-31T23:00:00Z&to=${encodeURIComponent('9999-12-31T23:00:00-01:00')}`);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { details: { path: string }[] } }).error.details.map((d) => d.path)).toEqual(['from', 'to']);
  });

  it('answers from the hourly sums: an hour range holds the events recorded in it', async () => {
    const hour = (h: number) => new Date(MARCH_10 + h * 3_600_000).toISOString();
    const rows = async (from: string, to: string) => ((await (await get(`?group_by=customer&from=${from}&to=${to}`)).json()) as { rows: { calls: number }[] }).rows;
    expect((await rows(hour(0), hour(1))).reduce((n, r) => n + r.calls, 0)).toBe(4);
    expect(await rows(hour(1), hour(2))).toEqual([]);
  });

  it('requires an ingest token of the tenant', async () => {
    expect((await get('?group_by=tool', '')).status).toBe(401);
    expect((await get('?group_by=tool', acme.adminToken)).status).toBe(401);
    expect((await get('?group_by=tool', 'amt_nothere_secret')).status).toBe(401);
  });
});

describe('percentOf', () => {
  it('rounds half away from zero, exactly', () => {
    expect(percentOf(1n, 3n)).toBe('33.33');
    expect(percentOf(2n, 3n)).toBe('66.67');
    expect(percentOf(-2n, 3n)).toBe('-66.67');
    expect(percentOf(1n, 8000n)).toBe('0.01'); // 0.0125 -> 0.01
    expect(percentOf(1n, 400n)).toBe('0.25');
    expect(percentOf(5n, 100_000n)).toBe('0.01'); // 0.005 -> 0.01
    expect(percentOf(-5n, 100_000n)).toBe('-0.01');
    expect(percentOf(7n, 0n)).toBeNull();
    expect(percentOf(10n ** 30n, 10n ** 28n)).toBe('10000.00');
  });
});
