import type { EventType, ExecutionStatus } from '../events.js';
import { USAGE_EVENT_TYPES } from '../events.js';
import { durationBucketIndex, priceOfTool, type CompiledPlan } from './compile.js';

export interface RatingInput {
  eventType: EventType;
  toolName?: string;
  /** The model that consumed the tokens: priced by token_multipliers.by_model when the plan names it. */
  model?: string;
  /** The MCP server called: its tools are priced by mcp_servers when the plan names it. */
  mcpServerId?: string;
  inputTokens: number;
  outputTokens: number;
  durationMs: number;
  status: ExecutionStatus;
}

/** The dimensions of an event's cost; every rated event carries all four. */
const EVENT_DIMENSIONS = ['tool', 'input_tokens', 'output_tokens', 'duration'] as const;
type EventDimension = (typeof EVENT_DIMENSIONS)[number];

export interface EventRating {
  /** Nano-units, exact: the sum of the breakdown. */
  total: bigint;
  /** The tool key the plan priced the event as, after aliases and versions. */
  tool: string;
  breakdown: Record<EventDimension, bigint>;
}

const USAGE_TYPES: ReadonlySet<string> = new Set(USAGE_EVENT_TYPES);

/** Whether an event is a billable call (tool invocation or API request), not a session control event. */
export function countsAsCall(eventType: EventType): boolean {
  return USAGE_TYPES.has(eventType);
}

/**
 * The cost of one event, exact in nano-units: tool rate + input tokens x rate x tool multiplier
 * + output tokens x rate x tool multiplier + the rate of the duration bucket the call falls in.
 * Failed, timed-out and rate-limited calls cost the same as successful ones (they consumed
 * compute); session-level and monthly rules (penalties, tiers, fees, commitments) are period
 * rules, applied by ratePeriod. Session control events cost nothing.
 */
export function rateEvent(plan: CompiledPlan, event: RatingInput): EventRating {
  if (!USAGE_TYPES.has(event.eventType)) {
    return { total: 0n, tool: '', breakdown: { tool: 0n, input_tokens: 0n, output_tokens: 0n, duration: 0n } };
  }
  const { price, tool } = priceOfTool(plan, event.toolName, event.mcpServerId);
  const modelRates = event.model === undefined ? undefined : price.modelTokenNano.get(event.model);
  const inputRate = modelRates ? modelRates.input : price.inputTokenNano;
  const outputRate = modelRates ? modelRates.output : price.outputTokenNano;
  const input = event.inputTokens === 0 || inputRate === 0n ? 0n : BigInt(event.inputTokens) * inputRate;
  const output = event.outputTokens === 0 || outputRate === 0n ? 0n : BigInt(event.outputTokens) * outputRate;
  const duration = plan.durationLimitsMs.length === 0 ? 0n : plan.durationBuckets[durationBucketIndex(plan, event.durationMs)].rate;
  const call = price.callNano;
  return { total: call + input + output + duration, tool, breakdown: { tool: call, input_tokens: input, output_tokens: output, duration } };
}
