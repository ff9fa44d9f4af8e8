import { createServer, type RequestListener, type ServerOptions } from 'node:http';
import { Hono } from 'hono';
import { timeout } from 'hono/timeout';
import type { Redis } from '../pipeline/redis.js';
import type { Config } from '../pipeline/config.js';
import type { Logger } from '../pipeline/logger.js';
import type { Metrics } from '../pipeline/metrics.js';
import type { Sql } from '../pipeline/postgres.js';
import type { ControlMessage } from '../pipeline/control.js';
import { AttributionResolver } from '../store/attribution.js';
import { createIngestRoutes } from './ingest/routes.js';
import { createAdminRoutes } from './admin/index.js';
import { TenantTokens } from '../store/tenant-tokens.js';
import { requireTenant } from './auth.js';
import { createAuthorizeRoutes } from './authorize.js';
import { createBackfillRoutes } from './backfill.js';
import { createCogsRoutes } from './cogs.js';
import { createConsoleRoutes } from './console/index.js';
import { createInvoiceRoutes } from './invoices.js';
import { createOpenApiRoutes } from './openapi.js';
import { apiErrorHandler, routeNotFound, unavailable } from './errors.js';
import { createQuoteRoutes } from './quote.js';
import { createUsageRoutes } from './usage.js';
import { createSpendRoutes } from './spend.js';

export interface AppDeps {
  config: Config;
  sql: Sql;
  redis: Redis;
  log: Logger;
  metrics: Metrics;
  tokens?: TenantTokens;
}

/**
 * The HTTP API of one process: ingest (stage 1 of the flow), authorize, the admin API,
 * quotes, invoices and COGS, plus /healthz, /readyz and /metrics.
 */
export interface CreatedApp {
  app: Hono;
  tokens: TenantTokens;
  applyControl: (message: ControlMessage) => Promise<void>;
  /** Stops the routes' background work (authorize's flag subscription). */
  close: () => Promise<void>;
  /**
   * A `createServer` for @hono/node-server's serve: `POST /v1/authorize`, and `POST /v1/events`
   * refused while the pipeline is behind, skip the Hono layers (see api/authorize.ts and
   * api/ingest/routes.ts).
   */
  createServer: typeof createServer;
}

export function createApp(deps: AppDeps): CreatedApp {
  const { config, sql, redis, log, metrics } = deps;
  const tokens = deps.tokens ?? new TenantTokens(sql);
  const resolver = new AttributionResolver(sql, redis, config.REDIS_PREFIX, config.KEY_CACHE_TTL_SECONDS, {
    hit: () => metrics.cacheLookups.inc({ cache: 'attribution', result: 'hit' }),
    miss: () => metrics.cacheLookups.inc({ cache: 'attribution', result: 'miss' }),
  });
  const app = new Hono();

  // No request waits on a stuck store for ever: past the deadline the client hears 503 and retries
  // (an ingest request that did land meanwhile is recognized as a duplicate).
  app.use(
    '*',
    timeout(config.HTTP_REQUEST_TIMEOUT_MS, () =>
      unavailable('timeout', `no answer within ${config.HTTP_REQUEST_TIMEOUT_MS} ms: a store is slow or unreachable; retry later`, 2),
    ),
  );
  app.get('/healthz', (c) => c.text('ok'));
  app.get('/readyz', async (c) => {
    try {
      await Promise.all([redis.ping(), sql`SELECT 1`]);
      return c.text('ready');
    } catch {
      return c.text('not ready', 503);
    }
  });
  app.get('/metrics', async (c) => c.body(await metrics.registry.metrics(), 200, { 'content-type': metrics.registry.contentType }));

  const ingest = createIngestRoutes({ config, redis, tokens, metrics, log, resolver });
  app.route('/', ingest);
  const webhooks = { allowPrivateNetworks: config.WEBHOOK_ALLOW_PRIVATE_NETWORKS, secretKey: config.WEBHOOK_SECRET_KEY };
  app.route('/', createAdminRoutes({ sql, redis, prefix: config.REDIS_PREFIX, partitions: config.PARTITIONS, tokens, log, webhooks }));
  const authorize = createAuthorizeRoutes({ config, redis, resolver, tokens, sql, log });
  app.route('/', authorize.app);
  app.route('/', createInvoiceRoutes({ sql, tokens }));
  app.route('/', createBackfillRoutes({ config, redis, tokens, log }));
  app.route('/', createSpendRoutes({ config, sql, redis, tokens }));
  app.route('/', createCogsRoutes({ sql, tokens }));
  app.route('/', createUsageRoutes({ config, sql, tokens }));
  app.use('/v1/rate-plans/quote', requireTenant(tokens, 'ingest'));
  app.route('/', createQuoteRoutes());
  app.route('/', createOpenApiRoutes());
  app.route('/', createConsoleRoutes({ config, sql, redis, tokens, log }));

  app.notFound(routeNotFound);
  app.onError(apiErrorHandler(log));
  return {
    app,
    tokens,
    async applyControl(message) {
      if (message.type === 'tenant-tokens.changed') tokens.forgetAll();
      await authorize.applyControl(message);
    },
    close: () => authorize.close(),
    createServer: ((options: ServerOptions, listener: RequestListener) =>
      createServer(options, (req, res) => {
        if (!authorize.serveNode(req, res) && !ingest.serveNode(req, res)) listener(req, res);
      })) as typeof createServer,
  };
}
