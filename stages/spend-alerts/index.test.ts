import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LedgeredEvent } from '../../domain/flow.js';
import { formatNano } from '../../domain/money.js';
import { partitionedKey } from '../../pipeline/keys.js';
import type { StageEntry } from '../../pipeline/stage.js';
import { CapBook, capCounterKey, capPeriod } from '../../store/caps.js';
import { createTenant, type CreatedTenant } from '../../store/tenants.js';
import { createAdminRoutes } from '../../api/admin/index.js';
import { seedTenant } from '../../ops/seed.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { ledgeredEvent, type LedgeredEventOverrides } from '../testing.js';
import { SpendAlerts } from './index.js';

const UNIT = 1_000_000_000n;
const HOUR_MS = 3_600_000;

let world: Isolated;
let entrySeq = 0;

beforeAll(async () => {
  world = await isolated('spend-alerts');
});
afterAll(async () => {
  await world?.cleanup();
});

async function tenantWithEndpoint(types: string[]): Promise<string> {
  return (await createdTenantWithEndpoint(types)).tenantId;
}

async function createdTenantWithEndpoint(types: string[]): Promise<CreatedTenant> {
  const tenant = await createTenant(world.sql, 'Alerts');
  await world.sql`
    INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret_sealed, secret_prefix)
    VALUES (${`we_${tenant.tenantId}`}, ${tenant.tenantId}, 'https://hooks.example.com/a', ${types}::text[], 'plain:whsec_AAAA', 'whsec_AAAA')`;
  return tenant;
}

/** Changes the tenant's alert settings the way a tenant does: PATCH /v1/admin/alert-settings with its admin token. */
async function patchAlertSettings(tenant: CreatedTenant, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const admin = createAdminRoutes({ sql: world.sql, redis: world.redis, prefix: world.config.REDIS_PREFIX });
  const response = await admin.request('/v1/admin/alert-settings', {
    method: 'PATCH',
    headers: { authorization: `Bearer ${tenant.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as Record<string, unknown>;
}

async function cap(tenantId: string, fields: { scope_kind: string; scope_id: string; period: string; limit_nano: bigint }): Promise<string> {
  const id = `cap_${tenantId}_${fields.period}_${entrySeq++}`;
  await world.sql`
    INSERT INTO spend_caps (id, tenant_id, scope_kind, scope_id, period, limit_nano, action)
    VALUES (${id}, ${tenantId}, ${fields.scope_kind}, ${fields.scope_id}, ${fields.period}, ${fields.limit_nano.toString()}, 'alert')`;
  return id;
}

function entry(tenantId: string, overrides: LedgeredEventOverrides): StageEntry<LedgeredEvent> {
  return { id: `${Date.now()}-${entrySeq++}`, partition: 0, tags: [], payload: ledgeredEvent({ tenantId, ...overrides }) };
}

/** What cap-check does before an event reaches this stage: advance the counter of every cap on it. */
async function countInCapCheck(book: CapBook, batch: StageEntry<LedgeredEvent>[]): Promise<void> {
  for (const { payload: e } of batch) {
    for (const c of book.capsFor(e.tenantId, e.attribution)) {
      const period = capPeriod(c, e);
      if (period) await world.redis.incrby(partitionedKey(world.config.REDIS_PREFIX, capCounterKey(c, period.key), 0), e.cost.total.toString());
    }
  }
}

/** Several workers (SpendAlerts instances) take the batches as they come, concurrently, as consumers of one group would. */
async function runConcurrently(workers: SpendAlerts[], batches: StageEntry<LedgeredEvent>[][], book?: CapBook): Promise<void> {
  const queue = [...batches];
  await Promise.all(
    workers.map(async (worker) => {
      for (let batch = queue.shift(); batch; batch = queue.shift()) {
        if (book) await countInCapCheck(book, batch);
        await worker.handle(batch);
      }
    }),
  );
}

const events = (tenantId: string) =>
  world.sql<{ type: string; dedupe_key: string; payload: string }[]>`
    SELECT type, dedupe_key, payload FROM webhook_events WHERE tenant_id = ${tenantId} ORDER BY id`;

function workers(n: number, now?: () => number): SpendAlerts[] {
  return Array.from({ length: n }, () => new SpendAlerts(world.sql, world.redis, world.config.REDIS_PREFIX, now));
}

function chunks<T>(list: T[], size: number): T[][] {
  return Array.from({ length: Math.ceil(list.length / size) }, (_, i) => list.slice(i * size, i * size + size));
}

describe('threshold alerts', () => {
  it('fires once per threshold crossed (50, 80, 100 %) under four concurrent workers and redeliveries, and again after the cap is raised', async () => {
    const tenantId = await tenantWithEndpoint(['cap.threshold_reached']);
    const capId = await cap(tenantId, { scope_kind: 'agent', scope_id: 'agt_test', period: 'month', limit_nano: 10n * UNIT });
    const book = new CapBook(world.sql);
    await book.loadAll();
    const pool = workers(4);
    await Promise.all(pool.map((w) => w.load()));

    // 150 events of 0.1: 15 units against a limit of 10.
    const batch = Array.from({ length: 150 }, () => entry(tenantId, { cost: { total: UNIT / 10n } }));
    const batches = chunks(batch, 7);
    await runConcurrently(pool, batches, book);
    // Every batch delivered a second time (a consumer that died before its ack): nothing new.
    await runConcurrently(pool, batches);

    const fired = await events(tenantId);
    expect(fired.map((e) => e.type)).toEqual(['cap.threshold_reached', 'cap.threshold_reached', 'cap.threshold_reached']);
    const data = fired.map((e) => JSON.parse(e.payload).data).sort((a, b) => a.threshold_percent - b.threshold_percent);
    expect(data.map((d) => d.threshold_percent)).toEqual([50, 80, 100]);
    for (const d of data) {
      expect(d).toMatchObject({ cap_id: capId, scope_kind: 'agent', scope_id: 'agt_test', period: 'month', period_key: '2026-03', limit: '10', currency: 'USD' });
      expect(Number(d.spent) * 10).toBeGreaterThanOrEqual(d.threshold_percent);
    }
    const [deliveries] = await world.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM webhook_deliveries WHERE tenant_id = ${tenantId}`;
    expect(deliveries.n).toBe(3);

    // Raised to 20: 15 is past 50 % of it (fires now), 80 and 100 % come with the next 2 and 5 units.
    await world.sql`UPDATE spend_caps SET limit_nano = ${(20n * UNIT).toString()} WHERE id = ${capId}`;
    await book.reloadTenant(tenantId);
    await Promise.all(pool.map((w) => w.reloadCaps(tenantId)));
    const more = Array.from({ length: 60 }, () => entry(tenantId, { cost: { total: UNIT / 10n } }));
    await runConcurrently(pool, chunks(more, 5), book);
    const after = (await events(tenantId)).slice(3).map((e) => JSON.parse(e.payload).data);
    expect(after.map((d) => [d.limit, d.threshold_percent]).sort()).toEqual([
      ['20', 100],
      ['20', 50],
      ['20', 80],
    ]);
  });

  it('says nothing below the first threshold, and follows the tenant’s own thresholds', async () => {
    const tenantId = await tenantWithEndpoint(['cap.threshold_reached']);
    await cap(tenantId, { scope_kind: 'customer', scope_id: 'cus_test', period: 'day', limit_nano: 100n * UNIT });
    await world.sql`
      INSERT INTO alert_settings (tenant_id, threshold_bps, velocity_factor_milli, velocity_min_nano, projection_horizon_seconds)
      VALUES (${tenantId}, ${[2500]}::integer[], 3000, ${(1000n * UNIT).toString()}, 3600)`;
    const book = new CapBook(world.sql);
    await book.loadAll();
    const [worker] = workers(1);
    await worker.load();
    await runConcurrently([worker], [[entry(tenantId, { cost: { total: 24n * UNIT } })]], book);
    expect(await events(tenantId)).toEqual([]);
    await runConcurrently([worker], [[entry(tenantId, { cost: { total: 1n * UNIT } })]], book);
    const fired = (await events(tenantId)).map((e) => JSON.parse(e.payload).data);
    expect(fired).toMatchObject([{ threshold_percent: 25, spent: '25', limit: '100', period: 'day', period_key: '2026-03-31' }]);
  });

  it.each([
    { period: 'day', lastStart: Date.UTC(2026, 2, 30, 22, 0, 0), nextStart: Date.UTC(2026, 2, 31, 9, 0, 0), lastKey: '2026-03-30', nextKey: '2026-03-31' },
    { period: 'month', lastStart: Date.UTC(2026, 1, 27, 12, 0, 0), nextStart: Date.UTC(2026, 2, 2, 12, 0, 0), lastKey: '2026-02', nextKey: '2026-03' },
  ])('fires a $period cap’s threshold again, once, when the next $period crosses it, and not again for the last $period when its events are delivered again then', async ({
    period,
    lastStart,
    nextStart,
    lastKey,
    nextKey,
  }) => {
    const tenantId = await tenantWithEndpoint(['cap.threshold_reached']);
    const capId = await cap(tenantId, { scope_kind: 'agent', scope_id: 'agt_test', period, limit_nano: 10n * UNIT });
    const book = new CapBook(world.sql);
    await book.loadAll();
    let now = lastStart + HOUR_MS;
    const pool = workers(2, () => now);
    await Promise.all(pool.map((w) => w.load()));
    const spend = (recordedAt: number, units: bigint) => entry(tenantId, { recordedAt, sessionId: undefined, cost: { total: units * UNIT } });
    const fiftyPercentKey = (periodKey: string) => `cap.threshold_reached:${capId}:${periodKey}:${10n * UNIT}:5000`;
    const fired = async () => (await events(tenantId)).map((e) => ({ type: e.type, dedupeKey: e.dedupe_key, data: JSON.parse(e.payload).data }));

    const lastPeriod = [[spend(lastStart, 3n)], [spend(lastStart + 60_000, 2n)]];
    await runConcurrently(pool, lastPeriod, book);
    const crossedLastPeriod = await fired();
    expect(crossedLastPeriod).toMatchObject([
      { type: 'cap.threshold_reached', dedupeKey: fiftyPercentKey(lastKey), data: { cap_id: capId, period, period_key: lastKey, threshold_percent: 50, spent: '5' } },
    ]);

    // The next period starts from nothing: 4 of 10 is under 50 %, whatever the last period spent.
    now = nextStart + HOUR_MS;
    await runConcurrently(pool, [[spend(nextStart, 4n)]], book);
    expect(await fired()).toEqual(crossedLastPeriod);
    await runConcurrently(pool, [[spend(nextStart + 60_000, 1n)]], book);
    const crossedBoth = await fired();
    expect(crossedBoth).toMatchObject([
      crossedLastPeriod[0],
      { type: 'cap.threshold_reached', dedupeKey: fiftyPercentKey(nextKey), data: { cap_id: capId, period, period_key: nextKey, threshold_percent: 50, spent: '5' } },
    ]);

    // The last period's events delivered again in the next one, to a worker that remembers nothing: its crossing is in the outbox already.
    const [fresh] = workers(1, () => now);
    await fresh.load();
    await runConcurrently([fresh], lastPeriod);
    expect(await fired()).toEqual(crossedBoth);
  });
});

describe('commitment alerts', () => {
  it("fires once per threshold of a committed plan's calls, under concurrent workers and redeliveries", async () => {
    const seeded = await seedTenant(world.sql, {
      name: 'committed',
      pricing: { billing_mode: 'COMMITTED', commitment: { committed_amount: 100, committed_price: '10' }, tool_invocations: { '*': '0.01' } },
      customers: 1,
      teamsPerCustomer: 1,
      agentsPerTeam: 1,
    });
    await world.sql`
      INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret_sealed, secret_prefix)
      VALUES (${`we_${seeded.tenantId}`}, ${seeded.tenantId}, 'https://hooks.example.com/c', ${['commitment.threshold_reached']}::text[], 'plain:whsec_AAAA', 'whsec_AAAA')`;
    const customer = seeded.customers[0];
    const pool = workers(4);
    await Promise.all(pool.map((w) => w.load()));
    const calls = Array.from({ length: 130 }, () =>
      entry(seeded.tenantId, {
        attribution: { customerId: customer.id, teamId: customer.teams[0].id, agentId: customer.teams[0].agents[0].id },
        subscription: { subscriptionId: customer.subscriptionId, ratePlanId: seeded.ratePlanId },
        cost: { total: UNIT / 100n },
      }),
    );
    await runConcurrently(pool, chunks(calls, 9));
    await runConcurrently(pool, chunks(calls, 9));
    const fired = (await events(seeded.tenantId)).map((e) => ({ type: e.type, data: JSON.parse(e.payload).data }));
    expect(fired.map((f) => f.type)).toEqual(Array(3).fill('commitment.threshold_reached'));
    expect(fired.map((f) => f.data.threshold_percent).sort((a, b) => a - b)).toEqual([50, 80, 100]);
    for (const f of fired) {
      expect(f.data).toMatchObject({ customer_id: customer.id, rate_plan_id: seeded.ratePlanId, committed_calls: '100', period_start: '2026-03-01T00:00:00.000Z' });
      expect(Number(f.data.calls)).toBeGreaterThanOrEqual(f.data.threshold_percent);
    }
    // Each call counted once, the redelivered batches included.
    const counter = partitionedKey(world.config.REDIS_PREFIX, `commit-calls:${seeded.tenantId}:${customer.id}:${seeded.ratePlanId}:${Date.UTC(2026, 2, 1)}`, 0);
    expect(await world.redis.get(counter)).toBe('130');
  });

  /** A committed tenant of one customer and agent, a loaded worker, and a call of 0.01 (delivered before, `redelivered`). */
  async function committedCalls(name: string) {
    const seeded = await seedTenant(world.sql, {
      name,
      pricing: { billing_mode: 'COMMITTED', commitment: { committed_amount: 100, committed_price: '10' }, tool_invocations: { '*': '0.01' } },
      customers: 1,
      teamsPerCustomer: 1,
      agentsPerTeam: 1,
    });
    const customer = seeded.customers[0];
    const [worker] = workers(1);
    await worker.load();
    const call = (redelivered = false): StageEntry<LedgeredEvent> => ({
      ...entry(seeded.tenantId, {
        attribution: { customerId: customer.id, teamId: customer.teams[0].id, agentId: customer.teams[0].agents[0].id },
        subscription: { subscriptionId: customer.subscriptionId, ratePlanId: seeded.ratePlanId },
        cost: { total: UNIT / 100n },
      }),
      ...(redelivered ? { redelivered } : {}),
    });
    const counter = partitionedKey(world.config.REDIS_PREFIX, `commit-calls:${seeded.tenantId}:${customer.id}:${seeded.ratePlanId}:${Date.UTC(2026, 2, 1)}`, 0);
    return { seeded, customer, worker, call, counter };
  }

  it('counts the calls of a block once by one marker per block, whatever is delivered again, and a block of one by its event', async () => {
    const { seeded, customer, worker, call, counter } = await committedCalls('committed blocks');
    const blocks = [0, 1, 2].map((b) => ({ id: `${b}-0`, origin: `blk${b}_${seeded.tenantId}`, events: Array.from({ length: 10 }, call) }));
    const single = { id: '3-0', origin: '3-0', events: [call()] };
    expect(await worker.handleBlocks([blocks[0], blocks[1], single])).toEqual([Array(10).fill({}), Array(10).fill({}), [{}]]);
    await worker.handleBlocks([blocks[1], blocks[2], single]); // 1 and the single again, 2 new
    await worker.handle(single.events); // the single, handed as an event
    expect(await world.redis.get(counter)).toBe('31');
    const spend = partitionedKey(world.config.REDIS_PREFIX, `spend-h:${seeded.tenantId}:${customer.id}:${Math.floor(single.events[0].payload.recordedAt / HOUR_MS)}`, 0);
    expect(await world.redis.get(spend)).toBe(String((31n * UNIT) / 100n));
    // One marker per block (three), one for the single event: not one per event.
    const markers = await world.redis.keys(`${world.config.REDIS_PREFIX}*spend-applied*${seeded.tenantId}*`);
    expect(markers.length).toBe(4);
  });

  it("keeps a block's marker a day until its first delivery is acked, then 15 minutes; a marker whose events were delivered before or not acked keeps its day", async () => {
    const { seeded, worker, call, counter } = await committedCalls('marker lifetimes');
    const origin = (name: string) => `${name}_${seeded.tenantId}`;
    const acked = { id: '0-0', origin: origin('acked'), events: [call(), call()] };
    const again = { id: '1-0', origin: origin('again'), events: [call(true), call(true)] };
    const refused = { id: '2-0', origin: origin('refused'), events: [call(), call()] };
    const single = { id: '3-0', origin: '3-0', events: [call()] };
    await worker.handleBlocks([acked, again, refused, single]);
    const marker = (name: string) => partitionedKey(world.config.REDIS_PREFIX, `spend-applied-block:${name}`, 0);
    const singleMarker = partitionedKey(world.config.REDIS_PREFIX, `spend-applied:${seeded.tenantId}:${single.events[0].payload.eventId}`, 0);
    const ttls = () => Promise.all([marker(origin('acked')), marker(origin('again')), marker(origin('refused')), singleMarker].map((k) => world.redis.ttl(k)));
    for (const ttl of await ttls()) expect(ttl).toBeGreaterThan(86_000);

    const batch = [acked, again, refused, single].flatMap((b) => b.events);
    // The refused block's second event was not acked (another consumer acked it first, or it stays pending).
    const results = batch.map((e) => ({ acked: e !== refused.events[1], crossed: [] }));
    await worker.afterAck(batch, results);
    const [ackedTtl, againTtl, refusedTtl, singleTtl] = await ttls();
    expect(ackedTtl).toBeGreaterThan(800);
    expect(ackedTtl).toBeLessThanOrEqual(900);
    expect(singleTtl).toBeLessThanOrEqual(900);
    expect(againTtl).toBeGreaterThan(86_000);
    expect(refusedTtl).toBeGreaterThan(86_000);

    // Within those 15 minutes a late delivery of the acked block still counts nothing.
    await worker.handleBlocks([acked, single]);
    expect(await world.redis.get(counter)).toBe('7');
  });
});

describe('velocity alerts', () => {
  it('fires once per customer, agent and team when the last hour passes k x the trailing hourly average, under concurrent workers', async () => {
    const tenantId = await tenantWithEndpoint(['spend.velocity_spike']);
    const now = Date.now();
    const hour = Math.floor(now / HOUR_MS);
    // A week of 0.1 per hour.
    for (let h = 1; h <= 168; h++) {
      await world.redis.set(partitionedKey(world.config.REDIS_PREFIX, `spend-h:${tenantId}:cus_test:${hour - h}`, 0), (UNIT / 10n).toString());
    }
    await world.sql`
      INSERT INTO alert_settings (tenant_id, threshold_bps, velocity_factor_milli, velocity_min_nano, projection_horizon_seconds)
      VALUES (${tenantId}, ${[]}::integer[], 3000, ${UNIT.toString()}, 3600)`;
    const pool = workers(4, () => now);
    await Promise.all(pool.map((w) => w.load()));
    // 0.05 an event: the hour passes 3 x 0.1 plus what is left of the previous hour (< 0.1) well before 1 (the minimum), which it passes at the 20th event.
    const spike = Array.from({ length: 80 }, (_, i) => entry(tenantId, { recordedAt: now - 1000 + i, cost: { total: UNIT / 20n } }));
    await runConcurrently(pool, chunks(spike, 3));
    await runConcurrently(pool, chunks(spike, 3));
    const fired = (await events(tenantId)).map((e) => ({ type: e.type, data: JSON.parse(e.payload).data }));
    // The customer against its week, and its agent and team, which have no history: one alert each.
    expect(fired.map((e) => e.type)).toEqual(['spend.velocity_spike', 'spend.velocity_spike', 'spend.velocity_spike']);
    const byScope = Object.fromEntries(fired.map((f) => [f.data.scope_kind, f.data]));
    expect(Object.keys(byScope).sort()).toEqual(['agent', 'customer', 'team']);
    expect(byScope.customer).toMatchObject({ scope_id: 'cus_test', customer_id: 'cus_test', trailing_hourly_average: '0.1', factor: 3, currency: 'USD' });
    expect(byScope.agent).toMatchObject({ scope_id: 'agt_test', customer_id: 'cus_test', trailing_hourly_average: '0' });
    expect(byScope.team).toMatchObject({ scope_id: 'team_test', customer_id: 'cus_test', trailing_hourly_average: '0' });
    for (const f of fired) expect(Number(f.data.last_hour_spend)).toBeGreaterThanOrEqual(1);
    // Counted once per event, redelivery included: 80 x 0.05.
    expect(await world.redis.get(partitionedKey(world.config.REDIS_PREFIX, `spend-h:${tenantId}:cus_test:${hour}`, 0))).toBe((4n * UNIT).toString());
    expect(await world.redis.get(partitionedKey(world.config.REDIS_PREFIX, `spend-h:${tenantId}:agent:agt_test:${hour}`, 0))).toBe((4n * UNIT).toString());
    expect(await world.redis.get(partitionedKey(world.config.REDIS_PREFIX, `spend-h:${tenantId}:team:team_test:${hour}`, 0))).toBe((4n * UNIT).toString());
  });

  it('judges an app and a team each against its own week: a busy team with history does not page, its new app does', async () => {
    const tenantId = await tenantWithEndpoint(['spend.velocity_spike']);
    const now = Date.now();
    const hour = Math.floor(now / HOUR_MS);
    // The customer and the team have spent 10 an hour all week; the app is new.
    for (let h = 1; h <= 168; h++) {
      await world.redis.set(partitionedKey(world.config.REDIS_PREFIX, `spend-h:${tenantId}:cus_app:${hour - h}`, 0), (10n * UNIT).toString());
      await world.redis.set(partitionedKey(world.config.REDIS_PREFIX, `spend-h:${tenantId}:team:team_app:${hour - h}`, 0), (10n * UNIT).toString());
    }
    await world.sql`
      INSERT INTO alert_settings (tenant_id, threshold_bps, velocity_factor_milli, velocity_min_nano, projection_horizon_seconds)
      VALUES (${tenantId}, ${[]}::integer[], 3000, ${UNIT.toString()}, 3600)`;
    const pool = workers(2, () => now);
    await Promise.all(pool.map((w) => w.load()));
    const calls = Array.from({ length: 20 }, (_, i) =>
      entry(tenantId, { recordedAt: now - 1000 + i, attribution: { customerId: 'cus_app', teamId: 'team_app', agentId: undefined, appId: 'app_new' }, cost: { total: UNIT / 5n } }),
    );
    await runConcurrently(pool, chunks(calls, 3));
    await runConcurrently(pool, chunks(calls, 3));
    const fired = (await events(tenantId)).map((e) => JSON.parse(e.payload).data);
    // 4 in the hour: over 3 x 0 for the app, under 3 x 10 for the team and the customer.
    expect(fired).toHaveLength(1);
    expect(fired[0]).toMatchObject({ scope_kind: 'app', scope_id: 'app_new', customer_id: 'cus_app', trailing_hourly_average: '0', last_hour_spend: expect.any(String) });
    expect(await world.redis.get(partitionedKey(world.config.REDIS_PREFIX, `spend-h:${tenantId}:app:app_new:${hour}`, 0))).toBe((4n * UNIT).toString());
  });

  it.each([
    { k: 1.5, factorMilli: 1500n },
    { k: 10, factorMilli: 10_000n },
  ])('pages only above the k the tenant set through the admin API (k = $k): not at k x the average, nor one nano-unit below, but one above', async ({ k, factorMilli }) => {
    const tenant = await createdTenantWithEndpoint(['spend.velocity_spike']);
    const { tenantId } = tenant;
    expect(await patchAlertSettings(tenant, { velocity_factor: k, velocity_min_amount: '1' })).toMatchObject({ velocity_factor: k, velocity_min_amount: '1' });
    const now = Date.now();
    const hour = Math.floor(now / HOUR_MS);
    // A week of exactly 1 an hour for the customer and its team: a trailing average of 1.
    for (let h = 1; h <= 168; h++) {
      await world.redis.set(partitionedKey(world.config.REDIS_PREFIX, `spend-h:${tenantId}:cus_k:${hour - h}`, 0), UNIT.toString());
      await world.redis.set(partitionedKey(world.config.REDIS_PREFIX, `spend-h:${tenantId}:team:team_k:${hour - h}`, 0), UNIT.toString());
    }
    const [worker] = workers(1, () => now);
    await worker.load();
    // Events at the very start of this hour: the last hour is all of the previous hour (1) plus this hour's spend.
    const spend = (total: bigint) =>
      worker.handle([entry(tenantId, { recordedAt: hour * HOUR_MS, attribution: { customerId: 'cus_k', teamId: 'team_k', agentId: undefined }, cost: { total } })]);
    const mark = (factorMilli * UNIT) / 1000n;
    await spend(mark - UNIT - 1n);
    expect(await events(tenantId), 'one nano-unit below k x the average').toEqual([]);
    await spend(1n);
    expect(await events(tenantId), 'exactly k x the average').toEqual([]);
    await spend(1n);
    const fired = (await events(tenantId)).map((e) => JSON.parse(e.payload).data);
    expect(fired.map((d) => d.scope_kind).sort()).toEqual(['customer', 'team']);
    for (const d of fired) {
      expect(d).toMatchObject({ factor: k, trailing_hourly_average: '1', last_hour_spend: formatNano(mark + 1n) });
    }
  });

  it('pages at exactly the minimum and not one nano-unit below it (the skip of scopes surely under it is exact)', async () => {
    const now = Date.now();
    const [worker] = workers(1, () => now);
    await worker.load();
    // No history: the trailing average is 0, so the minimum (default 10) alone decides.
    const below = await tenantWithEndpoint(['spend.velocity_spike']);
    await worker.handle([entry(below, { recordedAt: now - 5000, cost: { total: 10n * UNIT - 1n } })]);
    expect(await events(below)).toEqual([]);
    const at = await tenantWithEndpoint(['spend.velocity_spike']);
    await worker.handle([entry(at, { recordedAt: now - 5000, cost: { total: 10n * UNIT } })]);
    const fired = (await events(at)).map((e) => JSON.parse(e.payload).data);
    expect(fired.map((d) => d.scope_kind).sort()).toEqual(['agent', 'customer', 'team']);
    for (const d of fired) expect(d.last_hour_spend).toBe('10');
  });

  it('does not page a tiny tenant (below the minimum), nor for late events', async () => {
    const tenantId = await tenantWithEndpoint(['spend.velocity_spike']);
    const now = Date.now();
    const [worker] = workers(1, () => now);
    await worker.load();
    // No history at all, but 9.99 in the hour is below the default minimum of 10.
    await worker.handle(Array.from({ length: 9 }, () => entry(tenantId, { recordedAt: now - 5000, cost: { total: UNIT + UNIT / 10n } })));
    // Yesterday's events, however large, say nothing about now.
    await worker.handle([entry(tenantId, { recordedAt: now - 26 * HOUR_MS, cost: { total: 1000n * UNIT } })]);
    expect(await events(tenantId)).toEqual([]);
  });
});

describe('session projection alerts', () => {
  it('fires once when a running session, carried ahead at its rate, passes its session cap before reaching it', async () => {
    const tenantId = await tenantWithEndpoint(['session.projection_exceeded', 'cap.threshold_reached']);
    const capId = await cap(tenantId, { scope_kind: 'team', scope_id: 'team_test', period: 'session', limit_nano: 10n * UNIT });
    await world.sql`
      INSERT INTO alert_settings (tenant_id, threshold_bps, velocity_factor_milli, velocity_min_nano, projection_horizon_seconds)
      VALUES (${tenantId}, ${[]}::integer[], 3000, ${(1000n * UNIT).toString()}, 600)`;
    const book = new CapBook(world.sql);
    await book.loadAll();
    const pool = workers(3);
    await Promise.all(pool.map((w) => w.load()));
    const t0 = Date.UTC(2026, 2, 31, 10, 0, 0);
    const at = (seconds: number, cost: bigint) => entry(tenantId, { sessionId: 'sess_p', recordedAt: t0 + seconds * 1000, cost: { total: cost } });
    // Within the first minute: no rate to speak of, however fast.
    await runConcurrently(pool, [[at(0, UNIT / 10n)], [at(30, UNIT)]], book);
    expect(await events(tenantId)).toEqual([]);
    // At 120 s, 1.2 spent: 1.2 x (120 + 600) / 120 = 7.2, short of 10.
    await runConcurrently(pool, [[at(120, UNIT / 10n)]], book);
    expect(await events(tenantId)).toEqual([]);
    // At 180 s, 3 spent: 3 x 780 / 180 = 13, past 10 (not reached): one alert, whatever comes next.
    await runConcurrently(pool, [[at(150, UNIT)], [at(180, (UNIT * 8n) / 10n)], [at(200, UNIT / 10n)], [at(210, UNIT / 10n)]], book);
    const fired = (await events(tenantId)).map((e) => ({ type: e.type, data: JSON.parse(e.payload).data }));
    expect(fired).toHaveLength(1);
    expect(fired[0]).toMatchObject({
      type: 'session.projection_exceeded',
      data: { cap_id: capId, session_id: 'sess_p', limit: '10', horizon_seconds: 600, session_started_at: new Date(t0).toISOString() },
    });
    expect(Number(fired[0].data.projected)).toBeGreaterThanOrEqual(10);
    expect(Number(fired[0].data.spent)).toBeLessThan(10);
  });
});

describe('session state', () => {
  it("lets a session's start and spend go a minute after it ends, in its own batch or a later one, with the calls that come after the end, and keeps the others'", async () => {
    const tenantId = await tenantWithEndpoint(['session.projection_exceeded']);
    const [worker] = workers(1);
    await worker.load();
    const t0 = Date.UTC(2026, 2, 31, 10, 0, 0);
    const keyOf = (session: string, what: 'start' | 'spend') => partitionedKey(world.config.REDIS_PREFIX, `session-${what}:${tenantId}:${session}`, 0);
    const ttls = (session: string) => Promise.all([world.redis.ttl(keyOf(session, 'start')), world.redis.ttl(keyOf(session, 'spend'))]);
    const values = (session: string) => Promise.all([world.redis.get(keyOf(session, 'start')), world.redis.get(keyOf(session, 'spend'))]);
    const ending = (ttl: number[]) => ttl.every((t) => t > 0 && t <= 60);
    const call = (sessionId: string, seconds: number) => entry(tenantId, { sessionId, recordedAt: t0 + seconds * 1000, cost: { total: UNIT } });
    const end = (sessionId: string, eventType: 'session.completed' | 'session.failed') =>
      entry(tenantId, { sessionId, eventType, recordedAt: t0 + 60_000, cost: { total: 0n }, toolName: undefined });
    await worker.handle([call('sess_a', 0), call('sess_b', 0), call('sess_c', 0)]);
    for (const session of ['sess_a', 'sess_b', 'sess_c']) expect(Math.min(...(await ttls(session)))).toBeGreaterThan(86_400);
    // sess_a ends in a later batch; sess_b calls and fails in one batch; sess_c goes on.
    await worker.handle([end('sess_a', 'session.completed'), call('sess_b', 30), end('sess_b', 'session.failed'), call('sess_c', 30)]);
    expect(ending(await ttls('sess_a'))).toBe(true);
    expect(ending(await ttls('sess_b'))).toBe(true);
    expect(await values('sess_b')).toEqual([String(t0), String(2n * UNIT)]);
    expect(Math.min(...(await ttls('sess_c')))).toBeGreaterThan(86_400);
    // A call of sess_a that comes after its end adds to what goes, and does not keep it for days.
    await worker.handle([call('sess_a', 50)]);
    expect(await values('sess_a')).toEqual([String(t0), String(2n * UNIT)]);
    expect(ending(await ttls('sess_a'))).toBe(true);
    // sess_d's end comes before its calls: they add to keys that go too, and nothing is projected for it.
    await worker.handle([end('sess_d', 'session.completed')]);
    await worker.handle([call('sess_d', 10), call('sess_d', 20)]);
    expect(await values('sess_d')).toEqual(['0', String(2n * UNIT)]);
    expect(ending(await ttls('sess_d'))).toBe(true);
    // A redelivered end changes nothing more and fails nothing.
    await worker.handle([end('sess_a', 'session.completed')]);
    expect(await values('sess_a')).toEqual([String(t0), String(2n * UNIT)]);
    expect(Math.min(...(await ttls('sess_c')))).toBeGreaterThan(86_400);
  });
});

describe('session projection against day and month caps', () => {
  it("fires once when a session's rate, carried ahead, would take a day cap past its limit before the day ends", async () => {
    const tenantId = await tenantWithEndpoint(['session.projection_exceeded']);
    const capId = await cap(tenantId, { scope_kind: 'agent', scope_id: 'agt_test', period: 'day', limit_nano: 20n * UNIT });
    await world.sql`
      INSERT INTO alert_settings (tenant_id, threshold_bps, velocity_factor_milli, velocity_min_nano, projection_horizon_seconds)
      VALUES (${tenantId}, ${[]}::integer[], 3000, ${(1000n * UNIT).toString()}, 3600)`;
    const book = new CapBook(world.sql);
    await book.loadAll();
    const t0 = Date.UTC(2026, 2, 31, 10, 0, 0);
    const pool = workers(3, () => t0 + 1500 * 1000);
    await Promise.all(pool.map((w) => w.load()));
    // Earlier today, other sessions spent 10 of the 20.
    await runConcurrently(pool, [[entry(tenantId, { sessionId: 'sess_old', recordedAt: t0 - 3 * HOUR_MS, cost: { total: 10n * UNIT } })]], book);
    const at = (seconds: number, cost: bigint) => entry(tenantId, { sessionId: 'sess_day', recordedAt: t0 + seconds * 1000, cost: { total: cost } });
    // At 600 s the session spent 1: 10 + 1 + 1 x 3600 / 600 = 17, short of 20.
    await runConcurrently(pool, [[at(0, UNIT / 2n)], [at(600, UNIT / 2n)]], book);
    expect(await events(tenantId)).toEqual([]);
    // At 900 s it spent 2: 12 + 2 x 3600 / 900 = 20 reaches 20: one alert, whatever comes next (and however many workers see it).
    await runConcurrently([pool[0]], [[at(900, UNIT)], [at(1200, 2n * UNIT)]], book);
    await runConcurrently(pool, [[at(1300, UNIT / 10n)], [at(1400, UNIT / 10n)], [at(1500, UNIT / 10n)]], book);
    const fired = (await events(tenantId)).map((e) => ({ type: e.type, data: JSON.parse(e.payload).data }));
    expect(fired).toHaveLength(1);
    expect(fired[0]).toMatchObject({
      type: 'session.projection_exceeded',
      data: { cap_id: capId, period: 'day', period_key: '2026-03-31', session_id: 'sess_day', spent: '12', session_spent: '2', projected: '20', horizon_seconds: 3600 },
    });
  });

  it('carries the session ahead only to the end of the period', async () => {
    const tenantId = await tenantWithEndpoint(['session.projection_exceeded']);
    await cap(tenantId, { scope_kind: 'team', scope_id: 'team_test', period: 'day', limit_nano: 10n * UNIT });
    const book = new CapBook(world.sql);
    await book.loadAll();
    // 5 spent in 10 minutes, 10 minutes before midnight: 5 + 5 x 600 / 600 = 10 reaches the limit at midnight...
    const t0 = Date.UTC(2026, 2, 31, 23, 40, 0);
    const [worker] = workers(1, () => t0 + 600_000);
    await worker.load();
    await runConcurrently([worker], [[entry(tenantId, { sessionId: 'sess_late', recordedAt: t0, cost: { total: UNIT } })]], book);
    await runConcurrently([worker], [[entry(tenantId, { sessionId: 'sess_late', recordedAt: t0 + 600_000, cost: { total: 4n * UNIT } })]], book);
    const fired = (await events(tenantId)).filter((e) => e.type === 'session.projection_exceeded').map((e) => JSON.parse(e.payload).data);
    expect(fired).toMatchObject([{ horizon_seconds: 600, projected: '10', spent: '5', session_spent: '5' }]);
  });
});

describe('session projection of a period that has ended', () => {
  it("warns of nothing for a day that is over: the day's events delivered again the next day (or backfilled) report thresholds, not projections", async () => {
    const tenantId = await tenantWithEndpoint(['session.projection_exceeded']);
    await cap(tenantId, { scope_kind: 'agent', scope_id: 'agt_test', period: 'day', limit_nano: 20n * UNIT });
    const book = new CapBook(world.sql);
    await book.loadAll();
    const t0 = Date.UTC(2026, 2, 30, 10, 0, 0);
    // 12 spent today by the session in 900 s: 12 + 12 x 3600 / 900 = 60 would pass 20 within the hour.
    const day = [
      [entry(tenantId, { sessionId: 'sess_done', recordedAt: t0, cost: { total: 6n * UNIT } })],
      [entry(tenantId, { sessionId: 'sess_done', recordedAt: t0 + 900_000, cost: { total: 6n * UNIT } })],
    ];
    const nextDay = Date.UTC(2026, 2, 31, 1, 0, 0);
    const [late] = workers(1, () => nextDay);
    await late.load();
    const projections = async () => (await events(tenantId)).filter((e) => e.type === 'session.projection_exceeded');
    await runConcurrently([late], day, book);
    expect(await projections()).toEqual([]);
    // The same figures seen while the day runs warn once (the same events, the markers of the first delivery aside).
    const [onTime] = workers(1, () => t0 + 900_000);
    await onTime.load();
    await runConcurrently([onTime], [[entry(tenantId, { sessionId: 'sess_done', recordedAt: t0 + 901_000, cost: { total: UNIT } })]], book);
    expect(await projections()).toHaveLength(1);
  });
});

describe('rolling caps', () => {
  it('fires a threshold of a rolling cap once per window-long slot', async () => {
    const tenantId = await tenantWithEndpoint(['cap.threshold_reached']);
    const id = `cap_${tenantId}_rolling`;
    await world.sql`
      INSERT INTO spend_caps (id, tenant_id, scope_kind, scope_id, period, window_seconds, limit_nano, action)
      VALUES (${id}, ${tenantId}, 'agent', 'agt_test', 'rolling', 3600, ${(10n * UNIT).toString()}, 'alert')`;
    let now = Date.UTC(2026, 2, 31, 10, 0, 0);
    const pool = workers(2, () => now);
    await Promise.all(pool.map((w) => w.load()));
    const counter = partitionedKey(world.config.REDIS_PREFIX, `cap:${tenantId}:${id}:w`, 0);
    await world.redis.set(counter, (6n * UNIT).toString());
    await runConcurrently(pool, [[entry(tenantId, { cost: { total: UNIT } })], [entry(tenantId, { cost: { total: UNIT } })]]);
    const first = (await events(tenantId)).map((e) => JSON.parse(e.payload).data);
    expect(first).toMatchObject([{ cap_id: id, period: 'rolling', period_key: 'w', threshold_percent: 50, spent: '6' }]);
    // The next window-long slot: the spend is still over 50 %, and it is a new crossing of the window.
    now += 3_600_000;
    await runConcurrently(pool, [[entry(tenantId, { cost: { total: UNIT } })]]);
    expect((await events(tenantId)).map((e) => JSON.parse(e.payload).data.threshold_percent)).toEqual([50, 50]);
  });
});

describe('blocks against events one at a time', () => {
  const COMMITTED = { billing_mode: 'COMMITTED', commitment: { committed_amount: 100, committed_price: '10' }, tool_invocations: { '*': '0.01' } } as const;

  /** A committed tenant (100 calls) with two agents, a day cap on its team, and alert settings that let every per-event alert fire. */
  async function committedTenant(name: string) {
    const seeded = await seedTenant(world.sql, { name, pricing: COMMITTED, customers: 1, teamsPerCustomer: 1, agentsPerTeam: 2 });
    const customer = seeded.customers[0];
    const team = customer.teams[0];
    const capId = await cap(seeded.tenantId, { scope_kind: 'team', scope_id: team.id, period: 'day', limit_nano: UNIT });
    await world.sql`
      INSERT INTO alert_settings (tenant_id, threshold_bps, velocity_factor_milli, velocity_min_nano, projection_horizon_seconds)
      VALUES (${seeded.tenantId}, ${[5000, 8000, 10000]}::integer[], 3000, ${UNIT.toString()}, 600)`;
    // Each id of this tenant, and the name it is compared under (the cap's, which holds the tenant's, first).
    const names: [string, string][] = [
      [capId, 'CAP'],
      [seeded.tenantId, 'TENANT'],
      [customer.id, 'CUSTOMER'],
      [customer.subscriptionId, 'SUBSCRIPTION'],
      [seeded.ratePlanId, 'PLAN'],
      [team.id, 'TEAM'],
      [team.agents[0].id, 'AGENT0'],
      [team.agents[1].id, 'AGENT1'],
    ];
    return { seeded, customer, team, names };
  }

  /**
   * 120 calls of 0.05 of one customer, over two agents and two sessions, half in the hour before
   * `now` and half in its hour, a session's start lowered now and then by a call recorded earlier
   * than the ones before it: the same keys over and over, each event's view its own.
   */
  function calls(t: Awaited<ReturnType<typeof committedTenant>>, hourStart: number): StageEntry<LedgeredEvent>[] {
    return Array.from({ length: 120 }, (_, i) => {
      const late = i % 7 === 3 && (i < 50 || i > 80) ? 400_000 : 0;
      return {
        id: `0-${i}`,
        partition: 0,
        tags: [],
        payload: ledgeredEvent({
          tenantId: t.seeded.tenantId,
          eventId: `evt_same_${i}`,
          sessionId: i % 3 === 0 ? 'sess_a' : 'sess_b',
          recordedAt: hourStart - 30 * 60_000 + i * 30_000 - late,
          attribution: { customerId: t.customer.id, teamId: t.team.id, agentId: t.team.agents[i % 2].id },
          subscription: { subscriptionId: t.customer.subscriptionId, ratePlanId: t.seeded.ratePlanId },
          cost: { total: UNIT / 20n },
        }),
      };
    });
  }

  /** The tenant's alerts with its ids named alike (and sorted), so two tenants' can be compared. */
  async function alertsNamed(names: [string, string][], tenantId: string): Promise<{ type: string; dedupeKey: string; data: unknown }[]> {
    const named = (text: string) => names.reduce((t, [id, name]) => t.split(id).join(name), text);
    return (await events(tenantId))
      .map((e) => ({ type: e.type, dedupeKey: named(e.dedupe_key), data: JSON.parse(named(e.payload)).data }))
      .sort((a, b) => (a.dedupeKey < b.dedupeKey ? -1 : 1));
  }

  /**
   * The start of this hour, or of the one before when this one starts a UTC day: `calls` spans half
   * an hour either side of it, and the team's day cap must see the whole span in one period (run
   * from 00:00 to 01:00 UTC, the projection against it found the first half in a day already over).
   */
  function hourWithinOneDay(): number {
    const hourStart = Math.floor(Date.now() / HOUR_MS) * HOUR_MS;
    return hourStart % (24 * HOUR_MS) === 0 ? hourStart - HOUR_MS : hourStart;
  }

  it('fires the same alerts, with the same figures and on the same events, for a batch of blocks as for its events handed one at a time', async () => {
    const hourStart = hourWithinOneDay();
    const now = hourStart + 20 * 60_000;
    const blocks = await committedTenant('blocks');
    const singles = await committedTenant('singles');

    const [blockWorker] = workers(1, () => now);
    await blockWorker.load();
    const inBlocks = calls(blocks, hourStart);
    // One batch of three blocks (every key in two or three of them), as the harness hands them.
    await blockWorker.handleBlocks([
      { id: '0-0', origin: `blk0_${blocks.seeded.tenantId}`, events: inBlocks.slice(0, 45) },
      { id: '0-45', origin: `blk1_${blocks.seeded.tenantId}`, events: inBlocks.slice(45, 100) },
      { id: '0-100', origin: `blk2_${blocks.seeded.tenantId}`, events: inBlocks.slice(100) },
    ]);
    const [singleWorker] = workers(1, () => now);
    await singleWorker.load();
    for (const call of calls(singles, hourStart)) await singleWorker.handle([call]);

    const fromBlocks = await alertsNamed(blocks.names, blocks.seeded.tenantId);
    expect(fromBlocks).toEqual(await alertsNamed(singles.names, singles.seeded.tenantId));
    // Not a vacuous comparison: commitment thresholds, velocity in both hours, and session projections all fired.
    const count = (type: string) => fromBlocks.filter((a) => a.type === type).length;
    expect(count('commitment.threshold_reached')).toBe(3);
    expect(count('spend.velocity_spike')).toBe(8); // customer, team and two agents, in each hour
    expect(count('session.projection_exceeded')).toBe(1);
    // Each on the event that crossed, with that event's own running figure.
    const commitment = fromBlocks.filter((a) => a.type === 'commitment.threshold_reached').map((a) => a.data as { calls: string; event_id: string });
    expect(commitment.map((d) => [d.calls, d.event_id]).sort()).toEqual([
      ['100', 'evt_same_99'],
      ['50', 'evt_same_49'],
      ['80', 'evt_same_79'],
    ]);
    // sess_b as its fifth call saw it: started with its first call, not yet at the earlier time its eleventh brings.
    const projection = fromBlocks.find((a) => a.type === 'session.projection_exceeded')!.data;
    expect(projection).toMatchObject({ session_id: 'sess_b', event_id: 'evt_same_4', session_spent: '0.15', session_started_at: new Date(hourStart - 29.5 * 60_000).toISOString() });
    const sessionStart = partitionedKey(world.config.REDIS_PREFIX, `session-start:${blocks.seeded.tenantId}:sess_b`, 0);
    expect(await world.redis.get(sessionStart)).toBe(String(hourStart - 30 * 60_000 + 10 * 30_000 - 400_000));
    const counter = partitionedKey(world.config.REDIS_PREFIX, `commit-calls:${blocks.seeded.tenantId}:${blocks.customer.id}:${blocks.seeded.ratePlanId}:${Date.UTC(2026, 2, 1)}`, 0);
    expect(await world.redis.get(counter)).toBe('120');
  });

  it('applies a redelivered block once, alone or beside a new block on the same keys, and the new block sees the totals it left', async () => {
    const hourStart = hourWithinOneDay();
    const now = hourStart + 20 * 60_000;
    const t = await committedTenant('redelivered');
    const all = calls(t, hourStart);
    const block = (b: number, events: StageEntry<LedgeredEvent>[]) => ({ id: `0-${b}`, origin: `blk${b}_${t.seeded.tenantId}`, events });
    const first = block(0, all.slice(0, 40));
    const second = block(1, all.slice(40, 80));
    const third = block(2, all.slice(80));
    const [worker] = workers(1, () => now);
    await worker.load();
    await worker.handleBlocks([first, second]);
    const counter = partitionedKey(world.config.REDIS_PREFIX, `commit-calls:${t.seeded.tenantId}:${t.customer.id}:${t.seeded.ratePlanId}:${Date.UTC(2026, 2, 1)}`, 0);
    const session = partitionedKey(world.config.REDIS_PREFIX, `session-spend:${t.seeded.tenantId}:sess_b`, 0);
    const agentHour = partitionedKey(world.config.REDIS_PREFIX, `spend-h:${t.seeded.tenantId}:agent:${t.team.agents[0].id}:${Math.floor(hourStart / HOUR_MS) - 1}`, 0);
    const before = await world.redis.mget(counter, session, agentHour);
    expect(before[0]).toBe('80');
    const firedBefore = await alertsNamed(t.names, t.seeded.tenantId);

    // The second block again, alone, to a worker that remembers nothing: nothing counted, nothing new in the outbox.
    const [fresh] = workers(1, () => now);
    await fresh.load();
    await fresh.handleBlocks([second]);
    expect(await world.redis.mget(counter, session, agentHour)).toEqual(before);
    expect(await alertsNamed(t.names, t.seeded.tenantId)).toEqual(firedBefore);

    // The second again beside the third: the third counted once, from where the first two left the totals.
    await fresh.handleBlocks([second, third]);
    await fresh.handleBlocks([second, third]);
    expect(await world.redis.get(counter)).toBe('120');
    expect(BigInt((await world.redis.get(session))!)).toBe((80n * UNIT) / 20n); // two calls in three are sess_b's
    const hundred = (await alertsNamed(t.names, t.seeded.tenantId)).find((a) => a.dedupeKey.endsWith(':100:10000'));
    expect(hundred?.data).toMatchObject({ calls: '100', event_id: 'evt_same_99' });
    expect((await events(t.seeded.tenantId)).filter((e) => e.type === 'commitment.threshold_reached')).toHaveLength(3);
  });
});
