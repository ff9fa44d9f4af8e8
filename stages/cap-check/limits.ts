import type { CounterEffect } from '../../pipeline/stage.js';
import { CAP_TAG_PREFIX, DAY_SECONDS, capCounterKey, capPeriod, capWindow, type SpendCap } from '../../store/caps.js';
import type { PricedEvent } from '../../domain/flow.js';
import { pauseKey, type PauseRecord } from '../../store/pauses.js';

/**
 * The running totals an event advances: one counter per cap that applies to it, in the
 * cap's current period. Crossing a pause cap sets the pause flag of its scope (or of the
 * session, for per-session caps) until the period ends. A rolling cap counts the event at `now`
 * (when it is counted, not when it happened) and pauses until enough spend has left the window.
 * `pauses`, when given, gets the record each pause flag would hold (its JSON is the flag's value).
 */
export function capCounters(caps: readonly SpendCap[], event: PricedEvent, now = Date.now(), pauses?: PauseRecord[]): CounterEffect[] {
  if (event.cost.total === 0n) return [];
  const effects: CounterEffect[] = [];
  for (const cap of caps) {
    const window = capWindow(cap);
    const period = capPeriod(cap, window ? { recordedAt: now, sessionId: event.sessionId } : event);
    if (!period) continue;
    const effect: CounterEffect = {
      key: capCounterKey(cap, period.key),
      by: event.cost.total,
      // Kept a day past the period's end so late events and audits still find it.
      ttlSeconds: Math.max(DAY_SECONDS, Math.ceil((period.endsAt - now) / 1000) + DAY_SECONDS),
      limit: cap.limitNano,
      tag: `${CAP_TAG_PREFIX}${cap.id}`,
      ...(window ? { window: { ...window, now } } : {}),
    };
    const pauseTtl = Math.ceil((period.endsAt - now) / 1000);
    if (cap.action === 'pause' && pauseTtl > 0) {
      // A plan's caps are per session (one total per session of the plan).
      const [scope, scopeId] = cap.period === 'session' || cap.scopeKind === 'plan' ? (['session', event.sessionId!] as const) : [cap.scopeKind, cap.scopeId];
      const record: PauseRecord = {
        tenantId: cap.tenantId,
        capId: cap.id,
        scopeKind: scope,
        scopeId,
        period: cap.period,
        periodKey: period.key,
        limitNano: cap.limitNano.toString(),
        eventId: event.eventId,
        pausedAt: now,
        customerId: event.attribution.customerId,
        endsAt: period.endsAt,
      };
      effect.onLimit = { key: pauseKey(cap.tenantId, scope, scopeId), value: JSON.stringify(record), ttlSeconds: pauseTtl };
      pauses?.push(record);
    }
    effects.push(effect);
  }
  return effects;
}

const NO_KEYS: readonly string[] = Object.freeze([]);

/**
 * The counter keys of the caps that apply to an event, in the periods it falls in: the keys
 * capCounters advances for a priced event (the same period rule: a rolling cap's key does not
 * depend on the time). authorize holds a reservation under each of them, so an event that costs
 * nothing, and advances no counter, still names where its reservations are to be released.
 * Allocates nothing when no cap applies.
 */
export function capCounterKeys(caps: readonly SpendCap[], event: Pick<PricedEvent, 'recordedAt' | 'sessionId'>): readonly string[] {
  if (caps.length === 0) return NO_KEYS;
  let keys: string[] | undefined;
  for (const cap of caps) {
    const period = capPeriod(cap, event);
    if (period) (keys ??= []).push(capCounterKey(cap, period.key));
  }
  return keys ?? NO_KEYS;
}
