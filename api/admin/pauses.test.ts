import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../pipeline/metrics.js';
import { subscribeControl, type ControlSubscription } from '../../pipeline/control.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { announceLimitFlag } from '../../pipeline/admission-leases.js';
import { capCounterKey, capLiftedKey, type SpendCap } from '../../store/caps.js';
import { liftPause, recordPauses, recordRolledOverPauses } from '../../store/pause-flags.js';
import { pauseKey, type PauseRecord } from '../../store/pauses.js';
import type { Redis } from '../../pipeline/redis.js';
import { rotateTenantToken } from '../../store/tenants.js';
import { capCheckStage } from '../../stages/cap-check/index.js';
import { testStageContext } from '../../stages/testing.js';
import type { SeededTenant } from '../../ops/seed.js';
import { seedSmall } from '../../test/support/billing.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { createApp } from '../server.js';
import type { AuthorizeReply } from '../authorize.js';

let world: Isolated;
let tenant: SeededTenant;
let api: ReturnType<typeof createApp>;
let control: ControlSubscription;

beforeAll(async () => {
  world = await isolated('admin-pauses');
  tenant = await seedSmall(world.sql, { customers: 1, teamsPerCustomer: 1, agentsPerTeam: 8, appsPerTeam: 0 });
  api = createApp({ config: world.config, sql: world.sql, redis: world.redis, log: pino({ level: 'silent' }), metrics: new Metrics('pauses-test') });
  // As api/main.ts does: the process applies control messages (caps.changed) to its caches.
  control = subscribeControl(world.config.REDIS_URL, world.config.REDIS_PREFIX, api.applyControl);
  await control.ready;
});
afterAll(async () => {
  await control?.close();
  await world?.cleanup();
});

async function call(method: string, path: string, token: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await api.app.request(path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: await res.json() };
}

const admin = (method: string, path: string, body?: unknown) => call(method, `/v1/admin${path}`, tenant.adminToken, body);

async function authorize(apiKey: string): Promise<AuthorizeReply> {
  return (await call('POST', '/v1/authorize', tenant.ingestToken, { api_key: apiKey })).body as AuthorizeReply;
}

function agent(i: number) {
  return tenant.customers[0].teams[0].agents[i];
}

const today = () => new Date().toISOString().slice(0, 10);

/** A day cap of 1.00 on the agent whose running total is already 1.50. */
async function overCap(agentId: string): Promise<SpendCap> {
  const reply = await admin('POST', '/spend-caps', { scope_kind: 'agent', scope_id: agentId, period: 'day', limit: '100' });
  expect(reply.status).toBe(201);
  const cap: SpendCap = { id: reply.body.id, tenantId: tenant.tenantId, scopeKind: 'agent', scopeId: agentId, period: 'day', limitNano: 1_000_000_000n, action: 'pause' };
  await world.redis.set(partitionedKey(world.config.REDIS_PREFIX, capCounterKey(cap, today()), 0), '1500000000');
  // Lowered under the running total: paused at once, as cap-check would at the crossing.
  expect((await admin('PATCH', `/spend-caps/${cap.id}`, { limit: '1' })).status).toBe(200);
  return cap;
}

async function pauseRows(capId: string) {
  return world.sql`SELECT lifted_at, lifted_by, lift_reason FROM cap_pauses WHERE tenant_id = ${tenant.tenantId} AND cap_id = ${capId}`;
}

/** The transaction that last wrote the cap's pause record of the scope (xmin). */
async function recordXmin(capId: string, scopeId: string): Promise<string> {
  const [row] = await world.sql<{ xmin: string }[]>`
    SELECT xmin::text AS xmin FROM cap_pauses WHERE tenant_id = ${tenant.tenantId} AND cap_id = ${capId} AND scope_id = ${scopeId}`;
  return row.xmin;
}

/** The cap's outbox rows of one webhook type, oldest first, with the transaction that wrote each (xmin). */
async function webhooksOf(type: 'cap.paused' | 'cap.lifted', capId: string) {
  const rows = await world.sql<{ payload: string; xmin: string }[]>`
    SELECT payload, xmin::text AS xmin FROM webhook_events
    WHERE tenant_id = ${tenant.tenantId} AND type = ${type} AND (payload::jsonb -> 'data' ->> 'cap_id') = ${capId}
    ORDER BY created_at, id`;
  return rows.map((r) => ({ data: JSON.parse(r.payload).data as Record<string, unknown>, xmin: r.xmin }));
}

/** The one cap.lifted of the cap so far, written with the lift (the same transaction as the record's update). */
async function expectOneLift(cap: SpendCap, scopeId: string, lift: Record<string, unknown>): Promise<void> {
  expect(await webhooksOf('cap.lifted', cap.id)).toEqual([
    {
      data: {
        cap_id: cap.id,
        scope_kind: 'agent',
        scope_id: scopeId,
        period_key: today(),
        customer_id: tenant.customers[0].id,
        lifted_by_token_id: null,
        lifted_at: expect.any(String),
        ...lift,
      },
      xmin: await recordXmin(cap.id, scopeId),
    },
  ]);
}

/**
 * A lift cut short between its two halves (a SIGKILL, a Redis error after the commit): `lift` runs
 * whole, then Redis is put back as it was before it (the flag, and no lifted marker: one MULTI
 * sets both), while PostgreSQL keeps the lift.
 */
async function liftCutShortAfterPostgres<T>(cap: SpendCap, scopeId: string, lift: () => Promise<T>): Promise<{ flag: string; lifted: T }> {
  const flag = partitionedKey(world.config.REDIS_PREFIX, pauseKey(tenant.tenantId, 'agent', scopeId), 0);
  const [value, ttl] = [await world.redis.get(flag), await world.redis.pttl(flag)];
  expect(value, 'the scope is paused before the lift').not.toBeNull();
  const lifted = await lift();
  await world.redis.set(flag, value!, 'PX', ttl);
  await announceLimitFlag(world.redis, flag);
  await world.redis.del(partitionedKey(world.config.REDIS_PREFIX, capLiftedKey(tenant.tenantId, cap.id, today()), 0));
  expect(await pauseRows(cap.id), 'the record says lifted').toEqual([expect.objectContaining({ lifted_at: expect.any(Date) })]);
  expect(await authorize(agentApiKey(scopeId)), 'the flag still stops the scope').toMatchObject({ allowed: false, code: 'paused', pause: { capId: cap.id } });
  return { flag, lifted };
}

function agentApiKey(agentId: string): string {
  return tenant.customers[0].teams[0].agents.find((a) => a.id === agentId)!.apiKey;
}

describe('pauses: set, lifted by each route, recorded', () => {
  it('a limit lowered under the running total pauses the scope at once, and authorize names the cap', async () => {
    const a = agent(0);
    const cap = await overCap(a.id);
    const refused = await authorize(a.apiKey);
    expect(refused).toMatchObject({ allowed: false, code: 'paused', cap: { cap_id: cap.id, spent: '1.5', limit: '1', remaining: '0' } });
    const listed = await admin('GET', '/pauses');
    expect(listed.body.data).toContainEqual(expect.objectContaining({ cap_id: cap.id, scope_kind: 'agent', scope_id: a.id, period_key: today(), lifted_at: null }));
    expect(await webhooksOf('cap.paused', cap.id)).toEqual([
      {
        data: { cap_id: cap.id, scope_kind: 'agent', scope_id: a.id, period_key: today(), limit: '1', event_id: '', customer_id: tenant.customers[0].id, paused_at: expect.any(String) },
        xmin: await recordXmin(cap.id, a.id),
      },
    ]);
    expect(await webhooksOf('cap.lifted', cap.id)).toEqual([]);
  });

  it('the admin route lifts a pause at once and records who (the admin token) and why; the same period does not pause again', async () => {
    const a = agent(1);
    const cap = await overCap(a.id);
    expect((await authorize(a.apiKey)).allowed).toBe(false);
    const missing = await admin('POST', '/pauses/lift', { cap_id: cap.id, scope_id: 'agt_nope', period_key: today() });
    expect(missing.status).toBe(404);
    // Two admin tokens in force (a rotation's grace): the one that calls is the one recorded.
    const rotated = await rotateTenantToken(world.sql, tenant.tenantId, 'admin', { graceSeconds: 600 });
    const [{ id: liftingTokenId }] = await world.sql<{ id: string }[]>`
      SELECT id FROM tenant_tokens WHERE tenant_id = ${tenant.tenantId} AND kind = 'admin' AND status = 'active'`;
    expect(rotated.retiredTokenIds).not.toContain(liftingTokenId);
    const lifted = await call('POST', '/v1/admin/pauses/lift', rotated.token, { cap_id: cap.id, scope_id: a.id, period_key: today(), reason: 'customer paid up' });
    expect(lifted).toMatchObject({ status: 200, body: { scope_kind: 'agent', scope_id: a.id, flag_deleted: true, records_lifted: 1, lifted_by_token_id: liftingTokenId } });
    expect((await authorize(a.apiKey)).allowed).toBe(true);
    // The same period does not pause it again: the total stays over the limit, an estimate against the
    // cap is no longer refused, and a limit set under the total again leaves it running.
    const estimate = await call('POST', '/v1/authorize', tenant.ingestToken, { api_key: a.apiKey, estimated_cost: '0.5' });
    expect(estimate.body).toMatchObject({ allowed: true });
    expect((await admin('PATCH', `/spend-caps/${cap.id}`, { limit: '1.2' })).status).toBe(200);
    expect((await authorize(a.apiKey)).allowed).toBe(true);
    expect(await pauseRows(cap.id)).toEqual([expect.objectContaining({ lifted_by: 'admin', lift_reason: 'customer paid up' })]);
    const log = await world.sql`SELECT kind, lifted_by, lifted_by_token_id FROM cap_pause_log WHERE cap_id = ${cap.id} ORDER BY id`;
    expect(log.map((r) => [r.kind, r.lifted_by, r.lifted_by_token_id])).toEqual([
      ['paused', null, null],
      ['lifted', 'admin', liftingTokenId],
    ]);
    await expectOneLift(cap, a.id, { lifted_by: 'admin', lifted_by_token_id: liftingTokenId, lift_reason: 'customer paid up', lifted_at: lifted.body.lifted_at });
    const history = await admin('GET', '/pauses?status=lifted');
    expect(history.body.data).toContainEqual(
      expect.objectContaining({ cap_id: cap.id, lifted_by: 'admin', lifted_by_token_id: liftingTokenId, lift_reason: 'customer paid up' }),
    );
    // Another tenant cannot lift it.
    expect((await call('POST', '/v1/admin/pauses/lift', (await seedSmall(world.sql, { customers: 1, teamsPerCustomer: 1, agentsPerTeam: 1 })).adminToken, {
      cap_id: cap.id, scope_id: a.id, period_key: today(),
    })).status).toBe(404);
  });

  it('raising the cap above the running total unpauses within a second; crossing the new limit pauses again', async () => {
    const a = agent(2);
    const cap = await overCap(a.id);
    expect((await authorize(a.apiKey)).allowed).toBe(false);
    const raisedAt = Date.now();
    expect((await admin('PATCH', `/spend-caps/${cap.id}`, { limit: '5' })).status).toBe(200);
    let reply = await authorize(a.apiKey);
    while ((!reply.allowed || reply.caps?.[0]?.limit !== '5') && Date.now() - raisedAt < 1_000) reply = await authorize(a.apiKey);
    expect(reply.allowed).toBe(true);
    expect(reply.caps).toContainEqual(expect.objectContaining({ cap_id: cap.id, limit: '5', spent: '1.5', remaining: '3.5' }));
    expect(await pauseRows(cap.id)).toEqual([expect.objectContaining({ lifted_by: 'cap_raised', lift_reason: expect.stringMatching(/raised/) })]);
    await expectOneLift(cap, a.id, { lifted_by: 'cap_raised', lift_reason: 'the limit was raised to 5000000000 nano' });
    // Raised, but not above the total: stays paused.
    expect((await admin('PATCH', `/spend-caps/${cap.id}`, { limit: '1.2' })).status).toBe(200);
    expect(await authorize(a.apiKey)).toMatchObject({ allowed: false, code: 'paused' });
    expect((await admin('PATCH', `/spend-caps/${cap.id}`, { limit: '1.4' })).status).toBe(200);
    expect((await authorize(a.apiKey)).allowed).toBe(false);
    const log = await world.sql`SELECT kind, lifted_by FROM cap_pause_log WHERE cap_id = ${cap.id} ORDER BY id`;
    expect(log.map((r) => r.kind)).toEqual(['paused', 'lifted', 'paused']);
    // The first pause, and the one at 1.2 (still under the total); 1.4 finds the scope paused already.
    expect((await webhooksOf('cap.paused', cap.id)).map((w) => w.data.limit)).toEqual(['1', '1.2']);
  });

  it('disabling the cap unpauses at once, unless another cap still holds the scope', async () => {
    const a = agent(3);
    const first = await overCap(a.id);
    const second = await admin('POST', '/spend-caps', { scope_kind: 'team', scope_id: tenant.customers[0].teams[0].id, period: 'day', limit: '100' });
    const teamCap: SpendCap = { ...first, id: second.body.id, scopeKind: 'team', scopeId: tenant.customers[0].teams[0].id };
    expect((await authorize(a.apiKey)).allowed).toBe(false);
    expect((await admin('PATCH', `/spend-caps/${first.id}`, { status: 'disabled' })).status).toBe(200);
    expect((await authorize(a.apiKey)).allowed).toBe(true);
    expect(await pauseRows(first.id)).toEqual([expect.objectContaining({ lifted_by: 'cap_disabled' })]);
    await expectOneLift(first, a.id, { lifted_by: 'cap_disabled', lift_reason: 'the cap was disabled' });

    // Two caps pause the agent's flag: disabling one leaves the other's pause in force.
    await world.redis.set(partitionedKey(world.config.REDIS_PREFIX, capCounterKey(teamCap, today()), 0), '3000000000');
    await admin('PATCH', `/spend-caps/${first.id}`, { status: 'active' });
    expect((await authorize(a.apiKey)).allowed).toBe(false);
    await recordPauses(world.sql, [
      {
        tenantId: tenant.tenantId, capId: teamCap.id, scopeKind: 'agent', scopeId: a.id, period: 'day', periodKey: today(), limitNano: '100000000000',
        eventId: 'evt_x', pausedAt: Date.now(), customerId: tenant.customers[0].id, endsAt: Date.now() + 3_600_000,
      },
    ]);
    expect((await admin('PATCH', `/spend-caps/${first.id}`, { status: 'disabled' })).status).toBe(200);
    const still = await authorize(a.apiKey);
    expect(still).toMatchObject({ allowed: false, code: 'paused', pause: { capId: teamCap.id } });
  });

  it('making the cap alert only (a soft cap) lifts its pause: it no longer stops anything', async () => {
    const a = agent(4);
    const cap = await overCap(a.id);
    expect((await authorize(a.apiKey)).allowed).toBe(false);
    expect((await admin('PATCH', `/spend-caps/${cap.id}`, { action: 'alert' })).status).toBe(200);
    const reply = await authorize(a.apiKey);
    expect(reply.allowed).toBe(true);
    expect(await pauseRows(cap.id)).toEqual([expect.objectContaining({ lifted_by: 'cap_disabled', lift_reason: expect.stringMatching(/alert only/) })]);
    await expectOneLift(cap, a.id, { lifted_by: 'cap_disabled', lift_reason: 'the cap no longer pauses (alert only)' });
  });

  it('a lift cut short before Redis: retrying the admin route finishes it (200, the flag gone, authorize allows), recording nothing twice', async () => {
    const a = agent(6);
    const cap = await overCap(a.id);
    const pause = { cap_id: cap.id, scope_id: a.id, period_key: today() };
    const { flag, lifted: first } = await liftCutShortAfterPostgres(cap, a.id, () => admin('POST', '/pauses/lift', { ...pause, reason: 'customer paid up' }));
    expect(first).toMatchObject({ status: 200, body: { flag_deleted: true, records_lifted: 1 } });

    // Still 404: a pause that never was, and this one asked by another tenant.
    expect((await admin('POST', '/pauses/lift', { ...pause, scope_id: 'agt_nope' })).status).toBe(404);
    const other = await seedSmall(world.sql, { customers: 1, teamsPerCustomer: 1, agentsPerTeam: 1 });
    expect((await call('POST', '/v1/admin/pauses/lift', other.adminToken, pause)).status).toBe(404);
    expect(await world.redis.exists(flag)).toBe(1);

    const retry = await admin('POST', '/pauses/lift', pause);
    expect(retry).toMatchObject({ status: 200, body: { scope_kind: 'agent', scope_id: a.id, flag_deleted: true, records_lifted: 0, lifted_at: first.body.lifted_at } });
    expect(await world.redis.exists(flag)).toBe(0);
    // The lifted marker too: the total stays over the limit, and authorize no longer refuses against the cap.
    expect((await authorize(a.apiKey)).allowed).toBe(true);
    await expectOneLift(cap, a.id, { lifted_by: 'admin', lifted_by_token_id: expect.any(String), lift_reason: 'customer paid up', lifted_at: first.body.lifted_at });
    expect(await webhooksOf('cap.paused', cap.id)).toHaveLength(1);
    // Finished: nothing is left to lift.
    expect((await admin('POST', '/pauses/lift', pause)).status).toBe(404);
  });

  it('a raise cut short before Redis: retrying the PATCH settles the flag its lift left', async () => {
    const a = agent(7);
    const cap = await overCap(a.id);
    const { flag } = await liftCutShortAfterPostgres(cap, a.id, async () => expect((await admin('PATCH', `/spend-caps/${cap.id}`, { limit: '5' })).status).toBe(200));
    expect((await admin('PATCH', `/spend-caps/${cap.id}`, { limit: '5' })).status).toBe(200);
    expect(await world.redis.exists(flag)).toBe(0);
    const retriedAt = Date.now();
    let reply = await authorize(a.apiKey);
    while (!reply.allowed && Date.now() - retriedAt < 1_000) reply = await authorize(a.apiKey);
    expect(reply.allowed).toBe(true);
    expect(await pauseRows(cap.id)).toEqual([expect.objectContaining({ lifted_by: 'cap_raised' })]);
    await expectOneLift(cap, a.id, { lifted_by: 'cap_raised', lift_reason: 'the limit was raised to 5000000000 nano' });
    expect(await webhooksOf('cap.paused', cap.id)).toHaveLength(1);
  });

  /**
   * The Redis client a lift uses, where an ack lands on the scope's flag (another cap crossing:
   * the ack script sets the flag before cap-check records the pause) when the lift first reads
   * the flag: just before that read, or once it has its answer.
   */
  function ackLanding(when: 'before' | 'after', flag: string, newPause: PauseRecord): Redis {
    let landed = false;
    const land = async (args: unknown[]) => {
      if (landed || args[0] !== flag) return;
      landed = true;
      await world.redis.set(flag, JSON.stringify(newPause), 'PX', 3_600_000);
    };
    return new Proxy(world.redis, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target);
        if (typeof value !== 'function') return value;
        if (prop !== 'get') return value.bind(target);
        return async (...args: unknown[]) => {
          if (when === 'before') await land(args);
          const answer = await value.apply(target, args);
          if (when === 'after') await land(args);
          return answer;
        };
      },
    });
  }

  it.each(['before', 'after'] as const)(
    "a pause that begins while a lift runs (its flag set after the lift's commit, %s the lift reads the flag) stands: the lift leaves that flag",
    async (when) => {
      const a = agent(when === 'before' ? 6 : 7);
      const cap = await overCap(a.id);
      const flag = partitionedKey(world.config.REDIS_PREFIX, pauseKey(tenant.tenantId, 'agent', a.id), 0);
      const teamId = tenant.customers[0].teams[0].id;
      const teamCap = await admin('POST', '/spend-caps', { scope_kind: 'team', scope_id: teamId, period: 'day', limit: '100' });
      const newPause: PauseRecord = {
        tenantId: tenant.tenantId, capId: teamCap.body.id, scopeKind: 'agent', scopeId: a.id, period: 'day', periodKey: today(), limitNano: '100000000000',
        eventId: `evt_${when}`, pausedAt: Date.now() + 1_000, customerId: tenant.customers[0].id, endsAt: Date.now() + 3_600_000,
      };
      const lifted = await liftPause(world.sql, ackLanding(when, flag, newPause), { prefix: world.config.REDIS_PREFIX, partitions: world.config.PARTITIONS }, tenant.tenantId, {
        capId: cap.id, scopeId: a.id, periodKey: today(),
      });
      expect(lifted).toMatchObject({ flagDeleted: false, recordsLifted: 1 });
      expect(await pauseRows(cap.id)).toEqual([expect.objectContaining({ lifted_by: 'admin' })]);
      expect(JSON.parse((await world.redis.get(flag))!)).toEqual(newPause);
      expect(await authorize(a.apiKey)).toMatchObject({ allowed: false, code: 'paused', pause: { capId: teamCap.body.id } });
      await world.redis.del(flag);
    },
  );

  it('a pause whose period ended is recorded as lifted by the roll-over', async () => {
    const a = agent(0);
    await recordPauses(world.sql, [
      {
        tenantId: tenant.tenantId, capId: 'cap_old', scopeKind: 'agent', scopeId: a.id, period: 'day', periodKey: '2026-01-01', limitNano: '1',
        eventId: 'evt_old', pausedAt: Date.UTC(2026, 0, 1, 12), customerId: tenant.customers[0].id, endsAt: Date.UTC(2026, 0, 2),
      },
    ]);
    expect(await recordRolledOverPauses(world.sql)).toBeGreaterThanOrEqual(1);
    const [row] = await world.sql`SELECT lifted_at, lifted_by FROM cap_pauses WHERE cap_id = 'cap_old'`;
    expect(row).toMatchObject({ lifted_by: 'period_rollover', lifted_at: new Date(Date.UTC(2026, 0, 2)) });
    expect(await webhooksOf('cap.lifted', 'cap_old')).toEqual([
      {
        data: expect.objectContaining({ scope_id: a.id, period_key: '2026-01-01', lifted_by: 'period_rollover', lift_reason: 'the cap period ended', lifted_at: '2026-01-02T00:00:00.000Z' }),
        xmin: await recordXmin('cap_old', a.id),
      },
    ]);
    expect(await recordRolledOverPauses(world.sql)).toBe(0);
    expect(await webhooksOf('cap.lifted', 'cap_old')).toHaveLength(1);
  });

  it("a day pause lasts until the day ends: then authorize allows again and cap-check's roll-over sweep records the lift", async () => {
    const a = agent(5);
    const cap = await overCap(a.id);
    const flag = partitionedKey(world.config.REDIS_PREFIX, pauseKey(tenant.tenantId, 'agent', a.id), 0);
    const endOfDay = Date.parse(`${today()}T00:00:00Z`) + 86_400_000;
    expect(Math.abs(Date.now() + (await world.redis.pttl(flag)) - endOfDay)).toBeLessThan(1_000);
    const [record] = await world.sql`SELECT period_ends_at FROM cap_pauses WHERE tenant_id = ${tenant.tenantId} AND cap_id = ${cap.id}`;
    expect(record.period_ends_at).toEqual(new Date(endOfDay));

    // Nobody waits for midnight: the day ends in a second and a half, for the flag and the record alike.
    const periodEnd = Date.now() + 1_500;
    await world.redis.pexpireat(flag, periodEnd);
    await world.sql`UPDATE cap_pauses SET period_ends_at = ${new Date(periodEnd)} WHERE tenant_id = ${tenant.tenantId} AND cap_id = ${cap.id}`;
    const context = testStageContext('cap-check', world, { CAP_ROLLOVER_SWEEP_INTERVAL_MS: '100' });
    const stage = await capCheckStage.setup(context);
    try {
      expect(await authorize(a.apiKey)).toMatchObject({ allowed: false, code: 'paused' });
      let reply = await authorize(a.apiKey);
      while (!reply.allowed && Date.now() < periodEnd + 1_000) {
        await new Promise((r) => setTimeout(r, 25));
        reply = await authorize(a.apiKey);
      }
      expect(reply.allowed).toBe(true);
      expect(Date.now()).toBeGreaterThanOrEqual(periodEnd);

      // Swept every 100 ms by the running stage (its first sweep, at start, came before the end).
      let rows = await pauseRows(cap.id);
      while (rows[0].lifted_by === null && Date.now() < periodEnd + 2_000) {
        await new Promise((r) => setTimeout(r, 25));
        rows = await pauseRows(cap.id);
      }
      expect(rows).toEqual([{ lifted_by: 'period_rollover', lift_reason: 'the cap period ended', lifted_at: new Date(periodEnd) }]);
      await expectOneLift(cap, a.id, { lifted_by: 'period_rollover', lift_reason: 'the cap period ended', lifted_at: new Date(periodEnd).toISOString() });
    } finally {
      await stage.close?.();
      await context.close();
    }
  });

  it('refuses negative, zero and absurd limits with the JSON path', async () => {
    for (const limit of ['-1', '0', '1e3', '9223372037', 'NaN']) {
      const reply = await admin('POST', '/spend-caps', { scope_kind: 'agent', scope_id: agent(0).id, period: 'day', limit });
      expect(reply.status, `limit ${limit}`).toBe(400);
      expect(reply.body.error.details[0].path).toBe('limit');
    }
    const scope = await admin('POST', '/spend-caps', { scope_kind: 'planet', scope_id: 'x', period: 'day', limit: '1' });
    expect(scope.status).toBe(400);
    expect(scope.body.error.details[0].path).toBe('scope_kind');
  });
});
