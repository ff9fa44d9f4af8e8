import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { validateRatePlan } from './plan.js';
import { invoiceJson, parseQuoteRequest, quote, type UsageVector } from './quote.js';

/**
 * Every plan JSON the article prints (`article-plans/*.jsonc`), pasted as the article shows it,
 * comments included; the test only removes the `//` comments, as a reader pasting it would.
 * Each one validates and quotes the amounts the article states next to it.
 */
const FIXTURES = new URL('./article-plans/', import.meta.url);

function articleText(name: string): string {
  return readFileSync(new URL(`${name}.jsonc`, FIXTURES), 'utf8');
}

/** The article's JSON with its `// ...` comments removed (none of its strings holds `//`). */
function withoutComments(text: string): string {
  return text.replace(/[ \t]*\/\/[^\n]*/g, '');
}

function articlePlan(name: string): Record<string, unknown> {
  return JSON.parse(withoutComments(articleText(name)));
}

interface QuoteJson {
  total: string;
  total_exact: string;
  lines: { code: string; rule: string; amount: string; amount_nano: string; description: string }[];
  warnings: { path: string; message: string }[];
}

/** Quotes the usage under the article's pricing, in USD, the way `POST /v1/rate-plans/quote` and `npm run quote` read it. */
function quoteOf(pricing: Record<string, unknown>, usage: UsageVector): QuoteJson {
  const parsed = parseQuoteRequest({ plan: { currency: 'USD', ...pricing }, usage });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const { plan, terms, warnings } = parsed.request;
  return invoiceJson(quote(plan, parsed.request.usage, terms, warnings)) as unknown as QuoteJson;
}

const ONE_TRANSFORM = { tool: 'transform_schema', count: 1, input_tokens: 2400, output_tokens: 150, duration_ms: 847 };
const BOUNDED_WARNING = (seconds: string, rate: string) =>
  `the last bucket is bounded: calls longer than ${seconds} s are priced at this bucket's rate (${rate}); write "max_seconds": null to make that explicit`;

describe("every plan JSON printed in the article, pasted as is", () => {
  it('is one of the fixtures, and each fixture validates (with a warning exactly where the last duration bucket is bounded)', () => {
    const names = readdirSync(FIXTURES)
      .filter((file) => file.endsWith('.jsonc'))
      .map((file) => file.replace(/\.jsonc$/, ''))
      .sort();
    expect(names).toEqual([
      'dimension-1-tool-invocations',
      'dimension-2-token-multipliers',
      'dimension-3-duration-buckets',
      'dimension-4-error-rate-penalties',
      'dimension-5-volume-tiers',
      'problem-1-dimension-pricing',
    ]);
    const warnings = Object.fromEntries(
      names.map((name) => {
        const result = validateRatePlan(articlePlan(name));
        expect(result.ok, `${name}: ${JSON.stringify(result)}`).toBe(true);
        return [name, result.ok ? result.warnings : []];
      }),
    );
    expect(warnings).toEqual({
      'dimension-1-tool-invocations': [],
      'dimension-2-token-multipliers': [],
      'dimension-3-duration-buckets': [{ path: '$.duration_buckets[2].max_seconds', message: BOUNDED_WARNING('3600', '2') }],
      'dimension-4-error-rate-penalties': [],
      'dimension-5-volume-tiers': [],
      'problem-1-dimension-pricing': [{ path: '$.duration_buckets[2].max_seconds', message: BOUNDED_WARNING('3600', '1.5') }],
    });
  });

  it('problem 1: the dimensionPricing JSONB, also wrapped as {"dimensionPricing": ...}: 0.10 + 0.0024 + 0.0003 + the first bucket 0.10', () => {
    const text = withoutComments(articleText('problem-1-dimension-pricing'));
    for (const pricing of [JSON.parse(text), JSON.parse(`{"dimensionPricing": ${text}}`)]) {
      const quoted = quoteOf(pricing, { calls: [ONE_TRANSFORM] });
      expect(quoted.total_exact).toBe('0.2027');
      expect(quoted.lines.map((line) => [line.code, line.amount_nano])).toEqual([
        ['tool', '100000000'],
        ['input_tokens', '2400000'],
        ['output_tokens', '300000'],
        ['duration', '100000000'],
      ]);
    }
    const wrapped = quoteOf(JSON.parse(`{"dimensionPricing": ${text}}`), { calls: [ONE_TRANSFORM] });
    expect(wrapped.warnings).toEqual([{ path: '$.plan.dimensionPricing.duration_buckets[2].max_seconds', message: BOUNDED_WARNING('3600', '1.5') }]);
  });

  it('problem 1: transform_schema 0.10, validate_credentials 0.001, read_database 0.05; a call past the last bound at its 1.50', () => {
    const plan = articlePlan('problem-1-dimension-pricing');
    const quoted = quoteOf(plan, {
      calls: [
        { tool: 'validate_credentials', count: 1, duration_ms: 100 },
        { tool: 'read_database', count: 1, duration_ms: 100 },
        { tool: 'read_database', count: 1, duration_ms: 2 * 3_600_000 },
      ],
    });
    expect(quoted.lines.map((line) => [line.description, line.amount_nano])).toEqual([
      ['read_database: 2 calls x 0.05', '100000000'],
      ['validate_credentials: 1 call x 0.001', '1000000'],
      ['Calls up to 60 s: 2 x 0.1', '200000000'],
      ['Calls over 300 s (bucket up to 3600 s, longer calls too): 1 x 1.5', '1500000000'],
    ]);
  });

  it('problem 1: "multiplier": 1.5 is a 50% upcharge on a session whose error rate is above 5%', () => {
    const plan = articlePlan('problem-1-dimension-pricing');
    // 20 calls of transform_schema under a minute: 20 x (0.10 + 0.10) = 4.00
    const session = (failed: number) => quoteOf(plan, { sessions: [{ id: 's1', calls: [{ tool: 'transform_schema', count: 20, failed, duration_ms: 500 }] }] });
    expect(session(2).total).toBe('6.00'); // 2 of 20 failed = 10% > 5%: 4.00 x 1.5
    expect(session(1).total).toBe('4.00'); // 1 of 20 = 5%, not above
  });

  it('dimension 1: transform_schema costs 0.10; xyz_unknown_tool costs 0.002 (default)', () => {
    const plan = articlePlan('dimension-1-tool-invocations');
    expect(quoteOf(plan, { calls: [{ tool: 'transform_schema', count: 1 }] }).total_exact).toBe('0.1');
    expect(quoteOf(plan, { calls: [{ tool: 'xyz_unknown_tool', count: 1 }] }).total_exact).toBe('0.002');
  });

  it('dimension 2: 2,400 input tokens = 0.0024, 150 output tokens = 0.0003, token cost 0.0027; with dimension 1, 0.1027', () => {
    const tokens = articlePlan('dimension-2-token-multipliers');
    const quoted = quoteOf(tokens, { calls: [ONE_TRANSFORM] });
    expect(quoted.lines.map((line) => [line.code, line.amount_nano])).toEqual([
      ['input_tokens', '2400000'],
      ['output_tokens', '300000'],
    ]);
    expect(quoted.total_exact).toBe('0.0027');
    const both = { ...articlePlan('dimension-1-tool-invocations'), ...tokens };
    expect(quoteOf(both, { calls: [ONE_TRANSFORM] }).total_exact).toBe('0.1027');
  });

  it('dimension 3: 847 ms = 0.847 s is in bucket 1: 0.10; the bounded last bucket prices longer calls at 2.00', () => {
    const plan = articlePlan('dimension-3-duration-buckets');
    expect(quoteOf(plan, { calls: [{ count: 1, duration_ms: 847 }] }).total_exact).toBe('0.1');
    expect(quoteOf(plan, { calls: [{ count: 1, duration_ms: 300_001 }] }).total_exact).toBe('2');
    expect(quoteOf(plan, { calls: [{ count: 1, duration_ms: 3_600_001 }] }).total_exact).toBe('2');
    const quoted = quoteOf(plan, { calls: [{ count: 1, duration_ms: 86_400_000 }] });
    expect(quoted.total_exact).toBe('2');
    expect(quoted.warnings).toEqual([{ path: '$.plan.duration_buckets[2].max_seconds', message: BOUNDED_WARNING('3600', '2') }]);
  });

  it('dimension 4: error_count / total_invocations > 0.05 applies 1.5x to the whole session', () => {
    const pricing = { ...articlePlan('dimension-1-tool-invocations'), ...articlePlan('dimension-4-error-rate-penalties') };
    const quoted = quoteOf(pricing, {
      sessions: [
        { id: 'debugging', calls: [{ tool: 'read_database', count: 10, failed: 1 }] }, // 10% > 5%: 0.50 x 1.5
        { id: 'healthy', calls: [{ tool: 'read_database', count: 20, failed: 1 }] }, // 5%: 1.00
      ],
    });
    expect(quoted.lines.map((line) => [line.code, line.amount])).toEqual([
      ['tool', '1.50'],
      ['error_penalty', '0.25'],
    ]);
    expect(quoted.total).toBe('1.75');
    expect(validateRatePlan(articlePlan('dimension-4-error-rate-penalties'))).toMatchObject({ ok: true, warnings: [] });
  });

  it('dimension 5: above 100,000 invocations a month, 0.05 per invocation, retroactively', () => {
    const plan = articlePlan('dimension-5-volume-tiers');
    const month = (count: number) => quoteOf(plan, { calls: [{ tool: 'any', count }] });
    expect(month(10_000).total).toBe('1000.00'); // tier 1: 0.10
    expect(month(10_001).total).toBe('800.08'); // tier 2: 0.08 for every call
    expect(month(100_000).total).toBe('8000.00');
    expect(month(100_001).total).toBe('5000.05'); // tier 3: 0.05 for every call
    expect(month(100_001).lines.at(-1)?.rule).toBe('billable calls x ($.volume_tiers[2].rate - $.volume_tiers[0].rate) [volume]');
  });
});
