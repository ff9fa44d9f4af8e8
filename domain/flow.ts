import type { EventRating } from './rating/rate-event.js';
import type { UsageEvent } from './events.js';

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
  /** The subscription's billing period containing recordedAt (calendar month, UTC, or anniversary). */
  periodStart: number;
  periodEnd: number;
}

/** Added by price: the exact cost of the event, the tool key it was priced as, and its share per dimension. */
export type EventCost = EventRating;

export type ResolvedEvent = UsageEvent & { attribution: Attribution };
export type AttributedEvent = ResolvedEvent & { subscription: SubscriptionSnapshot };
export type PricedEvent = AttributedEvent & { cost: EventCost };
/**
 * Added by cap-check: the spend counters it advanced for this event (ledger-write takes them back
 * for a duplicate); a rolling one names its window and the time it was counted at (its bucket).
 */
export type CheckedEvent = PricedEvent & { capCounters: { key: string; by: bigint; window?: { bucketMs: number; buckets: number; now: number } }[] };
/** Added by ledger-write: whether a spend cap was at or over its limit with this event (it is billed all the same). */
export type LedgeredEvent = CheckedEvent & { overCap: boolean };

/**
 * What ClickHouse keeps of a ledgered event, as analytics-dispatch reads it from events:ledgered
 * or from a ledger row the analytics backlog names: what the ledger keeps of a LedgeredEvent (no
 * raw credential hash, cap counters or per-dimension breakdown).
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
  /** A correction's reversing row (quantities and cost negated): its COGS is the original's, negated. */
  reversal?: true;
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
