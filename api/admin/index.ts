import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { createLogger, type Logger } from '../../pipeline/logger.js';
import { TenantTokens } from '../../store/tenant-tokens.js';
import { requireTenant } from '../auth.js';
import { agentEndpoints, appEndpoints } from './agents.js';
import { billingEndpoints } from './billing.js';
import { apiKeyEndpoints, clientCredentialEndpoints } from './credentials.js';
import { customerEndpoints, teamEndpoints } from './customers.js';
import { mountEndpoints, type AdminDeps, type AdminEnv, type Endpoint } from './endpoint.js';
import { ApiError, apiErrorHandler, routeNotFound } from '../errors.js';
import { pauseEndpoints } from './pauses.js';
import { productEndpoints } from './products.js';
import { ratePlanEndpoints } from './rate-plans.js';
import { costModelEndpoints, spendCapEndpoints } from './spend-caps.js';
import { subscriptionEndpoints } from './subscriptions.js';
import { tenantTokenEndpoints } from './tenant-tokens.js';
import { alertSettingsEndpoints, webhookEndpoints } from './webhooks.js';

export type { AdminDeps } from './endpoint.js';

export const ADMIN_BASE_PATH = '/v1/admin';
/** Rate plans are the largest bodies; 256 KiB holds thousands of per-tool prices. */
const ADMIN_MAX_BODY_BYTES = 256 * 1024;

/** Every admin route, relative to ADMIN_BASE_PATH; the OpenAPI document is built from the same list. */
export function adminEndpoints(): Endpoint[] {
  return [
    ...customerEndpoints(),
    ...teamEndpoints(),
    ...productEndpoints(),
    ...agentEndpoints(),
    ...appEndpoints(),
    ...apiKeyEndpoints(),
    ...clientCredentialEndpoints(),
    ...ratePlanEndpoints(),
    ...subscriptionEndpoints(),
    ...spendCapEndpoints(),
    ...pauseEndpoints(),
    ...costModelEndpoints(),
    ...tenantTokenEndpoints(),
    ...webhookEndpoints(),
    ...alertSettingsEndpoints(),

    ...billingEndpoints(),
  ];
}

/**
 * The admin API under /v1/admin, behind the tenant's admin token. Every query is scoped to the
 * caller's tenant: another tenant's objects answer 404, exactly like ids that do not exist.
 * Pass the process's shared TenantTokens so that a `tenant-tokens.changed` control message
 * reaches its cache.
 */
export function createAdminRoutes(deps: AdminDeps & { log?: Logger }): Hono<AdminEnv> {
  const app = new Hono<AdminEnv>();
  const tokens = deps.tokens ?? new TenantTokens(deps.sql);
  const log = deps.log ?? createLogger('admin-api');
  app.use(`${ADMIN_BASE_PATH}/*`, requireTenant(tokens, 'admin'));
  app.use(
    `${ADMIN_BASE_PATH}/*`,
    bodyLimit({
      maxSize: ADMIN_MAX_BODY_BYTES,
      onError: () => {
        throw new ApiError(413, 'payload_too_large', `the request body exceeds ${ADMIN_MAX_BODY_BYTES} bytes`);
      },
    }),
  );
  mountEndpoints(app, ADMIN_BASE_PATH, adminEndpoints(), { sql: deps.sql, redis: deps.redis, prefix: deps.prefix, partitions: deps.partitions, tokens, webhooks: deps.webhooks });
  // Mounted on its own (tests, tools) it renders errors the same way as inside the full app.
  app.onError(apiErrorHandler(log));
  app.notFound(routeNotFound);
  return app;
}
