import { AgentMeterError, BadRequestError, UnauthorizedError, type EventProblem } from './errors.js';
import type { Credential } from './events.js';

/** What `POST /v1/authorize` is asked: a credential, optionally the session and the tool. */
export type AuthorizeRequest = Credential & { sessionId?: string; tool?: string };

export interface AuthorizeDecision {
  allowed: boolean;
  /** Why not: unknown_credential, revoked, expired, suspended, invalid_client_secret, paused; or unavailable (fail-closed). */
  code?: string;
  reason?: string;
  /** The pause record when code is `paused`. */
  pause?: Record<string, unknown>;
  attribution?: { customer_id: string; team_id: string; agent_id?: string; app_id?: string };
  /** Where the answer came from: the API, the local cache, or the fail-open/fail-closed rule when the API could not answer. */
  source: 'api' | 'cache' | 'fail-open' | 'fail-closed';
}

export interface AuthorizeOptions {
  /** How long an answer is reused (ms). Default 1,000: a new pause is seen within about a second. */
  cacheTtlMs: number;
  /**
   * When the API cannot answer (network error, timeout, 408, 429, 5xx, or a 200 that is not a
   * decision): allow (open, the default) or refuse (closed).
   */
  failMode: 'open' | 'closed';
  /** Timeout of one authorize request (ms). Default 2,000. */
  timeoutMs: number;
  /** Cached answers kept at most. Default 10,000. */
  maxEntries: number;
}

export const DEFAULT_AUTHORIZE: AuthorizeOptions = { cacheTtlMs: 1_000, failMode: 'open', timeoutMs: 2_000, maxEntries: 10_000 };

interface Entry {
  decision: AuthorizeDecision;
  at: number;
}

type Ask = (body: Record<string, string>, signal: AbortSignal) => Promise<Response>;

/**
 * Answers authorize requests from a short local cache. An answer older than half the TTL is
 * still served while one request refreshes it in the background, so steady traffic never waits
 * on the API; an answer past the TTL is not served. Identical requests in flight share one call.
 */
export class AuthorizeCache {
  private readonly entries = new Map<string, Entry>();
  private readonly inFlight = new Map<string, Promise<AuthorizeDecision>>();

  constructor(
    private readonly ask: Ask,
    private readonly options: AuthorizeOptions,
  ) {}

  async authorize(request: AuthorizeRequest): Promise<AuthorizeDecision> {
    const key = cacheKey(request);
    const now = Date.now();
    const entry = this.entries.get(key);
    if (entry && now - entry.at < this.options.cacheTtlMs) {
      if (now - entry.at >= this.options.cacheTtlMs / 2) void this.fetch(key, request).catch(() => {});
      return { ...entry.decision, source: 'cache' };
    }
    return this.fetch(key, request);
  }

  /** Forgets every cached answer (e.g. after an operator lifted a pause and wants it seen at once). */
  clear(): void {
    this.entries.clear();
  }

  private fetch(key: string, request: AuthorizeRequest): Promise<AuthorizeDecision> {
    const running = this.inFlight.get(key);
    if (running) return running;
    const call = this.call(request)
      .then((decision) => {
        if (decision.source === 'api') this.remember(key, decision);
        return decision;
      })
      .finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, call);
    return call;
  }

  private remember(key: string, decision: AuthorizeDecision): void {
    this.entries.delete(key);
    if (this.entries.size >= this.options.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { decision, at: Date.now() });
  }

  private async call(request: AuthorizeRequest): Promise<AuthorizeDecision> {
    let response: Response;
    try {
      response = await this.ask(requestBody(request), AbortSignal.timeout(this.options.timeoutMs));
    } catch (err) {
      return this.fallback(`the authorize request failed: ${(err as Error).message}`);
    }
    if (response.status === 200) {
      // A 200 that is not a decision (an HTML page of a gateway, a body cut short) is no answer either.
      let body: unknown;
      try {
        body = await response.json();
      } catch (err) {
        return this.fallback(`authorize answered 200 with a body that is not JSON: ${(err as Error).message}`);
      }
      if (!isDecision(body)) return this.fallback('authorize answered 200 without a decision');
      return { ...body, source: 'api' };
    }
    const text = await response.text().catch(() => '');
    const error = parseError(text);
    if (response.status === 401) throw new UnauthorizedError(error?.message ?? 'the ingest token was refused');
    if (response.status === 400) {
      throw new BadRequestError(error?.code ?? 'bad_request', error?.message ?? text, pathProblems(error?.details));
    }
    if (response.status === 408 || response.status === 429 || response.status >= 500) return this.fallback(`authorize answered ${response.status}`);
    throw new AgentMeterError(error?.code ?? 'unexpected_status', `authorize answered ${response.status}: ${error?.message ?? text}`);
  }

  private fallback(reason: string): AuthorizeDecision {
    return this.options.failMode === 'open'
      ? { allowed: true, code: 'fail_open', reason, source: 'fail-open' }
      : { allowed: false, code: 'unavailable', reason, source: 'fail-closed' };
  }
}

function requestBody(request: AuthorizeRequest): Record<string, string> {
  const body: Record<string, string> = 'apiKey' in request ? { api_key: request.apiKey } : { client_id: request.clientId };
  if ('clientSecret' in request && request.clientSecret !== undefined) body.client_secret = request.clientSecret;
  if (request.sessionId !== undefined) body.session_id = request.sessionId;
  if (request.tool !== undefined) body.tool = request.tool;
  return body;
}

function cacheKey(request: AuthorizeRequest): string {
  const who = 'apiKey' in request ? `k:${request.apiKey}` : `c:${request.clientId}:${request.clientSecret ?? ''}`;
  // The tool is not part of the decision today; keyed anyway so a per-tool rule would not be served stale.
  return `${who}\u0000${request.sessionId ?? ''}\u0000${request.tool ?? ''}`;
}

/** The error body of the API: `details` are problems by path, or (a 400 naming invalid events) rejected events. */
export interface ErrorBody {
  code: string;
  message: string;
  details?: unknown;
}

/** One event the API rejected, with its problems: in a 202's `rejected`, or the `details` of a 400 that took no event. */
export interface RejectedItem {
  index: number;
  event_id?: string;
  errors: { field: string; message: string }[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isDecision(value: unknown): value is Omit<AuthorizeDecision, 'source'> {
  return isRecord(value) && typeof value.allowed === 'boolean';
}

/** The details of an error body that name a problem by path (`{ path, message }`). */
export function pathProblems(details: unknown): EventProblem[] {
  if (!Array.isArray(details)) return [];
  return details
    .filter((d): d is { path: string; message: unknown } => isRecord(d) && typeof d.path === 'string')
    .map((d) => ({ index: -1, path: d.path, message: String(d.message ?? '') }));
}

/** The details of an error body that name rejected events (`{ index, event_id, errors: [{ field, message }] }`). */
export function rejectedItems(details: unknown): RejectedItem[] {
  if (!Array.isArray(details)) return [];
  return details.filter((d): d is RejectedItem => isRecord(d) && Number.isInteger(d.index) && Array.isArray(d.errors));
}

export function parseError(text: string): ErrorBody | undefined {
  try {
    const parsed = JSON.parse(text) as { error?: ErrorBody };
    return parsed.error && typeof parsed.error.code === 'string' ? parsed.error : undefined;
  } catch {
    return undefined;
  }
}
