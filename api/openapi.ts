import { Hono } from 'hono';
import { z } from 'zod';
import { usageVectorSchema } from '../domain/rating/quote.js';
import { errorOut, pricingField } from '../schemas/admin.js';
import { invoiceDocumentOut } from '../schemas/billing.js';
import { authorizeBatchSchema, authorizeBodySchema, releaseBodySchema } from './authorize.js';
import { spendReply } from './spend.js';
import { cogsQuerySchema } from './cogs.js';
import { chargeOut, commitmentOut, commitmentQuery, usageSummaryOut, usageSummaryQuery } from './usage.js';
import { wireEventSchema } from '../schemas/events.js';
import { subscriptionTermsSchema } from '../domain/rating/plan-schema.js';
import { ratePlanPricingSchema } from '../domain/rating/plan.js';
import { ADMIN_BASE_PATH, adminEndpoints } from './admin/index.js';
import { WEBHOOK_EVENT_DATA } from '../schemas/webhook-events.js';
import type { Endpoint, Method } from './admin/endpoint.js';

/**
 * The OpenAPI 3.1 document, generated from the zod schemas that validate the requests: the
 * admin API from its endpoint list, the other endpoints from their wire schemas.
 */

type JsonSchema = Record<string, unknown>;

interface Operation {
  method: Method;
  /** OpenAPI path, `{name}` for parameters. */
  path: string;
  tag: string;
  summary: string;
  description?: string;
  security: 'adminToken' | 'ingestToken';
  body?: z.ZodType;
  query?: z.ZodType;
  response?: z.ZodType;
  status: number;
  /** Refusals worth naming beyond 400 and 401. */
  refusals?: Record<number, string>;
}

const eventsReply = z.object({
  accepted: z.number().int().meta({ description: 'Events written to the pipeline.' }),
  duplicates: z.array(z.object({ index: z.number().int(), event_id: z.string() })).meta({ description: 'Events whose event_id was already received.' }),
  rejected: z
    .array(z.object({ index: z.number().int(), event_id: z.string().optional(), errors: z.array(z.object({ field: z.string(), message: z.string() })) }))
    .meta({ description: 'Events refused, with every field error.' }),
});

const capStanding = z
  .object({
    cap_id: z.string(),
    scope_kind: z.string(),
    scope_id: z.string(),
    action: z.enum(['pause', 'alert']),
    period: z.string().meta({ description: 'session, day, month or rolling.' }),
    window_seconds: z.number().optional().meta({ description: 'period rolling: the window; resets_at is then when enough spend has left it for what was asked to fit.' }),
    period_key: z.string(),
    spent: z.string(),
    reserved: z.string(),
    limit: z.string(),
    remaining: z.string(),
    resets_at: z.string(),
  })
  .meta({ description: 'A cap in its current period: decimal amounts in the currency; remaining = limit - spent - reserved, at least 0.' });

const authorizeReply = z.object({
  allowed: z.boolean(),
  code: z
    .string()
    .optional()
    .meta({
      description:
        'Why not: unknown_credential, revoked, expired, suspended, invalid_client_secret, paused, rate_limited, too_many_sessions or insufficient_budget.',
    }),
  reason: z.string().optional(),
  cap: capStanding.optional().meta({ description: 'The cap that refused the call (paused, insufficient_budget).' }),
  pause: z.looseObject({}).optional().meta({ description: 'The pause flag that stopped the caller (code paused).' }),
  retry_after_ms: z.number().optional().meta({ description: 'rate_limited: when a slot of the minute window frees.' }),
  remaining: z.string().optional().meta({ description: 'The least any hard cap on the caller leaves this period.' }),
  caps: z.array(capStanding).optional().meta({ description: 'Every cap on the caller: API key, agent or app, team, customer, session.' }),
  rate_limit: z.object({ limit: z.number(), used: z.number() }).optional().meta({ description: "The agent's rate_limit_per_minute and calls in the last minute." }),
  sessions: z.object({ max: z.number(), active: z.number() }).optional().meta({ description: "The agent's max_concurrent_sessions and sessions active." }),
  reservation: z
    .object({ id: z.string(), amount: z.string(), expires_at: z.string() })
    .optional()
    .meta({ description: 'estimated_cost reserved against every hard cap until the event (event_id) is counted, or until expires_at.' }),
  attribution: z
    .object({ customer_id: z.string(), team_id: z.string(), agent_id: z.string().optional(), app_id: z.string().optional() })
    .optional(),
});

const quoteRequest = z.strictObject({
  plan: z
    .looseObject({ currency: z.string().regex(/^[A-Z]{3}$/), version: z.number().int().min(1).optional(), ...ratePlanPricingSchema.shape })
    .meta({
      description:
        'The pricing JSON of a rate plan with its currency (see POST /v1/admin/rate-plans); the pricing may also be wrapped: { currency, dimensionPricing: {...} }. The reply lists the warnings of the plan (a bounded last duration bucket) by path.',
    }),
  usage: usageVectorSchema,
  terms: subscriptionTermsSchema.optional(),
});

const invoiceLike = z.looseObject({}).meta({
  description:
    'Invoice lines, each with the rule that produced it, exact and rounded amounts as decimal strings, subtotal and total; `warnings`: what validation noticed in the plan without refusing it (a bounded last duration bucket), by path.',
});

const currentInvoice = z.looseObject({
  customer_id: z.string(),
  status: z.literal('draft'),
  period_start: z.string(),
  period_end: z.string(),
  subscription_ids: z.array(z.string()),
  pending_adjustments: z.array(z.looseObject({})).meta({ description: 'What the next close would bill for earlier closed periods that changed (late events, corrections).' }),
});

/** The endpoints outside the admin API, served by other modules. */
const PUBLIC_OPERATIONS: Operation[] = [
  {
    method: 'post',
    path: '/v1/events',
    tag: 'Usage events',
    summary: 'Send usage events',
    description:
      'One event, an array, or `{ "events": [...] }`, as JSON or MessagePack; or CloudEvents 1.0 (`application/cloudevents+json`, `application/cloudevents-batch+json`: id, type, time, apikey/clientid/subject, data), all or nothing with 400 and JSON paths. Each event carries an event_id (idempotency key) and exactly one of api_key or client_id. Answers 202 with counts and every refused event with its field paths; 400 `validation_failed` with that same list when no event of the request could be taken (text with NUL or a lone surrogate, integers past what the ledger holds, ...); 429 with Retry-After when the pipeline is behind; 503 with Retry-After while a store is unreachable.',
    security: 'ingestToken',
    body: z.union([wireEventSchema, z.array(wireEventSchema), z.object({ events: z.array(wireEventSchema) })]),
    response: eventsReply,
    status: 202,
    refusals: { 413: 'Body too large.', 415: 'Unsupported content type.', 429: 'Backpressure: retry after Retry-After-Ms (ms; about when the queue is taken again), or Retry-After (whole seconds) for clients that read only that.', 503: 'Event store unavailable.' },
  },
  {
    method: 'post',
    path: '/v1/backfill/events',
    tag: 'Usage events',
    summary: 'Backfill events older than the ingest window (admin token)',
    description:
      'The body of POST /v1/events (up to INGEST_MAX_BATCH events), any recorded time in the past. Each event is attributed by its credential and rated by the subscription and plan version active at its recorded time; an event_id already ledgered is not billed again, so a backfill can be sent again safely. Events of a closed period are billed on the next invoice as adjustments naming their period.',
    security: 'adminToken',
    body: z.union([wireEventSchema, z.array(wireEventSchema), z.object({ events: z.array(wireEventSchema) })]),
    response: eventsReply,
    status: 202,
    refusals: { 413: 'Body too large.', 429: 'Backpressure: retry after Retry-After-Ms (ms; about when the queue is taken again), or Retry-After (whole seconds) for clients that read only that.', 503: 'Event store unavailable.' },
  },
  {
    method: 'post',
    path: '/v1/authorize',
    tag: 'Authorize',
    summary: 'Check a credential before acting',
    description:
      'The enforcement point, one Redis round trip (a busy caller is answered from the admissions its last round trip granted ahead, for at most 100 ms: counted in its rate window and sessions at once, dropped the moment a pause flag of the caller is set; the spent and reserved such an answer reports are then at most 100 ms old): pause flags of the API key, agent or app, team, customer and session; rate_limit_per_minute (sliding minute) and max_concurrent_sessions; with estimated_cost, every hard cap must have room for it (then it is reserved until the event with event_id is counted, or expires). Always 200 with allowed and, when refused, the code, the reason and the cap (spent, limit, resets_at). Revocations, rotations, suspensions, pauses and lifts take effect here within a second.',
    security: 'ingestToken',
    body: authorizeBodySchema,
    response: authorizeReply,
    status: 200,
  },
  {
    method: 'post',
    path: '/v1/authorize/batch',
    tag: 'Authorize',
    summary: 'Check up to 100 callers at once (gateways)',
    description: 'Each request is decided as by POST /v1/authorize; the results come in the same order. One Redis round trip per customer partition, sent together.',
    security: 'ingestToken',
    body: authorizeBatchSchema,
    response: z.object({ results: z.array(authorizeReply) }),
    status: 200,
  },
  {
    method: 'post',
    path: '/v1/authorize/reservations/{id}/release',
    tag: 'Authorize',
    summary: 'Release a reservation before its event comes',
    description:
      'The call that reserved estimated_cost was cancelled or will not be metered: its amount stops counting against every cap it was held on, at once. Named by the reservation id authorize returned (the event_id given, or rsv_...) and the same credential and session_id; idempotent (released false when nothing is left: already released, settled by its event, or expired).',
    security: 'ingestToken',
    body: releaseBodySchema,
    response: z.object({ id: z.string(), released: z.boolean(), caps_released: z.number().int().meta({ description: 'The caps that held it.' }) }),
    status: 200,
    refusals: { 400: 'Malformed id or body (validation_failed, with the path).', 403: 'The credential does not resolve in this tenant (unknown_credential, revoked, ...) or its client_secret does not match.' },
  },
  {
    method: 'post',
    path: '/v1/rate-plans/quote',
    tag: 'Quotes',
    summary: 'Price a usage vector with a rate plan',
    security: 'ingestToken',
    description: 'Pure computation with the engine that bills; nothing is stored.',
    body: quoteRequest,
    response: invoiceLike,
    status: 200,
  },
  {
    method: 'get',
    path: '/v1/customers/{id}/invoices/current',
    tag: 'Invoices',
    summary: "A customer's draft invoice of the current period, so far",
    security: 'ingestToken',
    query: z.strictObject({ at: z.iso.datetime({ offset: true }).optional().meta({ description: 'A time in the period wanted; now by default.' }) }),
    response: currentInvoice,
    status: 200,
    refusals: { 404: 'No such customer of this tenant (not_found), or no subscription in the period (no_subscription).' },
  },
  ...(['agents', 'teams', 'customers'] as const).map(
    (scope): Operation => ({
      method: 'get',
      path: `/v1/spend/${scope}/{id}`,
      tag: 'Spend',
      summary: `Where the money of ${scope === 'agents' ? 'an agent' : scope === 'teams' ? 'a team' : 'a customer'} is going, live`,
      description:
        'This calendar month (UTC): ledgered spend by pricing dimension and by tool, the end of period projected from the recent rate, every cap on the scope with spent / limit / remaining (the running total authorize and cap-check enforce), and the open sessions with their live cost.',
      security: 'ingestToken',
      response: spendReply,
      status: 200,
      refusals: { 404: 'No such agent, team or customer of this tenant.' },
    }),
  ),
  {
    method: 'get',
    path: '/v1/customers/{id}/invoices',
    tag: 'Invoices',
    summary: "A customer's closed invoices and credit notes, newest first",
    description: 'Invoices are frozen when their billing period closes (its end plus the grace); credit notes correct a closed period.',
    security: 'ingestToken',
    query: z.strictObject({ limit: z.string().optional().meta({ description: '1 to 200, default 50.' }), cursor: z.string().optional() }),
    response: z.object({ data: z.array(z.looseObject({ id: z.string(), kind: z.string(), number: z.string(), total: z.string() })), next_cursor: z.string().nullable() }),
    status: 200,
    refusals: { 404: 'No such customer of this tenant.' },
  },
  {
    method: 'get',
    path: '/v1/customers/{id}/invoices/{invoice}',
    tag: 'Invoices',
    summary: 'One closed invoice or credit note (by id or number), as frozen',
    description:
      'Number, issue date, lines with step and rule (adjustment lines name the period and invoice they belong to), totals, currency, the plan versions used, credits applied and the amount due.',
    security: 'ingestToken',
    response: invoiceDocumentOut,
    status: 200,
    refusals: { 404: 'No such customer or invoice of this tenant.' },
  },
  {
    method: 'get',
    path: '/v1/customers/{id}/invoices/{invoice}/download',
    tag: 'Invoices',
    summary: 'Download a closed invoice as JSON, CSV or a printable HTML page',
    security: 'ingestToken',
    query: z.strictObject({ format: z.enum(['json', 'csv', 'html']).optional().meta({ description: 'json by default.' }) }),
    status: 200,
    refusals: { 404: 'No such customer or invoice of this tenant.' },
  },
  {
    method: 'get',
    path: '/v1/cogs',
    tag: 'COGS',
    summary: 'Cost of goods and margin per tool, agent or customer',
    security: 'ingestToken',
    query: cogsQuerySchema,
    response: z.looseObject({ group_by: z.string(), from: z.string().nullable(), to: z.string().nullable(), rows: z.array(z.looseObject({})) }),
    status: 200,
  },
  {
    method: 'get',
    path: '/v1/usage/events/{event_id}/charge',
    tag: 'Usage',
    summary: 'Explain one event\'s charge',
    description:
      'The ledger row of the event, the plan version (and subscription overrides) that priced it, each dimension with the plan rule, quantity, unit price and amount, the period rules that apply on the invoice, and the spend caps it counted toward.',
    security: 'adminToken',
    response: chargeOut,
    status: 200,
    refusals: { 404: "No such event in this tenant's ledger (another tenant's events answer 404 too)." },
  },
  {
    method: 'get',
    path: '/v1/usage/summary',
    tag: 'Usage',
    summary: 'Usage by agent, app, tool, session or day',
    description:
      'Without from and to: the current billing period, from the PostgreSQL ledger (exact to the last ledgered event). With from and to (at most 367 days apart): the range, from ClickHouse. Costs are exact decimal strings; the costliest 10,000 groups (days in order).',
    security: 'adminToken',
    query: usageSummaryQuery,
    response: usageSummaryOut,
    status: 200,
    refusals: { 404: 'No such customer of this tenant.', 503: 'ClickHouse unreachable (the current period still reads from the ledger).' },
  },
  {
    method: 'get',
    path: '/v1/usage/customers/{id}/commitment',
    tag: 'Usage',
    summary: 'Spend against the commitment, projected to the period end',
    description:
      "The draft invoice so far, each commitment's calls against its committed calls (and each agent's against its allocation), and the projection to the period's end at the pace so far.",
    security: 'adminToken',
    query: commitmentQuery,
    response: commitmentOut,
    status: 200,
    refusals: { 404: 'No such customer of this tenant (not_found), or no subscription in the period (no_subscription).' },
  },
];

function adminOperation(endpoint: Endpoint): Operation {
  return {
    method: endpoint.method,
    path: ADMIN_BASE_PATH + endpoint.path.replace(/:([A-Za-z_]+)/g, '{$1}'),
    tag: endpoint.tag,
    summary: endpoint.summary,
    description: endpoint.description,
    security: 'adminToken',
    body: endpoint.body,
    query: endpoint.query,
    response: endpoint.response,
    status: endpoint.status,
    refusals: { 404: 'No such object of this tenant (another tenant\'s objects answer 404 too).', 409: 'Conflicts with the current state.' },
  };
}

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, {
    io,
    unrepresentable: 'any',
    target: 'draft-2020-12',
    override(ctx) {
      // Pricing is validated by validateRatePlan after the body parses; document what it accepts.
      if (ctx.zodSchema === pricingField) {
        for (const key of Object.keys(ctx.jsonSchema)) delete (ctx.jsonSchema as JsonSchema)[key];
        const plan = jsonSchema(ratePlanPricingSchema, 'input');
        Object.assign(ctx.jsonSchema, {
          description: 'The dimension pricing, or the same wrapped as {"dimensionPricing": {...}} (the article\'s form; stored unwrapped).',
          anyOf: [plan, { type: 'object', properties: { dimensionPricing: plan }, required: ['dimensionPricing'], additionalProperties: false }],
        });
      }
    },
  }) as JsonSchema;
  return rest;
}

function parameters(operation: Operation): JsonSchema[] {
  const inPath = [...operation.path.matchAll(/\{([A-Za-z_]+)\}/g)].map(([, name]) => ({
    name,
    in: 'path',
    required: true,
    schema: { type: 'string' },
  }));
  if (!operation.query) return inPath;
  const query = jsonSchema(operation.query, 'input') as { properties?: Record<string, JsonSchema>; required?: string[] };
  const inQuery = Object.entries(query.properties ?? {}).map(([name, schema]) => ({
    name,
    in: 'query',
    required: query.required?.includes(name) && schema.default === undefined,
    ...(typeof schema.description === 'string' ? { description: schema.description } : {}),
    schema,
  }));
  return [...inPath, ...inQuery];
}

const errorResponse = (description: string) => ({ description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } });

function operationObject(operation: Operation): JsonSchema {
  const responses: Record<string, unknown> = {
    [operation.status]: {
      description: 'Success.',
      ...(operation.response ? { content: { 'application/json': { schema: jsonSchema(operation.response, 'output') } } } : {}),
    },
    400: errorResponse('Invalid JSON, body or query: `validation_failed` or `invalid_json`, with `details` by path.'),
    401: errorResponse('Missing or wrong bearer token.'),
  };
  for (const [status, description] of Object.entries(operation.refusals ?? {})) responses[status] = errorResponse(description);
  const operationId = `${operation.method}${operation.path
    .replace(/\{([^}]+)\}/g, 'By_$1')
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((part) => part[0].toUpperCase() + part.slice(1))
    .join('')}`;
  return {
    operationId,
    tags: [operation.tag],
    summary: operation.summary,
    ...(operation.description ? { description: operation.description } : {}),
    security: [{ [operation.security]: [] }],
    parameters: parameters(operation),
    ...(operation.body ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(operation.body, 'input') } } } } : {}),
    responses,
  };
}

const WEBHOOK_HEADERS = [
  { name: 'webhook-id', description: 'The event id (msg_...): the same on every attempt; dedupe on it.' },
  { name: 'webhook-timestamp', description: 'Seconds since the epoch, per attempt; refuse ones far from now (replays).' },
  {
    name: 'webhook-signature',
    description: 'v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>" with the endpoint secret>; space-separated during a secret rotation grace.',
  },
];

/** The OpenAPI 3.1 `webhooks`: what agentmeter POSTs to an endpoint, per event type (Standard Webhooks). */
function webhooksSection(): JsonSchema {
  return Object.fromEntries(
    Object.entries(WEBHOOK_EVENT_DATA).map(([type, { description, data }]) => [
      type,
      {
        post: {
          operationId: `webhook${type.split(/[^A-Za-z]+/).map((p) => p[0].toUpperCase() + p.slice(1)).join('')}`,
          tags: ['Webhooks'],
          summary: type,
          description: `${description} Verify with any Standard Webhooks library (e.g. the standardwebhooks npm package) and the endpoint's secret. Answer 2xx within the timeout; anything else is retried with exponential backoff for 24 h.`,
          parameters: WEBHOOK_HEADERS.map((h) => ({ ...h, in: 'header', required: true, schema: { type: 'string' } })),
          requestBody: {
            required: true,
            content: {
              'application/json': {
                schema: jsonSchema(z.object({ type: z.literal(type), timestamp: z.string(), data }), 'output'),
              },
            },
          },
          responses: { '2XX': { description: 'Received: not sent again.' } },
        },
      },
    ]),
  );
}

let cached: JsonSchema | undefined;

export function openApiDocument(): JsonSchema {
  if (cached) return cached;
  const operations = [...PUBLIC_OPERATIONS, ...adminEndpoints().filter((e) => !e.hidden).map(adminOperation)];
  const paths: Record<string, Record<string, unknown>> = {};
  for (const operation of operations) {
    paths[operation.path] ??= {};
    paths[operation.path][operation.method] = operationObject(operation);
  }
  cached = {
    openapi: '3.1.0',
    info: {
      title: 'agentmeter',
      version: '0.1.0',
      description:
        'Metering, rating and billing for AI agents, agentic APIs and MCP servers. Lists take `limit` and `cursor` and answer `{ data, next_cursor }`. Every error answers `{ error: { code, message, details? } }`. Money amounts are decimal strings in the currency\'s major unit.',
    },
    servers: [{ url: '/' }],
    tags: [...new Set(operations.map((o) => o.tag))].map((name) => ({ name })),
    paths,
    webhooks: webhooksSection(),
    components: {
      securitySchemes: {
        adminToken: { type: 'http', scheme: 'bearer', description: "The tenant's admin token (amt_...)." },
        ingestToken: { type: 'http', scheme: 'bearer', description: "The tenant's ingest token (amt_...)." },
      },
      schemas: { Error: jsonSchema(errorOut, 'output') },
    },
  };
  return cached;
}

/** `GET /openapi.json`, unauthenticated. */
export function createOpenApiRoutes(): Hono {
  const app = new Hono();
  app.get('/openapi.json', (c) => c.json(openApiDocument()));
  return app;
}
