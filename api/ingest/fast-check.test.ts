import { describe, expect, it } from 'vitest';
import { wireEventSchema } from '../../schemas/events.js';
import { fastCheck } from './fast-check.js';

const recorded = '2026-03-31T14:26:59.045Z';

const VALID: Record<string, unknown>[] = [
  { event_type: 'mcp.tool_invoked', event_id: 'evt_1', api_key: 'sk_live_abcdefgh', recorded_timestamp: recorded, tool_name: 'search_docs' },
  {
    event_type: 'agent.tool_invoked',
    event_id: 'evt_2',
    client_id: 'cli_1',
    agent_id: 'agent-7',
    session_id: 'sess_1',
    recorded_timestamp: '2026-03-31T16:26:59+02:00',
    tool_name: 'transform_schema',
    mcp_server_id: 'mcp_a',
    execution_duration_ms: 847,
    execution_status: 'FAILED',
    input_tokens: 2400,
    output_tokens: 150,
    model: 'gpt-4o',
    error_type: 'timeout',
    error_message: null,
    retry_count: 2,
    is_parallel_call: true,
    parent_tool_invocation_id: null,
    agent_type: 'CLAUDE',
    metadata: { region: 'eu-west-1', n: 3, ok: true, none: null },
    tenant_id: 'ten_x',
    team_id: 'team x',
    customer_id: 'cus_x',
    subscription_id: 'sub_x',
    ingest_timestamp: recorded,
  },
  { event_type: 'api.request', event_id: 'evt_3', api_key: 'sk_live_abcdefgh', recorded_timestamp: recorded, tool_name: 'POST /v1/search', http_status: 201 },
  { event_type: 'session.completed', event_id: 'evt_4', api_key: 'sk_live_abcdefgh', recorded_timestamp: recorded, session_id: 'sess_1' },
  { event_type: 'session.failed', event_id: 'evt_5', client_id: 'cli_1', recorded_timestamp: recorded, session_id: 'sess_1', reason: 'gave up' },
];

/** Changes that each make an event invalid (or that the schema alone must judge). */
const MUTATIONS: [string, (e: Record<string, unknown>) => void][] = [
  ['unknown field', (e) => (e.imput_tokens = 5)],
  ['field named like a prototype member', (e) => Object.assign(e, JSON.parse('{"constructor": "x"}'))],
  ['both credentials', (e) => Object.assign(e, { api_key: 'sk_live_abcdefgh', client_id: 'cli_1' })],
  [
    'no credential',
    (e) => {
      delete e.api_key;
      delete e.client_id;
    },
  ],
  [
    'short api key',
    (e) => {
      delete e.client_id;
      e.api_key = 'short';
    },
  ],
  ['event id with a space', (e) => (e.event_id = 'evt 1')],
  ['empty event id', (e) => (e.event_id = '')],
  ['long event id', (e) => (e.event_id = 'e'.repeat(129))],
  ['no event id', (e) => delete e.event_id],
  ['bad timestamp', (e) => (e.recorded_timestamp = '2026-02-30T00:00:00Z')],
  ['timestamp without offset', (e) => (e.recorded_timestamp = '2026-03-31T14:26:59')],
  ['timestamp as a number', (e) => (e.recorded_timestamp = 1_700_000_000_000)],
  ['negative tokens', (e) => (e.input_tokens = -1)],
  ['fractional tokens', (e) => (e.output_tokens = 1.5)],
  ['tokens past the bound', (e) => (e.input_tokens = 1_000_000_000_001)],
  ['tokens as a string', (e) => (e.input_tokens = '5')],
  ['null duration', (e) => (e.execution_duration_ms = null)],
  ['unknown status', (e) => (e.execution_status = 'DONE')],
  ['unknown event type', (e) => (e.event_type = 'mcp.tool_called')],
  ['NUL in text', (e) => (e.error_type = 'a\u0000b')],
  ['lone surrogate in metadata', (e) => (e.metadata = { k: 'a\ud800' })],
  ['metadata value an object', (e) => (e.metadata = { k: { nested: 1 } })],
  ['metadata an array', (e) => (e.metadata = ['a'])],
  ['metadata NaN', (e) => (e.metadata = { k: Number.NaN })],
  ['unknown agent type', (e) => (e.agent_type = 'BARD')],
  ['http status out of range', (e) => (e.http_status = 700)],
  ['session event with a tool', (e) => Object.assign(e, { event_type: 'session.started', session_id: 's', tool_name: 'x' })],
  [
    'session event without a session',
    (e) => {
      e.event_type = 'session.paused';
      delete e.session_id;
      delete e.tool_name;
    },
  ],
  ['is_parallel_call as a string', (e) => (e.is_parallel_call = 'true')],
];

describe('fastCheck (the compiled check of the wire schema)', () => {
  it('accepts the valid events, as the schema parses them (defaults filled in)', () => {
    for (const event of VALID) {
      const fast = fastCheck(structuredClone(event));
      const parsed = wireEventSchema.safeParse(structuredClone(event));
      expect(parsed.success).toBe(true);
      expect(fast).toEqual(parsed.data);
    }
  });

  it('never accepts what the schema refuses: every invalid event goes to the schema, which words the errors', () => {
    for (const base of VALID) {
      for (const [name, mutate] of MUTATIONS) {
        const event = structuredClone(base);
        mutate(event);
        const fast = fastCheck(structuredClone(event));
        const parsed = wireEventSchema.safeParse(structuredClone(event));
        if (fast !== undefined) {
          expect(parsed.success, `${name} on ${base.event_id}: accepted by fastCheck, refused by the schema`).toBe(true);
          expect(fast, name).toEqual(parsed.data);
        }
        if (!parsed.success) expect(fast, name).toBeUndefined();
      }
    }
  });

  it('leaves anything that is not a plain event object to the schema', () => {
    for (const raw of [null, 1, 'x', [], new Date(), Object.create(null)]) expect(fastCheck(raw)).toBeUndefined();
  });
});
