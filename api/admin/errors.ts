import postgres from 'postgres';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { ValidationProblem } from '../../schemas/validation.js';

/** The body of every error reply: a machine-readable code, a sentence for people, and details by JSON path. */
export interface ErrorBody {
  error: { code: string; message: string; details?: ValidationProblem[] };
}

export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    readonly details?: ValidationProblem[],
  ) {
    super(message);
  }

  body(): ErrorBody {
    return { error: { code: this.code, message: this.message, ...(this.details?.length ? { details: this.details } : {}) } };
  }
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
export function fromDatabaseError(err: unknown): ApiError | undefined {
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
