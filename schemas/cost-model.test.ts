import { describe, expect, it } from 'vitest';
import { parseNano } from '../domain/money.js';
import { validateCostModel } from './cost-model.js';

describe('validateCostModel', () => {
  it('accepts the full shape and normalises every amount to a canonical decimal string', () => {
    const result = validateCostModel({
      tools: { search: '0.0020', 'web.fetch': 0.001 },
      default_tool: '0.0005',
      models: { 'gpt-4o': { input_tokens: '0.0000025', output_tokens: 0.00001 } },
      default_model: { input_tokens: '0.000001' },
      compute_per_ms: '0.000000001',
    });
    expect(result).toEqual({
      ok: true,
      model: {
        tools: { search: '0.002', 'web.fetch': '0.001' },
        default_tool: '0.0005',
        models: { 'gpt-4o': { input_tokens: '0.0000025', output_tokens: '0.00001' } },
        default_model: { input_tokens: '0.000001' },
        compute_per_ms: '0.000000001',
      },
    });
    if (result.ok) expect(parseNano(result.model.compute_per_ms!)).toBe(1n);
  });

  it('accepts an empty model', () => {
    expect(validateCostModel({})).toEqual({ ok: true, model: {} });
  });

  it('names the path of each bad amount and unknown field', () => {
    const result = validateCostModel({
      tools: { search: '-1' },
      default_tool: '0.0000000001',
      models: { m: { input_tokens: 'cheap', cached_tokens: '1' } },
      compute_ms: '1',
    });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const paths = result.errors.map((e) => e.path).sort();
    expect(paths).toEqual(['', 'default_tool', 'models.m', 'models.m.input_tokens', 'tools.search']);
    expect(result.errors.find((e) => e.path === 'default_tool')?.message).toMatch(/more than 9 decimal places/);
    expect(result.errors.find((e) => e.path === 'tools.search')?.message).toMatch(/zero or more/);
  });

  it('refuses a non-object', () => {
    expect(validateCostModel('0.1').ok).toBe(false);
    expect(validateCostModel(null).ok).toBe(false);
  });
});
