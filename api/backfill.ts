import { Hono } from 'hono';
import type { Redis } from '../pipeline/redis.js';
import type { Config } from '../pipeline/config.js';
import type { Logger } from '../pipeline/logger.js';
import type { TenantTokens } from '../store/tenant-tokens.js';
import { requireTenant, type TenantAuthVariables } from './auth.js';
import { ApiError, tooLarge, unavailable } from './errors.js';
import { redisDown } from './http.js';
import { TimedBodies } from './ingest/body.js';
import { contentEncodingError, decodeBody, eventsOf, normalizeBatch } from './ingest/normalize.js';
import { refuseIfNothingTaken, writeRefusal } from './ingest/routes.js';
import { behind, IngestWriter } from './ingest/writer.js';

/** How far back a backfill reaches: any recorded time of the last hundred years, */
const BACKFILL_MAX_AGE_DAYS = 36_500;
/**
 * and none before 1970-01-01T00:00:00Z: ClickHouse's DateTime and Date start there and would
 * silently store an earlier time as another one.
 */
const BACKFILL_NOT_BEFORE = 0;

/**
 * `POST /v1/backfill/events` (admin token): events older than the ingest window
 * (MAX_EVENT_AGE_DAYS), in bulk (up to INGEST_MAX_BATCH events and INGEST_MAX_BODY_BYTES per
 * request, the body of `POST /v1/events`). They enter the pipeline like any event, so each is
 * attributed by its credential, rated by the subscription and plan version active at its
 * recorded time, and billed once per event_id: sending a backfill again bills nothing twice (a
 * second submission is a duplicate in the ledger). An event of a period already closed lands on
 * the next invoice as an adjustment naming its period; one no subscription covers is rejected
 * (`events:rejected`, no_subscription).
 */
export function createBackfillRoutes(deps: { config: Config; redis: Redis; tokens: TenantTokens; log: Logger }): Hono<{ Variables: TenantAuthVariables }> {
  const { config, log } = deps;
  const writer = new IngestWriter(deps.redis, config);
  const bodies = new TimedBodies(config.HTTP_REQUEST_TIMEOUT_MS);
  const app = new Hono<{ Variables: TenantAuthVariables }>();
  app.post('/v1/backfill/events', requireTenant(deps.tokens, 'admin'), async (c) => {
    const tenantId = c.get('tenantId');
    const encoding = contentEncodingError(c.req.header('content-encoding'));
    if (encoding) throw new ApiError(encoding.status, encoding.code, encoding.message);
    // The request's deadline, from here (the token was checked): a body still arriving then is dropped, the connection closed.
    const timed = bodies.start(c.env);
    let bytes: Uint8Array | undefined;
    try {
      let room: boolean;
      try {
        if (redisDown(deps.redis)) throw new Error(`Redis connection is ${deps.redis.status}`);
        room = await writer.hasRoom();
      } catch (err) {
        log.warn({ err }, 'backfill: cannot read the lag of the first stream');
        throw unavailable('unavailable', 'the event store cannot be reached; retry later', 2);
      }
      if (!room) throw behind(writer);
      bytes = await timed.readLimited(c.req.raw, config.INGEST_MAX_BODY_BYTES);
    } finally {
      bodies.end(timed);
    }
    if (!bytes) throw tooLarge(config.INGEST_MAX_BODY_BYTES);
    const body = decodeBody(bytes, c.req.header('content-type'));
    if (!body.ok) throw new ApiError(body.status, body.code, body.message);
    const events = eventsOf(body.value, config.INGEST_MAX_BATCH);
    if (!events.ok) throw new ApiError(events.status, events.code, events.message, 'details' in events ? events.details : undefined);
    const batch = normalizeBatch(tenantId, events.value, {
      now: Date.now(),
      maxFutureSeconds: config.MAX_EVENT_FUTURE_SECONDS,
      maxAgeDays: BACKFILL_MAX_AGE_DAYS,
      notBefore: BACKFILL_NOT_BEFORE,
    });
    refuseIfNothingTaken(batch);
    if (batch.accepted.length) {
      try {
        await writer.write(batch.accepted);
      } catch (err) {
        log.error({ err, tenantId, events: batch.accepted.length }, 'backfill: writing to the first stream failed');
        throw writeRefusal(err, config.INGEST_DURABILITY);
      }
    }
    return c.json({ accepted: batch.accepted.length, duplicates: batch.duplicates, rejected: batch.rejected }, 202);
  });
  return app;
}
