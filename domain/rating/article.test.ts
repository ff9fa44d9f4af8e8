import { describe, expect, it } from 'vitest';
import { formatNano, parseNano } from '../money.js';
import { validateRatePlan } from './plan.js';
import { compilePlan, type CompiledPlan } from './compile.js';
import { rateEvent } from './rate-event.js';
import { ratePeriod } from './rate-period.js';
import { usageRows, usageRowsForRun } from './usage-rows.js';
import { amounts, bill, planOf, rated, repeat } from './test-support.js';

/** The article's dimensionPricing, with the last duration bucket made open-ended (a bounded one is refused). */
const articlePlan = planOf({
  tool_invocations: { transform_schema: 0.1, validate_credentials: 0.001, read_database: 0.05, '*': 0.002 },
  token_multipliers: { input_tokens: 0.000001, output_tokens: 0.000002 },
  duration_buckets: [
    { max_seconds: 60, rate: 0.1, unit: 'per_invocation' },
    { max_seconds: 300, rate: 0.5, unit: 'per_invocation' },
    { max_seconds: null, rate: 2.0, unit: 'per_invocation' },
  ],
  error_rate_penalties: { threshold: 0.05, multiplier: 1.5 },
});

describe("the article's worked example", () => {
  it('prices 2,400 input and 150 output tokens on transform_schema at 0.1027 plus the duration bucket', () => {
    const toolOnly = planOf({
      tool_invocations: { transform_schema: 0.1, validate_credentials: 0.001, read_database: 0.05, '*': 0.002 },
      token_multipliers: { input_tokens: 0.000001, output_tokens: 0.000002 },
    });
    const input = { eventType: 'mcp.tool_invoked', toolName: 'transform_schema', inputTokens: 2400, outputTokens: 150, durationMs: 847, status: 'SUCCESS' } as const;

    // 2400 x 0.000001 = 0.0024; 150 x 0.000002 = 0.0003; 0.10 + 0.0024 + 0.0003 = 0.1027
    const rating = rateEvent(toolOnly, input);
    expect(formatNano(rating.breakdown.tool)).toBe('0.1');
    expect(formatNano(rating.breakdown.input_tokens)).toBe('0.0024');
    expect(formatNano(rating.breakdown.output_tokens)).toBe('0.0003');
    expect(formatNano(rating.total)).toBe('0.1027');

    // 847 ms = 0.847 s falls in the first bucket (up to 60 s): + 0.10
    const withDuration = rateEvent(articlePlan, input);
    expect(formatNano(withDuration.breakdown.duration)).toBe('0.1');
    expect(formatNano(withDuration.total)).toBe('0.2027');
  });

  it('prices an unlisted tool at the "*" default and each duration bucket at its bound', () => {
    const call = (toolName: string, durationMs: number) =>
      rateEvent(articlePlan, { eventType: 'mcp.tool_invoked', toolName, inputTokens: 0, outputTokens: 0, durationMs, status: 'SUCCESS' });
    expect(call('xyz_unknown_tool', 0)).toMatchObject({ tool: 'xyz_unknown_tool', breakdown: { tool: parseNano('0.002') } });
    expect(formatNano(call('read_database', 60_000).breakdown.duration)).toBe('0.1'); // 60 s is in the first bucket
    expect(formatNano(call('read_database', 60_001).breakdown.duration)).toBe('0.5');
    expect(formatNano(call('read_database', 300_000).breakdown.duration)).toBe('0.5');
    expect(formatNano(call('read_database', 4 * 3_600_000).breakdown.duration)).toBe('2'); // long calls stay priced
  });

  it('multiplies the usage of a session whose failed share exceeds 5% by 1.5, and not one at exactly 5%', () => {
    // Session a: 20 calls of validate_credentials under a minute, 2 failed (10% > 5%): 20 x (0.001 + 0.10) = 2.02, penalty 2.02 x 0.5 = 1.01.
    // Session b: 20 such calls, 1 failed (exactly 5%, not above): no penalty.
    const calls = [
      ...repeat(18, { tool: 'validate_credentials', ms: 100, session: 'a' }),
      ...repeat(2, { tool: 'validate_credentials', ms: 100, session: 'a', status: 'FAILED' as const }),
      ...repeat(19, { tool: 'validate_credentials', ms: 100, session: 'b' }),
      { tool: 'validate_credentials', ms: 100, session: 'b', status: 'TIMEOUT' as const },
    ];
    const invoice = bill(articlePlan, calls);
    expect(amounts(invoice)).toEqual([
      ['tool', '0.04'], // 40 x 0.001
      ['duration', '4.00'], // 40 x 0.10
      ['error_penalty', '1.01'],
    ]);
    expect(invoice.total).toBe('5.05');
  });
});

describe('pattern 1: per-tool prices with tiered discounts', () => {
  const pricing = {
    tool_invocations: { read_cache: 0.001, write_cache: 0.003, analyze_schema: 0.1, transform_data: 0.25, run_validation: 0.05, '*': 0 },
    volume_tiers: [
      { min_invocations: 0, discount_percent: 0 },
      { min_invocations: 1000, discount_percent: 10 },
      { min_invocations: 10000, discount_percent: 25 },
      { min_invocations: 100000, discount_percent: 40 },
    ],
  };
  // 1,000 read_cache = 1.00; 500 write_cache = 1.50; 300 analyze_schema = 30.00; 150 transform_data = 37.50; 50 run_validation = 2.50
  const month = [
    ...repeat(1000, { tool: 'read_cache' }),
    ...repeat(500, { tool: 'write_cache' }),
    ...repeat(300, { tool: 'analyze_schema' }),
    ...repeat(150, { tool: 'transform_data' }),
    ...repeat(50, { tool: 'run_validation' }),
  ];

  it('volume: 2,000 calls reach tier 2, so all of them get 10% off 72.50', () => {
    const invoice = bill(planOf(pricing), month);
    expect(invoice.subtotal).toBe('72.50');
    expect(amounts(invoice).at(-1)).toEqual(['volume_tier', '-7.25']);
    expect(invoice.total).toBe('65.25');
  });

  it('volume: the 1,000th call is still tier 1, the 1,001st reaches tier 2', () => {
    const plan = planOf(pricing);
    expect(bill(plan, repeat(1000, { tool: 'read_cache' })).total).toBe('1.00');
    // 1,001 x 0.001 = 1.001, 10% off = 0.9009
    expect(bill(plan, repeat(1001, { tool: 'read_cache' })).total_exact).toBe('0.9009');
  });

  it('graduated: calls 1-1,000 pay list price, calls 1,001-2,000 get 10% off', () => {
    const invoice = bill(planOf({ ...pricing, volume_tier_mode: 'graduated' }), month);
    // The first 1,000 calls are the read_cache ones (1.00 at list); the other 1,000 cost 71.50, 10% off = -7.15.
    expect(amounts(invoice).filter(([code]) => code === 'volume_tier')).toEqual([['volume_tier', '-7.15']]);
    expect(invoice.total).toBe('65.35');
  });
});

describe('pattern 2: session fee with an included tool budget', () => {
  const plan = planOf({
    base_session_fee: 5,
    included_tool_count: 100,
    tool_invocations: { '*': 0.05 },
    token_multipliers: { output_tokens: 0.000002 },
  });

  it('charges 5 per session, 0.05 per call beyond 100 in a session, and output tokens', () => {
    // Session a: 120 calls (20 beyond the budget), 250 output tokens each = 30,000.
    // Session b: 80 calls (all included), 125 output tokens each = 10,000.
    // 2 x 5 + 20 x 0.05 + 40,000 x 0.000002 = 10 + 1 + 0.08 = 11.08
    const invoice = bill(plan, [...repeat(120, { session: 'a', output: 250 }), ...repeat(80, { session: 'b', output: 125 })]);
    expect(amounts(invoice)).toEqual([
      ['tool', '10.00'], // 200 x 0.05, as the events were rated
      ['output_tokens', '0.08'],
      ['included_calls', '-9.00'], // 180 included calls x 0.05
      ['session_fee', '10.00'],
    ]);
    expect(invoice.total).toBe('11.08');
  });

  it('charges a session that continues into the next period no second fee and no second budget', () => {
    // Period 1 had 60 calls of session a. In period 2 the stage passes those 60 as before.sessionCalls.
    const call = rated(plan, { session: 'a' });
    const secondPeriod = Array.from({ length: 60 }, (_, index) => usageRows(plan, call, { periodCalls: BigInt(index), sessionCalls: 60n + BigInt(index) })).flat();
    const invoice = ratePeriod([{ subscriptionId: 'sub_1', plan, rows: secondPeriod }]);
    // 40 calls are still within the budget of 100, 20 are beyond it: 20 x 0.05 = 1.00, no session fee.
    expect(amounts(invoice)).toEqual([
      ['tool', '3.00'],
      ['included_calls', '-2.00'],
    ]);
    expect(invoice.total).toBe('1.00');
  });
});

describe('pattern 3: token pricing with tool multipliers', () => {
  const plan = planOf({
    token_multipliers: { input_tokens: 0.0000005, output_tokens: 0.000002 },
    tool_multipliers: { simple_lookup: 0.5, schema_analysis: 2.0, transform_multi_step: 3.5 },
  });
  const cost = (toolName: string, inputTokens: number, outputTokens: number) =>
    formatNano(rateEvent(plan, { eventType: 'mcp.tool_invoked', toolName, inputTokens, outputTokens, durationMs: 0, status: 'SUCCESS' }).total);

  it('multiplies the token cost by the tool multiplier', () => {
    // (10,000 x 0.0000005 + 50,000 x 0.000002) x 2.0 = (0.005 + 0.1) x 2 = 0.21
    expect(cost('schema_analysis', 10_000, 50_000)).toBe('0.21');
    // (4,000 x 0.0000005 + 1,000 x 0.000002) x 0.5 = (0.002 + 0.002) x 0.5 = 0.002
    expect(cost('simple_lookup', 4_000, 1_000)).toBe('0.002');
    // (20,000 x 0.0000005 + 8,000 x 0.000002) x 3.5 = (0.01 + 0.016) x 3.5 = 0.091
    expect(cost('transform_multi_step', 20_000, 8_000)).toBe('0.091');
    // a tool without a multiplier: x 1
    expect(cost('other_tool', 1_000, 0)).toBe('0.0005');
  });

  it('shows each multiplied tool on its own token lines', () => {
    const invoice = bill(plan, [
      { tool: 'schema_analysis', input: 10_000, output: 50_000 },
      { tool: 'simple_lookup', input: 4_000, output: 1_000 },
      { tool: 'other_tool', input: 1_000 },
    ]);
    expect(invoice.lines.map((line) => [line.description, line.amount_nano])).toEqual([
      ['Input tokens: 1,000 x 0.0000005', 500_000n],
      ['Input tokens of schema_analysis: 10,000 x 0.000001', 10_000_000n],
      ['Input tokens of simple_lookup: 4,000 x 0.00000025', 1_000_000n],
      ['Output tokens of schema_analysis: 50,000 x 0.000004', 200_000_000n],
      ['Output tokens of simple_lookup: 1,000 x 0.000001', 1_000_000n],
    ]);
    expect(invoice.total_exact).toBe('0.2125');
  });
});

describe('pattern 4: committed minimum with agent-level allocations', () => {
  // Compiled with its rate plan id: the COMMITTED subscriptions of one customer on one plan share its commitment.
  const committedPlan = (basis: 'allocation' | 'pool') => {
    const validated = validateRatePlan({
      billing_mode: 'COMMITTED',
      commitment: { committed_amount: 1_000_000, committed_price: 10_000, overage_basis: basis },
      tool_invocations: { '*': 0.01 },
    });
    if (!validated.ok) throw new Error(JSON.stringify(validated.errors));
    return compilePlan(validated.plan, 'USD', { planId: 'plan_enterprise', version: 1 });
  };
  /** One subscription per agent, as in the article, with that agent's allocation and `calls` calls. */
  const subscription = (plan: CompiledPlan, agent: string, allocated: number, calls: bigint) => ({
    subscriptionId: `sub_${agent}`,
    plan,
    terms: { allocation: { [agent]: allocated } },
    rows: usageRowsForRun(plan, rated(plan, { tool: 'run_task', agent }), { periodCalls: 0n, sessionCalls: 0n }, calls),
  });
  const month = (basis: 'allocation' | 'pool', used: { support: bigint; analyst: bigint; integration: bigint }) => {
    const plan = committedPlan(basis);
    return [
      subscription(plan, 'support-bot', 300_000, used.support),
      subscription(plan, 'analyst', 500_000, used.analyst),
      subscription(plan, 'integration', 200_000, used.integration),
    ];
  };

  it('bills 10,000 for the commitment plus 0.01 per call beyond each agent allocation', () => {
    // support-bot 320,000 of 300,000 (20,000 over); analyst 450,000 of 500,000; integration 200,000 of 200,000.
    // 10,000 + 20,000 x 0.01 = 10,200
    const invoice = ratePeriod(month('allocation', { support: 320_000n, analyst: 450_000n, integration: 200_000n }));
    const commitment = invoice.lines.filter((line) => line.step === 6).map((line) => [line.description, line.amount]);
    expect(commitment).toEqual([
      ['Commitment: 1,000,000 calls per period (allocated: analyst 500,000, integration 200,000, support-bot 300,000)', '10000.00'],
      ['Calls of agent analyst covered by its allocation: 450,000 of 450,000; overage 0 at 0.01', '-4500.00'],
      ['Calls of agent integration covered by its allocation: 200,000 of 200,000; overage 0 at 0.01', '-2000.00'],
      ['Calls of agent support-bot covered by its allocation: 300,000 of 320,000; overage 20,000 at 0.01', '-3000.00'],
    ]);
    expect(invoice.subtotal).toBe('9700.00'); // 970,000 calls x 0.01 as rated
    expect(invoice.total).toBe('10200.00');
  });

  it('with a pooled commitment, unused allocation of one agent covers another', () => {
    expect(ratePeriod(month('pool', { support: 320_000n, analyst: 450_000n, integration: 200_000n })).total).toBe('10000.00');
    // 1,050,000 calls in the pool: 50,000 over, 500.00
    expect(ratePeriod(month('pool', { support: 400_000n, analyst: 450_000n, integration: 200_000n })).total).toBe('10500.00');
  });

  it('adds a true-up line when usage stays under a minimum spend', () => {
    const minimumPlan = planOf({ tool_invocations: { '*': 0.05 }, minimum_spend: 100 });
    // 1,450 calls x 0.05 = 72.50; minimum 100 -> true-up 27.50
    const invoice = bill(minimumPlan, repeat(1450, { tool: 'any' }));
    expect(amounts(invoice)).toEqual([
      ['tool', '72.50'],
      ['minimum_true_up', '27.50'],
    ]);
    expect(invoice.total).toBe('100.00');
    expect(bill(minimumPlan, repeat(2001, { tool: 'any' })).total).toBe('100.05');
  });
});

describe("the article's formula, (tool + tokens + duration) x error multiplier x volume discount", () => {
  it('applies both factors to the same calls', () => {
    const plan = planOf({
      tool_invocations: { '*': 0.1 },
      token_multipliers: { input_tokens: 0.000001 },
      duration_buckets: [{ max_seconds: null, rate: 0.02 }],
      error_rate_penalties: { threshold: 0.05, multiplier: 1.5 },
      volume_tiers: [
        { min_invocations: 0, discount_percent: 0 },
        { min_invocations: 10, discount_percent: 20 },
      ],
    });
    // 20 calls in one session, 2 failed (10%), 1,000 input tokens each:
    // per call (0.1 + 0.001 + 0.02) = 0.121; x 1.5 x 0.8 = 0.1452; x 20 = 2.904
    const invoice = bill(plan, [...repeat(18, { session: 's', input: 1000 }), ...repeat(2, { session: 's', input: 1000, status: 'FAILED' as const })]);
    expect(invoice.total_exact).toBe('2.904');
    expect(amounts(invoice)).toEqual([
      ['tool', '2.00'],
      ['input_tokens', '0.02'],
      ['duration', '0.40'],
      ['volume_tier', '-0.48'], // 2.42 x 20%
      ['error_penalty', '0.97'], // (2.42 - 0.484) x 0.5 = 0.968
    ]);
    expect(invoice.total).toBe('2.91'); // lines rounded one by one
  });

  it('adds exactly: rates of 0.1 and 0.2 make 0.3, not 0.30000000000000004', () => {
    const plan = planOf({ tool_invocations: { '*': 0.1 }, duration_buckets: [{ max_seconds: null, rate: 0.2 }] });
    expect(formatNano(rated(plan, { tool: 'x' }).rating.total)).toBe('0.3');
  });
});
