/**
 * Metering for MCP servers built on the official `@modelcontextprotocol/sdk` (1.32.x):
 *
 *   const meter = new AgentMeter({ baseUrl, ingestToken });
 *   const server = new McpServer({ name: 'docs', version: '1.0.0' });
 *   server.registerTool(...);
 *   meterMcpServer(server, { meter });
 *   await server.connect(transport);
 *
 * Every `tools/call` is first authorized (`POST /v1/authorize`, cached about a second); a
 * refused caller (paused by a spend cap, revoked, suspended...) gets an MCP error result and the
 * tool does not run. A call that runs becomes one `mcp.tool_invoked` event: tool name (and
 * version), duration, status (an error result or a throw: FAILED; past `timeoutMs`: TIMEOUT),
 * the MCP session id as `session_id`, tokens when the handler reports them, and the credential
 * of the request. The session's `initialize` tracks `session.started`; the transport closing
 * (an HTTP DELETE, stdio ending, `server.close()`, `meter.close()`) tracks `session.completed`.
 */
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { Server } from '@modelcontextprotocol/sdk/server/index.js';
import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js';
import type { CallToolResult, JSONRPCRequest, ServerNotification, ServerRequest } from '@modelcontextprotocol/sdk/types.js';
import type { AuthorizeDecision } from './authorize.js';
import type { AgentMeter } from './client.js';
import { credentialFields, type Credential, type ExecutionStatus } from './events.js';
import { EventIdGenerator } from './ids.js';

export type ToolExtra = RequestHandlerExtra<ServerRequest, ServerNotification>;

/** Usage a tool reports: by `reportUsage(extra, ...)` or in its result's `_meta["agentmeter/usage"]`. */
export interface ToolUsage {
  input_tokens?: number;
  output_tokens?: number;
  model?: string;
}

/** The `_meta` key of a result that carries ToolUsage; removed before the result reaches the client. */
export const USAGE_META_KEY = 'agentmeter/usage';
/** The `_meta` key of a refusal result: `{ code, reason }`. */
export const REFUSAL_META_KEY = 'agentmeter/refusal';

export interface MeterMcpOptions {
  meter: AgentMeter;
  /** agentmeter's id of this MCP server (its tool aliases apply). */
  mcpServerId?: string;
  /** Default `mcp.tool_invoked`. */
  eventType?: 'mcp.tool_invoked' | 'agent.tool_invoked';
  /** Versions billed as `name@version` (a rate plan may price a version on its own). */
  toolVersions?: Record<string, string> | ((tool: string) => string | undefined);
  /**
   * Who is calling. A credential (stdio: e.g. from an environment variable), or a function of the
   * request. Default: the `x-api-key` header; else the OAuth client of a validated token
   * (`authInfo.clientId`, as client_id); else an `Authorization: Bearer` token as the API key.
   */
  credential?: Credential | ((extra: ToolExtra) => Credential | undefined);
  /** Ask authorize before each call. Default true. Without a credential a call is then refused. */
  authorize?: boolean;
  /** A call still running after this long answers a TIMEOUT error result (ms; per tool with an object). */
  timeoutMs?: number | Record<string, number>;
  /** Track session.started / session.completed. Default true. */
  sessionEvents?: boolean;
  /** Called when a call is refused (after the error result is made). */
  onRefused?: (tool: string, decision: AuthorizeDecision) => void;
}

export interface MeteredServer {
  /** The MCP session of the connection now served (a made-up `mcp_...` id on stdio), if any. */
  sessionId(): string | undefined;
}

type RawHandler = (request: JSONRPCRequest, extra: ToolExtra) => Promise<unknown>;

const usageReports = new WeakMap<object, ToolUsage>();
const sessionIds = new EventIdGenerator('mcp_');

/** Called from a tool handler: adds tokens (and the model) to this call's event. */
export function reportUsage(extra: ToolExtra, usage: ToolUsage): void {
  const current = usageReports.get(extra) ?? {};
  usageReports.set(extra, {
    input_tokens: (current.input_tokens ?? 0) + (usage.input_tokens ?? 0),
    output_tokens: (current.output_tokens ?? 0) + (usage.output_tokens ?? 0),
    model: usage.model ?? current.model,
  });
}

/** The credential of a request by the default rule (see MeterMcpOptions.credential). */
export function credentialFromRequest(extra: Pick<ToolExtra, 'authInfo' | 'requestInfo'>): Credential | undefined {
  const headers = extra.requestInfo?.headers ?? {};
  const header = (name: string) => {
    const value = headers[name];
    return Array.isArray(value) ? value[0] : value;
  };
  const apiKey = header('x-api-key');
  if (apiKey) return { apiKey };
  if (extra.authInfo?.clientId) return { clientId: extra.authInfo.clientId };
  const bearer = /^Bearer\s+(\S+)$/i.exec(header('authorization') ?? '');
  return bearer ? { apiKey: bearer[1] } : undefined;
}

/** Meters every tools/call of this server (McpServer or the low-level Server); call once per server instance. */
export function meterMcpServer(server: McpServer | Server, options: MeterMcpOptions): MeteredServer {
  const low: Server = 'server' in server ? server.server : server;
  const { meter } = options;
  const eventType = options.eventType ?? 'mcp.tool_invoked';
  const authorizeCalls = options.authorize !== false;
  const sessionEvents = options.sessionEvents !== false;

  interface Connection {
    sessionId?: string;
    credential?: Credential;
    startedAt: number;
    startTracked: boolean;
    ended: boolean;
  }
  let connection: Connection | undefined;
  let stopWatchingClose: (() => void) | undefined;

  const resolveCredential = (extra: ToolExtra): Credential | undefined => {
    if (typeof options.credential === 'function') return options.credential(extra);
    return options.credential ?? credentialFromRequest(extra);
  };

  const trackSession = (state: Connection, type: 'session.started' | 'session.completed', at: number) => {
    if (!sessionEvents || !state.sessionId || !state.credential) return;
    void meter
      .track({ event_type: type, session_id: state.sessionId, recorded_timestamp: new Date(at), ...credentialFields(state.credential) })
      .catch(() => {});
  };

  const startIfDue = (state: Connection) => {
    if (state.startTracked || !state.credential) return;
    state.startTracked = true;
    trackSession(state, 'session.started', state.startedAt);
  };

  const endConnection = () => {
    const state = connection;
    connection = undefined;
    stopWatchingClose?.();
    stopWatchingClose = undefined;
    if (!state || state.ended) return;
    state.ended = true;
    if (state.startTracked) trackSession(state, 'session.completed', Date.now());
  };

  const onInitialize = (original: RawHandler): RawHandler => async (request, extra) => {
    const result = await original(request, extra);
    // A transport without sessions over HTTP (stateless) has no session to track; stdio and
    // in-memory transports (no HTTP request) get a made-up id for the life of the connection.
    const sessionId = extra.sessionId ?? (extra.requestInfo ? undefined : sessionIds.next());
    connection = { sessionId, credential: resolveCredential(extra), startedAt: Date.now(), startTracked: false, ended: false };
    stopWatchingClose ??= meter.onClose(endConnection);
    startIfDue(connection);
    return result;
  };

  const onToolCall = (original: RawHandler): RawHandler => async (request, extra) => {
    const params = (request.params ?? {}) as { name?: unknown };
    const tool = typeof params.name === 'string' ? params.name : '';
    const state = connection;
    const credential = resolveCredential(extra) ?? state?.credential;
    const sessionId = extra.sessionId ?? state?.sessionId;

    if (authorizeCalls) {
      const decision: AuthorizeDecision = credential
        ? await meter.authorize({ ...credential, ...(sessionId ? { sessionId } : {}), tool })
        : { allowed: false, code: 'no_credential', reason: 'the request carries no credential (x-api-key, or Authorization: Bearer)', source: 'api' };
      if (!decision.allowed) {
        options.onRefused?.(tool, decision);
        return refusal(tool, decision);
      }
    }
    if (state && credential && !state.credential) state.credential = credential;
    if (state) startIfDue(state);

    const limit = typeof options.timeoutMs === 'number' ? options.timeoutMs : options.timeoutMs?.[tool];
    const timeout = new AbortController();
    const callExtra: ToolExtra = { ...extra, signal: anySignal(extra.signal, timeout.signal) };
    const startedAt = Date.now();
    const t0 = performance.now();
    let status: ExecutionStatus = 'SUCCESS';
    let errorType: string | undefined;
    let errorMessage: string | undefined;
    let result: unknown;
    let thrown: unknown;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const running = original(request, callExtra);
      if (limit === undefined) result = await running;
      else {
        running.catch(() => {});
        const timedOut = new Promise<typeof TIMED_OUT>((resolve) => (timer = setTimeout(() => resolve(TIMED_OUT), limit)));
        result = await Promise.race([running, timedOut]);
        if (result === TIMED_OUT) {
          timeout.abort(new Error(`tool ${tool} timed out after ${limit} ms`));
          status = 'TIMEOUT';
          errorType = 'timeout';
          errorMessage = `tool ${tool} timed out after ${limit} ms`;
          result = { content: [{ type: 'text', text: errorMessage }], isError: true } satisfies CallToolResult;
        }
      }
      if (status === 'SUCCESS' && isErrorResult(result)) {
        status = 'FAILED';
        errorType = 'tool_error';
        errorMessage = firstText(result);
      }
    } catch (err) {
      thrown = err;
      status = 'FAILED';
      errorType = (err as { name?: string })?.name ?? 'Error';
      errorMessage = (err as Error)?.message ?? String(err);
    } finally {
      if (timer) clearTimeout(timer);
    }
    const durationMs = Math.round(performance.now() - t0);
    const usage = { ...takeUsage(result), ...usageReports.get(callExtra) };

    if (credential) {
      const version = typeof options.toolVersions === 'function' ? options.toolVersions(tool) : options.toolVersions?.[tool];
      void meter
        .track({
          event_type: eventType,
          ...credentialFields(credential),
          ...(sessionId ? { session_id: sessionId } : {}),
          tool_name: version ? `${tool}@${version}` : tool,
          ...(options.mcpServerId ? { mcp_server_id: options.mcpServerId } : {}),
          execution_duration_ms: durationMs,
          execution_status: status,
          input_tokens: usage.input_tokens ?? 0,
          output_tokens: usage.output_tokens ?? 0,
          ...(usage.model ? { model: usage.model } : {}),
          ...(errorType ? { error_type: errorType.slice(0, 128), error_message: (errorMessage ?? '').slice(0, 2048) } : {}),
          recorded_timestamp: new Date(startedAt),
        })
        .catch(() => {});
    }
    if (thrown !== undefined) throw thrown;
    return result;
  };

  wrapHandler(low, 'initialize', onInitialize);
  wrapHandler(low, 'tools/call', onToolCall);

  const previousOnClose = low.onclose;
  low.onclose = () => {
    endConnection();
    previousOnClose?.();
  };
  return { sessionId: () => connection?.sessionId };
}

const TIMED_OUT = Symbol('timed out');

function refusal(tool: string, decision: AuthorizeDecision): CallToolResult {
  const reason = decision.reason ?? decision.code ?? 'refused';
  return {
    content: [{ type: 'text', text: `agentmeter refused ${tool}: ${decision.code ?? 'refused'}: ${reason}` }],
    isError: true,
    _meta: { [REFUSAL_META_KEY]: { code: decision.code ?? 'refused', reason } },
  };
}

function isErrorResult(result: unknown): boolean {
  return typeof result === 'object' && result !== null && (result as { isError?: unknown }).isError === true;
}

function firstText(result: unknown): string {
  const content = (result as { content?: { type?: string; text?: string }[] }).content;
  return content?.find((c) => c.type === 'text')?.text ?? 'error result';
}

/** Reads and removes `_meta["agentmeter/usage"]` from a result. */
function takeUsage(result: unknown): ToolUsage {
  const meta = (result as { _meta?: Record<string, unknown> } | undefined)?._meta;
  const usage = meta?.[USAGE_META_KEY] as ToolUsage | undefined;
  if (!meta || usage === undefined) return {};
  delete meta[USAGE_META_KEY];
  return usage;
}

function anySignal(a: AbortSignal, b: AbortSignal): AbortSignal {
  if (typeof AbortSignal.any === 'function') return AbortSignal.any([a, b]);
  const controller = new AbortController();
  const abort = (signal: AbortSignal) => () => controller.abort(signal.reason);
  a.addEventListener('abort', abort(a), { once: true });
  b.addEventListener('abort', abort(b), { once: true });
  return controller.signal;
}

/**
 * Wraps the handler of `method` now, and again whenever it is set later (McpServer installs its
 * tools/call handler on the first registerTool). The SDK (1.32.x) offers no getter for a
 * handler, so this reads its handler map; the tests fail loudly if a release renames it.
 */
function wrapHandler(server: Server, method: string, wrap: (original: RawHandler) => RawHandler): void {
  const handlers = (server as unknown as { _requestHandlers?: unknown })._requestHandlers;
  if (!(handlers instanceof Map)) {
    throw new Error('meterMcpServer: this @modelcontextprotocol/sdk keeps no request handler map; use the pinned 1.32.x');
  }
  const map = handlers as Map<string, RawHandler>;
  const current = map.get(method);
  if (current) map.set(method, wrap(current));
  const setRequestHandler = server.setRequestHandler.bind(server);
  server.setRequestHandler = ((schema: Parameters<Server['setRequestHandler']>[0], handler: Parameters<Server['setRequestHandler']>[1]) => {
    const before = map.get(method);
    setRequestHandler(schema, handler);
    const installed = map.get(method);
    if (installed && installed !== before) map.set(method, wrap(installed));
  }) as Server['setRequestHandler'];
}
