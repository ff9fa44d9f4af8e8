import type { CounterEffect } from '../../pipeline/stage.js';
import { CAP_TAG_PREFIX, type SpendCap } from '../../store/caps.js';
import type { PricedEvent } from '../../domain/flow.js';
import { pauseKey, type PauseRecord } from '../../store/pauses.js';

const DAY_SECONDS = 86_400;

/** The period of a cap that an event falls in, and when that period ends (epoch ms). */
function capPeriod(cap: SpendCap, event: PricedEvent): { key: string; endsAt: number } | undefined {
  const at = new Date(event.recordedAt);
  const y = at.getUTCFullYear();
  const m = at.getUTCMonth();
  switch (cap.period) {
    case 'session':
      return event.sessionId ? { key: `s:${event.sessionId}`, endsAt: event.recordedAt + DAY_SECONDS * 1000 } : undefined;
    case 'day':
      return { key: at.toISOString().slice(0, 10), endsAt: Date.UTC(y, m, at.getUTCDate() + 1) };
    case 'month':
      return { key: at.toISOString().slice(0, 7), endsAt: Date.UTC(y, m + 1, 1) };
  }
}

export function capCounterKey(cap: SpendCap, periodKey: string): string {
  return `cap:${cap.tenantId}:${cap.id}:${periodKey}`;
}

/**
 * The running totals an event advances: one counter per cap that applies to it, in the
 * cap's current period. Crossing a pause cap sets the pause flag of its scope (or of the
 * session, for per-session caps) until the period ends.
 */
export function capCounters(caps: SpendCap[], event: PricedEvent, now = Date.now()): CounterEffect[] {
  if (event.cost.total === 0n) return [];
  const effects: CounterEffect[] = [];
  for (const cap of caps) {
    const period = capPeriod(cap, event);
    if (!period) continue;
    const effect: CounterEffect = {
      key: capCounterKey(cap, period.key),
      by: event.cost.total,
      // Kept a day past the period's end so late events and audits still find it.
      ttlSeconds: Math.max(DAY_SECONDS, Math.ceil((period.endsAt - now) / 1000) + DAY_SECONDS),
      limit: cap.limitNano,
      tag: `${CAP_TAG_PREFIX}${cap.id}`,
    };
    const pauseTtl = Math.ceil((period.endsAt - now) / 1000);
    if (cap.action === 'pause' && pauseTtl > 0) {
      const [scope, scopeId] = cap.period === 'session' ? (['session', event.sessionId!] as const) : [cap.scopeKind, cap.scopeId];
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
      };
      effect.onLimit = { key: pauseKey(cap.tenantId, scope, scopeId), value: JSON.stringify(record), ttlSeconds: pauseTtl };
    }
    effects.push(effect);
  }
  return effects;
}
