import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isTransient } from '../../pipeline/errors.js';
import { TransientError } from '../../pipeline/errors.js';
import { connectClickHouse, type ClickHouseClient } from '../../store/clickhouse.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { ledgeredEvent, stageEntries, testStageContext, type LedgeredEventOverrides } from '../testing.js';
import { seedTenant } from '../../ops/seed.js';
import { CostModelCache } from '../../store/cost-model-cache.js';
import { eventCogs } from '../../store/cost-model.js';
import { writeLedger } from '../ledger-write/index.js';
import { analyticsDispatchStage, clickHouseCode, dispatchBatch, isDataError } from './index.js';
import { invocationRow } from './rows.js';
import { exactSum, invocationTotals, invocationsByAgent, invocationsByTool, invocationsBy, joinSum } from './queries.js';

let world: Isolated;
let ch: ClickHouseClient;
beforeAll(async () => {
  world = await isolated('analytics-dispatch', { clickhouse: true });
  ch = world.clickhouse!;
});
afterAll(async () => {
  await world?.cleanup();
});

const COST_MODEL = {
  tools: { transform_schema: '0.02' },
  default_tool: '0.0005',
  models: { 'claude-sonnet': { input_tokens: '0.000003', output_tokens: '0.000015' } },
  compute_per_ms: '0.0000001',
};

let tenantSeq = 0;
const newTenant = () => `ten_an_${++tenantSeq}`;
const event = (tenantId: string, overrides: LedgeredEventOverrides = {}) => ledgeredEvent({ tenantId, ...overrides });

async function rawCount(tenantId: string): Promise<number> {
  const result = await ch.query({ query: `SELECT count() AS n FROM invocations WHERE tenant_id = '${tenantId}'`, format: 'JSONEachRow' });
  return Number((await result.json<{ n: string }>())[0].n);
}

/** A small batch with two agents, three tools, an app, an error and a session control event. */
function mixedBatch(tenant: string) {
  return [
    event(tenant, { toolName: 'search', cost: { total: 1_000_000_001n }, inputTokens: 10, outputTokens: 1 }),
    event(tenant, { toolName: 'search', cost: { total: 2n }, status: 'FAILED', attribution: { agentId: 'agt_2' } }),
    event(tenant, { toolName: 'transform_schema', cost: { total: 9_000_000_000_000n }, attribution: { agentId: 'agt_2' } }),
    event(tenant, { toolName: 'fetch', cost: { total: 5n }, attribution: { agentId: undefined, appId: 'app_1' } }),
    event(tenant, { eventType: 'session.completed', toolName: undefined, cost: { total: 0n, tool: '' }, inputTokens: 0, outputTokens: 0 }),
  ];
}

describe('invocationRow', () => {
  it('maps a ledgered event to the table columns, absent ids as empty strings, times in UTC', () => {
    const row = invocationRow(
      ledgeredEvent({
        recordedAt: Date.UTC(2026, 2, 31, 23, 59, 59, 999),
        ingestedAt: Date.UTC(2026, 3, 1, 0, 0, 1, 5),
        attribution: { agentId: undefined, appId: 'app_9' },
        model: undefined,
        overCap: true,
        cost: { total: 9_223_372_036_854_775_807n },
      }),
    );
    expect(row).toMatchObject({
      agent_id: '',
      app_id: 'app_9',
      model: '',
      recorded_at: '2026-03-31 23:59:59',
      recorded_date: '2026-03-31',
      ingested_at: '2026-04-01 00:00:01',
      cost_nano: '9223372036854775807',
      total_tokens: 2550,
      over_cap: 1,
      currency: 'USD',
      rate_plan_version: 1,
    });
  });

  it('formats each time as its own, however the times of consecutive rows go back and forth across seconds and days', () => {
    const times = [
      Date.UTC(2026, 2, 31, 23, 59, 59, 999),
      Date.UTC(2026, 3, 1, 0, 0, 0, 0),
      Date.UTC(2026, 2, 31, 23, 59, 59, 1),
      Date.UTC(2026, 2, 31, 23, 59, 58, 999),
      Date.UTC(2026, 3, 1, 0, 0, 0, 500),
      Date.UTC(1969, 11, 31, 23, 59, 59, 500),
      Date.UTC(2026, 3, 1, 0, 0, 0, 500),
    ];
    const plain = (ms: number) => new Date(ms).toISOString();
    for (const [i, at] of times.entries()) {
      const row = invocationRow(ledgeredEvent({ recordedAt: at, ingestedAt: times[(i + 3) % times.length] }));
      expect(row.recorded_at).toBe(plain(at).slice(0, 19).replace('T', ' '));
      expect(row.recorded_date).toBe(plain(at).slice(0, 10));
      expect(row.ingested_at).toBe(plain(times[(i + 3) % times.length]).slice(0, 19).replace('T', ' '));
    }
  });
});

describe('dispatchBatch', () => {
  it('inserts the batch and reads the same figures back, in total, per agent and per tool', async () => {
    const tenant = newTenant();
    const batch = mixedBatch(tenant);
    expect(await dispatchBatch(ch, stageEntries(batch))).toEqual(batch.map(() => ({})));

    const totals = await invocationTotals(ch, tenant);
    expect(totals).toEqual({
      events: 5,
      calls: 4,
      costNano: 9_001_000_000_008n,
      inputTokens: 10 + 2400 * 3,
      outputTokens: 1 + 150 * 3,
      totalTokens: 11 + 2550 * 3,
      durationMs: 847 * 5,
      errors: 1,
    });
    const agents = await invocationsByAgent(ch, tenant);
    expect(agents.map((a) => [a.key, a.events, a.costNano])).toEqual([
      ['agt_2', 2, 9_000_000_000_002n],
      ['agt_test', 2, 1_000_000_001n],
      ['', 1, 5n],
    ]);
    const tools = await invocationsByTool(ch, tenant);
    expect(tools.map((t) => [t.key, t.calls, t.costNano, t.errors])).toEqual([
      ['transform_schema', 1, 9_000_000_000_000n, 0],
      ['search', 2, 1_000_000_003n, 1],
      ['fetch', 1, 5n, 0],
      ['', 0, 0n, 0],
    ]);
    expect((await invocationsBy(ch, tenant, 'app')).find((r) => r.key === 'app_1')?.costNano).toBe(5n);
    // Another tenant's rows are not counted.
    expect((await invocationTotals(ch, newTenant())).events).toBe(0);
  });

  it('inserts a batch spanning more than 100 months in inserts of at most 100 months each (current releases refuse more partitions)', async () => {
    const tenant = newTenant();
    const monthly = (from: number, months: number) =>
      Array.from({ length: months }, (_, m) => event(tenant, { eventId: `evt_${from}_${m}`, recordedAt: Date.UTC(from, m, 15) }));
    // Each insert's months, read from the body it sends (18.16 has no such limit to refuse with, and 200 partitions take it half a minute).
    const inserts: Set<string>[] = [];
    const recording = {
      async exec(params: { query: string; values: AsyncIterable<Buffer> }) {
        const body: Buffer[] = [];
        for await (const chunk of params.values) body.push(chunk);
        const rows = Buffer.concat(body).toString('utf8').trim().split('\n').map((line) => JSON.parse(line) as { recorded_date: string });
        inserts.push(new Set(rows.map((r) => r.recorded_date.slice(0, 7))));
        return { stream: Readable.from([]) };
      },
    } as unknown as ClickHouseClient;
    await dispatchBatch(recording, stageEntries(monthly(2000, 101)));
    expect(inserts.map((months) => months.size)).toEqual([100, 1]);
    await dispatchBatch(recording, stageEntries(monthly(2010, 100)));
    expect(inserts.map((months) => months.size)).toEqual([100, 1, 100]);
  });

  it('does not double count when the same batch is delivered again', async () => {
    const tenant = newTenant();
    const batch = stageEntries(mixedBatch(tenant));
    await dispatchBatch(ch, batch);
    const once = await invocationTotals(ch, tenant);
    await dispatchBatch(ch, batch);
    await dispatchBatch(ch, [...batch.slice(1, 3), ...batch.slice(1, 2)]);
    expect(await rawCount(tenant)).toBe(5); // rows already there are not inserted again
    expect(await invocationTotals(ch, tenant)).toEqual(once);
    expect((await invocationsByAgent(ch, tenant)).map((a) => a.events)).toEqual([2, 2, 1]);
    // The rollups the materialized views keep saw each event once.
    const daily = await ch.query({
      query: `SELECT toString(sum(events)) AS events, toString(sum(cost)) AS cost FROM usage_daily WHERE tenant_id = '${tenant}'`,
      format: 'JSONEachRow',
    });
    expect(await daily.json()).toEqual([{ events: '5', cost: '9001.000000008' }]);
  });

  it('looks up what a batch may have inserted only when it may have: a redelivered batch (after a crash) goes in once', async () => {
    const tenant = newTenant();
    const events = mixedBatch(tenant);
    await dispatchBatch(ch, stageEntries(events));
    // The same events as another process reads them after a claim: new objects, marked redelivered.
    await dispatchBatch(ch, stageEntries(events).map((entry) => ({ ...entry, redelivered: true })));
    expect(await rawCount(tenant)).toBe(5);
  });

  it('records the COGS of each call from the cost model, as the cogs stage does', async () => {
    const tenant = await seedTenant(world.sql, { name: 'analytics-cogs', pricing: { tool_invocations: { '*': '0.01' } }, costModel: COST_MODEL, customers: 1, teamsPerCustomer: 1, agentsPerTeam: 1 });
    const models = new CostModelCache(world.sql);
    const call = event(tenant.tenantId, { toolName: 'transform_schema', model: 'claude-sonnet', inputTokens: 1000, outputTokens: 10, durationMs: 5 });
    const control = event(tenant.tenantId, { eventType: 'session.completed', toolName: undefined, cost: { total: 0n, tool: '' } });
    expect(await dispatchBatch(ch, stageEntries([call, control]), models)).toEqual([{}, {}]);
    const loaded = await models.load([tenant.tenantId]);
    const expected = eventCogs(loaded.get(tenant.tenantId)!, call);
    if (expected instanceof Error) throw expected;
    // tool 0.02 + 1000 x 0.000003 + 10 x 0.000015 + 5 ms x 0.0000001
    expect(expected.cogsNano).toBe(20_000_000n + 3_000_000n + 150_000n + 500n);
    const result = await ch.query({ query: `SELECT event_type, toString(cogs_nano) AS cogs FROM invocations WHERE tenant_id = '${tenant.tenantId}' ORDER BY event_type`, format: 'JSONEachRow' });
    expect(await result.json()).toEqual([
      { event_type: 'mcp.tool_invoked', cogs: String(expected.cogsNano) },
      { event_type: 'session.completed', cogs: '0' },
    ]);
  });

  it('sums cost exactly beyond the range of Int64, negative amounts included', async () => {
    const tenant = newTenant();
    const big = 9_000_000_000_000_000_000n; // 9e9 units, near Int64's limit
    await dispatchBatch(ch, stageEntries([big, big, big, -1_000_000_001n, 999_999_999n].map((total) => event(tenant, { cost: { total } }))));
    expect((await invocationTotals(ch, tenant)).costNano).toBe(3n * big - 2n);
  });

  it('filters by recorded time', async () => {
    const tenant = newTenant();
    const t = Date.UTC(2026, 2, 10, 12, 0, 0);
    await dispatchBatch(
      ch,
      stageEntries([
        event(tenant, { recordedAt: Date.UTC(2026, 1, 28, 23, 0, 0), cost: { total: 1n } }),
        event(tenant, { recordedAt: t, cost: { total: 10n } }),
        event(tenant, { recordedAt: t + 3_600_000, cost: { total: 100n } }),
        event(tenant, { recordedAt: Date.UTC(2026, 3, 1), cost: { total: 1000n } }),
      ]),
    );
    expect((await invocationTotals(ch, tenant, { from: Date.UTC(2026, 2, 1), to: Date.UTC(2026, 3, 1) })).costNano).toBe(110n);
    expect((await invocationTotals(ch, tenant, { from: t, to: t + 3_600_000 })).costNano).toBe(10n);
    expect((await invocationTotals(ch, tenant, { from: t + 1000 })).costNano).toBe(1100n);
  });

  it('surfaces a ClickHouse outage as transient, so the batch waits in hand', async () => {
    const down = connectClickHouse({ url: 'http://127.0.0.1:1', database: world.env.CLICKHOUSE_DATABASE });
    try {
      const failure = await dispatchBatch(down, stageEntries([event(newTenant())])).catch((e: unknown) => e);
      expect(failure).toBeInstanceOf(TransientError);
      expect(isTransient(failure)).toBe(true);
    } finally {
      await down.close();
    }
  });

  it('treats a missing table as transient (not migrated yet) and a bad value as a data error', async () => {
    const elsewhere = connectClickHouse({ url: world.config.CLICKHOUSE_URL, database: 'system' });
    try {
      const failure = await dispatchBatch(elsewhere, stageEntries([event(newTenant())])).catch((e: unknown) => e);
      expect(isTransient(failure)).toBe(true);
    } finally {
      await elsewhere.close();
    }
    const bad = await ch
      .insert({ table: 'invocations', values: [{ ...invocationRow(event(newTenant())), duration_ms: 'soon' }], format: 'JSONEachRow' })
      .catch((e: unknown) => e);
    expect(isDataError(bad)).toBe(true);
    expect(isTransient(bad)).toBe(false);
  });

  it('takes a row ClickHouse refuses to parse (Code 25: a lone surrogate) as a data error, not an outage (issue 9, defect 1)', async () => {
    const failure = await dispatchBatch(ch, stageEntries([event(newTenant(), { errorType: '\ud800' })])).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(Error);
    expect(clickHouseCode(failure)).toBe('25');
    expect(isTransient(failure)).toBe(false);
  });

  it('sums tokens and durations beyond 64 bits without wrapping (UInt64 and Int64 sums would)', async () => {
    const tenant = newTenant();
    await dispatchBatch(ch, stageEntries(Array.from({ length: 4 }, () => event(tenant, { inputTokens: 1e12, outputTokens: 1e12 - 1, durationMs: 1e12 }))));
    expect(await invocationTotals(ch, tenant)).toMatchObject({ inputTokens: 4e12, outputTokens: 4e12 - 4, totalTokens: 8e12 - 4, durationMs: 4e12 });
    // The expression itself, at the edge of UInt64 and Int64.
    const result = await ch.query({
      query: `SELECT ${exactSum('x', 'u')}, ${exactSum('y', 'i')} FROM (SELECT toUInt64('18446744073709551615') AS x, toInt64('9223372036854775807') AS y UNION ALL SELECT toUInt64(10) AS x, toInt64(10) AS y)`,
      format: 'JSONEachRow',
    });
    const [row] = await result.json<Record<string, string>>();
    expect(joinSum(row.u_hi, row.u_lo)).toBe(18446744073709551625n);
    expect(joinSum(row.i_hi, row.i_lo)).toBe(9223372036854775817n);
  });
});

describe('analyticsDispatchStage', () => {
  it('reads events:ledgered, batching ANALYTICS_BATCH_ROWS rows or ANALYTICS_FLUSH_MS', async () => {
    expect(analyticsDispatchStage).toMatchObject({ name: 'analytics-dispatch', input: 'events:ledgered', outputs: [] });
    const context = testStageContext('analytics-dispatch', world, { ANALYTICS_FLUSH_MS: '250', ANALYTICS_BATCH_ROWS: '300' });
    const { lingerMs: linger, batchSize } = analyticsDispatchStage;
    expect(typeof linger === 'function' ? linger(context.config) : linger).toBe(250);
    expect(typeof batchSize === 'function' ? batchSize(context.config) : batchSize).toBe(300);
    expect(testStageContext('analytics-dispatch', world).config.ANALYTICS_BATCH_ROWS).toBe(20_000);
    const handler = await analyticsDispatchStage.setup(context);
    try {
      const tenant = newTenant();
      await handler.handle(stageEntries([event(tenant)]));
      expect((await invocationTotals(ch, tenant)).events).toBe(1);
    } finally {
      await handler.close?.();
    }
  });

  it('enqueues a batch ClickHouse cannot take in the analytics backlog and acks it, so ClickHouse never holds the ledger back', async () => {
    // A port nothing listens on: every insert fails as an outage.
    const context = testStageContext('analytics-dispatch', world, { CLICKHOUSE_URL: 'http://127.0.0.1:9', ANALYTICS_BACKLOG_INTERVAL_MS: '60000' });
    const handler = await analyticsDispatchStage.setup(context);
    const tenant = newTenant();
    const events = [event(tenant), event(tenant)];
    // Ledgered first, as in the pipeline: the drainer, which starts with the handler, drops backlog
    // rows that name no ledger row, and its first step may come after the handler's enqueue.
    await writeLedger(world.sql, stageEntries(events));
    try {
      expect(await handler.handle(stageEntries(events))).toEqual([{}, {}]);
    } finally {
      await handler.close?.();
      await context.close();
    }
    const waiting = await world.sql<{ event_id: string }[]>`
      SELECT event_id FROM analytics_backlog WHERE tenant_id = ${tenant} AND parked_at IS NULL ORDER BY id`;
    expect(waiting.map((r) => r.event_id)).toEqual(events.map((e) => e.eventId));
    expect(await rawCount(tenant)).toBe(0);
    await world.sql`DELETE FROM analytics_backlog WHERE tenant_id = ${tenant}`;
  });
});
