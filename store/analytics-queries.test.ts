import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dispatchBatch } from '../stages/analytics-dispatch/index.js';
import { ledgeredEvent, stageEntries } from '../stages/testing.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { ANALYTICS_QUERIES, renderForConsole, renderForGrafana, runAnalyticsQuery, unescapeTsv } from './analytics-queries.js';

let world: Isolated;
const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 10, 20, 10, 15); // 2026-11-20 10:15 UTC
const range = (tenantId: string) => ({ tenantId, from: Date.UTC(2026, 10, 1), to: Date.UTC(2026, 11, 1) });

beforeAll(async () => {
  world = await isolated('analytics-queries', { clickhouse: true });
  const events = [
    // Tenant A: two customers, an agent and an app, three tools, an error, one session over two hours.
    ledgeredEvent({ tenantId: 'ten_a', recordedAt: T0, toolName: 'search', sessionId: 's1', cost: { total: 1_500_000_000n } }),
    ledgeredEvent({ tenantId: 'ten_a', recordedAt: T0 + HOUR, toolName: 'search', sessionId: 's1', status: 'FAILED', cost: { total: 500_000_000n } }),
    ledgeredEvent({ tenantId: 'ten_a', recordedAt: T0 + 2 * HOUR, eventType: 'session.completed', toolName: undefined, sessionId: 's1', cost: { total: 0n, tool: '' } }),
    ledgeredEvent({
      tenantId: 'ten_a',
      recordedAt: T0 + 30_000,
      toolName: 'transform\tschema',
      sessionId: undefined,
      attribution: { customerId: 'cus_b', teamId: 'team_b', agentId: undefined, appId: 'app_b' },
      cost: { total: 9_000_000_000_000_000_000n },
    }),
    // Tenant B: not to be seen by A's queries.
    ledgeredEvent({ tenantId: 'ten_b', recordedAt: T0, toolName: 'search', cost: { total: 7n } }),
    // Tenant A, outside the range (October).
    ledgeredEvent({ tenantId: 'ten_a', recordedAt: Date.UTC(2026, 9, 31, 23, 59, 59), toolName: 'search', cost: { total: 1n } }),
    // Tenant C: a five-minute session on the first day a query can ask for (backfill reaches 1970).
    ledgeredEvent({ tenantId: 'ten_c', recordedAt: 60_000, toolName: 'search', sessionId: 's70', cost: { total: 1n } }),
    ledgeredEvent({ tenantId: 'ten_c', recordedAt: 360_000, toolName: 'search', sessionId: 's70', cost: { total: 1n } }),
  ];
  await dispatchBatch(world.clickhouse!, stageEntries(events));
});

afterAll(async () => {
  await world?.cleanup();
});

describe('the analytics queries', () => {
  it('total the tenant within the range, exactly beyond Int64', async () => {
    const [totals] = await runAnalyticsQuery(world.clickhouse!, ANALYTICS_QUERIES.totals, range('ten_a'));
    expect(totals).toEqual({
      currency: 'USD',
      event_count: 4n,
      call_count: 3n,
      error_count: 1n,
      revenue: 9_000_000_002_000_000_000n,
      cogs_total: 0n,
      margin: 9_000_000_002_000_000_000n,
    });
    const [other] = await runAnalyticsQuery(world.clickhouse!, ANALYTICS_QUERIES.totals, range('ten_b'));
    expect(other.revenue).toBe(7n);
  });

  it('group spend by customer, team and agent', async () => {
    const customers = await runAnalyticsQuery(world.clickhouse!, ANALYTICS_QUERIES.spendByCustomer, range('ten_a'));
    expect(customers.map((r) => [r.customer_id, r.revenue])).toEqual([
      ['cus_b', 9_000_000_000_000_000_000n],
      ['cus_test', 2_000_000_000n],
    ]);
    const agents = await runAnalyticsQuery(world.clickhouse!, ANALYTICS_QUERIES.spendByAgent, range('ten_a'));
    expect(agents.map((r) => [r.agent_id, r.app_id, r.call_count])).toEqual([
      ['', 'app_b', 1n],
      ['agt_test', '', 2n],
    ]);
  });

  it('rank tools, a tab in a name read back as written', async () => {
    const tools = await runAnalyticsQuery(world.clickhouse!, ANALYTICS_QUERIES.topToolsByRevenue, range('ten_a'));
    expect(tools.map((r) => [r.tool_name, r.call_count, r.error_count])).toEqual([
      ['transform\tschema', 1n, 0n],
      ['search', 2n, 1n],
    ]);
  });

  it('bucket revenue and errors per hour and day, and measure sessions', async () => {
    const hours = await runAnalyticsQuery(world.clickhouse!, ANALYTICS_QUERIES.revenueHourly, range('ten_a'));
    expect(hours.map((r) => [(r.time as Date).toISOString(), r.revenue])).toEqual([
      ['2026-11-20T10:00:00.000Z', 9_000_000_001_500_000_000n],
      ['2026-11-20T11:00:00.000Z', 500_000_000n],
      ['2026-11-20T12:00:00.000Z', 0n],
    ]);
    const days = await runAnalyticsQuery(world.clickhouse!, ANALYTICS_QUERIES.revenueDaily, range('ten_a'));
    expect(days.map((r) => [(r.time as Date).toISOString(), r.call_count])).toEqual([['2026-11-20T00:00:00.000Z', 3n]]);
    const errors = await runAnalyticsQuery(world.clickhouse!, ANALYTICS_QUERIES.errorRatesHourly, range('ten_a'));
    expect(errors.map((r) => r.error_rate)).toEqual([0, 1, 0]);
    const sessions = await runAnalyticsQuery(world.clickhouse!, ANALYTICS_QUERIES.sessionLengthsDaily, range('ten_a'));
    expect(sessions).toEqual([
      { time: new Date('2026-11-20T00:00:00Z'), sessions: 1n, avg_seconds: 7200, p50_seconds: 7200, p95_seconds: 7200 },
    ]);
  });

  it('measure a session on 1970-01-01 (the day before it is not a day of 2149)', async () => {
    const sessions = await runAnalyticsQuery(world.clickhouse!, ANALYTICS_QUERIES.sessionLengthsDaily, { tenantId: 'ten_c', from: 0, to: 86_400_000 });
    expect(sessions.map((r) => [r.sessions, r.avg_seconds])).toEqual([[1n, 300]]);
  });

  it('are rendered with literals for the console and with macros for Grafana', () => {
    const sql = renderForConsole(ANALYTICS_QUERIES.totals, { tenantId: "o'brien", from: 1_000_000, to: 2_000_000 });
    expect(sql).toContain("tenant_id = 'o\\'brien'");
    expect(sql).toContain("toDate(toDateTime(1000, 'UTC'))");
    const grafana = renderForGrafana(ANALYTICS_QUERIES.totals);
    expect(grafana).toContain('tenant_id = ${tenant:singlequote}');
    expect(grafana).toContain('toDate($__toTime - 1)');
    expect(unescapeTsv('a\\tb\\\\c\\n')).toBe('a\tb\\c\n');
  });
});
