import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatNano, minorUnitDigits, parseNano, roundToMinorUnit } from '../money.js';

const formatMinorUnits = (nano: bigint, digits: number) => formatNano(roundToMinorUnit(nano, digits), digits);
import { validateRatePlan } from './plan.js';
import { compilePlan, PlanCompileError } from './compile.js';
import { invoiceJson, parseQuoteRequest, quote } from './quote.js';
import { rateEvent } from './rate-event.js';
import { RatingError, ratePeriod } from './rate-period.js';
import { amounts, bill, planOf, rated, repeat } from './test-support.js';
import { addUsageRows, MergedRows, mergeRows, usageRows, usageRowsForRun } from './usage-rows.js';

describe('tool aliases and versions', () => {
  const plan = planOf({
    tool_invocations: { transform_schema: 0.1, 'analyze_schema@1': 0.15, analyze_schema: 0.1, '*': 0.002 },
    tool_aliases: { transform_schema_v1: 'transform_schema', legacy_analyze: 'analyze_schema@1' },
    token_multipliers: { input_tokens: 0.000001 },
    tool_multipliers: { transform_schema: 2 },
  });
  const rate = (toolName: string) => rateEvent(plan, { eventType: 'mcp.tool_invoked', toolName, inputTokens: 1000, outputTokens: 0, durationMs: 0, status: 'SUCCESS' });

  it('a renamed tool keeps the price and multiplier of its new name, and is counted under it', () => {
    expect(rate('transform_schema_v1')).toEqual(rate('transform_schema'));
    expect(rate('transform_schema_v1')).toMatchObject({ tool: 'transform_schema', total: parseNano('0.102') });
  });

  it('a deprecated version carries its own price; other versions take the tool price', () => {
    expect(rate('analyze_schema@1')).toMatchObject({ tool: 'analyze_schema@1', breakdown: { tool: parseNano('0.15') } });
    expect(rate('analyze_schema@2')).toMatchObject({ tool: 'analyze_schema', breakdown: { tool: parseNano('0.1') } });
    expect(rate('legacy_analyze')).toMatchObject({ tool: 'analyze_schema@1', breakdown: { tool: parseNano('0.15') } });
  });

  it('an unknown tool is priced at "*" and keeps its name (without an unpriced version)', () => {
    expect(rate('brand_new')).toMatchObject({ tool: 'brand_new', breakdown: { tool: parseNano('0.002') } });
    expect(rate('brand_new@7')).toMatchObject({ tool: 'brand_new', breakdown: { tool: parseNano('0.002') } });
  });
});

describe('session control events', () => {
  it('cost nothing and add no usage rows', () => {
    const plan = planOf({ tool_invocations: { '*': 1 }, base_session_fee: 5 });
    const event = rated(plan, { type: 'session.completed', session: 's' });
    expect(event.rating.total).toBe(0n);
    expect(usageRows(plan, event, { periodCalls: 0n, sessionCalls: 0n })).toEqual([]);
  });
});

describe('usage rows', () => {
  it('a run of n identical calls adds the same counters as n calls one by one', () => {
    const plan = planOf({
      tool_invocations: { '*': 0.01 },
      token_multipliers: { output_tokens: 0.000002 },
      duration_buckets: [{ max_seconds: 1, rate: 0.001 }, { max_seconds: null, rate: 0.01 }],
      error_rate_penalties: { threshold: 0.1, multiplier: 2 },
      base_session_fee: 1,
      included_tool_count: 3,
      volume_tier_mode: 'graduated',
      volume_tiers: [
        { min_invocations: 0, discount_percent: 0 },
        { min_invocations: 4, discount_percent: 10 },
        { min_invocations: 9, discount_percent: 50 },
      ],
    });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 15 }), fc.nat(12), fc.nat(6), fc.boolean(), (calls, periodCalls, sessionCalls, failed) => {
        const event = rated(plan, { session: 's', output: 700, ms: 1500, status: failed ? 'FAILED' : 'SUCCESS' });
        const oneByOne = Array.from({ length: calls }, (_, index) =>
          usageRows(plan, event, { periodCalls: BigInt(periodCalls + index), sessionCalls: BigInt(sessionCalls + index) }),
        ).flat();
        const run = usageRowsForRun(plan, event, { periodCalls: BigInt(periodCalls), sessionCalls: BigInt(sessionCalls) }, BigInt(calls));
        expect(mergeRows(run)).toEqual(mergeRows(oneByOne));
      }),
    );
  });

  it('folded as they come (MergedRows), a sequence of calls gives mergeRows of its rows, in the same order', () => {
    const plans = [
      planOf({
        tool_invocations: { '*': 0.01, search: 0.02 },
        token_multipliers: { input_tokens: 0.000001, output_tokens: 0.000002, by_model: { big: { input_tokens: 0.00001, output_tokens: 0.00002 } } },
        duration_buckets: [{ max_seconds: 1, rate: 0.001 }, { max_seconds: null, rate: 0.01 }],
        error_rate_penalties: { threshold: 0.1, multiplier: 2 },
        base_session_fee: 1,
        included_tool_count: 2,
        volume_tier_mode: 'graduated',
        volume_tiers: [
          { min_invocations: 0, discount_percent: 0 },
          { min_invocations: 3, discount_percent: 10 },
        ],
      }),
      planOf({ billing_mode: 'COMMITTED', commitment: { committed_amount: 100, committed_price: 1 }, tool_invocations: { '*': 0.01 }, included_tool_count: 1 }),
    ];
    const call = fc.record({
      tool: fc.constantFrom('search', 'fetch'),
      model: fc.constantFrom(undefined, 'big', 'small'),
      session: fc.constantFrom(undefined, 's1', 's2'),
      agent: fc.constantFrom(undefined, 'a1', 'a2'),
      input: fc.nat(50),
      output: fc.nat(50),
      ms: fc.nat(3000),
      status: fc.constantFrom('SUCCESS' as const, 'FAILED' as const),
      type: fc.constantFrom('mcp.tool_invoked' as const, 'session.completed' as const),
    });
    const ordered = (merged: ReturnType<typeof mergeRows>) => [...merged].map(([kind, byKey]) => [kind, [...byKey].map(([key, c]) => [key, Object.entries(c)])]);
    fc.assert(
      fc.property(fc.constantFrom(0, 1), fc.array(call, { maxLength: 12 }), fc.nat(5), (p, calls, periodCalls) => {
        const plan = plans[p];
        const folded = new MergedRows();
        const rows = [];
        const sessions = new Map<string | undefined, bigint>();
        let position = BigInt(periodCalls);
        for (const c of calls) {
          const event = rated(plan, c);
          const before = { periodCalls: position, sessionCalls: sessions.get(c.session) ?? 0n };
          rows.push(...usageRows(plan, event, before));
          addUsageRows(plan, event, event.rating, event.agentId, before, 1n, folded);
          if (c.type === 'mcp.tool_invoked') {
            position++;
            sessions.set(c.session, before.sessionCalls + 1n);
          }
        }
        expect(ordered(folded.merged())).toEqual(ordered(mergeRows(rows)));
      }),
    );
  });

  it('name the tool, bucket, session, band and agent they count', () => {
    const plan = planOf({
      billing_mode: 'COMMITTED',
      commitment: { committed_amount: 100, committed_price: 1 },
      tool_invocations: { '*': 0.01 },
      duration_buckets: [{ max_seconds: 1, rate: 0.001 }, { max_seconds: null, rate: 0.01 }],
      base_session_fee: 1,
      included_tool_count: 1,
    });
    const rows = usageRows(plan, rated(plan, { tool: 'search', ms: 2500, session: 'sess_1', agent: 'agent_1', input: 10, status: 'TIMEOUT' }), {
      periodCalls: 7n,
      sessionCalls: 0n,
    });
    expect(rows).toEqual([
      { kind: 'tool', key: 'search', counters: { calls: 1n, included_calls: 1n, input_tokens: 10n, output_tokens: 0n } },
      { kind: 'duration', key: '1', counters: { calls: 1n } },
      { kind: 'session', key: 'sess_1', counters: { calls: 1n, failed_calls: 1n, started: 1n, billable_calls: 0n, billable_nano: parseNano('0.01') } },
      { kind: 'agent', key: 'agent_1', counters: { calls: 1n, billable_calls: 0n } },
    ]);
  });
});

describe('rounding', () => {
  it('rounds half away from zero to the minor unit, once per line', () => {
    expect(formatMinorUnits(parseNano('0.125'), 2)).toBe('0.13');
    expect(formatMinorUnits(parseNano('-0.125'), 2)).toBe('-0.13');
    expect(formatMinorUnits(parseNano('0.124999999'), 2)).toBe('0.12');
    expect(formatMinorUnits(parseNano('2.5'), 0)).toBe('3');
    expect(formatMinorUnits(parseNano('1.0005'), 3)).toBe('1.001');
    expect(roundToMinorUnit(parseNano('7'), 2)).toBe(parseNano('7'));
  });

  it('knows the minor unit of each currency', () => {
    expect([minorUnitDigits('USD'), minorUnitDigits('EUR'), minorUnitDigits('JPY'), minorUnitDigits('KWD')]).toEqual([2, 2, 0, 3]);
    const pricing = validateRatePlan({});
    if (!pricing.ok) throw new Error('empty plan refused');
    expect(() => compilePlan(pricing.plan, 'usd')).toThrow(PlanCompileError);
  });

  it('bills yen in whole yen and keeps the exact amount beside it', () => {
    const plan = planOf({ tool_invocations: { '*': 1.5 } }, 'JPY');
    const invoice = bill(plan, repeat(3, { tool: 'x' }));
    expect([invoice.total, invoice.total_exact]).toEqual(['5', '4.5']);
  });

  it('a discount never takes a total below zero by rounding: the credit line gives back what rounding added', () => {
    // Found by the "costs are never negative" property: lines of 4,053.52 and 0.40 (exact 4,053.92618)
    // and a 100% discount of -4,053.93 added up to -0.01.
    const plan = planOf({
      token_multipliers: { input_tokens: '1.19785', output_tokens: '0' },
      duration_buckets: [
        { max_seconds: 1, rate: '0.40178' },
        { max_seconds: null, rate: '0' },
      ],
      volume_tiers: [{ min_invocations: 0, discount_percent: '100' }],
      volume_tier_mode: 'volume',
    });
    const invoice = bill(plan, [{ tool: 'alpha', input: 3384, ms: 0 }]);
    expect(amounts(invoice)).toEqual([
      ['input_tokens', '4053.52'],
      ['duration', '0.40'],
      ['volume_tier', '-4053.92'],
    ]);
    expect([invoice.total, invoice.total_exact]).toEqual(['0.00', '0']);
    // A discount that leaves something keeps its own rounding.
    const half = bill(planOf({ tool_invocations: { '*': '0.015' }, volume_tiers: [{ min_invocations: 0, discount_percent: '50' }], volume_tier_mode: 'volume' }), [{ tool: 'x' }]);
    expect(amounts(half)).toEqual([
      ['tool', '0.02'],
      ['volume_tier', '-0.01'],
    ]);
  });
});

describe('ratePeriod refuses inconsistent input', () => {
  const plan = planOf({ tool_invocations: { '*': 1 } });

  it('subscriptions in different currencies', () => {
    const euro = planOf({ tool_invocations: { '*': 1 } }, 'EUR');
    expect(() =>
      ratePeriod([
        { subscriptionId: 'a', plan, rows: [] },
        { subscriptionId: 'b', plan: euro, rows: [] },
      ]),
    ).toThrow(new RatingError('subscriptions of one invoice share a currency: b is in EUR, not USD'));
  });

  it('commitment terms on a plan that is not COMMITTED', () => {
    expect(() => ratePeriod([{ subscriptionId: 'a', plan, rows: [], terms: { allocation: { agent: 1 } } }])).toThrow(/its plan is not COMMITTED/);
  });

  it('a usage row naming a bucket the plan does not have', () => {
    expect(() => ratePeriod([{ subscriptionId: 'a', plan, rows: [{ kind: 'duration', key: '4', counters: { calls: 1n } }] }])).toThrow(/names no bucket/);
  });
});

describe('quote', () => {
  const request = (plan: Record<string, unknown>, usage: unknown) => {
    const parsed = parseQuoteRequest({ plan: { currency: 'USD', ...plan }, usage });
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
    return parsed.request;
  };

  it('prices a usage vector as the pipeline would bill the same events', () => {
    const pricing = {
      tool_invocations: { '*': 0.05 },
      token_multipliers: { input_tokens: 0.000001, output_tokens: 0.000002 },
      error_rate_penalties: { threshold: 0.05, multiplier: 1.5 },
      base_session_fee: 5,
      included_tool_count: 100,
    };
    const { plan, usage } = request(pricing, {
      sessions: [{ id: 'a', calls: [{ tool: 'search', count: 120, failed: 12, input_tokens: 12_001, output_tokens: 30_000 }] }],
      calls: [{ tool: 'search', count: 3, duration_ms: 100 }],
    });
    const events = [
      ...repeat(12, { tool: 'search', session: 'a', status: 'FAILED' as const }),
      ...repeat(108, { tool: 'search', session: 'a' }),
      ...repeat(3, { tool: 'search', ms: 100 }),
    ].map((call, index) => (index < 120 ? { ...call, input: index === 0 ? 101 : 100, output: 250 } : call));
    const billed = bill(plan, events);
    const quoted = quote(plan, usage);
    expect(quoted.total_nano).toBe(billed.total_nano);
    // by hand: session fee 5; 20 + 3 calls beyond the budget x 0.05 = 1.15; tokens 0.012001 + 0.06 = 0.072001;
    // session a failed 12 of 120 (10% > 5%): (20 x 0.05 + 0.072001) x 0.5 = 0.5360005
    expect(quoted.total_exact).toBe('6.7580015');
    expect(quoted.lines.every((line) => !('subscription_id' in line))).toBe(true);
  });

  it('places the calls after the month-to-date invocations in the tiers', () => {
    const { plan, usage } = request(
      { tool_invocations: { '*': 1 }, volume_tier_mode: 'graduated', volume_tiers: [{ min_invocations: 0, discount_percent: 0 }, { min_invocations: 1000, discount_percent: 20 }] },
      { month_to_date_invocations: 995, calls: [{ tool: 'x', count: 10 }] },
    );
    // calls 996-1000 at 1, calls 1001-1005 at 0.8
    expect(quote(plan, usage).total).toBe('9.00');
  });

  it('uses the commitment for the month-to-date invocations first', () => {
    const { plan, usage } = request(
      { billing_mode: 'COMMITTED', commitment: { committed_amount: 1000, committed_price: 5 }, tool_invocations: { '*': 0.01 } },
      { month_to_date_invocations: 990, calls: [{ tool: 'x', count: 30 }] },
    );
    // commitment 5.00; 10 of the 30 calls still covered, 20 x 0.01 = 0.20 overage
    expect(quote(plan, usage).total).toBe('5.20');
  });

  it('answers in JSON with amounts as decimal strings only', () => {
    const { plan, usage } = request({ tool_invocations: { '*': 0.1 } }, { calls: [{ tool: 'x', count: 3 }] });
    const json = invoiceJson(quote(plan, usage));
    expect(json).toMatchObject({ total: '0.30', total_nano: '300000000', total_exact: '0.3' });
    const numbers: string[] = [];
    JSON.stringify(json, (key, value) => {
      if (typeof value === 'number' && !['step', 'minor_unit_digits', 'calls', 'sessions', 'month_to_date_invocations'].includes(key)) numbers.push(key);
      return value;
    });
    expect(numbers).toEqual([]);
  });

  it('names every problem of a request by its path from the top', () => {
    const parsed = parseQuoteRequest({
      plan: { currency: 'usd', duration_buckets: [{ max_seconds: null, rate: 1 }, { max_seconds: 60, rate: 1 }] },
      usage: { calls: [{ tool: 'x', count: 2, failed: 3 }], extra: 1 },
      other: true,
    });
    expect(parsed).toEqual({
      ok: false,
      errors: [
        { path: '$.other', message: 'unknown key (expected plan, usage and terms)' },
        { path: '$.plan.currency', message: 'is required: a 3-letter ISO 4217 code such as "USD"' },
        { path: '$.plan.duration_buckets[0].max_seconds', message: 'only the last bucket may be open-ended (max_seconds null)' },
        { path: '$.usage.calls[0].failed', message: 'cannot exceed count (2)' },
        { path: '$.usage.extra', message: 'unknown key' },
      ],
    });
  });
});
