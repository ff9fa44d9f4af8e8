import { Hono } from 'hono';
import { invoiceJson } from '../domain/rating/quote.js';
import type { Sql } from '../store/postgres.js';
import { draftInvoice } from '../store/invoices.js';
import { PlanCache } from '../store/rate-plans.js';
import { requireTenant, type TenantAuthVariables, type TenantTokens } from './auth.js';

/**
 * `GET /v1/customers/{id}/invoices/current`: the customer's draft invoice for the current
 * billing period (or the period containing `?at=<ISO time>`), rated from the aggregates
 * invoice-rollup keeps, current to the last ledgered event.
 */
export function createInvoiceRoutes(deps: { sql: Sql; tokens: TenantTokens; plans?: PlanCache }): Hono<{ Variables: TenantAuthVariables }> {
  const { sql, tokens } = deps;
  const plans = deps.plans ?? new PlanCache(sql);
  const app = new Hono<{ Variables: TenantAuthVariables }>();
  app.get('/v1/customers/:id/invoices/current', requireTenant(tokens, 'ingest'), async (c) => {
    const tenantId = c.get('tenantId');
    const customerId = c.req.param('id');
    const atParam = c.req.query('at');
    const at = atParam === undefined ? Date.now() : Date.parse(atParam);
    if (Number.isNaN(at)) {
      return c.json({ error: { code: 'validation_failed', message: `at must be an ISO 8601 time, got ${JSON.stringify(atParam)}` } }, 400);
    }
    const [customer] = await sql`SELECT id FROM customers WHERE tenant_id = ${tenantId} AND id = ${customerId}`;
    if (!customer) return c.json({ error: { code: 'not_found', message: `no customer ${customerId}` } }, 404);
    const draft = await draftInvoice(sql, plans, tenantId, customerId, at);
    if (!draft) {
      return c.json({ error: { code: 'no_subscription', message: `customer ${customerId} has no subscription in the period containing ${new Date(at).toISOString()}` } }, 404);
    }
    return c.json({
      customer_id: draft.customerId,
      status: 'draft',
      period_start: new Date(draft.periodStart).toISOString(),
      period_end: new Date(draft.periodEnd).toISOString(),
      subscription_ids: draft.subscriptionIds,
      ...invoiceJson(draft.invoice),
    });
  });
  return app;
}
