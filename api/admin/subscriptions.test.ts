import { describe, expect, it } from 'vitest';
import { adminWorld, created, listAll, seedHierarchy, SIMPLE_PRICING } from './test-world.js';

const t = adminWorld('admin-subscriptions');

const hour = 3_600_000;
const at = (offsetMs: number) => new Date(Date.now() + offsetMs).toISOString();
const COMMITTED = { billing_mode: 'COMMITTED', commitment: { committed_amount: 1000, committed_price: '50' }, tool_invocations: { '*': '0.04' } };

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

    const changed = await t.a.call('POST', `/v1/admin/subscriptions/${subscription.id}/change`, { commitment: { committed_amount: 2000, committed_price: '90' } });
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
