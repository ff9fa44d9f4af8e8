import type { Redis } from '../pipeline/redis.js';
import { enqueueWebhookEvent } from './webhooks.js';
import type { TransactionSql } from 'postgres';
import type { Sql } from '../pipeline/postgres.js';
import { liftPause, setPause, type RedisPlace } from './pause-flags.js';
import type { PauseRecord } from './pauses.js';
import { minOf } from '../domain/rating/bigint.js';

type Db = Sql | TransactionSql;

/**
 * Prepaid credits. A customer holds grants (amount, currency, expiry, priority, purchase or
 * promotion). Rated usage draws from them as invoice-rollup applies it, in the transaction that
 * applies the events (so exactly once): lowest priority number first, then the earliest expiry
 * (no expiry last), then the oldest grant. Every change of a grant is a row of credit_movements.
 * A customer whose account has the hard cap (the default) is paused, through the spend-cap
 * pause machinery, when its balance in a currency reaches zero; a new grant lifts that pause.
 */

/** Usage to draw from a customer's credits: one subscription period's rated cost in a batch. Negative: usage taken back by a correction. */
export interface CreditDraw {
  tenantId: string;
  customerId: string;
  currency: string;
  subscriptionId: string;
  periodStart: number;
  amountNano: bigint;
  /** The event, when one event is drawn for alone (a correction). */
  eventId?: string;
}

export interface CreditAccountKey {
  tenantId: string;
  customerId: string;
  currency: string;
}

const accountKey = (k: CreditAccountKey) => `${k.tenantId}\u0000${k.customerId}\u0000${k.currency}`;

interface GrantRow {
  id: string;
  amount_nano: string;
  remaining_nano: string;
}

/**
 * Draws the usage from the customers' credits (returns credits for negative draws). Only
 * customers with a credit account are touched: one indexed read for a batch without any.
 * Returns the accounts with the hard cap whose balance is zero after the draw (to pause).
 *
 * A negative draw (a correction: a void, or an amend downwards) gives back only what this
 * subscription period drew, to the grants it drew from: per grant, what the period's usage took
 * from it net of what corrections already gave back to it, the grant drawn last first, each up to
 * its own share (a `returned` movement of the period). A grant that has expired since gets its
 * share back and written off at once (then an `expired` movement, both naming the correction's
 * event): as if the usage had never been, when those credits would have lapsed unused. What the
 * period drew (invoices' `credits_applied`: its `consumed` and `returned` movements) goes down by
 * exactly what was given back either way.
 */
export async function drawCredits(tx: TransactionSql, draws: CreditDraw[]): Promise<CreditAccountKey[]> {
  const wanted = draws.filter((d) => d.amountNano !== 0n);
  if (wanted.length === 0) return [];
  const keys = [...new Map(wanted.map((d) => [accountKey(d), d])).values()];
  const accounts = await tx<{ tenant_id: string; customer_id: string; currency: string; hard_cap: boolean }[]>`
    SELECT a.tenant_id, a.customer_id, a.currency, a.hard_cap FROM credit_accounts a
    JOIN unnest(${keys.map((k) => k.tenantId)}::text[], ${keys.map((k) => k.customerId)}::text[], ${keys.map((k) => k.currency)}::text[]) AS k(t, c, cur)
      ON a.tenant_id = k.t AND a.customer_id = k.c AND a.currency = k.cur`;
  if (accounts.length === 0) return [];
  // Every grant of these accounts, locked in one statement and in one order by every drawer
  // (account, then drawing order): concurrent draws never deadlock.
  type Grant = GrantRow & { tenant_id: string; customer_id: string; currency: string; live: boolean };
  const grants: Grant[] = await tx<Grant[]>`
    SELECT g.tenant_id, g.customer_id, g.currency, g.id, g.amount_nano::text, g.remaining_nano::text,
           (g.expires_at IS NULL OR g.expires_at > now()) AS live
    FROM credit_grants g
    JOIN unnest(${accounts.map((a) => a.tenant_id)}::text[], ${accounts.map((a) => a.customer_id)}::text[], ${accounts.map((a) => a.currency)}::text[]) AS k(t, c, cur)
      ON g.tenant_id = k.t AND g.customer_id = k.c AND g.currency = k.cur
    ORDER BY g.tenant_id, g.customer_id, g.currency, g.priority, g.expires_at NULLS LAST, g.created_at, g.id
    FOR UPDATE OF g`;
  const grantsOf = new Map<string, Grant[]>();
  for (const grant of grants) {
    const key = accountKey({ tenantId: grant.tenant_id, customerId: grant.customer_id, currency: grant.currency });
    const list = grantsOf.get(key) ?? [];
    list.push(grant);
    grantsOf.set(key, list);
  }
  const remaining = new Map(grants.map((g) => [`${g.tenant_id}\u0000${g.id}`, BigInt(g.remaining_nano)]));
  const slot = (g: { tenant_id: string; id: string }) => `${g.tenant_id}\u0000${g.id}`;
  // `period`: the movement is the draw's period's (consumed by it or returned to the grant that
  // gave it); the write-off of a share returned to an expired grant names only the correction's event.
  const movements: {
    tenantId: string;
    customerId: string;
    grant: string;
    kind: 'consumed' | 'returned' | 'expired';
    amount: bigint;
    draw: CreditDraw;
    period: boolean;
  }[] = [];
  const exhausted: CreditAccountKey[] = [];
  for (const account of accounts) {
    const key = { tenantId: account.tenant_id, customerId: account.customer_id, currency: account.currency };
    const mine = grantsOf.get(accountKey(key)) ?? [];
    for (const draw of wanted.filter((d) => accountKey(d) === accountKey(key))) {
      if (draw.amountNano > 0n) {
        let left = draw.amountNano;
        for (const grant of mine) {
          if (left === 0n) break;
          const have = remaining.get(slot(grant))!;
          if (!grant.live || have === 0n) continue;
          const take = minOf(have, left);
          remaining.set(slot(grant), have - take);
          left -= take;
          movements.push({ tenantId: key.tenantId, customerId: key.customerId, grant: grant.id, kind: 'consumed', amount: -take, draw, period: true });
        }
      } else {
        // Taken-back usage (a correction): what this period drew, net of what it got back, per
        // grant; this batch's own movements of the period count too (not written yet).
        const drawnRows = await tx<{ grant_id: string; given: string; last: string | null }[]>`
          SELECT grant_id, (-sum(amount_nano))::text AS given, max(id) FILTER (WHERE kind = 'consumed')::text AS last
          FROM credit_movements
          WHERE tenant_id = ${draw.tenantId} AND subscription_id = ${draw.subscriptionId} AND period_start = ${new Date(draw.periodStart)}
            AND grant_id = ANY(${mine.map((g) => g.id)}) AND kind IN ('consumed', 'returned')
          GROUP BY grant_id`;
        const drawn = new Map(drawnRows.map((r) => [r.grant_id, { given: BigInt(r.given), last: r.last === null ? -1n : BigInt(r.last) }]));
        const byGrant = new Map(mine.map((g) => [g.id, g]));
        movements.forEach((m, i) => {
          if (!m.period || m.tenantId !== draw.tenantId || !byGrant.has(m.grant)) return;
          if (m.draw.subscriptionId !== draw.subscriptionId || m.draw.periodStart !== draw.periodStart) return;
          const was = drawn.get(m.grant) ?? { given: 0n, last: -1n };
          // This batch's draws are newer than every written movement.
          drawn.set(m.grant, { given: was.given - m.amount, last: m.kind === 'consumed' ? (1n << 62n) + BigInt(i) : was.last });
        });
        // Newest draw first, each grant up to what it gave the period.
        const gave = [...drawn.entries()]
          .filter(([, d]) => d.given > 0n)
          .sort(([, a], [, b]) => (a.last === b.last ? 0 : a.last > b.last ? -1 : 1));
        let left = -draw.amountNano;
        for (const [grantId, d] of gave) {
          if (left === 0n) break;
          const grant = byGrant.get(grantId)!;
          const give = minOf(d.given, left);
          left -= give;
          const move = { tenantId: key.tenantId, customerId: key.customerId, draw };
          movements.push({ ...move, grant: grant.id, kind: 'returned', amount: give, period: true });
          // Expired since it gave: written off at once, as it would have been had it not given.
          if (grant.live) remaining.set(slot(grant), remaining.get(slot(grant))! + give);
          else movements.push({ ...move, grant: grant.id, kind: 'expired', amount: -give, period: false });
        }
      }
    }
    const balance = mine.reduce((sum, g) => sum + (g.live ? remaining.get(slot(g))! : 0n), 0n);
    if (account.hard_cap && balance === 0n && wanted.some((d) => d.amountNano > 0n && accountKey(d) === accountKey(key))) exhausted.push(key);
  }
  if (movements.length) {
    const changed = grants.filter((g) => remaining.get(slot(g)) !== BigInt(g.remaining_nano));
    await tx`
      UPDATE credit_grants AS g SET remaining_nano = x.remaining
      FROM unnest(${changed.map((g) => g.tenant_id)}::text[], ${changed.map((g) => g.id)}::text[],
                  ${changed.map((g) => remaining.get(slot(g))!.toString())}::numeric[]) AS x(t, id, remaining)
      WHERE g.tenant_id = x.t AND g.id = x.id`;
    await tx`
      INSERT INTO credit_movements (tenant_id, grant_id, customer_id, kind, amount_nano, subscription_id, period_start, event_id)
      SELECT * FROM unnest(
        ${movements.map((m) => m.tenantId)}::text[], ${movements.map((m) => m.grant)}::text[], ${movements.map((m) => m.customerId)}::text[],
        ${movements.map((m) => m.kind)}::text[], ${movements.map((m) => m.amount.toString())}::numeric[],
        ${movements.map((m) => (m.period ? m.draw.subscriptionId : null))}::text[],
        ${movements.map((m) => (m.period ? new Date(m.draw.periodStart).toISOString() : null))}::timestamptz[],
        ${movements.map((m) => m.draw.eventId ?? null)}::text[])`;
  }
  return exhausted;
}

export interface GrantInput {
  id: string;
  tenantId: string;
  customerId: string;
  currency: string;
  amountNano: bigint;
  priority: number;
  source: 'purchase' | 'promotion';
  expiresAt: Date | null;
  description: string | null;
  hardCap?: boolean;
}

/** A new grant and its `granted` movement; opens the customer's account in that currency (hard cap on unless said). */
export async function grantCredits(tx: TransactionSql, grant: GrantInput): Promise<void> {
  await tx`
    INSERT INTO credit_accounts (tenant_id, customer_id, currency, hard_cap)
    VALUES (${grant.tenantId}, ${grant.customerId}, ${grant.currency}, ${grant.hardCap ?? true})
    ON CONFLICT (tenant_id, customer_id, currency) DO UPDATE SET hard_cap = coalesce(${grant.hardCap ?? null}::boolean, credit_accounts.hard_cap)`;
  await tx`
    INSERT INTO credit_grants (tenant_id, id, customer_id, currency, amount_nano, remaining_nano, priority, source, expires_at, description)
    VALUES (${grant.tenantId}, ${grant.id}, ${grant.customerId}, ${grant.currency}, ${grant.amountNano.toString()}, ${grant.amountNano.toString()},
            ${grant.priority}, ${grant.source}, ${grant.expiresAt}, ${grant.description})`;
  await tx`
    INSERT INTO credit_movements (tenant_id, grant_id, customer_id, kind, amount_nano)
    VALUES (${grant.tenantId}, ${grant.id}, ${grant.customerId}, 'granted', ${grant.amountNano.toString()})`;
}

/** Grants past their expiry with credits left: the rest is written off by an `expired` movement. Returns how many. */
export async function expireGrants(sql: Sql, now = new Date()): Promise<number> {
  return sql.begin(async (tx) => {
    const expired = await tx<{ tenant_id: string; id: string; customer_id: string; remaining_nano: string }[]>`
      SELECT tenant_id, id, customer_id, remaining_nano::text FROM credit_grants
      WHERE remaining_nano > 0 AND expires_at <= ${now}
      ORDER BY tenant_id, customer_id, currency, priority, expires_at NULLS LAST, created_at, id
      FOR UPDATE SKIP LOCKED LIMIT 1000`;
    for (const g of expired) {
      await tx`UPDATE credit_grants SET remaining_nano = 0 WHERE tenant_id = ${g.tenant_id} AND id = ${g.id}`;
      await tx`INSERT INTO credit_movements (tenant_id, grant_id, customer_id, kind, amount_nano)
               VALUES (${g.tenant_id}, ${g.id}, ${g.customer_id}, 'expired', ${(-BigInt(g.remaining_nano)).toString()})`;
    }
    return expired.length;
  });
}

export interface CreditBalance {
  currency: string;
  balanceNano: bigint;
  hardCap: boolean;
}

/** A customer's balance per currency: what its live grants have left. */
export async function creditBalances(db: Db, tenantId: string, customerId: string): Promise<CreditBalance[]> {
  const rows = await db<{ currency: string; balance: string; hard_cap: boolean }[]>`
    SELECT a.currency, a.hard_cap,
           coalesce((SELECT sum(remaining_nano) FROM credit_grants g
                     WHERE g.tenant_id = a.tenant_id AND g.customer_id = a.customer_id AND g.currency = a.currency
                       AND (g.expires_at IS NULL OR g.expires_at > now())), 0)::text AS balance
    FROM credit_accounts a WHERE a.tenant_id = ${tenantId} AND a.customer_id = ${customerId}
    ORDER BY a.currency`;
  return rows.map((r) => ({ currency: r.currency, balanceNano: BigInt(r.balance), hardCap: r.hard_cap }));
}

/** The pause a credit account sets: one per customer and currency, in cap_pauses beside the spend caps' pauses. */
const creditsPauseCapId = (currency: string) => `credits:${currency}`;
const CREDITS_PAUSE_PERIOD = 'prepaid';

/** Prepaid credits keep their pause until a grant lifts it (a year at most, the flag's lifetime). */
const CREDITS_PAUSE_TTL_SECONDS = 366 * 86_400;

/**
 * Pauses each exhausted account's customer through the spend-cap pause machinery (authorize
 * refuses it). Every draw that finds an account at zero calls this (a pause that a crash kept
 * from being set after the draw is set by the next); `credits.exhausted` goes out once per pause,
 * in the transaction that records it. A pause whose account has credits again by the time it is
 * recorded (a grant raced the draw) is lifted at once.
 */
export async function pauseExhausted(sql: Sql, redis: Redis, place: RedisPlace, exhausted: CreditAccountKey[], eventId: string): Promise<void> {
  for (const account of exhausted) {
    const record: PauseRecord = {
      tenantId: account.tenantId,
      capId: creditsPauseCapId(account.currency),
      scopeKind: 'customer',
      scopeId: account.customerId,
      period: 'month',
      periodKey: CREDITS_PAUSE_PERIOD,
      limitNano: '0',
      eventId,
      pausedAt: Date.now(),
    };
    await setPause(sql, redis, place, { ...record, customerId: account.customerId, endsAt: Date.now() + CREDITS_PAUSE_TTL_SECONDS * 1000 }, (tx) =>
      enqueueWebhookEvent(
        tx,
        account.tenantId,
        'credits.exhausted',
        { customer_id: account.customerId, currency: account.currency, event_id: eventId },
        `credits.exhausted:${account.customerId}:${account.currency}:${eventId}`,
      ),
    );
    // A grant that committed after this draw read the balance lifted only what was recorded before
    // this pause: the balance is read again now that the pause is recorded, and a pause with
    // credits behind it is lifted at once.
    const balance = (await creditBalances(sql, account.tenantId, account.customerId)).find((b) => b.currency === account.currency);
    if (balance && balance.balanceNano > 0n) {
      await liftPause(sql, redis, place, account.tenantId, { capId: record.capId, scopeId: account.customerId, periodKey: CREDITS_PAUSE_PERIOD }, {
        by: 'admin',
        reason: 'credits granted while the draw that paused ran',
        onlyThisCap: true,
      });
    }
  }
}

/**
 * Credits are back (a grant, or a correction that returned some): lifts the customer's credits
 * pause in that currency, if one is in force, as an admin's act (the admin token that did it,
 * when there is one) with `reason`.
 */
export async function liftCreditsPause(
  sql: Sql,
  redis: Redis,
  place: RedisPlace,
  account: CreditAccountKey,
  by: { reason: string; tokenId?: string },
): Promise<boolean> {
  const lifted = await liftPause(
    sql,
    redis,
    place,
    account.tenantId,
    { capId: creditsPauseCapId(account.currency), scopeId: account.customerId, periodKey: CREDITS_PAUSE_PERIOD },
    // The credits pause only: a spend-cap pause of the customer stays in force.
    { by: 'admin', reason: by.reason, onlyThisCap: true, ...(by.tokenId ? { tokenId: by.tokenId } : {}) },
  );
  return lifted !== undefined;
}
