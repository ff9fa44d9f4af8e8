import { describe, expect, it } from 'vitest';
import { createQuoteRoutes } from './quote.js';

const app = createQuoteRoutes();
const post = (body: unknown) =>
  app.request('/v1/rate-plans/quote', { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });

describe('POST /v1/rate-plans/quote', () => {
  it("answers the article's worked example with every line, its rule and amounts as decimal strings", async () => {
    const response = await post({
      plan: {
        currency: 'USD',
        tool_invocations: { transform_schema: '0.10', '*': '0.002' },
        token_multipliers: { input_tokens: '0.000001', output_tokens: '0.000002' },
      },
      usage: { calls: [{ tool: 'transform_schema', count: 1000, input_tokens: 2_400_000, output_tokens: 150_000 }] },
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { lines: Record<string, unknown>[] };
    // 1,000 x 0.1027 = 102.70
    expect(body).toMatchObject({ currency: 'USD', total: '102.70', total_exact: '102.7', total_nano: '102700000000', calls: 1000 });
    expect(body.lines).toEqual([
      expect.objectContaining({ code: 'tool', rule: 'calls x $.tool_invocations.transform_schema', quantity: '1000', unit_price: '0.1', amount: '100.00' }),
      expect.objectContaining({ code: 'input_tokens', quantity: '2400000', unit_price: '0.000001', amount: '2.40' }),
      expect.objectContaining({ code: 'output_tokens', quantity: '150000', unit_price: '0.000002', amount: '0.30' }),
    ]);
    for (const line of body.lines) expect(typeof line.amount).toBe('string');
  });

  it("quotes the article's plan as written (wrapped, bounded last bucket) and answers the warning with the quote", async () => {
    const response = await post({
      plan: {
        currency: 'USD',
        dimensionPricing: {
          tool_invocations: { transform_schema: 0.1, '*': 0.002 },
          duration_buckets: [
            { max_seconds: 60, rate: 0.1 },
            { max_seconds: 300, rate: 0.3 },
            { max_seconds: 3600, rate: 1.5 },
          ],
        },
      },
      usage: { calls: [{ tool: 'transform_schema', count: 2, duration_ms: 5_000_000 }] },
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { total: string; warnings: unknown[] };
    expect(body.total).toBe('3.20'); // 2 x (0.10 + 1.50): calls over 3600 s priced at the last bucket
    expect(body.warnings).toEqual([
      {
        path: '$.plan.dimensionPricing.duration_buckets[2].max_seconds',
        message: 'the last bucket is bounded: calls longer than 3600 s are priced at this bucket\'s rate (1.5); write "max_seconds": null to make that explicit',
      },
    ]);
  });

  it('answers 400 with every problem by JSON path', async () => {
    const response = await post({ plan: { currency: 'USD', tool_invocations: { a: -1 } }, usage: { calls: [{ count: 0 }] } });
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({
      error: {
        code: 'validation_failed',
        message: 'invalid quote request: $.plan.tool_invocations.a: must be zero or more, got -1',
        details: [
          { path: '$.plan.tool_invocations.a', message: 'must be zero or more, got -1' },
          { path: '$.usage.calls[0].count', message: 'a call group has at least one call' },
        ],
      },
    });
  });

  it('answers 400 to a body that is not JSON', async () => {
    const response = await post('{plan:');
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
  });

  it('answers 400 to terms the plan cannot take', async () => {
    const response = await post({ plan: { currency: 'USD', tool_invocations: { '*': 1 } }, usage: {}, terms: { allocation: { a1: 5 } } });
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({
      error: { code: 'invalid_quote', message: 'terms.commitment and terms.allocation apply to a COMMITTED plan only' },
    });
  });
});
