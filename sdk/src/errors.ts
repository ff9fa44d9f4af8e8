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

/**
 * Sets `events` on an error without making it enumerable: `error.events` reads as usual, but
 * loggers that copy an error's own enumerable fields (pino, JSON.stringify, structured loggers)
 * leave it out. The events carry the callers' credentials (`api_key`, `client_secret`): an
 * `onError` that logs the error as a whole must not write them to the logs.
 */
function hideEvents(error: AgentMeterError, events: readonly object[]): void {
  Object.defineProperty(error, 'events', { value: events, enumerable: false, writable: false, configurable: true });
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
 * The API refused a whole request with 400 (`invalid_body`, ...).
 * `problems` lists every problem the reply named, by path. (A 400 that names invalid events,
 * which the API answers when no event of a request is valid, is an InvalidEventsError.)
 * `events` (not enumerable: see below) holds the events of the request.
 */
export class BadRequestError extends AgentMeterError {
  readonly status = 400;
  /** The events given up on. Not enumerable: they carry credentials, and loggers print enumerable fields. */
  declare readonly events: readonly object[];
  constructor(
    code: string,
    message: string,
    readonly problems: EventProblem[],
    events: readonly object[] = [],
  ) {
    super(code, message);
    hideEvents(this, events);
  }
}

/**
 * The API rejected events as invalid, each listed with its problems: some events of a 202 reply
 * (the others were accepted), or every event of a request (a 400 `validation_failed` naming
 * each). These events will never be accepted as they are; they count in `stats().rejected`.
 */
export class InvalidEventsError extends AgentMeterError {
  /** The rejected events. Not enumerable: they carry credentials, and loggers print enumerable fields. */
  declare readonly events: readonly object[];
  constructor(
    readonly problems: EventProblem[],
    events: readonly object[],
  ) {
    super('invalid_events', `${events.length} event(s) rejected: ${problems.slice(0, 3).map((p) => `${p.eventId ?? `#${p.index}`} ${p.path || '(event)'}: ${p.message}`).join('; ')}${problems.length > 3 ? '; ...' : ''}`);
    hideEvents(this, events);
  }
}

/** 401: the ingest token is missing, wrong or rotated away. Retrying does not help. */
export class UnauthorizedError extends AgentMeterError {
  readonly status = 401;
  /** The events given up on. Not enumerable: they carry credentials, and loggers print enumerable fields. */
  declare readonly events: readonly object[];
  constructor(message: string, events: readonly object[] = []) {
    super('unauthorized', message);
    hideEvents(this, events);
  }
}

/** Events given up on after the retry budget (or at close): the caller may keep them and send them again. */
export class DeliveryError extends AgentMeterError {
  /** The events given up on. Not enumerable: they carry credentials, and loggers print enumerable fields. */
  declare readonly events: readonly object[];
  constructor(message: string, events: readonly object[], cause?: unknown) {
    super('delivery_failed', message, { cause });
    hideEvents(this, events);
  }
}

/** An unexpected answer from the API (not 202, 400, 401 or a retryable status). */
export class ApiResponseError extends AgentMeterError {
  /** The events given up on. Not enumerable: they carry credentials, and loggers print enumerable fields. */
  declare readonly events: readonly object[];
  constructor(
    readonly status: number,
    code: string,
    message: string,
    events: readonly object[] = [],
  ) {
    super(code, message);
    hideEvents(this, events);
  }
}
