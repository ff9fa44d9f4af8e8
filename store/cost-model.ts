import { parseNano } from '../domain/money.js';
import type { AnalyticsEvent } from '../domain/flow.js';
import { validateCostModel } from '../schemas/cost-model.js';

/**
 * The provider's cost of an event (COGS), exact in bigint nano-units, from a tenant's cost
 * model: tool rate (tools[tool] or default_tool) + input_tokens x input rate + output_tokens x
 * output rate (models[model] or default_model) + duration_ms x compute_per_ms. A rate the model
 * does not give is 0.
 */
interface TokenRates {
  input: bigint;
  output: bigint;
}

export interface CompiledCostModel {
  id: string;
  currency: string;
  /** Epoch milliseconds; -Infinity for a model effective since always. */
  effectiveFrom: number;
  tools: Map<string, bigint>;
  defaultTool?: bigint;
  models: Map<string, TokenRates>;
  defaultModel?: TokenRates;
  computePerMs: bigint;
}

/** A stored model that does not validate: events it would cost fail (and are dead-lettered) rather than costing 0. */
interface InvalidCostModel {
  id: string;
  currency: string;
  effectiveFrom: number;
  invalid: string;
}

export type LoadedCostModel = CompiledCostModel | InvalidCostModel;

export interface CostModelRow {
  id: string;
  currency: string;
  /** Epoch milliseconds (-Infinity for the column's default '-infinity'). */
  effective_from_ms: number;
  model: unknown;
}

const tokenRates = (rates: { input_tokens?: string; output_tokens?: string }): TokenRates => ({
  input: parseNano(rates.input_tokens ?? '0'),
  output: parseNano(rates.output_tokens ?? '0'),
});

/** Validates a stored model (validateCostModel) and turns its decimal rates into nano-units once. */
export function compileCostModel(row: CostModelRow): LoadedCostModel {
  const base = { id: row.id, currency: row.currency, effectiveFrom: row.effective_from_ms };
  const validated = validateCostModel(row.model);
  if (!validated.ok) {
    return { ...base, invalid: validated.errors.map((e) => `${e.path || '(model)'}: ${e.message}`).join('; ') };
  }
  const model = validated.model;
  return {
    ...base,
    tools: new Map(Object.entries(model.tools ?? {}).map(([name, rate]) => [name, parseNano(rate)])),
    defaultTool: model.default_tool === undefined ? undefined : parseNano(model.default_tool),
    models: new Map(Object.entries(model.models ?? {}).map(([name, rates]) => [name, tokenRates(rates)])),
    defaultModel: model.default_model === undefined ? undefined : tokenRates(model.default_model),
    computePerMs: parseNano(model.compute_per_ms ?? '0'),
  };
}

/**
 * The model that costs an event: the newest (latest effective_from; the later id on a tie) in
 * the event's currency with effective_from <= recordedAt. A model in another currency is not
 * used: the margin (price - cogs) is only meaningful in one currency.
 */
export function pickCostModel(models: readonly LoadedCostModel[], recordedAt: number, currency: string): LoadedCostModel | undefined {
  let best: LoadedCostModel | undefined;
  for (const model of models) {
    if (model.currency !== currency || model.effectiveFrom > recordedAt) continue;
    if (!best || model.effectiveFrom > best.effectiveFrom || (model.effectiveFrom === best.effectiveFrom && model.id > best.id)) best = model;
  }
  return best;
}

export interface CogsInput {
  toolName?: string;
  /** The tool key the price stage rated the event as (after aliases); tried when toolName has no rate. */
  pricedTool?: string;
  model?: string;
  inputTokens: number;
  outputTokens: number;
  durationMs: number;
}

/** Each part of an event's COGS (nano-units as decimal strings, for jsonb) and which rate gave it. */
interface CogsBreakdown {
  cost_model_id: string | null;
  /** Why there is no cost (no model in the event's currency effective at its time). */
  reason?: string;
  /** The `tools` key that gave the tool rate, '*' for default_tool, null for none. */
  tool_rate?: string | null;
  /** The `models` key that gave the token rates, '*' for default_model, null for none. */
  model_rate?: string | null;
  tool_nano?: string;
  input_tokens_nano?: string;
  output_tokens_nano?: string;
  compute_nano?: string;
}

export interface Cogs {
  cogsNano: bigint;
  breakdown: CogsBreakdown;
}

/** The rates that cost an event, and the tools / models key that gave each ('*' the default, null none). */
function pickRates(
  model: CompiledCostModel,
  event: Pick<CogsInput, 'toolName' | 'pricedTool' | 'model'>,
): { toolRate: string | null; tool: bigint; modelRate: string | null; rates: TokenRates } {
  let toolRate: string | null = null;
  let tool = 0n;
  // A call priced by the plan's mcp_servers has the priced key "server tool": its tool is the part after the space.
  const pricedName = event.pricedTool?.includes(' ') ? event.pricedTool.slice(event.pricedTool.indexOf(' ') + 1) : undefined;
  for (const name of [event.toolName, event.pricedTool, pricedName]) {
    if (name && model.tools.has(name)) {
      toolRate = name;
      tool = model.tools.get(name)!;
      break;
    }
  }
  if (toolRate === null && model.defaultTool !== undefined) {
    toolRate = '*';
    tool = model.defaultTool;
  }
  let modelRate: string | null = null;
  let rates: TokenRates = NO_TOKEN_RATES;
  if (event.model && model.models.has(event.model)) {
    modelRate = event.model;
    rates = model.models.get(event.model)!;
  } else if (model.defaultModel) {
    modelRate = '*';
    rates = model.defaultModel;
  }
  return { toolRate, tool, modelRate, rates };
}

const NO_TOKEN_RATES: TokenRates = { input: 0n, output: 0n };

export function computeCogs(model: CompiledCostModel, event: CogsInput): Cogs {
  const { toolRate, tool, modelRate, rates } = pickRates(model, event);
  const input = BigInt(event.inputTokens) * rates.input;
  const output = BigInt(event.outputTokens) * rates.output;
  const compute = BigInt(event.durationMs) * model.computePerMs;
  return {
    cogsNano: tool + input + output + compute,
    breakdown: {
      cost_model_id: model.id,
      tool_rate: toolRate,
      model_rate: modelRate,
      tool_nano: tool.toString(),
      input_tokens_nano: input.toString(),
      output_tokens_nano: output.toString(),
      compute_nano: compute.toString(),
    },
  };
}

/** The COGS of an event no cost model covers: zero, saying so. */
function uncosted(currency: string, recordedAt: number): Cogs {
  return {
    cogsNano: 0n,
    breakdown: { cost_model_id: null, reason: `no cost model in ${currency} effective at ${new Date(recordedAt).toISOString()}` },
  };
}

export class InvalidCostModelError extends Error {}

/**
 * The COGS of one usage event from its tenant's cost models (the one in force at the event's
 * time, in its currency); uncosted (0) without one; an error when that model does not validate.
 * analytics-dispatch computes the same figure for the ClickHouse row.
 */
export function eventCogs(models: LoadedCostModel[], event: AnalyticsEvent): Cogs | InvalidCostModelError {
  return callCogs(models, {
    tenantId: event.tenantId,
    recordedAt: event.recordedAt,
    currency: event.subscription.currency,
    toolName: event.toolName,
    pricedTool: event.cost.tool,
    model: event.model,
    inputTokens: event.inputTokens,
    outputTokens: event.outputTokens,
    durationMs: event.durationMs,
    reversal: event.reversal,
  });
}

/**
 * eventCogs without its breakdown (the cogs stage's sums need the figure only): the same COGS,
 * null when no cost model covers the event, the same error when the one that would does not validate.
 */
export function eventCogsNano(models: LoadedCostModel[], event: AnalyticsEvent): bigint | null | InvalidCostModelError {
  const model = pickCostModel(models, event.recordedAt, event.subscription.currency);
  if (model && 'invalid' in model) return invalidModelError(model, event.tenantId);
  if (!model) return null;
  // As callCogs: a reversing row's quantities negated, then its COGS negated.
  const sign = event.reversal ? -1 : 1;
  const { tool, rates } = pickRates(model, { toolName: event.toolName, pricedTool: event.cost.tool, model: event.model });
  const cogs =
    tool + BigInt(sign * event.inputTokens) * rates.input + BigInt(sign * event.outputTokens) * rates.output + BigInt(sign * event.durationMs) * model.computePerMs;
  return event.reversal ? -cogs : cogs;
}

const invalidModelError = (model: InvalidCostModel, tenantId: string) =>
  new InvalidCostModelError(`cost model ${model.id} of tenant ${tenantId} is invalid: ${model.invalid}`);

/**
 * eventCogs for what a ledger row holds. A reversing row (a correction) carries the original's
 * quantities negated: its COGS is the original's, negated, part by part.
 */
export function callCogs(
  models: LoadedCostModel[],
  call: CogsInput & { tenantId: string; recordedAt: number; currency: string; reversal?: boolean },
): Cogs | InvalidCostModelError {
  const model = pickCostModel(models, call.recordedAt, call.currency);
  if (model && 'invalid' in model) return invalidModelError(model, call.tenantId);
  if (!model) return uncosted(call.currency, call.recordedAt);
  const sign = call.reversal ? -1 : 1;
  const cogs = computeCogs(model, {
    toolName: call.toolName,
    pricedTool: call.pricedTool,
    model: call.model,
    inputTokens: sign * call.inputTokens,
    outputTokens: sign * call.outputTokens,
    durationMs: sign * call.durationMs,
  });
  return call.reversal ? negatedCogs(cogs) : cogs;
}

/** The COGS of a reversing row: the original call's, every part negated. */
function negatedCogs(cogs: Cogs): Cogs {
  const negate = (nano?: string) => (nano === undefined ? undefined : (-BigInt(nano)).toString());
  return {
    cogsNano: -cogs.cogsNano,
    breakdown: {
      ...cogs.breakdown,
      tool_nano: negate(cogs.breakdown.tool_nano),
      input_tokens_nano: negate(cogs.breakdown.input_tokens_nano),
      output_tokens_nano: negate(cogs.breakdown.output_tokens_nano),
      compute_nano: negate(cogs.breakdown.compute_nano),
    },
  };
}
