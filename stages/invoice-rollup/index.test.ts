import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlanCache } from '../../store/rate-plans.js';
import { draftInvoice } from '../../store/invoices.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { seedSmall } from '../../test/support/billing.js';
import type { SeededTenant } from '../../ops/seed.js';
import { ledgeredEvent, stageEntries } from '../testing.js';
import type { LedgeredEvent } from '../../domain/flow.js';
import { invoiceRollupStage, rollUp, rollUpBlocks } from './index.js';

// Pattern 2 of the article, with its penalty: $5 per session including 3 calls, 0.05 per call.
const SESSION_PLAN = {
  tool_invocations: { '*': '0.05' },
  token_multipliers: { output_tokens: '0.000002' },
  base_session_fee: '5',
  included_tool_count: 3,
};

let world: Isolated;
let tenant: SeededTenant;
const MARCH = Date.UTC(2026, 2, 1);

beforeAll(async () => {
  world = await isolated('invoice-rollup');
  tenant = await seedSmall(world.sql, { pricing: SESSION_PLAN, customers: 1 });
});
afterAll(() => world.cleanup());

function event(sessionId: string, outputTokens: number, overrides: Partial<LedgeredEvent> = {}): LedgeredEvent {
  const customer = tenant.customers[0];
  const agent = customer.teams[0].agents[0];
  const token = BigInt(outputTokens) * 2000n;
  return ledgeredEvent({
    tenantId: tenant.tenantId,
    sessionId,
    outputTokens,
    inputTokens: 0,
    recordedAt: MARCH + 86_400_000,
    capCounters: [],
    attribution: { customerId: customer.id, teamId: customer.teams[0].id, agentId: agent.id },
    subscription: { subscriptionId: customer.subscriptionId, ratePlanVersionId: tenant.ratePlanVersionId, periodStart: MARCH, periodEnd: Date.UTC(2026, 3, 1) },
    cost: { total: 50_000_000n + token, tool: '*', breakdown: { tool: 50_000_000n, input_tokens: 0n, output_tokens: token, duration: 0n } },
    ...overrides,
  });
}

/** A tenant of its own on `pricing`, and its one customer's call in a session (1000 output tokens). */
async function freshSubscriber(pricing: Record<string, unknown>) {
  const fresh = await seedSmall(world.sql, { pricing, customers: 1 });
  const customer = fresh.customers[0];
  const on = (sessionId: string): LedgeredEvent =>
    event(sessionId, 1000, {
      tenantId: fresh.tenantId,
      attribution: { ...event(sessionId, 0).attribution, customerId: customer.id, teamId: customer.teams[0].id, agentId: customer.teams[0].agents[0].id },
      subscription: { ...event(sessionId, 0).subscription, subscriptionId: customer.subscriptionId, ratePlanVersionId: fresh.ratePlanVersionId },
    });
  return { fresh, customer, on };
}

describe('invoice-rollup', () => {
  it('keeps period aggregates exactly once and the draft invoice applies the session rules to them', async () => {
    const plans = new PlanCache(world.sql);
    // Session a: 5 calls (3 included, 2 billable); session b: 1 call; 1000 output tokens each.
    const events = [...Array.from({ length: 5 }, () => event('sess_a', 1000)), event('sess_b', 1000)];
    const first = stageEntries(events.slice(0, 4));
    const second = stageEntries(events.slice(4));
    await rollUp(world.sql, plans, first);
    await rollUp(world.sql, plans, second);
    await rollUp(world.sql, plans, first); // redelivered: changes nothing

    const [position] = await world.sql`SELECT calls, events, cost_nano FROM invoice_period_calls WHERE subscription_id = ${tenant.customers[0].subscriptionId}`;
    expect(position).toEqual({ calls: '6', events: '6', cost_nano: String(6n * 52_000_000n) });
    const draft = await draftInvoice(world.sql, plans, tenant.tenantId, tenant.customers[0].id, MARCH + 2 * 86_400_000);
    const byCode = Object.fromEntries(draft!.invoice.lines.map((line) => [line.code, line.amount_nano]));
    // Usage 6 x 0.05 + 6,000 tokens x 0.000002 = 0.312; included: 3 + 1 calls x 0.05 = -0.20; 2 sessions x 5.
    expect(byCode.tool).toBe(300_000_000n);
    expect(byCode.output_tokens).toBe(12_000_000n);
    expect(byCode.included_calls).toBe(-200_000_000n);
    expect(byCode.session_fee).toBe(10_000_000_000n);
    expect(draft!.invoice.total).toBe('10.11');
    expect(draft!.invoice.subtotal_nano).toBe(312_000_000n);
  });

  it('counts session control events toward the period cost (zero) without advancing the call position', async () => {
    const plans = new PlanCache(world.sql);
    const control = event('sess_c', 0, { eventType: 'session.completed', cost: { total: 0n, tool: '', breakdown: { tool: 0n, input_tokens: 0n, output_tokens: 0n, duration: 0n } } });
    await rollUp(world.sql, plans, stageEntries([control]));
    const [position] = await world.sql`SELECT calls, events FROM invoice_period_calls WHERE subscription_id = ${tenant.customers[0].subscriptionId}`;
    expect(position).toEqual({ calls: '6', events: '7' });
  });

  it('applies blocks once each, one applied_blocks row per block, and grouped over the blocks of a batch as if event by event', async () => {
    const plans = new PlanCache(world.sql);
    const { fresh, customer, on } = await freshSubscriber(SESSION_PLAN);
    // The same events as the first test: session a 5 calls across two blocks, session b 1 call as a single (split off its block).
    const a = { origin: `a_${fresh.tenantId}`, events: [on('sess_a'), on('sess_a'), on('sess_a')] };
    const b = { origin: `b_${fresh.tenantId}`, events: [on('sess_a'), on('sess_a')] };
    const single = { origin: `one_${fresh.tenantId}`, events: [on('sess_b')] };
    expect(await rollUpBlocks(world.sql, plans, [a, b, single])).toEqual([[{}, {}, {}], [{}, {}], [{}]]);
    // Redelivered, whole or in part: nothing moves.
    await rollUpBlocks(world.sql, plans, [a, b, single]);
    await rollUpBlocks(world.sql, plans, [b]);

    const [position] = await world.sql`SELECT calls, events, cost_nano FROM invoice_period_calls WHERE subscription_id = ${customer.subscriptionId}`;
    expect(position).toEqual({ calls: '6', events: '6', cost_nano: String(6n * 52_000_000n) });
    const [session] = await world.sql`SELECT calls FROM invoice_session_calls WHERE subscription_id = ${customer.subscriptionId} AND session_id = 'sess_a'`;
    expect(session).toEqual({ calls: '5' });
    const draft = await draftInvoice(world.sql, plans, fresh.tenantId, customer.id, MARCH + 2 * 86_400_000);
    expect(draft!.invoice.total).toBe('10.11');
    expect(draft!.invoice.subtotal_nano).toBe(312_000_000n);

    const [{ blocks }] = await world.sql<{ blocks: string }[]>`SELECT count(*) AS blocks FROM applied_blocks WHERE tenant_id = ${fresh.tenantId} AND stage = 'invoice-rollup'`;
    const [{ singles }] = await world.sql<{ singles: string }[]>`SELECT count(*) AS singles FROM invoice_applied WHERE tenant_id = ${fresh.tenantId}`;
    expect([Number(blocks), Number(singles)]).toEqual([2, 1]);
  });

  it('counts every call once when two workers create the same new session and period rows at the same time', async () => {
    const plans = new PlanCache(world.sql);
    const { fresh, customer, on } = await freshSubscriber(SESSION_PLAN);
    const rounds = 8;
    for (let r = 0; r < rounds; r++) {
      const x = { origin: `x${r}_${fresh.tenantId}`, events: [on(`race_${r}`), on(`race_${r}`), on(`race_${r}`)] };
      const y = { origin: `y${r}_${fresh.tenantId}`, events: [on(`race_${r}`), on(`race_${r}`)] };
      await Promise.all([rollUpBlocks(world.sql, plans, [x]), rollUpBlocks(world.sql, plans, [y])]);
    }
    const sessions = await world.sql`SELECT session_id, calls FROM invoice_session_calls WHERE subscription_id = ${customer.subscriptionId} ORDER BY session_id`;
    expect(sessions).toEqual(Array.from({ length: rounds }, (_, r) => ({ session_id: `race_${r}`, calls: '5' })));
    const [position] = await world.sql`SELECT calls, events FROM invoice_period_calls WHERE subscription_id = ${customer.subscriptionId}`;
    expect(position).toEqual({ calls: String(5 * rounds), events: String(5 * rounds) });
    // Each session's first 3 calls are included, whichever worker counted them.
    const [usage] = await world.sql`SELECT counters FROM invoice_usage WHERE subscription_id = ${customer.subscriptionId} AND kind = 'tool'`;
    expect(usage.counters).toMatchObject({ calls: String(5 * rounds), included_calls: String(3 * rounds) });
  });

  it('keeps no session positions under a plan without session rules, and bills its calls the same', async () => {
    const plans = new PlanCache(world.sql);
    const { fresh, customer, on } = await freshSubscriber({ tool_invocations: { '*': '0.05' }, token_multipliers: { output_tokens: '0.000002' } });
    const a = { origin: `plain_a_${fresh.tenantId}`, events: [on('sess_a'), on('sess_a'), on('sess_b')] };
    const b = { origin: `plain_b_${fresh.tenantId}`, events: [on('sess_a'), on('sess_c')] };
    await rollUpBlocks(world.sql, plans, [a, b]);
    await rollUpBlocks(world.sql, plans, [b]); // redelivered: changes nothing

    const [{ sessions }] = await world.sql<{ sessions: string }[]>`SELECT count(*) AS sessions FROM invoice_session_calls WHERE subscription_id = ${customer.subscriptionId}`;
    expect(sessions).toBe('0');
    const [position] = await world.sql`SELECT calls, events FROM invoice_period_calls WHERE subscription_id = ${customer.subscriptionId}`;
    expect(position).toEqual({ calls: '5', events: '5' });
    const draft = await draftInvoice(world.sql, plans, fresh.tenantId, customer.id, MARCH + 2 * 86_400_000);
    const byCode = Object.fromEntries(draft!.invoice.lines.map((line) => [line.code, line.amount_nano]));
    // 5 calls x 0.05 + 5,000 tokens x 0.000002; no session fee, nothing included.
    expect(byCode.tool).toBe(250_000_000n);
    expect(byCode.output_tokens).toBe(10_000_000n);
    expect(byCode.included_calls).toBeUndefined();
    expect(draft!.invoice.subtotal_nano).toBe(260_000_000n);
  });

  it('bills the calls ledgered while their scope was over a hard cap: they happened; the pause stops the next call, not the bill', async () => {
    const plans = new PlanCache(world.sql);
    const { fresh, customer, on } = await freshSubscriber({ tool_invocations: { '*': '0.05' }, token_multipliers: { output_tokens: '0.000002' } });
    const overCap = (sessionId: string) => ({ ...on(sessionId), overCap: true });
    await rollUpBlocks(world.sql, plans, [{ origin: `over_cap_${fresh.tenantId}`, events: [on('sess_a'), overCap('sess_a'), overCap('sess_b')] }]);
    const draft = await draftInvoice(world.sql, plans, fresh.tenantId, customer.id, MARCH + 2 * 86_400_000);
    const byCode = Object.fromEntries(draft!.invoice.lines.map((line) => [line.code, line.amount_nano]));
    expect(byCode.tool).toBe(150_000_000n);
    expect(draft!.invoice.subtotal_nano).toBe(156_000_000n);
  });

  it('takes blocks and batches of up to 20,000 events, lingering up to a second for more', () => {
    expect(invoiceRollupStage).toMatchObject({ name: 'invoice-rollup', batchSize: 20_000, lingerMs: 1000 });
  });
});
