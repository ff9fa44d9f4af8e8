import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STREAMS } from '../../store/streams.js';
import { newId } from '../../store/credentials.js';
import { PlanCache } from '../../store/rate-plans.js';
import { SubscriptionBook } from '../../store/subscriptions.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { ARTICLE_PLAN, seedSmall, usageEvent } from '../../test/support/billing.js';
import type { SeededTenant } from '../../ops/seed.js';
import { attachSubscriptions } from '../subscription-snapshot/index.js';
import { stageEntries } from '../testing.js';
import type { AttributedEvent, PricedEvent, RejectedEvent, ResolvedEvent } from '../../domain/flow.js';
import { priceBatch } from './index.js';
import { watchedToolRegistry } from '../../store/mcp-tools.js';
import type { ControlMessage } from '../../pipeline/control.js';

let world: Isolated;
let tenant: SeededTenant;

beforeAll(async () => {
  world = await isolated('price');
  tenant = await seedSmall(world.sql, { subscriptionsFrom: new Date('2026-01-01T00:00:00Z') });
});
afterAll(() => world.cleanup());

function resolved(customerIndex: number, overrides: Partial<ResolvedEvent> = {}): ResolvedEvent {
  const customer = tenant.customers[customerIndex];
  const team = customer.teams[0];
  const agent = team.agents[0];
  return {
    ...usageEvent(tenant.tenantId, agent),
    attribution: { customerId: customer.id, teamId: team.id, agentId: agent.id, credentialId: 'key_x' },
    ...overrides,
  };
}

async function rate(events: ResolvedEvent[]): Promise<(PricedEvent | RejectedEvent)[]> {
  const book = new SubscriptionBook(world.sql);
  await book.loadAll();
  const attached = await attachSubscriptions(book, stageEntries(events));
  const plans = new PlanCache(world.sql);
  const out: (PricedEvent | RejectedEvent)[] = [];
  for (const result of attached) {
    const output = result.outputs![0];
    if (output.stream === STREAMS.rejected) {
      out.push(output.payload as RejectedEvent);
      continue;
    }
    const [priced] = await priceBatch(plans, stageEntries([output.payload as AttributedEvent]));
    out.push(priced.outputs![0].payload as PricedEvent);
  }
  return out;
}

describe('subscription-snapshot and price', () => {
  it("prices the article's worked example exactly, with the breakdown per dimension", async () => {
    const at = Date.UTC(2026, 2, 31, 14, 26, 59);
    const [priced] = (await rate([resolved(0, { recordedAt: at })])) as PricedEvent[];
    // transform_schema 0.10 + 2,400 x 0.000001 + 150 x 0.000002 + 0.847 s in the first bucket 0.10
    expect(priced.cost.total).toBe(202_700_000n);
    expect(priced.cost.breakdown).toEqual({ tool: 100_000_000n, input_tokens: 2_400_000n, output_tokens: 300_000n, duration: 100_000_000n });
    expect(priced.subscription).toMatchObject({
      subscriptionId: tenant.customers[0].subscriptionId,
      ratePlanVersionId: tenant.ratePlanVersionId,
      ratePlanVersion: 1,
      currency: 'USD',
      periodStart: Date.UTC(2026, 2, 1),
      periodEnd: Date.UTC(2026, 3, 1),
    });
  });

  it('rates events before and after a mid-month plan change by their own plan version', async () => {
    const customer = tenant.customers[1];
    const change = new Date('2026-03-15T12:00:00Z');
    const v2 = newId('planv');
    const v2Pricing = { ...ARTICLE_PLAN, tool_invocations: { ...ARTICLE_PLAN.tool_invocations, transform_schema: 0.25 } };
    await world.sql.begin(async (tx) => {
      await tx`INSERT INTO rate_plan_versions (id, tenant_id, rate_plan_id, version, pricing)
               VALUES (${v2}, ${tenant.tenantId}, ${tenant.ratePlanId}, 2, ${tx.json(v2Pricing)})`;
      await tx`UPDATE subscriptions SET effective_to = ${change} WHERE id = ${customer.subscriptionId}`;
      await tx`INSERT INTO subscriptions (id, tenant_id, customer_id, rate_plan_version_id, effective_from, supersedes)
               VALUES (${newId('sub')}, ${tenant.tenantId}, ${customer.id}, ${v2}, ${change}, ${customer.subscriptionId})`;
    });
    const before = resolved(1, { recordedAt: change.getTime() - 1 });
    const after = resolved(1, { recordedAt: change.getTime() });
    const [p1, p2] = (await rate([before, after])) as PricedEvent[];
    expect(p1.subscription.ratePlanVersion).toBe(1);
    expect(p1.cost.breakdown.tool).toBe(100_000_000n);
    expect(p2.subscription.ratePlanVersion).toBe(2);
    expect(p2.subscription.ratePlanVersionId).toBe(v2);
    expect(p2.cost.breakdown.tool).toBe(250_000_000n);
  });

  it('prefers an agent-level subscription to the customer one', async () => {
    const customer = tenant.customers[0];
    const agent = customer.teams[0].agents[0];
    const subscriptionId = newId('sub');
    await world.sql`INSERT INTO subscriptions (id, tenant_id, customer_id, agent_id, rate_plan_version_id, effective_from)
                    VALUES (${subscriptionId}, ${tenant.tenantId}, ${customer.id}, ${agent.id}, ${tenant.ratePlanVersionId}, '2026-02-01')`;
    const [priced] = (await rate([resolved(0, { recordedAt: Date.UTC(2026, 2, 2) })])) as PricedEvent[];
    expect(priced.subscription.subscriptionId).toBe(subscriptionId);
  });

  it('gives each event the billing period of its own recorded time, back and forth across periods in one batch', async () => {
    const book = new SubscriptionBook(world.sql);
    await book.loadAll();
    const times = [Date.UTC(2026, 2, 31, 23, 59, 59, 999), Date.UTC(2026, 3, 1), Date.UTC(2026, 2, 5), Date.UTC(2026, 2, 6)];
    const attached = await attachSubscriptions(book, stageEntries(times.map((recordedAt) => resolved(0, { recordedAt }))));
    const periods = attached.map((r) => (r.outputs![0].payload as AttributedEvent).subscription);
    expect(periods.map((p) => [p.periodStart, p.periodEnd])).toEqual([
      [Date.UTC(2026, 2, 1), Date.UTC(2026, 3, 1)],
      [Date.UTC(2026, 3, 1), Date.UTC(2026, 4, 1)],
      [Date.UTC(2026, 2, 1), Date.UTC(2026, 3, 1)],
      [Date.UTC(2026, 2, 1), Date.UTC(2026, 3, 1)],
    ]);
    expect(new Set(periods.map((p) => p.subscriptionId)).size).toBe(1);
  });

  it('keeps a loaded plan for reading without an await, and none for a subscription that failed to load', async () => {
    const plans = new PlanCache(world.sql);
    const subscriptionId = tenant.customers[0].subscriptionId;
    expect(plans.loadedFor(tenant.tenantId, subscriptionId)).toBeUndefined();
    const plan = await plans.forSubscription(tenant.tenantId, subscriptionId);
    expect(plans.loadedFor(tenant.tenantId, subscriptionId)).toBe(plan);
    await expect(plans.forSubscription(tenant.tenantId, 'sub_missing')).rejects.toThrow(/does not exist/);
    expect(plans.loadedFor(tenant.tenantId, 'sub_missing')).toBeUndefined();
  });

  it('rejects an event with no subscription active at its recorded time, saying why', async () => {
    const [rejected] = (await rate([resolved(0, { recordedAt: Date.UTC(2025, 5, 1) })])) as RejectedEvent[];
    expect(rejected.code).toBe('no_subscription');
    expect(rejected.reason).toContain('2025-06-01T00:00:00.000Z');
  });

  it('costs nothing for a session control event', async () => {
    const [priced] = (await rate([resolved(0, { eventType: 'session.completed', toolName: undefined, recordedAt: Date.UTC(2026, 2, 3) })])) as PricedEvent[];
    expect(priced.cost.total).toBe(0n);
  });
});

/** Issue 9, defect 3: a cost beyond what 64 bits hold was wrapped (ledgered at $0.11); now it is rejected, at the exact limit. */
describe('price: the per-event cost bound', () => {
  it('prices an event at exactly MAX_EVENT_COST_NANO and rejects one nano-unit more, with the exact cost', async () => {
    const customer = tenant.customers[1];
    const team = customer.teams[1];
    const agent = team.agents[1];
    const planVersion = newId('planv');
    const ratePlanId = newId('plan');
    // 9,223,371,036.854775807 per call + 10^12 input tokens at one nano each = 2^63 - 1 nano exactly.
    const pricing = {
      tool_invocations: { '*': '9223371036.854775807', costlier: '9223371036.854775808' },
      token_multipliers: { input_tokens: '0.000000001', output_tokens: '0' },
    };
    await world.sql.begin(async (tx) => {
      await tx`INSERT INTO rate_plans (id, tenant_id, name, currency) VALUES (${ratePlanId}, ${tenant.tenantId}, 'huge', 'USD')`;
      await tx`INSERT INTO rate_plan_versions (id, tenant_id, rate_plan_id, version, pricing)
               VALUES (${planVersion}, ${tenant.tenantId}, ${ratePlanId}, 1, ${tx.json(pricing)})`;
      await tx`INSERT INTO subscriptions (id, tenant_id, customer_id, agent_id, rate_plan_version_id, effective_from)
               VALUES (${newId('sub')}, ${tenant.tenantId}, ${customer.id}, ${agent.id}, ${planVersion}, '2026-01-01')`;
    });
    const at = (toolName: string) =>
      resolved(1, {
        recordedAt: Date.UTC(2026, 2, 5),
        toolName,
        inputTokens: 1e12,
        outputTokens: 1e12,
        durationMs: 1e12,
        attribution: { customerId: customer.id, teamId: team.id, agentId: agent.id, credentialId: 'key_x' },
      });
    const [atLimit, beyond] = await rate([at('read_database'), at('costlier')]);
    expect((atLimit as PricedEvent).cost.total).toBe(2n ** 63n - 1n);
    expect(beyond).toMatchObject({ stage: 'price', code: 'cost_out_of_range' });
    expect((beyond as RejectedEvent).reason).toContain('9223372036.854775808 USD');
  });
});

describe("price: the MCP server's tool aliases (/v1/admin/mcp-servers/{id}/tools)", () => {
  it('prices an alias of a registered tool as the tool, on that server only, and follows mcp-tools.changed', async () => {
    const server = newId('mcp');
    await world.sql`INSERT INTO mcp_servers (id, tenant_id, name) VALUES (${server}, ${tenant.tenantId}, 'DatabaseToolkit')`;
    const toolId = newId('tool');
    await world.sql`INSERT INTO mcp_tools (id, tenant_id, mcp_server_id, name, aliases)
                    VALUES (${toolId}, ${tenant.tenantId}, ${server}, 'transform_schema', ${['xform_v1', 'transform']})`;
    const listeners: ((message: ControlMessage) => void | Promise<void>)[] = [];
    const tools = await watchedToolRegistry(world.sql, async (listener) => {
      listeners.push(listener);
    });
    const plans = new PlanCache(world.sql);
    const book = new SubscriptionBook(world.sql);
    await book.loadAll();
    const price = async (overrides: Partial<ResolvedEvent>) => {
      const [attached] = await attachSubscriptions(book, stageEntries([resolved(0, { recordedAt: Date.UTC(2026, 2, 5), inputTokens: 0, outputTokens: 0, ...overrides })]));
      const [priced] = await priceBatch(plans, stageEntries([attached.outputs![0].payload as AttributedEvent]), tools);
      return (priced.outputs![0].payload as PricedEvent);
    };

    const aliased = await price({ toolName: 'xform_v1', mcpServerId: server });
    // transform_schema's 0.10 (not "*" 0.002) + the first duration bucket 0.10
    expect(aliased.cost).toMatchObject({ tool: 'transform_schema', breakdown: { tool: 100_000_000n } });
    expect(aliased.toolName).toBe('xform_v1'); // the ledger keeps the name the event sent
    expect((await price({ toolName: 'xform_v1', mcpServerId: 'mcp_other' })).cost).toMatchObject({ tool: 'xform_v1', breakdown: { tool: 2_000_000n } });
    expect((await price({ toolName: 'xform_v1', mcpServerId: undefined })).cost).toMatchObject({ tool: 'xform_v1', breakdown: { tool: 2_000_000n } });

    await world.sql`UPDATE mcp_tools SET aliases = ${['transform']} WHERE id = ${toolId}`;
    // Cached until the admin API announces the change.
    expect((await price({ toolName: 'xform_v1', mcpServerId: server })).cost.tool).toBe('transform_schema');
    for (const listener of listeners) await listener({ type: 'mcp-tools.changed', tenantId: tenant.tenantId });
    expect((await price({ toolName: 'xform_v1', mcpServerId: server })).cost).toMatchObject({ tool: 'xform_v1', breakdown: { tool: 2_000_000n } });
    expect((await price({ toolName: 'transform', mcpServerId: server })).cost.tool).toBe('transform_schema');
  });
});
