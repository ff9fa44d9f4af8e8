export { AgentMeter, type AgentMeterOptions, type FlushResult, type MeterStats } from './client.js';
export type { AuthorizeDecision, AuthorizeOptions, AuthorizeRequest } from './authorize.js';
export {
  AgentMeterError,
  ApiResponseError,
  BadRequestError,
  DeliveryError,
  InvalidEventsError,
  UnauthorizedError,
  type EventProblem,
} from './errors.js';
export type { Credential, CredentialFields, ExecutionStatus, MeterEvent, SessionEventType, SessionFields, ToolCallFields, ToolEventType, WireEvent } from './events.js';
export { credentialFields } from './events.js';
export { EventIdGenerator, eventIdTime } from './ids.js';
export type { RetryPolicy } from './retry.js';
