import { z } from 'zod';

/**
 * The wire schema of `POST /v1/events`: the article's `mcp.tool_invoked` event and its siblings.
 * Unknown fields are refused (a misspelt `imput_tokens` must not silently bill zero); the
 * article's informational fields that the pipeline derives itself (tenant, team, customer,
 * subscription, ingest time) are accepted and ignored.
 */
export const EXECUTION_STATUSES = ['SUCCESS', 'FAILED', 'TIMEOUT', 'RATE_LIMITED'] as const;
export const AGENT_TYPES = ['CLAUDE', 'GPT', 'LANGCHAIN', 'CREWAI', 'AUTOGEN', 'CUSTOM'] as const;
export const USAGE_EVENT_TYPES = ['mcp.tool_invoked', 'agent.tool_invoked', 'api.request'] as const;
export const SESSION_EVENT_TYPES = ['session.started', 'session.paused', 'session.resumed', 'session.completed', 'session.failed'] as const;
export const EVENT_TYPES = [...USAGE_EVENT_TYPES, ...SESSION_EVENT_TYPES] as const;

export type ExecutionStatus = (typeof EXECUTION_STATUSES)[number];
export type EventType = (typeof EVENT_TYPES)[number];

const id = (max = 128) =>
  z.string().min(1).max(max).regex(/^[A-Za-z0-9_.:@\/-]+$/, 'letters, digits and _ . : @ / - only');
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

const common = {
  event_id: id(),
  api_key: z.string().min(8).max(256).optional(),
  client_id: id().optional(),
  agent_id: id().optional(),
  session_id: id().optional(),
  recorded_timestamp: z.iso.datetime({ offset: true }),
  metadata: z.record(z.string().max(64), z.union([z.string().max(256), z.number(), z.boolean(), z.null()])).optional(),
  // Informational fields of the article's event; the pipeline derives these itself.
  agent_type: z.enum(AGENT_TYPES).optional(),
  tenant_id: z.string().max(128).optional(),
  team_id: z.string().max(128).optional(),
  customer_id: z.string().max(128).optional(),
  subscription_id: z.string().max(128).optional(),
  ingest_timestamp: z.string().max(64).optional(),
};

const invocation = {
  tool_name: id(),
  mcp_server_id: id().optional(),
  execution_duration_ms: count.default(0),
  execution_status: z.enum(EXECUTION_STATUSES).default('SUCCESS'),
  input_tokens: count.default(0),
  output_tokens: count.default(0),
  model: id().optional(),
  error_type: z.string().max(128).nullable().optional(),
  error_message: z.string().max(2048).nullable().optional(),
  retry_count: count.default(0),
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
  tool_name: z.string().min(1).max(256),
  http_status: z.number().int().min(100).max(599).optional(),
});

const sessionControl = z.strictObject({
  event_type: z.enum(SESSION_EVENT_TYPES),
  ...common,
  session_id: id(),
  reason: z.string().max(512).optional(),
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

/** A credential as it travels the pipeline: never the raw key, only its hash. */
export type Credential = { kind: 'api_key'; keyHash: string } | { kind: 'client_id'; clientId: string };

/** The event as ingest writes it to the first stream. Times are epoch milliseconds. */
export interface UsageEvent {
  tenantId: string;
  eventId: string;
  eventType: EventType;
  credential: Credential;
  /** Random per accepted submission: tells a redelivery of one submission from a second submission of the same event_id. */
  ingestNonce: string;
  recordedAt: number;
  ingestedAt: number;
  reportedAgentId?: string;
  sessionId?: string;
  toolName?: string;
  mcpServerId?: string;
  model?: string;
  durationMs: number;
  status: ExecutionStatus;
  inputTokens: number;
  outputTokens: number;
  retryCount: number;
  isParallel: boolean;
  parentInvocationId?: string;
  errorType?: string;
  httpStatus?: number;
}

export function isUsageEventType(type: EventType): boolean {
  return (USAGE_EVENT_TYPES as readonly string[]).includes(type);
}
