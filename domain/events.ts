import type { EventRating } from './rating/rate-event.js';

/** The event vocabulary of the article: types, statuses, and the event as it travels the flow. */
export const EXECUTION_STATUSES = ['SUCCESS', 'FAILED', 'TIMEOUT', 'RATE_LIMITED'] as const;
export const AGENT_TYPES = ['CLAUDE', 'GPT', 'LANGCHAIN', 'CREWAI', 'AUTOGEN', 'CUSTOM'] as const;
export const USAGE_EVENT_TYPES = ['mcp.tool_invoked', 'agent.tool_invoked', 'api.request'] as const;
export const SESSION_EVENT_TYPES = ['session.paused', 'session.resumed', 'session.completed', 'session.failed'] as const;
export const EVENT_TYPES = [...USAGE_EVENT_TYPES, ...SESSION_EVENT_TYPES] as const;

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

/**
 * The event as it grows along the flow. Each stage adds one part and forwards the whole;
 * times are epoch milliseconds, money is bigint nano-units.
 */

/** Added by key-resolve: who the credential belongs to. */
export interface Attribution {
  customerId: string;
  teamId: string;
  agentId?: string;
  appId?: string;
  /** The api_keys or client_credentials row that resolved. */
  credentialId: string;
  productId?: string;
  productKind?: string;
}

/** Added by subscription-snapshot: the subscription and plan version active at recordedAt. */
export interface SubscriptionSnapshot {
  subscriptionId: string;
  ratePlanId: string;
  ratePlanVersionId: string;
  ratePlanVersion: number;
  currency: string;
  /** The billing period containing recordedAt (calendar month, UTC). */
  periodStart: number;
  periodEnd: number;
}

/** Added by price: the exact cost of the event, the tool key it was priced as, and its share per dimension. */
export type EventCost = EventRating;

export type ResolvedEvent = UsageEvent & { attribution: Attribution };
export type AttributedEvent = ResolvedEvent & { subscription: SubscriptionSnapshot };
export type PricedEvent = AttributedEvent & { cost: EventCost };
/** Added by cap-check: the spend counters it advanced for this event (ledger-write takes them back for a duplicate). */
export type CheckedEvent = PricedEvent & { capCounters: { key: string; by: bigint }[] };
/** Added by ledger-write: whether a spend cap was at or over its limit with this event (it is billed all the same). */
export type LedgeredEvent = CheckedEvent & { overCap: boolean };

/**
 * A ledger row as the ledger export reads it back for ClickHouse: what the ledger keeps of a
 * LedgeredEvent (no raw credential hash, cap counters or per-dimension breakdown).
 */
export type AnalyticsEvent = Pick<
  LedgeredEvent,
  | 'tenantId'
  | 'eventId'
  | 'eventType'
  | 'recordedAt'
  | 'ingestedAt'
  | 'sessionId'
  | 'toolName'
  | 'mcpServerId'
  | 'model'
  | 'durationMs'
  | 'status'
  | 'inputTokens'
  | 'outputTokens'
  | 'retryCount'
  | 'isParallel'
  | 'errorType'
  | 'overCap'
> & {
  attribution: Pick<Attribution, 'customerId' | 'teamId' | 'agentId' | 'appId' | 'credentialId' | 'productId'>;
  subscription: Pick<SubscriptionSnapshot, 'subscriptionId' | 'ratePlanId' | 'ratePlanVersionId' | 'ratePlanVersion' | 'currency'>;
  cost: Pick<EventCost, 'total' | 'tool'>;
};

/** What a stage writes to the rejected stream instead of forwarding: the event and why. */
export interface RejectedEvent {
  stage: string;
  code: string;
  reason: string;
  at: number;
  event: UsageEvent;
}

export function rejection(stage: string, code: string, reason: string, event: UsageEvent): RejectedEvent {
  return { stage, code, reason, at: Date.now(), event };
}

/** After key-resolve, events live in their customer's partition: every counter one event touches shares a slot. */
export function customerPartitionKey(tenantId: string, customerId: string): string {
  return `${tenantId}/${customerId}`;
}
