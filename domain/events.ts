/** The event vocabulary of the article: types, statuses, and the event as it travels the flow. */
export const EXECUTION_STATUSES = ['SUCCESS', 'FAILED', 'TIMEOUT', 'RATE_LIMITED'] as const;
export const AGENT_TYPES = ['CLAUDE', 'GPT', 'LANGCHAIN', 'CREWAI', 'AUTOGEN', 'CUSTOM'] as const;
export const USAGE_EVENT_TYPES = ['mcp.tool_invoked', 'agent.tool_invoked', 'api.request'] as const;
export const SESSION_EVENT_TYPES = ['session.started', 'session.paused', 'session.resumed', 'session.completed', 'session.failed'] as const;
const EVENT_TYPES = [...USAGE_EVENT_TYPES, ...SESSION_EVENT_TYPES] as const;

export type ExecutionStatus = (typeof EXECUTION_STATUSES)[number];

/**
 * What one event may carry, so that every store holds it exactly: token counts and durations fit
 * a PostgreSQL bigint, a ClickHouse UInt64 and a JS number (their sum too, still below 2^53); the
 * retry count fits the ledger's integer (int4) and ClickHouse's UInt32. A trillion tokens or 31
 * years in one call is beyond any real call by orders of magnitude. Money has its own bound
 * (MAX_EVENT_COST_NANO, domain/money.ts), checked where the cost is known: at the price stage.
 */
export const MAX_TOKENS = 1_000_000_000_000;
export const MAX_DURATION_MS = 1_000_000_000_000;
export const MAX_RETRY_COUNT = 2_147_483_647;
export type EventType = (typeof EVENT_TYPES)[number];

/** A credential as it travels the pipeline: never the raw key, only its hash. */
export type Credential = { kind: 'api_key'; keyHash: string } | { kind: 'client_id'; clientId: string };

/** The event as ingest writes it to the first stream. Times are epoch milliseconds. */
export interface UsageEvent {
  tenantId: string;
  eventId: string;
  eventType: EventType;
  credential: Credential;
  /** Random per accepted submission: tells a redelivery of one submission from a second submission of the same event_id. */
  ingestNonce: string;
  recordedAt: number;
  ingestedAt: number;
  reportedAgentId?: string;
  sessionId?: string;
  toolName?: string;
  mcpServerId?: string;
  model?: string;
  durationMs: number;
  status: ExecutionStatus;
  inputTokens: number;
  outputTokens: number;
  retryCount: number;
  isParallel: boolean;
  parentInvocationId?: string;
  errorType?: string;
  httpStatus?: number;
}

export function isUsageEventType(type: EventType): boolean {
  return (USAGE_EVENT_TYPES as readonly string[]).includes(type);
}

const SESSION_END_TYPES: ReadonlySet<EventType> = new Set<EventType>(['session.completed', 'session.failed']);

/** Whether an event of this type ends its session (completed or failed). */
export function endsSession(type: EventType): boolean {
  return SESSION_END_TYPES.has(type);
}
