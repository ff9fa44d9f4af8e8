import type { Context, ErrorHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import postgres from 'postgres';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { isTransient } from '../pipeline/errors.js';
import type { Logger } from '../pipeline/logger.js';
import type { ValidationProblem } from '../domain/validation.js';

/** The body of every error reply of the HTTP API: a machine-readable code, a sentence for people, and details (by JSON path where there is one). */
export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

/**
 * The one way a route refuses a request: throw it, and `app.onError` (apiErrorHandler) answers
 * with its status, headers and the one body shape. Hono's own HTTPExceptions go the same way.
 */
export class ApiError extends HTTPException {
  readonly code: string;
  readonly details?: unknown;

  constructor(
    override readonly status: ContentfulStatusCode,
    code: string,
    message: string,
    details?: ValidationProblem[] | unknown,
    /** Headers of the reply besides its content type (Retry-After, say). */
    readonly headers: Record<string, string> = {},
  ) {
    super(status, { message });
    this.code = code;
    this.details = Array.isArray(details) && details.length === 0 ? undefined : details;
  }

  body(): ErrorBody {
    return { error: { code: this.code, message: this.message, ...(this.details !== undefined ? { details: this.details } : {}) } };
  }

  /**
   * The reply, built when it is sent (a router mounted on its own answers the same way). Its body
   * is text, not `Response.json`'s stream: @hono/node-server writes a text body with its head in
   * one socket write, and a stream in three (BENCHMARKS.md, issue 13, thirty-first session).
   */
  override getResponse(): Response {
    return new Response(JSON.stringify(this.body()), { status: this.status, headers: { 'content-type': 'application/json', ...this.headers } });
  }
}

/** Every refusal rendered the same way; an outage of a dependency is a 503; anything else is a 500 that is logged and says nothing of its cause. */
export function apiErrorHandler(log: Logger): ErrorHandler {
  return (err, c) => {
    const refusal = refusalOf(err);
    if (refusal) return respond(c, refusal);
    if (isTransient(err)) {
      // A dependency is down (PostgreSQL, Redis): not the request's fault, and worth retrying.
      log.warn({ err, method: c.req.method, path: c.req.path }, 'dependency unavailable');
      return respond(c, unavailable('unavailable', 'a store this request needs is unreachable; retry later', 2));
    }
    log.error({ err, method: c.req.method, path: c.req.path }, 'unexpected error');
    return respond(c, new ApiError(500, 'internal', 'an unexpected error occurred; it has been logged'));
  };
}

/** The 4xx an error stands for: an ApiError itself, a database refusal (a constraint, a NUL), or Hono's own HTTPException; undefined for anything else. */
export function refusalOf(err: unknown): ApiError | undefined {
  return err instanceof ApiError ? err : (fromDatabaseError(err) ?? fromHttpException(err));
}

export function routeNotFound(c: Context): Response {
  return respond(c, new ApiError(404, 'not_found', `no route ${c.req.method} ${c.req.path}`));
}

function respond(_c: Context, error: ApiError): Response {
  return error.getResponse();
}

function fromHttpException(err: unknown): ApiError | undefined {
  if (!(err instanceof HTTPException)) return undefined;
  const status = err.status as ContentfulStatusCode;
  const code = status === 413 ? 'body_too_large' : status === 401 ? 'unauthorized' : status < 500 ? 'bad_request' : 'internal';
  return new ApiError(status, code, err.message || 'the request was refused');
}

export function tooLarge(limit: number): ApiError {
  return new ApiError(413, 'body_too_large', `the request body is over the limit of ${limit} bytes`);
}

/** 503 with Retry-After: a dependency is down; the client keeps what it sent and retries. */
export function unavailable(code: string, message: string, retryAfterSeconds: number): ApiError {
  return new ApiError(503, code, message, undefined, { 'Retry-After': String(retryAfterSeconds) });
}

/**
 * A 429's headers: Retry-After (whole seconds, as RFC 9110 has it) and Retry-After-Ms (as the
 * OpenAI and Anthropic SDKs read it): the pipeline's queue drains in well under a second, so whole
 * seconds would leave it idle while every client waits.
 */
export function retryAfterHeaders(retryAfterMs: number): Record<string, string> {
  return { 'Retry-After': String(Math.max(1, Math.ceil(retryAfterMs / 1000))), 'Retry-After-Ms': String(retryAfterMs) };
}

/** 429 with retryAfterHeaders: nothing was taken; the client keeps what it sent and comes back then. */
export function tooManyRequests(code: 'busy' | 'backpressure', message: string, retryAfterMs: number): ApiError {
  return new ApiError(429, code, message, undefined, retryAfterHeaders(retryAfterMs));
}

export function notFound(noun: string, id: string): ApiError {
  return new ApiError(404, 'not_found', `${noun} ${id} not found`);
}

export function validationFailed(message: string, details: ValidationProblem[] = []): ApiError {
  return new ApiError(400, 'validation_failed', message, details);
}

/**
 * 400 for problems reported with JSON paths (`$.tool_invocations['*']`) by a validator of a
 * part of the body: the paths are re-rooted at the body field (`pricing.tool_invocations['*']`).
 */
export function invalidPart(field: string, problems: ValidationProblem[], root = field): ApiError {
  const details = problems.map((problem) => {
    const below = problem.path.replace(/^\$/, '');
    return { path: root ? root + below : below.replace(/^\./, ''), message: problem.message };
  });
  const first = details[0];
  return validationFailed(`invalid ${field}: ${first.path ? `${first.path}: ` : ''}${first.message}`, details);
}

export function conflict(code: string, message: string): ApiError {
  return new ApiError(409, code, message);
}

/** What a constraint the admin API relies on means, said for the caller. */
const CONSTRAINT_MESSAGES: Record<string, { status: ContentfulStatusCode; code: string; message: string }> = {
  customers_tenant_id_external_ref_key: { status: 409, code: 'conflict', message: 'another customer already has this external_ref' },
  mcp_tools_tenant_id_mcp_server_id_name_key: { status: 409, code: 'conflict', message: 'this MCP server already has a tool of that name' },
  subscriptions_no_overlap: {
    status: 409,
    code: 'subscription_overlap',
    message: 'another subscription of the same scope is in effect during part of this period; end or change that one first',
  },
};

/**
 * Turns a database refusal into a 4xx: the constraints are the last line of defence behind the
 * handlers' own checks (two concurrent requests can both pass a check; only one passes the constraint).
 */
function fromDatabaseError(err: unknown): ApiError | undefined {
  if (!(err instanceof postgres.PostgresError)) return undefined;
  const known = err.constraint_name ? CONSTRAINT_MESSAGES[err.constraint_name] : undefined;
  if (known) return new ApiError(known.status, known.code, known.message);
  switch (err.code) {
    case '23505':
      return conflict('conflict', `conflicts with an existing object (${err.constraint_name ?? 'unique constraint'})`);
    case '23P01':
      return conflict('conflict', `conflicts with an existing object (${err.constraint_name ?? 'exclusion constraint'})`);
    case '23503':
      return new ApiError(404, 'not_found', 'an object this request refers to does not exist');
    case '23514':
      return validationFailed(`a value is out of range (${err.constraint_name ?? 'check constraint'})`);
    case '22021':
    case '22P05':
      return validationFailed('a text contains a character that cannot be stored (NUL or invalid UTF-8)');
    case '22003':
      return validationFailed('a number is too large');
    case '22P02':
    case '22007':
    case '22008':
      return validationFailed(`a value has the wrong form: ${err.message}`);
    default:
      return undefined;
  }
}
