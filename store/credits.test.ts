import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAdminRoutes } from '../api/admin/index.js';
import { rollUp } from '../stages/invoice-rollup/index.js';
import { ledgeredEvent, stageEntries } from '../stages/testing.js';
import type { SeededTenant } from '../ops/seed.js';
import { seedSmall } from '../test/support/billing.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { creditBalances, drawCredits, expireGrants, grantCredits, pauseExhausted } from './credits.js';
import { closePeriod } from './invoices.js';
import { pauseHistory, pausesNotLifted } from './pause-flags.js';
import { PlanCache } from './rate-plans.js';
import { TenantTokens } from './tenant-tokens.js';

const MARCH = Date.UTC(2026, 2, 1);
const APRIL = Date.UTC(2026, 3, 1);
const DAY = 86_400_000;

let world: Isolated;
let tenant: SeededTenant;
let admin: ReturnType<typeof createAdminRoutes>;

beforeAll(async () => {
  world = await isolated('credits');
  tenant = await seedSmall(world.sql, { pricing: { tool_invocations: { '*': '0.10' } }, customers: 2, subscriptionsFrom: new Date(MARCH) });
  admin = createAdminRoutes({ sql: world.sql, redis: world.redis, prefix: world.config.REDIS_PREFIX, tokens: new TenantTokens(world.sql, 0) });
});
afterAll(() => world.cleanup());

const call = (method: string, path: string, body?: unknown) =>
  admin.request(`/v1/admin${path}`, {
    method,
    headers: { authorization: `Bearer ${tenant.adminToken}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

function calls(count: number, customerIndex = 0) {
  const customer = tenant.customers[customerIndex];
  return stageEntries(
    Array.from({ length: count }, () =>
      ledgeredEvent({
        tenantId: tenant.tenantId,
        sessionId: undefined,
        recordedAt: MARCH + 2 * DAY,
        attribution: { customerId: customer.id, teamId: customer.teams[0].id, agentId: customer.teams[0].agents[0].id },
        subscription: { subscriptionId: customer.subscriptionId, ratePlanVersionId: tenant.ratePlanVersionId, periodStart: MARCH, periodEnd: APRIL },
        cost: { total: 100_000_000n, tool: '*', breakdown: { tool: 100_000_000n } },
      }),
    ),
  );
}

const place = () => ({ prefix: world.config.REDIS_PREFIX, partitions: 1 });

async function remaining(): Promise<Record<string, string>> {
  const reply = await call('get', `/customers/${tenant.customers[0].id}/credits`);
  const body = (await reply.json()) as { grants: { description: string; remaining: string }[] };
  return Object.fromEntries(body.grants.map((g) => [g.description, g.remaining]));
}

describe('prepaid credits', () => {
  it('drain in priority then expiry order, pause the customer at zero and show on the invoice', async () => {
    const customerId = tenant.customers[0].id;
    const soon = new Date(Date.now() + 5 * DAY).toISOString();
    const later = new Date(Date.now() + 10 * DAY).toISOString();
    for (const grant of [
      { amount: '1.00', currency: 'USD', source: 'purchase', description: 'A' },
      { amount: '0.50', currency: 'USD', source: 'promotion', priority: 10, expires_at: later, description: 'B' },
      { amount: '0.20', currency: 'USD', source: 'promotion', priority: 10, expires_at: soon, description: 'C' },
      { amount: 5, currency: 'EUR', source: 'purchase', description: 'D' },
    ]) {
      expect((await call('post', `/customers/${customerId}/credit-grants`, grant)).status).toBe(201);
    }
    // An expired grant is never drawn, whatever its priority, and what it had left is written off.
    await world.sql.begin((tx) =>
      grantCredits(tx, {
        id: 'grant_expired', tenantId: tenant.tenantId, customerId, currency: 'USD', amountNano: 1_000_000_000n,
        priority: 0, source: 'promotion', expiresAt: new Date(Date.now() - DAY), description: 'E',
      }),
    );
    expect(await expireGrants(world.sql)).toBe(1);

    const plans = new PlanCache(world.sql);
    const paused: string[] = [];
    const onExhausted = async (accounts: Parameters<typeof pauseExhausted>[3], eventId: string) => {
      paused.push(...accounts.map((a) => a.customerId));
      await pauseExhausted(world.sql, world.redis, place(), accounts, eventId);
    };
    await rollUp(world.sql, plans, calls(3), onExhausted);
    expect(await remaining()).toEqual({ C: '0', B: '0.4', A: '1', D: '5', E: '0' });
    await rollUp(world.sql, plans, calls(10), onExhausted);
    expect(await remaining()).toEqual({ C: '0', B: '0', A: '0.4', D: '5', E: '0' });
    expect(paused).toEqual([]);
    await rollUp(world.sql, plans, calls(5), onExhausted);
    expect(await remaining()).toEqual({ C: '0', B: '0', A: '0', D: '5', E: '0' });
    expect(paused).toEqual([customerId]);

    // Paused through the spend-cap machinery: the flag authorize reads, and the console's record.
    const pauses = await pausesNotLifted(world.sql, world.redis, place(), tenant.tenantId);
    expect(pauses).toMatchObject([{ capId: 'credits:USD', scopeKind: 'customer', scopeId: customerId, inForce: true, customerId }]);
    const balance = (await (await call('get', `/customers/${customerId}/credits`)).json()) as { balances: unknown[] };
    expect(balance.balances).toEqual([
      { currency: 'EUR', balance: '5', hard_cap: true, paused: false },
      { currency: 'USD', balance: '0', hard_cap: true, paused: true },
    ]);
    // However many newer pauses of other scopes the tenant has, the customer's own is found.
    await world.sql`
      INSERT INTO cap_pauses (tenant_id, cap_id, scope_kind, scope_id, period_key, event_id, limit_nano, paused_at)
      SELECT ${tenant.tenantId}, 'cap_other', 'session', 'sess_' || g, 's:sess_' || g, 'evt_' || g, 1, now() + g * interval '1 ms'
      FROM generate_series(1, 1001) g`;
    const amongMany = (await (await call('get', `/customers/${customerId}/credits`)).json()) as { balances: { paused: boolean }[] };
    expect(amongMany.balances.map((b) => b.paused)).toEqual([false, true]);
    await world.sql`DELETE FROM cap_pauses WHERE tenant_id = ${tenant.tenantId} AND cap_id = 'cap_other'`;

    // The movements: 5 grants, the expiry, and each draw per grant.
    const movements = (await (await call('get', `/customers/${customerId}/credits/movements?limit=200`)).json()) as { data: { kind: string; amount: string; grant_id: string }[] };
    expect(movements.data.map((m) => `${m.kind} ${m.amount}`)).toEqual([
      'granted 1', 'granted 0.5', 'granted 0.2', 'granted 5', 'granted 1', 'expired -1',
      'consumed -0.2', 'consumed -0.1', 'consumed -0.4', 'consumed -0.6', 'consumed -0.4',
    ]);
    const pastInt64 = await call('get', `/customers/${customerId}/credits/movements?cursor=9999999999999999999`);
    expect(pastInt64.status).toBe(400);
    expect(((await pastInt64.json()) as { error: { details: { path: string }[] } }).error.details[0].path).toBe('cursor');

    // The invoice shows the credits applied: 18 calls x 0.10 = 1.80, 1.70 paid by credits.
    const closed = await closePeriod(world.sql, plans, tenant.tenantId, customerId, { start: MARCH, end: APRIL });
    expect(closed.status === 'closed' && [closed.invoice.total, closed.invoice.credits_applied, closed.invoice.amount_due]).toEqual(['1.80', '1.70', '0.10']);

    // A new grant lifts the pause, on the record as lifted by the admin token that granted it.
    const granted = await call('post', `/customers/${customerId}/credit-grants`, { amount: '2', currency: 'USD', source: 'purchase' });
    expect(granted.status).toBe(201);
    const grantId = ((await granted.json()) as { id: string }).id;
    expect((await pausesNotLifted(world.sql, world.redis, place(), tenant.tenantId)).filter((p) => p.inForce)).toEqual([]);
    const [adminToken] = await world.sql<{ id: string }[]>`SELECT id FROM tenant_tokens WHERE tenant_id = ${tenant.tenantId} AND kind = 'admin'`;
    expect(await pauseHistory(world.sql, tenant.tenantId, 'lifted', 10)).toMatchObject([
      { capId: 'credits:USD', scopeId: customerId, liftedBy: 'admin', liftReason: `credits granted (${grantId})`, liftedByTokenId: adminToken.id },
    ]);
  });

  it('sends credits.exhausted once per pause, in the transaction that records the pause, however many draws find the account at zero', async () => {
    const customerId = tenant.customers[1].id;
    const plans = new PlanCache(world.sql);
    const onExhausted = (accounts: Parameters<typeof pauseExhausted>[3], eventId: string) => pauseExhausted(world.sql, world.redis, place(), accounts, eventId);
    const exhaustedWebhooks = () => world.sql<{ xmin: string; data: Record<string, string> }[]>`
      SELECT xmin::text AS xmin, payload::jsonb -> 'data' AS data FROM webhook_events
      WHERE tenant_id = ${tenant.tenantId} AND type = 'credits.exhausted' AND payload::jsonb -> 'data' ->> 'customer_id' = ${customerId}
      ORDER BY created_at, id`;
    const pauseXmin = async () =>
      (await world.sql<{ xmin: string }[]>`
        SELECT xmin::text AS xmin FROM cap_pauses WHERE tenant_id = ${tenant.tenantId} AND cap_id = 'credits:USD' AND scope_id = ${customerId}`)[0].xmin;

    expect((await call('post', `/customers/${customerId}/credit-grants`, { amount: '0.30', currency: 'USD', source: 'purchase' })).status).toBe(201);
    await rollUp(world.sql, plans, calls(3, 1), onExhausted);
    const first = await exhaustedWebhooks();
    expect(first).toEqual([{ xmin: await pauseXmin(), data: { customer_id: customerId, currency: 'USD', event_id: expect.any(String) } }]);
    // Events still coming while the customer sits at zero (in flight when it was paused): no second webhook.
    await rollUp(world.sql, plans, calls(2, 1), onExhausted);
    await rollUp(world.sql, plans, calls(1, 1), onExhausted);
    expect(await exhaustedWebhooks()).toEqual(first);

    // A grant lifts the pause; running out again is a new pause, and a new webhook with it.
    expect((await call('post', `/customers/${customerId}/credit-grants`, { amount: '0.10', currency: 'USD', source: 'purchase' })).status).toBe(201);
    expect((await pausesNotLifted(world.sql, world.redis, place(), tenant.tenantId)).filter((p) => p.scopeId === customerId && p.inForce)).toEqual([]);
    await rollUp(world.sql, plans, calls(1, 1), onExhausted);
    const both = await exhaustedWebhooks();
    expect(both).toHaveLength(2);
    expect(both[1].xmin).toBe(await pauseXmin());
    expect(both[1].xmin).not.toBe(first[0].xmin);
  });

  it('a grant that commits while a draw at zero runs does not leave the customer paused with credits', async () => {
    const customerId = tenant.customers[1].id;
    expect((await call('post', `/customers/${customerId}/credit-grants`, { amount: '1', currency: 'USD', source: 'purchase' })).status).toBe(201);
    // The draw read the balance at zero before the grant committed; it pauses after the grant's own lift ran.
    await pauseExhausted(world.sql, world.redis, place(), [{ tenantId: tenant.tenantId, customerId, currency: 'USD' }], 'evt_raced');
    expect((await pausesNotLifted(world.sql, world.redis, place(), tenant.tenantId)).filter((p) => p.scopeId === customerId)).toEqual([]);
    expect((await pauseHistory(world.sql, tenant.tenantId, 'lifted', 10)).find((p) => p.scopeId === customerId)).toMatchObject({
      capId: 'credits:USD', liftedBy: 'admin', liftReason: 'credits granted while the draw that paused ran',
    });
  });

  it('refuses bad grants with the JSON path, and another tenant\'s customer with 404', async () => {
    const bad = await call('post', `/customers/${tenant.customers[1].id}/credit-grants`, { amount: '-1', currency: 'usd', source: 'gift' });
    expect(bad.status).toBe(400);
    const paths = ((await bad.json()) as { error: { details: { path: string }[] } }).error.details.map((d) => d.path).sort();
    expect(paths).toEqual(['amount', 'currency', 'source']);
    expect((await call('get', '/customers/cus_unknown/credits')).status).toBe(404);
  });
});

describe('credits returned by a correction', () => {
  const UNIT = 1_000_000_000n;
  let other: SeededTenant;

  beforeAll(async () => {
    other = await seedSmall(world.sql, { pricing: { tool_invocations: { '*': '0.10' } }, customers: 3, subscriptionsFrom: new Date(MARCH) });
  });

  const customer = (i: number) => other.customers[i];
  const grant = (i: number, id: string, units: number, priority: number, expiresAt: Date | null = null) =>
    world.sql.begin((tx) =>
      grantCredits(tx, {
        id, tenantId: other.tenantId, customerId: customer(i).id, currency: 'USD', amountNano: BigInt(units * 10) * (UNIT / 10n),
        priority, source: expiresAt ? 'promotion' : 'purchase', expiresAt, description: id, hardCap: false,
      }),
    );
  /** Draws (or, negative, gives back for a correction of `eventId`) in one transaction, several at once if asked. */
  const draw = (i: number, ...draws: { period: number; units: number; eventId?: string }[]) =>
    world.sql.begin((tx) =>
      drawCredits(
        tx,
        draws.map((d) => ({
          tenantId: other.tenantId, customerId: customer(i).id, currency: 'USD', subscriptionId: customer(i).subscriptionId,
          periodStart: d.period, amountNano: BigInt(Math.round(d.units * 10)) * (UNIT / 10n), eventId: d.eventId,
        })),
      ),
    );
  const units = (nano: string | bigint) => Number(BigInt(nano)) / 1e9;
  const left = async (i: number) =>
    Object.fromEntries(
      (await world.sql<{ id: string; remaining_nano: string }[]>`
        SELECT id, remaining_nano::text FROM credit_grants WHERE tenant_id = ${other.tenantId} AND customer_id = ${customer(i).id}`).map((g) => [g.id, units(g.remaining_nano)]),
    );
  const balance = async (i: number) => units((await creditBalances(world.sql, other.tenantId, customer(i).id))[0].balanceNano);
  /** The movements a correction wrote: grant, kind, amount and the period they count for ('-': none). */
  const movementsOf = async (eventId: string) =>
    (
      await world.sql<{ grant_id: string; kind: string; amount_nano: string; period_start: Date | null }[]>`
        SELECT grant_id, kind, amount_nano::text, period_start FROM credit_movements WHERE tenant_id = ${other.tenantId} AND event_id = ${eventId} ORDER BY id`
    ).map((m) => `${m.grant_id} ${m.kind} ${units(m.amount_nano)} ${m.period_start === null ? '-' : m.period_start.getTime() === MARCH ? 'march' : 'april'}`);
  /** What a period's usage drew net of what came back: the invoice's credits_applied. */
  const applied = async (i: number, period: number) => {
    const [row] = await world.sql<{ applied: string }[]>`
      SELECT coalesce(-sum(amount_nano), 0)::text AS applied FROM credit_movements
      WHERE tenant_id = ${other.tenantId} AND subscription_id = ${customer(i).subscriptionId} AND period_start = ${new Date(period)}
        AND kind IN ('consumed', 'returned')`;
    return units(row.applied);
  };
  /** Grants whose remaining is not the sum of their movements (none: the ledger is exact). */
  const offLedger = (i: number) => world.sql`
    SELECT g.id, g.remaining_nano::text, (SELECT sum(m.amount_nano) FROM credit_movements m WHERE m.tenant_id = g.tenant_id AND m.grant_id = g.id)::text AS moved
    FROM credit_grants g WHERE g.tenant_id = ${other.tenantId} AND g.customer_id = ${customer(i).id}
      AND g.remaining_nano <> (SELECT sum(m.amount_nano) FROM credit_movements m WHERE m.tenant_id = g.tenant_id AND m.grant_id = g.id)`;

  it('goes back to the grant the period drew from, not to a grant that expired without being drawn', async () => {
    await grant(0, 'c0_purchase', 10, 10);
    await grant(0, 'c0_promo', 5, 100, new Date(Date.now() - 60_000));
    await expireGrants(world.sql);
    await draw(0, { period: MARCH, units: 3 });
    expect(await balance(0)).toBe(7);

    await draw(0, { period: MARCH, units: -1, eventId: 'evt_c0_void' });
    expect(await movementsOf('evt_c0_void')).toEqual(['c0_purchase returned 1 march']);
    expect(await left(0)).toEqual({ c0_purchase: 8, c0_promo: 0 });
    expect(await balance(0)).toBe(8);
    // Nothing parked on the expired promotion for the next expiry run to write off.
    await expireGrants(world.sql);
    expect(await balance(0)).toBe(8);
    expect(await applied(0, MARCH)).toBe(2);
    expect(await offLedger(0)).toEqual([]);
  });

  it('splits a return across the grants one period drew from, newest draw first, each up to what it gave net of earlier returns', async () => {
    await grant(1, 'c1_a', 1, 10);
    await grant(1, 'c1_b', 5, 20);
    await grant(1, 'c1_c', 3, 30);
    await draw(1, { period: MARCH, units: 3 }); // a: -1, b: -2
    await draw(1, { period: APRIL, units: 4 }); // b: -3, c: -1 (c has room, but March never drew from it)
    expect(await left(1)).toEqual({ c1_a: 0, c1_b: 0, c1_c: 2 });

    await draw(1, { period: MARCH, units: -2.5, eventId: 'evt_c1_first' });
    expect(await movementsOf('evt_c1_first')).toEqual(['c1_b returned 2 march', 'c1_a returned 0.5 march']);
    expect(await left(1)).toEqual({ c1_a: 0.5, c1_b: 2, c1_c: 2 });

    // A second correction of the period: b already has back all it gave March, a has 0.5 to come.
    await draw(1, { period: MARCH, units: -1, eventId: 'evt_c1_second' });
    expect(await movementsOf('evt_c1_second')).toEqual(['c1_a returned 0.5 march']);
    await draw(1, { period: MARCH, units: -1, eventId: 'evt_c1_third' });
    expect(await movementsOf('evt_c1_third')).toEqual([]);
    expect(await left(1)).toEqual({ c1_a: 1, c1_b: 2, c1_c: 2 });
    expect([await applied(1, MARCH), await applied(1, APRIL)]).toEqual([0, 4]);

    // A draw and a return of the same period in one call: the return sees the draw before it.
    await draw(1, { period: MARCH, units: 0.4 }, { period: MARCH, units: -0.3, eventId: 'evt_c1_same_batch' });
    expect(await movementsOf('evt_c1_same_batch')).toEqual(['c1_a returned 0.3 march']);
    expect(await left(1)).toEqual({ c1_a: 0.9, c1_b: 2, c1_c: 2 });
    expect(await offLedger(1)).toEqual([]);
  });

  it('returns a share drawn from a grant that has expired since and writes it off, as if the usage had never been', async () => {
    await grant(2, 'c2_promo', 2, 10, new Date(Date.now() + DAY));
    await grant(2, 'c2_purchase', 10, 20);
    await draw(2, { period: MARCH, units: 3 }); // promo: -2, purchase: -1
    await world.sql`UPDATE credit_grants SET expires_at = now() - interval '1 minute' WHERE tenant_id = ${other.tenantId} AND id = 'c2_promo'`;

    await draw(2, { period: MARCH, units: -1.5, eventId: 'evt_c2_void' });
    expect(await movementsOf('evt_c2_void')).toEqual(['c2_purchase returned 1 march', 'c2_promo returned 0.5 march', 'c2_promo expired -0.5 -']);
    expect(await left(2)).toEqual({ c2_promo: 0, c2_purchase: 10 });
    expect(await balance(2)).toBe(10);
    expect(await applied(2, MARCH)).toBe(1.5);

    // Every grant expired: each return is written off, the ledger still exact.
    await world.sql`UPDATE credit_grants SET expires_at = now() - interval '1 minute' WHERE tenant_id = ${other.tenantId} AND id = 'c2_purchase'`;
    await expireGrants(world.sql);
    await draw(2, { period: MARCH, units: -1, eventId: 'evt_c2_late' });
    expect(await movementsOf('evt_c2_late')).toEqual(['c2_promo returned 1 march', 'c2_promo expired -1 -']);
    await draw(2, { period: MARCH, units: -1, eventId: 'evt_c2_later' });
    expect(await movementsOf('evt_c2_later')).toEqual(['c2_promo returned 0.5 march', 'c2_promo expired -0.5 -']);
    expect(await left(2)).toEqual({ c2_promo: 0, c2_purchase: 0 });
    expect(await applied(2, MARCH)).toBe(0);
    expect(await offLedger(2)).toEqual([]);
  });
});
