import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type postgres from 'postgres';
import type { Sql } from '../pipeline/postgres.js';
import { webhookPayload, type WebhookEventType } from '../domain/webhooks.js';
import { randomToken } from './credentials.js';

export type { WebhookEventType } from '../domain/webhooks.js';

/**
 * The webhook outbox. A fact (a cap crossed, a pause lifted) and the event announcing it are
 * written in one transaction: `enqueueWebhookEvent` inserts the event once per dedupe key and
 * one delivery per enabled endpoint of the tenant that wants its type. Delivery workers claim
 * due deliveries with FOR UPDATE SKIP LOCKED (any number of workers), post them, and record
 * each attempt; a worker killed mid-attempt leaves its claim to expire and the delivery is
 * claimed again, so nothing written here is lost.
 */

/** Ids that sort by creation time, so lists ordered by id come out oldest first. */
function sortableId(prefix: string, now = Date.now()): string {
  return `${prefix}_${now.toString(36).padStart(8, '0')}${randomToken(16)}`;
}

export async function enqueueWebhookEvent(
  tx: postgres.TransactionSql | postgres.Sql,
  tenantId: string,
  type: WebhookEventType,
  data: Record<string, unknown>,
  dedupeKey: string,
): Promise<void> {
  const messageId = sortableId('msg');
  const payload = webhookPayload(type, new Date(), data);
  await tx`
    WITH event AS (
      INSERT INTO webhook_events (id, tenant_id, type, dedupe_key, payload)
      VALUES (${messageId}, ${tenantId}, ${type}, ${dedupeKey}, ${payload})
      ON CONFLICT (tenant_id, dedupe_key) DO NOTHING
      RETURNING id, tenant_id)
    INSERT INTO webhook_deliveries (id, tenant_id, event_id, endpoint_id)
    SELECT 'whd_' || substr(event.id, 5) || '_' || e.id, event.tenant_id, event.id, e.id
    FROM event JOIN webhook_endpoints e ON e.tenant_id = event.tenant_id
    WHERE e.status = 'enabled' AND ${type} = ANY (e.event_types)`;
}

/**
 * A `webhook.test` event for one endpoint, whatever types it takes (the admin API's "send a
 * test event"), delivered like any other. Returns the delivery's id.
 */
export async function enqueueTestEvent(sql: Sql, tenantId: string, endpointId: string): Promise<string> {
  const messageId = sortableId('msg');
  const deliveryId = `whd_${messageId.slice(4)}_${endpointId}`;
  const payload = webhookPayload('webhook.test', new Date(), { endpoint_id: endpointId, message: 'A test event from agentmeter: your endpoint receives and verifies webhooks.' });
  await sql.begin(async (tx) => {
    await tx`INSERT INTO webhook_events (id, tenant_id, type, dedupe_key, payload) VALUES (${messageId}, ${tenantId}, 'webhook.test', ${`webhook.test:${messageId}`}, ${payload})`;
    await tx`INSERT INTO webhook_deliveries (id, tenant_id, event_id, endpoint_id) VALUES (${deliveryId}, ${tenantId}, ${messageId}, ${endpointId})`;
  });
  return deliveryId;
}

// --- secrets at rest

/**
 * A signing secret must be read back to sign, so it cannot be hashed: with WEBHOOK_SECRET_KEY
 * set it is sealed with AES-256-GCM (`v1:` iv, tag, ciphertext); without, it is kept as is
 * (`plain:`), which the README asks operators not to do in production.
 */
export function sealSecret(secret: string, key?: string): string {
  if (!key) return `plain:${secret}`;
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', Buffer.from(key, 'base64'), iv);
  const ciphertext = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final()]);
  return `v1:${iv.toString('base64')}:${cipher.getAuthTag().toString('base64')}:${ciphertext.toString('base64')}`;
}

export function unsealSecret(sealed: string, key?: string): string {
  if (sealed.startsWith('plain:')) return sealed.slice('plain:'.length);
  const [version, iv, tag, ciphertext] = sealed.split(':');
  if (version !== 'v1' || !key) throw new Error('a sealed webhook secret needs WEBHOOK_SECRET_KEY to be read');
  const decipher = createDecipheriv('aes-256-gcm', Buffer.from(key, 'base64'), Buffer.from(iv, 'base64'));
  decipher.setAuthTag(Buffer.from(tag, 'base64'));
  return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64')), decipher.final()]).toString('utf8');
}

// --- delivery

export interface ClaimedDelivery {
  id: string;
  tenantId: string;
  endpointId: string;
  attempt: number;
  url: string;
  messageId: string;
  payload: string;
  /** The secrets to sign with: the current one, and the previous one during a rotation's grace. */
  secretsSealed: string[];
  createdAt: Date;
}

interface ClaimRow {
  id: string;
  tenant_id: string;
  endpoint_id: string;
  attempts: number;
  url: string;
  message_id: string;
  payload: string;
  secret_sealed: string;
  previous_secret_sealed: string | null;
  previous_secret_expires_at: Date | null;
  created_at: Date;
}

/**
 * Claims up to `limit` due deliveries of enabled endpoints: each gets its attempt number and a
 * lease (its next_attempt_at moves `leaseMs` ahead), so another worker does not take it while
 * this one posts it; should this worker die, the lease runs out and the delivery is due again.
 * At most `perEndpoint` deliveries of one endpoint are in this worker's hands at once (`busy`:
 * how many it holds now), so an endpoint that hangs until the timeout cannot take every slot.
 * The oldest 1,000 due deliveries are the candidates; the lock re-checks that a row is still due.
 */
export async function claimDueDeliveries(
  sql: Sql,
  limit: number,
  leaseMs: number,
  options: { perEndpoint: number; busy: ReadonlyMap<string, number> } = { perEndpoint: limit, busy: new Map() },
): Promise<ClaimedDelivery[]> {
  const busyIds = [...options.busy.keys()];
  const busyCounts = busyIds.map((id) => options.busy.get(id)!);
  const rows = await sql<ClaimRow[]>`
    WITH candidates AS (
      SELECT d.id, d.endpoint_id, d.next_attempt_at FROM webhook_deliveries d
      JOIN webhook_endpoints e ON e.id = d.endpoint_id
      WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND e.status = 'enabled'
      ORDER BY d.next_attempt_at
      LIMIT 1000),
    ranked AS (
      SELECT c.id, c.next_attempt_at, row_number() OVER (PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at) + coalesce(b.n, 0) AS slot
      FROM candidates c
      LEFT JOIN unnest(${busyIds}::text[], ${busyCounts}::int[]) AS b (endpoint_id, n) ON b.endpoint_id = c.endpoint_id),
    due AS (
      SELECT d.id FROM webhook_deliveries d
      WHERE d.id IN (SELECT id FROM ranked WHERE slot <= ${options.perEndpoint})
        AND d.status = 'pending' AND d.next_attempt_at <= now()
      ORDER BY d.next_attempt_at
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED)
    UPDATE webhook_deliveries d
    SET attempts = d.attempts + 1, last_attempt_at = now(), next_attempt_at = now() + ${leaseMs} * interval '1 millisecond'
    FROM due, webhook_endpoints e, webhook_events ev
    WHERE d.id = due.id AND e.id = d.endpoint_id AND ev.id = d.event_id
    RETURNING d.id, d.tenant_id, d.endpoint_id, d.attempts, e.url, ev.id AS message_id, ev.payload,
              e.secret_sealed, e.previous_secret_sealed, e.previous_secret_expires_at, d.created_at`;
  const now = Date.now();
  return rows.map((r) => ({
    id: r.id,
    tenantId: r.tenant_id,
    endpointId: r.endpoint_id,
    attempt: r.attempts,
    url: r.url,
    messageId: r.message_id,
    payload: r.payload,
    secretsSealed: [
      r.secret_sealed,
      ...(r.previous_secret_sealed && r.previous_secret_expires_at && r.previous_secret_expires_at.getTime() > now ? [r.previous_secret_sealed] : []),
    ],
    createdAt: r.created_at,
  }));
}

export interface AttemptOutcome {
  startedAt: Date;
  durationMs: number;
  responseStatus?: number;
  error?: string;
  succeeded: boolean;
}

export interface RetryPolicy {
  /** Delay before the next attempt after this many attempts. */
  delayMs(attempt: number): number;
  /** A delivery is retried until this long after it was made (an attempt falls on the end), then given up. */
  windowSeconds: number;
  /** An endpoint failing (no success in between) for this long is disabled. */
  disableAfterSeconds: number;
}

/**
 * Logs one attempt and moves the delivery on: succeeded; or due again after the backoff, at the
 * retry window's end at the latest; or failed for good when an attempt made at or after that end
 * fails. A failure also marks the endpoint failing since then, and disables it once it has failed
 * for `disableAfterSeconds`; a success clears the mark.
 * Returns what became of the delivery ('stale' when its lease had been taken over meanwhile).
 */
export async function recordAttempt(
  sql: Sql,
  delivery: ClaimedDelivery,
  outcome: AttemptOutcome,
  policy: RetryPolicy,
): Promise<'succeeded' | 'retrying' | 'failed' | 'stale'> {
  return sql.begin(async (tx) => {
    // Losing this commit in a PostgreSQL crash only means the delivery is sent again under the
    // same webhook-id (at least once, as the specification has it): no need to wait for the disk.
    await tx`SET LOCAL synchronous_commit = off`;
    const error = outcome.error?.slice(0, 1000) ?? null;
    await tx`
      INSERT INTO webhook_attempts (delivery_id, attempt, tenant_id, started_at, duration_ms, response_status, error, succeeded)
      VALUES (${delivery.id}, ${delivery.attempt}, ${delivery.tenantId}, ${outcome.startedAt}, ${outcome.durationMs},
              ${outcome.responseStatus ?? null}, ${error}, ${outcome.succeeded})
      ON CONFLICT DO NOTHING`;
    if (outcome.succeeded) {
      const done = await tx`
        UPDATE webhook_deliveries SET status = 'succeeded', completed_at = now(), last_error = NULL
        WHERE id = ${delivery.id} AND attempts = ${delivery.attempt} AND status = 'pending'`;
      await tx`UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ${delivery.endpointId} AND failing_since IS NOT NULL`;
      return done.count ? 'succeeded' : 'stale';
    }
    // Retried while the window lasts, the last wait cut short so an attempt falls on its end;
    // given up only when an attempt made at or after the end (its claim's time) fails too.
    const delayMs = policy.delayMs(delivery.attempt);
    const windowEnd = new Date(delivery.createdAt.getTime() + policy.windowSeconds * 1000);
    const [moved] = await tx<{ status: 'pending' | 'failed' }[]>`
      UPDATE webhook_deliveries
      SET last_error = ${error ?? `HTTP ${outcome.responseStatus}`},
          status = CASE WHEN coalesce(last_attempt_at, now()) >= ${windowEnd} THEN 'failed' ELSE status END,
          completed_at = CASE WHEN coalesce(last_attempt_at, now()) >= ${windowEnd} THEN now() ELSE completed_at END,
          next_attempt_at = CASE WHEN coalesce(last_attempt_at, now()) >= ${windowEnd} THEN next_attempt_at
                                 ELSE least(now() + ${delayMs} * interval '1 millisecond', ${windowEnd}) END
      WHERE id = ${delivery.id} AND attempts = ${delivery.attempt} AND status = 'pending'
      RETURNING status`;
    await tx`
      UPDATE webhook_endpoints
      SET failing_since = coalesce(failing_since, ${outcome.startedAt}),
          status = CASE WHEN coalesce(failing_since, ${outcome.startedAt}) < now() - ${policy.disableAfterSeconds} * interval '1 second'
                        THEN 'disabled' ELSE status END,
          disabled_reason = CASE WHEN coalesce(failing_since, ${outcome.startedAt}) < now() - ${policy.disableAfterSeconds} * interval '1 second'
                        THEN 'failing since ' || to_char(coalesce(failing_since, ${outcome.startedAt}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                        ELSE disabled_reason END,
          updated_at = now()
      WHERE id = ${delivery.endpointId}`;
    if (!moved) return 'stale';
    return moved.status === 'failed' ? 'failed' : 'retrying';
  });
}

/**
 * Forgets deliveries finished (succeeded or failed) before `before`, with their attempts, and
 * events older than that with no delivery left, in bounded chunks. Pending deliveries are never
 * touched. An event's dedupe key goes with it, so `before` must be older than any fact can
 * arrive late (events are accepted up to MAX_EVENT_AGE_DAYS old). Returns the rows deleted.
 */
export async function pruneWebhookHistory(sql: Sql, before: Date, chunk = 1_000, maxRounds = 20): Promise<number> {
  let pruned = 0;
  for (let round = 0; round < maxRounds; round++) {
    const [deliveries] = await sql<{ n: number }[]>`
      WITH old AS (
        SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND completed_at < ${before} LIMIT ${chunk}),
      attempts AS (DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM old)),
      gone AS (DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM old) RETURNING 1)
      SELECT count(*)::int AS n FROM gone`;
    const events = await sql`
      DELETE FROM webhook_events WHERE id IN (
        SELECT ev.id FROM webhook_events ev
        WHERE ev.created_at < ${before} AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = ev.id)
        LIMIT ${chunk})`;
    pruned += deliveries.n + events.count;
    if (deliveries.n < chunk && events.count < chunk) break;
  }
  return pruned;
}
