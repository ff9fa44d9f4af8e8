import { describe, expect, it } from 'vitest';
import { jsonPath, validateRatePlan, validateSubscriptionTerms } from './plan.js';
import { planOf, rated } from './test-support.js';

function problemsOf(input: unknown) {
  const result = validateRatePlan(input);
  if (result.ok) throw new Error('expected the plan to be refused');
  return result.errors;
}

/** The single problem reported at `path`. */
function problemAt(input: unknown, path: string): string {
  const found = problemsOf(input).filter((problem) => problem.path === path);
  expect(found, `problems at ${path}: ${JSON.stringify(problemsOf(input))}`).toHaveLength(1);
  return found[0].message;
}

const open = (rate: number | string = 1) => ({ max_seconds: null, rate });

describe('validateRatePlan accepts', () => {
  it('every dimension together and normalises amounts to decimal strings', () => {
    const result = validateRatePlan({
      tool_invocations: { transform_schema: 0.1, 'analyze_schema@1': '0.15', analyze_schema: 0.1, '*': '0.002' },
      tool_aliases: { transform_schema_v1: 'transform_schema' },
      token_multipliers: { input_tokens: 0.000001, output_tokens: '0.000002' },
      tool_multipliers: { analyze_schema: 2, '*': 1 },
      duration_buckets: [{ max_seconds: 60, rate: 0.1, unit: 'per_invocation' }, { max_seconds: 300.5, rate: 0.5 }, open(2)],
      error_rate_penalties: { threshold: 0.05, multiplier: 1.5 },
      volume_tiers: [{ min_invocations: 0, discount_percent: 0 }, { min_invocations: 1000, discount_percent: 10 }],
      volume_tier_mode: 'graduated',
      base_session_fee: 5,
      included_tool_count: 100,
      minimum_spend: '100.00',
    });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.plan.tool_invocations).toEqual({ transform_schema: '0.1', 'analyze_schema@1': '0.15', analyze_schema: '0.1', '*': '0.002' });
    expect(result.plan.duration_buckets?.[1].max_seconds).toBe('300.5');
    expect(result.plan.minimum_spend).toBe('100');
  });

  it('an empty plan (everything free)', () => {
    expect(validateRatePlan({})).toEqual({ ok: true, plan: {}, warnings: [] });
  });

  it('a bounded last duration bucket, with a warning that longer calls are priced at it', () => {
    const result = validateRatePlan({ duration_buckets: [{ max_seconds: 60, rate: 0.1 }, { max_seconds: 3600, rate: 2 }] });
    expect(result).toEqual({
      ok: true,
      plan: { duration_buckets: [{ max_seconds: '60', rate: '0.1' }, { max_seconds: '3600', rate: '2' }] },
      warnings: [
        {
          path: '$.duration_buckets[1].max_seconds',
          message: 'the last bucket is bounded: calls longer than 3600 s are priced at this bucket\'s rate (2); write "max_seconds": null to make that explicit',
        },
      ],
    });
  });

  it('the plan wrapped as {"dimensionPricing": {...}}, with problems and warnings under $.dimensionPricing', () => {
    const wrapped = validateRatePlan({ dimensionPricing: { tool_invocations: { '*': 0.002 }, duration_buckets: [{ max_seconds: 60, rate: 0.1 }] } });
    expect(wrapped).toMatchObject({ ok: true, plan: { tool_invocations: { '*': '0.002' } }, warnings: [{ path: '$.dimensionPricing.duration_buckets[0].max_seconds' }] });
    expect(problemsOf({ dimensionPricing: { tool_invocations: { x: 1 } } })).toEqual([
      { path: '$.dimensionPricing.tool_invocations', message: 'needs a "*" default so that tools not listed are priced (use "*": 0 to make them free)' },
    ]);
    expect(problemsOf({ dimensionPricing: {}, currency: 'USD' })).toEqual([
      { path: '$.currency', message: 'unknown key beside "dimensionPricing": put every pricing field inside it, or leave the wrapper out' },
    ]);
  });

  it('per-model token prices and per-server tool prices', () => {
    const result = validateRatePlan({
      tool_invocations: { '*': 0.002 },
      token_multipliers: { input_tokens: 0.000001, output_tokens: 0.000002, by_model: { 'claude-opus-4': { input_tokens: 0.000015, output_tokens: 0.000075 }, 'gpt-4o-mini': { input_tokens: 0.00000015 } } },
      mcp_servers: { mcp_db: { tool_invocations: { analyze_schema: 0.1, '*': 0.001 } } },
    });
    expect(result).toMatchObject({ ok: true, plan: { token_multipliers: { by_model: { 'gpt-4o-mini': { input_tokens: '0.00000015' } } } } });
  });
});

describe('validateRatePlan refuses, naming the JSON path', () => {
  it('a negative tool rate', () => {
    expect(problemAt({ tool_invocations: { transform_schema: -0.1, '*': 0 } }, '$.tool_invocations.transform_schema')).toBe('must be zero or more, got -0.1');
  });

  it('a negative token rate', () => {
    expect(problemAt({ token_multipliers: { input_tokens: '-0.000001' } }, '$.token_multipliers.input_tokens')).toBe('must be zero or more, got -0.000001');
  });

  it('a negative duration bucket rate', () => {
    expect(problemAt({ duration_buckets: [open(-2)] }, '$.duration_buckets[0].rate')).toBe('must be zero or more, got -2');
  });

  it('an amount finer than a nano-unit, such as the float 0.1 + 0.2', () => {
    expect(problemAt({ tool_invocations: { '*': 0.1 + 0.2 } }, "$.tool_invocations['*']")).toBe('0.30000000000000004 has more than 9 decimal places');
  });

  it('an amount that is not a number', () => {
    expect(problemAt({ base_session_fee: 'five' }, '$.base_session_fee')).toBe('not a decimal number: "five"');
  });

  it('duration buckets out of order', () => {
    const input = { duration_buckets: [{ max_seconds: 300, rate: 1 }, { max_seconds: 60, rate: 1 }, open()] };
    expect(problemAt(input, '$.duration_buckets[1].max_seconds')).toBe('buckets must be sorted by max_seconds ascending: 60 s follows 300 s');
  });

  it('overlapping duration buckets', () => {
    const input = { duration_buckets: [{ max_seconds: 60, rate: 1 }, { max_seconds: 60, rate: 2 }, open()] };
    expect(problemAt(input, '$.duration_buckets[1].max_seconds')).toBe('overlaps bucket 0: both end at 60 s; max_seconds must be strictly ascending');
  });

  it('a model or MCP server not named as events name it, per-server prices with rate tiers or a commitment', () => {
    expect(problemAt({ token_multipliers: { by_model: { 'gpt 4': { input_tokens: 1 } } } }, "$.token_multipliers.by_model['gpt 4']")).toBeTruthy();
    expect(problemAt({ tool_invocations: { '*': 0 }, mcp_servers: { 'my server': { tool_invocations: { '*': 1 } } } }, "$.mcp_servers['my server']")).toBeTruthy();
    expect(problemAt({ volume_tiers: [{ min_invocations: 0, rate: 0.1 }], mcp_servers: { s1: { tool_invocations: { '*': 1 } } } }, '$.mcp_servers')).toContain('tiers with a rate');
    const committed = { billing_mode: 'COMMITTED', commitment: { committed_amount: 10, committed_price: 1 }, tool_invocations: { '*': 0.01 }, mcp_servers: { s1: { tool_invocations: { '*': 1 } } } };
    expect(problemAt(committed, '$.mcp_servers')).toContain('a COMMITTED plan');
  });

  it("an MCP server's price for a name that is an alias (it would never be read)", () => {
    const input = { tool_invocations: { '*': 0 }, tool_aliases: { old: 'search' }, mcp_servers: { s1: { tool_invocations: { old: 1 } } } };
    expect(problemAt(input, '$.mcp_servers.s1.tool_invocations.old')).toBe('"old" is an alias of "search" (tool_aliases): calls are priced as "search", so list "search" here instead');
  });

    it('a per-model token rate that a tool multiplier cannot multiply exactly', () => {
    const input = { token_multipliers: { input_tokens: 0.000001, by_model: { m1: { input_tokens: 0.000000001 } } }, tool_multipliers: { lookup: 0.5 } };
    expect(problemAt(input, '$.tool_multipliers.lookup')).toContain('token_multipliers.by_model["m1"].input_tokens');
  });

  it('an open-ended duration bucket before the last', () => {
    expect(problemAt({ duration_buckets: [open(), open()] }, '$.duration_buckets[0].max_seconds')).toBe('only the last bucket may be open-ended (max_seconds null)');
  });

  it('a bucket bound of zero', () => {
    expect(problemAt({ duration_buckets: [{ max_seconds: 0, rate: 1 }, open()] }, '$.duration_buckets[0].max_seconds')).toBe('max_seconds must be greater than 0, got 0');
  });

  it('volume tiers out of order', () => {
    const input = { volume_tiers: [{ min_invocations: 0, rate: 0.1 }, { min_invocations: 10000, rate: 0.08 }, { min_invocations: 5000, rate: 0.05 }] };
    expect(problemAt(input, '$.volume_tiers[2].min_invocations')).toBe('tiers must be sorted by min_invocations ascending: 5000 follows 10000');
  });

  it('overlapping volume tiers', () => {
    const input = { volume_tiers: [{ min_invocations: 0, rate: 0.1 }, { min_invocations: 0, rate: 0.08 }] };
    expect(problemAt(input, '$.volume_tiers[1].min_invocations')).toBe('overlaps tier 0: both start at 0; min_invocations must be strictly ascending');
  });

  it('a first volume tier that does not start at 0', () => {
    expect(problemAt({ volume_tiers: [{ min_invocations: 100, rate: 0.1 }] }, '$.volume_tiers[0].min_invocations')).toBe(
      'the first tier must start at 0, or the first calls of the month would be unpriced',
    );
  });

  it('volume tiers mixing rates and discounts', () => {
    const input = { tool_invocations: { '*': 1 }, volume_tiers: [{ min_invocations: 0, discount_percent: 0 }, { min_invocations: 10, rate: 0.1 }] };
    expect(problemAt(input, '$.volume_tiers[1]')).toBe('all tiers must be of one kind: either every tier has a rate or every tier has a discount_percent');
  });

  it('a tier with both a rate and a discount', () => {
    expect(problemAt({ volume_tiers: [{ min_invocations: 0, rate: 0.1, discount_percent: 5 }] }, '$.volume_tiers[0]')).toBe(
      'a tier has exactly one of rate (per call) or discount_percent',
    );
  });

  it('a discount above 100%', () => {
    expect(problemAt({ volume_tiers: [{ min_invocations: 0, discount_percent: 120 }] }, '$.volume_tiers[0].discount_percent')).toBe(
      'a discount percentage must be between 0 and 100, got 120',
    );
  });

  it('rate tiers together with per-tool rates', () => {
    expect(problemAt({ tool_invocations: { '*': 0.1 }, volume_tiers: [{ min_invocations: 0, rate: 0.1 }] }, '$.volume_tiers')).toMatch(
      /^tiers with a rate set the price of every call, so tool_invocations cannot also be set/,
    );
  });

  it('an unknown top-level key, suggesting the one meant', () => {
    expect(problemAt({ tool_invocatons: { '*': 1 } }, '$.tool_invocatons')).toBe('unknown key (did you mean "tool_invocations"?)');
  });

  it('an unknown nested key', () => {
    expect(problemAt({ duration_buckets: [{ max_seconds: null, rate: 1, per: 'call' }] }, '$.duration_buckets[0].per')).toBe('unknown key');
  });

  it('a tool multiplier below 0', () => {
    const input = { token_multipliers: { input_tokens: 0.000001 }, tool_multipliers: { simple_lookup: -0.5 } };
    expect(problemAt(input, '$.tool_multipliers.simple_lookup')).toBe('a multiplier must be 0 or more, got -0.5');
  });

  it('an error multiplier below 1 (a penalty is an upcharge)', () => {
    expect(problemAt({ error_rate_penalties: { threshold: 0.05, multiplier: -1 } }, '$.error_rate_penalties.multiplier')).toBe(
      'an error-rate penalty multiplies the session by 1 or more (1.5 is a 50% upcharge), got -1',
    );
    expect(problemAt({ error_rate_penalties: { threshold: 0.05, multiplier: 0 } }, '$.error_rate_penalties.multiplier')).toBe(
      'an error-rate penalty multiplies the session by 1 or more (1.5 is a 50% upcharge), got 0',
    );
  });

  it('an error threshold of 1 or more (a share can never exceed it)', () => {
    expect(problemAt({ error_rate_penalties: { threshold: 1, multiplier: 2 } }, '$.error_rate_penalties.threshold')).toBe(
      'the threshold is a share of failed calls: at least 0 and below 1, got 1',
    );
  });

  it('a tool multiplier whose product with a token rate is finer than a nano-unit', () => {
    const input = { token_multipliers: { input_tokens: 0.000000001 }, tool_multipliers: { simple_lookup: 0.5 } };
    expect(problemAt(input, '$.tool_multipliers.simple_lookup')).toBe(
      '0.000000001 (token_multipliers.input_tokens) x 0.5 = 0.0000000005, which is not a whole number of nano-units (9 decimal places); ' +
        'rating is exact and never rounds a call, so choose a factor or rate whose product has at most 9 decimals',
    );
  });

  it('an error multiplier that cannot multiply a rate exactly', () => {
    const input = { tool_invocations: { '*': 0.000000003 }, error_rate_penalties: { threshold: 0.1, multiplier: 1.5 } };
    expect(problemAt(input, '$.error_rate_penalties.multiplier')).toMatch(/^0\.000000003 \(tool_invocations\["\*"\]\) x 1\.5 = 0\.0000000045, which is not a whole number/);
  });

  it('a discount that cannot be taken off a rate exactly, alone or after the error multiplier', () => {
    const alone = { tool_invocations: { '*': 0.000000001 }, volume_tiers: [{ min_invocations: 0, discount_percent: 10 }] };
    expect(problemAt(alone, '$.volume_tiers[0].discount_percent')).toMatch(/x 0\.9 after the discount = 0\.0000000009, which is not a whole number/);
    const combined = {
      tool_invocations: { '*': 0.00000001 },
      error_rate_penalties: { threshold: 0.1, multiplier: 1.5 },
      volume_tiers: [{ min_invocations: 0, discount_percent: 10 }],
    };
    expect(problemAt(combined, '$.volume_tiers[0].discount_percent')).toMatch(/x 1\.35 after the discount and the error multiplier = 0\.0000000135/);
  });

  it('tool_invocations without a "*" default', () => {
    expect(problemAt({ tool_invocations: { read_cache: 0.001 } }, '$.tool_invocations')).toBe(
      'needs a "*" default so that tools not listed are priced (use "*": 0 to make them free)',
    );
  });

  it('an alias that is also priced', () => {
    const input = { tool_invocations: { old_name: 1, new_name: 2, '*': 0 }, tool_aliases: { old_name: 'new_name' } };
    expect(problemAt(input, '$.tool_aliases.old_name')).toMatch(/is both an alias and priced in tool_invocations/);
  });

  it('an alias of an alias', () => {
    expect(problemAt({ tool_aliases: { v1: 'v2', v2: 'v3' } }, '$.tool_aliases.v1')).toBe('"v2" is itself an alias (of "v3"): point "v1" at the final name');
  });

  it('an alias of itself or of "*"', () => {
    expect(problemAt({ tool_aliases: { same: 'same' } }, '$.tool_aliases.same')).toBe('a tool cannot be an alias of itself');
    expect(problemAt({ tool_aliases: { any: '*' } }, '$.tool_aliases.any')).toMatch(/^"\*" is the default price, not a tool/);
  });

  it('tool multipliers without token rates', () => {
    expect(problemAt({ tool_multipliers: { x: 2 } }, '$.tool_multipliers')).toBe('tool multipliers scale token cost, but token_multipliers sets no token rate');
  });

  it('a fractional or negative included tool count', () => {
    expect(problemAt({ included_tool_count: 2.5 }, '$.included_tool_count')).toBe('must be a whole number');
    expect(problemAt({ included_tool_count: -1 }, '$.included_tool_count')).toBe('must be 0 or more');
  });

  it('COMMITTED without a commitment, and a commitment without COMMITTED', () => {
    expect(problemAt({ billing_mode: 'COMMITTED', tool_invocations: { '*': 0.01 } }, '$.commitment')).toMatch(/needs a commitment/);
    expect(problemAt({ commitment: { committed_amount: 10, committed_price: 1 } }, '$.billing_mode')).toBe('a commitment is set: billing_mode must be "COMMITTED"');
  });

  it('a COMMITTED plan with per-tool rates or volume tiers', () => {
    const committed = { billing_mode: 'COMMITTED', commitment: { committed_amount: 10, committed_price: 1 } };
    expect(problemAt({ ...committed, tool_invocations: { a: 1, '*': 0.01 } }, '$.tool_invocations')).toMatch(/one overage rate, given as tool_invocations\["\*"\]/);
    expect(problemAt({ ...committed, volume_tiers: [{ min_invocations: 0, discount_percent: 5 }] }, '$.volume_tiers')).toMatch(/already a volume deal/);
  });

  it('volume_tier_mode without tiers', () => {
    expect(problemAt({ volume_tier_mode: 'graduated' }, '$.volume_tier_mode')).toBe('is set but there are no volume_tiers');
  });

  it('reports every problem at once, order problems included when other fields fail', () => {
    const errors = problemsOf({
      tool_invocations: { a: -1 },
      duration_buckets: [{ max_seconds: 60, rate: 'x' }, { max_seconds: 30, rate: 1 }],
    });
    expect(errors.map((problem) => problem.path).sort()).toEqual([
      '$.duration_buckets[0].rate',
      '$.duration_buckets[1].max_seconds',
      '$.tool_invocations.a',
    ]);
  });
});

describe('validateRatePlan reads tool names as names, not as JavaScript object members', () => {
  it('accepts tools named like members of Object.prototype, as aliases, their targets and priced tools', () => {
    const plans: Record<string, unknown>[] = [
      { tool_invocations: { '*': '0.01', search: '0.1' }, tool_aliases: { toString: 'search' } },
      { tool_invocations: { '*': '0.01', constructor: '0.1' }, tool_aliases: { old_ctor: 'constructor' } },
      { tool_multipliers: { '*': '1' }, token_multipliers: { input_tokens: '1' }, tool_aliases: { hasOwnProperty: 'valueOf' } },
      { tool_invocations: { '*': '0.01' }, tool_aliases: { old: '__proto__' } },
      { tool_invocations: { '*': '0.01' }, tool_aliases: {}, mcp_servers: { s1: { tool_invocations: { constructor: '1', '*': '0' } } } },
    ];
    for (const plan of plans) expect(validateRatePlan(plan), JSON.stringify(plan)).toMatchObject({ ok: true, plan });
    // And an alias of "constructor" is priced as "constructor".
    expect(rated(planOf(plans[1]), { tool: 'old_ctor' }).rating.total).toBe(rated(planOf(plans[1]), { tool: 'constructor' }).rating.total);
    expect(rated(planOf(plans[1]), { tool: 'constructor' }).rating.total).toBe(100_000_000n);
  });

  it('still refuses what the checks are for when the names are Object.prototype members', () => {
    expect(problemAt({ tool_invocations: { '*': 0, toString: 1, valueOf: 2 }, tool_aliases: { toString: 'valueOf' } }, '$.tool_aliases.toString')).toMatch(
      /"toString" is both an alias and priced in tool_invocations/,
    );
    expect(problemAt({ tool_aliases: { constructor: 'toString', toString: 'valueOf' } }, '$.tool_aliases.constructor')).toBe(
      '"toString" is itself an alias (of "valueOf"): point "constructor" at the final name',
    );
    expect(problemAt({ tool_invocations: { '*': 0 }, tool_aliases: { constructor: 'x' }, mcp_servers: { s1: { tool_invocations: { constructor: 1 } } } }, '$.mcp_servers.s1.tool_invocations.constructor')).toMatch(
      /^"constructor" is an alias of "x"/,
    );
  });

  it('refuses a "__proto__" key in any record of the plan, as JSON.parse delivers it, naming its path', () => {
    const cases: [string, string][] = [
      ['{"tool_invocations": {"*": "0.01", "__proto__": "5"}}', '$.tool_invocations.__proto__'],
      ['{"tool_invocations": {"*": "0.01"}, "tool_aliases": {"__proto__": "search"}}', '$.tool_aliases.__proto__'],
      ['{"tool_invocations": {"*": "0.01"}, "token_multipliers": {"input_tokens": 1}, "tool_multipliers": {"__proto__": 2}}', '$.tool_multipliers.__proto__'],
      ['{"token_multipliers": {"input_tokens": 1, "by_model": {"__proto__": {"input_tokens": 5}}}}', '$.token_multipliers.by_model.__proto__'],
      ['{"tool_invocations": {"*": "0.01"}, "mcp_servers": {"__proto__": {"tool_invocations": {"*": "5"}}}}', '$.mcp_servers.__proto__'],
      ['{"tool_invocations": {"*": "0.01"}, "mcp_servers": {"s1": {"tool_invocations": {"*": "1", "__proto__": "5"}}}}', '$.mcp_servers.s1.tool_invocations.__proto__'],
      ['{"dimensionPricing": {"tool_invocations": {"*": "0.01", "__proto__": "5"}}}', '$.dimensionPricing.tool_invocations.__proto__'],
    ];
    for (const [json, path] of cases) expect(problemAt(JSON.parse(json), path), json).toMatch(/^"__proto__" cannot be a key of a rate plan/);
    // With the plan's other problems, all at once.
    const errors = problemsOf(JSON.parse('{"tool_invocations": {"*": 0, "__proto__": "5", "a": -1}}'));
    expect(errors.map((problem) => problem.path).sort()).toEqual(['$.tool_invocations.__proto__', '$.tool_invocations.a']);
    // A "__proto__" key of an object with fixed keys is an unknown key, as before.
    expect(problemAt(JSON.parse('{"tool_invocations": {"*": 1}, "__proto__": {"x": 1}}'), '$.__proto__')).toMatch(/^unknown key/);
  });
});

describe('jsonPath', () => {
  it('uses dots for plain keys and brackets for the rest', () => {
    expect(jsonPath(['duration_buckets', 2, 'max_seconds'])).toBe('$.duration_buckets[2].max_seconds');
    expect(jsonPath(['tool_invocations', 'POST /v1/search'])).toBe("$.tool_invocations['POST /v1/search']");
    expect(jsonPath(['tool_aliases', "it's"])).toBe("$.tool_aliases['it\\'s']");
  });
});

describe('validateSubscriptionTerms', () => {
  it('accepts a commitment and an allocation per agent', () => {
    expect(validateSubscriptionTerms({ commitment: { committed_amount: 100, committed_price: '10' }, allocation: { a1: 60 } })).toEqual({
      ok: true,
      terms: { commitment: { committed_amount: 100, committed_price: '10' }, allocation: { a1: 60 } },
    });
  });

  it('refuses a fractional allocation with its path', () => {
    expect(validateSubscriptionTerms({ allocation: { a1: 1.5 } })).toEqual({ ok: false, errors: [{ path: '$.allocation.a1', message: 'must be a whole number' }] });
  });
});
