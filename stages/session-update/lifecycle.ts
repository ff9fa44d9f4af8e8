import { isUsageEventType, type EventType } from '../../domain/events.js';
import type { LedgeredEvent } from '../../domain/flow.js';

/**
 * The session lifecycle, as pure functions: the state of one session and how each event moves
 * it. The stage applies these to rows it holds locked; the idle/expiry timer is the sweep's
 * (see sweep.ts).
 *
 * Rules:
 * - A usage event makes an ACTIVE, IDLE or PAUSED session ACTIVE; session.paused makes it
 *   PAUSED, session.started and session.resumed ACTIVE; session.completed and session.failed end it.
 * - Events arrive out of order. Only an event at least as recent as every event seen so far
 *   (recordedAt >= lastEventAt) may pause, resume or reactivate: a usage event recorded before
 *   a pause does not undo the pause, and a pause recorded before later activity is stale.
 *   completed/failed end the session whatever their position: an end is never stale.
 * - An ended session (COMPLETED, FAILED, EXPIRED) never reopens. Events that arrive after the
 *   end still count toward its totals (they were ledgered and billed), advance started/last
 *   event times, and are counted in lateEvents.
 */
const SESSION_STATUSES = ['ACTIVE', 'IDLE', 'PAUSED', 'COMPLETED', 'FAILED', 'EXPIRED'] as const;
export type SessionStatus = (typeof SESSION_STATUSES)[number];

const OPEN_STATUSES: readonly SessionStatus[] = ['ACTIVE', 'IDLE', 'PAUSED'];

function isEnded(status: SessionStatus): boolean {
  return !OPEN_STATUSES.includes(status);
}

export interface SessionState {
  tenantId: string;
  sessionId: string;
  customerId: string;
  teamId: string;
  agentId: string | null;
  appId: string | null;
  credentialId: string;
  status: SessionStatus;
  /** Epoch milliseconds of event time (recordedAt). */
  startedAt: number;
  lastEventAt: number;
  endedAt: number | null;
  events: number;
  toolCalls: number;
  /** Sums, exact however long the session runs (numeric columns). */
  inputTokens: bigint;
  outputTokens: bigint;
  durationMs: bigint;
  errors: number;
  costNano: bigint;
  lateEvents: number;
}

/** The parts of a ledgered event a session needs. */
export type SessionEvent = Pick<
  LedgeredEvent,
  | 'tenantId'
  | 'eventId'
  | 'eventType'
  | 'sessionId'
  | 'recordedAt'
  | 'durationMs'
  | 'status'
  | 'inputTokens'
  | 'outputTokens'
  | 'attribution'
  | 'cost'
>;

/** The status an open session takes on an event of this type. */
function statusAfter(eventType: EventType): SessionStatus {
  switch (eventType) {
    case 'session.paused':
      return 'PAUSED';
    case 'session.completed':
      return 'COMPLETED';
    case 'session.failed':
      return 'FAILED';
    default:
      // session.started, session.resumed and every usage event
      return 'ACTIVE';
  }
}

function startsSession(event: SessionEvent): SessionState {
  const status = statusAfter(event.eventType);
  return {
    tenantId: event.tenantId,
    sessionId: event.sessionId!,
    customerId: event.attribution.customerId,
    teamId: event.attribution.teamId,
    agentId: event.attribution.agentId ?? null,
    appId: event.attribution.appId ?? null,
    credentialId: event.attribution.credentialId,
    status,
    startedAt: event.recordedAt,
    lastEventAt: event.recordedAt,
    endedAt: isEnded(status) ? event.recordedAt : null,
    events: 0,
    toolCalls: 0,
    inputTokens: 0n,
    outputTokens: 0n,
    durationMs: 0n,
    errors: 0,
    costNano: 0n,
    lateEvents: 0,
  };
}

/** Applies one event to a session (undefined: the event opens it). Returns a new state. */
export function applyEvent(current: SessionState | undefined, event: SessionEvent): SessionState {
  const next: SessionState = current ? { ...current } : startsSession(event);
  if (current) {
    if (isEnded(current.status)) {
      next.lateEvents++;
    } else {
      const target = statusAfter(event.eventType);
      if (isEnded(target)) {
        next.status = target;
        next.endedAt = event.recordedAt;
      } else if (event.recordedAt >= current.lastEventAt) {
        next.status = target;
      }
    }
    next.startedAt = Math.min(current.startedAt, event.recordedAt);
    next.lastEventAt = Math.max(current.lastEventAt, event.recordedAt);
  }
  next.events++;
  next.costNano += event.cost.total;
  if (isUsageEventType(event.eventType)) {
    next.toolCalls++;
    next.inputTokens += BigInt(event.inputTokens);
    next.outputTokens += BigInt(event.outputTokens);
    next.durationMs += BigInt(event.durationMs);
    if (event.status !== 'SUCCESS') next.errors++;
  }
  return next;
}

/**
 * Applies a batch of one session's events in event-time order (usage before control events
 * recorded in the same millisecond, then by event id, so the result does not depend on the
 * order the batch arrived in).
 */
export function advanceSession(current: SessionState | undefined, events: SessionEvent[]): SessionState {
  const ordered = [...events].sort(
    (a, b) =>
      a.recordedAt - b.recordedAt ||
      Number(!isUsageEventType(a.eventType)) - Number(!isUsageEventType(b.eventType)) ||
      (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0),
  );
  let state = current;
  for (const event of ordered) state = applyEvent(state, event);
  if (!state) throw new Error('advanceSession needs a current state or at least one event');
  return state;
}
