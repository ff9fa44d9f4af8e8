import { Hono } from 'hono';
import { invoiceJson, parseQuoteRequest, quote } from '../domain/rating/quote.js';
import { RatingError } from '../domain/rating/rate-period.js';

/**
 * POST /v1/rate-plans/quote: prices a usage vector under a plan, with the rating engine that
 * bills, and answers every line with the rule that produced it. Body:
 * `{ plan: { currency, version?, ...pricing }, usage: { month_to_date_invocations?, sessions?, calls? }, terms? }`.
 * Pure computation, no storage; the app mounts it behind the tenant-token middleware.
 */
export function createQuoteRoutes(): Hono {
  const app = new Hono();
  app.post('/v1/rate-plans/quote', async (c) => {
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      return c.json({ error: { code: 'invalid_json', message: 'the body must be JSON: { plan, usage, terms? }', details: [] } }, 400);
    }
    const parsed = parseQuoteRequest(body);
    if (!parsed.ok) {
      const [first] = parsed.errors;
      return c.json({ error: { code: 'validation_failed', message: `invalid quote request: ${first.path}: ${first.message}`, details: parsed.errors } }, 400);
    }
    const { plan, usage, terms } = parsed.request;
    try {
      return c.json(invoiceJson(quote(plan, usage, terms)));
    } catch (err) {
      if (!(err instanceof RatingError)) throw err;
      return c.json({ error: { code: 'invalid_quote', message: err.message, details: [] } }, 400);
    }
  });
  return app;
}
