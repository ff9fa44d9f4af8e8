import { announceLimitFlag } from '../pipeline/admission-leases.js';
import { getMany, type Redis } from '../pipeline/redis.js';
import { replaceIfUnchanged } from '../pipeline/scripts.js';
import { partitionedKey, partitionOf } from '../pipeline/keys.js';
import { pauseKey, type PauseRecord, type PauseScope } from './pauses.js';
import { customerPartitionKey } from '../domain/flow.js';
import type postgres from 'postgres';
import type { Sql } from '../pipeline/postgres.js';

import { capCounterKey, capLiftedKey, capPeriod, settleWindows, type SpendCap } from './caps.js';
import { enqueueWebhookEvent } from './webhooks.js';
import { formatNano } from '../domain/money.js';

/** A connection or a transaction: the facts and their webhook outbox rows go in one transaction. */
type Db = Sql | postgres.TransactionSql;

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
  period_ends_at: Date | null;
  customer_id: string | null;
}

interface PauseRecordRow extends PauseRow {
  lifted_at: Date | null;
}

// The customer of a pause: that of its cap's scope (a pause without a spend cap, set by prepaid
// credits running out, is of the customer it pauses) (a session pause is set by a cap on an agent, team or customer).
const PAUSE_RECORDS = (sql: Sql, tenantId: string) => sql`
  SELECT p.cap_id, p.scope_kind, p.scope_id, p.period_key, p.limit_nano, p.event_id, p.paused_at, p.period_ends_at, p.lifted_at,
         coalesce(p.customer_id, CASE c.scope_kind WHEN 'customer' THEN c.scope_id WHEN 'team' THEN t.customer_id ELSE at.customer_id END) AS customer_id
  FROM cap_pauses p
  LEFT JOIN spend_caps c ON c.tenant_id = p.tenant_id AND c.id = p.cap_id
  LEFT JOIN teams t ON c.scope_kind = 'team' AND t.tenant_id = c.tenant_id AND t.id = c.scope_id
  LEFT JOIN agents a ON c.scope_kind = 'agent' AND a.tenant_id = c.tenant_id AND a.id = c.scope_id
  LEFT JOIN teams at ON at.tenant_id = a.tenant_id AND at.id = a.team_id
  WHERE p.tenant_id = ${tenantId}`;

const PAUSES = (sql: Sql, tenantId: string) => sql`${PAUSE_RECORDS(sql, tenantId)} AND p.lifted_at IS NULL`;

function pauseFlagKey(place: RedisPlace, tenantId: string, customerId: string, scope: PauseScope, scopeId: string): string {
  return partitionedKey(place.prefix, pauseKey(tenantId, scope, scopeId), partitionOf(customerPartitionKey(tenantId, customerId), place.partitions));
}

/**
 * The tenant's pauses not lifted yet, newest first (at most `limit`), each with whether its flag
 * is still set; `of` keeps those of one scope (a customer's own, say) among however many others.
 */
export async function pausesNotLifted(
  sql: Sql,
  redis: Redis,
  place: RedisPlace,
  tenantId: string,
  limit = 100,
  of?: { scopeKind: PauseScope; scopeId: string },
): Promise<PauseView[]> {
  const scoped = of ? sql`AND p.scope_kind = ${of.scopeKind} AND p.scope_id = ${of.scopeId}` : sql``;
  const rows = await sql<PauseRow[]>`${PAUSES(sql, tenantId)} ${scoped} ORDER BY p.paused_at DESC LIMIT ${limit}`;
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

/** Who or what lifted a pause, as cap_pauses.lifted_by records it. */
export type LiftSource = 'admin' | 'cap_raised' | 'cap_disabled' | 'period_rollover';

/** How a pause whose cap period ended is recorded as lifted (by the sweep, or before a new pause of that period). */
const ROLL_OVER = { by: 'period_rollover', reason: 'the cap period ended' } as const satisfies { by: LiftSource; reason: string };

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
 * Records pauses in PostgreSQL (the live flag is the Redis key cap-check's ack script set, or
 * setPause's). Idempotent: a pause is one row per (cap, scope, period).
 */
export async function recordPauses(db: Sql, pauses: PauseRecord[]): Promise<void> {
  if (pauses.length === 0) return;
  await db.begin((sql) => recordPausesIn(sql, pauses));
}

/** Returns how many pauses are new (inserted, or re-opened after a lift). */
async function recordPausesIn(sql: postgres.TransactionSql, pauses: PauseRecord[]): Promise<number> {
  // A pause of a period whose earlier pause ended (a rolling cap crossed again after its flag
  // expired) before the roll-over sweep recorded that end: the earlier pause is recorded as
  // lifted by the roll-over first, so the new one re-opens its row below (record, log line and
  // cap.paused) instead of being lost to a row the sweep then closes.
  const rolledOver = await sql<(LiftedRow & { tenant_id: string })[]>`
    UPDATE cap_pauses p SET lifted_at = p.period_ends_at, lifted_by = 'period_rollover', lift_reason = 'the cap period ended'
    FROM unnest(
      ${pauses.map((p) => p.tenantId)}::text[], ${pauses.map((p) => p.capId)}::text[], ${pauses.map((p) => p.scopeId)}::text[],
      ${pauses.map((p) => p.periodKey)}::text[], ${pauses.map((p) => new Date(p.pausedAt).toISOString())}::timestamptz[]
    ) AS n(tenant_id, cap_id, scope_id, period_key, paused_at)
    WHERE p.tenant_id = n.tenant_id AND p.cap_id = n.cap_id AND p.scope_id = n.scope_id AND p.period_key = n.period_key
      AND p.lifted_at IS NULL AND p.period_ends_at <= n.paused_at
    RETURNING p.tenant_id, p.cap_id, p.scope_kind, p.scope_id, p.period_key, p.customer_id, p.period_ends_at, p.lifted_at`;
  await liftNotice(sql, undefined, rolledOver, ROLL_OVER.by, ROLL_OVER.reason);
  const inserted = await sql<{ tenant_id: string; cap_id: string; scope_kind: string; scope_id: string; period_key: string; event_id: string; paused_at: Date }[]>`
    INSERT INTO cap_pauses ${sql(
      pauses.map((p) => ({
        tenant_id: p.tenantId,
        cap_id: p.capId,
        scope_kind: p.scopeKind,
        scope_id: p.scopeId,
        period_key: p.periodKey,
        event_id: p.eventId,
        limit_nano: p.limitNano,
        paused_at: new Date(p.pausedAt),
        customer_id: p.customerId ?? null,
        period_ends_at: p.endsAt === undefined ? null : new Date(p.endsAt),
      })),
    )}
    ON CONFLICT (tenant_id, cap_id, scope_id, period_key) DO UPDATE
      SET paused_at = EXCLUDED.paused_at, event_id = EXCLUDED.event_id, limit_nano = EXCLUDED.limit_nano,
          customer_id = EXCLUDED.customer_id, period_ends_at = EXCLUDED.period_ends_at,
          lifted_at = NULL, lifted_by = NULL, lift_reason = NULL, lifted_by_token_id = NULL
      WHERE cap_pauses.lifted_at IS NOT NULL
    RETURNING tenant_id, cap_id, scope_kind, scope_id, period_key, event_id, paused_at`;
  if (inserted.length) {
    await sql`
      INSERT INTO cap_pause_log ${sql(
        inserted.map((r) => ({ tenant_id: r.tenant_id, cap_id: r.cap_id, scope_kind: r.scope_kind, scope_id: r.scope_id, period_key: r.period_key, kind: 'paused', at: r.paused_at, event_id: r.event_id })),
      )}`;
  }
  const limits = new Map(pauses.map((p) => [`${p.tenantId}:${p.capId}:${p.scopeId}:${p.periodKey}`, p]));
  for (const r of inserted) {
    const pause = limits.get(`${r.tenant_id}:${r.cap_id}:${r.scope_id}:${r.period_key}`);
    await enqueueWebhookEvent(
      sql,
      r.tenant_id,
      'cap.paused',
      {
        cap_id: r.cap_id,
        scope_kind: r.scope_kind,
        scope_id: r.scope_id,
        period_key: r.period_key,
        limit: formatNano(BigInt(pause?.limitNano ?? '0')),
        event_id: r.event_id,
        customer_id: pause?.customerId ?? null,
        paused_at: r.paused_at.toISOString(),
      },
      `cap.paused:${r.cap_id}:${r.scope_id}:${r.period_key}:${r.paused_at.getTime()}`,
    );
  }
  return inserted.length;
}

/**
 * Pauses a scope now: sets the flag authorize reads (until `record.endsAt`) and records it.
 * For pauses decided outside cap-check's counters (a cap lowered under the running total, a
 * credit balance at zero). The record needs its customerId: the flag lives in that partition.
 * `withNewPause` runs in the transaction that records the pause, when it is new (not recorded
 * and in force already): the caller's own webhook goes out once per pause, with its record.
 */
export async function setPause(
  sql: Sql,
  redis: Redis,
  place: RedisPlace,
  record: PauseRecord & { customerId: string; endsAt: number },
  withNewPause?: (tx: postgres.TransactionSql) => Promise<void>,
): Promise<void> {
  const ttlMs = record.endsAt - Date.now();
  if (ttlMs <= 0) return;
  const key = pauseFlagKey(place, record.tenantId, record.customerId, record.scopeKind, record.scopeId);
  await redis.set(key, JSON.stringify(record), 'PX', ttlMs);
  await announceLimitFlag(redis, key);
  await sql.begin(async (tx) => {
    if ((await recordPausesIn(tx, [record])) > 0) await withNewPause?.(tx);
  });
}

interface LiftedRow {
  cap_id: string;
  scope_kind: PauseScope;
  scope_id: string;
  period_key: string;
  customer_id: string | null;
  period_ends_at: Date | null;
  lifted_at: Date;
}

/**
 * A scope's flag after pauses of it were lifted. A flag left by a lift (isLeftByLiftCutShort) or
 * none at all then holds the scope's latest pause still in force (another cap that stopped it in
 * its period), or goes. Any other flag stays as it is: a pause in force, or a new one whose record
 * is on its way (an ack sets the flag before cap-check records it). `flag`: its value as the
 * caller read it (`seen`, null when absent), and whether the caller found it left by a lift;
 * without it the flag is read here, and judged here unless `leftByLift`. The flag changes only
 * while it still holds that value (replaceIfUnchanged): one an ack set in between stays. Returns
 * whether the scope is left without a flag.
 */
async function settleFlag(
  sql: Sql,
  redis: Redis,
  key: string,
  tenantId: string,
  customerId: string | undefined,
  scope: PauseScope,
  scopeId: string,
  flag?: { seen: string | null; leftByLift: boolean },
): Promise<boolean> {
  const seen = flag ? flag.seen : await redis.get(key);
  if (!flag?.leftByLift && seen !== null && !(await isLeftByLift(sql, tenantId, parseFlag(seen)!))) return false;
  const [other] = await sql<(PauseRow & { period: string })[]>`
    SELECT p.cap_id, p.scope_kind, p.scope_id, p.period_key, p.limit_nano, p.event_id, p.paused_at, p.period_ends_at, p.customer_id,
           coalesce(c.period, 'month') AS period
    FROM cap_pauses p LEFT JOIN spend_caps c ON c.tenant_id = p.tenant_id AND c.id = p.cap_id
    WHERE p.tenant_id = ${tenantId} AND p.scope_kind = ${scope} AND p.scope_id = ${scopeId} AND p.lifted_at IS NULL
      AND p.period_ends_at > now()
      -- A pause of an active cap, or one prepaid credits set (no spend_caps row: cap_id credits:<currency>).
      AND (c.status = 'active' OR (c.id IS NULL AND p.cap_id LIKE 'credits:%'))
    ORDER BY p.paused_at DESC LIMIT 1`;
  if (!other?.period_ends_at) {
    if (seen === null || (await replaceIfUnchanged(redis, key, seen))) return true;
    return (await redis.exists(key)) === 0;
  }
  const record: PauseRecord = {
    tenantId,
    capId: other.cap_id,
    scopeKind: other.scope_kind,
    scopeId: other.scope_id,
    period: other.period as PauseRecord['period'],
    periodKey: other.period_key,
    limitNano: String(other.limit_nano),
    eventId: other.event_id,
    pausedAt: other.paused_at.getTime(),
    customerId: customerId ?? other.customer_id ?? undefined,
    endsAt: other.period_ends_at.getTime(),
  };
  if (await replaceIfUnchanged(redis, key, seen, { value: JSON.stringify(record), expiresAt: record.endsAt! })) await announceLimitFlag(redis, key);
  return false;
}

/** Whether the pause a flag names is recorded as lifted by a lift that came after it paused (isLeftByLiftCutShort). */
async function isLeftByLift(sql: Sql, tenantId: string, flag: PauseRecord): Promise<boolean> {
  const [record] = await sql<{ cap_id: string; scope_id: string; period_key: string; lifted_at: Date | null }[]>`
    SELECT cap_id, scope_id, period_key, lifted_at FROM cap_pauses
    WHERE tenant_id = ${tenantId} AND cap_id = ${flag.capId} AND scope_id = ${flag.scopeId} AND period_key = ${flag.periodKey}`;
  return record !== undefined && isLeftByLiftCutShort(flag, record);
}

/**
 * The one rule for a flag whose pause record says lifted. Lifting commits PostgreSQL first, then
 * deletes the flag: a flag that names the record's pause and was paused at or before its lift is
 * what a lift cut short in between left (a crash, a Redis error), and is settled, never recorded
 * again. A flag paused after the lift (setPause, a new crossing) is a new pause: it re-opens the record.
 */
function isLeftByLiftCutShort(flag: PauseRecord, record: { cap_id: string; scope_id: string; period_key: string; lifted_at: Date | null }): boolean {
  return (
    record.lifted_at !== null &&
    flag.capId === record.cap_id &&
    flag.scopeId === record.scope_id &&
    flag.periodKey === record.period_key &&
    flag.pausedAt <= record.lifted_at.getTime()
  );
}

function parseFlag(value: string | null): PauseRecord | undefined {
  return value ? (JSON.parse(value) as PauseRecord) : undefined;
}

/**
 * The pause flags found in Redis (at cap-check's start), each with its key, checked against
 * their records: a flag left by a lift cut short is settled; any other is recorded
 * (recordPauses: a flag whose record was lost to a crash after the ack script gets it, with its
 * cap.paused; a flag paused after its record's lift re-opens it; a recorded one adds nothing).
 */
export async function reconcilePauseFlags(
  sql: Sql,
  redis: Redis,
  flags: { key: string; value: string; record: PauseRecord }[],
): Promise<{ recorded: number; settled: number }> {
  if (flags.length === 0) return { recorded: 0, settled: 0 };
  const records = await sql<{ tenant_id: string; cap_id: string; scope_id: string; period_key: string; lifted_at: Date | null }[]>`
    SELECT p.tenant_id, p.cap_id, p.scope_id, p.period_key, p.lifted_at
    FROM cap_pauses p
    JOIN unnest(
      ${flags.map((f) => f.record.tenantId)}::text[], ${flags.map((f) => f.record.capId)}::text[],
      ${flags.map((f) => f.record.scopeId)}::text[], ${flags.map((f) => f.record.periodKey)}::text[]
    ) AS f(tenant_id, cap_id, scope_id, period_key)
      ON p.tenant_id = f.tenant_id AND p.cap_id = f.cap_id AND p.scope_id = f.scope_id AND p.period_key = f.period_key`;
  const recordOf = new Map(records.map((r) => [`${r.tenant_id}:${r.cap_id}:${r.scope_id}:${r.period_key}`, r]));
  const leftovers: { key: string; value: string; record: PauseRecord }[] = [];
  const toRecord: PauseRecord[] = [];
  for (const flag of flags) {
    const { tenantId, capId, scopeId, periodKey } = flag.record;
    const record = recordOf.get(`${tenantId}:${capId}:${scopeId}:${periodKey}`);
    if (record && isLeftByLiftCutShort(flag.record, record)) leftovers.push(flag);
    else toRecord.push(flag.record);
  }
  await recordPauses(sql, toRecord);
  for (const { key, value, record } of leftovers) await settleFlag(sql, redis, key, record.tenantId, record.customerId, record.scopeKind, record.scopeId, { seen: value, leftByLift: true });
  return { recorded: toRecord.length, settled: leftovers.length };
}

/** Logs the lifts (cap_pause_log) and marks where their webhooks go. */
async function liftNotice(
  sql: Db,
  tenantId: string | undefined,
  rows: (LiftedRow & { tenant_id?: string })[],
  by: LiftSource,
  reason: string | null,
  tokenId: string | null = null,
): Promise<void> {
  if (rows.length) {
    await sql`
      INSERT INTO cap_pause_log ${sql(
        rows.map((r) => ({
          tenant_id: tenantId ?? r.tenant_id!,
          cap_id: r.cap_id,
          scope_kind: r.scope_kind,
          scope_id: r.scope_id,
          period_key: r.period_key,
          kind: 'lifted',
          at: r.lifted_at,
          lifted_by: by,
          reason,
          lifted_by_token_id: tokenId,
        })),
      )}`;
  }
  for (const r of rows) {
    await enqueueWebhookEvent(
      sql,
      tenantId ?? r.tenant_id!,
      'cap.lifted',
      {
        cap_id: r.cap_id,
        scope_kind: r.scope_kind,
        scope_id: r.scope_id,
        period_key: r.period_key,
        customer_id: r.customer_id,
        lifted_by: by,
        lifted_by_token_id: tokenId,
        lift_reason: reason,
        lifted_at: r.lifted_at.toISOString(),
      },
      `cap.lifted:${r.cap_id}:${r.scope_id}:${r.period_key}:${r.lifted_at.getTime()}`,
    );
  }
}

/**
 * Lifts the pause of one scope (the admin route, the console): deletes its Redis flag (authorize
 * lets it through at once) and sets lifted_at, lifted_by, lift_reason and the admin token that
 * lifted it (`tokenId`, when an admin did) on every record of that
 * scope not lifted yet (several caps may have paused it; one flag stops it). Undefined when the
 * tenant has no such pause: another tenant's ids are not found.
 * The running total stays over the cap, so the same period does not pause the scope again, and
 * authorize no longer refuses estimates against those caps this period; a new period (or a
 * changed cap) starts counting afresh.
 * `onlyThisCap` lifts that one pause (prepaid credits back: the scope's spend-cap pauses stay in
 * force, their flag with them, and keep refusing estimates).
 * A retry of a lift cut short before Redis (its record lifted, the flag still there) finishes it:
 * see finishLiftCutShort. The flag goes through settleFlag: a pause that began while the lift ran
 * (its flag set after the commit) stands.
 */
export async function liftPause(
  sql: Sql,
  redis: Redis,
  place: RedisPlace,
  tenantId: string,
  pause: { capId: string; scopeId: string; periodKey: string },
  lift: { by?: LiftSource; reason?: string; tokenId?: string; onlyThisCap?: boolean } = {},
): Promise<LiftResult | undefined> {
  const [row] = await sql<PauseRecordRow[]>`
    ${PAUSE_RECORDS(sql, tenantId)} AND p.cap_id = ${pause.capId} AND p.scope_id = ${pause.scopeId} AND p.period_key = ${pause.periodKey}`;
  if (!row) return undefined;
  if (row.lifted_at) return finishLiftCutShort(sql, redis, place, tenantId, row);
  const by = lift.by ?? 'admin';
  const tokenId = lift.tokenId ?? null;
  const lifted = await sql.begin(async (tx) => {
    const rows = await tx<LiftedRow[]>`
      UPDATE cap_pauses SET lifted_at = now(), lifted_by = ${by}, lift_reason = ${lift.reason ?? null}, lifted_by_token_id = ${tokenId}
      WHERE tenant_id = ${tenantId} AND scope_kind = ${row.scope_kind} AND scope_id = ${row.scope_id} AND lifted_at IS NULL
        ${lift.onlyThisCap ? tx`AND cap_id = ${pause.capId} AND period_key = ${pause.periodKey}` : tx``}
      RETURNING cap_id, scope_kind, scope_id, period_key, customer_id, period_ends_at, lifted_at`;
    await liftNotice(tx, tenantId, rows, by, lift.reason ?? null, tokenId);
    return rows;
  });
  let flagDeleted = false;
  if (row.customer_id) {
    const partition = partitionOf(customerPartitionKey(tenantId, row.customer_id), place.partitions);
    const key = pauseFlagKey(place, tenantId, row.customer_id, row.scope_kind, row.scope_id);
    const seen = await redis.get(key);
    if (lifted.length) {
      const batch = redis.multi();
      markLifted(batch, place, tenantId, partition, lifted);
      await batch.exec();
    }
    flagDeleted = seen !== null && (await settleFlag(sql, redis, key, tenantId, row.customer_id, row.scope_kind, row.scope_id, { seen, leftByLift: false }));
  }
  return {
    scopeKind: row.scope_kind,
    scopeId: row.scope_id,
    flagDeleted,
    recordsLifted: lifted.length,
    liftedAt: lifted[0]?.lifted_at ?? new Date(),
  };
}

/** The markers of pauses lifted within their period: authorize no longer refuses estimates against those caps. */
function markLifted(
  batch: ReturnType<Redis['multi']>,
  place: RedisPlace,
  tenantId: string,
  partition: number,
  lifted: { cap_id: string; period_key: string; period_ends_at: Date | null }[],
): void {
  for (const r of lifted) {
    const ttlMs = (r.period_ends_at?.getTime() ?? Date.now() + 31 * 86_400_000) - Date.now();
    if (ttlMs > 0) batch.set(partitionedKey(place.prefix, capLiftedKey(tenantId, r.cap_id, r.period_key), partition), '1', 'PX', ttlMs);
  }
}

/**
 * liftPause retried for a pause already lifted: when the scope's flag was left by that lift cut
 * short (it names a pause lifted in the same transaction), does the lift's Redis half now: the
 * markers of what an admin lifted, the flag settled. Answers as a lift that recorded nothing.
 * Undefined when no such flag is left (gone, or naming another pause): there is nothing to lift.
 */
async function finishLiftCutShort(sql: Sql, redis: Redis, place: RedisPlace, tenantId: string, row: PauseRecordRow): Promise<LiftResult | undefined> {
  if (!row.customer_id || !row.lifted_at) return undefined;
  const key = pauseFlagKey(place, tenantId, row.customer_id, row.scope_kind, row.scope_id);
  const seen = await redis.get(key);
  const flag = parseFlag(seen);
  if (!flag) return undefined;
  // The same now(): lifted_at is compared in PostgreSQL, at its full precision.
  const liftedTogether = await sql<(LiftedRow & { lifted_by: LiftSource })[]>`
    SELECT cap_id, scope_kind, scope_id, period_key, customer_id, period_ends_at, lifted_at, lifted_by
    FROM cap_pauses
    WHERE tenant_id = ${tenantId} AND scope_kind = ${row.scope_kind} AND scope_id = ${row.scope_id}
      AND lifted_at = (
        SELECT lifted_at FROM cap_pauses
        WHERE tenant_id = ${tenantId} AND cap_id = ${row.cap_id} AND scope_id = ${row.scope_id} AND period_key = ${row.period_key})`;
  if (!liftedTogether.some((r) => isLeftByLiftCutShort(flag, r))) return undefined;
  // A cap change's lift sets no markers (the total is under the raised limit, or the cap no longer pauses).
  const byAdmin = liftedTogether.filter((r) => r.lifted_by === 'admin');
  if (byAdmin.length) {
    const batch = redis.multi();
    markLifted(batch, place, tenantId, partitionOf(customerPartitionKey(tenantId, row.customer_id), place.partitions), byAdmin);
    await batch.exec();
  }
  const flagDeleted = await settleFlag(sql, redis, key, tenantId, row.customer_id, row.scope_kind, row.scope_id, { seen, leftByLift: true });
  return { scopeKind: row.scope_kind, scopeId: row.scope_id, flagDeleted, recordsLifted: 0, liftedAt: row.lifted_at };
}

/**
 * A cap changed (after its row committed): a disabled cap lifts every pause it set; a raised
 * limit lifts the pauses whose period's running total is now under it. The flag of each
 * scope goes at once unless another cap still holds it paused. Returns the pauses lifted.
 * First settles the flags earlier lifts of this cap's pauses left when cut short before Redis:
 * a retried change repairs them.
 */
export async function liftPausesForCap(sql: Sql, redis: Redis, place: RedisPlace, cap: SpendCap & { status: 'active' | 'disabled' }): Promise<number> {
  await settleFlagsLeftByLiftsCutShort(sql, redis, place, cap.tenantId, cap.id);
  const open = await sql<PauseRow[]>`${PAUSES(sql, cap.tenantId)} AND p.cap_id = ${cap.id}`;
  if (open.length === 0) return 0;
  const toLift: PauseRow[] = [];
  if (cap.status === 'disabled' || cap.action !== 'pause') toLift.push(...open);
  else {
    for (const row of open) {
      if (!row.customer_id) continue;
      const partition = partitionOf(customerPartitionKey(cap.tenantId, row.customer_id), place.partitions);
      await settleWindows(redis, place.prefix, partition, [cap]);
      const spent = BigInt((await redis.get(partitionedKey(place.prefix, capCounterKey(cap, row.period_key), partition))) ?? '0');
      if (spent < cap.limitNano) toLift.push(row);
    }
  }
  if (toLift.length === 0) return 0;
  // A cap made alert-only no longer stops anything: as good as disabled for its pauses.
  const by: LiftSource = cap.status === 'disabled' || cap.action !== 'pause' ? 'cap_disabled' : 'cap_raised';
  const reason = cap.status === 'disabled' ? 'the cap was disabled' : cap.action !== 'pause' ? 'the cap no longer pauses (alert only)' : `the limit was raised to ${cap.limitNano} nano`;
  const lifted = await sql.begin(async (tx) => {
    const rows = await tx<LiftedRow[]>`
      UPDATE cap_pauses SET lifted_at = now(), lifted_by = ${by}, lift_reason = ${reason}
      WHERE tenant_id = ${cap.tenantId} AND cap_id = ${cap.id} AND lifted_at IS NULL
        AND (scope_id, period_key) IN (SELECT * FROM unnest(${toLift.map((r) => r.scope_id)}::text[], ${toLift.map((r) => r.period_key)}::text[]))
      RETURNING cap_id, scope_kind, scope_id, period_key, customer_id, period_ends_at, lifted_at`;
    await liftNotice(tx, cap.tenantId, rows, by, reason);
    return rows;
  });
  const scopes = new Map(toLift.map((r) => [`${r.scope_kind}:${r.scope_id}`, r]));
  for (const r of scopes.values()) {
    if (r.customer_id) await settleFlag(sql, redis, pauseFlagKey(place, cap.tenantId, r.customer_id, r.scope_kind, r.scope_id), cap.tenantId, r.customer_id, r.scope_kind, r.scope_id);
  }
  return lifted.length;
}

/** The flags of scopes whose pause by this cap (in a period not over) was lifted, still naming that pause. */
async function settleFlagsLeftByLiftsCutShort(sql: Sql, redis: Redis, place: RedisPlace, tenantId: string, capId: string): Promise<void> {
  const lifted = (
    await sql<PauseRecordRow[]>`
      ${PAUSE_RECORDS(sql, tenantId)} AND p.cap_id = ${capId} AND p.lifted_at IS NOT NULL AND p.period_ends_at > now()`
  ).filter((r) => r.customer_id !== null);
  if (lifted.length === 0) return;
  const keys = lifted.map((r) => pauseFlagKey(place, tenantId, r.customer_id!, r.scope_kind, r.scope_id));
  const flags = await getMany(redis, keys);
  for (const [i, r] of lifted.entries()) {
    const flag = parseFlag(flags[i]);
    if (flag && isLeftByLiftCutShort(flag, r)) await settleFlag(sql, redis, keys[i], tenantId, r.customer_id!, r.scope_kind, r.scope_id, { seen: flags[i], leftByLift: true });
  }
}

/**
 * Pauses whose period ended are lifted by the roll-over (their flags expired with the period):
 * recorded as lifted at the period's end. Returns how many were recorded.
 */
export async function recordRolledOverPauses(sql: Sql): Promise<number> {
  const lifted = await sql.begin(async (tx) => {
    const rows = await tx<(LiftedRow & { tenant_id: string })[]>`
      UPDATE cap_pauses SET lifted_at = period_ends_at, lifted_by = ${ROLL_OVER.by}, lift_reason = ${ROLL_OVER.reason}
      WHERE lifted_at IS NULL AND period_ends_at <= now()
      RETURNING tenant_id, cap_id, scope_kind, scope_id, period_key, customer_id, period_ends_at, lifted_at`;
    await liftNotice(tx, undefined, rows, ROLL_OVER.by, ROLL_OVER.reason);
    return rows;
  });
  return lifted.length;
}

export interface PauseHistoryRow extends Omit<PauseView, 'customerId' | 'inForce'> {
  periodEndsAt: Date | null;
  liftedAt: Date | null;
  liftedBy: LiftSource | null;
  liftedByTokenId: string | null;
  liftReason: string | null;
}

/** The tenant's pauses, newest first: those in force, those lifted, or all. */
export async function pauseHistory(sql: Sql, tenantId: string, status: 'in_force' | 'lifted' | 'all', limit: number): Promise<PauseHistoryRow[]> {
  const filter = status === 'in_force' ? sql`AND lifted_at IS NULL` : status === 'lifted' ? sql`AND lifted_at IS NOT NULL` : sql``;
  const rows = await sql<
    (Omit<PauseRow, 'customer_id'> & { lifted_at: Date | null; lifted_by: LiftSource | null; lifted_by_token_id: string | null; lift_reason: string | null })[]
  >`
    SELECT cap_id, scope_kind, scope_id, period_key, limit_nano, event_id, paused_at, period_ends_at, lifted_at, lifted_by, lifted_by_token_id, lift_reason
    FROM cap_pauses WHERE tenant_id = ${tenantId} ${filter}
    ORDER BY paused_at DESC LIMIT ${limit}`;
  return rows.map((r) => ({
    capId: r.cap_id,
    scopeKind: r.scope_kind,
    scopeId: r.scope_id,
    periodKey: r.period_key,
    limitNano: BigInt(r.limit_nano),
    eventId: r.event_id,
    pausedAt: r.paused_at,
    periodEndsAt: r.period_ends_at,
    liftedAt: r.lifted_at,
    liftedBy: r.lifted_by,
    liftedByTokenId: r.lifted_by_token_id,
    liftReason: r.lift_reason,
  }));
}

/**
 * A hard cap whose limit was lowered (or that was enabled, or made to pause) under the running
 * total of its current day or month: pauses its scope now rather than at the next crossing.
 * Returns whether it paused. Session caps are judged at their next event.
 */
export async function pauseIfOverLimit(sql: Sql, redis: Redis, place: RedisPlace, cap: SpendCap & { status: 'active' | 'disabled' }): Promise<boolean> {
  if (cap.status !== 'active' || cap.action !== 'pause' || cap.period === 'session' || cap.scopeKind === 'session' || cap.scopeKind === 'plan') return false;
  const now = Date.now();
  const period = capPeriod(cap, { recordedAt: now });
  if (!period) return false;
  const customerId = await customerOfScope(sql, cap.tenantId, cap.scopeKind, cap.scopeId);
  if (!customerId) return false;
  const partition = partitionOf(customerPartitionKey(cap.tenantId, customerId), place.partitions);
  const freesAt = await settleWindows(redis, place.prefix, partition, [cap], now);
  const spent = BigInt((await redis.get(partitionedKey(place.prefix, capCounterKey(cap, period.key), partition))) ?? '0');
  if (spent < cap.limitNano) return false;
  if (await redis.exists(partitionedKey(place.prefix, capLiftedKey(cap.tenantId, cap.id, period.key), partition))) return false;
  await setPause(sql, redis, place, {
    tenantId: cap.tenantId,
    capId: cap.id,
    scopeKind: cap.scopeKind,
    scopeId: cap.scopeId,
    period: cap.period,
    periodKey: period.key,
    limitNano: cap.limitNano.toString(),
    eventId: '',
    pausedAt: now,
    customerId,
    endsAt: cap.period === 'rolling' ? (freesAt.get(cap.id) ?? period.endsAt) : period.endsAt,
  });
  return true;
}

async function customerOfScope(sql: Sql, tenantId: string, scope: PauseScope, scopeId: string): Promise<string | undefined> {
  const [row] = await sql<{ customer_id: string }[]>`
    SELECT t.customer_id FROM teams t
    WHERE t.tenant_id = ${tenantId} AND t.id = (
      CASE ${scope}::text
        WHEN 'team' THEN ${scopeId}
        WHEN 'agent' THEN (SELECT team_id FROM agents WHERE tenant_id = ${tenantId} AND id = ${scopeId})
        WHEN 'app' THEN (SELECT team_id FROM apps WHERE tenant_id = ${tenantId} AND id = ${scopeId})
        WHEN 'api_key' THEN coalesce(
          (SELECT coalesce(ag.team_id, ap.team_id) FROM api_keys k
             LEFT JOIN agents ag ON ag.tenant_id = k.tenant_id AND ag.id = k.agent_id
             LEFT JOIN apps ap ON ap.tenant_id = k.tenant_id AND ap.id = k.app_id
           WHERE k.tenant_id = ${tenantId} AND k.id = ${scopeId}),
          (SELECT ag.team_id FROM client_credentials c JOIN agents ag ON ag.tenant_id = c.tenant_id AND ag.id = c.agent_id
           WHERE c.tenant_id = ${tenantId} AND c.id = ${scopeId}))
      END)
    UNION ALL
    SELECT id FROM customers WHERE ${scope}::text = 'customer' AND tenant_id = ${tenantId} AND id = ${scopeId}`;
  return row?.customer_id;
}
