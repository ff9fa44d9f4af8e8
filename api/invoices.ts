import { Hono } from 'hono';
import { invoiceJson } from '../domain/rating/quote.js';
import { formatNano } from '../domain/money.js';
import { END_OF_YEAR_9998 } from '../domain/validation.js';
import type { Sql } from '../pipeline/postgres.js';
import { creditsCarried, draftInvoice, getInvoice, listInvoices, pendingAdjustments, type InvoiceDocument } from '../store/invoices.js';
import { PlanCache } from '../store/rate-plans.js';
import type { TenantTokens } from '../store/tenant-tokens.js';
import { ApiError, notFound, validationFailed } from './errors.js';
import { requireTenant, type TenantAuthVariables } from './auth.js';

/**
 * Invoices of a customer (ingest token, like the draft):
 * - `GET /v1/customers/{id}/invoices/current`: the draft of the current billing period (or the
 *   period containing `?at=`), rated from the aggregates invoice-rollup keeps, current to the last
 *   ledgered event, with the adjustments the next close would bill for earlier closed periods;
 * - `GET /v1/customers/{id}/invoices`: closed invoices and credit notes, newest first;
 * - `GET /v1/customers/{id}/invoices/{invoice}` (id or number): one, as frozen at close;
 * - `GET /v1/customers/{id}/invoices/{invoice}/download?format=json|csv|html`.
 */
export function createInvoiceRoutes(deps: { sql: Sql; tokens: TenantTokens; plans?: PlanCache }): Hono<{ Variables: TenantAuthVariables }> {
  const { sql, tokens } = deps;
  const plans = deps.plans ?? new PlanCache(sql);
  const app = new Hono<{ Variables: TenantAuthVariables }>();
  app.use('/v1/customers/:id/invoices', requireTenant(tokens, 'ingest'));
  app.use('/v1/customers/:id/invoices/*', requireTenant(tokens, 'ingest'));

  const customerOf = async (tenantId: string, customerId: string) => {
    const [customer] = await sql`SELECT id FROM customers WHERE tenant_id = ${tenantId} AND id = ${customerId}`;
    if (!customer) throw notFound('customer', customerId);
  };

  app.get('/v1/customers/:id/invoices/current', async (c) => {
    const tenantId = c.get('tenantId');
    const customerId = c.req.param('id');
    const atParam = c.req.query('at');
    const at = atParam === undefined ? Date.now() : Date.parse(atParam);
    if (Number.isNaN(at) || at < 0 || at >= END_OF_YEAR_9998) {
      throw new ApiError(400, 'validation_failed', `at must be an ISO 8601 time between 1970 and 9998, got ${JSON.stringify(atParam)}`, [
        { path: 'at', message: 'must be an ISO 8601 time between 1970 and 9998' },
      ]);
    }
    await customerOf(tenantId, customerId);
    const draft = await draftInvoice(sql, plans, tenantId, customerId, at);
    if (!draft) {
      throw new ApiError(404, 'no_subscription', `customer ${customerId} has no subscription in the period containing ${new Date(at).toISOString()}`);
    }
    const adjustments = await pendingAdjustments(sql, plans, tenantId, customerId, new Date(draft.periodStart), draft.invoice.currency);
    const carried = await creditsCarried(sql, tenantId, customerId, draft.invoice.currency);
    return c.json({
      customer_id: draft.customerId,
      status: 'draft',
      period_start: new Date(draft.periodStart).toISOString(),
      period_end: new Date(draft.periodEnd).toISOString(),
      subscription_ids: draft.subscriptionIds,
      ...invoiceJson(draft.invoice),
      pending_adjustments: adjustments,
      // Owed to the customer by an earlier invoice below zero: the close takes it off this one.
      credit_carried: formatNano(carried.reduce((sum, c) => sum + c.nano, 0n), draft.invoice.minor_unit_digits),
    });
  });

  app.get('/v1/customers/:id/invoices', async (c) => {
    const tenantId = c.get('tenantId');
    const customerId = c.req.param('id');
    const limitText = c.req.query('limit') ?? '50';
    const limit = Number(limitText);
    if (!/^\d+$/.test(limitText) || limit < 1 || limit > 200) throw validationFailed('limit must be 1 to 200', [{ path: 'limit', message: 'must be an integer from 1 to 200' }]);
    const cursor = c.req.query('cursor');
    let before: { issuedAt: Date; id: string } | undefined;
    if (cursor) {
      try {
        const [issuedAt, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString()) as [string, string];
        before = { issuedAt: new Date(issuedAt), id };
        if (Number.isNaN(before.issuedAt.getTime()) || typeof id !== 'string') throw new Error('bad cursor');
      } catch {
        throw new ApiError(400, 'invalid_cursor', 'cursor is not one this API gave out');
      }
    }
    await customerOf(tenantId, customerId);
    const data = await listInvoices(sql, tenantId, customerId, limit, before);
    const last = data.at(-1);
    const next = data.length === limit && last ? Buffer.from(JSON.stringify([last.issued_at, last.id])).toString('base64url') : null;
    return c.json({ data, next_cursor: next });
  });

  const documentOf = async (tenantId: string, customerId: string, id: string): Promise<InvoiceDocument> => {
    await customerOf(tenantId, customerId);
    const doc = await getInvoice(sql, tenantId, customerId, id);
    if (!doc) throw notFound('invoice', id);
    return doc;
  };

  app.get('/v1/customers/:id/invoices/:invoice', async (c) => c.json(await documentOf(c.get('tenantId'), c.req.param('id'), c.req.param('invoice'))));

  app.get('/v1/customers/:id/invoices/:invoice/download', async (c) => {
    const format = c.req.query('format') ?? 'json';
    if (format !== 'json' && format !== 'csv' && format !== 'html') {
      throw validationFailed('format must be json, csv or html', [{ path: 'format', message: 'must be json, csv or html' }]);
    }
    const doc = await documentOf(c.get('tenantId'), c.req.param('id'), c.req.param('invoice'));
    const disposition = (ext: string) => ({ 'content-disposition': `attachment; filename="${doc.number}.${ext}"` });
    if (format === 'json') return c.body(JSON.stringify(doc, null, 2), 200, { 'content-type': 'application/json', ...disposition('json') });
    if (format === 'csv') return c.body(invoiceCsv(doc), 200, { 'content-type': 'text/csv; charset=utf-8', ...disposition('csv') });
    return c.html(invoiceHtml(doc));
  });
  return app;
}

const CSV_COLUMNS = ['number', 'step', 'code', 'period_start', 'period_end', 'adjusts_invoice', 'description', 'rule', 'quantity', 'unit_price', 'amount', 'amount_nano'] as const;

/** RFC 4180: every field quoted, quotes doubled; a leading = + - @ is prefixed with ' so a spreadsheet never runs it. */
function csvField(value: string): string {
  const safe = /^[=+\-@\t\r]/.test(value) && !/^-?\d/.test(value) ? `'${value}` : value;
  return `"${safe.replaceAll('"', '""')}"`;
}

function invoiceCsv(doc: InvoiceDocument): string {
  const rows = [CSV_COLUMNS.join(',')];
  for (const line of doc.lines) {
    const record: Record<string, string> = {
      number: doc.number,
      step: String(line.step),
      code: line.code,
      period_start: line.period_start ?? doc.period_start,
      period_end: line.period_end ?? doc.period_end,
      adjusts_invoice: line.adjusts_invoice ?? '',
      description: line.description,
      rule: line.rule,
      quantity: line.quantity,
      unit_price: line.unit_price,
      amount: line.amount,
      amount_nano: line.amount_nano,
    };
    rows.push(CSV_COLUMNS.map((column) => csvField(record[column])).join(','));
  }
  const totals: [string, string][] = [
    ['total', doc.total],
    ['credits_applied', doc.credits_applied],
    ['amount_due', doc.amount_due],
    ...(doc.credit_carried_forward ? [['credit_carried_forward', doc.credit_carried_forward] as [string, string]] : []),
  ];
  for (const [code, amount] of totals) rows.push(CSV_COLUMNS.map((column) => csvField(column === 'number' ? doc.number : column === 'code' ? code : column === 'amount' ? amount : '')).join(','));
  return `${rows.join('\r\n')}\r\n`;
}

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

/** A printable page: no script, no outside resource. */
function invoiceHtml(doc: InvoiceDocument): string {
  const title = `${doc.kind === 'invoice' ? 'Invoice' : 'Credit note'} ${doc.number}`;
  const rows = doc.lines
    .map(
      (l) =>
        `<tr><td>${l.step}</td><td>${escapeHtml(l.description)}<div class="rule">${escapeHtml(l.rule)}</div></td><td class="n">${escapeHtml(l.quantity)}</td><td class="n">${escapeHtml(l.unit_price)}</td><td class="n">${escapeHtml(l.amount)}</td></tr>`,
    )
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;color:#111}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left}
.n{text-align:right;font-variant-numeric:tabular-nums}.rule{color:#666;font-size:12px}@media print{body{margin:0}}</style></head>
<body><h1>${escapeHtml(title)}</h1>
<p>Customer ${escapeHtml(doc.customer_id)} &middot; period ${escapeHtml(doc.period_start)} to ${escapeHtml(doc.period_end)} &middot; issued ${escapeHtml(doc.issued_at)} &middot; ${escapeHtml(doc.currency)}${doc.corrects_invoice ? ` &middot; corrects ${escapeHtml(doc.corrects_invoice)}` : ''}</p>
<table><thead><tr><th>Step</th><th>Line</th><th class="n">Quantity</th><th class="n">Unit price</th><th class="n">Amount</th></tr></thead>
<tbody>
${rows}
</tbody>
<tfoot><tr><th colspan="4">Total</th><th class="n">${escapeHtml(doc.total)}</th></tr>
<tr><th colspan="4">Credits applied</th><th class="n">${escapeHtml(doc.credits_applied)}</th></tr>
<tr><th colspan="4">Amount due</th><th class="n">${escapeHtml(doc.amount_due)} ${escapeHtml(doc.currency)}</th></tr>${
    doc.credit_carried_forward
      ? `\n<tr><th colspan="4">Credit carried to the next invoice</th><th class="n">${escapeHtml(doc.credit_carried_forward)} ${escapeHtml(doc.currency)}</th></tr>`
      : ''
  }</tfoot></table>
<p class="rule">${escapeHtml(doc.rounding)}. Plan versions: ${doc.plan_versions.map((p) => `${escapeHtml(p.rate_plan_id)} v${p.rate_plan_version}`).join(', ') || 'as on the corrected invoice'}.</p>
</body></html>`;
}
