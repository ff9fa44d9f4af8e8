import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerPartitionKey } from '../domain/flow.js';
import { partitionedKey, partitionOf } from '../pipeline/keys.js';
import type { SeededTenant } from '../ops/seed.js';
import { seedSmall } from '../test/support/billing.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { capLiftedKey, type SpendCap } from './caps.js';
import { newId } from './credentials.js';
import { liftCreditsPause, pauseExhausted } from './credits.js';
import { liftPause, liftPausesForCap, recordPauses, recordRolledOverPauses, setPause, type RedisPlace } from './pause-flags.js';
import { pauseKey, type PauseRecord } from './pauses.js';

/**
 * The pause machinery against real PostgreSQL and Redis: a rolling cap paused again before the
 * roll-over sweep, and prepaid-credits pauses beside spend-cap pauses of the same customer.
 */
let iso: Isolated;
let tenant: SeededTenant;
let place: RedisPlace;

beforeAll(async () => {
  iso = await isolated('pause-flags');
  tenant = await seedSmall(iso.sql, { customers: 3, teamsPerCustomer: 1, agentsPerTeam: 1, appsPerTeam: 0 });
  place = { prefix: iso.config.REDIS_PREFIX, partitions: iso.config.PARTITIONS };
});

afterAll(async () => {
  await iso?.cleanup();
});

async function addCap(cap: Omit<SpendCap, 'id' | 'tenantId'>): Promise<SpendCap & { status: 'active' }> {
  const full: SpendCap & { status: 'active' } = { ...cap, id: newId('cap'), tenantId: tenant.tenantId, status: 'active' };
  await iso.sql`
    INSERT INTO spend_caps (id, tenant_id, scope_kind, scope_id, period, limit_nano, action, window_seconds)
    VALUES (${full.id}, ${full.tenantId}, ${full.scopeKind}, ${full.scopeId}, ${full.period}, ${full.limitNano.toString()}, ${full.action}, ${full.windowSeconds ?? null})`;
  return full;
}

const partitionOfCustomer = (customerId: string) => partitionOf(customerPartitionKey(tenant.tenantId, customerId), place.partitions);
const customerFlag = (customerId: string) => partitionedKey(place.prefix, pauseKey(tenant.tenantId, 'customer', customerId), partitionOfCustomer(customerId));
const today = () => new Date().toISOString().slice(0, 10);

/** A customer's day cap, paused now (as a limit lowered under the running total pauses it). */
async function customerCapPaused(customerId: string): Promise<SpendCap & { status: 'active' }> {
  const cap = await addCap({ scopeKind: 'customer', scopeId: customerId, period: 'day', limitNano: 1_000_000_000n, action: 'pause' });
  const now = Date.now();
  await setPause(iso.sql, iso.redis, place, {
    tenantId: tenant.tenantId,
    capId: cap.id,
    scopeKind: 'customer',
    scopeId: customerId,
    period: 'day',
    periodKey: today(),
    limitNano: cap.limitNano.toString(),
    eventId: '',
    pausedAt: now,
    customerId,
    endsAt: now + 3_600_000,
  });
  return cap;
}

describe('a rolling cap paused again before the roll-over sweep ran', () => {
  it('records the new pause (row, log line, cap.paused) after recording the old one lifted by the roll-over; it can then be lifted', async () => {
    const agent = tenant.customers[0].teams[0].agents[0];
    const customerId = tenant.customers[0].id;
    const cap = await addCap({ scopeKind: 'agent', scopeId: agent.id, period: 'rolling', windowSeconds: 60, limitNano: 1_000_000_000n, action: 'pause' });
    const now = Date.now();
    const pause = (pausedAt: number, endsAt: number, eventId: string): PauseRecord => ({
      tenantId: tenant.tenantId,
      capId: cap.id,
      scopeKind: 'agent',
      scopeId: agent.id,
      period: 'rolling',
      periodKey: 'w',
      limitNano: '1000000000',
      eventId,
      pausedAt,
      customerId,
      endsAt,
    });
    // The first pause's window ended a second ago; the sweep has not recorded that yet.
    await recordPauses(iso.sql, [pause(now - 60_000, now - 1_000, 'evt_first')]);
    await recordPauses(iso.sql, [pause(now, now + 60_000, 'evt_second')]);

    const rows = () => iso.sql`SELECT event_id, paused_at, period_ends_at, lifted_at FROM cap_pauses WHERE tenant_id = ${tenant.tenantId} AND cap_id = ${cap.id}`;
    expect(await rows()).toEqual([{ event_id: 'evt_second', paused_at: new Date(now), period_ends_at: new Date(now + 60_000), lifted_at: null }]);
    const log = await iso.sql<{ kind: string; at: Date; lifted_by: string | null }[]>`
      SELECT kind, at, lifted_by FROM cap_pause_log WHERE tenant_id = ${tenant.tenantId} AND cap_id = ${cap.id} ORDER BY id`;
    expect(log).toEqual([
      { kind: 'paused', at: new Date(now - 60_000), lifted_by: null },
      { kind: 'lifted', at: new Date(now - 1_000), lifted_by: 'period_rollover' },
      { kind: 'paused', at: new Date(now), lifted_by: null },
    ]);
    const hooks = await iso.sql<{ type: string }[]>`
      SELECT type FROM webhook_events WHERE tenant_id = ${tenant.tenantId} AND dedupe_key LIKE ${`%:${cap.id}:%`} ORDER BY type, id`;
    expect(hooks.map((h) => h.type)).toEqual(['cap.lifted', 'cap.paused', 'cap.paused']);

    // The sweep finds nothing of it to close; the admin lift finds the pause in force.
    await recordRolledOverPauses(iso.sql);
    expect((await rows())[0].lifted_at).toBeNull();
    expect(await liftPause(iso.sql, iso.redis, place, tenant.tenantId, { capId: cap.id, scopeId: agent.id, periodKey: 'w' })).toMatchObject({ recordsLifted: 1 });
  });
});

describe('prepaid credits and spend caps pausing one customer', () => {
  it('a raised spend cap leaves the flag of the credits pause still in force', async () => {
    const customerId = tenant.customers[1].id;
    await pauseExhausted(iso.sql, iso.redis, place, [{ tenantId: tenant.tenantId, customerId, currency: 'USD' }], 'evt_zero');
    const cap = await customerCapPaused(customerId);
    expect(JSON.parse((await iso.redis.get(customerFlag(customerId)))!)).toMatchObject({ capId: cap.id });

    // Raised above the running total (nothing counted): the cap's pause goes, the credits pause stands.
    expect(await liftPausesForCap(iso.sql, iso.redis, place, { ...cap, limitNano: 5_000_000_000n })).toBe(1);
    expect(JSON.parse((await iso.redis.get(customerFlag(customerId)))!)).toMatchObject({ capId: 'credits:USD', scopeKind: 'customer', scopeId: customerId });
  });

  it('credits coming back lift the credits pause only: the spend-cap pause stays in force, its flag set, no lifted marker', async () => {
    const customerId = tenant.customers[2].id;
    const cap = await customerCapPaused(customerId);
    await pauseExhausted(iso.sql, iso.redis, place, [{ tenantId: tenant.tenantId, customerId, currency: 'USD' }], 'evt_zero2');
    expect(JSON.parse((await iso.redis.get(customerFlag(customerId)))!)).toMatchObject({ capId: 'credits:USD' });

    expect(await liftCreditsPause(iso.sql, iso.redis, place, { tenantId: tenant.tenantId, customerId, currency: 'USD' }, { reason: 'credits granted' })).toBe(true);
    const records = await iso.sql<{ cap_id: string; lifted_by: string | null }[]>`
      SELECT cap_id, lifted_by FROM cap_pauses WHERE tenant_id = ${tenant.tenantId} AND scope_id = ${customerId} ORDER BY cap_id = 'credits:USD'`;
    expect(records).toEqual([
      { cap_id: cap.id, lifted_by: null },
      { cap_id: 'credits:USD', lifted_by: 'admin' },
    ]);
    expect(JSON.parse((await iso.redis.get(customerFlag(customerId)))!)).toMatchObject({ capId: cap.id });
    expect(await iso.redis.exists(partitionedKey(place.prefix, capLiftedKey(tenant.tenantId, cap.id, today()), partitionOfCustomer(customerId)))).toBe(0);

    // The admin route's lift still lifts the whole scope.
    expect(await liftPause(iso.sql, iso.redis, place, tenant.tenantId, { capId: cap.id, scopeId: customerId, periodKey: today() })).toMatchObject({ recordsLifted: 1, flagDeleted: true });
  });
});
