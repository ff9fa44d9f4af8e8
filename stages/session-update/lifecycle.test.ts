import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { EventType } from '../../domain/events.js';
import { ledgeredEvent } from '../testing.js';
import { advanceSession, applyEvent, type SessionState } from './lifecycle.js';

const T0 = Date.UTC(2026, 2, 31, 14, 0, 0);
const at = (minutes: number) => T0 + minutes * 60_000;

function event(type: EventType, minute: number, overrides: Parameters<typeof ledgeredEvent>[0] = {}) {
  const usage = !type.startsWith('session.');
  return ledgeredEvent({
    eventType: type,
    recordedAt: at(minute),
    ...(usage ? {} : { toolName: undefined, durationMs: 0, inputTokens: 0, outputTokens: 0, cost: { total: 0n } }),
    ...overrides,
  });
}

const run = (...events: ReturnType<typeof event>[]): SessionState => events.reduce<SessionState | undefined>(applyEvent, undefined)!;

describe('applyEvent', () => {
  it('opens an ACTIVE session on the first tool invocation and counts it', () => {
    const s = run(event('mcp.tool_invoked', 0));
    expect(s).toMatchObject({
      status: 'ACTIVE',
      startedAt: at(0),
      lastEventAt: at(0),
      endedAt: null,
      events: 1,
      toolCalls: 1,
      inputTokens: 2400n,
      outputTokens: 150n,
      durationMs: 847n,
      errors: 0,
      costNano: 12_500_000n,
      customerId: 'cus_test',
      agentId: 'agt_test',
      appId: null,
    });
  });

  it('takes started as the earliest and last as the latest event time, whatever the arrival order', () => {
    const s = run(event('mcp.tool_invoked', 5), event('mcp.tool_invoked', 2), event('mcp.tool_invoked', 9), event('mcp.tool_invoked', 7));
    expect(s.startedAt).toBe(at(2));
    expect(s.lastEventAt).toBe(at(9));
    expect(s.toolCalls).toBe(4);
  });

  it('counts errors for usage events that did not succeed, and no tool call for control events', () => {
    const s = run(
      event('mcp.tool_invoked', 0, { status: 'FAILED' }),
      event('agent.tool_invoked', 1, { status: 'TIMEOUT' }),
      event('api.request', 2),
      event('session.paused', 3),
      event('session.resumed', 4),
    );
    expect(s).toMatchObject({ events: 5, toolCalls: 3, errors: 2, status: 'ACTIVE' });
    expect(s.costNano).toBe(3n * 12_500_000n);
  });

  it('pauses, and a newer invocation or a resume makes the session ACTIVE again', () => {
    const paused = run(event('mcp.tool_invoked', 0), event('session.paused', 1));
    expect(paused.status).toBe('PAUSED');
    expect(applyEvent(paused, event('mcp.tool_invoked', 2)).status).toBe('ACTIVE');
    expect(applyEvent(paused, event('session.resumed', 2)).status).toBe('ACTIVE');
  });

  it('does not let an invocation recorded before the pause undo it (it still counts)', () => {
    const s = run(event('mcp.tool_invoked', 0), event('session.paused', 5), event('mcp.tool_invoked', 3));
    expect(s.status).toBe('PAUSED');
    expect(s.toolCalls).toBe(2);
    expect(s.lastEventAt).toBe(at(5));
  });

  it('ignores a pause recorded before activity already seen', () => {
    const s = run(event('mcp.tool_invoked', 0), event('mcp.tool_invoked', 6), event('session.paused', 4));
    expect(s.status).toBe('ACTIVE');
    expect(s.events).toBe(3);
  });

  it('reactivates an IDLE session on a newer event only', () => {
    const idle: SessionState = { ...run(event('mcp.tool_invoked', 0)), status: 'IDLE' };
    expect(applyEvent(idle, event('mcp.tool_invoked', -1)).status).toBe('IDLE');
    expect(applyEvent(idle, event('mcp.tool_invoked', 12)).status).toBe('ACTIVE');
  });

  it('ends on completed or failed even when recorded before later activity', () => {
    const completed = run(event('mcp.tool_invoked', 0), event('mcp.tool_invoked', 10), event('session.completed', 8));
    expect(completed).toMatchObject({ status: 'COMPLETED', endedAt: at(8), lastEventAt: at(10), lateEvents: 0 });
    const failed = run(event('mcp.tool_invoked', 0), event('session.failed', 1));
    expect(failed).toMatchObject({ status: 'FAILED', endedAt: at(1) });
  });

  it('never reopens an ended session; late events count toward its totals and are marked late', () => {
    const ended = run(event('mcp.tool_invoked', 0), event('session.completed', 1));
    const late = [event('mcp.tool_invoked', 2), event('session.resumed', 3), event('session.failed', 4)].reduce(applyEvent, ended);
    expect(late).toMatchObject({ status: 'COMPLETED', endedAt: at(1), lastEventAt: at(4), toolCalls: 2, events: 5, lateEvents: 3 });
    const expired: SessionState = { ...run(event('mcp.tool_invoked', 0)), status: 'EXPIRED', endedAt: at(0) };
    expect(applyEvent(expired, event('mcp.tool_invoked', 90))).toMatchObject({ status: 'EXPIRED', toolCalls: 2, lateEvents: 1 });
  });

  it('opens a session from a control event too', () => {
    expect(run(event('session.paused', 0)).status).toBe('PAUSED');
    expect(run(event('session.completed', 0))).toMatchObject({ status: 'COMPLETED', endedAt: at(0), toolCalls: 0 });
  });
});

describe('advanceSession', () => {
  it('applies a batch in event-time order, usage before control events of the same millisecond', () => {
    const s = advanceSession(undefined, [event('session.paused', 2), event('mcp.tool_invoked', 2), event('mcp.tool_invoked', 1)]);
    expect(s.status).toBe('PAUSED');
  });

  it('gives the same session whatever the order of the batch', () => {
    const types: EventType[] = ['mcp.tool_invoked', 'api.request', 'session.paused', 'session.resumed', 'session.completed', 'session.failed'];
    const arbEvent = fc.record({ type: fc.constantFrom(...types), minute: fc.integer({ min: 0, max: 20 }), failed: fc.boolean() });
    fc.assert(
      fc.property(fc.array(arbEvent, { minLength: 1, maxLength: 12 }), fc.array(fc.integer(), { minLength: 12, maxLength: 12 }), (specs, keys) => {
        const events = specs.map((s) => event(s.type, s.minute, s.failed ? { status: 'FAILED' } : {}));
        const shuffled = events.map((e, i) => ({ e, k: keys[i] })).sort((a, b) => a.k - b.k).map(({ e }) => e);
        expect(advanceSession(undefined, shuffled)).toEqual(advanceSession(undefined, events));
      }),
      { numRuns: 200 },
    );
  });
});
