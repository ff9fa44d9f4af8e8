import { Hono } from 'hono';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Redis } from '../../pipeline/redis.js';
import type { Config } from '../../pipeline/config.js';
import { STREAMS } from '../../store/streams.js';
import type { Logger } from '../../pipeline/logger.js';
import type { Metrics } from '../../pipeline/metrics.js';
import type { TenantTokens } from '../../store/tenant-tokens.js';
import { requireTenant, type TenantAuthVariables } from '../auth.js';
import { cloudEventsMode, cloudEventsRejection, fromCloudEvents } from '../cloudevents.js';
import { ApiError, retryAfterHeaders, tooLarge, tooManyRequests, unavailable } from '../errors.js';
import { redisDown, writeJson } from '../http.js';
import { contentEncodingError, decodeBody, eventsOf, normalizeBatch, type DuplicateItem, type RejectedItem } from './normalize.js';
import { behind, IngestWriteError, IngestWriter } from './writer.js';
import { TimedBodies, type TimedBody } from './body.js';
import { CustomerPartitions } from './customer-partitions.js';
import type { AttributionResolver } from '../../store/attribution.js';

export interface IngestDeps {
  config: Config;
  redis: Redis;
  tokens: TenantTokens;
  metrics?: Metrics;
  log: Logger;
  /** With PARTITIONS > 1: events go to their customer's partition once their credential was looked up (CustomerPartitions). */
  resolver?: Pick<AttributionResolver, 'resolveMany'>;
}

/** The 202 reply of `POST /v1/events`. */
export interface IngestReply {
  accepted: number;
  duplicates: DuplicateItem[];
  rejected: RejectedItem[];
}

const STAGE = 'ingest';
/** `busy` clears as soon as requests in flight end (tens of ms). */
const BUSY_RETRY_AFTER_MS = 100;
const UNAVAILABLE_RETRY_AFTER = 2;
const OUT_OF_MEMORY_RETRY_AFTER = 5;

/**
 * `POST /v1/events`: one event, an array, or `{ "events": [...] }`, as JSON or MessagePack,
 * with a tenant ingest token. Valid events are normalized (API key hashed) and written to
 * `events:ingested`; the reply counts them and lists each duplicate and each rejected event
 * with every field error.
 */
/**
 * Nothing in the request can be taken (every event refused, none a duplicate): a plain 400
 * refusal, every problem by event index and field path. The backfill route answers the same.
 */
export function refuseIfNothingTaken(batch: { accepted: unknown[]; duplicates: unknown[]; rejected: RejectedItem[] }): void {
  if (batch.accepted.length > 0 || batch.duplicates.length > 0) return;
  const [first] = batch.rejected;
  const where = first.errors[0]?.field ? `${first.errors[0].field}: ` : '';
  throw new ApiError(400, 'validation_failed', `no event was accepted; event ${first.index}: ${where}${first.errors[0]?.message ?? 'invalid'}`, batch.rejected);
}

/**
 * The 503 of a write to `events:ingested` that failed (ingest and backfill). With PARTITIONS > 1 a
 * request's events go to several partitions, each written on its own: when one failed after
 * another's write succeeded (or may have: not_durable), some events are in the stream, and the
 * answer says so; the client retries the same request, and the events already in are duplicates.
 */
export function writeRefusal(err: unknown, durability: Config['INGEST_DURABILITY']): ApiError {
  const kind = err instanceof IngestWriteError ? err.kind : 'unavailable';
  if (kind === 'not_durable') {
    return unavailable(
      'not_durable',
      `the events were not confirmed durable (INGEST_DURABILITY=${durability}) in time; none is reported accepted: retry the same request (event ids make the retry safe)`,
      UNAVAILABLE_RETRY_AFTER,
    );
  }
  const outcome =
    err instanceof IngestWriteError && err.partial
      ? 'some events may have been accepted (another partition was written): retry the same request later (event ids make the retry safe)'
      : 'nothing was accepted, retry later';
  if (kind === 'out_of_memory') return unavailable('store_full', `the event store is full; ${outcome}`, OUT_OF_MEMORY_RETRY_AFTER);
  return unavailable('unavailable', `the event store failed; ${outcome}`, UNAVAILABLE_RETRY_AFTER);
}

/** Variables of the ingest route: the tenant, and the request's body with its deadline (set as the request comes). */
type IngestVariables = TenantAuthVariables & { timedBody: TimedBody };

export type IngestRoutes = Hono<{ Variables: IngestVariables }> & {
  /**
   * `POST /v1/events` while the last read of the queue closed the gate (a stale read starts the
   * next one, and this request does not wait for it): the 429 straight on Node's request, before
   * the Hono layers and the token check, as the `busy` refusal comes before the token check too.
   * Under an overload most requests are these refusals; the same answer as the route's, without a
   * Request, a Response and the middleware for each. False when it is not such a request, or Redis
   * is unreachable (the route answers 503): the caller hands it to Hono.
   */
  serveNode(req: IncomingMessage, res: ServerResponse): boolean;
};

export function createIngestRoutes(deps: IngestDeps): IngestRoutes {
  const { config, metrics, log } = deps;
  const { resolver } = deps;
  const placement =
    resolver && config.PARTITIONS > 1
      ? new CustomerPartitions((items) => resolver.resolveMany(items), config.PARTITIONS, (err) => log.warn({ err }, 'ingest: looking up the partitions of credentials failed'))
      : undefined;
  const writer = new IngestWriter(deps.redis, config, undefined, placement, metrics?.gateHeldBy(STAGE));
  const app = new Hono<{ Variables: IngestVariables }>();
  const bodies = new TimedBodies(config.HTTP_REQUEST_TIMEOUT_MS);

  /** A request refused because the pipeline is behind (by the route, or on Node's request): the gate shows paused. */
  const countBehind = () => {
    metrics?.paused.set({ stage: STAGE }, 1);
    metrics?.errors.inc({ stage: STAGE, kind: 'backpressure' });
  };

  // A saturated machine answers slowly before the first stream fills; refusing past a number of
  // requests in flight keeps the refusal prompt (the client keeps its events and retries).
  // A request holds its slot until its deadline at most: a body still arriving then is dropped (TimedBodies).
  let inFlight = 0;
  app.use('/v1/events', async (c, next) => {
    if (inFlight >= config.INGEST_MAX_IN_FLIGHT) {
      metrics?.errors.inc({ stage: STAGE, kind: 'busy' });
      throw tooManyRequests('busy', `more than ${config.INGEST_MAX_IN_FLIGHT} requests in flight; nothing was accepted, retry later`, BUSY_RETRY_AFTER_MS);
    }
    inFlight++;
    const body = bodies.start(c.env);
    c.set('timedBody', body);
    try {
      await next();
    } finally {
      bodies.end(body);
      inFlight--;
    }
  });

  app.post('/v1/events', requireTenant(deps.tokens, 'ingest'), async (c) => {
    const tenantId = c.get('tenantId');
    const encoding = contentEncodingError(c.req.header('content-encoding'));
    if (encoding) throw new ApiError(encoding.status, encoding.code, encoding.message);
    let room: boolean;
    try {
      if (redisDown(deps.redis)) throw new Error(`Redis connection is ${deps.redis.status}`);
      room = await writer.hasRoom();
    } catch (err) {
      log.warn({ err }, 'ingest: cannot read the lag of the first stream');
      metrics?.errors.inc({ stage: STAGE, kind: 'redis' });
      throw unavailable('unavailable', 'the event store cannot be reached; retry later', UNAVAILABLE_RETRY_AFTER);
    }
    if (!room) {
      countBehind();
      throw behind(writer);
    }
    metrics?.paused.set({ stage: STAGE }, 0);

    const timed = c.get('timedBody');
    const bytes = await timed.readLimited(c.req.raw, config.INGEST_MAX_BODY_BYTES);
    bodies.end(timed);
    if (!bytes) throw tooLarge(config.INGEST_MAX_BODY_BYTES);
    const body = decodeBody(bytes, c.req.header('content-type'));
    if (!body.ok) throw new ApiError(body.status, body.code, body.message);
    const cloud = cloudEventsMode(c.req.header('content-type'));
    const mapped = cloud && fromCloudEvents(cloud, body.value, { maxBatch: config.INGEST_MAX_BATCH, now: Date.now() });
    const events = mapped || eventsOf(body.value, config.INGEST_MAX_BATCH);
    if (!events.ok) throw new ApiError(events.status, events.code, events.message, 'details' in events ? events.details : undefined);

    const batch = normalizeBatch(tenantId, events.value, {
      now: Date.now(),
      maxFutureSeconds: config.MAX_EVENT_FUTURE_SECONDS,
      maxAgeDays: config.MAX_EVENT_AGE_DAYS,
    });
    // A CloudEvents request is all or nothing (see api/cloudevents.ts).
    if (cloud && mapped?.ok && batch.rejected.length) {
      const refused = cloudEventsRejection(cloud, mapped.origins, batch.rejected);
      throw new ApiError(400, 'validation_failed', refused.message, refused.details);
    }
    metrics?.eventsIn.inc({ stage: STAGE }, events.value.length);
    if (batch.rejected.length) metrics?.errors.inc({ stage: STAGE, kind: 'rejected' }, batch.rejected.length);
    refuseIfNothingTaken(batch);

    if (batch.accepted.length) {
      try {
        await writer.write(batch.accepted);
      } catch (err) {
        const kind = err instanceof IngestWriteError ? err.kind : 'unavailable';
        log.error({ err, tenantId, events: batch.accepted.length }, 'ingest: writing to the first stream failed');
        metrics?.errors.inc({ stage: STAGE, kind: kind === 'out_of_memory' ? 'redis_oom' : kind === 'not_durable' ? 'not_durable' : 'redis' });
        throw writeRefusal(err, config.INGEST_DURABILITY);
      }
      metrics?.eventsOut.inc({ stage: STAGE, stream: STREAMS.ingested }, batch.accepted.length);
    }
    const reply: IngestReply = { accepted: batch.accepted.length, duplicates: batch.duplicates, rejected: batch.rejected };
    return c.json(reply, 202);
  });

  // The route's own refusal body (only its Retry-After headers change from one refusal to the next).
  const behindBody = JSON.stringify(behind(writer).body());
  return Object.assign(app, {
    serveNode(req: IncomingMessage, res: ServerResponse): boolean {
      if (req.method !== 'POST' || !(req.url === '/v1/events' || req.url?.startsWith('/v1/events?'))) return false;
      if (redisDown(deps.redis) || !writer.knownFull()) return false;
      countBehind();
      writeJson(res, 429, behindBody, retryAfterHeaders(writer.retryHintMs()));
      return true;
    },
  });
}
