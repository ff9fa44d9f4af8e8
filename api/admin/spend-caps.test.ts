import { describe, expect, it } from 'vitest';
import { adminWorld, created, listAll, seedHierarchy } from './test-world.js';

const t = adminWorld('admin-caps');

describe('spend caps', () => {
  it('stores the limit as exact nano-units and shows it as a decimal string', async () => {
    const { agent, team } = await seedHierarchy(t.a.call, 'Caps');
    await t.takeControl();
    const cap = await created(t.a.call, '/v1/admin/spend-caps', { scope_kind: 'agent', scope_id: agent.id, period: 'session', limit: '12.345678901' });
    expect(cap).toMatchObject({ scope_kind: 'agent', scope_id: agent.id, period: 'session', limit: '12.345678901', action: 'pause', status: 'active' });
    const [row] = await t.world.sql<{ limit_nano: string }[]>`SELECT limit_nano FROM spend_caps WHERE id = ${cap.id}`;
    expect(row.limit_nano).toBe('12345678901');
    expect(await t.takeControl()).toEqual([{ type: 'caps.changed', tenantId: t.a.tenantId }]);

    const fromNumber = await created(t.a.call, '/v1/admin/spend-caps', { scope_kind: 'team', scope_id: team.id, period: 'month', limit: 5000.1, action: 'alert' });
    expect(fromNumber).toMatchObject({ limit: '5000.1', action: 'alert' });

    const updated = await t.a.call('PATCH', `/v1/admin/spend-caps/${cap.id}`, { limit: '20', status: 'disabled' });
    expect(updated.body).toMatchObject({ limit: '20', status: 'disabled', scope_id: agent.id });
    expect(await t.takeControl()).toEqual([
      { type: 'caps.changed', tenantId: t.a.tenantId },
      { type: 'caps.changed', tenantId: t.a.tenantId },
    ]);

    const { items } = await listAll(t.a.call, `/v1/admin/spend-caps?scope_kind=agent&scope_id=${agent.id}`, 1);
    expect(items.map((c: { id: string }) => c.id)).toEqual([cap.id]);
  });

  it('refuses limits that are not positive exact decimals, and scopes that do not exist', async () => {
    const { customer } = await seedHierarchy(t.a.call, 'Bad caps');
    const base = { scope_kind: 'customer', scope_id: customer.id, period: 'day' };
    for (const limit of ['0', '-5', '0.0000000001', 'lots', 1e30, '99999999999']) {
      const reply = await t.a.call('POST', '/v1/admin/spend-caps', { ...base, limit });
      expect(reply.status, `limit ${limit}`).toBe(400);
      expect(reply.body.error.details[0].path).toBe('limit');
    }
    expect((await t.a.call('POST', '/v1/admin/spend-caps', { ...base, limit: '1', period: 'week' })).status).toBe(400);
    const missing = await t.a.call('POST', '/v1/admin/spend-caps', { ...base, scope_kind: 'agent', limit: '1' });
    expect(missing.status).toBe(404);
    expect(missing.body.error.message).toBe(`agent ${customer.id} not found`);
    const moved = await t.a.call('PATCH', `/v1/admin/spend-caps/cap_x`, { scope_id: customer.id });
    expect(moved.status).toBe(400);
  });
});

describe('rolling-window caps and caps on each session of a plan', () => {
  it('creates a rolling cap with its window, and a per-session cap on a rate plan', async () => {
    const { agent } = await seedHierarchy(t.a.call, 'Rolling');
    const rolling = await created(t.a.call, '/v1/admin/spend-caps', { scope_kind: 'agent', scope_id: agent.id, period: 'rolling', window_seconds: 3600, limit: '5' });
    expect(rolling).toMatchObject({ period: 'rolling', window_seconds: 3600, limit: '5', action: 'pause' });
    const plan = await created(t.a.call, '/v1/admin/rate-plans', { name: 'Capped per session', currency: 'USD', pricing: { tool_invocations: { '*': 0.01 } } });
    const perSession = await created(t.a.call, '/v1/admin/spend-caps', { scope_kind: 'plan', scope_id: plan.id, period: 'session', limit: '2' });
    expect(perSession).toMatchObject({ scope_kind: 'plan', scope_id: plan.id, period: 'session', window_seconds: null });
    const { items } = await listAll(t.a.call, '/v1/admin/spend-caps?period=rolling', 10);
    expect(items.map((c: { id: string }) => c.id)).toEqual([rolling.id]);
  });

  it('refuses a window that is missing, misplaced, not positive, not whole minutes or absurd, with its JSON path', async () => {
    const { agent } = await seedHierarchy(t.a.call, 'Bad windows');
    const base = { scope_kind: 'agent', scope_id: agent.id, period: 'rolling', limit: '1' };
    for (const window_seconds of [0, -3600, 59, 90, 3600.5, 31 * 86_400 + 60, 1e12, '3600', undefined]) {
      const reply = await t.a.call('POST', '/v1/admin/spend-caps', { ...base, window_seconds });
      expect(reply.status, `window ${window_seconds}`).toBe(400);
      expect([...new Set(reply.body.error.details.map((d: { path: string }) => d.path))], `window ${window_seconds}`).toEqual(['window_seconds']);
    }
    const onDay = await t.a.call('POST', '/v1/admin/spend-caps', { ...base, period: 'day', window_seconds: 3600 });
    expect(onDay.status).toBe(400);
    expect(onDay.body.error.details[0]).toMatchObject({ path: 'window_seconds', message: 'window_seconds goes only with period rolling' });
    // A plan's caps are per session; a plan that is not the tenant's is not found.
    const plan = await created(t.a.call, '/v1/admin/rate-plans', { name: 'Plan', currency: 'USD', pricing: { tool_invocations: { '*': 0.01 } } });
    const daily = await t.a.call('POST', '/v1/admin/spend-caps', { scope_kind: 'plan', scope_id: plan.id, period: 'day', limit: '1' });
    expect(daily.status).toBe(400);
    expect(daily.body.error.details[0].path).toBe('period');
    expect((await t.a.call('POST', '/v1/admin/spend-caps', { scope_kind: 'plan', scope_id: 'plan_nope', period: 'session', limit: '1' })).status).toBe(404);
  });
});

describe('cost models', () => {
  it('creates, reads and updates a cost model, normalising every rate', async () => {
    await t.takeControl();
    const model = await created(t.a.call, '/v1/admin/cost-models', {
      name: 'Provider costs',
      currency: 'USD',
      model: { tools: { search: 0.002 }, default_tool: '0.0005', models: { 'gpt-4o': { input_tokens: '0.0000025', output_tokens: '0.000010' } }, compute_per_ms: '0.000000002' },
    });
    expect(model).toMatchObject({
      name: 'Provider costs',
      currency: 'USD',
      effective_from: null,
      model: { tools: { search: '0.002' }, default_tool: '0.0005', models: { 'gpt-4o': { input_tokens: '0.0000025', output_tokens: '0.00001' } }, compute_per_ms: '0.000000002' },
    });
    expect(await t.takeControl()).toEqual([{ type: 'cost-models.changed', tenantId: t.a.tenantId }]);

    const updated = await t.a.call('PATCH', `/v1/admin/cost-models/${model.id}`, { model: { default_tool: '0.001' }, effective_from: '2026-06-01T00:00:00Z' });
    expect(updated.body).toMatchObject({ model: { default_tool: '0.001' }, effective_from: '2026-06-01T00:00:00.000Z' });
    const [row] = await t.world.sql<{ model: unknown }[]>`SELECT model FROM cost_models WHERE id = ${model.id}`;
    expect(row.model).toEqual({ default_tool: '0.001' });
    expect((await t.a.call('GET', `/v1/admin/cost-models/${model.id}`)).body).toEqual(updated.body);
  });

  it('refuses a malformed model with the path of each problem', async () => {
    const reply = await t.a.call('POST', '/v1/admin/cost-models', {
      name: 'Bad',
      currency: 'USD',
      model: { tools: { search: '-0.1' }, default_model: { input_tokens: 'cheap' }, gpu_hours: 1 },
    });
    expect(reply.status).toBe(400);
    const paths = reply.body.error.details.map((d: { path: string }) => d.path).sort();
    expect(paths).toEqual(['model', 'model.default_model.input_tokens', 'model.tools.search']);
  });
});

describe('tenant isolation', () => {
  it("keeps another tenant's caps and cost models out of reach, and refuses caps on its objects", async () => {
    const { agent, team, customer } = await seedHierarchy(t.a.call, 'Guarded');
    const cap = await created(t.a.call, '/v1/admin/spend-caps', { scope_kind: 'agent', scope_id: agent.id, period: 'day', limit: '1' });
    const model = await created(t.a.call, '/v1/admin/cost-models', { name: 'Ours', currency: 'USD', model: {} });
    for (const [kind, id] of [['agent', agent.id], ['team', team.id], ['customer', customer.id]]) {
      expect((await t.b.call('POST', '/v1/admin/spend-caps', { scope_kind: kind, scope_id: id, period: 'day', limit: '1' })).status).toBe(404);
    }
    for (const path of [`/v1/admin/spend-caps/${cap.id}`, `/v1/admin/cost-models/${model.id}`]) {
      expect((await t.b.call('GET', path)).status).toBe(404);
      expect((await t.b.call('PATCH', path, path.includes('spend-caps') ? { limit: '1000' } : { name: 'Theirs' })).status).toBe(404);
    }
    expect((await t.b.call('GET', '/v1/admin/spend-caps')).body.data).toEqual([]);
    expect((await t.b.call('GET', '/v1/admin/cost-models')).body.data).toEqual([]);
    expect((await t.a.call('GET', `/v1/admin/spend-caps/${cap.id}`)).body.limit).toBe('1');
  });
});
