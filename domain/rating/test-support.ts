import type { EventType, ExecutionStatus } from '../events.js';
import type { SubscriptionTerms } from './plan-schema.js';
import { validateRatePlan } from './plan.js';
import { compilePlan, type CompiledPlan } from './compile.js';
import { rateEvent } from './rate-event.js';
import { ratePeriod, type Invoice, type InvoiceLine } from './rate-period.js';
import { PeriodUsage, type RatedUsage, type UsageRow } from './usage-rows.js';

/** Validates and compiles a plan, failing loudly with its problems. */
export function planOf(pricing: unknown, currency = 'USD'): CompiledPlan {
  const validated = validateRatePlan(pricing);
  if (!validated.ok) throw new Error(`invalid test plan: ${JSON.stringify(validated.errors)}`);
  return compilePlan(validated.plan, currency);
}

export interface Call {
  tool?: string;
  input?: number;
  output?: number;
  ms?: number;
  status?: ExecutionStatus;
  session?: string;
  agent?: string;
  type?: EventType;
  model?: string;
  server?: string;
}

export function rated(plan: CompiledPlan, call: Call): RatedUsage {
  const input = {
    eventType: call.type ?? 'mcp.tool_invoked',
    toolName: call.tool,
    model: call.model,
    mcpServerId: call.server,
    inputTokens: call.input ?? 0,
    outputTokens: call.output ?? 0,
    durationMs: call.ms ?? 0,
    status: call.status ?? 'SUCCESS',
  } as const;
  return { ...input, rating: rateEvent(plan, input), sessionId: call.session, agentId: call.agent };
}

export function repeat(times: number, call: Call): Call[] {
  return Array.from({ length: times }, () => call);
}

export function rowsOf(plan: CompiledPlan, calls: Call[], callsBefore = 0n): UsageRow[] {
  const period = new PeriodUsage(plan, callsBefore);
  for (const call of calls) period.add(rated(plan, call));
  return period.rows;
}

export function bill(plan: CompiledPlan, calls: Call[], terms?: SubscriptionTerms): Invoice {
  return ratePeriod([{ subscriptionId: 'sub_1', plan, rows: rowsOf(plan, calls), terms }]);
}

/** The lines as [code, amount] pairs, for compact expectations. */
export function amounts(invoice: Invoice): [string, string][] {
  return invoice.lines.map((line: InvoiceLine) => [line.code, line.amount]);
}
