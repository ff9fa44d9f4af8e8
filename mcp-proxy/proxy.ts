/**
 * The MCP metering proxy: in front of any Streamable HTTP MCP server, no change to it.
 *
 * Every request is forwarded to the same path on the upstream's origin. A POST body is read
 * (bounded) and parsed as JSON-RPC: each `tools/call` in it (one message or a batch) is
 * authorized first (a refused call is answered here with an MCP error result and never reaches
 * the upstream), then forwarded; its response is found in the upstream's answer, a JSON body or
 * an SSE stream passed through chunk by chunk as it comes, and becomes one `mcp.tool_invoked`
 * event with its duration and status. Everything else passes untouched. An upstream that
 * answers garbage, fails, closes mid-stream or times out: the client sees that failure and the
 * calls are metered FAILED (TIMEOUT). A call the upstream provably never ran (refused with a 4xx
 * and no response for it, or a connection that could not be made) is not metered, and counted.
 * A POST the proxy cannot read is never forwarded (it would pass unmetered and unauthorized): not
 * JSON-RPC answers 400, a Content-Encoding other than identity 415; a leading UTF-8 BOM is
 * removed before parsing and forwarding. A session's `initialize` answered with `Mcp-Session-Id`
 * tracks session.started, its DELETE session.completed.
 */
import { Agent as HttpAgent, createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { urlToHttpOptions } from 'node:url';
import { credentialFields, type AgentMeter, type AuthorizeDecision, type AuthorizeRequest, type Credential, type ExecutionStatus, type MeterEvent } from '@agentmeter/sdk';
import type { Logger } from '../pipeline/logger.js';
import { classifyBody, outcomeOf, refusalMessage, responseKey, withoutBom, type CallOutcome, type ToolCall } from './jsonrpc.js';
import { SseReader, sseEvent } from './sse.js';

export interface McpProxyOptions {
  /** The MCP server's URL; requests go to the same path on its origin. */
  upstream: string;
  meter: AgentMeter;
  /** Port to listen on (0: any free port) and host (default 127.0.0.1). */
  port: number;
  host?: string;
  /** agentmeter's id of the upstream MCP server (its tool aliases apply). */
  mcpServerId?: string;
  /** The header carrying the caller's API key (default x-api-key; else Authorization: Bearer). */
  apiKeyHeader?: string;
  /** A header carrying an OAuth client id set by a gateway in front (then billed by client_id). */
  clientIdHeader?: string;
  /** Authorize every tools/call (default true); a call without a credential is then refused. */
  authorize?: boolean;
  /** Longest silence of the upstream on one request (ms) before its calls are TIMEOUT. Default 300,000. */
  upstreamTimeoutMs?: number;
  /** Request bodies larger than this are refused with 413 (never forwarded unmetered). Default 4 MiB. */
  maxBodyBytes?: number;
  log?: Logger;
}

interface ProxyStats {
  requests: number;
  toolCalls: Record<ExecutionStatus, number>;
  /** tools/call refused by authorize (answered by the proxy, not forwarded). */
  refused: number;
  /** POST bodies that were not JSON-RPC (not JSON, or no JSON-RPC message): answered 400, not forwarded. */
  malformedBodies: number;
  /** POST bodies with a Content-Encoding other than identity: answered 415, not forwarded. */
  encodedBodies: number;
  /** Requests of a method MCP does not use (not GET, POST, DELETE, HEAD or OPTIONS): answered 405, not forwarded. */
  otherMethods: number;
  /** tools/call without a credential while authorize is off: forwarded, not metered. */
  unattributed: number;
  upstreamFailures: number;
  /**
   * tools/call the upstream provably never ran, not metered: it answered the request with a 4xx
   * and no response for the call (an unknown session's 404, 400, 406...), or the connection to it
   * could not be made (the request never left).
   */
  notRun: number;
  /** Events (calls, sessions) the SDK did not take (its buffer full, or closed): see meter.stats().dropped. */
  untracked: number;
  sessionsStarted: number;
  sessionsCompleted: number;
}

export interface RunningProxy {
  url: string;
  port: number;
  stats(): ProxyStats;
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-connection']);
/** A JSON answer kept to read the calls' responses; beyond it the rest passes unread and unanswered calls are FAILED. */
const MAX_JSON_RESPONSE_BYTES = 16 * 1024 * 1024;

interface PendingCall extends ToolCall {
  startedAt: number;
  t0: number;
}

export async function startMcpProxy(options: McpProxyOptions): Promise<RunningProxy> {
  const upstream = new URL(options.upstream);
  const secure = upstream.protocol === 'https:';
  if (!secure && upstream.protocol !== 'http:') throw new Error(`--upstream must be an http(s) URL, got ${options.upstream}`);
  const agent = secure ? new HttpsAgent({ keepAlive: true, maxSockets: 512 }) : new HttpAgent({ keepAlive: true, maxSockets: 512 });
  const send = secure ? httpsRequest : httpRequest;
  // Every request goes to the upstream's origin, its path as the client sent it (parsed once here,
  // not per request).
  const target = urlToHttpOptions(upstream);
  const origin = { protocol: target.protocol, hostname: target.hostname, port: target.port, ...(target.auth ? { auth: target.auth } : {}), agent };
  const { meter, log } = options;
  const authorizeCalls = options.authorize !== false;
  const apiKeyHeader = (options.apiKeyHeader ?? 'x-api-key').toLowerCase();
  const clientIdHeader = options.clientIdHeader?.toLowerCase();
  const timeoutMs = options.upstreamTimeoutMs ?? 300_000;
  const maxBody = options.maxBodyBytes ?? 4 * 1024 * 1024;
  const sessionCredentials = new Map<string, Credential>();
  const stats: ProxyStats = {
    requests: 0,
    toolCalls: { SUCCESS: 0, FAILED: 0, TIMEOUT: 0, RATE_LIMITED: 0 },
    refused: 0,
    malformedBodies: 0,
    encodedBodies: 0,
    otherMethods: 0,
    unattributed: 0,
    upstreamFailures: 0,
    notRun: 0,
    untracked: 0,
    sessionsStarted: 0,
    sessionsCompleted: 0,
  };

  const credentialOf = (headers: IncomingHttpHeaders): Credential | undefined => {
    const apiKey = firstValue(headers[apiKeyHeader]);
    if (apiKey) return { apiKey };
    const clientId = clientIdHeader ? firstValue(headers[clientIdHeader]) : undefined;
    if (clientId) return { clientId };
    const bearer = /^Bearer\s+(\S+)$/i.exec(firstValue(headers.authorization) ?? '');
    return bearer ? { apiKey: bearer[1] } : undefined;
  };

  const trackCall = (call: PendingCall, outcome: CallOutcome, credential: Credential | undefined, sessionId: string | undefined) => {
    stats.toolCalls[outcome.status]++;
    if (!credential) {
      stats.unattributed++;
      return;
    }
    // Built field by field (no spreads): this runs once per call. track() only buffers it; the
    // SDK sends the events in batches, off the response path.
    const event = credentialFields(credential) as MeterEvent & Record<string, unknown>;
    event.event_type = 'mcp.tool_invoked';
    if (sessionId) event.session_id = sessionId;
    event.tool_name = call.tool || 'unknown';
    if (options.mcpServerId) event.mcp_server_id = options.mcpServerId;
    event.execution_duration_ms = Math.round(performance.now() - call.t0);
    event.execution_status = outcome.status;
    event.input_tokens = outcome.inputTokens ?? 0;
    event.output_tokens = outcome.outputTokens ?? 0;
    if (outcome.model) event.model = outcome.model;
    if (outcome.errorType) {
      event.error_type = outcome.errorType.slice(0, 128);
      event.error_message = (outcome.errorMessage ?? '').slice(0, 2048);
    }
    event.recorded_timestamp = new Date(call.startedAt);
    meter.track(event).catch(trackFailed);
  };
  // track() rejects when the SDK's buffer is full (the API down for long) or closed: counted, and
  // logged at most every 10 s (code and message only: never the event, it holds the API key).
  let lastTrackFailureLog = 0;
  const trackFailed = (err: unknown) => {
    stats.untracked++;
    const now = Date.now();
    if (now - lastTrackFailureLog < 10_000) return;
    lastTrackFailureLog = now;
    log?.warn({ code: (err as { code?: unknown }).code, message: (err as Error)?.message, untracked: stats.untracked }, 'mcp-proxy: cannot track calls');
  };

  const trackSession = (type: 'session.started' | 'session.completed', sessionId: string, credential: Credential) => {
    if (type === 'session.started') stats.sessionsStarted++;
    else stats.sessionsCompleted++;
    meter.track({ event_type: type, session_id: sessionId, ...credentialFields(credential) }).catch(trackFailed);
  };

  const forwardHeaders = (headers: IncomingHttpHeaders, bodyLength?: number): OutgoingHttpHeaders => {
    const out: OutgoingHttpHeaders = {};
    for (const name in headers) {
      const value = headers[name];
      if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
    }
    out.host = upstream.host;
    if (bodyLength !== undefined) {
      out['content-length'] = String(bodyLength);
      // The proxy reads the answer: ask for it uncompressed.
      delete out['accept-encoding'];
    }
    return out;
  };

  const responseHeaders = (headers: IncomingHttpHeaders, dropLength: boolean): OutgoingHttpHeaders => {
    const out: OutgoingHttpHeaders = {};
    for (const name in headers) {
      const value = headers[name];
      if (value === undefined || HOP_BY_HOP.has(name) || (dropLength && name === 'content-length')) continue;
      out[name] = value;
    }
    return out;
  };

  /** GET (the server's SSE stream), DELETE and anything else that is not a JSON-RPC POST: piped both ways. */
  const pipeThrough = (req: IncomingMessage, res: ServerResponse, onAnswer?: (upstreamRes: IncomingMessage) => void) => {
    const out = send({ ...origin, method: req.method, path: req.url ?? '/', headers: forwardHeaders(req.headers) }, (upstreamRes) => {
      onAnswer?.(upstreamRes);
      res.writeHead(upstreamRes.statusCode ?? 502, responseHeaders(upstreamRes.headers, false));
      upstreamRes.pipe(res);
      upstreamRes.on('aborted', () => res.destroy());
      upstreamRes.on('error', () => res.destroy());
    });
    out.on('error', (err) => {
      stats.upstreamFailures++;
      if (!res.headersSent) jsonReply(res, 502, { jsonrpc: '2.0', id: null, error: { code: -32603, message: `upstream unreachable: ${err.message}` } });
      else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) out.destroy();
    });
    req.pipe(out);
  };

  const authorizeCall = (credential: Credential | undefined, sessionId: string | undefined, call: ToolCall): Promise<AuthorizeDecision> | AuthorizeDecision => {
    if (!credential) return { allowed: false, code: 'no_credential', reason: `the request carries no credential (${apiKeyHeader}, or Authorization: Bearer)`, source: 'api' };
    // Built field by field (no spreads): this runs once per call.
    const request: AuthorizeRequest = 'apiKey' in credential ? { apiKey: credential.apiKey, tool: call.tool } : { clientId: credential.clientId, tool: call.tool };
    if ('clientSecret' in credential && credential.clientSecret !== undefined) (request as { clientSecret?: string }).clientSecret = credential.clientSecret;
    if (sessionId) request.sessionId = sessionId;
    return meter.authorize(request);
  };

  const handlePost = async (req: IncomingMessage, res: ServerResponse, received: Buffer) => {
    // Parsed and forwarded without a leading BOM: the upstream reads what was metered.
    const body = withoutBom(received);
    const classified = classifyBody(body.toString('utf8'));
    if (classified.kind === 'malformed') {
      // Never forwarded: an upstream that reads it some other way would run its calls unmetered
      // and unauthorized. An upstream answers such a body 400 anyway.
      stats.malformedBodies++;
      log?.debug({ code: classified.code, bytes: body.length }, 'mcp-proxy: refused a body that is not JSON-RPC');
      const message = classified.code === -32700 ? `Parse error: ${classified.reason}` : `Invalid Request: ${classified.reason}`;
      return jsonReply(res, 400, { jsonrpc: '2.0', id: null, error: { code: classified.code, message } });
    }
    const credential = credentialOf(req.headers);
    const sessionId = firstValue(req.headers['mcp-session-id']);
    const calls = classified.calls;

    // Allocated only when a call is refused: the common path (one allowed call) builds no set, no array.
    let refusals: Record<string, unknown>[] | undefined;
    let refusedKeys: Set<string> | undefined;
    if (authorizeCalls && calls.length) {
      const decisions = calls.length === 1 ? [await authorizeCall(credential, sessionId, calls[0])] : await Promise.all(calls.map((call) => authorizeCall(credential, sessionId, call)));
      for (let i = 0; i < calls.length; i++) {
        if (decisions[i].allowed) continue;
        stats.refused++;
        (refusedKeys ??= new Set()).add(calls[i].key);
        (refusals ??= []).push(refusalMessage(calls[i], decisions[i]));
      }
    }
    const now = Date.now();
    const t0 = performance.now();
    const pending: PendingCall[] = [];
    for (const call of calls) if (!refusedKeys?.has(call.key)) pending.push({ id: call.id, key: call.key, tool: call.tool, startedAt: now, t0 });
    let outgoing = body;
    if (refusals && refusedKeys) {
      const refused = refusedKeys;
      const rest = classified.messages.filter((m) => !(typeof m === 'object' && m !== null && (m as { method?: unknown }).method === 'tools/call' && refused.has(JSON.stringify((m as { id?: unknown }).id))));
      if (rest.length === 0) return jsonReply(res, 200, classified.batch ? refusals : refusals[0]);
      outgoing = Buffer.from(JSON.stringify(classified.batch ? rest : rest[0]));
    }
    forward(req, res, outgoing, credential, pending, refusals ?? NO_REFUSALS, classified.batch, sessionId, classified.initialize);
  };

  const forward = (
    req: IncomingMessage,
    res: ServerResponse,
    body: Buffer,
    credential: Credential | undefined,
    pending: PendingCall[],
    refusals: readonly Record<string, unknown>[],
    batch: boolean,
    sessionId?: string,
    initialize = false,
  ) => {
    const calls = new Map(pending.map((c) => [c.key, c]));
    /**
     * The upstream provably did not run the calls it left unanswered: it refused the request with a
     * 4xx, or the connection of the current attempt was never made (nothing of the request left).
     * A 5xx, a timeout or a connection lost after the request went out may come after a tool ran.
     */
    let refusedWith4xx = false;
    let reached = false;
    /** Meters the calls not answered yet with this outcome (the upstream failed them), unless the upstream never ran them. */
    const finish = (outcome: CallOutcome) => {
      if (refusedWith4xx || !reached) stats.notRun += calls.size;
      else for (const call of calls.values()) trackCall(call, outcome, credential, sessionId);
      calls.clear();
    };
    const settle = (message: unknown) => {
      const key = responseKey(message);
      const call = key === undefined ? undefined : calls.get(key);
      if (!call) return;
      calls.delete(key!);
      trackCall(call, outcomeOf(message as Record<string, unknown>), credential, sessionId);
    };
    const settleText = (text: string) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        return false;
      }
      for (const message of Array.isArray(parsed) ? parsed : [parsed]) settle(message);
      return true;
    };

    let timedOut = false;
    const onAnswer = (upstreamRes: IncomingMessage) => {
      const status = upstreamRes.statusCode ?? 502;
      reached = true;
      refusedWith4xx = status >= 400 && status < 500;
      const type = String(upstreamRes.headers['content-type'] ?? '').toLowerCase();
      const newSession = upstreamRes.headers['mcp-session-id'];
      if (initialize && status < 300 && typeof newSession === 'string' && credential) {
        sessionCredentials.set(newSession, credential);
        if (sessionCredentials.size > 100_000) sessionCredentials.delete(sessionCredentials.keys().next().value!);
        trackSession('session.started', newSession, credential);
      }
      let failed = false;
      const broken = (why: string) => () => {
        if (failed) return;
        failed = true;
        stats.upstreamFailures++;
        res.destroy();
        finish({ status: timedOut ? 'TIMEOUT' : 'FAILED', errorType: timedOut ? 'upstream_timeout' : 'upstream_closed', errorMessage: why });
      };
      upstreamRes.on('aborted', broken('the upstream closed the response before its end'));
      upstreamRes.on('error', broken('the upstream response failed'));

      if (calls.size === 0 && refusals.length === 0) {
        res.writeHead(status, responseHeaders(upstreamRes.headers, false));
        upstreamRes.pipe(res);
        return;
      }
      if (type.startsWith('text/event-stream')) {
        const reader = new SseReader();
        res.writeHead(status, responseHeaders(upstreamRes.headers, true));
        upstreamRes.on('data', (chunk: Buffer) => {
          writeCorked(res, chunk);
          for (const data of reader.push(chunk)) settleText(data);
        });
        upstreamRes.on('end', () => {
          for (const refusal of refusals) res.write(sseEvent(refusal));
          res.end();
          finish({ status: 'FAILED', errorType: 'upstream_no_response', errorMessage: 'the upstream stream ended without answering this call' });
        });
        return;
      }
      if (status === 202 && refusals.length) {
        // The upstream took the rest (notifications and responses only): the refusals are the answer.
        upstreamRes.resume();
        jsonReply(res, 200, batch ? refusals : refusals[0]);
        return finish({ status: 'FAILED', errorType: 'upstream_no_response', errorMessage: `the upstream answered ${status}` });
      }
      const chunks: Buffer[] = [];
      let size = 0;
      const merge = refusals.length > 0 && type.includes('json');
      if (!merge) res.writeHead(status, responseHeaders(upstreamRes.headers, false));
      upstreamRes.on('data', (chunk: Buffer) => {
        if (!merge) writeCorked(res, chunk);
        size += chunk.length;
        if (size <= MAX_JSON_RESPONSE_BYTES || merge) chunks.push(chunk);
      });
      upstreamRes.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const readable = type.includes('json') && size <= MAX_JSON_RESPONSE_BYTES && settleText(text);
        if (merge) {
          if (readable) {
            const parsed: unknown = JSON.parse(text);
            const answer = [...(Array.isArray(parsed) ? parsed : [parsed]), ...refusals];
            const headers = responseHeaders(upstreamRes.headers, true);
            res.writeHead(status, headers);
            res.end(JSON.stringify(answer));
          } else {
            res.writeHead(status, responseHeaders(upstreamRes.headers, false));
            res.end(Buffer.concat(chunks));
          }
        } else res.end();
        const why = readable ? 'the upstream answer holds no response to this call' : `the upstream answered ${status} ${type || 'without a content type'} that is not a JSON-RPC response`;
        if (!readable) stats.upstreamFailures++;
        finish({ status: 'FAILED', errorType: readable ? 'upstream_no_response' : 'upstream_invalid_response', errorMessage: why });
      });
    };
    const attempt = (retry: boolean): ReturnType<typeof send> => {
      reached = false;
      const sent = send({ ...origin, method: 'POST', path: req.url ?? '/', headers: forwardHeaders(req.headers, body.length) }, onAnswer);
      // The request's bytes leave only once the connection is made (TLS: its handshake done); a
      // kept-alive socket is connected already. Before that, a failure means the upstream got nothing.
      sent.once('socket', (socket) => {
        if (sent.reusedSocket || (!secure && !socket.connecting)) reached = true;
        else socket.once(secure ? 'secureConnect' : 'connect', () => (reached = true));
      });
      sent.setTimeout(timeoutMs, () => {
        timedOut = true;
        sent.destroy(new Error(`no answer from the upstream within ${timeoutMs} ms`));
      });
      sent.on('error', (err) => failed(sent, err, retry));
      sent.end(body);
      return sent;
    };
    const failed = (sent: ReturnType<typeof send>, err: Error, retry: boolean) => {
      if (res.headersSent || res.destroyed) return; // a response in progress fails through 'aborted' above; a gone client was metered
      // A kept-alive connection the upstream closed just as this request went out: it never read
      // the request, so sending it once more on a fresh connection runs nothing twice.
      if (retry && sent.reusedSocket && (err as NodeJS.ErrnoException).code === 'ECONNRESET') {
        out = attempt(false);
        return;
      }
      stats.upstreamFailures++;
      const status = timedOut ? 504 : 502;
      jsonReply(res, status, { jsonrpc: '2.0', id: null, error: { code: -32603, message: `upstream ${timedOut ? 'timed out' : 'unreachable'}: ${err.message}` } });
      finish(timedOut ? { status: 'TIMEOUT', errorType: 'upstream_timeout', errorMessage: err.message } : { status: 'FAILED', errorType: 'upstream_unreachable', errorMessage: err.message });
    };
    let out = attempt(true);
    res.on('close', () => {
      if (res.writableFinished) return;
      out.destroy();
      finish({ status: 'FAILED', errorType: 'client_closed', errorMessage: 'the client went away before the answer' });
    });
  };

  const server: Server = createServer((req, res) => {
    stats.requests++;
    if (req.method === 'DELETE') {
      const sessionId = req.headers['mcp-session-id'];
      return pipeThrough(req, res, (upstreamRes) => {
        if (typeof sessionId !== 'string' || (upstreamRes.statusCode ?? 500) >= 300) return;
        const credential = credentialOf(req.headers) ?? sessionCredentials.get(sessionId);
        sessionCredentials.delete(sessionId);
        if (credential) trackSession('session.completed', sessionId, credential);
      });
    }
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return pipeThrough(req, res);
    if (req.method !== 'POST') {
      // An upstream that took a PUT or PATCH as a POST would run its calls unmetered: refused.
      stats.otherMethods++;
      res.setHeader('allow', 'GET, POST, DELETE, HEAD, OPTIONS');
      res.setHeader('connection', 'close');
      return jsonReply(res, 405, { jsonrpc: '2.0', id: null, error: { code: -32000, message: `Method Not Allowed: ${String(req.method).slice(0, 16)}` } });
    }
    const encoding = firstValue(req.headers['content-encoding'])?.trim().toLowerCase();
    if (encoding && encoding !== 'identity') {
      // A compressed body is not what the proxy parses, but an upstream may inflate it (express.json()
      // does) and run its calls: refused, never forwarded.
      stats.encodedBodies++;
      return unsupportedEncoding(res, encoding);
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBody) return tooLarge(res, maxBody);
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      if (size > maxBody) return; // refused already: the rest is read and dropped
      size += chunk.length;
      if (size > maxBody) return tooLarge(res, maxBody);
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (size > maxBody) return;
      handlePost(req, res, chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)).catch((err) => {
        log?.error({ err }, 'mcp-proxy: request failed');
        if (!res.headersSent) jsonReply(res, 500, { jsonrpc: '2.0', id: null, error: { code: -32603, message: 'the metering proxy failed on this request' } });
        else res.destroy();
      });
    });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '127.0.0.1', resolve);
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://${options.host ?? '127.0.0.1'}:${port}`,
    stats: () => ({ ...stats, toolCalls: { ...stats.toolCalls } }),
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      agent.destroy();
    },
  };
}

/**
 * Writes a chunk, holding the socket until the I/O callbacks of this turn of the event loop have
 * run: the headers, the chunks of one upstream read and the end of the response (which the
 * upstream's stream signals a tick after its last chunk) then leave in one system call instead of
 * several. On loopback each write also runs the receiver's TCP stack: the proxy's main cost.
 */
function writeCorked(res: ServerResponse, chunk: Buffer): void {
  if (res.writableCorked === 0) {
    res.cork();
    setImmediate(uncorkLater, res);
  }
  res.write(chunk);
}

function uncorkLater(res: ServerResponse): void {
  // end() uncorks fully; the socket may serve the next request by now.
  if (!res.writableEnded && res.writableCorked > 0) res.uncork();
}

/** The common case of a request: no tools/call refused (shared, so frozen). */
const NO_REFUSALS: readonly Record<string, unknown>[] = Object.freeze([]);

function firstValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function jsonReply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function unsupportedEncoding(res: ServerResponse, encoding: string): void {
  // The body is not read: the connection closes after the answer.
  res.setHeader('connection', 'close');
  jsonReply(res, 415, { jsonrpc: '2.0', id: null, error: { code: -32000, message: `Unsupported Media Type: Content-Encoding ${encoding.slice(0, 64)} (the metering proxy reads bodies only as sent, uncompressed)` } });
}

function tooLarge(res: ServerResponse, limit: number): void {
  if (res.headersSent) return;
  res.setHeader('connection', 'close');
  jsonReply(res, 413, { jsonrpc: '2.0', id: null, error: { code: -32600, message: `request body over ${limit} bytes` } });
}
