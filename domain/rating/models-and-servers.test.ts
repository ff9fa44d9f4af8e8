import { describe, expect, it } from 'vitest';
import { formatNano } from '../money.js';
import { bill, planOf, rated, repeat } from './test-support.js';

const plan = planOf({
  tool_invocations: { analyze_schema: 0.1, read_query: 0.001, '*': 0.002 },
  tool_aliases: { analyze: 'analyze_schema' },
  token_multipliers: {
    input_tokens: 0.000001,
    output_tokens: 0.000002,
    by_model: { 'claude-opus-4': { input_tokens: 0.000015, output_tokens: 0.000075 }, 'gpt-4o-mini': { input_tokens: 0.00000015 } },
  },
  tool_multipliers: { analyze_schema: 2 },
  mcp_servers: {
    mcp_db: { tool_invocations: { analyze_schema: 0.25, '*': 0.003 } },
    mcp_cache: { tool_invocations: { read_query: 0.0005 } },
  },
});

const cost = (call: Parameters<typeof rated>[1]) => rated(plan, call).rating;

describe('per-model token prices (token_multipliers.by_model)', () => {
  it("prices an event's tokens by its model, times the tool multiplier; a model not named, or no model, at the default", () => {
    // 1,000 x 0.000015 and 100 x 0.000075 on read_query (no multiplier)
    expect(cost({ tool: 'read_query', model: 'claude-opus-4', input: 1000, output: 100 }).breakdown).toMatchObject({ input_tokens: 15_000_000n, output_tokens: 7_500_000n });
    // x 2 on analyze_schema
    expect(cost({ tool: 'analyze_schema', model: 'claude-opus-4', input: 1000, output: 100 }).breakdown).toMatchObject({ input_tokens: 30_000_000n, output_tokens: 15_000_000n });
    // gpt-4o-mini sets only input: output takes the default 0.000002
    expect(cost({ tool: 'read_query', model: 'gpt-4o-mini', input: 1000, output: 100 }).breakdown).toMatchObject({ input_tokens: 150_000n, output_tokens: 200_000n });
    for (const model of ['some-other-model', undefined]) {
      expect(cost({ tool: 'read_query', model, input: 1000, output: 100 }).breakdown).toMatchObject({ input_tokens: 1_000_000n, output_tokens: 200_000n });
    }
  });

  it('bills each model on its own lines, naming the rule, and the lines add up to the events', () => {
    const calls = [
      ...repeat(3, { tool: 'read_query', model: 'claude-opus-4', input: 1000, output: 100 }),
      { tool: 'analyze_schema', model: 'claude-opus-4', input: 1000 },
      { tool: 'read_query', model: 'gpt-4o-mini', input: 2000, output: 10 },
      { tool: 'read_query', input: 500 },
    ];
    const invoice = bill(plan, calls);
    const tokenLines = invoice.lines.filter((line) => line.code.endsWith('_tokens')).map((line) => [line.description, line.rule, formatNano(line.amount_nano)]);
    expect(tokenLines).toEqual([
      ['Input tokens: 500 x 0.000001', 'input_tokens x $.token_multipliers.input_tokens', '0.0005'],
      ['Input tokens of model claude-opus-4: 3,000 x 0.000015', "input_tokens x $.token_multipliers.by_model['claude-opus-4'].input_tokens", '0.045'],
      [
        'Input tokens of model claude-opus-4 on analyze_schema: 1,000 x 0.00003',
        "input_tokens x $.token_multipliers.by_model['claude-opus-4'].input_tokens x $.tool_multipliers.analyze_schema",
        '0.03',
      ],
      ['Input tokens of model gpt-4o-mini: 2,000 x 0.00000015', "input_tokens x $.token_multipliers.by_model['gpt-4o-mini'].input_tokens", '0.0003'],
      ['Output tokens of model claude-opus-4: 300 x 0.000075', "output_tokens x $.token_multipliers.by_model['claude-opus-4'].output_tokens", '0.0225'],
      ['Output tokens of model gpt-4o-mini: 10 x 0.000002', 'output_tokens x $.token_multipliers.output_tokens', '0.00002'],
    ]);
    const eventsTotal = calls.reduce((sum, call) => sum + rated(plan, call).rating.total, 0n);
    expect(invoice.total_nano).toBe(eventsTotal);
  });
});

describe('per-MCP-server tool prices (mcp_servers)', () => {
  it("prices a server's calls by its table, its '*' for tools it does not list, and the plan's prices elsewhere", () => {
    expect(cost({ tool: 'analyze_schema', server: 'mcp_db' })).toMatchObject({ tool: 'mcp_db analyze_schema', breakdown: { tool: 250_000_000n } });
    // a plan alias resolves first, then the server's price applies
    expect(cost({ tool: 'analyze', server: 'mcp_db' })).toMatchObject({ tool: 'mcp_db analyze_schema', breakdown: { tool: 250_000_000n } });
    expect(cost({ tool: 'read_query', server: 'mcp_db' })).toMatchObject({ tool: 'mcp_db read_query', breakdown: { tool: 3_000_000n } });
    expect(cost({ tool: 'read_query', server: 'mcp_cache' })).toMatchObject({ tool: 'mcp_cache read_query', breakdown: { tool: 500_000n } });
    // mcp_cache has no "*": other tools keep the plan's price
    expect(cost({ tool: 'analyze_schema', server: 'mcp_cache' })).toMatchObject({ tool: 'analyze_schema', breakdown: { tool: 100_000_000n } });
    expect(cost({ tool: 'analyze_schema', server: 'mcp_unknown' })).toMatchObject({ tool: 'analyze_schema', breakdown: { tool: 100_000_000n } });
    expect(cost({ tool: 'analyze_schema' })).toMatchObject({ tool: 'analyze_schema', breakdown: { tool: 100_000_000n } });
    // the tool multiplier of the tool still applies to its tokens
    expect(cost({ tool: 'analyze_schema', server: 'mcp_db', input: 1000 }).breakdown.input_tokens).toBe(2_000_000n);
  });

  it('bills one line per server and tool, with the server price rule', () => {
    const invoice = bill(plan, [...repeat(2, { tool: 'analyze_schema', server: 'mcp_db' }), { tool: 'new_tool', server: 'mcp_db' }, { tool: 'analyze_schema' }]);
    expect(invoice.lines.map((line) => [line.description, line.rule, line.amount])).toEqual([
      ['analyze_schema: 1 call x 0.1', 'calls x $.tool_invocations.analyze_schema', '0.10'],
      ['analyze_schema on MCP server mcp_db: 2 calls x 0.25', 'calls x $.mcp_servers.mcp_db.tool_invocations.analyze_schema', '0.50'],
      ['new_tool on MCP server mcp_db: 1 call x 0.003', "calls x $.mcp_servers.mcp_db.tool_invocations['*']", '0.00'],
    ]);
    expect(invoice.total_exact).toBe('0.603');
  });
});
