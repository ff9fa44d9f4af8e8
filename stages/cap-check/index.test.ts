import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePayload, encodePayload } from '../../pipeline/codec.js';
import { runStage } from '../../pipeline/harness.js';
import { STREAMS } from '../../store/streams.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { createLogger } from '../../pipeline/logger.js';
import { Metrics } from '../../pipeline/metrics.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { seedSmall, usageEvent } from '../../test/support/billing.js';
import type { SeededTenant } from '../../ops/seed.js';
import type { CheckedEvent, PricedEvent } from '../../domain/flow.js';
import { stageEntries, testStageContext } from '../testing.js';
import { capCheckStage } from './index.js';
import { capCounterKey } from '../../store/caps.js';
import { pauseKey, type PauseRecord } from '../../store/pauses.js';
import { sessionsInUseKey } from '../../store/authorizer.js';

let world: Isolated;
let tenant: SeededTenant;

beforeAll(async () => {
  world = await isolated('cap-check');
  // Per agent and day: 1.00; per session: 0.50 (alert only).
  tenant = await seedSmall(world.sql, {
    caps: [
      { scope: 'agent', period: 'day', limitNano: 1_000_000_000n },
      { scope: 'agent', period: 'session', limitNano: 500_000_000n, action: 'alert' },
    ],
  });
});
afterAll(() => world.cleanup());

function priced(cost: bigint, sessionId = 'sess_a'): PricedEvent {
  const customer = tenant.customers[0];
  const team = customer.teams[0];
  const agent = team.agents[0];
  return {
    ...usageEvent(tenant.tenantId, agent, { sessionId, recordedAt: Date.now() }),
    attribution: { customerId: customer.id, teamId: team.id, agentId: agent.id, credentialId: 'key' },
    subscription: {
      subscriptionId: customer.subscriptionId,
      ratePlanId: tenant.ratePlanId,
      ratePlanVersionId: tenant.ratePlanVersionId,
      ratePlanVersion: 1,
      currency: 'USD',
      periodStart: 0,
      periodEnd: 0,
    },
    cost: { total: cost, tool: 'transform_schema', breakdown: { tool: cost, input_tokens: 0n, output_tokens: 0n, duration: 0n } },
  };
}

describe('cap-check', () => {
  it('keeps running totals once per event, pauses the agent the moment its cap is crossed, and flags later events', async () => {
    const { config, redis } = world;
    const input = partitionedKey(config.REDIS_PREFIX, STREAMS.priced, 0);
    const output = partitionedKey(config.REDIS_PREFIX, STREAMS.checked, 0);
    const events = [300_000_000n, 300_000_000n, 300_000_000n, 300_000_000n, 50_000_000n].map((c) => priced(c));
    for (const event of events) await redis.xadd(input, '*', 'd', encodePayload(event));
    const stage = await runStage(capCheckStage, {
      config: { ...config, BLOCK_MS: 100 },
      log: createLogger('test', 'silent'),
      metrics: new Metrics('test'),
      topology: [
        { stream: STREAMS.priced, group: 'cap-check' },
        { stream: STREAMS.checked, group: 'ledger-write' },
      ],
    });
    const deadline = Date.now() + 10_000;
    while ((await redis.xlen(output)) < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await stage.stop();

    const entries = (await redis.xrangeBuffer(output, '-', '+')) as [Buffer, Buffer[]][];
    expect(entries.length).toBe(5);
    const dayCap = tenant.caps.find((c) => c.period === 'day')!;
    const sessionCap = tenant.caps.find((c) => c.period === 'session')!;
    const tags = entries.map(([, fields]) => (fields[3] ? fields[3].toString().split(',').sort() : []));
    // Totals 0.30, 0.60 (session cap 0.50 reached), 0.90, 1.20 (day cap 1.00 crossed: pause), 1.25.
    // The fifth event arrives while the agent is paused: it is counted, forwarded (billed) and tagged over the cap
    // (ledger-write writes the tag as over_cap = true); authorize is what refuses the next call.
    expect(tags).toEqual([
      [],
      [`cap:${sessionCap.id}`],
      [`cap:${sessionCap.id}`],
      [`cap:${dayCap.id}`, `cap:${sessionCap.id}`].sort(),
      [`cap:${dayCap.id}`, `cap:${sessionCap.id}`].sort(),
    ]);
    const checked = decodePayload<CheckedEvent>(entries[0][1][1]);
    expect(checked.capCounters.map((c) => c.by)).toEqual([300_000_000n, 300_000_000n]);

    const day = new Date().toISOString().slice(0, 10);
    const counter = partitionedKey(config.REDIS_PREFIX, capCounterKey({ ...dayCap, tenantId: tenant.tenantId } as never, day), 0);
    expect(await redis.get(counter)).toBe('1250000000');
    const agentId = tenant.customers[0].teams[0].agents[0].id;
    const flag = await redis.get(partitionedKey(config.REDIS_PREFIX, pauseKey(tenant.tenantId, 'agent', agentId), 0));
    expect(JSON.parse(flag!) as PauseRecord).toMatchObject({ capId: dayCap.id, scopeKind: 'agent', scopeId: agentId, eventId: events[3].eventId });
    expect(await redis.ttl(partitionedKey(config.REDIS_PREFIX, pauseKey(tenant.tenantId, 'agent', agentId), 0))).toBeGreaterThan(0);
    const [pause] = await world.sql`SELECT * FROM cap_pauses WHERE tenant_id = ${tenant.tenantId}`;
    expect(pause).toMatchObject({ cap_id: dayCap.id, scope_kind: 'agent', scope_id: agentId, period_key: day, event_id: events[3].eventId });
    // An alert cap flags but does not pause.
    expect(await redis.exists(partitionedKey(config.REDIS_PREFIX, pauseKey(tenant.tenantId, 'session', 'sess_a'), 0))).toBe(0);
  });

  it('enforces the caps of a tenant created after the stage started, without a control message or a restart (issue 9, defect 8)', async () => {
    const context = testStageContext('cap-check', world);
    const handler = await capCheckStage.setup(context);
    try {
      // Created while the stage runs, by a seed (no caps.changed announced).
      const late = await seedSmall(world.sql, { caps: [{ scope: 'agent', period: 'day', limitNano: 1_000n }] });
      const customer = late.customers[0];
      const agent = customer.teams[0].agents[0];
      const event: PricedEvent = {
        ...priced(5_000n),
        ...usageEvent(late.tenantId, agent, { recordedAt: Date.now() }),
        attribution: { customerId: customer.id, teamId: customer.teams[0].id, agentId: agent.id, credentialId: 'key' },
      };
      const [result] = await handler.handle(stageEntries([event]));
      expect(result.counters?.map((c) => c.limit)).toEqual([1_000n]);
    } finally {
      await handler.close?.();
      await context.close();
    }
  });

  it('frees the sessions that ended for max_concurrent_sessions once acked, several of one agent at once, and no other', async () => {
    const context = testStageContext('cap-check', world);
    const handler = await capCheckStage.setup(context);
    const { redis, config } = world;
    const agentId = tenant.customers[0].teams[0].agents[0].id;
    const inUse = partitionedKey(config.REDIS_PREFIX, sessionsInUseKey(tenant.tenantId, `agent:${agentId}`), 0);
    const otherAgent = partitionedKey(config.REDIS_PREFIX, sessionsInUseKey(tenant.tenantId, 'agent:agt_other'), 0);
    try {
      await redis.zadd(inUse, Date.now(), 'sess_done_1', Date.now(), 'sess_done_2', Date.now(), 'sess_running', Date.now(), 'sess_unacked');
      await redis.zadd(otherAgent, Date.now(), 'sess_done_1');
      const ended = (sessionId: string, eventType: PricedEvent['eventType']) => ({ ...priced(1n, sessionId), eventType });
      const batch = stageEntries([
        ended('sess_done_1', 'session.completed'),
        ended('sess_running', 'mcp.tool_invoked'),
        ended('sess_done_2', 'session.failed'),
        ended('sess_unacked', 'session.completed'),
      ]);
      const results = await handler.handle(batch);
      // The last entry was acked by another consumer: its session is that consumer's to free.
      await handler.afterAck!(batch, results.map((_, i) => ({ acked: i !== 3, crossed: [] })));
      expect((await redis.zrange(inUse, 0, -1)).sort()).toEqual(['sess_running', 'sess_unacked']);
      expect(await redis.zrange(otherAgent, 0, -1)).toEqual(['sess_done_1']);
    } finally {
      await redis.del(inUse, otherAgent);
      await handler.close?.();
      await context.close();
    }
  });
});
