import type { Redis } from '../pipeline/redis.js';
import { partitionedKey, partitionOf } from '../pipeline/keys.js';
import { pauseKey, type PauseRecord, type PauseScope } from './pauses.js';
import { customerPartitionKey } from '../domain/flow.js';
import type { Sql } from '../pipeline/postgres.js';

/**
 * The pauses spend caps set (cap-check writes a Redis flag per paused scope and records it in
 * cap_pauses), as the console lists and lifts them. A flag lives in the partition of the
 * customer its cap belongs to; it expires by itself at the end of the cap's period.
 */
export interface RedisPlace {
  prefix: string;
  partitions: number;
}

export interface PauseView {
  capId: string;
  scopeKind: PauseScope;
  scopeId: string;
  periodKey: string;
  limitNano: bigint;
  eventId: string;
  pausedAt: Date;
  customerId: string | null;
  /** The Redis flag is still set: authorize refuses the scope. False once it expired with its period. */
  inForce: boolean;
}

interface PauseRow {
  cap_id: string;
  scope_kind: PauseScope;
  scope_id: string;
  period_key: string;
  limit_nano: string;
  event_id: string;
  paused_at: Date;
  customer_id: string | null;
}

// The customer of a pause: that of its cap's scope (a pause without a spend cap, set by prepaid
// credits running out, is of the customer it pauses) (a session pause is set by a cap on an agent, team or customer).
const PAUSES = (sql: Sql, tenantId: string) => sql`
  SELECT p.cap_id, p.scope_kind, p.scope_id, p.period_key, p.limit_nano, p.event_id, p.paused_at,
         CASE c.scope_kind WHEN 'customer' THEN c.scope_id WHEN 'team' THEN t.customer_id
    ELSE coalesce(at.customer_id, CASE WHEN c.id IS NULL AND p.scope_kind = 'customer' THEN p.scope_id END) END AS customer_id
  FROM cap_pauses p
  LEFT JOIN spend_caps c ON c.tenant_id = p.tenant_id AND c.id = p.cap_id
  LEFT JOIN teams t ON c.scope_kind = 'team' AND t.tenant_id = c.tenant_id AND t.id = c.scope_id
  LEFT JOIN agents a ON c.scope_kind = 'agent' AND a.tenant_id = c.tenant_id AND a.id = c.scope_id
  LEFT JOIN teams at ON at.tenant_id = a.tenant_id AND at.id = a.team_id
  WHERE p.tenant_id = ${tenantId} AND p.lifted_at IS NULL`;

function pauseFlagKey(place: RedisPlace, tenantId: string, customerId: string, scope: PauseScope, scopeId: string): string {
  return partitionedKey(place.prefix, pauseKey(tenantId, scope, scopeId), partitionOf(customerPartitionKey(tenantId, customerId), place.partitions));
}

/** The tenant's pauses not lifted yet, newest first (at most `limit`), each with whether its flag is still set. */
export async function pausesNotLifted(sql: Sql, redis: Redis, place: RedisPlace, tenantId: string, limit = 100): Promise<PauseView[]> {
  const rows = await sql<PauseRow[]>`${PAUSES(sql, tenantId)} ORDER BY p.paused_at DESC LIMIT ${limit}`;
  const flags = await Promise.all(
    rows.map((r) => (r.customer_id ? redis.exists(pauseFlagKey(place, tenantId, r.customer_id, r.scope_kind, r.scope_id)) : Promise.resolve(0))),
  );
  return rows.map((r, i) => ({
    capId: r.cap_id,
    scopeKind: r.scope_kind,
    scopeId: r.scope_id,
    periodKey: r.period_key,
    limitNano: BigInt(r.limit_nano),
    eventId: r.event_id,
    pausedAt: r.paused_at,
    customerId: r.customer_id,
    inForce: flags[i] === 1,
  }));
}

export interface LiftResult {
  scopeKind: PauseScope;
  scopeId: string;
  /** Whether a flag was still set (and is now deleted). */
  flagDeleted: boolean;
  /** cap_pauses rows of the scope marked lifted now. */
  recordsLifted: number;
  liftedAt: Date;
}

/**
 * Lifts the pause of one scope: deletes its Redis flag (authorize lets it through at once) and
 * sets lifted_at on every record of that scope not lifted yet (several caps may have paused it;
 * one flag stops it). Undefined when the tenant has no such pause: another tenant's ids are not found.
 * The running total stays over the cap, so the same period does not pause the scope again; a new
 * period (or a changed cap) starts counting afresh.
 */
export async function liftPause(
  sql: Sql,
  redis: Redis,
  place: RedisPlace,
  tenantId: string,
  pause: { capId: string; scopeId: string; periodKey: string },
): Promise<LiftResult | undefined> {
  const [row] = await sql<PauseRow[]>`
    ${PAUSES(sql, tenantId)} AND p.cap_id = ${pause.capId} AND p.scope_id = ${pause.scopeId} AND p.period_key = ${pause.periodKey}`;
  if (!row) return undefined;
  const deleted = row.customer_id ? await redis.del(pauseFlagKey(place, tenantId, row.customer_id, row.scope_kind, row.scope_id)) : 0;
  const lifted = await sql<{ lifted_at: Date }[]>`
    UPDATE cap_pauses SET lifted_at = now()
    WHERE tenant_id = ${tenantId} AND scope_kind = ${row.scope_kind} AND scope_id = ${row.scope_id} AND lifted_at IS NULL
    RETURNING lifted_at`;
  return { scopeKind: row.scope_kind, scopeId: row.scope_id, flagDeleted: deleted === 1, recordsLifted: lifted.length, liftedAt: lifted[0]?.lifted_at ?? new Date() };
}

/**
 * Pauses a scope from outside cap-check (a customer's prepaid credits ran out): sets the flag
 * authorize reads, for ttlSeconds, and records the pause; a pause of the same cap, scope and
 * period lifted earlier is recorded as in force again.
 */
export async function setPause(sql: Sql, redis: Redis, place: RedisPlace, record: PauseRecord, customerId: string, ttlSeconds: number): Promise<void> {
  await redis.set(pauseFlagKey(place, record.tenantId, customerId, record.scopeKind, record.scopeId), JSON.stringify(record), 'EX', ttlSeconds);
  await sql`
    INSERT INTO cap_pauses (tenant_id, cap_id, scope_kind, scope_id, period_key, event_id, limit_nano, paused_at)
    VALUES (${record.tenantId}, ${record.capId}, ${record.scopeKind}, ${record.scopeId}, ${record.periodKey}, ${record.eventId},
            ${record.limitNano}, ${new Date(record.pausedAt)})
    ON CONFLICT (tenant_id, cap_id, scope_id, period_key)
    DO UPDATE SET lifted_at = NULL, paused_at = excluded.paused_at, event_id = excluded.event_id WHERE cap_pauses.lifted_at IS NOT NULL`;
}
