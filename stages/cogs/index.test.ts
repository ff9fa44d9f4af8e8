import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishControl } from '../../pipeline/control.js';
import { isTransient } from '../../pipeline/errors.js';
import { connectPostgres } from '../../pipeline/postgres.js';
import { createTenant } from '../../store/tenants.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { ledgeredEvent, stageEntries, testStageContext, type LedgeredEventOverrides } from '../testing.js';
import { CostModelCache } from '../../store/cost-model-cache.js';
import { cogsStage, recordCogsBatch, recordCogsBlocks } from './index.js';

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

interface Sum {
  dimension: string;
  key: string | null;
  currency: string;
  with_session: boolean;
  costed: boolean;
  events: string;
  price_nano: string;
  cogs_nano: string;
}

const sumsOf = (tenantId: string, dimension = 'tool') =>
  world.sql<Sum[]>`
    SELECT dimension, key, currency, with_session, costed, events::text, price_nano::text, cogs_nano::text
    FROM cogs_rollup WHERE tenant_id = ${tenantId} AND dimension = ${dimension} ORDER BY key NULLS LAST, currency, with_session, costed, hour`;

/** The tenant's totals over all rows of one dimension: every event is in each dimension once. */
async function totalsOf(tenantId: string, dimension = 'customer'): Promise<{ events: string; price: string; cogs: string }> {
  const [row] = await world.sql<{ events: string; price: string; cogs: string }[]>`
    SELECT coalesce(sum(events), 0)::text AS events, coalesce(sum(price_nano), 0)::text AS price, coalesce(sum(cogs_nano), 0)::text AS cogs
    FROM cogs_rollup WHERE tenant_id = ${tenantId} AND dimension = ${dimension}`;
  return row;
}

const appliedRows = async (tenantId: string) =>
  Number((await world.sql<{ n: string }[]>`SELECT count(*) AS n FROM applied_blocks WHERE tenant_id = ${tenantId} AND stage = 'cogs'`)[0].n);

const event = (tenantId: string, overrides: LedgeredEventOverrides = {}) => ledgeredEvent({ tenantId, ...overrides });

// transform_schema with the default test event: 0.002 + 6000000 + 1500000 + 84700 nano.
const TRANSFORM_COGS = 9_584_700n;

describe('recordCogsBlocks', () => {
  it('adds price and cogs to the hourly sums per tool, agent and customer; session control events add nothing', async () => {
    const tenant = await tenantWithModel();
    const models = new CostModelCache(world.sql);
    const block = {
      origin: `blk_${tenant}`,
      events: [
        event(tenant),
        event(tenant, { attribution: { agentId: 'agt_2' } }),
        event(tenant, { toolName: 'search', model: 'other', sessionId: undefined, cost: { total: 100n, tool: 'search' } }), // default_tool + compute
        event(tenant, { eventType: 'session.paused', toolName: undefined, cost: { total: 0n, tool: '' } }),
        event(tenant, { attribution: { agentId: undefined, appId: 'app_1' }, recordedAt: Date.UTC(2026, 2, 31, 15, 0, 0) }), // the next hour
      ],
    };
    expect(await recordCogsBlocks(world.sql, models, [block])).toEqual([[{}, {}, {}, {}, {}]]);
    expect(await sumsOf(tenant)).toEqual([
      { dimension: 'tool', key: 'search', currency: 'USD', with_session: false, costed: true, events: '1', price_nano: '100', cogs_nano: '584700' },
      // Two in the event's hour, one in the next: a row per hour.
      { dimension: 'tool', key: 'transform_schema', currency: 'USD', with_session: true, costed: true, events: '2', price_nano: '25000000', cogs_nano: String(2n * TRANSFORM_COGS) },
      { dimension: 'tool', key: 'transform_schema', currency: 'USD', with_session: true, costed: true, events: '1', price_nano: '12500000', cogs_nano: String(TRANSFORM_COGS) },
    ]);
    const hours = await world.sql<{ hour: Date; events: string }[]>`
      SELECT hour, sum(events)::text AS events FROM cogs_rollup WHERE tenant_id = ${tenant} AND dimension = 'tool' GROUP BY 1 ORDER BY 1`;
    expect(hours.map((h) => [h.hour.toISOString(), h.events])).toEqual([
      ['2026-03-31T14:00:00.000Z', '3'],
      ['2026-03-31T15:00:00.000Z', '1'],
    ]);
    const agents = await sumsOf(tenant, 'agent');
    expect(agents.map((a) => [a.key, a.with_session, a.events])).toEqual([
      ['agt_2', true, '1'],
      ['agt_test', false, '1'],
      ['agt_test', true, '1'],
      [null, true, '1'],
    ]);
    expect(await totalsOf(tenant)).toEqual({ events: '4', price: String(37_500_100n), cogs: String(3n * TRANSFORM_COGS + 584_700n) });
    // The block is one applied row, not one per event.
    expect(await appliedRows(tenant)).toBe(1);
  });

  it('adds a block once, however often it is delivered, and groups several blocks in one write', async () => {
    const tenant = await tenantWithModel();
    const models = new CostModelCache(world.sql);
    const a = { origin: `a_${tenant}`, events: [event(tenant), event(tenant)] };
    const b = { origin: `b_${tenant}`, events: [event(tenant, { durationMs: 10 }), event(tenant)] };
    const one = { origin: `one_${tenant}`, events: [event(tenant)] };
    await recordCogsBlocks(world.sql, models, [a, b, one]);
    await recordCogsBlocks(world.sql, models, [a, b, one]);
    await recordCogsBlocks(world.sql, models, [b, one]);
    expect(await totalsOf(tenant)).toEqual({ events: '5', price: String(5n * 12_500_000n), cogs: String(4n * TRANSFORM_COGS + 9_500_000n + 1000n) });
    for (const dimension of ['tool', 'agent']) expect(await totalsOf(tenant, dimension)).toEqual(await totalsOf(tenant));
    expect((await sumsOf(tenant)).length).toBe(1);
    // Two blocks by origin, the single event by its id.
    expect(await appliedRows(tenant)).toBe(3);
  });

  it('adds cogs 0 without a cost model, as uncosted', async () => {
    const { tenantId } = await createTenant(world.sql, 'no model');
    await recordCogsBlocks(world.sql, new CostModelCache(world.sql), [{ origin: `o_${tenantId}`, events: [event(tenantId), event(tenantId)] }]);
    expect(await sumsOf(tenantId)).toEqual([
      { dimension: 'tool', key: 'transform_schema', currency: 'USD', with_session: true, costed: false, events: '2', price_nano: '25000000', cogs_nano: '0' },
    ]);
  });

  it('uses the model effective at each event time', async () => {
    const tenant = await tenantWithModel({ default_tool: '1' }, '-infinity', 'cm_until_mar15');
    await addModel(tenant, { default_tool: '2' }, '2026-03-15T00:00:00Z');
    const before = event(tenant, { recordedAt: Date.UTC(2026, 2, 14, 23, 59, 59, 999) });
    const after = event(tenant, { recordedAt: Date.UTC(2026, 2, 15) });
    const inEuro = event(tenant, { subscription: { currency: 'EUR' } });
    await recordCogsBlocks(world.sql, new CostModelCache(world.sql), [{ origin: `o_${tenant}`, events: [before, after, inEuro] }]);
    const rows = await world.sql<{ hour: Date; currency: string; costed: boolean; cogs: string }[]>`
      SELECT hour, currency, costed, cogs_nano::text AS cogs FROM cogs_rollup WHERE tenant_id = ${tenant} AND dimension = 'tool' ORDER BY hour`;
    expect(rows.map((r) => [r.hour.toISOString(), r.currency, r.costed, r.cogs])).toEqual([
      ['2026-03-14T23:00:00.000Z', 'USD', true, '1000000000'],
      ['2026-03-15T00:00:00.000Z', 'USD', true, '2000000000'],
      ['2026-03-31T14:00:00.000Z', 'EUR', false, '0'],
    ]);
  });

  it('fails only the events a stored invalid model would cost; the rest of their block is applied event by event, and the failed ones once when they succeed', async () => {
    const tenant = await tenantWithModel({ default_tool: 'one dollar' });
    const healthy = await tenantWithModel();
    const block = { origin: `mixed_${tenant}`, events: [event(tenant), event(healthy), event(healthy)] };
    const results = await recordCogsBlocks(world.sql, new CostModelCache(world.sql), [block]);
    expect(String(results[0][0].error)).toMatch(/invalid: default_tool/);
    expect(results[0].slice(1)).toEqual([{}, {}]);
    expect(await totalsOf(tenant)).toEqual({ events: '0', price: '0', cogs: '0' });
    expect(await totalsOf(healthy)).toMatchObject({ events: '2' });

    // The model is fixed; the block comes again (a crash before its ack): only the failed event is added.
    await world.sql`UPDATE cost_models SET model = ${world.sql.json({ default_tool: '1' })} WHERE tenant_id = ${tenant}`;
    expect(await recordCogsBlocks(world.sql, new CostModelCache(world.sql), [block])).toEqual([[{}, {}, {}]]);
    expect(await totalsOf(tenant)).toMatchObject({ events: '1', cogs: String(1_000_000_000n) });
    expect(await totalsOf(healthy)).toMatchObject({ events: '2' });
    // Once more: all applied, nothing moves.
    await recordCogsBlocks(world.sql, new CostModelCache(world.sql), [block]);
    expect([await totalsOf(tenant), await totalsOf(healthy)].map((t) => t.events)).toEqual(['1', '2']);
  });

  it('fails nothing in a block applied whole before, even when its cost model broke since (its events are in the sums)', async () => {
    const tenant = await tenantWithModel({ default_tool: '1' });
    const block = { origin: `whole_${tenant}`, events: [event(tenant), event(tenant)] };
    await recordCogsBlocks(world.sql, new CostModelCache(world.sql), [block]);
    await world.sql`UPDATE cost_models SET model = ${world.sql.json({ default_tool: 'one dollar' })} WHERE tenant_id = ${tenant}`;
    expect(await recordCogsBlocks(world.sql, new CostModelCache(world.sql), [block])).toEqual([[{}, {}]]);
    expect(await totalsOf(tenant)).toMatchObject({ events: '2', cogs: String(2_000_000_000n) });
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

describe('recordCogsBatch', () => {
  it('claims each event on its own: a batch delivered again, or in parts, adds each event once', async () => {
    const tenant = await tenantWithModel();
    const models = new CostModelCache(world.sql);
    const batch = stageEntries([event(tenant), event(tenant), event(tenant, { durationMs: 10 })]);
    await recordCogsBatch(world.sql, models, batch);
    await recordCogsBatch(world.sql, models, batch);
    await recordCogsBatch(world.sql, models, [...batch.slice(1), ...batch.slice(1)]);
    expect(await totalsOf(tenant)).toEqual({ events: '3', price: String(3n * 12_500_000n), cogs: String(2n * TRANSFORM_COGS + 9_500_000n + 1000n) });
  });
});

describe('cogsStage', () => {
  it('takes blocks, lingers for more, and keeps cost models in memory, reloading a tenant on cost-models.changed', async () => {
    expect(cogsStage).toMatchObject({ name: 'cogs', input: 'events:ledgered', outputs: [], batchSize: 20_000, lingerMs: 1000 });
    const tenant = await tenantWithModel({ default_tool: '1' });
    const context = testStageContext('cogs', world);
    const handler = await cogsStage.setup(context);
    expect(handler.handleBlocks).toBeDefined();
    // The COGS one more event adds, through the stage's handler.
    const added = async () => {
      const before = BigInt((await totalsOf(tenant)).cogs);
      await handler.handle(stageEntries([event(tenant)]));
      return BigInt((await totalsOf(tenant)).cogs) - before;
    };
    const DOLLAR = 1_000_000_000n;
    try {
      expect(await added()).toBe(DOLLAR);
      await world.sql`UPDATE cost_models SET model = ${world.sql.json({ default_tool: '3' })} WHERE tenant_id = ${tenant}`;
      expect(await added()).toBe(DOLLAR); // cached

      await publishControl(world.redis, world.config.REDIS_PREFIX, { type: 'cost-models.changed', tenantId: tenant });
      const deadline = Date.now() + 5_000;
      let last = 0n;
      while (Date.now() < deadline) {
        last = await added();
        if (last !== DOLLAR) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(last).toBe(3_000_000_000n);
    } finally {
      await handler.close?.();
      await context.close();
    }
  });
});
