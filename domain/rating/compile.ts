import { minorUnitDigits } from '../money.js';
import { DEFAULT_TOOL_KEY, type RatePlanPricing } from './plan-schema.js';
import { FACTOR_ONE, defaultMultiplier, readPlanNumbers, type PlanNumbers } from './plan-numbers.js';

/** What one call of a tool costs per dimension, after aliases, versions and the tool's multiplier. */
export interface ToolPrice {
  /** The key the plan prices the tool as: its final name after aliases, without a version the plan does not price. */
  readonly tool: string;
  readonly callNano: bigint;
  /** Per token, the tool's multiplier already applied. */
  readonly inputTokenNano: bigint;
  readonly outputTokenNano: bigint;
  /** Scaled by 10^9. */
  readonly multiplier: bigint;
  /** Whether the tool has a token multiplier of its own (its token charges get their own invoice lines). */
  readonly ownMultiplier: boolean;
  /** The tool's name after aliases and versions (`tool` without the MCP server). */
  readonly name: string;
  /** The MCP server whose own price this is (mcp_servers), if any. */
  readonly server?: string;
  /** Per token, per model the plan prices (token_multipliers.by_model), the tool's multiplier already applied. */
  readonly modelTokenNano: ReadonlyMap<string, { input: bigint; output: bigint }>;
}

/** Separates the MCP server from the tool in the key of a call priced by mcp_servers: `mcp_1 analyze_schema` (ids hold no space). */
const SERVER_KEY_SEPARATOR = ' ';

export interface CompiledPlan extends PlanNumbers {
  readonly currency: string;
  readonly minorUnitDigits: number;
  readonly pricing: RatePlanPricing;
  readonly planId?: string;
  readonly version?: number;
  /** Prices of every name the plan mentions (tools, aliases, versioned names), by the name an event may carry. */
  readonly toolPrices: ReadonlyMap<string, ToolPrice>;
  /** Per MCP server, its `*` price (mcp_servers[server].tool_invocations["*"]). */
  readonly serverDefaults: ReadonlyMap<string, bigint>;
  /** The `*` price, for tools the plan does not name. */
  readonly defaultToolPrice: ToolPrice;
  /** Upper bound of each duration bucket in ms (Infinity for the open last one), in order. */
  readonly durationLimitsMs: readonly number[];
  /** Whether usage rows need a session row (session fee, included calls or error penalty). */
  readonly hasSessionRules: boolean;
  readonly isCommitted: boolean;
}

export class PlanCompileError extends Error {}

/**
 * Reads a validated plan once so that rating does no parsing: every amount becomes a bigint,
 * every tool name the plan mentions is resolved through aliases and versions in advance.
 */
export function compilePlan(pricing: RatePlanPricing, currency: string, meta: { planId?: string; version?: number } = {}): CompiledPlan {
  let digits: number;
  try {
    digits = minorUnitDigits(currency);
  } catch (err) {
    throw new PlanCompileError((err as Error).message);
  }
  const numbers = readPlanNumbers(pricing);
  const callRateOf = (tool: string): bigint | undefined =>
    numbers.tiers?.kind === 'rate' ? numbers.tiers.rates[0] : numbers.toolRates.get(tool);
  const defaultCallRate = callRateOf(DEFAULT_TOOL_KEY) ?? 0n;
  const fallbackMultiplier = defaultMultiplier(numbers);

  const priceAs = (tool: string): ToolPrice => {
    const own = tool === DEFAULT_TOOL_KEY ? undefined : numbers.toolMultipliers.get(tool);
    const multiplier = own ?? fallbackMultiplier;
    const modelTokenNano = new Map(
      [...numbers.modelTokenRates.entries()].map(([model, rates]) => [
        model,
        { input: (rates.input * multiplier) / FACTOR_ONE, output: (rates.output * multiplier) / FACTOR_ONE },
      ]),
    );
    return {
      tool,
      name: tool,
      callNano: callRateOf(tool) ?? defaultCallRate,
      inputTokenNano: (numbers.inputTokenRate * multiplier) / FACTOR_ONE,
      outputTokenNano: (numbers.outputTokenRate * multiplier) / FACTOR_ONE,
      multiplier,
      ownMultiplier: own !== undefined,
      modelTokenNano,
    };
  };
  const isPriced = (tool: string) => numbers.toolRates.has(tool) || numbers.toolMultipliers.has(tool);

  /** alias -> its target; a versioned name the plan does not price -> its unversioned name (and that one's alias). */
  const canonical = (name: string): string => {
    const renamed = numbers.toolAliases.get(name) ?? name;
    if (isPriced(renamed)) return renamed;
    const base = withoutVersion(renamed);
    return base === renamed ? renamed : (numbers.toolAliases.get(base) ?? base);
  };

  const toolPrices = new Map<string, ToolPrice>();
  const names = new Set([...numbers.toolRates.keys(), ...numbers.toolMultipliers.keys(), ...numbers.toolAliases.keys(), ...numbers.toolAliases.values()]);
  names.delete(DEFAULT_TOOL_KEY);
  for (const name of names) toolPrices.set(name, priceAs(canonical(name)));
  const serverDefaults = new Map<string, bigint>();
  for (const [server, rates] of numbers.serverToolRates) {
    for (const [name, rate] of rates) {
      if (name === DEFAULT_TOOL_KEY) serverDefaults.set(server, rate);
      else toolPrices.set(serverKey(server, name), { ...priceAs(name), tool: serverKey(server, name), server, callNano: rate });
    }
  }

  return {
    ...numbers,
    currency,
    minorUnitDigits: digits,
    pricing,
    planId: meta.planId,
    version: meta.version,
    toolPrices,
    serverDefaults,
    defaultToolPrice: priceAs(DEFAULT_TOOL_KEY),
    durationLimitsMs: numbers.durationBuckets.map((bucket) => bucket.maxMs),
    hasSessionRules: numbers.hasSessionFee || numbers.includedCalls > 0n || numbers.penalty !== undefined,
    isCommitted: pricing.billing_mode === 'COMMITTED',
  };
}

function withoutVersion(name: string): string {
  const at = name.indexOf('@');
  return at > 0 ? name.slice(0, at) : name;
}

/**
 * The price of a tool as an event names it. A name the plan does not mention is priced by
 * its unversioned name when it carries a version (`search@3` -> `search`), else by `*`; the
 * returned `tool` is then that name, not `*`, so usage and invoices still show which tool ran.
 */
export function priceOfTool(plan: CompiledPlan, name: string | undefined, server?: string): { price: ToolPrice; tool: string } {
  const general = generalPriceOfTool(plan, name);
  if (server === undefined || !name || !plan.serverToolRates.has(server)) return general;
  const key = serverKey(server, general.tool);
  const own = plan.toolPrices.get(key);
  if (own) return { price: own, tool: key };
  const serverDefault = plan.serverDefaults.get(server);
  if (serverDefault === undefined) return general;
  return { price: { ...general.price, tool: key, name: general.tool, server, callNano: serverDefault }, tool: key };
}

function serverKey(server: string, tool: string): string {
  return `${server}${SERVER_KEY_SEPARATOR}${tool}`;
}

/**
 * The price behind a usage row's tool key, as rating produced it: `server tool` for a call priced
 * by mcp_servers (a server the plan names, then the tool), else the tool key itself.
 */
export function priceOfKey(plan: CompiledPlan, key: string): ToolPrice {
  if (plan.serverToolRates.size > 0) {
    const cut = key.indexOf(SERVER_KEY_SEPARATOR);
    const server = cut > 0 ? key.slice(0, cut) : undefined;
    if (server !== undefined && plan.serverToolRates.has(server)) return priceOfTool(plan, key.slice(cut + 1), server).price;
  }
  return priceOfTool(plan, key === DEFAULT_TOOL_KEY ? undefined : key).price;
}

function generalPriceOfTool(plan: CompiledPlan, name: string | undefined): { price: ToolPrice; tool: string } {
  if (!name) return { price: plan.defaultToolPrice, tool: DEFAULT_TOOL_KEY };
  const known = plan.toolPrices.get(name);
  if (known) return { price: known, tool: known.tool };
  const base = withoutVersion(name);
  if (base !== name) {
    const baseKnown = plan.toolPrices.get(base);
    if (baseKnown) return { price: baseKnown, tool: baseKnown.tool };
  }
  return { price: plan.defaultToolPrice, tool: base };
}

/** Index of the bucket a call of this duration falls in: the first whose bound it does not exceed. */
export function durationBucketIndex(plan: CompiledPlan, durationMs: number): number {
  const limits = plan.durationLimitsMs;
  for (let index = 0; index < limits.length; index++) {
    if (durationMs <= limits[index]) return index;
  }
  return limits.length - 1;
}
