import { describe, expect, it } from 'vitest';
import type { UsageEvent } from './events.js';
import { type Attribution, type LedgeredEvent, withPart } from './flow.js';

const call: UsageEvent = {
  tenantId: 'ten_1',
  eventId: 'evt_1',
  eventType: 'mcp.tool_invoked',
  credential: { kind: 'api_key', keyHash: 'a'.repeat(64) },
  ingestNonce: '0123456789abcdef',
  recordedAt: 1_772_000_000_000,
  ingestedAt: 1_772_000_000_500,
  reportedAgentId: 'agt_reported',
  sessionId: 'sess_1',
  toolName: 'search',
  mcpServerId: 'mcp_1',
  model: 'gpt-4o',
  durationMs: 120,
  status: 'SUCCESS',
  inputTokens: 300,
  outputTokens: 40,
  retryCount: 1,
  isParallel: true,
  parentInvocationId: 'evt_0',
  errorType: 'none',
  httpStatus: 200,
};
/** An API request as ingest writes it: the optional fields it lacks are there, undefined. */
const request: UsageEvent = {
  ...call,
  eventId: 'evt_2',
  eventType: 'api.request',
  reportedAgentId: undefined,
  sessionId: undefined,
  toolName: undefined,
  mcpServerId: undefined,
  model: undefined,
  parentInvocationId: undefined,
  errorType: undefined,
};
const attribution: Attribution = { customerId: 'cus_1', teamId: 'team_1', agentId: 'agt_1', credentialId: 'key_1' };
const subscription = { subscriptionId: 'sub_1', ratePlanId: 'rp_1', ratePlanVersionId: 'rpv_1', ratePlanVersion: 3, currency: 'USD', periodStart: 1, periodEnd: 2 };
const cost = { total: 12_500_000n, tool: 'search', breakdown: { tool: 12_500_000n } } as unknown as LedgeredEvent['cost'];

/** The five parts, added in flow order as the stages before the ledger add them. */
function ledgered(event: UsageEvent): LedgeredEvent {
  const resolved = withPart(event, { attribution });
  const attributed = withPart(resolved, { subscription });
  const priced = withPart(attributed, { cost });
  const checked = withPart(priced, { capCounters: [{ key: 'cap:1', by: 5n }] });
  return withPart(checked, { overCap: false });
}

describe('withPart', () => {
  it('forwards every field of the event and every part added so far, as a spread would', () => {
    for (const event of [call, request]) {
      const spread = { ...event, attribution, subscription, cost, capCounters: [{ key: 'cap:1', by: 5n }], overCap: false };
      expect(ledgered(event)).toStrictEqual(spread);
    }
  });

  it('keeps a falsy part (overCap false, no cap counters), and a later part does not undo an earlier one', () => {
    const checked = withPart(withPart(withPart(call, { attribution }), { capCounters: [] }), { overCap: false });
    expect(checked.overCap).toBe(false);
    expect(checked.capCounters).toEqual([]);
    expect(checked.attribution).toBe(attribution);
  });

  it('makes a new object and leaves its input as it was', () => {
    const input = Object.freeze({ ...call });
    const resolved = withPart(input, { attribution });
    expect(resolved).not.toBe(input);
    expect(input).toStrictEqual(call);
    expect(Object.hasOwn(input, 'attribution')).toBe(false);
  });

  it('gives every event one set of fields in one order, whatever optional fields it carries: one hidden class', () => {
    const keys = Object.keys(ledgered(call));
    expect(Object.keys(ledgered(request))).toEqual(keys);
    expect(Object.keys(withPart(request, { attribution }))).toEqual(keys);
    // A part not set yet is there, undefined, as ingest writes an optional field an event lacks.
    const resolved = withPart(call, { attribution }) as Partial<LedgeredEvent>;
    expect([resolved.subscription, resolved.cost, resolved.capCounters, resolved.overCap]).toEqual([undefined, undefined, undefined, undefined]);
  });
});
