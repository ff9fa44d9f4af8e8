import { z } from 'zod';
import { AGENT_TYPES } from '../domain/events.js';
import { costModelSchema } from './cost-model.js';
import { MAX_BIGINT, decimalAmount, isoTimestamp as timestamp } from '../domain/validation.js';
import { WEBHOOK_EVENT_TYPES } from '../domain/webhooks.js';

/**
 * Request and response bodies of the admin API (`/v1/admin/...`). Requests are strict: an
 * unknown field is refused rather than ignored, so a misspelt field never silently does nothing.
 * The OpenAPI document is generated from these schemas.
 */

export const PRODUCT_KINDS = ['standard_api', 'agentic_api', 'managed_agent', 'mcp_server'] as const;
export const CAP_SCOPES = ['api_key', 'app', 'agent', 'team', 'customer', 'session', 'plan'] as const;
export const CAP_PERIODS = ['session', 'day', 'month', 'rolling'] as const;
/** A rolling window: whole minutes, from one minute to 31 days. */
const MAX_WINDOW_SECONDS = 31 * 86_400;
const CAP_ACTIONS = ['pause', 'alert'] as const;

const ref = (noun: string) => z.string().min(1).max(128).meta({ description: `Id of the ${noun}.` });
const name = z.string().trim().min(1).max(200);
const currency = z.string().regex(/^[A-Z]{3}$/, 'an ISO 4217 code in capitals, e.g. USD').meta({ description: 'ISO 4217 currency code.' });
const metadata = z
  .record(z.string().min(1).max(64), z.union([z.string().max(1024), z.number(), z.boolean(), z.null()]))
  .refine((m) => Object.keys(m).length <= 50, 'at most 50 keys')
  .meta({ description: 'Free-form labels: up to 50 keys, string, number, boolean or null values.' });
const positiveInt = z.number().int().min(1).max(1_000_000_000);
const jsonObject = z.record(z.string(), z.unknown());

/** A PATCH body must name at least one field. */
const patch = <T extends z.ZodRawShape>(shape: T) =>
  z.strictObject(shape).refine((body) => Object.values(body).some((v) => v !== undefined), 'name at least one field to change');

// --- customers, teams

export const customerCreate = z.strictObject({
  name,
  external_ref: z.string().min(1).max(128).optional().meta({ description: 'Your own id of the customer; unique per tenant.' }),
  metadata: metadata.optional(),
});
export const customerUpdate = patch({ name: name.optional(), external_ref: z.string().min(1).max(128).nullable().optional(), metadata: metadata.optional() });

export const teamCreate = z.strictObject({ customer_id: ref('customer'), name, metadata: metadata.optional() });
export const teamUpdate = patch({ name: name.optional(), metadata: metadata.optional() });

// --- products, agents, apps

export const productCreate = z.strictObject({ name, kind: z.enum(PRODUCT_KINDS) });
export const productUpdate = patch({ name: name.optional(), kind: z.enum(PRODUCT_KINDS).optional() });

const agentLimits = {
  max_concurrent_sessions: positiveInt.nullable().optional().meta({ description: 'Sessions the agent may hold open at once; null for no limit.' }),
  rate_limit_per_minute: positiveInt.nullable().optional().meta({ description: 'Events per minute the agent may send; null for no limit.' }),
};
export const agentCreate = z.strictObject({
  team_id: ref('team'),
  product_id: ref('product').optional(),
  name,
  agent_type: z.enum(AGENT_TYPES),
  ...agentLimits,
  metadata: metadata.optional(),
});
export const agentUpdate = patch({
  team_id: ref('team (of the same customer)').optional(),
  product_id: ref('product').nullable().optional(),
  name: name.optional(),
  agent_type: z.enum(AGENT_TYPES).optional(),
  ...agentLimits,
  metadata: metadata.optional(),
});

export const appCreate = z.strictObject({ team_id: ref('team'), product_id: ref('product').optional(), name, metadata: metadata.optional() });
export const appUpdate = patch({
  team_id: ref('team (of the same customer)').optional(),
  product_id: ref('product').nullable().optional(),
  name: name.optional(),
  metadata: metadata.optional(),
});

// --- MCP servers and tools

const toolName = z.string().min(1).max(256);
const aliases = z
  .array(toolName)
  .max(50)
  .refine((list) => new Set(list).size === list.length, 'aliases must be distinct')
  .meta({ description: 'Other names the tool is invoked by (old names, versioned names); billed as the tool.' });

export const mcpServerCreate = z.strictObject({ name, product_id: ref('product').optional() });
export const mcpServerUpdate = patch({ name: name.optional(), product_id: ref('product').nullable().optional() });
export const mcpToolCreate = z.strictObject({
  name: toolName,
  aliases: aliases.optional(),
  version: z.string().min(1).max(64).optional(),
  deprecated: z.boolean().optional(),
});
export const mcpToolUpdate = patch({
  name: toolName.optional(),
  aliases: aliases.optional(),
  version: z.string().min(1).max(64).nullable().optional(),
  deprecated: z.boolean().optional(),
});

// --- credentials

const graceSeconds = z
  .number()
  .int()
  .min(0)
  .max(30 * 24 * 3600)
  .meta({ description: 'Seconds the old credential keeps working after rotation (0, the default: it stops at once). At most 30 days.' });

export const apiKeyCreate = z
  .strictObject({
    agent_id: ref('agent').optional(),
    app_id: ref('app').optional(),
    name: z.string().min(1).max(200).optional(),
    expires_at: timestamp.optional(),
  })
  .refine((body) => (body.agent_id === undefined) !== (body.app_id === undefined), {
    message: 'exactly one of agent_id or app_id is required',
    path: ['agent_id'],
  });
export const credentialRotate = z.strictObject({ grace_seconds: graceSeconds.optional() });
export const clientCredentialCreate = z.strictObject({ agent_id: ref('agent'), expires_at: timestamp.optional() });

// --- rate plans

/**
 * A rate plan's pricing: checked by validateRatePlan in the handler (for its JSON-path problems),
 * documented in the OpenAPI document as the rate plan schema itself.
 */
export const pricingField = z
  .record(z.string(), z.unknown())
  .meta({ description: "The rate plan's dimension pricing, as it is or wrapped as the article writes it: {\"dimensionPricing\": {...}}." });
const pricing = pricingField;
export const ratePlanCreate = z.strictObject({ name, currency, pricing });
export const ratePlanUpdate = patch({ name: name.optional() });
export const ratePlanVersionCreate = z.strictObject({ pricing });

// --- subscriptions

const subscriptionTerms = {
  overrides: jsonObject.optional().meta({ description: "Customer-specific changes to the plan's pricing." }),
  commitment: jsonObject.nullable().optional().meta({ description: 'Committed spend of this subscription.' }),
  allocation: jsonObject.nullable().optional().meta({ description: 'Per-agent allocation of the commitment.' }),
};
export const subscriptionCreate = z
  .strictObject({
    customer_id: ref('customer'),
    team_id: ref('team').optional(),
    agent_id: ref('agent').optional(),
    app_id: ref('app').optional(),
    rate_plan_id: ref('rate plan'),
    rate_plan_version: positiveInt.optional().meta({ description: 'Version of the plan; the latest when omitted.' }),
    effective_from: timestamp,
    effective_to: timestamp.optional(),
    billing_period: z
      .enum(['calendar_month', 'anniversary'])
      .optional()
      .meta({ description: 'calendar_month (UTC, the default) or anniversary: monthly periods counted from effective_from. A change keeps it.' }),
    ...subscriptionTerms,
  })
  .refine((s) => [s.team_id, s.agent_id, s.app_id].filter(Boolean).length <= 1, {
    message: 'a subscription covers the customer, or one of its teams, agents or apps: give at most one of team_id, agent_id, app_id',
    path: ['team_id'],
  })
  .refine((s) => s.effective_to === undefined || Date.parse(s.effective_to) > Date.parse(s.effective_from), {
    message: 'effective_to must be after effective_from',
    path: ['effective_to'],
  });
export const subscriptionChange = z
  .strictObject({
    at: timestamp.optional().meta({ description: 'When the current subscription ends and the next begins; now when omitted. Never in the past.' }),
    rate_plan_id: ref('rate plan').optional(),
    rate_plan_version: positiveInt.optional(),
    effective_to: timestamp.nullable().optional().meta({ description: "End of the next subscription; the current one's end when omitted." }),
    ...subscriptionTerms,
  })
  .refine((s) => s.rate_plan_version === undefined || s.rate_plan_id !== undefined, {
    message: 'rate_plan_version needs rate_plan_id',
    path: ['rate_plan_version'],
  })
  .refine((s) => [s.rate_plan_id, s.overrides, s.commitment, s.allocation].some((v) => v !== undefined), {
    message: 'name what changes: rate_plan_id, overrides, commitment or allocation',
  });
export const subscriptionEnd = z.strictObject({
  at: timestamp.optional().meta({ description: 'When the subscription ends; now when omitted. Never in the past.' }),
});

// --- spend caps and cost models

export const spendCapCreate = z
  .strictObject({
    scope_kind: z.enum(CAP_SCOPES),
    scope_id: ref(
      'API key or client credential, app, agent, team or customer (its id), session (the session_id), or rate plan (plan: a cap on each session of every customer on it)',
    ),
    period: z.enum(CAP_PERIODS).meta({
      description: 'session (each session of the scope has its own total), day, month (UTC), or rolling (the spend of the last window_seconds).',
    }),
    window_seconds: z
      .number()
      .int()
      .min(60)
      .max(MAX_WINDOW_SECONDS)
      .multipleOf(60)
      .optional()
      .meta({ description: 'period rolling only: the window, in seconds (whole minutes, 60 to 2678400 = 31 days), e.g. 3600 for the last hour.' }),
    limit: decimalAmount({ positive: true }),
    action: z
      .enum(CAP_ACTIONS)
      .optional()
      .meta({ description: 'pause (the default): a hard cap, the scope is stopped when it is crossed; alert: a soft cap, counted and reported, never stops.' }),
  })
  .superRefine((cap, ctx) => {
    if (cap.period === 'rolling' && cap.window_seconds === undefined) {
      ctx.addIssue({ code: 'custom', path: ['window_seconds'], message: 'period rolling needs window_seconds' });
    }
    if (cap.period !== 'rolling' && cap.window_seconds !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['window_seconds'], message: 'window_seconds goes only with period rolling' });
    }
    if (cap.scope_kind === 'plan' && cap.period !== 'session') {
      ctx.addIssue({ code: 'custom', path: ['period'], message: 'a plan cap is per session: each session of the plan has its own total' });
    }
  });
export const spendCapUpdate = patch({
  limit: decimalAmount({ positive: true }).optional(),
  action: z.enum(CAP_ACTIONS).optional(),
  status: z.enum(['active', 'disabled']).optional(),
});

export const costModelCreate = z.strictObject({
  name,
  currency,
  model: costModelSchema,
  effective_from: timestamp.optional().meta({ description: 'From when the model applies; always, when omitted.' }),
});
export const costModelUpdate = patch({ name: name.optional(), model: costModelSchema.optional(), effective_from: timestamp.optional() });

// --- webhooks and alerts

const webhookUrl = z.string().min(1).max(2048).meta({ description: 'Where deliveries are POSTed: http or https.' });
const webhookEventTypes = z
  .array(z.enum(WEBHOOK_EVENT_TYPES))
  .min(1)
  .max(WEBHOOK_EVENT_TYPES.length)
  .refine((list) => new Set(list).size === list.length, 'event types must be distinct')
  .meta({ description: 'The event types sent to this endpoint.' });
const webhookDescription = z.string().max(500).meta({ description: 'Free text for people.' });

export const webhookEndpointCreate = z.strictObject({ url: webhookUrl, event_types: webhookEventTypes, description: webhookDescription.optional() });
export const webhookEndpointUpdate = patch({
  url: webhookUrl.optional(),
  event_types: webhookEventTypes.optional(),
  description: webhookDescription.nullable().optional(),
  status: z.enum(['enabled', 'disabled']).optional().meta({ description: 'enabled again clears the failure record of an endpoint disabled for failing.' }),
});
export const webhookSecretRotate = z.strictObject({
  grace_seconds: graceSeconds
    .optional()
    .meta({ description: 'Seconds deliveries are signed with the old secret too (two signatures in webhook-signature). 0, the default: the old secret stops at once.' }),
});
export const webhookDeliveryStatus = z.enum(['pending', 'succeeded', 'failed']);

/** Whether a JSON number has at most `places` decimals (it is stored scaled to an integer, never rounded silently). */
const hasDecimalPlaces = (n: number, places: number) => Math.abs(n * 10 ** places - Math.round(n * 10 ** places)) < 1e-9;

/** Percent of a cap's limit, up to two decimals: more than 0, at most 1000. */
const thresholdPercent = z
  .number()
  .gt(0)
  .max(1000)
  .refine((n) => hasDecimalPlaces(n, 2), 'at most two decimal places');
export const alertSettingsUpdate = patch({
  threshold_percents: z
    .array(thresholdPercent)
    .max(10)
    .refine((list) => new Set(list).size === list.length, 'thresholds must be distinct')
    .optional()
    .meta({ description: 'Alert when a cap reaches these percents of its limit (default 50, 80, 100); [] for none.' }),
  velocity_factor: z
    .number()
    .min(1)
    .max(1000)
    .refine((n) => hasDecimalPlaces(n, 3), 'at most three decimal places')
    .optional()
    .meta({ description: 'Alert when the last hour of spend exceeds this many times the trailing 7-day hourly average (default 3).' }),
  velocity_min_amount: decimalAmount({ positive: true, maxNano: MAX_BIGINT })
    .optional()
    .meta({ description: 'A velocity alert needs at least this much spend in the hour (default 10), so tiny tenants do not page.' }),
  projection_horizon_seconds: z
    .number()
    .int()
    .min(60)
    .max(7 * 86_400)
    .optional()
    .meta({ description: "A session is projected this far ahead at its rate so far (default 3600); past a session cap's limit: an alert." }),
});

export const tenantTokenRotate = z.strictObject({ kind: z.enum(['ingest', 'admin']), grace_seconds: graceSeconds.optional() });

// --- list filters

export const activeStatus = z.enum(['active', 'suspended']);

// --- responses

const out = {
  id: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
};
const nullableString = z.string().nullable();

export const customerOut = z.object({ ...out, name: z.string(), external_ref: nullableString, status: activeStatus, metadata: jsonObject });
export const teamOut = z.object({ ...out, customer_id: z.string(), name: z.string(), metadata: jsonObject });
export const productOut = z.object({ ...out, name: z.string(), kind: z.enum(PRODUCT_KINDS) });
export const agentOut = z.object({
  ...out,
  team_id: z.string(),
  product_id: nullableString,
  name: z.string(),
  agent_type: z.enum(AGENT_TYPES),
  max_concurrent_sessions: z.number().nullable(),
  rate_limit_per_minute: z.number().nullable(),
  status: activeStatus,
  metadata: jsonObject,
});
export const appOut = z.object({ ...out, team_id: z.string(), product_id: nullableString, name: z.string(), status: activeStatus, metadata: jsonObject });
export const mcpServerOut = z.object({ ...out, name: z.string(), product_id: nullableString });
export const mcpToolOut = z.object({
  ...out,
  mcp_server_id: z.string(),
  name: z.string(),
  aliases: z.array(z.string()),
  version: nullableString,
  deprecated: z.boolean(),
});

export const credentialStatus = z
  .enum(['active', 'expired', 'revoked'])
  .meta({ description: 'active: it authenticates; expired: its expires_at (or rotation grace) has passed; revoked.' });
const credentialOut = {
  id: z.string(),
  prefix: z.string().meta({ description: 'The first characters of the secret, to tell credentials apart.' }),
  last4: z.string(),
  status: credentialStatus,
  expires_at: nullableString,
  rotated_from: nullableString,
  created_at: z.string(),
  revoked_at: nullableString,
};
export const apiKeyOut = z.object({ ...credentialOut, agent_id: nullableString, app_id: nullableString, name: nullableString });
export const apiKeyIssued = apiKeyOut.extend({
  key: z.string().meta({ description: 'The raw API key. Shown this once: only its hash is stored.' }),
});
export const apiKeyRotated = apiKeyIssued.extend({ previous: apiKeyOut });
export const clientCredentialOut = z.object({ ...credentialOut, agent_id: z.string(), client_id: z.string() });
export const clientCredentialIssued = clientCredentialOut.extend({
  client_secret: z.string().meta({ description: 'The raw client secret. Shown this once: only its hash is stored.' }),
});
export const clientCredentialRotated = clientCredentialIssued.extend({ previous: clientCredentialOut });

export const ratePlanVersionOut = z.object({
  id: z.string(),
  rate_plan_id: z.string(),
  version: z.number(),
  pricing: jsonObject,
  created_at: z.string(),
});
export const ratePlanOut = z.object({ ...out, name: z.string(), currency: z.string(), latest_version: z.number() });
const pricingWarnings = z
  .array(z.object({ path: z.string(), message: z.string() }))
  .meta({ description: 'What validation noticed without refusing the pricing (a bounded last duration bucket prices longer calls too), by path.' });
export const ratePlanCreated = ratePlanOut.extend({ version: ratePlanVersionOut, warnings: pricingWarnings });
export const ratePlanVersionCreated = ratePlanVersionOut.extend({ warnings: pricingWarnings });

export const subscriptionOut = z.object({
  id: z.string(),
  customer_id: z.string(),
  team_id: nullableString,
  agent_id: nullableString,
  app_id: nullableString,
  rate_plan_id: z.string(),
  rate_plan_version: z.number(),
  rate_plan_version_id: z.string(),
  currency: z.string(),
  effective_from: z.string(),
  effective_to: nullableString,
  overrides: jsonObject,
  commitment: jsonObject.nullable(),
  allocation: jsonObject.nullable(),
  supersedes: nullableString,
  billing_period: z.enum(['calendar_month', 'anniversary']),
  billing_anchor: z.string().meta({ description: 'Where anniversary periods are counted from.' }),
  created_at: z.string(),
});
export const subscriptionChanged = z.object({ closed: subscriptionOut, opened: subscriptionOut });

export const spendCapOut = z.object({
  ...out,
  scope_kind: z.enum(CAP_SCOPES),
  scope_id: z.string(),
  period: z.enum(CAP_PERIODS),
  window_seconds: z.number().nullable().meta({ description: 'period rolling: the window in seconds; null otherwise.' }),
  limit: z.string().meta({ description: 'Decimal amount in the major unit of the currency.' }),
  action: z.enum(CAP_ACTIONS),
  status: z.enum(['active', 'disabled']),
});
export const costModelOut = z.object({ ...out, name: z.string(), currency: z.string(), model: jsonObject, effective_from: nullableString });

export const tenantTokenRotated = z.object({
  kind: z.enum(['ingest', 'admin']),
  token: z.string().meta({ description: 'The new bearer token. Shown this once.' }),
  retired_token_ids: z.array(z.string()),
});

export const webhookEndpointOut = z.object({
  ...out,
  url: z.string(),
  description: nullableString,
  event_types: z.array(z.enum(WEBHOOK_EVENT_TYPES)),
  status: z.enum(['enabled', 'disabled']),
  disabled_reason: nullableString,
  secret_prefix: z.string().meta({ description: 'The first characters of the signing secret, to tell secrets apart.' }),
  failing_since: nullableString.meta({ description: 'First failed attempt since the last success.' }),
});
export const webhookEndpointWithSecret = webhookEndpointOut.extend({
  secret: z.string().meta({ description: 'The signing secret (whsec_...), Standard Webhooks format. Shown this once.' }),
});
const webhookAttemptOut = z.object({
  attempt: z.number(),
  started_at: z.string(),
  duration_ms: z.number(),
  response_status: z.number().nullable(),
  error: nullableString,
  succeeded: z.boolean(),
});
export const webhookDeliveryOut = z.object({
  id: z.string(),
  endpoint_id: z.string(),
  event_id: z.string().meta({ description: 'The webhook-id header: the same on every attempt.' }),
  event_type: z.enum(WEBHOOK_EVENT_TYPES),
  status: webhookDeliveryStatus,
  attempts: z.number(),
  next_attempt_at: nullableString,
  last_error: nullableString,
  created_at: z.string(),
  completed_at: nullableString,
});
export const webhookDeliveryDetail = webhookDeliveryOut.extend({
  payload: jsonObject.meta({ description: 'The body delivered.' }),
  attempt_log: z.array(webhookAttemptOut),
});
export const alertSettingsOut = z.object({
  threshold_percents: z.array(z.number()),
  velocity_factor: z.number(),
  velocity_min_amount: z.string(),
  projection_horizon_seconds: z.number(),
});

export const errorOut = z.object({
  error: z.object({
    code: z.string().meta({ description: 'Machine-readable: validation_failed, invalid_json, not_found, conflict, subscription_overlap, ...' }),
    message: z.string(),
    details: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  }),
});

export function pageOf(item: z.ZodType) {
  return z.object({ data: z.array(item), next_cursor: z.string().nullable() });
}

export const pauseLift = z.strictObject({
  cap_id: ref('spend cap that paused the scope'),
  scope_id: ref('paused scope (the session_id for a session)'),
  period_key: z.string().min(1).max(200).meta({ description: 'The period of the pause, as listed (e.g. 2026-11, 2026-11-30, s:<session>).' }),
  reason: z.string().trim().min(1).max(500).optional().meta({ description: 'Why it is lifted; kept on the pause record.' }),
});
export const pauseLifted = z.object({
  scope_kind: z.string(),
  scope_id: z.string(),
  flag_deleted: z.boolean().meta({ description: 'A flag was in force and is gone: authorize allows the scope at once.' }),
  records_lifted: z.number().meta({ description: 'Pause records of the scope marked lifted (several caps may have paused it).' }),
  lifted_at: z.string(),
  lifted_by_token_id: z.string().meta({ description: 'The admin token that lifted it (the id of the token making this call), kept on the pause records.' }),
});
const pauseOut = z.object({
  cap_id: z.string(),
  scope_kind: z.string(),
  scope_id: z.string(),
  period_key: z.string(),
  limit: z.string(),
  event_id: z.string().meta({ description: 'The event whose cost crossed the cap.' }),
  paused_at: z.string(),
  period_ends_at: nullableString,
  lifted_at: nullableString,
  lifted_by: z.enum(['admin', 'cap_raised', 'cap_disabled', 'period_rollover']).nullable(),
  lifted_by_token_id: nullableString.meta({ description: 'With lifted_by admin: the id of the admin token that lifted it.' }),
  lift_reason: nullableString,
});
export const pauseList = z.object({ data: z.array(pauseOut) });
