import { z } from 'zod';
import { CURRENCY_CODE } from '../money.js';
import { USAGE_EVENT_TYPES, type ExecutionStatus } from '../events.js';
import { subscriptionTermsSchema, type SubscriptionTerms } from './plan-schema.js';
import { describeIssuesAsJsonPath, validateRatePlan, type ValidationProblem } from './plan.js';
import { compilePlan, type CompiledPlan } from './compile.js';
import { rateEvent } from './rate-event.js';
import { RatingError, ratePeriod, type Invoice, type InvoiceLine } from './rate-period.js';
import { usageRowsForRun, type UsageRow } from './usage-rows.js';

/**
 * A quote prices a usage vector with the very code that bills: the vector is turned into the
 * events it describes, each run of identical calls is rated once and its usage rows computed as
 * the pipeline would, and the rows are rated as one period of one subscription.
 */

const whole = z.number({ error: 'must be a whole number' }).int('must be a whole number').min(0, 'must be 0 or more').max(Number.MAX_SAFE_INTEGER);
const name = z.string().min(1, 'must not be empty').max(256);

const callGroupSchema = z
  .strictObject({
    tool: name.optional().meta({ description: 'Tool name as events carry it (aliases and versions resolve as in rating).' }),
    count: whole.min(1, 'a call group has at least one call').meta({ description: 'Number of calls.' }),
    failed: whole.optional().meta({ description: 'How many of them failed (status FAILED); counts toward the error-rate penalty.' }),
    input_tokens: whole.optional().meta({ description: 'Input tokens of all these calls together.' }),
    output_tokens: whole.optional().meta({ description: 'Output tokens of all these calls together.' }),
    duration_ms: whole.optional().meta({ description: 'Duration of each call, in milliseconds.' }),
    event_type: z.enum(USAGE_EVENT_TYPES).optional(),
    agent_id: name.optional(),
    model: name.optional().meta({ description: "The model of these calls' tokens (token_multipliers.by_model)." }),
    mcp_server_id: name.optional().meta({ description: 'The MCP server called (mcp_servers prices).' }),
  })
  .superRefine((group, ctx) => {
    if ((group.failed ?? 0) > group.count) ctx.addIssue({ code: 'custom', path: ['failed'], message: `cannot exceed count (${group.count})` });
  });

export const usageVectorSchema = z
  .strictObject({
    month_to_date_invocations: whole.optional().meta({ description: 'Calls of the month already made: they place these calls in the volume tiers and use the commitment first.' }),
    sessions: z.array(z.strictObject({ id: name, agent_id: name.optional(), calls: z.array(callGroupSchema).max(1000) })).max(10_000).optional(),
    calls: z.array(callGroupSchema).max(1000).optional().meta({ description: 'Calls outside any session.' }),
  })
  .superRefine((usage, ctx) => {
    const seen = new Set<string>();
    usage.sessions?.forEach((session, index) => {
      if (seen.has(session.id)) ctx.addIssue({ code: 'custom', path: ['sessions', index, 'id'], message: `session ${session.id} is listed twice` });
      seen.add(session.id);
    });
  });

export type UsageVector = z.output<typeof usageVectorSchema>;
type CallGroup = z.output<typeof callGroupSchema>;

export interface Quote extends Invoice {
  /** What validation noticed in the plan without refusing it (a bounded last duration bucket), by JSON path. */
  warnings: ValidationProblem[];
  calls: number;
  sessions: number;
  month_to_date_invocations: number;
}

export function quote(plan: CompiledPlan, usage: UsageVector, terms?: SubscriptionTerms, warnings: ValidationProblem[] = []): Quote {
  if (!plan.isCommitted && (terms?.commitment || Object.keys(terms?.allocation ?? {}).length > 0)) {
    throw new RatingError('terms.commitment and terms.allocation apply to a COMMITTED plan only');
  }
  const monthToDate = BigInt(usage.month_to_date_invocations ?? 0);
  const rows: UsageRow[] = [];
  let periodCalls = monthToDate;
  const addGroup = (group: CallGroup, sessionId: string | undefined, agentId: string | undefined, sessionCalls: bigint): bigint => {
    for (const run of callRuns(group)) {
      const input = {
        eventType: group.event_type ?? 'mcp.tool_invoked',
        toolName: group.tool,
        model: group.model,
        mcpServerId: group.mcp_server_id,
        inputTokens: run.inputTokens,
        outputTokens: run.outputTokens,
        durationMs: group.duration_ms ?? 0,
        status: run.status,
      } as const;
      const rating = rateEvent(plan, input);
      const calls = BigInt(run.calls);
      rows.push(...usageRowsForRun(plan, { ...input, rating, sessionId, agentId: group.agent_id ?? agentId }, { periodCalls, sessionCalls }, calls));
      periodCalls += calls;
      sessionCalls += calls;
    }
    return sessionCalls;
  };
  for (const session of usage.sessions ?? []) {
    let sessionCalls = 0n;
    for (const group of session.calls) sessionCalls = addGroup(group, session.id, session.agent_id, sessionCalls);
  }
  for (const group of usage.calls ?? []) addGroup(group, undefined, undefined, 0n);

  const invoice = ratePeriod([{ subscriptionId: 'quote', plan, rows, terms, priorCalls: monthToDate }]);
  return {
    ...invoice,
    lines: invoice.lines.map(({ subscription_id: _subscription, ...line }) => line as InvoiceLine),
    warnings,
    calls: Number(periodCalls - monthToDate),
    sessions: usage.sessions?.length ?? 0,
    month_to_date_invocations: Number(monthToDate),
  };
}

interface CallRun {
  calls: number;
  status: ExecutionStatus;
  inputTokens: number;
  outputTokens: number;
}

/**
 * A call group as runs of identical calls: the failed ones first, and token totals spread as
 * evenly as whole tokens allow (the remainder one token each on the first calls).
 */
function callRuns(group: CallGroup): CallRun[] {
  const calls = group.count;
  const failed = group.failed ?? 0;
  const input = group.input_tokens ?? 0;
  const output = group.output_tokens ?? 0;
  const inputExtra = input % calls;
  const outputExtra = output % calls;
  const cuts = [...new Set([0, failed, inputExtra, outputExtra, calls])].sort((a, b) => a - b);
  const runs: CallRun[] = [];
  for (let index = 0; index + 1 < cuts.length; index++) {
    const from = cuts[index];
    runs.push({
      calls: cuts[index + 1] - from,
      status: from < failed ? 'FAILED' : 'SUCCESS',
      inputTokens: Math.floor(input / calls) + (from < inputExtra ? 1 : 0),
      outputTokens: Math.floor(output / calls) + (from < outputExtra ? 1 : 0),
    });
  }
  return runs;
}

export interface QuoteRequest {
  plan: CompiledPlan;
  /** The plan's warnings, with paths from the top of the request (`$.plan.duration_buckets[2].max_seconds`). */
  warnings: ValidationProblem[];
  usage: UsageVector;
  terms?: SubscriptionTerms;
}

/**
 * Reads `{ plan: { currency, version?, ...pricing }, usage, terms? }`, as the HTTP route and the
 * CLI receive it. Problems come back with JSON paths from the top of the request (`$.plan.duration_buckets[1].rate`).
 */
export function parseQuoteRequest(body: unknown): { ok: true; request: QuoteRequest } | { ok: false; errors: ValidationProblem[] } {
  const errors: ValidationProblem[] = [];
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { ok: false, errors: [{ path: '$', message: 'must be an object { plan, usage, terms? }' }] };
  }
  const { plan: rawPlan, usage: rawUsage, terms: rawTerms, ...rest } = body as Record<string, unknown>;
  for (const key of Object.keys(rest)) errors.push({ path: `$.${key}`, message: 'unknown key (expected plan, usage and terms)' });

  let plan: CompiledPlan | undefined;
  let warnings: ValidationProblem[] = [];
  if (typeof rawPlan !== 'object' || rawPlan === null || Array.isArray(rawPlan)) {
    errors.push({ path: '$.plan', message: 'is required: the pricing JSON with its currency' });
  } else {
    const { currency, version, ...pricing } = rawPlan as Record<string, unknown>;
    if (typeof currency !== 'string' || !CURRENCY_CODE.test(currency)) {
      errors.push({ path: '$.plan.currency', message: 'is required: a 3-letter ISO 4217 code such as "USD"' });
    }
    if (version !== undefined && !(Number.isSafeInteger(version) && (version as number) >= 1)) {
      errors.push({ path: '$.plan.version', message: 'must be a whole number from 1' });
    }
    const validated = validateRatePlan(pricing);
    if (!validated.ok) errors.push(...under('$.plan', validated.errors));
    else if (typeof currency === 'string' && CURRENCY_CODE.test(currency)) {
      plan = compilePlan(validated.plan, currency, { version: version as number | undefined });
      warnings = under('$.plan', validated.warnings);
    }
  }

  const usage = usageVectorSchema.safeParse(rawUsage ?? {});
  if (!usage.success) errors.push(...under('$.usage', describeIssuesAsJsonPath(usage.error)));
  const terms = rawTerms === undefined ? undefined : subscriptionTermsSchema.safeParse(rawTerms);
  if (terms && !terms.success) errors.push(...under('$.terms', describeIssuesAsJsonPath(terms.error)));

  if (errors.length > 0 || !plan || !usage.success) return { ok: false, errors };
  return { ok: true, request: { plan, warnings, usage: usage.data, terms: terms?.success ? terms.data : undefined } };
}

function under(prefix: string, problems: ValidationProblem[]): ValidationProblem[] {
  return problems.map((problem) => ({ path: prefix + problem.path.slice(1), message: problem.message }));
}

/** The quote or invoice as JSON: every amount a decimal string, never a JS number. */
export function invoiceJson(invoice: Invoice): Record<string, unknown> {
  return JSON.parse(JSON.stringify(invoice, (_key, value) => (typeof value === 'bigint' ? value.toString() : value)));
}
