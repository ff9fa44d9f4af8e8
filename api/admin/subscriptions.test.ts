import { describe, expect, it } from 'vitest';
import { apiErrorHandler } from '../errors.js';
import { createInvoiceRoutes } from '../invoices.js';
import { createLogger } from '../../pipeline/logger.js';
import { TenantTokens } from '../../store/tenant-tokens.js';
import { adminWorld, created, listAll, seedHierarchy, SIMPLE_PRICING } from './test-world.js';

const t = adminWorld('admin-subscriptions');

const hour = 3_600_000;
const at = (offsetMs: number) => new Date(Date.now() + offsetMs).toISOString();
const COMMITTED = { billing_mode: 'COMMITTED', commitment: { committed_amount: 1000, committed_price: '50' }, tool_invocations: { '*': '0.04' } };

const monthStart = () => new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), 1)).toISOString();
const nextMonthStart = () => new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() + 1, 1)).toISOString();

async function planWithVersions(call: typeof t.a.call, name: string) {
  const plan = await created(call, '/v1/admin/rate-plans', { name, currency: 'USD', pricing: SIMPLE_PRICING });
  await created(call, `/v1/admin/rate-plans/${plan.id}/versions`, { pricing: { tool_invocations: { '*': '0.02' } } });
  return plan;
}

describe('subscriptions', () => {
  it('subscribes a customer to the latest version of a plan and reads it back with the plan version', async () => {
    const { customer } = await seedHierarchy(t.a.call, 'Sub');
    const plan = await planWithVersions(t.a.call, 'Latest');
    await t.takeControl();
    const subscription = await created(t.a.call, '/v1/admin/subscriptions', { customer_id: customer.id, rate_plan_id: plan.id, effective_from: '2026-01-01T00:00:00Z' });
    expect(subscription).toMatchObject({
      customer_id: customer.id,
      team_id: null,
      agent_id: null,
      app_id: null,
      rate_plan_id: plan.id,
      rate_plan_version: 2,
      currency: 'USD',
      effective_from: '2026-01-01T00:00:00.000Z',
      effective_to: null,
      overrides: {},
      commitment: null,
      allocation: null,
      supersedes: null,
    });
    expect((await t.a.call('GET', `/v1/admin/subscriptions/${subscription.id}`)).body).toEqual(subscription);
    expect((await t.a.call('GET', `/v1/admin/subscriptions?customer_id=${customer.id}`)).body.data).toEqual([subscription]);
    expect(await t.takeControl()).toEqual([{ type: 'subscriptions.changed', tenantId: t.a.tenantId }]);
  });

  it('subscribes a team, an agent or an app of the customer at a chosen version, but only of that customer', async () => {
    const { customer, team, agent, app } = await seedHierarchy(t.a.call, 'Scopes');
    const plan = await planWithVersions(t.a.call, 'Scoped');
    const base = { customer_id: customer.id, rate_plan_id: plan.id, rate_plan_version: 1, effective_from: '2026-02-01T00:00:00Z' };
    for (const scope of [{ team_id: team.id }, { agent_id: agent.id }, { app_id: app.id }]) {
      const subscription = await created(t.a.call, '/v1/admin/subscriptions', { ...base, ...scope });
      expect(subscription).toMatchObject({ ...scope, rate_plan_version: 1 });
    }
    const stranger = await seedHierarchy(t.a.call, 'Stranger');
    const wrongTeam = await t.a.call('POST', '/v1/admin/subscriptions', { ...base, team_id: stranger.team.id });
    expect(wrongTeam.status).toBe(400);
    expect(wrongTeam.body.error.message).toMatch(/does not belong to customer/);
    const twoScopes = await t.a.call('POST', '/v1/admin/subscriptions', { ...base, team_id: team.id, agent_id: agent.id });
    expect(twoScopes.status).toBe(400);
    const noVersion = await t.a.call('POST', '/v1/admin/subscriptions', { ...base, rate_plan_version: 7 });
    expect(noVersion.status).toBe(404);
    const backwards = await t.a.call('POST', '/v1/admin/subscriptions', { ...base, effective_to: '2025-01-01T00:00:00Z' });
    expect(backwards.status).toBe(400);
    expect(backwards.body.error.details[0].path).toBe('effective_to');
  });

  it('refuses an overlapping subscription of the same scope with 409 subscription_overlap', async () => {
    const { customer, team } = await seedHierarchy(t.a.call, 'Overlap');
    const plan = await planWithVersions(t.a.call, 'Overlapping');
    const first = await created(t.a.call, '/v1/admin/subscriptions', {
      customer_id: customer.id,
      rate_plan_id: plan.id,
      effective_from: '2026-01-01T00:00:00Z',
      effective_to: '2026-03-01T00:00:00Z',
    });
    const overlapping = await t.a.call('POST', '/v1/admin/subscriptions', { customer_id: customer.id, rate_plan_id: plan.id, effective_from: '2026-02-01T00:00:00Z' });
    expect(overlapping.status).toBe(409);
    expect(overlapping.body.error.code).toBe('subscription_overlap');
    expect(overlapping.body.error.message).toContain(first.id);

    // Adjacent periods and other scopes do not overlap.
    const next = await t.a.call('POST', '/v1/admin/subscriptions', { customer_id: customer.id, rate_plan_id: plan.id, effective_from: '2026-03-01T00:00:00Z' });
    expect(next.status).toBe(201);
    const teamScope = await t.a.call('POST', '/v1/admin/subscriptions', { customer_id: customer.id, team_id: team.id, rate_plan_id: plan.id, effective_from: '2026-02-01T00:00:00Z' });
    expect(teamScope.status).toBe(201);
  });

  it('the database refuses overlaps that race past the check, and the API says subscription_overlap', async () => {
    const { customer } = await seedHierarchy(t.a.call, 'Race');
    const plan = await planWithVersions(t.a.call, 'Racing');
    const body = { customer_id: customer.id, rate_plan_id: plan.id, effective_from: '2026-01-01T00:00:00Z' };
    const replies = await Promise.all(Array.from({ length: 4 }, () => t.a.call('POST', '/v1/admin/subscriptions', body)));
    expect(replies.filter((r) => r.status === 201)).toHaveLength(1);
    for (const refused of replies.filter((r) => r.status !== 201)) {
      expect(refused.status).toBe(409);
      expect(refused.body.error.code).toBe('subscription_overlap');
      expect(refused.body.error.message.length).toBeGreaterThan(20);
    }
  });

  it('changes plan by closing the current subscription and opening the next in one step, never rewriting history', async () => {
    const { customer } = await seedHierarchy(t.a.call, 'Change');
    const plan = await planWithVersions(t.a.call, 'Changing');
    const upgrade = await created(t.a.call, '/v1/admin/rate-plans', { name: 'Committed', currency: 'USD', pricing: COMMITTED });
    const current = await created(t.a.call, '/v1/admin/subscriptions', {
      customer_id: customer.id,
      rate_plan_id: plan.id,
      rate_plan_version: 1,
      effective_from: '2026-01-01T00:00:00Z',
    });
    await t.takeControl();
    const when = at(hour);
    const changed = await t.a.call('POST', `/v1/admin/subscriptions/${current.id}/change`, { at: when, rate_plan_id: upgrade.id });
    expect(changed.status).toBe(201);
    expect(changed.body.closed).toMatchObject({ id: current.id, rate_plan_version: 1, effective_to: new Date(when).toISOString() });
    expect(changed.body.opened).toMatchObject({
      customer_id: customer.id,
      rate_plan_id: upgrade.id,
      rate_plan_version: 1,
      effective_from: new Date(when).toISOString(),
      effective_to: null,
      supersedes: current.id,
    });
    expect(await t.takeControl()).toEqual([{ type: 'subscriptions.changed', tenantId: t.a.tenantId }]);

    const { items } = await listAll(t.a.call, `/v1/admin/subscriptions?customer_id=${customer.id}`, 10);
    expect(items.map((s: { id: string }) => s.id)).toEqual([current.id, changed.body.opened.id]);

    const twice = await t.a.call('POST', `/v1/admin/subscriptions/${current.id}/change`, { rate_plan_id: plan.id });
    expect(twice.status).toBe(409);
    expect(twice.body.error.code).toBe('already_superseded');

    const past = await t.a.call('POST', `/v1/admin/subscriptions/${changed.body.opened.id}/change`, { at: at(-hour), rate_plan_id: plan.id });
    expect(past.status).toBe(409);
    expect(past.body.error.code).toBe('change_in_past');
    expect((await t.a.call('PATCH', `/v1/admin/subscriptions/${current.id}`, { effective_to: null })).status).toBe(405);

    const nothing = await t.a.call('POST', `/v1/admin/subscriptions/${changed.body.opened.id}/change`, {});
    expect(nothing.status).toBe(400);
  });

  it('a change carries terms over unless named, and validates overrides, commitment and allocation', async () => {
    const { customer, agent } = await seedHierarchy(t.a.call, 'Terms');
    const plan = await created(t.a.call, '/v1/admin/rate-plans', { name: 'Committed terms', currency: 'USD', pricing: COMMITTED });
    const subscription = await created(t.a.call, '/v1/admin/subscriptions', {
      customer_id: customer.id,
      rate_plan_id: plan.id,
      effective_from: '2026-01-01T00:00:00Z',
      overrides: { tool_invocations: { '*': '0.030' } },
      allocation: { [agent.id]: 400 },
    });
    expect(subscription).toMatchObject({ overrides: { tool_invocations: { '*': '0.03' } }, allocation: { [agent.id]: 400 } });

    const badOverride = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { overrides: { tool_invocations: { '*': 'free' } } });
    expect(badOverride.status).toBe(400);
    expect(badOverride.body.error.details[0].path).toMatch(/^overrides\.tool_invocations/);
    const tooMuch = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { allocation: { [agent.id]: 1001 } });
    expect(tooMuch.status).toBe(400);
    expect(tooMuch.body.error.message).toMatch(/more than the 1000 committed/);
    const notOurs = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { allocation: { agt_nobody: 1 } });
    expect(notOurs.status).toBe(400);
    expect(notOurs.body.error.details[0].path).toBe('allocation.agt_nobody');
    const badCommitment = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { commitment: { committed_amount: -1, committed_price: '1' } });
    expect(badCommitment.status).toBe(400);
    expect(badCommitment.body.error.details[0].path).toBe('commitment.committed_amount');

    // At the end of the current billing period: within it, the period could not be invoiced (see below).
    const changed = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { at: nextMonthStart(), commitment: { committed_amount: 2000, committed_price: '90' } });
    expect(changed.status).toBe(201);
    expect(changed.body.opened).toMatchObject({
      rate_plan_version_id: subscription.rate_plan_version_id,
      overrides: { tool_invocations: { '*': '0.03' } },
      commitment: { committed_amount: 2000, committed_price: '90' },
      allocation: { [agent.id]: 400 },
    });
  });

  it('ends a subscription now or later, not in the past and not twice', async () => {
    const { customer } = await seedHierarchy(t.a.call, 'End');
    const plan = await planWithVersions(t.a.call, 'Ending');
    const subscription = await created(t.a.call, '/v1/admin/subscriptions', { customer_id: customer.id, rate_plan_id: plan.id, effective_from: '2026-01-01T00:00:00Z' });
    const past = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/end`, { at: '2026-01-02T00:00:00Z' });
    expect(past.status).toBe(409);
    const when = at(2 * hour);
    const ended = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/end`, { at: when });
    expect(ended.status).toBe(200);
    expect(ended.body.effective_to).toBe(new Date(when).toISOString());
    const later = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/end`, { at: at(3 * hour) });
    expect(later.status).toBe(409);
    expect(later.body.error.code).toBe('already_ended');
    const earlier = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/end`, { at: at(hour) });
    expect(earlier.status).toBe(200);
  });
});

describe('subscriptions that would leave a billing period the rating engine cannot invoice', () => {
  let invoices: ReturnType<typeof createInvoiceRoutes> | undefined;
  /** The status of the customer's draft invoice (GET /v1/customers/{id}/invoices/current), and its body. */
  async function draft(customerId: string): Promise<{ status: number; body: any }> {
    if (!invoices) {
      invoices = createInvoiceRoutes({ sql: t.world.sql, tokens: new TenantTokens(t.world.sql, 0) });
      invoices.onError(apiErrorHandler(createLogger('subscriptions-test')));
    }
    const reply = await invoices.request(`/v1/customers/${customerId}/invoices/current`, { headers: { authorization: `Bearer ${t.a.ingestToken}` } });
    return { status: reply.status, body: await reply.json() };
  }
  const subscriptionsOf = async (customerId: string) => (await listAll(t.a.call, `/v1/admin/subscriptions?customer_id=${customerId}`, 10)).items;

  /** Refused with 409 period_not_rateable naming the engine's reason, nothing written, the draft invoice still readable. */
  async function expectRefused(reply: { status: number; body: any }, customerId: string, before: unknown[], reason: RegExp) {
    expect(reply.status).toBe(409);
    expect(reply.body.error.code).toBe('period_not_rateable');
    expect(reply.body.error.message).toMatch(reason);
    expect(await subscriptionsOf(customerId)).toEqual(before);
    expect((await draft(customerId)).status).toBe(200);
  }

  const committedPlan = (name: string) => created(t.a.call, '/v1/admin/rate-plans', { name, currency: 'USD', pricing: COMMITTED });
  const paygPlan = (name: string, currency = 'USD') => created(t.a.call, '/v1/admin/rate-plans', { name, currency, pricing: { tool_invocations: { '*': '0.04' } } });

  it('A: refuses a mid-period change of a COMMITTED subscription that raises the commitment or carries its allocation over', async () => {
    const { customer, agent } = await seedHierarchy(t.a.call, 'Raised');
    const plan = await committedPlan('Committed raised');
    const subscription = await created(t.a.call, '/v1/admin/subscriptions', {
      customer_id: customer.id,
      rate_plan_id: plan.id,
      effective_from: monthStart(),
      allocation: { [agent.id]: 400 },
    });
    const before = await subscriptionsOf(customer.id);
    expect((await draft(customer.id)).body.total).toBe('50.00');

    const raised = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { commitment: { committed_amount: 2000, committed_price: '90' } });
    await expectRefused(raised, customer.id, before, /share commitment group .* but not its commitment or overage rate/);
    expect(raised.body.error.message).toContain(`"at": "${nextMonthStart()}"`);
    const carried = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { rate_plan_id: plan.id });
    await expectRefused(carried, customer.id, before, new RegExp(`agent ${agent.id} has two allocations in commitment group`));
    expect((await draft(customer.id)).body.total).toBe('50.00');
  });

  it('B: refuses a mid-period change of a COMMITTED subscription that only overrides the overage rate', async () => {
    const { customer } = await seedHierarchy(t.a.call, 'Overage');
    const plan = await committedPlan('Committed overage');
    const subscription = await created(t.a.call, '/v1/admin/subscriptions', { customer_id: customer.id, rate_plan_id: plan.id, effective_from: monthStart() });
    const before = await subscriptionsOf(customer.id);
    const changed = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { overrides: { tool_invocations: { '*': '0.05' } } });
    await expectRefused(changed, customer.id, before, /but not its commitment or overage rate/);
  });

  it('C: refuses commitment terms on a plan that is not COMMITTED with 400 and the JSON path, on create and on change', async () => {
    const { customer, agent } = await seedHierarchy(t.a.call, 'Stray terms');
    const payg = await paygPlan('PAYG stray');
    const committed = await committedPlan('Committed stray');
    const base = { customer_id: customer.id, rate_plan_id: payg.id, effective_from: monthStart() };
    const withCommitment = await t.a.call('POST', '/v1/admin/subscriptions', { ...base, commitment: { committed_amount: 100, committed_price: '5' } });
    expect(withCommitment.status).toBe(400);
    expect(withCommitment.body.error.code).toBe('validation_failed');
    expect(withCommitment.body.error.details).toEqual([{ path: 'commitment', message: 'the plan is not COMMITTED' }]);
    expect(await subscriptionsOf(customer.id)).toEqual([]);

    // A change to a PAYG plan carries the commitment terms over unless it sets them to null.
    const subscription = await created(t.a.call, '/v1/admin/subscriptions', {
      ...base,
      rate_plan_id: committed.id,
      commitment: { committed_amount: 2000, committed_price: '90' },
      allocation: { [agent.id]: 400 },
    });
    const before = await subscriptionsOf(customer.id);
    const carried = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { rate_plan_id: payg.id });
    expect(carried.status).toBe(400);
    expect(carried.body.error.details[0].path).toBe('commitment');
    const allocationOnly = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { rate_plan_id: payg.id, commitment: null });
    expect(allocationOnly.status).toBe(400);
    expect(allocationOnly.body.error.details[0].path).toBe('allocation');
    expect(await subscriptionsOf(customer.id)).toEqual(before);
    expect((await draft(customer.id)).status).toBe(200);
  });

  it('D: refuses a mid-period change from a USD plan to an EUR plan, and accepts it at the period end', async () => {
    const { customer } = await seedHierarchy(t.a.call, 'Currency change');
    const usd = await paygPlan('PAYG USD');
    const eur = await paygPlan('PAYG EUR', 'EUR');
    const subscription = await created(t.a.call, '/v1/admin/subscriptions', { customer_id: customer.id, rate_plan_id: usd.id, effective_from: monthStart() });
    const before = await subscriptionsOf(customer.id);
    const changed = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { rate_plan_id: eur.id });
    await expectRefused(changed, customer.id, before, /subscriptions of one invoice share a currency: .* is in EUR, not USD/);

    const atPeriodEnd = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { rate_plan_id: eur.id, at: nextMonthStart() });
    expect(atPeriodEnd.status).toBe(201);
    expect(atPeriodEnd.body.opened).toMatchObject({ currency: 'EUR', effective_from: nextMonthStart() });
    const current = await draft(customer.id);
    expect(current.status).toBe(200);
    expect(current.body.currency).toBe('USD');
  });

  it('E: refuses a team subscription in EUR beside the customer subscription in USD over the same period', async () => {
    const { customer, team } = await seedHierarchy(t.a.call, 'Two currencies');
    const usd = await paygPlan('PAYG USD for the customer');
    const eur = await paygPlan('PAYG EUR for the team', 'EUR');
    await created(t.a.call, '/v1/admin/subscriptions', { customer_id: customer.id, rate_plan_id: usd.id, effective_from: monthStart() });
    const before = await subscriptionsOf(customer.id);
    const teamEur = await t.a.call('POST', '/v1/admin/subscriptions', { customer_id: customer.id, team_id: team.id, rate_plan_id: eur.id, effective_from: monthStart() });
    await expectRefused(teamEur, customer.id, before, /is in EUR, not USD/);
    // Also when the EUR one starts first and the USD one later, in a later period it would share.
    const laterTeam = await t.a.call('POST', '/v1/admin/subscriptions', {
      customer_id: customer.id,
      team_id: team.id,
      rate_plan_id: eur.id,
      effective_from: new Date(Date.parse(monthStart()) - 40 * 86_400_000).toISOString(),
    });
    await expectRefused(laterTeam, customer.id, before, /is in (EUR, not USD|USD, not EUR)/);

    // Written at the same moment, the two are rated together: one of them is refused.
    const other = await seedHierarchy(t.a.call, 'Two currencies at once');
    const replies = await Promise.all([
      t.a.call('POST', '/v1/admin/subscriptions', { customer_id: other.customer.id, rate_plan_id: usd.id, effective_from: monthStart() }),
      t.a.call('POST', '/v1/admin/subscriptions', { customer_id: other.customer.id, team_id: other.team.id, rate_plan_id: eur.id, effective_from: monthStart() }),
    ]);
    expect(replies.map((r) => r.status).sort()).toEqual([201, 409]);
    expect((await draft(other.customer.id)).status).toBe(200);
  });

  it('still accepts a mid-period change between plans of one currency, and a COMMITTED change with the same terms', async () => {
    const { customer, team } = await seedHierarchy(t.a.call, 'Accepted');
    const first = await paygPlan('PAYG first');
    const second = await paygPlan('PAYG second');
    const committed = await committedPlan('Committed accepted');
    const subscription = await created(t.a.call, '/v1/admin/subscriptions', { customer_id: customer.id, rate_plan_id: first.id, effective_from: monthStart() });
    const changed = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { rate_plan_id: second.id, overrides: { tool_invocations: { '*': '0.05' } } });
    expect(changed.status).toBe(201);
    const teamSubscription = await created(t.a.call, '/v1/admin/subscriptions', { customer_id: customer.id, team_id: team.id, rate_plan_id: committed.id, effective_from: monthStart() });
    const sameTerms = await t.a.call('POST', `/v1/admin/subscriptions/${teamSubscription.id}/change`, { rate_plan_id: committed.id });
    expect(sameTerms.status).toBe(201);
    const all = await subscriptionsOf(customer.id);
    expect(all).toHaveLength(4);
    const current = await draft(customer.id);
    expect(current.status).toBe(200);
    expect([...current.body.subscription_ids].sort()).toEqual(all.map((s: { id: string }) => s.id).sort());
    // One commitment for the two COMMITTED subscriptions of the period, in USD.
    expect(current.body).toMatchObject({ currency: 'USD', total: '50.00' });
  });
});

describe('the database itself', () => {
  it('refuses to rewrite a subscription or a rate plan version, allowing only a subscription to be closed', async () => {
    const { customer } = await seedHierarchy(t.a.call, 'Guarded history');
    const plan = await planWithVersions(t.a.call, 'Guarded');
    const subscription = await created(t.a.call, '/v1/admin/subscriptions', { customer_id: customer.id, rate_plan_id: plan.id, rate_plan_version: 1, effective_from: '2026-01-01T00:00:00Z' });
    const { sql } = t.world;
    const [v2] = await sql<{ id: string }[]>`SELECT id FROM rate_plan_versions WHERE rate_plan_id = ${plan.id} AND version = 2`;
    await expect(sql`UPDATE subscriptions SET rate_plan_version_id = ${v2.id} WHERE id = ${subscription.id}`).rejects.toThrow(/immutable/);
    await expect(sql`UPDATE subscriptions SET overrides = '{"x": 1}' WHERE id = ${subscription.id}`).rejects.toThrow(/immutable/);
    await expect(sql`DELETE FROM subscriptions WHERE id = ${subscription.id}`).rejects.toThrow(/cannot be deleted/);
    await sql`UPDATE subscriptions SET effective_to = '2030-01-01' WHERE id = ${subscription.id}`;
    await expect(sql`UPDATE subscriptions SET effective_to = '2031-01-01' WHERE id = ${subscription.id}`).rejects.toThrow(/cannot be reopened or extended/);
    await expect(sql`UPDATE subscriptions SET effective_to = NULL WHERE id = ${subscription.id}`).rejects.toThrow(/cannot be reopened or extended/);
    await sql`UPDATE subscriptions SET effective_to = '2029-01-01' WHERE id = ${subscription.id}`;
    await expect(sql`UPDATE rate_plan_versions SET pricing = '{}' WHERE id = ${v2.id}`).rejects.toThrow(/immutable/);
    await expect(sql`DELETE FROM rate_plan_versions WHERE id = ${v2.id}`).rejects.toThrow(/immutable/);
  });
});

describe('tenant isolation', () => {
  it("cannot subscribe, read, change or end another tenant's customers and subscriptions", async () => {
    const { customer } = await seedHierarchy(t.a.call, 'Mine');
    const plan = await planWithVersions(t.a.call, 'Mine');
    const subscription = await created(t.a.call, '/v1/admin/subscriptions', { customer_id: customer.id, rate_plan_id: plan.id, effective_from: '2026-01-01T00:00:00Z' });
    const bPlan = await planWithVersions(t.b.call, 'Theirs');
    const bCustomer = (await seedHierarchy(t.b.call, 'Theirs')).customer;

    expect((await t.b.call('POST', '/v1/admin/subscriptions', { customer_id: customer.id, rate_plan_id: bPlan.id, effective_from: '2027-01-01T00:00:00Z' })).status).toBe(404);
    expect((await t.b.call('POST', '/v1/admin/subscriptions', { customer_id: bCustomer.id, rate_plan_id: plan.id, effective_from: '2027-01-01T00:00:00Z' })).status).toBe(404);
    expect((await t.b.call('GET', `/v1/admin/subscriptions/${subscription.id}`)).status).toBe(404);
    expect((await t.b.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { rate_plan_id: bPlan.id })).status).toBe(404);
    expect((await t.b.call('POST', `/v1/admin/subscriptions/${subscription.id}/end`, {})).status).toBe(404);
    expect((await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { rate_plan_id: bPlan.id })).status).toBe(404);
    expect((await t.b.call('GET', `/v1/admin/subscriptions?customer_id=${customer.id}`)).body.data).toEqual([]);
    expect((await t.a.call('GET', `/v1/admin/subscriptions/${subscription.id}`)).body.effective_to).toBeNull();
  });
});
