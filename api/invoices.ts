import { Hono } from 'hono';
import { invoiceJson } from '../domain/rating/quote.js';
import type { Sql } from '../pipeline/postgres.js';
import { draftInvoice } from '../store/invoices.js';
import { PlanCache } from '../store/rate-plans.js';
import type { TenantTokens } from '../store/tenant-tokens.js';
import { ApiError, notFound } from './errors.js';
import { requireTenant, type TenantAuthVariables } from './auth.js';

/** A period must end within four-digit years, where PostgreSQL and ISO 8601 both hold it. */
const LATEST_AT = Date.UTC(9999, 0, 1);

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
    if (Number.isNaN(at) || at < 0 || at >= LATEST_AT) {
      throw new ApiError(400, 'validation_failed', `at must be an ISO 8601 time between 1970 and 9998, got ${JSON.stringify(atParam)}`, [
        { path: 'at', message: 'must be an ISO 8601 time between 1970 and 9998' },
      ]);
    }
    const [customer] = await sql`SELECT id FROM customers WHERE tenant_id = ${tenantId} AND id = ${customerId}`;
    if (!customer) throw notFound('customer', customerId);
    const draft = await draftInvoice(sql, plans, tenantId, customerId, at);
    if (!draft) {
      throw new ApiError(404, 'no_subscription', `customer ${customerId} has no subscription in the period containing ${new Date(at).toISOString()}`);
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
