import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlanCache } from './rate-plans.js';
import { closeDuePeriods, closePeriod, draftInvoice, duePeriods, getInvoice, pendingAdjustments } from './invoices.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { seedSmall } from '../test/support/billing.js';
import type { SeededTenant } from '../ops/seed.js';
import { ledgeredEvent, stageEntries } from '../stages/testing.js';
import { rollUp } from '../stages/invoice-rollup/index.js';
import type { LedgeredEvent } from '../domain/flow.js';
import { createAdminRoutes } from '../api/admin/index.js';
import { SubscriptionBook } from './subscriptions.js';
import { TenantTokens } from './tenant-tokens.js';

const PLAN = { tool_invocations: { '*': '0.05' }, token_multipliers: { output_tokens: '0.000002' } };
const MARCH = Date.UTC(2026, 2, 1);
const APRIL = Date.UTC(2026, 3, 1);
const MAY = Date.UTC(2026, 4, 1);
const DAY = 86_400_000;

let world: Isolated;
let tenant: SeededTenant;

beforeAll(async () => {
  world = await isolated('invoices');
  tenant = await seedSmall(world.sql, { pricing: PLAN, customers: 2, subscriptionsFrom: new Date(MARCH) });
});
afterAll(() => world.cleanup());

function event(customerIndex: number, recordedAt: number, periodStart: number, periodEnd: number): LedgeredEvent {
  const customer = tenant.customers[customerIndex];
  const agent = customer.teams[0].agents[0];
  return ledgeredEvent({
    tenantId: tenant.tenantId,
    sessionId: undefined,
    outputTokens: 1000,
    inputTokens: 0,
    recordedAt,
    attribution: { customerId: customer.id, teamId: customer.teams[0].id, agentId: agent.id },
    subscription: { subscriptionId: customer.subscriptionId, ratePlanVersionId: tenant.ratePlanVersionId, periodStart, periodEnd },
    cost: { total: 52_000_000n, tool: '*', breakdown: { tool: 50_000_000n, input_tokens: 0n, output_tokens: 2_000_000n, duration: 0n } },
  });
}

describe('period close', () => {
  it('closes a period exactly once under two concurrent closers, with a number, lines, totals and plan versions', async () => {
    const plans = new PlanCache(world.sql);
    const customer = tenant.customers[0];
    await rollUp(world.sql, plans, stageEntries([1, 2, 3].map((d) => event(0, MARCH + d * DAY, MARCH, APRIL))));
    const draft = await draftInvoice(world.sql, plans, tenant.tenantId, customer.id, MARCH + DAY);
    const period = { start: MARCH, end: APRIL };
    const [a, b] = await Promise.all([
      closePeriod(world.sql, new PlanCache(world.sql), tenant.tenantId, customer.id, period),
      closePeriod(world.sql, new PlanCache(world.sql), tenant.tenantId, customer.id, period),
    ]);
    expect([a.status, b.status].sort()).toEqual(['already_closed', 'closed']);
    const closed = a.status === 'closed' ? a.invoice : b.status === 'closed' ? b.invoice : undefined;
    expect(closed!.number).toBe('INV-000001');
    expect(closed!.total).toBe(draft!.invoice.total);
    expect(closed!.total).toBe('0.16');
    expect(closed!.plan_versions).toEqual([
      { subscription_id: customer.subscriptionId, rate_plan_id: tenant.ratePlanId, rate_plan_version: 1, rate_plan_version_id: tenant.ratePlanVersionId },
    ]);
    expect(closed!.lines.map((l) => [l.step, l.code, l.rule])).toEqual([
      [1, 'tool', "calls x $.tool_invocations['*']"],
      [1, 'output_tokens', 'output_tokens x $.token_multipliers.output_tokens'],
    ]);
    const [{ count }] = await world.sql`SELECT count(*)::int AS count FROM invoices WHERE tenant_id = ${tenant.tenantId}`;
    expect(count).toBe(1);
    // The stored invoice never changes.
    await expect(world.sql`UPDATE invoices SET number = 'X' WHERE tenant_id = ${tenant.tenantId}`).rejects.toThrow(/never changed/);
  });

  it('puts an event that arrives for a closed period on the next invoice as an adjustment naming that period', async () => {
    const plans = new PlanCache(world.sql);
    const customer = tenant.customers[0];
    await rollUp(world.sql, plans, stageEntries([event(0, APRIL + DAY, APRIL, MAY)]));
    // Late: recorded in March, ledgered after March closed.
    await rollUp(world.sql, plans, stageEntries([event(0, MARCH + 20 * DAY, MARCH, APRIL), event(0, MARCH + 21 * DAY, MARCH, APRIL)]));
    const pending = await pendingAdjustments(world.sql, plans, tenant.tenantId, customer.id, new Date(APRIL));
    expect(pending.map((l) => l.amount)).toEqual(['0.10', '0.00']);
    const outcome = await closePeriod(world.sql, plans, tenant.tenantId, customer.id, { start: APRIL, end: MAY });
    expect(outcome.status).toBe('closed');
    const april = outcome.status === 'closed' ? outcome.invoice : undefined;
    const adjustments = april!.lines.filter((l) => l.code === 'adjustment');
    expect(adjustments).toHaveLength(2);
    expect(adjustments[0]).toMatchObject({ adjusts_invoice: 'INV-000001', period_start: new Date(MARCH).toISOString(), amount: '0.10', amount_nano: '100000000' });
    expect(adjustments[0].description).toContain('period 2026-03');
    expect(april!.number).toBe('INV-000002');
    // April's own usage 0.052 -> 0.05 + 0.00; March's two late calls 0.10 + tokens 0.004 -> 0.00.
    expect(april!.period_total).toBe('0.05');
    expect(april!.adjustments_total).toBe('0.10');
    expect(april!.total).toBe('0.15');
    // Settled: nothing pending any more, and March's invoice is unchanged.
    expect(await pendingAdjustments(world.sql, plans, tenant.tenantId, customer.id, new Date(MAY))).toEqual([]);
    const march = await getInvoice(world.sql, tenant.tenantId, customer.id, 'INV-000001');
    expect(march!.total).toBe('0.16');
  });

  it('settles a late event of a period closed in another currency on a note of its own, in that currency, when the next period closes', async () => {
    const other = await seedSmall(world.sql, { pricing: { tool_invocations: { '*': '1.00' } }, customers: 1, subscriptionsFrom: new Date(MARCH) });
    const t = other.tenantId;
    const customer = other.customers[0];
    // The customer moves from its USD plan to an EUR plan on April 1.
    await world.sql`UPDATE subscriptions SET effective_to = ${new Date(APRIL)} WHERE tenant_id = ${t} AND id = ${customer.subscriptionId}`;
    await world.sql`INSERT INTO rate_plans (id, tenant_id, name, currency) VALUES ('plan_eur', ${t}, 'eur', 'EUR')`;
    await world.sql`
      INSERT INTO rate_plan_versions (id, tenant_id, rate_plan_id, version, pricing)
      VALUES ('planv_eur', ${t}, 'plan_eur', 1, ${world.sql.json({ tool_invocations: { '*': '2.00' } })})`;
    await world.sql`
      INSERT INTO subscriptions (id, tenant_id, customer_id, rate_plan_version_id, effective_from)
      VALUES ('sub_eur', ${t}, ${customer.id}, 'planv_eur', ${new Date(APRIL)})`;
    const plans = new PlanCache(world.sql);
    const call = (subscriptionId: string, ratePlanVersionId: string, currency: string, recordedAt: number, start: number, end: number, nano: bigint) =>
      ledgeredEvent({
        tenantId: t,
        sessionId: undefined,
        recordedAt,
        attribution: { customerId: customer.id, teamId: customer.teams[0].id, agentId: customer.teams[0].agents[0].id },
        subscription: { subscriptionId, ratePlanVersionId, periodStart: start, periodEnd: end, currency } as LedgeredEvent['subscription'],
        cost: { total: nano, tool: '*', breakdown: { tool: nano, input_tokens: 0n, output_tokens: 0n, duration: 0n } },
      });
    await rollUp(world.sql, plans, stageEntries([call(customer.subscriptionId, other.ratePlanVersionId, 'USD', MARCH + DAY, MARCH, APRIL, 1_000_000_000n)]));
    const march = await closePeriod(world.sql, plans, t, customer.id, { start: MARCH, end: APRIL });
    expect(march.status === 'closed' && [march.invoice.currency, march.invoice.total]).toEqual(['USD', '1.00']);
    // A late USD call for March, then April's EUR call.
    await rollUp(world.sql, plans, stageEntries([call(customer.subscriptionId, other.ratePlanVersionId, 'USD', MARCH + 20 * DAY, MARCH, APRIL, 1_000_000_000n)]));
    await rollUp(world.sql, plans, stageEntries([call('sub_eur', 'planv_eur', 'EUR', APRIL + DAY, APRIL, MAY, 2_000_000_000n)]));
    // The EUR draft does not carry the USD period's change; the USD view still shows it pending.
    expect(await pendingAdjustments(world.sql, plans, t, customer.id, new Date(APRIL), 'EUR')).toEqual([]);
    expect((await pendingAdjustments(world.sql, plans, t, customer.id, new Date(APRIL), 'USD')).map((l) => l.amount)).toEqual(['1.00']);

    const april = await closePeriod(world.sql, plans, t, customer.id, { start: APRIL, end: MAY });
    expect(april.status === 'closed' && [april.invoice.currency, april.invoice.total, april.invoice.adjustments_total]).toEqual(['EUR', '2.00', '0.00']);
    const notes = await world.sql<{ document: { kind: string; currency: string; total: string; corrects_invoice: string } }[]>`
      SELECT document FROM invoices WHERE tenant_id = ${t} AND kind = 'credit_note'`;
    expect(notes.map((n) => n.document)).toEqual([expect.objectContaining({ kind: 'credit_note', currency: 'USD', total: '1.00', corrects_invoice: 'INV-000001' })]);
    // Settled once: nothing pending in either currency.
    expect(await pendingAdjustments(world.sql, plans, t, customer.id, new Date(MAY))).toEqual([]);
  });

  it('finds the periods due after their grace and closes each once', async () => {
    const plans = new PlanCache(world.sql);
    const options = { now: MAY + 2 * DAY, graceMs: 3 * DAY, lookbackMs: 400 * DAY, tenantId: tenant.tenantId };
    const due = await duePeriods(world.sql, options);
    // Customer 1's March and customer 0/1's April... April ended May 1, grace 3 days: not due on May 3.
    expect(due.map((d) => [d.customerId, new Date(d.period.start).toISOString().slice(0, 7)])).toEqual([[tenant.customers[1].id, '2026-03']]);
    const closed = await closeDuePeriods(world.sql, plans, options);
    expect(closed.map((d) => d.number)).toEqual(['INV-000003']);
    expect(await closeDuePeriods(world.sql, plans, options)).toEqual([]);
  });

  it('leaves nothing behind when the closer is killed with SIGKILL in the middle of a close', async () => {
    const customer = tenant.customers[1];
    const script = `
      import { connectPostgres } from './pipeline/postgres.ts';
      import { PlanCache } from './store/rate-plans.ts';
      import { closePeriod } from './store/invoices.ts';
      const sql = connectPostgres(process.env.DATABASE_URL, { max: 2 });
      await closePeriod(sql, new PlanCache(sql), ${JSON.stringify(tenant.tenantId)}, ${JSON.stringify(customer.id)}, { start: ${APRIL}, end: ${MAY} }, {
        beforeCommit: async () => { console.log('in-close'); await new Promise(() => {}); },
      });`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: process.cwd(),
      env: { ...process.env, ...world.env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('in-close')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`closer exited early (${code})`)));
    });
    // The invoice, its number and its settlement are written but not committed: kill it there.
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('exit', resolve));
    const plans = new PlanCache(world.sql);
    const outcome = await closePeriod(world.sql, plans, tenant.tenantId, customer.id, { start: APRIL, end: MAY });
    expect(outcome.status).toBe('closed');
    // The killed close consumed no number: the sequence is gapless.
    expect(outcome.status === 'closed' && outcome.invoice.number).toBe('INV-000004');
    const [{ count }] = await world.sql`SELECT count(*)::int AS count FROM invoices WHERE tenant_id = ${tenant.tenantId} AND customer_id = ${customer.id}`;
    expect(count).toBe(2);
  });
});

describe('anniversary billing periods', () => {
  it('a subscription billed by anniversary rates and closes monthly periods counted from its start', async () => {
    const admin = createAdminRoutes({ sql: world.sql, redis: world.redis, prefix: world.config.REDIS_PREFIX, tokens: new TenantTokens(world.sql, 0) });
    const call = async (path: string, body: unknown) => {
      const reply = await admin.request(`/v1/admin${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      expect(reply.status).toBe(201);
      return (await reply.json()) as Record<string, string>;
    };
    const customer = await call('/customers', { name: 'Anniversary Inc' });
    const team = await call('/teams', { customer_id: customer.id, name: 'Team' });
    const anchor = '2026-01-31T10:00:00.000Z';
    const subscription = await call('/subscriptions', { customer_id: customer.id, rate_plan_id: tenant.ratePlanId, effective_from: anchor, billing_period: 'anniversary' });
    expect(subscription).toMatchObject({ billing_period: 'anniversary', billing_anchor: anchor });

    const book = new SubscriptionBook(world.sql);
    await book.loadAll();
    const snapshot = book.find(tenant.tenantId, { customerId: customer.id, teamId: team.id, credentialId: 'cred_x' }, Date.UTC(2026, 2, 5));
    expect([new Date(snapshot!.periodStart).toISOString(), new Date(snapshot!.periodEnd).toISOString()]).toEqual(['2026-02-28T10:00:00.000Z', '2026-03-31T10:00:00.000Z']);

    const plans = new PlanCache(world.sql);
    await rollUp(
      world.sql,
      plans,
      stageEntries([
        ledgeredEvent({
          tenantId: tenant.tenantId,
          sessionId: undefined,
          recordedAt: Date.UTC(2026, 2, 5),
          attribution: { customerId: customer.id, teamId: team.id, agentId: undefined },
          subscription: { subscriptionId: subscription.id, ratePlanVersionId: tenant.ratePlanVersionId, periodStart: snapshot!.periodStart, periodEnd: snapshot!.periodEnd },
          cost: { total: 50_000_000n, tool: '*', breakdown: { tool: 50_000_000n } },
        }),
      ]),
    );
    const draft = await draftInvoice(world.sql, plans, tenant.tenantId, customer.id, Date.UTC(2026, 2, 5));
    expect([new Date(draft!.periodStart).toISOString(), draft!.invoice.total]).toEqual(['2026-02-28T10:00:00.000Z', '0.05']);

    const closed = await closeDuePeriods(world.sql, plans, { now: Date.UTC(2026, 3, 5), graceMs: DAY, lookbackMs: 400 * DAY, customerId: customer.id });
    expect(closed.map((d) => [d.period_start, d.period_end, d.total])).toEqual([
      ['2026-01-31T10:00:00.000Z', '2026-02-28T10:00:00.000Z', '0.00'],
      ['2026-02-28T10:00:00.000Z', '2026-03-31T10:00:00.000Z', '0.05'],
    ]);
  });
});
