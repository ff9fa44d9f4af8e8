import { z } from 'zod';
import { AGENT_TYPES, EXECUTION_STATUSES, MAX_DURATION_MS, MAX_RETRY_COUNT, MAX_TOKENS, SESSION_EVENT_TYPES } from '../../domain/events.js';
import { unstorableText } from '../../domain/validation.js';
import type { WireEvent } from '../../schemas/events.js';

/**
 * A compiled check of schemas/events.ts for the hot path: plain code, no schema walk, no issue
 * objects. It answers only "certainly valid" (the event as the schema would parse it, defaults
 * applied) or "not sure" (undefined); every event it is not sure of goes through the zod schema,
 * which alone words the errors, so the messages and JSON paths of a rejection are the schema's.
 * It must never accept what the schema refuses: fast-check.test.ts checks the two agree.
 */

const ID = /^[A-Za-z0-9_.:@/-]+$/;
const recordedTimestamp = z.iso.datetime({ offset: true });
const STATUSES = new Set<string>(EXECUTION_STATUSES);
const AGENTS = new Set<string>(AGENT_TYPES);
const SESSION_TYPES = new Set<string>(SESSION_EVENT_TYPES);

const isId = (v: unknown, max = 128): v is string => typeof v === 'string' && v.length >= 1 && v.length <= max && ID.test(v);
const isText = (v: unknown, max: number, min = 0): v is string =>
  typeof v === 'string' && v.length >= min && v.length <= max && unstorableText(v) === undefined;
const isCount = (v: unknown, max: number): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;

type Check = (v: unknown) => boolean;
const optional = (check: Check): Check => (v) => v === undefined || check(v);
const nullable = (check: Check): Check => (v) => v === null || check(v);

function isMetadata(v: unknown): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || Object.getPrototypeOf(v) !== Object.prototype) return false;
  for (const [key, value] of Object.entries(v)) {
    if (!isText(key, 64)) return false;
    if (value === null || typeof value === 'boolean') continue;
    if (typeof value === 'number') {
      if (!Number.isFinite(value)) return false;
      continue;
    }
    if (!isText(value, 256)) return false;
  }
  return true;
}

const COMMON: Record<string, Check> = {
  event_type: () => true, // checked by the caller
  event_id: (v) => isId(v),
  api_key: optional((v) => isText(v, 256, 8)),
  client_id: optional((v) => isId(v)),
  agent_id: optional((v) => isId(v)),
  session_id: optional((v) => isId(v)),
  recorded_timestamp: (v) => typeof v === 'string' && recordedTimestamp.safeParse(v).success,
  metadata: optional(isMetadata),
  agent_type: optional((v) => typeof v === 'string' && AGENTS.has(v)),
  tenant_id: optional((v) => isText(v, 128)),
  team_id: optional((v) => isText(v, 128)),
  customer_id: optional((v) => isText(v, 128)),
  subscription_id: optional((v) => isText(v, 128)),
  ingest_timestamp: optional((v) => isText(v, 64)),
};

const INVOCATION: Record<string, Check> = {
  tool_name: (v) => isId(v),
  mcp_server_id: optional((v) => isId(v)),
  execution_duration_ms: optional((v) => isCount(v, MAX_DURATION_MS)),
  execution_status: optional((v) => typeof v === 'string' && STATUSES.has(v)),
  input_tokens: optional((v) => isCount(v, MAX_TOKENS)),
  output_tokens: optional((v) => isCount(v, MAX_TOKENS)),
  model: optional((v) => isId(v)),
  error_type: optional(nullable((v) => isText(v, 128))),
  error_message: optional(nullable((v) => isText(v, 2048))),
  retry_count: optional((v) => isCount(v, MAX_RETRY_COUNT)),
  is_parallel_call: optional((v) => typeof v === 'boolean'),
  parent_tool_invocation_id: optional(nullable((v) => isId(v))),
};

/** An event type's checks, and the fields it cannot do without (precomputed: this runs for every event). */
interface Shape {
  // A Map, not an object: a field named like an Object.prototype member ("constructor") has no check.
  checks: Map<string, Check>;
  required: string[];
}
const shape = (fields: Record<string, Check>): Shape => ({
  checks: new Map(Object.entries(fields)),
  required: Object.entries(fields)
    .filter(([, check]) => !check(undefined))
    .map(([key]) => key),
});
const TOOL_INVOKED = shape({ ...COMMON, ...INVOCATION });
const API_REQUEST = shape({
  ...COMMON,
  ...INVOCATION,
  tool_name: (v) => isText(v, 256, 1),
  http_status: optional((v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 100 && v <= 599),
});
const SESSION_CONTROL = shape({ ...COMMON, session_id: (v) => isId(v), reason: optional((v) => isText(v, 512)) });

/** The defaults the schema fills in for an invocation. */
const DEFAULTS = { execution_duration_ms: 0, execution_status: 'SUCCESS', input_tokens: 0, output_tokens: 0, retry_count: 0, is_parallel_call: false } as const;

const DEFAULT_KEYS = Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[];

/**
 * The event as the schema parses it when it is certainly valid; undefined when the schema must
 * decide. It returns the object it was given, with the defaults filled in where a field is
 * missing (the request's own decoded body): a copy costs 15 us an event in V8 (adding fields to
 * a spread clone builds a new hidden class each time), against 30 ns for filling in place.
 */
export function fastCheck(raw: unknown): WireEvent | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || Object.getPrototypeOf(raw) !== Object.prototype) return undefined;
  const event = raw as Record<string, unknown>;
  const type = event.event_type;
  let fields: Shape;
  if (type === 'mcp.tool_invoked' || type === 'agent.tool_invoked') fields = TOOL_INVOKED;
  else if (type === 'api.request') fields = API_REQUEST;
  else if (typeof type === 'string' && SESSION_TYPES.has(type)) fields = SESSION_CONTROL;
  else return undefined;
  const keys = Object.keys(event);
  for (const key of keys) {
    const check = fields.checks.get(key);
    if (check === undefined || !check(event[key])) return undefined;
  }
  for (const key of fields.required) if (!Object.hasOwn(event, key)) return undefined;
  if (!event.api_key === !event.client_id) return undefined;
  if (fields !== SESSION_CONTROL) {
    for (const key of DEFAULT_KEYS) if (event[key] === undefined) event[key] = DEFAULTS[key];
  }
  return event as WireEvent;
}
