import { z } from 'zod';
import { AGENT_TYPES, EXECUTION_STATUSES, MAX_DURATION_MS, MAX_RETRY_COUNT, MAX_TOKENS, SESSION_EVENT_TYPES } from '../domain/events.js';
import { unstorableText } from '../domain/validation.js';

/**
 * The wire schema of `POST /v1/events`: the article's `mcp.tool_invoked` event and its siblings.
 * Unknown fields are refused (a misspelt `imput_tokens` must not silently bill zero); the
 * article's informational fields that the pipeline derives itself (tenant, team, customer,
 * subscription, ingest time) are accepted and ignored.
 */
/** The ids an event carries (event_id, session_id, client_id...): also the rule of authorize's session_id and event_id. */
export const WIRE_ID = /^[A-Za-z0-9_.:@/-]+$/;
export const WIRE_ID_MESSAGE = 'letters, digits and _ . : @ / - only';
const id = (max = 128) => z.string().min(1).max(max).regex(WIRE_ID, WIRE_ID_MESSAGE);
/** Free text: anything every store can hold as it is, so no NUL and no lone UTF-16 surrogate. */
const text = (max: number) =>
  z
    .string()
    .max(max)
    .superRefine((value, ctx) => {
      const problem = unstorableText(value);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    });
const count = (max: number) => z.number().int().min(0).max(max);

const common = {
  event_id: id(),
  api_key: text(256).min(8).optional(),
  client_id: id().optional(),
  agent_id: id().optional(),
  session_id: id().optional(),
  recorded_timestamp: z.iso.datetime({ offset: true }),
  metadata: z.record(text(64), z.union([text(256), z.number(), z.boolean(), z.null()])).optional(),
  // Informational fields of the article's event; the pipeline derives these itself.
  agent_type: z.enum(AGENT_TYPES).optional(),
  tenant_id: text(128).optional(),
  team_id: text(128).optional(),
  customer_id: text(128).optional(),
  subscription_id: text(128).optional(),
  ingest_timestamp: text(64).optional(),
};

const invocation = {
  tool_name: id(),
  mcp_server_id: id().optional(),
  execution_duration_ms: count(MAX_DURATION_MS).default(0),
  execution_status: z.enum(EXECUTION_STATUSES).default('SUCCESS'),
  input_tokens: count(MAX_TOKENS).default(0),
  output_tokens: count(MAX_TOKENS).default(0),
  model: id().optional(),
  error_type: text(128).nullable().optional(),
  error_message: text(2048).nullable().optional(),
  retry_count: count(MAX_RETRY_COUNT).default(0),
  is_parallel_call: z.boolean().default(false),
  parent_tool_invocation_id: id().nullable().optional(),
};

const toolInvoked = (type: 'mcp.tool_invoked' | 'agent.tool_invoked') =>
  z.strictObject({ event_type: z.literal(type), ...common, ...invocation });

const apiRequest = z.strictObject({
  event_type: z.literal('api.request'),
  ...common,
  ...invocation,
  // An API request is priced by its endpoint; `tool_name` names it ("POST /v1/search" or "search").
  tool_name: text(256).min(1),
  http_status: z.number().int().min(100).max(599).optional(),
});

const sessionControl = z.strictObject({
  event_type: z.enum(SESSION_EVENT_TYPES),
  ...common,
  session_id: id(),
  reason: text(512).optional(),
});

export const wireEventSchema = z
  .discriminatedUnion('event_type', [toolInvoked('mcp.tool_invoked'), toolInvoked('agent.tool_invoked'), apiRequest, sessionControl])
  // Runs even when other fields failed (`when`), so a caller sees this error beside the rest, not after fixing them.
  .refine((event) => !event.api_key !== !event.client_id, {
    path: ['api_key'],
    when: (payload) => typeof payload.value === 'object' && payload.value !== null && !Array.isArray(payload.value),
    error: (issue) =>
      (issue.input as { api_key?: unknown } | undefined)?.api_key
        ? 'send either api_key or client_id, not both'
        : 'exactly one of api_key or client_id is required',
  });

export type WireEvent = z.infer<typeof wireEventSchema>;
