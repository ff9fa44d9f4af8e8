import type { AnalyticsEvent } from '../../domain/flow.js';

/** A row of {db}.invocations as JSONEachRow: 64-bit integers as decimal strings, times in UTC. */
export interface InvocationRow {
  tenant_id: string;
  event_id: string;
  event_type: string;
  customer_id: string;
  team_id: string;
  agent_id: string;
  app_id: string;
  credential_id: string;
  product_id: string;
  session_id: string;
  tool_name: string;
  priced_tool: string;
  mcp_server_id: string;
  model: string;
  execution_status: string;
  error_type: string;
  duration_ms: number;
  input_tokens: number;
  output_tokens: number;
  total_tokens: number;
  retry_count: number;
  is_parallel: 0 | 1;
  cost_nano: string;
  /** The provider's cost of the call (as cogs_ledger.cogs_nano); 0 for session control events. */
  cogs_nano: string;
  currency: string;
  over_cap: 0 | 1;
  subscription_id: string;
  rate_plan_id: string;
  rate_plan_version_id: string;
  rate_plan_version: number;
  recorded_at: string;
  recorded_date: string;
  ingested_at: string;
}

/** The columns of {db}.invocations, in table order: the column list of an INSERT in a positional format (TabSeparated, CSV, RowBinary). */
export const INVOCATION_COLUMNS = [
  'tenant_id', 'event_id', 'event_type', 'customer_id', 'team_id', 'agent_id', 'app_id', 'credential_id', 'product_id',
  'session_id', 'tool_name', 'priced_tool', 'mcp_server_id', 'model', 'execution_status', 'error_type', 'duration_ms',
  'input_tokens', 'output_tokens', 'total_tokens', 'retry_count', 'is_parallel', 'cost_nano', 'cogs_nano', 'currency',
  'over_cap', 'subscription_id', 'rate_plan_id', 'rate_plan_version_id', 'rate_plan_version', 'recorded_at',
  'recorded_date', 'ingested_at',
] as const satisfies readonly (keyof InvocationRow)[];

/**
 * A time's text in UTC, truncated to a unit, with the last unit formatted kept: the events of a
 * batch come in ledger order, most in the second (and day) of the one before, and formatting a
 * Date for every time of every row was 3-4% of the process that runs analytics-dispatch
 * (BENCHMARKS.md). One per column, so that the times of a row do not take each other's place.
 */
class UtcText {
  private unit = Number.NaN;
  private text = '';

  constructor(
    private readonly unitMs: number,
    private readonly format: (iso: string) => string,
  ) {}

  of(ms: number): string {
    const unit = Math.floor(ms / this.unitMs);
    if (unit !== this.unit) {
      this.text = this.format(new Date(unit * this.unitMs).toISOString());
      this.unit = unit;
    }
    return this.text;
  }
}

/** 'YYYY-MM-DD hh:mm:ss', the text form of DateTime('UTC') (seconds; milliseconds dropped). */
const dateTime = (iso: string) => iso.slice(0, 19).replace('T', ' ');
const recordedAtText = new UtcText(1000, dateTime);
const ingestedAtText = new UtcText(1000, dateTime);
const dayText = new UtcText(86_400_000, (iso) => iso.slice(0, 10));

/** 'YYYY-MM-DD' in UTC. */
export function chDate(ms: number): string {
  return dayText.of(ms);
}

/** The analytics row of a ledgered event: every column the dashboards group or sum by. */
export function invocationRow(event: AnalyticsEvent, cogsNano = 0n): InvocationRow {
  const { attribution: who, subscription: sub } = event;
  return {
    tenant_id: event.tenantId,
    event_id: event.eventId,
    event_type: event.eventType,
    customer_id: who.customerId,
    team_id: who.teamId,
    agent_id: who.agentId ?? '',
    app_id: who.appId ?? '',
    credential_id: who.credentialId,
    product_id: who.productId ?? '',
    session_id: event.sessionId ?? '',
    tool_name: event.toolName ?? '',
    priced_tool: event.cost.tool ?? '',
    mcp_server_id: event.mcpServerId ?? '',
    model: event.model ?? '',
    execution_status: event.status,
    error_type: event.errorType ?? '',
    duration_ms: event.durationMs,
    input_tokens: event.inputTokens,
    output_tokens: event.outputTokens,
    total_tokens: event.inputTokens + event.outputTokens,
    retry_count: event.retryCount,
    is_parallel: event.isParallel ? 1 : 0,
    cost_nano: event.cost.total.toString(),
    cogs_nano: cogsNano.toString(),
    currency: sub.currency,
    over_cap: event.overCap ? 1 : 0,
    subscription_id: sub.subscriptionId,
    rate_plan_id: sub.ratePlanId,
    rate_plan_version_id: sub.ratePlanVersionId,
    rate_plan_version: sub.ratePlanVersion,
    recorded_at: recordedAtText.of(event.recordedAt),
    recorded_date: chDate(event.recordedAt),
    ingested_at: ingestedAtText.of(event.ingestedAt),
  };
}
