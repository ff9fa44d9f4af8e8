import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectPath } from '../pipeline/paths.js';
import { mutationsDone, reconcile } from '../store/reconcile.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { startInProcessPipeline } from '../test/support/in-process-pipeline.js';
import { consoleTraffic, sendEvents } from '../test/support/traffic.js';
import { DEMO_COST_MODEL, DEMO_PLAN, seedTenant, type SeededTenant } from './seed.js';

const run = promisify(execFile);
let world: Isolated;
let tenant: SeededTenant;
const today = new Date().toISOString().slice(0, 10);
const range = () => ({ from: new Date(Date.now() - 2 * 86_400_000).toISOString().slice(0, 10), to: today, tenantId: tenant.tenantId });

/** npm run reconcile against the isolated world: its exit code and what it printed. */
async function cli(...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', projectPath('ops', 'reconcile.ts'), '--tenant', tenant.tenantId, '--days', '3', ...args], {
      env: { ...process.env, ...world.env },
      cwd: projectPath(),
    });
    return { code: 0, out: stdout + stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, out: failed.stdout + failed.stderr };
  }
}

beforeAll(async () => {
  world = await isolated('reconcile', { clickhouse: true });
  tenant = await seedTenant(world.sql, { name: 'reconcile', pricing: DEMO_PLAN, costModel: DEMO_COST_MODEL, customers: 2, teamsPerCustomer: 1, agentsPerTeam: 2, appsPerTeam: 1 });
  const pipeline = await startInProcessPipeline(world);
  try {
    await sendEvents(pipeline.baseUrl, tenant.ingestToken, consoleTraffic(tenant, { hours: 30, seed: 3 }));
    await pipeline.drain();
  } finally {
    await pipeline.stop();
  }
}, 180_000);

afterAll(async () => {
  await world?.cleanup();
});

describe('npm run reconcile', () => {
  it('finds no difference once the events went through the pipeline', async () => {
    const result = await reconcile(world.sql, world.clickhouse!, range());
    expect(result.compared).toBeGreaterThan(0);
    expect(result.differences).toEqual([]);
    const { code, out } = await cli();
    expect(out).toMatch(/: 0 differences/);
    expect(code).toBe(0);
  }, 60_000);

  it('reports a rollup that drifted from the ledger, exits 1, and --repair rebuilds it', async () => {
    // An event inserted into invocations a second time, past analytics-dispatch's check: the
    // table replaces it (FINAL), the materialized views count it twice.
    const ch = world.clickhouse!;
    await ch.command({ query: `INSERT INTO invocations SELECT * FROM invocations FINAL WHERE tenant_id = '${tenant.tenantId}' AND recorded_date = today() LIMIT 1` });
    const { differences } = await reconcile(world.sql, ch, range());
    expect(new Set(differences.map((d) => d.source))).toEqual(new Set(['usage_daily', 'usage_hourly', 'spend_daily', 'tool_daily', 'session_summary']));
    expect(differences.find((d) => d.source === 'usage_daily' && d.figure === 'events')).toMatchObject({ day: today, clickhouse: expect.any(BigInt) });
    const drift = differences.find((d) => d.source === 'usage_daily' && d.figure === 'events')!;
    expect(drift.clickhouse - drift.ledger).toBe(1n);

    const before = await cli();
    expect(before.code).toBe(1);
    expect(before.out).toMatch(/usage_daily\s+events/);
    const repaired = await cli('--repair');
    expect(repaired.out).toMatch(/: 0 differences/);
    expect(repaired.code).toBe(0);
    expect((await reconcile(world.sql, ch, range())).differences).toEqual([]);
  }, 120_000);

  it('--repair inserts the ledger rows ClickHouse lacks, through the analytics backlog, and mends the rollups their insert moves', async () => {
    // Two of the day's events lost from invocations (the rollups still count them).
    const ch = world.clickhouse!;
    const lost = await world.sql<{ event_id: string }[]>`
      SELECT event_id FROM usage_ledger WHERE tenant_id = ${tenant.tenantId} AND recorded_at >= ${today}::date ORDER BY event_id LIMIT 2`;
    expect(lost).toHaveLength(2);
    await ch.command({
      query: `ALTER TABLE invocations DELETE WHERE tenant_id = '${tenant.tenantId}' AND event_id IN (${lost.map((r) => `'${r.event_id}'`).join(', ')})`,
    });
    await mutationsDone(ch, 30_000, 'the two rows are still being deleted after 30 s');
    const { differences } = await reconcile(world.sql, ch, range());
    const missing = differences.find((d) => d.source === 'invocations' && d.figure === 'events')!;
    expect(missing.ledger - missing.clickhouse).toBe(2n);

    const repaired = await cli('--repair');
    expect(repaired.out).toMatch(/ClickHouse lacks ledger rows of .* rows enqueued in analytics_backlog/);
    expect(repaired.out).toMatch(/: 0 differences/);
    expect(repaired.code).toBe(0);
    expect((await reconcile(world.sql, ch, range())).differences).toEqual([]);
    const [{ waiting }] = await world.sql<{ waiting: number }[]>`SELECT count(*)::int AS waiting FROM analytics_backlog`;
    expect(waiting).toBe(0);
  }, 120_000);

  it('reports cost in ClickHouse that the ledger does not have, which no repair of the rollups hides', async () => {
    const ch = world.clickhouse!;
    await ch.insert({
      table: 'invocations',
      values: [
        {
          tenant_id: tenant.tenantId,
          event_id: 'planted',
          event_type: 'mcp.tool_invoked',
          customer_id: tenant.customers[0].id,
          execution_status: 'SUCCESS',
          cost_nano: '1234567',
          currency: 'USD',
          recorded_at: `${today} 00:00:01`,
          recorded_date: today,
        },
      ],
      format: 'JSONEachRow',
    });
    const { differences } = await reconcile(world.sql, ch, range());
    expect(differences).toContainEqual({ tenantId: tenant.tenantId, day: today, source: 'invocations', figure: 'cost_nano', ledger: expect.any(BigInt), clickhouse: expect.any(BigInt) });
    const planted = differences.find((d) => d.source === 'invocations' && d.figure === 'cost_nano')!;
    expect(planted.clickhouse - planted.ledger).toBe(1_234_567n);
    const { code, out } = await cli('--repair');
    expect(code).toBe(1);
    expect(out).toMatch(/invocations\s+cost\s+[\d.]+\s+[\d.]+\s+0\.001234567/);
  }, 120_000);
});
