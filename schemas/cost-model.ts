import { z } from 'zod';
import { decimalAmount, describeIssues, type Validated } from '../domain/validation.js';

/**
 * What the tenant pays its own providers (COGS): per tool call, per model token and per
 * compute millisecond. This is the `model` jsonb of table cost_models; every amount is a
 * canonical decimal string in the currency's major unit, read with parseNano.
 */
const rate = decimalAmount();

const tokenRates = z.strictObject({
  input_tokens: rate.optional(),
  output_tokens: rate.optional(),
});

const name = z.string().min(1).max(256);

export const costModelSchema = z
  .strictObject({
    tools: z.record(name, rate).optional().meta({ description: 'Cost of one call of each named tool.' }),
    default_tool: rate.optional().meta({ description: 'Cost of one call of a tool not named in `tools`.' }),
    models: z.record(name, tokenRates).optional().meta({ description: 'Cost per token of each named model.' }),
    default_model: tokenRates.optional().meta({ description: 'Cost per token of a model not named in `models`.' }),
    compute_per_ms: rate.optional().meta({ description: 'Cost of one millisecond of execution.' }),
  })
  .meta({ description: 'A COGS cost model: what each tool call, model token and compute millisecond costs the tenant.' });

export type CostModel = z.output<typeof costModelSchema>;

export function validateCostModel(input: unknown): Validated<'model', CostModel> {
  const parsed = costModelSchema.safeParse(input);
  return parsed.success ? { ok: true, model: parsed.data } : { ok: false, errors: describeIssues(parsed.error) };
}
