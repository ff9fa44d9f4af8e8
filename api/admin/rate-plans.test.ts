import { describe, expect, it } from 'vitest';
import { adminWorld, created, listAll, SIMPLE_PRICING } from './test-world.js';

const t = adminWorld('admin-rate-plans');

describe('rate plans', () => {
  it('creates a plan with its first version, normalising the pricing', async () => {
    const plan = await created(t.a.call, '/v1/admin/rate-plans', {
      name: 'MCP per tool',
      currency: 'USD',
      pricing: { tool_invocations: { '*': 0.01, search: '0.050' }, token_multipliers: { input_tokens: '0.000003' } },
    });
    expect(plan).toMatchObject({ name: 'MCP per tool', currency: 'USD', latest_version: 1 });
    expect(plan.id).toMatch(/^plan_/);
    expect(plan.version).toMatchObject({
      rate_plan_id: plan.id,
      version: 1,
      pricing: { tool_invocations: { '*': '0.01', search: '0.05' }, token_multipliers: { input_tokens: '0.000003' } },
    });
    const read = await t.a.call('GET', `/v1/admin/rate-plans/${plan.id}`);
    expect(read.body).toMatchObject({ id: plan.id, latest_version: 1 });
    expect(await t.takeControl()).toContainEqual({ type: 'rate-plans.changed', tenantId: t.a.tenantId });
  });

  it("accepts the article's plan as written: wrapped in dimensionPricing, a bounded last bucket, with a warning in the reply", async () => {
    const articlePricing = {
      dimensionPricing: {
        tool_invocations: { transform_schema: 0.1, '*': 0.002 },
        duration_buckets: [
          { max_seconds: 60, rate: 0.1 },
          { max_seconds: 3600, rate: 1.5 },
        ],
      },
    };
    const plan = await created(t.a.call, '/v1/admin/rate-plans', { name: 'Article', currency: 'USD', pricing: articlePricing });
    const warning = {
      path: 'pricing.dimensionPricing.duration_buckets[1].max_seconds',
      message: 'the last bucket is bounded: calls longer than 3600 s are priced at this bucket\'s rate (1.5); write "max_seconds": null to make that explicit',
    };
    expect(plan.warnings).toEqual([warning]);
    // Stored unwrapped, as every plan is.
    expect(plan.version.pricing).toEqual({ tool_invocations: { transform_schema: '0.1', '*': '0.002' }, duration_buckets: [{ max_seconds: '60', rate: '0.1' }, { max_seconds: '3600', rate: '1.5' }] });
    const v2 = await created(t.a.call, `/v1/admin/rate-plans/${plan.id}/versions`, { pricing: articlePricing });
    expect(v2.warnings).toEqual([warning]);
    const open = await created(t.a.call, `/v1/admin/rate-plans/${plan.id}/versions`, { pricing: { tool_invocations: { '*': 1 } } });
    expect(open.warnings).toEqual([]);
    const wrappedBadly = await t.a.call('POST', `/v1/admin/rate-plans/${plan.id}/versions`, { pricing: { dimensionPricing: { tool_invocations: { x: -1 } } } });
    expect(wrappedBadly.status).toBe(400);
    expect(wrappedBadly.body.error.details.map((d: { path: string }) => d.path)).toContain('pricing.dimensionPricing.tool_invocations.x');
  });

  it('refuses invalid pricing with the path of every problem under pricing', async () => {
    const reply = await t.a.call('POST', '/v1/admin/rate-plans', {
      name: 'Broken',
      currency: 'USD',
      pricing: { tool_invocations: { search: '-1' }, duration_buckets: [] },
    });
    expect(reply.status).toBe(400);
    expect(reply.body.error.code).toBe('validation_failed');
    const paths = reply.body.error.details.map((d: { path: string }) => d.path);
    expect(paths).toContain('pricing.tool_invocations.search');
    expect(paths).toContain('pricing.duration_buckets');
    expect((await t.a.call('GET', '/v1/admin/rate-plans')).body.data.map((p: { name: string }) => p.name)).not.toContain('Broken');

    const badCurrency = await t.a.call('POST', '/v1/admin/rate-plans', { name: 'x', currency: 'usd', pricing: SIMPLE_PRICING });
    expect(badCurrency.status).toBe(400);
    expect(badCurrency.body.error.details[0].path).toBe('currency');
  });

  it('refuses a "__proto__" key in the pricing\'s records (JSON.parse keeps it, a zod record would drop it) and accepts tools named like Object members', async () => {
    const body = '{"name": "Proto", "currency": "USD", "pricing": {"tool_invocations": {"*": "0.01", "__proto__": "5"}}}';
    const refused = await t.a.call('POST', '/v1/admin/rate-plans', body);
    expect(refused.status).toBe(400);
    expect(refused.body.error.code).toBe('validation_failed');
    expect(refused.body.error.details).toEqual([{ path: 'pricing.tool_invocations.__proto__', message: expect.stringMatching(/^"__proto__" cannot be a key of a rate plan/) }]);
    expect((await t.a.call('GET', '/v1/admin/rate-plans')).body.data.map((p: { name: string }) => p.name)).not.toContain('Proto');

    const plan = await created(t.a.call, '/v1/admin/rate-plans', {
      name: 'Members',
      currency: 'USD',
      pricing: { tool_invocations: { '*': '0.01', search: '0.1', constructor: '0.2' }, tool_aliases: { toString: 'search', old_ctor: 'constructor' } },
    });
    expect(plan.version.pricing).toEqual({
      tool_invocations: { '*': '0.01', search: '0.1', constructor: '0.2' },
      tool_aliases: { toString: 'search', old_ctor: 'constructor' },
    });
    const version = await t.a.call('POST', `/v1/admin/rate-plans/${plan.id}/versions`, '{"pricing": {"dimensionPricing": {"tool_invocations": {"*": "1"}, "mcp_servers": {"s1": {"tool_invocations": {"__proto__": "5"}}}}}}');
    expect(version.status).toBe(400);
    expect(version.body.error.details.map((d: { path: string }) => d.path)).toEqual(['pricing.dimensionPricing.mcp_servers.s1.tool_invocations.__proto__']);
  });

  it('adds immutable numbered versions and reads each by number', async () => {
    const plan = await created(t.a.call, '/v1/admin/rate-plans', { name: 'Versioned', currency: 'EUR', pricing: SIMPLE_PRICING });
    const v2 = await created(t.a.call, `/v1/admin/rate-plans/${plan.id}/versions`, { pricing: { tool_invocations: { '*': '0.02' } } });
    const v3 = await created(t.a.call, `/v1/admin/rate-plans/${plan.id}/versions`, { pricing: { tool_invocations: { '*': '0.03' } } });
    expect([v2.version, v3.version]).toEqual([2, 3]);
    expect((await t.a.call('GET', `/v1/admin/rate-plans/${plan.id}`)).body.latest_version).toBe(3);

    const one = await t.a.call('GET', `/v1/admin/rate-plans/${plan.id}/versions/1`);
    expect(one.body.pricing).toEqual({ tool_invocations: { '*': '0.01', search: '0.05' } });
    expect((await t.a.call('GET', `/v1/admin/rate-plans/${plan.id}/versions/9`)).status).toBe(404);
    expect((await t.a.call('GET', `/v1/admin/rate-plans/${plan.id}/versions/two`)).status).toBe(404);

    const { items } = await listAll(t.a.call, `/v1/admin/rate-plans/${plan.id}/versions`, 2);
    expect(items.map((v: { version: number }) => v.version)).toEqual([1, 2, 3]);

    const edit = await t.a.call('PATCH', `/v1/admin/rate-plans/${plan.id}/versions/1`, { pricing: {} });
    expect(edit.status).toBe(405);
    expect(edit.body.error.code).toBe('immutable');
    const renamed = await t.a.call('PATCH', `/v1/admin/rate-plans/${plan.id}`, { name: 'Versioned plan' });
    expect(renamed.body).toMatchObject({ name: 'Versioned plan', currency: 'EUR', latest_version: 3 });
    const currencyChange = await t.a.call('PATCH', `/v1/admin/rate-plans/${plan.id}`, { currency: 'USD' });
    expect(currencyChange.status).toBe(400);

    const badVersion = await t.a.call('POST', `/v1/admin/rate-plans/${plan.id}/versions`, { pricing: { tool_invocations: { search: '1' } } });
    expect(badVersion.status).toBe(400);
    expect(badVersion.body.error.details[0].path).toBe('pricing.tool_invocations');
  });

  it('numbers concurrent versions without gaps or duplicates', async () => {
    const plan = await created(t.a.call, '/v1/admin/rate-plans', { name: 'Busy', currency: 'USD', pricing: SIMPLE_PRICING });
    const replies = await Promise.all(
      Array.from({ length: 6 }, (_, i) => t.a.call('POST', `/v1/admin/rate-plans/${plan.id}/versions`, { pricing: { tool_invocations: { '*': `0.0${i + 1}` } } })),
    );
    expect(replies.map((r) => r.status)).toEqual(Array(6).fill(201));
    expect(replies.map((r) => r.body.version).sort((a, b) => a - b)).toEqual([2, 3, 4, 5, 6, 7]);
  });
});

describe('tenant isolation', () => {
  it("keeps another tenant's plans and versions out of reach", async () => {
    const plan = await created(t.a.call, '/v1/admin/rate-plans', { name: 'Private plan', currency: 'USD', pricing: SIMPLE_PRICING });
    expect((await t.b.call('GET', `/v1/admin/rate-plans/${plan.id}`)).status).toBe(404);
    expect((await t.b.call('PATCH', `/v1/admin/rate-plans/${plan.id}`, { name: 'mine' })).status).toBe(404);
    expect((await t.b.call('GET', `/v1/admin/rate-plans/${plan.id}/versions`)).status).toBe(404);
    expect((await t.b.call('GET', `/v1/admin/rate-plans/${plan.id}/versions/1`)).status).toBe(404);
    expect((await t.b.call('POST', `/v1/admin/rate-plans/${plan.id}/versions`, { pricing: SIMPLE_PRICING })).status).toBe(404);
    expect((await t.b.call('GET', '/v1/admin/rate-plans')).body.data).toEqual([]);
    expect((await t.a.call('GET', `/v1/admin/rate-plans/${plan.id}`)).body).toMatchObject({ name: 'Private plan', latest_version: 1 });
  });
});
