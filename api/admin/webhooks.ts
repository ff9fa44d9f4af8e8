import { z } from 'zod';
import {
  alertSettingsOut,
  alertSettingsUpdate,
  webhookDeliveryDetail,
  webhookDeliveryOut,
  webhookDeliveryStatus,
  webhookEndpointCreate,
  webhookEndpointOut,
  webhookEndpointUpdate,
  webhookEndpointWithSecret,
  webhookSecretRotate,
} from '../../schemas/admin.js';
import { formatNano, parseNano } from '../../domain/money.js';
import { newWebhookSecret, webhookUrlProblem } from '../../domain/webhooks.js';
import { readAlertSettings, writeAlertSettings, type AlertSettings } from '../../store/alert-settings.js';
import { enqueueTestEvent, sealSecret } from '../../store/webhooks.js';
import { listEndpoint, readEndpoints, type ReadSpec } from './crud.js';
import { findOwned, insertOwned, updateOwned, type Db, type Row } from './db.js';
import { endpoint, type AdminDeps, type Endpoint } from './endpoint.js';
import { conflict, validationFailed } from '../errors.js';
import { basics, iso } from './present.js';

const TAG = 'Webhooks';

function presentEndpoint(row: Row) {
  return {
    ...basics(row),
    url: row.url as string,
    description: (row.description as string | null) ?? null,
    event_types: row.event_types as z.output<typeof webhookEndpointOut>['event_types'],
    status: row.status as 'enabled' | 'disabled',
    disabled_reason: (row.disabled_reason as string | null) ?? null,
    secret_prefix: row.secret_prefix as string,
    failing_since: iso(row.failing_since),
  };
}

function presentDelivery(row: Row) {
  return {
    id: row.id,
    endpoint_id: row.endpoint_id as string,
    event_id: row.event_id as string,
    event_type: row.event_type as z.output<typeof webhookDeliveryOut>['event_type'],
    status: row.status as z.output<typeof webhookDeliveryStatus>,
    attempts: row.attempts as number,
    next_attempt_at: row.status === 'pending' ? iso(row.next_attempt_at) : null,
    last_error: (row.last_error as string | null) ?? null,
    created_at: iso(row.created_at)!,
    completed_at: iso(row.completed_at),
  };
}

/** The URL of a body, refused with its JSON path unless http(s) and, when the deployment says so, public. */
function checkedUrl(deps: AdminDeps, url: unknown): string | undefined {
  if (url === undefined) return undefined;
  const problem = webhookUrlProblem(url as string, { allowPrivateNetworks: deps.webhooks?.allowPrivateNetworks ?? false });
  if (problem) throw validationFailed(`invalid body: url: ${problem}`, [{ path: 'url', message: problem }]);
  return url as string;
}

/** A new signing secret: the value shown once, and the columns that keep it. */
function issueSecret(deps: AdminDeps) {
  const secret = newWebhookSecret();
  return { secret, columns: { secret_sealed: sealSecret(secret, deps.webhooks?.secretKey), secret_prefix: secret.slice(0, 12) } };
}

const ENDPOINTS: ReadSpec = {
  table: 'webhook_endpoints',
  path: '/webhook-endpoints',
  tag: TAG,
  filters: { status: z.enum(['enabled', 'disabled']).optional() },
  out: webhookEndpointOut,
  present: presentEndpoint,
};

async function withEventTypes(db: Db, tenantId: string, rows: Row[]): Promise<Row[]> {
  if (rows.length === 0) return rows;
  const types = await db<{ id: string; type: string }[]>`
    SELECT id, type FROM webhook_events WHERE tenant_id = ${tenantId} AND id = ANY (${rows.map((r) => r.event_id as string)}::text[])`;
  const typeOf = new Map(types.map((t) => [t.id, t.type]));
  return rows.map((row) => ({ ...row, event_type: typeOf.get(row.event_id as string) }));
}

const DELIVERIES: ReadSpec = {
  table: 'webhook_deliveries',
  path: '/webhook-endpoints/:endpoint_id/deliveries',
  parent: { table: 'webhook_endpoints', column: 'endpoint_id' },
  tag: TAG,
  filters: { status: webhookDeliveryStatus.optional() },
  out: webhookDeliveryOut,
  present: presentDelivery,
  decorate: withEventTypes,
};

async function deliveryDetail(db: Db, tenantId: string, id: string) {
  const row = await findOwned(db, 'webhook_deliveries', tenantId, id);
  const [event] = await db<{ type: string; payload: string }[]>`SELECT type, payload FROM webhook_events WHERE tenant_id = ${tenantId} AND id = ${row.event_id as string}`;
  const attempts = await db<Row[]>`
    SELECT * FROM webhook_attempts WHERE tenant_id = ${tenantId} AND delivery_id = ${id} ORDER BY attempt`;
  return {
    ...presentDelivery({ ...row, event_type: event.type }),
    payload: JSON.parse(event.payload) as Record<string, unknown>,
    attempt_log: attempts.map((a) => ({
      attempt: a.attempt as number,
      started_at: iso(a.started_at)!,
      duration_ms: a.duration_ms as number,
      response_status: (a.response_status as number | null) ?? null,
      error: (a.error as string | null) ?? null,
      succeeded: a.succeeded as boolean,
    })),
  };
}

/**
 * Webhook endpoints of the tenant (url, event types, a signing secret shown once at creation
 * and at each rotation), their deliveries with the log of every attempt, and redelivery.
 */
export function webhookEndpoints(): Endpoint[] {
  return [
    endpoint({
      method: 'post',
      path: '/webhook-endpoints',
      tag: TAG,
      summary: 'Create a webhook endpoint',
      description:
        'Deliveries are signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature) with the secret returned here, shown this once. A URL must be http or https; private-network addresses are refused unless the deployment allows them (WEBHOOK_ALLOW_PRIVATE_NETWORKS).',
      body: webhookEndpointCreate,
      response: webhookEndpointWithSecret,
      status: 201,
      async handle({ tenantId, body, deps }) {
        const url = checkedUrl(deps, body.url)!;
        const { secret, columns } = issueSecret(deps);
        const row = await insertOwned(deps.sql, 'webhook_endpoints', tenantId, {
          url,
          event_types: body.event_types,
          description: body.description ?? null,
          ...columns,
        });
        return { ...presentEndpoint(row), secret };
      },
    }),
    ...readEndpoints(ENDPOINTS),
    endpoint({
      method: 'patch',
      path: '/webhook-endpoints/:id',
      tag: TAG,
      summary: 'Update a webhook endpoint',
      description: 'Setting status to enabled again clears the failure record of an endpoint disabled for failing; its pending deliveries resume.',
      body: webhookEndpointUpdate,
      response: webhookEndpointOut,
      async handle({ tenantId, params, body, deps }) {
        const url = checkedUrl(deps, body.url);
        const row = await deps.sql.begin(async (tx) => {
          const current = await findOwned(tx, 'webhook_endpoints', tenantId, params.id, { forUpdate: true });
          const reenabled = body.status === 'enabled' && current.status === 'disabled';
          return updateOwned(tx, 'webhook_endpoints', tenantId, params.id, {
            url,
            event_types: body.event_types,
            description: body.description,
            status: body.status,
            ...(reenabled ? { failing_since: null, disabled_reason: null } : {}),
          });
        });
        return presentEndpoint(row);
      },
    }),
    endpoint({
      method: 'post',
      path: '/webhook-endpoints/:id/rotate-secret',
      tag: TAG,
      summary: "Rotate a webhook endpoint's signing secret",
      description:
        'Issues a new secret, shown this once. With grace_seconds, deliveries carry two signatures (new and old secret) until the grace ends, so receivers can switch without dropping any.',
      body: webhookSecretRotate,
      response: webhookEndpointWithSecret,
      status: 201,
      async handle({ tenantId, params, body, deps }) {
        const { secret, columns } = issueSecret(deps);
        const grace = body.grace_seconds ?? 0;
        const row = await deps.sql.begin(async (tx) => {
          const current = await findOwned(tx, 'webhook_endpoints', tenantId, params.id, { forUpdate: true });
          const [updated] = await tx<Row[]>`
            UPDATE webhook_endpoints SET
              secret_sealed = ${columns.secret_sealed}, secret_prefix = ${columns.secret_prefix},
              previous_secret_sealed = ${grace > 0 ? (current.secret_sealed as string) : null},
              previous_secret_expires_at = ${grace > 0 ? tx`now() + ${grace} * interval '1 second'` : null},
              updated_at = now()
            WHERE tenant_id = ${tenantId} AND id = ${params.id}
            RETURNING *`;
          return updated;
        });
        return { ...presentEndpoint(row), secret };
      },
    }),
    endpoint({
      method: 'post',
      path: '/webhook-endpoints/:id/test',
      tag: TAG,
      summary: 'Send a test event to a webhook endpoint',
      description: 'Enqueues a webhook.test event for this endpoint alone (whatever its event types), signed and retried like any delivery.',
      response: webhookDeliveryDetail,
      status: 201,
      async handle({ tenantId, params, deps }) {
        const target = await findOwned(deps.sql, 'webhook_endpoints', tenantId, params.id);
        if (target.status !== 'enabled') throw conflict('endpoint_disabled', `webhook endpoint ${target.id} is disabled; enable it first`);
        return deliveryDetail(deps.sql, tenantId, await enqueueTestEvent(deps.sql, tenantId, target.id));
      },
    }),
    listEndpoint(DELIVERIES),
    endpoint({
      method: 'get',
      path: '/webhook-deliveries/:id',
      tag: TAG,
      summary: 'Read a webhook delivery with its attempts',
      response: webhookDeliveryDetail,
      async handle({ tenantId, params, deps }) {
        return deliveryDetail(deps.sql, tenantId, params.id);
      },
    }),
    endpoint({
      method: 'post',
      path: '/webhook-deliveries/:id/redeliver',
      tag: TAG,
      summary: 'Deliver a webhook again',
      description:
        'Makes the delivery due now, whatever its state (a failed one, or a succeeded one to send again). It keeps its webhook-id, so a receiver that processed it already can tell. One attempt, then the usual retries while the retry window lasts.',
      response: webhookDeliveryDetail,
      async handle({ tenantId, params, deps }) {
        await deps.sql.begin(async (tx) => {
          const delivery = await findOwned(tx, 'webhook_deliveries', tenantId, params.id, { forUpdate: true });
          const target = await findOwned(tx, 'webhook_endpoints', tenantId, delivery.endpoint_id as string);
          if (target.status !== 'enabled') throw conflict('endpoint_disabled', `webhook endpoint ${target.id} is disabled; enable it first`);
          await tx`
            UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), completed_at = NULL
            WHERE tenant_id = ${tenantId} AND id = ${params.id}`;
        });
        return deliveryDetail(deps.sql, tenantId, params.id);
      },
    }),
  ];
}

function presentSettings(settings: AlertSettings): z.output<typeof alertSettingsOut> {
  return {
    threshold_percents: settings.thresholdBps.map((bps) => bps / 100),
    velocity_factor: settings.velocityFactorMilli / 1000,
    velocity_min_amount: formatNano(settings.velocityMinNano),
    projection_horizon_seconds: settings.projectionHorizonSeconds,
  };
}

/** The tenant's alert settings: thresholds on caps, velocity alerts, session projections. */
export function alertSettingsEndpoints(): Endpoint[] {
  return [
    endpoint({
      method: 'get',
      path: '/alert-settings',
      tag: 'Alerts',
      summary: "Read the tenant's alert settings",
      response: alertSettingsOut,
      async handle({ tenantId, deps }) {
        return presentSettings((await readAlertSettings(deps.sql, [tenantId])).get(tenantId)!);
      },
    }),
    endpoint({
      method: 'patch',
      path: '/alert-settings',
      tag: 'Alerts',
      summary: "Change the tenant's alert settings",
      description: 'Fields left out keep their value. Alerts are sent as webhooks (cap.threshold_reached, spend.velocity_spike, session.projection_exceeded).',
      body: alertSettingsUpdate,
      response: alertSettingsOut,
      async handle({ tenantId, body, deps }) {
        const current = (await readAlertSettings(deps.sql, [tenantId])).get(tenantId)!;
        const next: AlertSettings = {
          thresholdBps:
            body.threshold_percents === undefined ? current.thresholdBps : body.threshold_percents.map((p) => Math.round(p * 100)).sort((a, b) => a - b),
          velocityFactorMilli: body.velocity_factor === undefined ? current.velocityFactorMilli : Math.round(body.velocity_factor * 1000),
          velocityMinNano: body.velocity_min_amount === undefined ? current.velocityMinNano : parseNano(body.velocity_min_amount),
          projectionHorizonSeconds: body.projection_horizon_seconds ?? current.projectionHorizonSeconds,
        };
        return presentSettings(await writeAlertSettings(deps.sql, tenantId, next));
      },
    }),
  ];
}

