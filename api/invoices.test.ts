import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlanCache } from '../store/rate-plans.js';
import { closePeriod } from '../store/invoices.js';
import { TenantTokens } from '../store/tenant-tokens.js';
import { createTenant, type CreatedTenant } from '../store/tenants.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { seedSmall } from '../test/support/billing.js';
import type { SeededTenant } from '../ops/seed.js';
import { ledgeredEvent, stageEntries } from '../stages/testing.js';
import { rollUp } from '../stages/invoice-rollup/index.js';
import { createInvoiceRoutes } from './invoices.js';

const MARCH = Date.UTC(2026, 2, 1);
const APRIL = Date.UTC(2026, 3, 1);

let world: Isolated;
let tenant: SeededTenant;
let other: CreatedTenant;
let app: ReturnType<typeof createInvoiceRoutes>;

beforeAll(async () => {
  world = await isolated('invoices-api');
  tenant = await seedSmall(world.sql, { pricing: { tool_invocations: { '*': '0.05' } }, customers: 1, subscriptionsFrom: new Date(MARCH) });
  other = await createTenant(world.sql, 'Other');
  app = createInvoiceRoutes({ sql: world.sql, tokens: new TenantTokens(world.sql, 0) });
  const customer = tenant.customers[0];
  const plans = new PlanCache(world.sql);
  await rollUp(
    world.sql,
    plans,
    stageEntries(
      [1, 2].map(() =>
        ledgeredEvent({
          tenantId: tenant.tenantId,
          sessionId: undefined,
          recordedAt: MARCH + 86_400_000,
          attribution: { customerId: customer.id, teamId: customer.teams[0].id, agentId: customer.teams[0].agents[0].id },
          subscription: { subscriptionId: customer.subscriptionId, ratePlanVersionId: tenant.ratePlanVersionId, periodStart: MARCH, periodEnd: APRIL },
          cost: { total: 50_000_000n, tool: '*', breakdown: { tool: 50_000_000n } },
        }),
      ),
    ),
  );
  await closePeriod(world.sql, plans, tenant.tenantId, customer.id, { start: MARCH, end: APRIL });
});
afterAll(() => world.cleanup());

const get = (path: string, token = tenant.ingestToken) => app.request(path, { headers: { authorization: `Bearer ${token}` } });

describe('invoice routes', () => {
  it('lists a customer\'s closed invoices and serves one as JSON, CSV and a printable page', async () => {
    const customerId = tenant.customers[0].id;
    const list = await get(`/v1/customers/${customerId}/invoices`);
    expect(list.status).toBe(200);
    const { data, next_cursor } = (await list.json()) as { data: { id: string; number: string; total: string }[]; next_cursor: string | null };
    expect(data).toMatchObject([{ number: 'INV-000001', total: '0.10' }]);
    expect(next_cursor).toBeNull();

    const one = await get(`/v1/customers/${customerId}/invoices/INV-000001`);
    expect(await one.json()).toMatchObject({ id: data[0].id, kind: 'invoice', status: 'closed', total: '0.10', amount_due: '0.10' });

    const csv = await get(`/v1/customers/${customerId}/invoices/${data[0].id}/download?format=csv`);
    expect(csv.headers.get('content-type')).toContain('text/csv');
    expect(csv.headers.get('content-disposition')).toContain('INV-000001.csv');
    const text = await csv.text();
    expect(text.split('\r\n')[0]).toBe('number,step,code,period_start,period_end,adjusts_invoice,description,rule,quantity,unit_price,amount,amount_nano');
    expect(text).toContain('"amount_due"');

    const html = await get(`/v1/customers/${customerId}/invoices/${data[0].id}/download?format=html`);
    expect(html.headers.get('content-type')).toContain('text/html');
    expect(await html.text()).toContain('Invoice INV-000001');

    const json = await get(`/v1/customers/${customerId}/invoices/${data[0].id}/download`);
    expect(json.headers.get('content-disposition')).toContain('INV-000001.json');
    expect(((await json.json()) as { number: string }).number).toBe('INV-000001');
  });

  it('answers 404 for another tenant\'s customer or invoice, 400 for a bad format, 401 without the token', async () => {
    const customerId = tenant.customers[0].id;
    expect((await get(`/v1/customers/${customerId}/invoices`, other.ingestToken)).status).toBe(404);
    expect((await get(`/v1/customers/${customerId}/invoices/INV-000001`, other.ingestToken)).status).toBe(404);
    expect((await get(`/v1/customers/${customerId}/invoices/INV-999999`)).status).toBe(404);
    const bad = await get(`/v1/customers/${customerId}/invoices/INV-000001/download?format=pdf`);
    expect(bad.status).toBe(400);
    expect((await app.request(`/v1/customers/${customerId}/invoices`)).status).toBe(401);
  });
});
