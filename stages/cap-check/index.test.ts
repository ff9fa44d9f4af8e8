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
import { liftPause, setPause } from '../../store/pause-flags.js';
import { AttributionResolver } from '../../store/attribution.js';
import { TenantTokens } from '../../store/tenant-tokens.js';
import { newId } from '../../store/credentials.js';
import { createAuthorizeRoutes, type AuthorizeReply } from '../../api/authorize.js';

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

function priced(cost: bigint, sessionId = 'sess_a', of: SeededTenant = tenant): PricedEvent {
  const customer = of.customers[0];
  const team = customer.teams[0];
  const agent = team.agents[0];
  return {
    ...usageEvent(of.tenantId, agent, { sessionId, recordedAt: Date.now() }),
    attribution: { customerId: customer.id, teamId: team.id, agentId: agent.id, credentialId: 'key' },
    subscription: {
      subscriptionId: customer.subscriptionId,
      ratePlanId: of.ratePlanId,
      ratePlanVersionId: of.ratePlanVersionId,
      ratePlanVersion: 1,
      currency: 'USD',
      periodStart: 0,
      periodEnd: 0,
    },
    cost: { total: cost, tool: 'transform_schema', breakdown: { tool: cost, input_tokens: 0n, output_tokens: 0n, duration: 0n } },
  };
}

/** Runs the cap-check stage (the harness: its ack script sets the pause flags) until these events are forwarded. */
async function checkThroughStage(events: PricedEvent[]): Promise<void> {
  const { config, redis } = world;
  const input = partitionedKey(config.REDIS_PREFIX, STREAMS.priced, 0);
  const output = partitionedKey(config.REDIS_PREFIX, STREAMS.checked, 0);
  const expected = (await redis.xlen(output)) + events.length;
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
  while ((await redis.xlen(output)) < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await stage.stop();
}

/** The tenant's outbox rows of one webhook type, oldest first, with the transaction that wrote each (xmin). */
async function webhooksOf(tenantId: string, type: 'cap.paused' | 'cap.lifted') {
  const rows = await world.sql<{ payload: string; xmin: string }[]>`
    SELECT payload, xmin::text AS xmin FROM webhook_events WHERE tenant_id = ${tenantId} AND type = ${type} ORDER BY created_at, id`;
  return rows.map((r) => ({ data: JSON.parse(r.payload).data as Record<string, unknown>, xmin: r.xmin }));
}

async function pauseRecords(tenantId: string) {
  return world.sql<{ cap_id: string; scope_kind: string; scope_id: string; period_key: string; event_id: string; paused_at: Date; period_ends_at: Date | null; xmin: string }[]>`
    SELECT cap_id, scope_kind, scope_id, period_key, event_id, paused_at, period_ends_at, xmin::text AS xmin
    FROM cap_pauses WHERE tenant_id = ${tenantId} ORDER BY paused_at, scope_id`;
}

/** When a flag expires (epoch ms), as Redis counts it. */
async function flagExpiry(key: string): Promise<number> {
  const ttl = await world.redis.pttl(key);
  expect(ttl, `${key} has an expiry`).toBeGreaterThan(0);
  return Date.now() + ttl;
}

/**
 * A flag set by the ack script expires at its period's end rounded up to the whole second the
 * script takes (EX), plus the moment between the batch's handling and its ack: never before the end.
 */
function expectEndsWithPeriod(expiry: number, periodEnd: number): void {
  expect(expiry).toBeGreaterThanOrEqual(periodEnd - 5);
  expect(expiry).toBeLessThan(periodEnd + 1_200);
}

/** Starts cap-check (its setup reconciles the pause flags with their records) and stops it. */
async function startCapCheck(): Promise<void> {
  const context = testStageContext('cap-check', world);
  const handler = await capCheckStage.setup(context);
  await handler.close?.();
  await context.close();
}

async function pauseRecordOf(tenantId: string, capId: string) {
  const [row] = await world.sql<{ paused_at: Date; lifted_at: Date | null; lifted_by: string | null; event_id: string; xmin: string }[]>`
    SELECT paused_at, lifted_at, lifted_by, event_id, xmin::text AS xmin FROM cap_pauses WHERE tenant_id = ${tenantId} AND cap_id = ${capId}`;
  return row;
}

/** A tenant with a day cap on its agent, paused by setPause (a limit lowered under the total) and then lifted by an admin. */
async function pausedThenLifted() {
  const of = await seedSmall(world.sql, { customers: 1, caps: [{ scope: 'agent', period: 'day', limitNano: 1_000n }] });
  const place = { prefix: world.config.REDIS_PREFIX, partitions: world.config.PARTITIONS };
  const agentId = of.customers[0].teams[0].agents[0].id;
  const day = new Date().toISOString().slice(0, 10);
  const pause = {
    tenantId: of.tenantId, capId: of.caps[0].id, scopeKind: 'agent' as const, scopeId: agentId, period: 'day' as const, periodKey: day,
    limitNano: '1000', eventId: '', pausedAt: Date.now(), customerId: of.customers[0].id, endsAt: Date.parse(`${day}T00:00:00Z`) + 86_400_000,
  };
  await setPause(world.sql, world.redis, place, pause);
  const flag = partitionedKey(world.config.REDIS_PREFIX, pauseKey(of.tenantId, 'agent', agentId), 0);
  const held = { value: (await world.redis.get(flag))!, ttl: await world.redis.pttl(flag) };
  expect(await liftPause(world.sql, world.redis, place, of.tenantId, { capId: pause.capId, scopeId: agentId, periodKey: day })).toMatchObject({ flagDeleted: true });
  const lifted = await pauseRecordOf(of.tenantId, pause.capId);
  expect(lifted.lifted_at).not.toBeNull();
  return { of, pause, flag, held, lifted };
}

describe('cap-check', () => {
  it('keeps running totals once per event, pauses the agent the moment its cap is crossed, and flags later events', async () => {
    const { config, redis } = world;
    const output = partitionedKey(config.REDIS_PREFIX, STREAMS.checked, 0);
    const events = [300_000_000n, 300_000_000n, 300_000_000n, 300_000_000n, 50_000_000n].map((c) => priced(c));
    await checkThroughStage(events);

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
    const endOfDay = Date.parse(`${day}T00:00:00Z`) + 86_400_000;
    expectEndsWithPeriod(await flagExpiry(partitionedKey(config.REDIS_PREFIX, pauseKey(tenant.tenantId, 'agent', agentId), 0)), endOfDay);
    const [pause, ...others] = await pauseRecords(tenant.tenantId);
    expect(others).toEqual([]);
    expect(pause).toMatchObject({ cap_id: dayCap.id, scope_kind: 'agent', scope_id: agentId, period_key: day, event_id: events[3].eventId, period_ends_at: new Date(endOfDay) });
    // One cap.paused in the outbox, written in the transaction that recorded the pause (the same xmin).
    const paused = await webhooksOf(tenant.tenantId, 'cap.paused');
    expect(paused).toEqual([
      {
        data: {
          cap_id: dayCap.id,
          scope_kind: 'agent',
          scope_id: agentId,
          period_key: day,
          limit: '1',
          event_id: events[3].eventId,
          customer_id: tenant.customers[0].id,
          paused_at: pause.paused_at.toISOString(),
        },
        xmin: pause.xmin,
      },
    ]);
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

  it('pauses a month cap until the first of next month (UTC): the flag and the record end with the period', async () => {
    const monthly = await seedSmall(world.sql, { caps: [{ scope: 'customer', period: 'month', limitNano: 100n }] });
    const customerId = monthly.customers[0].id;
    const event = priced(250n, 'sess_m', monthly);
    await checkThroughStage([event]);

    const now = new Date();
    const endOfMonth = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
    expectEndsWithPeriod(await flagExpiry(partitionedKey(world.config.REDIS_PREFIX, pauseKey(monthly.tenantId, 'customer', customerId), 0)), endOfMonth);
    const [record] = await pauseRecords(monthly.tenantId);
    expect(record).toMatchObject({ cap_id: monthly.caps[0].id, scope_kind: 'customer', scope_id: customerId, period_key: now.toISOString().slice(0, 7), period_ends_at: new Date(endOfMonth) });
    expect((await webhooksOf(monthly.tenantId, 'cap.paused')).map((w) => [w.data.scope_id, w.data.limit, w.data.event_id, w.xmin])).toEqual([
      [customerId, '0.0000001', event.eventId, record.xmin],
    ]);
  });

  it('records on start the pauses whose flag was set but whose record was lost (a crash between the two), with their cap.paused, once', async () => {
    const crashed = await seedSmall(world.sql, { caps: [{ scope: 'agent', period: 'day', limitNano: 1_000n }] });
    const { config, redis } = world;
    const agentId = crashed.customers[0].teams[0].agents[0].id;
    const customerId = crashed.customers[0].id;
    const now = Date.now();
    const day = new Date(now).toISOString().slice(0, 10);
    const endOfDay = Date.parse(`${day}T00:00:00Z`) + 86_400_000;
    // What the ack script leaves when cap-check is killed before afterAck: the flags, holding their records.
    const dayPause: PauseRecord = {
      tenantId: crashed.tenantId, capId: crashed.caps[0].id, scopeKind: 'agent', scopeId: agentId, period: 'day', periodKey: day,
      limitNano: '1000', eventId: 'evt_crossed', pausedAt: now, customerId, endsAt: endOfDay,
    };
    // A rolling pause's record names the latest it can end; the script's expiry says when it does.
    const rollingPause: PauseRecord = {
      tenantId: crashed.tenantId, capId: 'cap_rolling', scopeKind: 'team', scopeId: crashed.customers[0].teams[0].id, period: 'rolling', periodKey: 'w',
      limitNano: '500', eventId: 'evt_crossed_rolling', pausedAt: now, customerId, endsAt: now + 3_600_000,
    };
    const dayFlag = partitionedKey(config.REDIS_PREFIX, pauseKey(crashed.tenantId, 'agent', agentId), 0);
    const rollingFlag = partitionedKey(config.REDIS_PREFIX, pauseKey(crashed.tenantId, 'team', rollingPause.scopeId), 0);
    await redis.set(dayFlag, JSON.stringify(dayPause), 'EX', Math.ceil((endOfDay - now) / 1000));
    await redis.set(rollingFlag, JSON.stringify(rollingPause), 'PX', 1_200_000);
    expect(await pauseRecords(crashed.tenantId)).toEqual([]);

    const startStage = async () => {
      const context = testStageContext('cap-check', world);
      const handler = await capCheckStage.setup(context);
      await handler.close?.();
      await context.close();
    };
    await startStage();
    const records = await pauseRecords(crashed.tenantId);
    expect(records).toEqual([
      expect.objectContaining({ cap_id: crashed.caps[0].id, scope_kind: 'agent', scope_id: agentId, period_key: day, event_id: 'evt_crossed', period_ends_at: new Date(endOfDay) }),
      expect.objectContaining({ cap_id: 'cap_rolling', scope_kind: 'team', scope_id: rollingPause.scopeId, period_key: 'w', event_id: 'evt_crossed_rolling' }),
    ]);
    expect(Math.abs(records[1].period_ends_at!.getTime() - (now + 1_200_000))).toBeLessThan(1_000);
    // One transaction wrote both: order them as the records (by scope).
    const paused = (await webhooksOf(crashed.tenantId, 'cap.paused')).sort((a, b) => String(a.data.scope_id).localeCompare(String(b.data.scope_id)));
    expect(paused.map((w) => [w.data.cap_id, w.data.scope_id, w.data.event_id, w.data.paused_at])).toEqual([
      [crashed.caps[0].id, agentId, 'evt_crossed', new Date(now).toISOString()],
      ['cap_rolling', rollingPause.scopeId, 'evt_crossed_rolling', new Date(now).toISOString()],
    ]);
    expect(paused.map((w) => w.xmin)).toEqual(records.map((r) => r.xmin));

    // A second start (or a restart after a clean stop) finds the records in place: nothing more.
    await startStage();
    expect(await pauseRecords(crashed.tenantId)).toEqual(records);
    expect(await webhooksOf(crashed.tenantId, 'cap.paused')).toEqual(expect.arrayContaining(paused));
    expect(await webhooksOf(crashed.tenantId, 'cap.paused')).toHaveLength(2);
  });
  it('on start, settles a flag a lift cut short left (lifted in PostgreSQL, killed before Redis): the record stays lifted, no second cap.paused', async () => {
    const { of, pause, flag, held, lifted } = await pausedThenLifted();
    // The lift's Redis half never ran: the flag is as it was, naming the pause its record says lifted.
    await world.redis.set(flag, held.value, 'PX', held.ttl);
    // And, in the same start, a flag whose record was lost (a crash after the ack script): recorded as ever.
    const teamId = of.customers[0].teams[0].id;
    const lost: PauseRecord = { ...pause, capId: 'cap_lost', scopeKind: 'team', scopeId: teamId, eventId: 'evt_lost', pausedAt: Date.now() };
    const lostFlag = partitionedKey(world.config.REDIS_PREFIX, pauseKey(of.tenantId, 'team', teamId), 0);
    await world.redis.set(lostFlag, JSON.stringify(lost), 'PX', 600_000);

    await startCapCheck();
    expect(await pauseRecordOf(of.tenantId, pause.capId)).toEqual(lifted);
    expect(await world.redis.exists(flag)).toBe(0);
    const paused = await webhooksOf(of.tenantId, 'cap.paused');
    expect(paused.map((w) => [w.data.cap_id, w.data.event_id])).toEqual([
      [pause.capId, ''],
      ['cap_lost', 'evt_lost'],
    ]);
    expect(await pauseRecordOf(of.tenantId, 'cap_lost')).toMatchObject({ lifted_at: null, event_id: 'evt_lost' });
    expect(await world.redis.exists(lostFlag)).toBe(1);
  });

  it('on start, a flag paused after its record was lifted (setPause killed between its flag and its record) re-opens the record, with its cap.paused', async () => {
    const { of, pause, flag, held, lifted } = await pausedThenLifted();
    const again: PauseRecord = { ...pause, eventId: 'evt_again', pausedAt: lifted.lifted_at!.getTime() + 1_000 };
    await world.redis.set(flag, JSON.stringify(again), 'PX', held.ttl);

    await startCapCheck();
    expect(await world.redis.get(flag)).toBe(JSON.stringify(again));
    expect(await pauseRecordOf(of.tenantId, pause.capId)).toMatchObject({ lifted_at: null, lifted_by: null, event_id: 'evt_again', paused_at: new Date(again.pausedAt) });
    expect((await webhooksOf(of.tenantId, 'cap.paused')).map((w) => w.data.event_id)).toEqual(['', 'evt_again']);
  });

  it('settles the reservation of an event that costs nothing as it does a priced one, once, and only for an entry it acked', async () => {
    // A hard day cap of 1.00 on the agent, an alert cap per session and a rolling one on the team: authorize reserves on each.
    const free = await seedSmall(world.sql, {
      customers: 1,
      caps: [
        { scope: 'agent', period: 'day', limitNano: 1_000_000_000n },
        { scope: 'agent', period: 'session', limitNano: 5_000_000_000n, action: 'alert' },
      ],
    });
    const rollingId = newId('cap');
    await world.sql`
      INSERT INTO spend_caps (id, tenant_id, scope_kind, scope_id, period, limit_nano, action, window_seconds)
      VALUES (${rollingId}, ${free.tenantId}, 'team', ${free.customers[0].teams[0].id}, 'rolling', 5000000000, 'alert', 60)`;
    const agent = free.customers[0].teams[0].agents[0];
    const routes = createAuthorizeRoutes({
      config: world.config,
      redis: world.redis,
      resolver: new AttributionResolver(world.sql, world.redis, world.config.REDIS_PREFIX, 60),
      tokens: new TenantTokens(world.sql),
      sql: world.sql,
      leaseMs: 0,
    });
    const decide = async (body: Record<string, unknown>) => {
      const res = await routes.app.request('/v1/authorize', {
        method: 'POST',
        headers: { authorization: `Bearer ${free.ingestToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ api_key: agent.apiKey, session_id: 'sess_free', ...body }),
      });
      expect(res.status).toBe(200);
      return (await res.json()) as AuthorizeReply;
    };
    const reserved = async () => (await decide({})).caps?.map((c) => [c.cap_id, c.spent, c.reserved]).sort();
    const standing = (spent: string, held: string) => [free.caps[0].id, free.caps[1].id, rollingId].map((id) => [id, spent, held]).sort();
    const context = testStageContext('cap-check', world);
    const handler = await capCheckStage.setup(context);
    // Acks the batch as the harness does (acked: false for an entry another consumer acked first), then settles it.
    const check = async (events: PricedEvent[], acked = true) => {
      const batch = stageEntries(events);
      const results = await handler.handle(batch);
      await handler.afterAck!(batch, results.map(() => ({ acked, crossed: [] })));
      return results;
    };
    try {
      const call = priced(0n, 'sess_free', free);
      const asked = await decide({ estimated_cost: '0.8', event_id: call.eventId });
      expect(asked).toMatchObject({ allowed: true, reservation: { id: call.eventId, amount: '0.8' } });
      expect(await reserved()).toEqual(standing('0', '0.8'));

      // A redelivery of the entry that another consumer acked releases nothing: that consumer settles it.
      await check([call], false);
      expect(await reserved()).toEqual(standing('0', '0.8'));

      // The free call counts nothing (no counter effect, not even of 0) and releases its reservation on every cap.
      const [result] = await check([call]);
      expect(result.counters).toEqual([]);
      expect(await reserved()).toEqual(standing('0', '0'));
      expect(await decide({ estimated_cost: '0.5', event_id: 'evt_next' })).toMatchObject({ allowed: true, reservation: { id: 'evt_next' } });
      expect(await reserved()).toEqual(standing('0', '0.5'));

      // Settled once: the free event counted again releases no other reservation (evt_next is its own event's to settle).
      await check([call]);
      expect(await reserved()).toEqual(standing('0', '0.5'));
      // A priced event settles as before (its counter effects are the ack script's, not run here).
      const [pricedResult] = await check([{ ...priced(100_000_000n, 'sess_free', free), eventId: 'evt_next' }]);
      expect(pricedResult.counters?.map((c) => c.by)).toEqual([100_000_000n, 100_000_000n, 100_000_000n]);
      expect(await reserved()).toEqual(standing('0', '0'));
    } finally {
      await handler.close?.();
      await context.close();
      await routes.close();
    }
  });
});
