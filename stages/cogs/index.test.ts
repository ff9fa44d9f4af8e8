import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishControl } from '../../pipeline/control.js';
import { isTransient } from '../../pipeline/errors.js';
import { connectPostgres } from '../../pipeline/postgres.js';
import { createTenant } from '../../store/tenants.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { ledgeredEvent, stageEntries, testStageContext, type LedgeredEventOverrides } from '../testing.js';
import { CostModelCache } from '../../store/cost-model-cache.js';
import { cogsStage, recordCogsBatch } from './index.js';

let world: Isolated;
beforeAll(async () => {
  world = await isolated('cogs');
});
afterAll(async () => {
  await world?.cleanup();
});

const MODEL = {
  tools: { transform_schema: '0.002' },
  default_tool: '0.0005',
  models: { 'gpt-4o': { input_tokens: '0.0000025', output_tokens: '0.00001' } },
  compute_per_ms: '0.0000001',
};

async function tenantWithModel(model: unknown = MODEL, effectiveFrom = '-infinity', id?: string): Promise<string> {
  const { tenantId } = await createTenant(world.sql, 'cogs tenant');
  await addModel(tenantId, model, effectiveFrom, id);
  return tenantId;
}

let modelSeq = 0;
async function addModel(tenantId: string, model: unknown, effectiveFrom = '-infinity', id = `cm_${++modelSeq}`): Promise<string> {
  await world.sql`
    INSERT INTO cost_models (id, tenant_id, name, currency, model, effective_from)
    VALUES (${id}, ${tenantId}, 'providers', 'USD', ${world.sql.json(model as never)}, ${effectiveFrom}::text::timestamptz)`;
  return id;
}

interface Row {
  event_id: string;
  tool_name: string | null;
  price_nano: string;
  cogs_nano: string;
  margin_nano: string;
  cost_model_id: string | null;
  breakdown: Record<string, unknown>;
}

const rowsOf = (tenantId: string) =>
  world.sql<Row[]>`SELECT event_id, tool_name, price_nano, cogs_nano, margin_nano, cost_model_id, breakdown FROM cogs_ledger WHERE tenant_id = ${tenantId} ORDER BY event_id`;

const event = (tenantId: string, overrides: LedgeredEventOverrides = {}) => ledgeredEvent({ tenantId, ...overrides });

describe('recordCogsBatch', () => {
  it('records cogs and margin per usage event, none for session control events', async () => {
    const tenant = await tenantWithModel();
    const models = new CostModelCache(world.sql);
    const batch = [
      event(tenant), // 0.002 + 6000000 + 1500000 + 84700 nano
      event(tenant, { toolName: 'search', model: 'other', cost: { total: 100n, tool: 'search' } }), // default_tool + compute
      event(tenant, { eventType: 'session.paused', toolName: undefined, cost: { total: 0n, tool: '' } }),
    ];
    expect(await recordCogsBatch(world.sql, models, stageEntries(batch))).toEqual([{}, {}, {}]);
    const rows = await rowsOf(tenant);
    expect(rows).toHaveLength(2);
    const [first, second] = [rows.find((r) => r.event_id === batch[0].eventId)!, rows.find((r) => r.event_id === batch[1].eventId)!];
    expect(first).toMatchObject({ tool_name: 'transform_schema', price_nano: '12500000', cogs_nano: '9584700', margin_nano: '2915300' });
    expect(first.breakdown).toMatchObject({ cost_model_id: first.cost_model_id, tool_rate: 'transform_schema', model_rate: 'gpt-4o', compute_nano: '84700' });
    expect(second).toMatchObject({ price_nano: '100', cogs_nano: '584700', margin_nano: '-584600' });
    expect(second.breakdown).toMatchObject({ tool_rate: '*', model_rate: null });
  });

  it('records a row once when the same batch is delivered again', async () => {
    const tenant = await tenantWithModel();
    const models = new CostModelCache(world.sql);
    const batch = stageEntries([event(tenant), event(tenant), event(tenant, { durationMs: 10 })]);
    await recordCogsBatch(world.sql, models, batch);
    await recordCogsBatch(world.sql, models, batch);
    await recordCogsBatch(world.sql, models, [...batch.slice(1), ...batch.slice(1)]);
    const [sums] = await world.sql<{ n: string; cogs: string }[]>`
      SELECT count(*) AS n, sum(cogs_nano) AS cogs FROM cogs_ledger WHERE tenant_id = ${tenant}`;
    expect(sums).toEqual({ n: '3', cogs: String(2n * 9_584_700n + 9_500_000n + 1000n) });
  });

  it('records cogs 0 without a cost model, saying so', async () => {
    const { tenantId } = await createTenant(world.sql, 'no model');
    const models = new CostModelCache(world.sql);
    await recordCogsBatch(world.sql, models, stageEntries([event(tenantId)]));
    const [row] = await rowsOf(tenantId);
    expect(row).toMatchObject({ cogs_nano: '0', margin_nano: '12500000', cost_model_id: null });
    expect(row.breakdown).toEqual({ cost_model_id: null, reason: 'no cost model in USD effective at 2026-03-31T14:26:59.045Z' });
  });

  it('uses the model effective at each event time', async () => {
    const tenant = await tenantWithModel({ default_tool: '1' }, '-infinity', 'cm_until_mar15');
    const newer = await addModel(tenant, { default_tool: '2' }, '2026-03-15T00:00:00Z');
    const models = new CostModelCache(world.sql);
    const before = event(tenant, { recordedAt: Date.UTC(2026, 2, 14, 23, 59, 59, 999) });
    const after = event(tenant, { recordedAt: Date.UTC(2026, 2, 15) });
    const inEuro = event(tenant, { subscription: { currency: 'EUR' } });
    await recordCogsBatch(world.sql, models, stageEntries([before, after, inEuro]));
    const byId = new Map((await rowsOf(tenant)).map((r) => [r.event_id, r]));
    expect(byId.get(before.eventId)).toMatchObject({ cogs_nano: '1000000000', cost_model_id: 'cm_until_mar15' });
    expect(byId.get(after.eventId)).toMatchObject({ cogs_nano: '2000000000', cost_model_id: newer });
    expect(byId.get(inEuro.eventId)).toMatchObject({ cogs_nano: '0', cost_model_id: null });
  });

  it('fails only the events a stored invalid model would cost', async () => {
    const tenant = await tenantWithModel({ default_tool: 'one dollar' });
    const healthy = await tenantWithModel();
    const results = await recordCogsBatch(world.sql, new CostModelCache(world.sql), stageEntries([event(tenant), event(healthy)]));
    expect(String(results[0].error)).toMatch(/invalid: default_tool/);
    expect(results[1]).toEqual({});
    expect(await rowsOf(tenant)).toHaveLength(0);
    expect(await rowsOf(healthy)).toHaveLength(1);
  });

  it('fails the batch as transient while PostgreSQL is unreachable', async () => {
    const down = connectPostgres('postgres://postgres@127.0.0.1:1/none', { max: 1 });
    try {
      const failure = await recordCogsBatch(down, new CostModelCache(down), stageEntries([event('ten_x')])).catch((e: unknown) => e);
      expect(isTransient(failure)).toBe(true);
    } finally {
      await down.end({ timeout: 1 });
    }
  });
});

describe('cogsStage', () => {
  it('keeps cost models in memory and reloads a tenant on cost-models.changed', async () => {
    expect(cogsStage).toMatchObject({ name: 'cogs', input: 'events:ledgered', outputs: [] });
    const tenant = await tenantWithModel({ default_tool: '1' });
    const context = testStageContext('cogs', world);
    const handler = await cogsStage.setup(context);
    try {
      await handler.handle(stageEntries([event(tenant)]));
      await world.sql`UPDATE cost_models SET model = ${world.sql.json({ default_tool: '3' })} WHERE tenant_id = ${tenant}`;
      const cached = event(tenant);
      await handler.handle(stageEntries([cached]));
      expect((await rowsOf(tenant)).find((r) => r.event_id === cached.eventId)?.cogs_nano).toBe('1000000000');

      await publishControl(world.redis, world.config.REDIS_PREFIX, { type: 'cost-models.changed', tenantId: tenant });
      const reloaded = event(tenant);
      const deadline = Date.now() + 5_000;
      for (;;) {
        const probe = event(tenant);
        await handler.handle(stageEntries([probe]));
        const row = (await rowsOf(tenant)).find((r) => r.event_id === probe.eventId);
        if (row?.cogs_nano === '3000000000' || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      await handler.handle(stageEntries([reloaded]));
      expect((await rowsOf(tenant)).find((r) => r.event_id === reloaded.eventId)?.cogs_nano).toBe('3000000000');
    } finally {
      await handler.close?.();
      await context.close();
    }
  });
});
