/** Every error the SDK reports is an AgentMeterError with a stable `code`. */
export class AgentMeterError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** One problem with one event, named by its field path as the API reported it. */
export interface EventProblem {
  /** Position of the event in the request that carried it. */
  index: number;
  eventId?: string;
  /** Dotted field path (`input_tokens`, '' for the event itself) or a JSON path (`$[2].data.input_tokens`). */
  path: string;
  message: string;
}

/**
 * The API refused a whole request with 400 (`validation_failed`, `invalid_body`, ...).
 * `problems` lists every problem the reply named, by path.
 */
export class BadRequestError extends AgentMeterError {
  readonly status = 400;
  constructor(
    code: string,
    message: string,
    readonly problems: EventProblem[],
    readonly events: readonly object[] = [],
  ) {
    super(code, message);
  }
}

/**
 * The API took the request but rejected some of its events as invalid (listed per event in
 * its 202 reply); the others were accepted. These events will never be accepted as they are.
 */
export class InvalidEventsError extends AgentMeterError {
  constructor(
    readonly problems: EventProblem[],
    readonly events: readonly object[],
  ) {
    super('invalid_events', `${events.length} event(s) rejected: ${problems.slice(0, 3).map((p) => `${p.eventId ?? `#${p.index}`} ${p.path || '(event)'}: ${p.message}`).join('; ')}${problems.length > 3 ? '; ...' : ''}`);
  }
}

/** 401: the ingest token is missing, wrong or rotated away. Retrying does not help. */
export class UnauthorizedError extends AgentMeterError {
  readonly status = 401;
  constructor(
    message: string,
    readonly events: readonly object[] = [],
  ) {
    super('unauthorized', message);
  }
}

/** Events given up on after the retry budget (or at close): the caller may keep them and send them again. */
export class DeliveryError extends AgentMeterError {
  constructor(
    message: string,
    readonly events: readonly object[],
    cause?: unknown,
  ) {
    super('delivery_failed', message, { cause });
  }
}

/** An unexpected answer from the API (not 202, 400, 401 or a retryable status). */
export class ApiResponseError extends AgentMeterError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
    readonly events: readonly object[] = [],
  ) {
    super(code, message);
  }
}
