/**
 * What the proxy reads of JSON-RPC: which messages of a request body are `tools/call` requests
 * (to meter), whether it initializes a session, and what each response says about a call.
 * Pure functions over parsed JSON.
 */
import type { AuthorizeDecision, ExecutionStatus } from '@agentmeter/sdk';

export interface ToolCall {
  /** The JSON-RPC id as it was sent (number or string). */
  id: string | number;
  /** JSON of the id: the key responses are matched by (1 and "1" are different ids). */
  key: string;
  tool: string;
}

export type ClassifiedBody =
  | {
      kind: 'malformed';
      /** The JSON-RPC error code of the refusal: -32700 (not JSON) or -32600 (JSON, but no JSON-RPC message). */
      code: -32700 | -32600;
      reason: string;
    }
  | {
      kind: 'messages';
      batch: boolean;
      messages: unknown[];
      calls: ToolCall[];
      initialize: boolean;
    };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isMessage(value: unknown): value is Record<string, unknown> {
  return isRecord(value) && value.jsonrpc === '2.0' && (typeof value.method === 'string' || 'result' in value || 'error' in value);
}

function isId(value: unknown): value is string | number {
  return typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value));
}

/** Reads a POST body: one JSON-RPC message or a batch (array) of them; anything else is malformed. */
export function classifyBody(text: string): ClassifiedBody {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return { kind: 'malformed', code: -32700, reason: `not JSON: ${(err as Error).message}` };
  }
  const batch = Array.isArray(parsed);
  const messages = batch ? (parsed as unknown[]) : [parsed];
  if (messages.length === 0) return { kind: 'malformed', code: -32600, reason: 'an empty batch' };
  // One element that is not a JSON-RPC message makes the whole body malformed: a lax upstream might
  // run a `{"id":3,"method":"tools/call"}` the proxy would not have metered (the MCP SDK refuses
  // such a batch whole).
  const invalid = messages.findIndex((m) => !isMessage(m));
  if (invalid >= 0) return { kind: 'malformed', code: -32600, reason: batch ? `batch element ${invalid} is not a JSON-RPC 2.0 message` : 'no JSON-RPC 2.0 message' };
  const valid = messages as Record<string, unknown>[];
  const calls: ToolCall[] = [];
  let initialize = false;
  for (const message of valid) {
    if (message.method === 'initialize') initialize = true;
    if (message.method !== 'tools/call' || !isId(message.id)) continue;
    const params = isRecord(message.params) ? message.params : {};
    calls.push({ id: message.id, key: JSON.stringify(message.id), tool: typeof params.name === 'string' ? params.name : '' });
  }
  return { kind: 'messages', batch, messages, calls, initialize };
}

/** The key of a response message (its id), or undefined for requests and notifications. */
export function responseKey(message: unknown): string | undefined {
  if (!isRecord(message) || !isId(message.id) || typeof message.method === 'string') return undefined;
  if (!('result' in message) && !('error' in message)) return undefined;
  return JSON.stringify(message.id);
}

export interface CallOutcome {
  status: ExecutionStatus;
  errorType?: string;
  errorMessage?: string;
  inputTokens?: number;
  outputTokens?: number;
  model?: string;
}

/** What a response says about its call: a JSON-RPC error or an error result is FAILED. */
export function outcomeOf(message: Record<string, unknown>): CallOutcome {
  if ('error' in message) {
    const error = isRecord(message.error) ? message.error : {};
    return { status: 'FAILED', errorType: `jsonrpc_${String(error.code ?? 'error')}`, errorMessage: String(error.message ?? 'JSON-RPC error') };
  }
  const result = isRecord(message.result) ? message.result : {};
  const meta = isRecord(result._meta) ? result._meta : {};
  const usage = isRecord(meta['agentmeter/usage']) ? meta['agentmeter/usage'] : {};
  const count = (v: unknown) => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined);
  const outcome: CallOutcome = { status: 'SUCCESS', inputTokens: count(usage.input_tokens), outputTokens: count(usage.output_tokens) };
  if (typeof usage.model === 'string') outcome.model = usage.model;
  if (result.isError === true) {
    const content = Array.isArray(result.content) ? result.content : [];
    const text = content.find((c): c is { text: string } => isRecord(c) && c.type === 'text' && typeof c.text === 'string');
    Object.assign(outcome, { status: 'FAILED', errorType: 'tool_error', errorMessage: text?.text ?? 'error result' });
  }
  return outcome;
}

/** The answer to a refused tools/call: an MCP error result, as the wrapper gives. */
export function refusalMessage(call: ToolCall, decision: AuthorizeDecision): Record<string, unknown> {
  const code = decision.code ?? 'refused';
  const reason = decision.reason ?? code;
  return {
    jsonrpc: '2.0',
    id: call.id,
    result: {
      content: [{ type: 'text', text: `agentmeter refused ${call.tool}: ${code}: ${reason}` }],
      isError: true,
      _meta: { 'agentmeter/refusal': { code, reason } },
    },
  };
}

/**
 * The body without a leading UTF-8 byte order mark (EF BB BF), if it has one. A BOM is not part
 * of the JSON (RFC 8259 lets a parser ignore it, and the MCP SDK's TextDecoder drops it): the
 * proxy parses the body without it and forwards the body without it, so what it metered and
 * authorized is exactly what the upstream reads.
 */
export function withoutBom(body: Buffer): Buffer {
  return body.length >= 3 && body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf ? body.subarray(3) : body;
}
