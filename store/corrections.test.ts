import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerPartitionKey } from '../domain/flow.js';
import { partitionedKey, partitionOf } from '../pipeline/keys.js';
import type { SeededTenant } from '../ops/seed.js';
import { ARTICLE_PLAN, seedSmall } from '../test/support/billing.js';
import { startInProcessPipeline, type InProcessPipeline } from '../test/support/in-process-pipeline.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { waitFor } from '../test/support/pipeline.js';
import { capCounterKey } from './caps.js';
import { closePeriod, draftInvoice, pendingAdjustments } from './invoices.js';
import { PlanCache } from './rate-plans.js';
import { reconcile } from './reconcile.js';

let world: Isolated;
let tenant: SeededTenant;
let other: SeededTenant;
let pipeline: InProcessPipeline;

beforeAll(async () => {
  world = await isolated('corrections', { clickhouse: true });
  tenant = await seedSmall(world.sql, {
    pricing: ARTICLE_PLAN,
    customers: 1,
    costModel: { tools: { transform_schema: '0.002' }, default_model: { input_tokens: '0.0000001', output_tokens: '0.0000002' }, compute_per_ms: '0.0000001' },
    caps: [{ scope: 'customer', period: 'month', limitNano: 1_000_000_000_000n, action: 'alert' }],
  });
  other = await seedSmall(world.sql, { pricing: ARTICLE_PLAN, customers: 1, name: 'other tenant' });
  pipeline = await startInProcessPipeline(world);
}, 60_000);
afterAll(async () => {
  await pipeline?.stop();
  await world?.cleanup();
});

const post = (path: string, token: string, body: unknown) =>
  fetch(`${pipeline.baseUrl}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
const correct = (eventId: string, action: 'void' | 'amend', body: unknown = {}, token = tenant.adminToken) =>
  post(`/v1/admin/events/${encodeURIComponent(eventId)}/${action}`, token, body);

const sum = (rows: { s: string | null }[]) => BigInt(rows[0].s ?? '0');

async function clickhouseTotals(): Promise<{ events: bigint; cost: bigint; cogs: bigint; tokensIn: bigint }> {
  const result = await world.clickhouse!.query({
    query: `SELECT count() AS events, toString(sum(cost_nano)) AS cost, toString(sum(cogs_nano)) AS cogs, toString(sum(input_tokens)) AS tokens_in
            FROM invocations FINAL WHERE tenant_id = '${tenant.tenantId}'`,
    format: 'JSONEachRow',
  });
  const [row] = await result.json<{ events: string; cost: string; cogs: string; tokens_in: string }>();
  return { events: BigInt(row.events), cost: BigInt(row.cost), cogs: BigInt(row.cogs), tokensIn: BigInt(row.tokens_in) };
}

describe('corrections', () => {
  it('void and amend keep the ledger, the invoice, the session, COGS, the spend counter and ClickHouse equal', async () => {
    const agent = tenant.customers[0].teams[0].agents[0];
    const now = Date.now();
    // Prepaid credits pay for the usage as it is rated, and get back what a correction takes back.
    expect((await post(`/v1/admin/customers/${tenant.customers[0].id}/credit-grants`, tenant.adminToken, { amount: '100', currency: 'USD', source: 'purchase' })).status).toBe(201);
    const ids = Array.from({ length: 6 }, (_, i) => `corr_${now}_${i}`);
    const reply = await post('/v1/events', tenant.ingestToken, {
      events: ids.map((event_id, i) => ({
        event_id,
        event_type: 'mcp.tool_invoked',
        api_key: agent.apiKey,
        session_id: 'sess_corr',
        tool_name: i % 2 ? 'transform_schema' : 'read_database',
        execution_duration_ms: 1000 + i * 30_000,
        execution_status: i === 5 ? 'FAILED' : 'SUCCESS',
        input_tokens: 2400,
        output_tokens: 150,
        recorded_timestamp: new Date(now - 60_000).toISOString(),
      })),
    });
    expect(await reply.json()).toMatchObject({ accepted: 6, rejected: [] });
    await pipeline.drain();
    await waitFor(async () => (await clickhouseTotals()).events === 6n, 30_000, 'ClickHouse has the 6 events');

    // Void one, amend one twice (its tokens up, then its duration), void an amended one.
    expect((await correct(ids[0], 'void', { reason: 'test call' })).status).toBe(201);
    const amended = await correct(ids[1], 'amend', { quantities: { input_tokens: 100_000 } });
    expect(amended.status).toBe(201);
    const body = (await amended.json()) as { reversal_event_id: string; amendment_event_id: string; delta: string; closed_invoice: null };
    expect(body).toMatchObject({ reversal_event_id: `${ids[1]}~rev1`, amendment_event_id: `${ids[1]}~amd1`, delta: '0.0976', closed_invoice: null });
    expect((await correct(ids[1], 'amend', { quantities: { execution_duration_ms: 400_000 } })).status).toBe(201);
    expect((await correct(ids[5], 'amend', { quantities: { output_tokens: 0 } })).status).toBe(201);
    expect((await correct(ids[5], 'void')).status).toBe(201);

    // Refusals: twice, unknown, another tenant's, negative, a correction row itself.
    expect((await correct(ids[0], 'void')).status).toBe(409);
    expect((await correct(ids[5], 'amend', { quantities: { input_tokens: 1 } })).status).toBe(409);
    expect((await correct('evt_unknown', 'void')).status).toBe(404);
    expect((await correct(ids[2], 'void', {}, other.adminToken)).status).toBe(404);
    expect((await correct(`${ids[1]}~rev1`, 'void')).status).toBe(404);
    const negative = await correct(ids[2], 'amend', { quantities: { input_tokens: -5 } });
    expect(negative.status).toBe(400);
    expect(((await negative.json()) as { error: { details: { path: string }[] } }).error.details[0].path).toBe('quantities.input_tokens');

    const sql = world.sql;
    const t = tenant.tenantId;
    const ledger = sum(await sql`SELECT sum(cost_nano)::text AS s FROM usage_ledger WHERE tenant_id = ${t}`);
    const [{ rows }] = await sql`SELECT count(*)::int AS rows FROM usage_ledger WHERE tenant_id = ${t}`;
    // 6 events, 2 voids (1 row each), 3 amendments (2 rows each).
    expect(rows).toBe(14);
    // What stands: events 2, 3, 4 as sent, event 1 amended twice; 0 and 5 voided.
    const standing = sum(await sql`
      SELECT sum(cost_nano)::text AS s FROM usage_ledger
      WHERE tenant_id = ${t} AND event_id = ANY(${[ids[2], ids[3], ids[4], `${ids[1]}~amd2`]})`);
    expect(ledger).toBe(standing);

    // The invoice: its usage lines add up to the ledger; the calls counted are the 4 standing.
    const draft = await draftInvoice(sql, new PlanCache(sql), t, tenant.customers[0].id, now);
    expect(draft!.invoice.subtotal_nano).toBe(ledger);
    const [position] = await sql`SELECT calls, events, cost_nano::text FROM invoice_period_calls WHERE tenant_id = ${t}`;
    expect(position).toEqual({ calls: '4', events: '14', cost_nano: ledger.toString() });
    const toolCalls = draft!.invoice.lines.filter((l) => l.code === 'tool').reduce((n, l) => n + BigInt(l.quantity), 0n);
    expect(toolCalls).toBe(4n);

    // The session and COGS.
    const [session] = await sql`SELECT tool_calls, errors, cost_nano::text FROM mcp_sessions WHERE tenant_id = ${t} AND session_id = 'sess_corr'`;
    expect(session).toEqual({ tool_calls: '4', errors: '0', cost_nano: ledger.toString() });
    const [cogs] = await sql`SELECT sum(price_nano)::text AS price, sum(cogs_nano)::text AS cogs, sum(events)::int AS n FROM cogs_rollup WHERE tenant_id = ${t} AND dimension = 'customer'`;
    expect(cogs.price).toBe(ledger.toString());
    expect(cogs.n).toBe(14);

    // The credits drawn, net of what the corrections returned, are the ledger's total.
    const [{ balance }] = await sql`SELECT sum(remaining_nano)::text AS balance FROM credit_grants WHERE tenant_id = ${t}`;
    expect(BigInt(balance)).toBe(100_000_000_000n - ledger);

    // The spend cap's running total.
    const cap = tenant.caps[0];
    const key = partitionedKey(world.config.REDIS_PREFIX, capCounterKey({ ...cap, tenantId: t } as never, new Date(now - 60_000).toISOString().slice(0, 7)), partitionOf(customerPartitionKey(t, tenant.customers[0].id), 1));
    expect(BigInt((await world.redis.get(key)) ?? '0')).toBe(ledger);

    // ClickHouse, through the analytics backlog: the same rows and sums, and every rollup reconciled.
    await waitFor(async () => (await clickhouseTotals()).events === 14n, 30_000, 'ClickHouse has the correction rows');
    const ch = await clickhouseTotals();
    expect(ch.cost).toBe(ledger);
    expect(ch.cogs.toString()).toBe(cogs.cogs);
    const tokensIn = sum(await sql`SELECT sum(input_tokens)::text AS s FROM usage_ledger WHERE tenant_id = ${t}`);
    expect(ch.tokensIn).toBe(tokensIn);
    const day = new Date(now - 60_000).toISOString().slice(0, 10);
    // An insert reaches invocations a moment before its materialized views: poll until they agree.
    const differences = async () => (await reconcile(sql, world.clickhouse!, { from: day, to: day, tenantId: t })).differences;
    await waitFor(async () => (await differences()).length === 0, 15_000, 'the rollups agree with the ledger').catch(() => {});
    expect(await differences()).toEqual([]);
  }, 120_000);

  it('a correction to a closed period becomes a credit note, or an adjustment on the next invoice; below zero, a credit carried to the one after', async () => {
    const sql = world.sql;
    const t = tenant.tenantId;
    const customerId = tenant.customers[0].id;
    const [{ period_start: start }] = await sql`SELECT DISTINCT period_start FROM usage_ledger WHERE tenant_id = ${t}`;
    const end = Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 1);
    const plans = new PlanCache(sql);
    const closed = await closePeriod(sql, plans, t, customerId, { start: start.getTime(), end });
    expect(closed.status).toBe('closed');
    const invoice = closed.status === 'closed' ? closed.invoice : undefined;
    const [{ standing }] = await sql`SELECT event_id AS standing FROM usage_ledger WHERE tenant_id = ${t} AND correction IS NULL AND event_id LIKE '%_2'`;
    const [{ cost }] = await sql`SELECT cost_nano::text AS cost FROM usage_ledger WHERE tenant_id = ${t} AND event_id = ${standing}`;

    const reply = await correct(standing, 'void', { settle: 'credit_note' });
    expect(reply.status).toBe(201);
    const body = (await reply.json()) as { closed_invoice: string; credit_note: { kind: string; number: string; total: string; corrects_invoice: string; lines: { adjusts_invoice: string }[] } };
    expect(body.closed_invoice).toBe(invoice!.number);
    expect(body.credit_note).toMatchObject({ kind: 'credit_note', number: 'CN-000001', corrects_invoice: invoice!.number });
    // The credit note takes back what the invoice billed for the call, rounded line by line.
    expect(Number(body.credit_note.total)).toBeLessThan(0);
    expect(body.credit_note.lines.every((l) => l.adjusts_invoice === invoice!.number)).toBe(true);
    expect(Math.abs(Number(body.credit_note.total) + Number(cost) / 1e9)).toBeLessThanOrEqual(0.02);
    // Settled by the credit note: the next invoice has nothing more to bill for that period.
    expect(await pendingAdjustments(sql, plans, t, customerId, new Date(end))).toEqual([]);

    // Without a credit note, the next invoice carries it as adjustment lines naming the period.
    const [{ next }] = await sql`SELECT event_id AS next FROM usage_ledger WHERE tenant_id = ${t} AND correction IS NULL AND event_id LIKE '%_3'`;
    const plain = (await (await correct(next, 'void')).json()) as { closed_invoice: string; credit_note: null };
    expect(plain).toMatchObject({ closed_invoice: invoice!.number, credit_note: null });
    const pending = await pendingAdjustments(sql, plans, t, customerId, new Date(end));
    expect(pending.length).toBeGreaterThan(0);
    expect(pending.every((l) => l.adjusts_invoice === invoice!.number && l.period_start === start.toISOString())).toBe(true);

    // The next period has no usage: the adjustment takes its invoice below zero. The customer is
    // owed the difference, carried to the invoice after, not dropped.
    const month = (from: number) => ({ start: from, end: Date.UTC(new Date(from).getUTCFullYear(), new Date(from).getUTCMonth() + 1, 1) });
    const second = await closePeriod(sql, plans, t, customerId, month(end));
    const credit = second.status === 'closed' ? second.invoice : undefined;
    const owed = -Number(credit!.adjustments_total);
    expect(owed).toBeGreaterThan(0);
    expect(credit).toMatchObject({ period_total: '0.00', total: `-${owed.toFixed(2)}`, amount_due: '0.00', credit_carried_forward: owed.toFixed(2) });
    expect(credit!.credit_carried_from).toBeUndefined();
    const draft = (await (await fetch(`${pipeline.baseUrl}/v1/customers/${customerId}/invoices/current?at=${new Date(month(end).end + 1000).toISOString()}`, {
      headers: { authorization: `Bearer ${tenant.ingestToken}` },
    })).json()) as { credit_carried: string };
    expect(draft.credit_carried).toBe(owed.toFixed(2));
    // The invoice after takes it off, once; still nothing to bill, so it carries it on.
    const third = await closePeriod(sql, plans, t, customerId, month(month(end).end));
    const after = third.status === 'closed' ? third.invoice : undefined;
    expect(after!.lines.filter((l) => l.code === 'credit_carried')).toEqual([
      expect.objectContaining({ description: `Credit carried from ${credit!.number}`, amount: `-${owed.toFixed(2)}` }),
    ]);
    expect(after).toMatchObject({ total: `-${owed.toFixed(2)}`, amount_due: '0.00', credit_carried_forward: owed.toFixed(2), credit_carried_from: [credit!.number] });
  }, 60_000);

  it('a customer whose prepaid credits run out is refused by authorize; a void that gives credits back, or a new grant, lets it through', async () => {
    const customer = other.customers[0];
    const agent = customer.teams[0].agents[0];
    expect((await post(`/v1/admin/customers/${customer.id}/credit-grants`, other.adminToken, { amount: '0.05', currency: 'USD', source: 'promotion' })).status).toBe(201);
    const authorize = async () => (await (await post('/v1/authorize', other.ingestToken, { api_key: agent.apiKey })).json()) as { allowed: boolean; code?: string };
    expect(await authorize()).toMatchObject({ allowed: true });
    const event = (i: number) => ({
      event_id: `credits_${i}`, event_type: 'mcp.tool_invoked', api_key: agent.apiKey, tool_name: 'transform_schema',
      execution_duration_ms: 100, execution_status: 'SUCCESS', input_tokens: 0, output_tokens: 0, recorded_timestamp: new Date().toISOString(),
    });
    expect((await post('/v1/events', other.ingestToken, [event(1)])).status).toBe(202);
    await pipeline.drain();
    await waitFor(async () => (await authorize()).allowed === false, 10_000, 'authorize refuses the customer');
    expect(await authorize()).toMatchObject({ allowed: false, code: 'paused' });
    // Voiding the call gives its credits back: the pause lifts as a grant's would, on the record.
    expect((await correct('credits_1', 'void', {}, other.adminToken)).status).toBe(201);
    expect(await authorize()).toMatchObject({ allowed: true });
    const [lift] = await world.sql<{ lifted_by: string; lift_reason: string }[]>`
      SELECT lifted_by, lift_reason FROM cap_pauses WHERE tenant_id = ${other.tenantId} AND cap_id = 'credits:USD'`;
    expect(lift).toEqual({ lifted_by: 'admin', lift_reason: 'credits returned by the correction of credits_1' });
    // Spent again, paused again; a new grant lets it through.
    expect((await post('/v1/events', other.ingestToken, [event(2)])).status).toBe(202);
    await pipeline.drain();
    await waitFor(async () => (await authorize()).allowed === false, 10_000, 'authorize refuses the customer again');
    expect((await post(`/v1/admin/customers/${customer.id}/credit-grants`, other.adminToken, { amount: '10', currency: 'USD', source: 'purchase' })).status).toBe(201);
    expect(await authorize()).toMatchObject({ allowed: true });
  }, 60_000);
});
