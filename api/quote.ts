import { Hono } from 'hono';
import { invoiceJson, parseQuoteRequest, quote } from '../domain/rating/quote.js';
import { RatingError } from '../domain/rating/rate-period.js';
import { ApiError } from './errors.js';

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
      throw new ApiError(400, 'invalid_json', 'the body must be JSON: { plan, usage, terms? }');
    }
    const parsed = parseQuoteRequest(body);
    if (!parsed.ok) {
      const [first] = parsed.errors;
      throw new ApiError(400, 'validation_failed', `invalid quote request: ${first.path}: ${first.message}`, parsed.errors);
    }
    const { plan, usage, terms, warnings } = parsed.request;
    try {
      return c.json(invoiceJson(quote(plan, usage, terms, warnings)));
    } catch (err) {
      if (!(err instanceof RatingError)) throw err;
      throw new ApiError(400, 'invalid_quote', err.message);
    }
  });
  return app;
}
