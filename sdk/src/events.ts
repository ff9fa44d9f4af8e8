/**
 * The events the SDK sends, in the wire form of `POST /v1/events` (snake_case, as in the API
 * reference). `event_id` and `recorded_timestamp` may be left out: the client fills them in
 * when the event is tracked (a time-ordered id and the current time).
 */
export type ExecutionStatus = 'SUCCESS' | 'FAILED' | 'TIMEOUT' | 'RATE_LIMITED';
export type ToolEventType = 'mcp.tool_invoked' | 'agent.tool_invoked' | 'api.request';
export type SessionEventType = 'session.started' | 'session.paused' | 'session.resumed' | 'session.completed' | 'session.failed';

/** Exactly one of api_key (the raw key the agent or app presents) or client_id. */
export type CredentialFields = { api_key: string; client_id?: never } | { client_id: string; api_key?: never };

interface CommonFields {
  event_id?: string;
  /** ISO 8601 with an offset, or a Date; now when left out. */
  recorded_timestamp?: string | Date;
  agent_id?: string;
  session_id?: string;
  metadata?: Record<string, string | number | boolean | null>;
}

export interface ToolCallFields {
  event_type: ToolEventType;
  tool_name: string;
  mcp_server_id?: string;
  execution_duration_ms?: number;
  execution_status?: ExecutionStatus;
  input_tokens?: number;
  output_tokens?: number;
  model?: string;
  error_type?: string | null;
  error_message?: string | null;
  retry_count?: number;
  is_parallel_call?: boolean;
  parent_tool_invocation_id?: string | null;
  /** api.request only. */
  http_status?: number;
}

export interface SessionFields {
  event_type: SessionEventType;
  session_id: string;
  reason?: string;
}

export type MeterEvent = CommonFields & CredentialFields & (ToolCallFields | SessionFields);

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** An event as it is sent: id and time filled in. */
export type WireEvent = DistributiveOmit<MeterEvent, 'event_id' | 'recorded_timestamp'> & { event_id: string; recorded_timestamp: string };

/** A credential, as the MCP wrapper and the proxy carry it. */
export type Credential = { apiKey: string } | { clientId: string; clientSecret?: string };

export function credentialFields(credential: Credential): CredentialFields {
  return 'apiKey' in credential ? { api_key: credential.apiKey } : { client_id: credential.clientId };
}
