import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatNano } from '../money.js';
import { validateRatePlan } from './plan.js';
import { compilePlan, type CompiledPlan } from './compile.js';
import { rateEvent } from './rate-event.js';
import { ratePeriod } from './rate-period.js';
import { type Call, planOf, rated, rowsOf } from './test-support.js';
import type { UsageRow } from './usage-rows.js';

/** Amounts are multiples of 0.00001 and factors have one decimal, so every plan drawn here is exact. */
const amount = fc.bigInt({ min: 0n, max: 500_000n }).map((steps) => formatNano(steps * 10_000n));
const factor = fc.integer({ min: 0, max: 40 }).map((tenths) => `${Math.trunc(tenths / 10)}.${tenths % 10}`);
// A penalty multiplies by 1 or more (validation refuses less).
const penaltyFactor = fc.integer({ min: 10, max: 40 }).map((tenths) => `${Math.trunc(tenths / 10)}.${tenths % 10}`);
const jsonAmount = fc.oneof(amount, amount.map(Number));

interface PlanOptions {
  retroactiveTiers?: boolean;
  penalty?: boolean;
  minimumSpend?: boolean;
}

function pricingArbitrary(options: PlanOptions = {}) {
  const tiers = fc
    .record({
      starts: fc.uniqueArray(fc.integer({ min: 1, max: 30 }), { maxLength: 3 }).map((starts) => [0, ...starts.sort((a, b) => a - b)]),
      byRate: fc.boolean(),
      graduated: options.retroactiveTiers === false ? fc.constant(true) : fc.boolean(),
      values: fc.array(fc.integer({ min: 0, max: 100 }), { minLength: 4, maxLength: 4 }),
      rates: fc.array(amount, { minLength: 4, maxLength: 4 }),
    })
    .map(({ starts, byRate, graduated, values, rates }) => ({
      byRate,
      mode: graduated ? ('graduated' as const) : ('volume' as const),
      tiers: starts.map((start, index) => (byRate ? { min_invocations: start, rate: rates[index] } : { min_invocations: start, discount_percent: values[index] })),
    }));
  return fc
    .record({
      toolRates: fc.option(fc.record({ alpha: jsonAmount, beta: jsonAmount, '*': jsonAmount }), { nil: undefined }),
      tokens: fc.option(fc.record({ input_tokens: amount, output_tokens: amount }), { nil: undefined }),
      multipliers: fc.option(fc.record({ beta: factor, gamma: factor }), { nil: undefined }),
      bounds: fc.uniqueArray(fc.integer({ min: 1, max: 600 }), { maxLength: 3 }),
      bucketRates: fc.array(amount, { minLength: 4, maxLength: 4 }),
      penalty: options.penalty === false ? fc.constant(undefined) : fc.option(fc.record({ threshold: fc.integer({ min: 0, max: 99 }), multiplier: penaltyFactor }), { nil: undefined }),
      tiers: fc.option(tiers, { nil: undefined }),
      session: fc.option(fc.record({ fee: amount, included: fc.integer({ min: 0, max: 5 }) }), { nil: undefined }),
      committed: fc.oneof(
        { arbitrary: fc.constant(undefined), weight: 3 },
        { arbitrary: fc.record({ calls: fc.integer({ min: 0, max: 20 }), price: amount, pool: fc.boolean() }), weight: 1 },
      ),
      minimum: options.minimumSpend === false ? fc.constant(undefined) : fc.option(amount, { nil: undefined }),
    })
    .map((drawn) => {
      const pricing: Record<string, unknown> = {};
      const committed = drawn.committed !== undefined;
      const rateTiers = !committed && drawn.tiers?.byRate;
      if (rateTiers) {
        // rate tiers price every call themselves
      } else if (committed) pricing.tool_invocations = { '*': drawn.toolRates?.['*'] ?? '0.01' };
      else if (drawn.toolRates) pricing.tool_invocations = drawn.toolRates;
      if (!committed && drawn.tiers) {
        pricing.volume_tiers = drawn.tiers.tiers;
        pricing.volume_tier_mode = drawn.tiers.mode;
      }
      if (drawn.toolRates && !rateTiers && !committed) pricing.tool_aliases = { alpha_old: 'alpha' };
      if (drawn.tokens) pricing.token_multipliers = drawn.tokens;
      if (drawn.tokens && drawn.multipliers) pricing.tool_multipliers = drawn.multipliers;
      if (drawn.bounds.length > 0 || drawn.bucketRates[0] !== '0') {
        const bounds = [...drawn.bounds].sort((a, b) => a - b);
        pricing.duration_buckets = [...bounds.map((max, index) => ({ max_seconds: max, rate: drawn.bucketRates[index] })), { max_seconds: null, rate: drawn.bucketRates[3] }];
      }
      if (drawn.penalty) pricing.error_rate_penalties = { threshold: `0.${String(drawn.penalty.threshold).padStart(2, '0')}`, multiplier: drawn.penalty.multiplier };
      if (drawn.session) {
        pricing.base_session_fee = drawn.session.fee;
        pricing.included_tool_count = drawn.session.included;
      }
      if (drawn.committed) {
        pricing.billing_mode = 'COMMITTED';
        pricing.commitment = { committed_amount: drawn.committed.calls, committed_price: drawn.committed.price, overage_basis: drawn.committed.pool ? 'pool' : 'allocation' };
      }
      if (drawn.minimum !== undefined) pricing.minimum_spend = drawn.minimum;
      return pricing;
    });
}

function compiled(pricing: Record<string, unknown>): CompiledPlan {
  const validated = validateRatePlan(pricing);
  if (!validated.ok) throw new Error(`generator made an invalid plan: ${JSON.stringify(validated.errors)} for ${JSON.stringify(pricing)}`);
  return compilePlan(validated.plan, 'USD');
}

const planArbitrary = (options?: PlanOptions) => pricingArbitrary(options).map(compiled);

const callArbitrary: fc.Arbitrary<Call> = fc.record({
  tool: fc.constantFrom('alpha', 'alpha_old', 'beta', 'gamma@2', 'delta', undefined),
  input: fc.integer({ min: 0, max: 5000 }),
  output: fc.integer({ min: 0, max: 5000 }),
  ms: fc.integer({ min: 0, max: 700_000 }),
  status: fc.constantFrom('SUCCESS', 'SUCCESS', 'SUCCESS', 'FAILED', 'TIMEOUT', 'RATE_LIMITED'),
  session: fc.constantFrom(undefined, 's1', 's2', 's3'),
  agent: fc.constantFrom(undefined, 'a1', 'a2'),
  type: fc.constantFrom('mcp.tool_invoked', 'mcp.tool_invoked', 'agent.tool_invoked', 'api.request', 'session.completed'),
});
const callsArbitrary = fc.array(callArbitrary, { maxLength: 40 });
/** Committed plans get agent a1 an allocation of half the commitment. */
function invoiceOf(plan: CompiledPlan, rows: Iterable<UsageRow>) {
  const terms = plan.commitment ? { allocation: { a1: Number(plan.commitment.calls / 2n) } } : undefined;
  return ratePeriod([{ subscriptionId: 'sub', plan, rows, terms }]);
}

describe('rating properties', () => {
  it('costs are never negative: per event, per usage line, per invoice', () => {
    fc.assert(
      fc.property(planArbitrary(), callsArbitrary, (plan, calls) => {
        for (const call of calls) {
          const { rating } = rated(plan, call);
          expect(rating.total >= 0n).toBe(true);
          for (const part of Object.values(rating.breakdown)) expect(part >= 0n).toBe(true);
        }
        const invoice = invoiceOf(plan, rowsOf(plan, calls));
        for (const line of invoice.lines.filter((entry) => entry.step === 1)) expect(line.amount_nano >= 0n).toBe(true);
        expect(invoice.total_nano >= 0n).toBe(true);
        expect(invoice.total.startsWith('-')).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('an event never costs less when it uses more tokens', () => {
    fc.assert(
      fc.property(planArbitrary(), callArbitrary, fc.nat(10_000), fc.nat(10_000), (plan, call, moreInput, moreOutput) => {
        const base = rated(plan, call).rating.total;
        const bigger = rated(plan, { ...call, input: (call.input ?? 0) + moreInput, output: (call.output ?? 0) + moreOutput }).rating.total;
        expect(bigger >= base).toBe(true);
      }),
    );
  });

  it('a period never costs less when events are added (without retroactive tiers, error penalty or minimum spend)', () => {
    fc.assert(
      fc.property(planArbitrary({ retroactiveTiers: false, penalty: false, minimumSpend: false }), callsArbitrary, callsArbitrary, (plan, calls, more) => {
        const before = invoiceOf(plan, rowsOf(plan, calls));
        const after = invoiceOf(plan, rowsOf(plan, [...calls, ...more]));
        expect(after.total_nano >= before.total_nano).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('the subtotal before period rules never decreases when events are added, for any plan', () => {
    fc.assert(
      fc.property(planArbitrary(), callsArbitrary, callsArbitrary, (plan, calls, more) => {
        expect(invoiceOf(plan, rowsOf(plan, [...calls, ...more])).subtotal_nano >= invoiceOf(plan, rowsOf(plan, calls)).subtotal_nano).toBe(true);
      }),
    );
  });

  it('graduated tiers are continuous: the call crossing a boundary adds exactly its own tier price', () => {
    const graduated = fc.record({
      starts: fc.uniqueArray(fc.integer({ min: 1, max: 25 }), { minLength: 1, maxLength: 3 }).map((starts) => [0, ...starts.sort((a, b) => a - b)]),
      rates: fc.array(amount, { minLength: 4, maxLength: 4 }),
      discounts: fc.array(fc.integer({ min: 0, max: 100 }), { minLength: 4, maxLength: 4 }),
      byRate: fc.boolean(),
      price: amount,
    });
    fc.assert(
      fc.property(graduated, ({ starts, rates, discounts, byRate, price }) => {
        const plan = planOf({
          ...(byRate ? {} : { tool_invocations: { '*': price } }),
          volume_tier_mode: 'graduated',
          volume_tiers: starts.map((start, index) => (byRate ? { min_invocations: start, rate: rates[index] } : { min_invocations: start, discount_percent: discounts[index] })),
        });
        const costOf = (calls: number) => invoiceOf(plan, rowsOf(plan, Array.from({ length: calls }, () => ({ tool: 'x' })))).total_nano;
        const perCallPrice = (tier: number) =>
          byRate ? plan.tiers!.rates[tier] : (plan.defaultToolPrice.callNano * (10n ** 9n - plan.tiers!.discounts[tier])) / 10n ** 9n;
        for (const start of starts) {
          for (const calls of [start - 1, start, start + 1].filter((n) => n >= 0)) {
            // Call number calls + 1 belongs to the last tier that starts before it.
            const callTier = starts.filter((tierStart) => tierStart < calls + 1).length - 1;
            expect(costOf(calls + 1) - costOf(calls)).toBe(perCallPrice(callTier));
          }
        }
      }),
      { numRuns: 100 },
    );
  });

  it('per-event costs summed equal the period subtotal before period rules', () => {
    fc.assert(
      fc.property(planArbitrary(), callsArbitrary, (plan, calls) => {
        const summed = calls.reduce((sum, call) => sum + rated(plan, call).rating.total, 0n);
        expect(invoiceOf(plan, rowsOf(plan, calls)).subtotal_nano).toBe(summed);
      }),
      { numRuns: 300 },
    );
  });

  it('rating twice gives the same answer, and so do the rows in any order, split or merged', () => {
    fc.assert(
      fc.property(pricingArbitrary(), callsArbitrary, fc.nat(), (pricing, calls, seed) => {
        const plan = compiled(pricing);
        const again = compiled(pricing);
        for (const call of calls) expect(rated(again, call).rating).toEqual(rated(plan, call).rating);

        const rows = rowsOf(plan, calls);
        const invoice = invoiceOf(plan, rows);
        expect(invoiceOf(again, rowsOf(again, calls))).toEqual(invoice);
        expect(invoiceOf(plan, shuffled(rows, seed))).toEqual(invoice);
        expect(invoiceOf(plan, rows.flatMap((row) => split(row, seed)))).toEqual(invoice);
        expect(invoiceOf(plan, merged(rows))).toEqual(invoice);
      }),
      { numRuns: 200 },
    );
  });

  it('adds decimal rates exactly, where binary floats would not', () => {
    // Up to 10 million with 9 decimals: 17 significant digits, beyond what a double holds.
    const nano = fc.bigInt({ min: 0n, max: 10_000_000n * 10n ** 9n });
    fc.assert(
      fc.property(nano, nano, (tool, duration) => {
        const plan = planOf({ tool_invocations: { '*': formatNano(tool) }, duration_buckets: [{ max_seconds: null, rate: formatNano(duration) }] });
        const rating = rateEvent(plan, { eventType: 'mcp.tool_invoked', toolName: 'x', inputTokens: 0, outputTokens: 0, durationMs: 1, status: 'SUCCESS' });
        expect(rating.total).toBe(tool + duration);
        const invoice = invoiceOf(plan, rowsOf(plan, [{ tool: 'x', ms: 1 }]));
        expect(invoice.total_exact).toBe(formatNano(tool + duration));
      }),
    );
    const plan = planOf({ tool_invocations: { '*': '0.1' }, duration_buckets: [{ max_seconds: null, rate: '0.2' }] });
    expect(invoiceOf(plan, rowsOf(plan, [{ tool: 'x' }])).total_exact).toBe('0.3');
  });
});

describe('documented non-monotonic rules', () => {
  it('a retroactive volume tier can make one more call lower the total (the volume cliff)', () => {
    const plan = planOf({ volume_tiers: [{ min_invocations: 0, rate: 0.1 }, { min_invocations: 10, rate: 0.05 }] });
    const costOf = (calls: number) => invoiceOf(plan, rowsOf(plan, Array.from({ length: calls }, () => ({ tool: 'x' })))).total;
    expect(costOf(10)).toBe('1.00'); // 10 x 0.10
    expect(costOf(11)).toBe('0.55'); // 11 x 0.05, every call at the tier reached
  });

  it('a successful call can bring a session back under the error threshold', () => {
    const plan = planOf({ tool_invocations: { '*': 1 }, error_rate_penalties: { threshold: 0.1, multiplier: 2 } });
    const failedThenOk = (ok: number) => [{ session: 's', status: 'FAILED' as const }, ...Array.from({ length: ok }, () => ({ session: 's' }))];
    expect(invoiceOf(plan, rowsOf(plan, failedThenOk(8))).total).toBe('18.00'); // 1 of 9 failed (11%): 9 x 1 x 2
    expect(invoiceOf(plan, rowsOf(plan, failedThenOk(9))).total).toBe('10.00'); // 1 of 10 failed (10%, not above): 10 x 1
  });
});

function shuffled<T>(items: T[], seed: number): T[] {
  const out = [...items];
  let state = seed || 1;
  for (let index = out.length - 1; index > 0; index--) {
    state = (state * 1103515245 + 12345) % 2147483648;
    const other = state % (index + 1);
    [out[index], out[other]] = [out[other], out[index]];
  }
  return out;
}

/** A row as two rows whose counters add up to it. */
function split(row: UsageRow, seed: number): UsageRow[] {
  const part = Object.fromEntries(Object.entries(row.counters).map(([name, value], index) => [name, value / BigInt(((seed + index) % 3) + 1)]));
  const rest = Object.fromEntries(Object.entries(row.counters).map(([name, value]) => [name, value - part[name]]));
  return [
    { ...row, counters: part },
    { ...row, counters: rest },
  ];
}

function merged(rows: UsageRow[]): UsageRow[] {
  const byKey = new Map<string, UsageRow>();
  for (const row of rows) {
    const key = `${row.kind}\n${row.key}`;
    const into = byKey.get(key);
    if (!into) byKey.set(key, { ...row, counters: { ...row.counters } });
    else for (const [name, value] of Object.entries(row.counters)) into.counters[name] = (into.counters[name] ?? 0n) + value;
  }
  return [...byKey.values()];
}
