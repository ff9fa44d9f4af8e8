import { describe, expect, it } from 'vitest';
import type { AnalyticsEvent } from '../domain/flow.js';
import { compileCostModel, computeCogs, eventCogs, eventCogsNano, InvalidCostModelError, pickCostModel, type CompiledCostModel, type LoadedCostModel } from './cost-model.js';

const MODEL = {
  tools: { transform_schema: '0.002', search: 0.0001 },
  default_tool: '0.0005',
  models: { 'gpt-4o': { input_tokens: '0.0000025', output_tokens: '0.00001' }, cheap: { input_tokens: '0.000000001' } },
  default_model: { input_tokens: '0.000001', output_tokens: '0.000002' },
  compute_per_ms: '0.0000001',
};

function compiled(model: unknown = MODEL, id = 'cm_1'): CompiledCostModel {
  const loaded = compileCostModel({ id, currency: 'USD', effective_from_ms: -Infinity, model });
  if ('invalid' in loaded) throw new Error(loaded.invalid);
  return loaded;
}

const call = { toolName: 'transform_schema', model: 'gpt-4o', inputTokens: 2400, outputTokens: 150, durationMs: 847 };

describe('computeCogs', () => {
  it('adds the tool rate, each token kind at its model rate and the compute milliseconds, exactly', () => {
    const { cogsNano, breakdown } = computeCogs(compiled(), call);
    // 0.002 + 2400 x 0.0000025 + 150 x 0.00001 + 847 x 0.0000001
    expect(breakdown).toEqual({
      cost_model_id: 'cm_1',
      tool_rate: 'transform_schema',
      model_rate: 'gpt-4o',
      tool_nano: '2000000',
      input_tokens_nano: '6000000',
      output_tokens_nano: '1500000',
      compute_nano: '84700',
    });
    expect(cogsNano).toBe(9_584_700n);
  });

  it('falls back to the priced tool key, then default_tool and default_model', () => {
    const model = compiled();
    expect(computeCogs(model, { ...call, toolName: 'search_v2', pricedTool: 'search' }).breakdown).toMatchObject({ tool_rate: 'search', tool_nano: '100000' });
    // priced by a server of the plan's mcp_servers: "mcp_db search"
    expect(computeCogs(model, { ...call, toolName: 'find', pricedTool: 'mcp_db search' }).breakdown).toMatchObject({ tool_rate: 'search', tool_nano: '100000' });
    const other = computeCogs(model, { ...call, toolName: 'unknown', model: 'llama' });
    expect(other.breakdown).toMatchObject({ tool_rate: '*', tool_nano: '500000', model_rate: '*', input_tokens_nano: '2400000', output_tokens_nano: '300000' });
    expect(computeCogs(model, { ...call, model: undefined }).breakdown.model_rate).toBe('*');
  });

  it('costs what the model does not name at 0', () => {
    const sparse = compiled({ tools: { search: '0.01' } });
    expect(computeCogs(sparse, call)).toEqual({
      cogsNano: 0n,
      breakdown: expect.objectContaining({ tool_rate: null, model_rate: null, compute_nano: '0' }),
    });
    // a model named with one token kind only
    expect(computeCogs(compiled(), { ...call, model: 'cheap' }).breakdown).toMatchObject({ input_tokens_nano: '2400', output_tokens_nano: '0' });
  });

  it('stays exact far beyond the range of a double', () => {
    const { cogsNano } = computeCogs(compiled(), { ...call, inputTokens: Number.MAX_SAFE_INTEGER, outputTokens: 3, durationMs: 1 });
    expect(cogsNano).toBe(2_000_000n + 9_007_199_254_740_991n * 2_500n + 30_000n + 100n);
  });
});

describe('compileCostModel', () => {
  it('reports why a stored model does not validate', () => {
    const loaded = compileCostModel({ id: 'bad', currency: 'USD', effective_from_ms: 0, model: { tools: { x: '0.0000000001' }, extra: 1 } });
    expect(loaded).toMatchObject({ id: 'bad', invalid: expect.stringContaining('tools.x') });
  });
});

describe('pickCostModel', () => {
  const model = (id: string, effectiveFrom: number, currency = 'USD'): LoadedCostModel => ({ ...compiled(MODEL, id), effectiveFrom, currency });
  const models = [model('always', -Infinity), model('march', Date.UTC(2026, 2, 1)), model('april', Date.UTC(2026, 3, 1)), model('eur', Date.UTC(2026, 2, 15), 'EUR')];

  it('takes the newest model of the event currency already effective at the event time', () => {
    expect(pickCostModel(models, Date.UTC(2026, 1, 1), 'USD')?.id).toBe('always');
    expect(pickCostModel(models, Date.UTC(2026, 2, 1), 'USD')?.id).toBe('march');
    expect(pickCostModel(models, Date.UTC(2026, 2, 31), 'USD')?.id).toBe('march');
    expect(pickCostModel(models, Date.UTC(2026, 3, 2), 'USD')?.id).toBe('april');
    expect(pickCostModel(models, Date.UTC(2026, 3, 2), 'EUR')?.id).toBe('eur');
    expect(pickCostModel(models, Date.UTC(2026, 2, 2), 'EUR')).toBeUndefined();
    expect(pickCostModel([], 0, 'USD')).toBeUndefined();
  });

  it('breaks a tie of effective times by id, whatever the order loaded', () => {
    const tied = [model('b', 0), model('a', 0)];
    expect(pickCostModel(tied, 1, 'USD')?.id).toBe('b');
    expect(pickCostModel([...tied].reverse(), 1, 'USD')?.id).toBe('b');
  });
});

describe('eventCogsNano', () => {
  it('is the COGS eventCogs gives (null uncosted, the same error for an invalid model), reversals too', () => {
    const usd = compiled();
    const invalid = compileCostModel({ id: 'bad', currency: 'EUR', effective_from_ms: 0, model: { tools: { x: '0.0000000001' }, extra: 1 } });
    const models = [usd, invalid];
    const event = (over: Partial<AnalyticsEvent> & { currency?: string; pricedTool?: string }): AnalyticsEvent =>
      ({
        tenantId: 't_1',
        recordedAt: Date.UTC(2026, 2, 1),
        toolName: call.toolName,
        model: call.model,
        inputTokens: call.inputTokens,
        outputTokens: call.outputTokens,
        durationMs: call.durationMs,
        subscription: { currency: over.currency ?? 'USD' },
        cost: { total: 0n, tool: over.pricedTool ?? call.toolName },
        ...over,
      }) as AnalyticsEvent;
    const cases = [
      event({}),
      event({ toolName: 'find', pricedTool: 'mcp_db search', model: 'llama' }),
      event({ toolName: 'unknown', model: undefined, inputTokens: 0 }),
      event({ reversal: true, inputTokens: -2400, outputTokens: -150, durationMs: -847 }),
      event({ currency: 'GBP' }),
      event({ currency: 'EUR' }),
    ];
    for (const e of cases) {
      const full = eventCogs(models, e);
      const nano = eventCogsNano(models, e);
      if (full instanceof InvalidCostModelError) expect(nano).toEqual(full);
      else expect(nano).toBe(full.breakdown.cost_model_id === null ? null : full.cogsNano);
    }
    expect(cases.map((e) => eventCogsNano(models, e))).toEqual([
      9_584_700n,
      // the priced tool's rate (search), the default model
      100_000n + 2_400_000n + 300_000n + 84_700n,
      // transform_schema by its priced key, no input tokens
      2_000_000n + 300_000n + 84_700n,
      // a reversing row (quantities negated): the original's COGS, negated
      -9_584_700n,
      null,
      expect.any(InvalidCostModelError),
    ]);
  });
});
