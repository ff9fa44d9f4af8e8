import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SeededTenant } from '../ops/seed.js';
import { closePeriod, pendingAdjustments } from '../store/invoices.js';
import { PlanCache } from '../store/rate-plans.js';
import { ARTICLE_PLAN, seedSmall } from '../test/support/billing.js';
import { startInProcessPipeline, type InProcessPipeline } from '../test/support/in-process-pipeline.js';
import { isolated, type Isolated } from '../test/support/isolated.js';

let world: Isolated;
let tenant: SeededTenant;
let pipeline: InProcessPipeline;

beforeAll(async () => {
  world = await isolated('backfill', { clickhouse: true });
  tenant = await seedSmall(world.sql, { pricing: ARTICLE_PLAN, customers: 1 });
  pipeline = await startInProcessPipeline(world);
}, 60_000);
afterAll(async () => {
  await pipeline?.stop();
  await world?.cleanup();
});

const post = (path: string, token: string, body: unknown) =>
  fetch(`${pipeline.baseUrl}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

describe('backfill', () => {
  it('imports events older than the ingest window, rated at their recorded time, once however often sent', async () => {
    const agent = tenant.customers[0].teams[0].agents[0];
    const old = new Date(Date.now() - 100 * 86_400_000);
    const month = { start: Date.UTC(old.getUTCFullYear(), old.getUTCMonth(), 1), end: Date.UTC(old.getUTCFullYear(), old.getUTCMonth() + 1, 1) };
    const plans = new PlanCache(world.sql);
    // That month is closed already: what the backfill adds is billed on the next invoice.
    const closed = await closePeriod(world.sql, plans, tenant.tenantId, tenant.customers[0].id, month);
    expect(closed.status).toBe('closed');

    const events = Array.from({ length: 300 }, (_, i) => ({
      event_id: `bf_${i}`,
      event_type: 'mcp.tool_invoked',
      api_key: agent.apiKey,
      tool_name: 'transform_schema',
      execution_duration_ms: 1000,
      execution_status: 'SUCCESS',
      input_tokens: 1000,
      output_tokens: 0,
      recorded_timestamp: new Date(old.getTime() + i * 1000).toISOString(),
    }));
    // The ingest window refuses them; the ingest token may not backfill.
    expect((await post('/v1/events', tenant.ingestToken, events.slice(0, 1))).status).toBe(400);
    expect((await post('/v1/backfill/events', tenant.ingestToken, events)).status).toBe(401);

    const first = await post('/v1/backfill/events', tenant.adminToken, { events });
    expect(await first.json()).toMatchObject({ accepted: 300, rejected: [] });
    expect((await post('/v1/backfill/events', tenant.adminToken, { events: events.slice(0, 100) })).status).toBe(202);
    await pipeline.drain();

    const [ledger] = await world.sql`
      SELECT count(*)::int AS rows, sum(cost_nano)::text AS cost, min(period_start) AS period FROM usage_ledger WHERE tenant_id = ${tenant.tenantId}`;
    // Each call: 0.10 tool + 1,000 x 0.000001 tokens + 0.10 duration bucket = 0.201.
    expect(ledger).toMatchObject({ rows: 300, cost: String(300n * 201_000_000n), period: new Date(month.start) });
    const [{ duplicates }] = await world.sql`SELECT count(*)::int AS duplicates FROM ledger_duplicates WHERE tenant_id = ${tenant.tenantId}`;
    expect(duplicates).toBe(100);
    const adjustments = await pendingAdjustments(world.sql, plans, tenant.tenantId, tenant.customers[0].id, new Date(month.end));
    const total = adjustments.reduce((sum, l) => sum + BigInt(l.amount_nano), 0n);
    expect(total).toBe(300n * 201_000_000n);
    expect(adjustments.every((l) => l.adjusts_invoice === 'INV-000001')).toBe(true);
  }, 120_000);
});
