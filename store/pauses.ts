import type { Attribution } from '../domain/flow.js';

/**
 * Pause flags: set in Redis by cap-check the moment a hard cap is crossed, read by
 * `POST /v1/authorize`. Keys are logical (the harness adds the prefix and the customer's
 * partition tag); a reader outside a stage uses partitionedKey with the customer's partition.
 */
export type PauseScope = 'api_key' | 'agent' | 'app' | 'team' | 'customer' | 'session';

export interface PauseRecord {
  tenantId: string;
  capId: string;
  scopeKind: PauseScope;
  scopeId: string;
  period: 'session' | 'day' | 'month' | 'rolling';
  periodKey: string;
  limitNano: string;
  eventId: string;
  pausedAt: number;
  /** The customer of the event that crossed the cap: its partition holds the flag. */
  customerId?: string;
  /**
   * When the cap's period ends (epoch ms): the flag expires then and the pause is recorded as
   * lifted by the roll-over. For a rolling cap: when enough spend has left the window.
   */
  endsAt?: number;
}

export function pauseKey(tenantId: string, scope: PauseScope, id: string): string {
  return `paused:${tenantId}:${scope}:${id}`;
}

/**
 * Every pause flag that stops this caller, narrowest first: its credential (API key or client),
 * agent or app, team, customer and, when named, session.
 */
export function pauseKeysFor(tenantId: string, attribution: Attribution, sessionId?: string): string[] {
  const keys = [pauseKey(tenantId, 'api_key', attribution.credentialId)];
  if (attribution.agentId) keys.push(pauseKey(tenantId, 'agent', attribution.agentId));
  if (attribution.appId) keys.push(pauseKey(tenantId, 'app', attribution.appId));
  keys.push(pauseKey(tenantId, 'team', attribution.teamId), pauseKey(tenantId, 'customer', attribution.customerId));
  if (sessionId) keys.push(pauseKey(tenantId, 'session', sessionId));
  return keys;
}
