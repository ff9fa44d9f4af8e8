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

/** The parts the stages before the ledger add, each absent until its stage has run. */
type FlowParts = Partial<Pick<LedgeredEvent, 'attribution' | 'subscription' | 'cost' | 'capCounters' | 'overCap'>>;

/**
 * `event` with `part` added: what each stage before the ledger forwards. A new object (the input
 * is read, never changed: pipeline/blocks.ts writes only the fields that are not the input's very
 * values).
 *
 * One object literal naming every field of a ledgered event, whatever the input carries, so every
 * event the five stages hand on has one hidden class, built in one allocation. A spread
 * (`{ part, ...event }`) adds the fields one at a time and grows the object's property array as it
 * goes: about 1.3 KB and 0.4 us a copy, five copies per event (BENCHMARKS.md, twenty-seventh
 * session). A field of the types not named here fails to compile. A part its stage has not set yet
 * is undefined, as an optional field the event lacks is (ingest writes those as undefined too).
 */
export function withPart<E extends UsageEvent & FlowParts, P extends FlowParts>(event: E, part: P): E & P {
  const next: { [K in keyof Required<LedgeredEvent>]: LedgeredEvent[K] | undefined } = {
    tenantId: event.tenantId,
    eventId: event.eventId,
    eventType: event.eventType,
    credential: event.credential,
    ingestNonce: event.ingestNonce,
    recordedAt: event.recordedAt,
    ingestedAt: event.ingestedAt,
    reportedAgentId: event.reportedAgentId,
    sessionId: event.sessionId,
    toolName: event.toolName,
    mcpServerId: event.mcpServerId,
    model: event.model,
    durationMs: event.durationMs,
    status: event.status,
    inputTokens: event.inputTokens,
    outputTokens: event.outputTokens,
    retryCount: event.retryCount,
    isParallel: event.isParallel,
    parentInvocationId: event.parentInvocationId,
    errorType: event.errorType,
    httpStatus: event.httpStatus,
    attribution: part.attribution ?? event.attribution,
    subscription: part.subscription ?? event.subscription,
    cost: part.cost ?? event.cost,
    capCounters: part.capCounters ?? event.capCounters,
    overCap: part.overCap ?? event.overCap,
  };
  return next as E & P;
}

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
