import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import type { Config } from '../pipeline/config.js';
import { encodePayload } from '../pipeline/codec.js';
import { runStage, type RunningStage } from '../pipeline/harness.js';
import { partitionedKey, partitionOf } from '../pipeline/keys.js';
import { createLogger } from '../pipeline/logger.js';
import { Metrics } from '../pipeline/metrics.js';
import { customerPartitionKey, type PricedEvent } from '../domain/flow.js';
import { AttributionResolver } from '../store/attribution.js';
import type { SpendCap } from '../store/caps.js';
import { newId } from '../store/credentials.js';
import { STREAMS } from '../store/streams.js';
import { TenantTokens } from '../store/tenant-tokens.js';
import { capCheckStage } from '../stages/cap-check/index.js';
import type { SeededAgent, SeededTenant } from '../ops/seed.js';
import { seedSmall, usageEvent } from '../test/support/billing.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { createAuthorizeRoutes, type AuthorizeReply } from './authorize.js';
import { createApp } from './server.js';

/**
 * Issue 14: rolling-window caps, caps on each session of a plan, and releasing a reservation,
 * through authorize with cap-check counting real events (Redis and PostgreSQL, no mocks).
 */
const PARTITIONS = 2;

let iso: Isolated;
let config: Config;
let tenant: SeededTenant;
let other: SeededTenant;
let routes: ReturnType<typeof createAuthorizeRoutes>;
let stage: RunningStage;
// Made before cap-check starts (it loads every cap then).
let rollingCap: SpendCap;
let planCap: SpendCap;
let dayCap: SpendCap;
let appCap: SpendCap;

beforeAll(async () => {
  iso = await isolated('authorize-caps');
  config = { ...iso.config, PARTITIONS };
  tenant = await seedSmall(iso.sql, { customers: 2, teamsPerCustomer: 1, agentsPerTeam: 3, appsPerTeam: 2 });
  other = await seedSmall(iso.sql, { customers: 1, teamsPerCustomer: 1, agentsPerTeam: 1, appsPerTeam: 0 });
  routes = createAuthorizeRoutes({
    config,
    redis: iso.redis,
    resolver: new AttributionResolver(iso.sql, iso.redis, config.REDIS_PREFIX, 60),
    tokens: new TenantTokens(iso.sql),
    sql: iso.sql,
  });
  rollingCap = await addCap({ scopeKind: 'agent', scopeId: agentOf(0, 0).id, period: 'rolling', windowSeconds: 60, limitNano: 1_000_000_000n, action: 'pause' });
  planCap = await addCap({ scopeKind: 'plan', scopeId: tenant.ratePlanId, period: 'session', limitNano: 500_000_000n, action: 'pause' });
  dayCap = await addCap({ scopeKind: 'agent', scopeId: agentOf(1, 2).id, period: 'day', limitNano: 1_000_000_000n, action: 'pause' });
  appCap = await addCap({ scopeKind: 'app', scopeId: appOf(1, 0).id, period: 'day', limitNano: 1_000_000_000n, action: 'pause' });
  stage = await runStage(capCheckStage, {
    config: { ...config, BLOCK_MS: 50 },
    log: createLogger('test', 'silent'),
    metrics: new Metrics('test'),
    topology: [
      { stream: STREAMS.priced, group: 'cap-check' },
      { stream: STREAMS.checked, group: 'ledger-write' },
    ],
  });
});

afterAll(async () => {
  await stage?.stop();
  await iso?.cleanup();
});

async function post(path: string, body: unknown, token = tenant.ingestToken): Promise<Response> {
  return routes.app.request(path, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

async function decide(body: Record<string, unknown>): Promise<AuthorizeReply> {
  const res = await post('/v1/authorize', body);
  expect(res.status).toBe(200);
  return (await res.json()) as AuthorizeReply;
}

type Agent = SeededAgent & { customerId: string; teamId: string };

function agentOf(customer: number, index: number): Agent {
  const c = tenant.customers[customer];
  return { ...c.teams[0].agents[index], customerId: c.id, teamId: c.teams[0].id };
}

type App = { id: string; apiKey: string; customerId: string; teamId: string };

function appOf(customer: number, index: number): App {
  const c = tenant.customers[customer];
  return { ...c.teams[0].apps[index], customerId: c.id, teamId: c.teams[0].id };
}

async function addCap(cap: Omit<SpendCap, 'id' | 'tenantId'>): Promise<SpendCap> {
  const full: SpendCap = { ...cap, id: newId('cap'), tenantId: tenant.tenantId };
  await iso.sql`
    INSERT INTO spend_caps (id, tenant_id, scope_kind, scope_id, period, limit_nano, action, window_seconds)
    VALUES (${full.id}, ${full.tenantId}, ${full.scopeKind}, ${full.scopeId}, ${full.period}, ${full.limitNano.toString()}, ${full.action}, ${full.windowSeconds ?? null})`;
  await routes.applyControl({ type: 'caps.changed', tenantId: tenant.tenantId });
  return full;
}

function priced(agent: Agent, cost: bigint, sessionId?: string): PricedEvent {
  const customer = tenant.customers.find((c) => c.id === agent.customerId)!;
  return {
    ...usageEvent(tenant.tenantId, agent, { recordedAt: Date.now(), ...(sessionId ? { sessionId } : {}) }),
    attribution: { customerId: agent.customerId, teamId: agent.teamId, agentId: agent.id, credentialId: 'key' },
    subscription: {
      subscriptionId: customer.subscriptionId,
      ratePlanId: tenant.ratePlanId,
      ratePlanVersionId: tenant.ratePlanVersionId,
      ratePlanVersion: 1,
      currency: 'USD',
      periodStart: 0,
      periodEnd: 0,
    },
    cost: { total: cost, tool: 'transform_schema', breakdown: { tool: cost, input_tokens: 0n, output_tokens: 0n, duration: 0n } },
  };
}

/** An event of an app's key: priced as one of an agent of its team, attributed to the app. */
function pricedForApp(app: App, cost: bigint): PricedEvent {
  const teammate = agentOf(tenant.customers.findIndex((c) => c.id === app.customerId), 0);
  return { ...priced(teammate, cost), attribution: { customerId: app.customerId, teamId: app.teamId, appId: app.id, credentialId: 'key' } };
}

/** Sends events through cap-check and waits until each is counted (forwarded). */
async function count(owner: { customerId: string }, events: PricedEvent[]): Promise<void> {
  const partition = partitionOf(customerPartitionKey(tenant.tenantId, owner.customerId), PARTITIONS);
  const input = partitionedKey(config.REDIS_PREFIX, STREAMS.priced, partition);
  const output = partitionedKey(config.REDIS_PREFIX, STREAMS.checked, partition);
  const before = await iso.redis.xlen(output);
  for (const event of events) await iso.redis.xadd(input, '*', 'd', encodePayload(event));
  const deadline = Date.now() + 10_000;
  while ((await iso.redis.xlen(output)) < before + events.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  expect(await iso.redis.xlen(output)).toBe(before + events.length);
}

describe('rolling-window caps', () => {
  it('pause the agent on the crossing event until enough spend leaves the window; authorize says when', async () => {
    const agent = agentOf(0, 0);
    const cap = rollingCap;
    await count(agent, [priced(agent, 600_000_000n)]);
    const before = await decide({ api_key: agent.apiKey });
    expect(before).toMatchObject({ allowed: true, remaining: '0.4' });
    expect(before.caps?.[0]).toMatchObject({ cap_id: cap.id, period: 'rolling', window_seconds: 60, period_key: 'w', spent: '0.6', limit: '1' });
    // An estimate that does not fit is refused with when it will: when the 0.6 leaves the window (60 s after it was counted).
    const start = Date.now();
    const tooMuch = await decide({ api_key: agent.apiKey, estimated_cost: '0.5' });
    expect(tooMuch).toMatchObject({ allowed: false, code: 'insufficient_budget', cap: { cap_id: cap.id, spent: '0.6', limit: '1', remaining: '0.4' } });
    const frees = Date.parse(tooMuch.cap!.resets_at);
    expect(frees).toBeGreaterThan(start + 55_000);
    expect(frees).toBeLessThanOrEqual(start + 61_000);
    expect(tooMuch.reason).toContain('in the last 60 s');

    // The event that reaches the limit pauses the agent; the next call is refused, and the pause lasts as long.
    await count(agent, [priced(agent, 400_000_000n)]);
    const paused = await decide({ api_key: agent.apiKey });
    expect(paused).toMatchObject({ allowed: false, code: 'paused', cap: { cap_id: cap.id, period: 'rolling', spent: '1', remaining: '0' } });
    const resets = Date.parse(paused.cap!.resets_at);
    expect(resets).toBeGreaterThan(Date.now() + 50_000);
    expect(resets).toBeLessThanOrEqual(start + 61_000);
    const partition = partitionOf(customerPartitionKey(tenant.tenantId, agent.customerId), PARTITIONS);
    const flagTtl = await iso.redis.pttl(partitionedKey(config.REDIS_PREFIX, `paused:${tenant.tenantId}:agent:${agent.id}`, partition));
    expect(Math.abs(Date.now() + flagTtl - frees)).toBeLessThan(2_000);
    // On the record, with the time the spend leaves as the period's end (the roll-over sweep lifts it then).
    const deadline = Date.now() + 5_000;
    let rows: { period_key: string; period_ends_at: Date; lifted_at: Date | null }[] = [];
    while (rows.length === 0 && Date.now() < deadline) {
      rows = await iso.sql`SELECT period_key, period_ends_at, lifted_at FROM cap_pauses WHERE tenant_id = ${tenant.tenantId} AND cap_id = ${cap.id}`;
      if (rows.length === 0) await new Promise((r) => setTimeout(r, 20));
    }
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ period_key: 'w', lifted_at: null });
    expect(Math.abs(rows[0].period_ends_at.getTime() - frees)).toBeLessThan(2_000);

    // The spend route shows it, with resets_at the same.
    const { app } = createApp({ config, sql: iso.sql, redis: iso.redis, log: pino({ level: 'silent' }), metrics: new Metrics('caps-test') });
    const res = await app.request(`/v1/spend/agents/${agent.id}`, { headers: { authorization: `Bearer ${tenant.ingestToken}` } });
    expect(res.status).toBe(200);
    const report = (await res.json()) as { caps: { cap_id: string; period: string; window_seconds?: number; spent: string; resets_at: string; paused: boolean }[] };
    const shown = report.caps.find((c) => c.cap_id === cap.id)!;
    expect(shown).toMatchObject({ period: 'rolling', window_seconds: 60, spent: '1', paused: true });
    expect(Math.abs(Date.parse(shown.resets_at) - frees)).toBeLessThan(2_000);
  });
});

describe('caps on each session of a plan', () => {
  it('one cap row gives every session of every customer on the plan its own total and its own pause', async () => {
    const cap = planCap;
    const a = agentOf(1, 0);
    const b = agentOf(0, 1);
    await count(a, [priced(a, 300_000_000n, 'plan_s1'), priced(a, 300_000_000n, 'plan_s1'), priced(a, 100_000_000n, 'plan_s2')]);
    // plan_s1 crossed 0.5: that session is paused, the agent's other session and other customers' sessions go on.
    expect(await decide({ api_key: a.apiKey, session_id: 'plan_s1' })).toMatchObject({
      allowed: false,
      code: 'paused',
      pause: { capId: cap.id, scopeKind: 'session', scopeId: 'plan_s1' },
      cap: { cap_id: cap.id, scope_kind: 'plan', period: 'session', spent: '0.6' },
    });
    const s2 = await decide({ api_key: a.apiKey, session_id: 'plan_s2', estimated_cost: '0.3' });
    expect(s2).toMatchObject({ allowed: true, remaining: '0.1' });
    expect(s2.caps?.find((c) => c.cap_id === cap.id)).toMatchObject({ period_key: 's:plan_s2', spent: '0.1', reserved: '0.3' });
    expect(await decide({ api_key: a.apiKey, session_id: 'plan_s2', estimated_cost: '0.2' })).toMatchObject({ allowed: false, code: 'insufficient_budget' });
    expect(await decide({ api_key: b.apiKey, session_id: 'plan_s3', estimated_cost: '0.5' })).toMatchObject({ allowed: true, remaining: '0' });
    // Without a session no per-session cap applies; and there is still one cap row.
    expect((await decide({ api_key: a.apiKey })).caps?.some((c) => c.cap_id === cap.id) ?? false).toBe(false);
    const [{ n }] = await iso.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM spend_caps WHERE tenant_id = ${tenant.tenantId} AND scope_kind = 'plan'`;
    expect(n).toBe(1);
  });
});

describe('a paused session', () => {
  it('answers the pause\'s own end as the cap\'s resets_at (the crossing event\'s time + 24 h), not one that moves with the clock', async () => {
    const a = agentOf(1, 1);
    const crossing = priced(a, 600_000_000n, 'plan_resets');
    await count(a, [crossing]);
    const first = await decide({ api_key: a.apiKey, session_id: 'plan_resets' });
    expect(first).toMatchObject({ allowed: false, code: 'paused', pause: { capId: planCap.id, scopeKind: 'session' } });
    const endsAt = first.pause!.endsAt!;
    expect(endsAt).toBe(crossing.recordedAt + 24 * 3_600_000);
    expect(first.cap?.resets_at).toBe(new Date(endsAt).toISOString());
    expect(first.caps?.find((c) => c.cap_id === planCap.id)?.resets_at).toBe(new Date(endsAt).toISOString());
    await new Promise((r) => setTimeout(r, 30));
    const later = await decide({ api_key: a.apiKey, session_id: 'plan_resets' });
    expect(later.cap?.resets_at).toBe(new Date(endsAt).toISOString());
  });
});

describe('caps on an app', () => {
  it('pause the app on the event that crosses its cap: its key is refused naming the app, another app of the same customer goes on', async () => {
    const [capped, sibling] = [appOf(1, 0), appOf(1, 1)];
    await count(capped, [pricedForApp(capped, 600_000_000n)]);
    expect(await decide({ api_key: capped.apiKey })).toMatchObject({
      allowed: true,
      remaining: '0.4',
      caps: [{ cap_id: appCap.id, scope_kind: 'app', scope_id: capped.id, spent: '0.6' }],
    });
    await count(capped, [pricedForApp(capped, 500_000_000n)]);
    expect(await decide({ api_key: capped.apiKey })).toMatchObject({
      allowed: false,
      code: 'paused',
      reason: expect.stringContaining(`app ${capped.id} is paused`),
      pause: { capId: appCap.id, scopeKind: 'app', scopeId: capped.id },
      cap: { cap_id: appCap.id, scope_kind: 'app', scope_id: capped.id, spent: '1.1', limit: '1', remaining: '0' },
      attribution: { customer_id: capped.customerId, team_id: capped.teamId, app_id: capped.id },
    });
    expect(await decide({ api_key: sibling.apiKey })).toMatchObject({ allowed: true, attribution: { customer_id: capped.customerId, team_id: capped.teamId, app_id: sibling.id } });
  });
});

describe('POST /v1/authorize/reservations/{id}/release', () => {
  it('releases a reservation at once, idempotently, only for the caller and tenant that made it; its event then settles nothing twice', async () => {
    const agent = agentOf(1, 2);
    const cap = dayCap;
    const held = await decide({ api_key: agent.apiKey, estimated_cost: '0.7' });
    expect(held).toMatchObject({ allowed: true, remaining: '0.3', reservation: { amount: '0.7' } });
    const id = held.reservation!.id;
    expect((await decide({ api_key: agent.apiKey, estimated_cost: '0.5' })).allowed).toBe(false);

    // Another tenant cannot release it (its token does not know this credential), nor can a malformed request.
    const foreign = await post(`/v1/authorize/reservations/${id}/release`, { api_key: agent.apiKey }, other.ingestToken);
    expect(foreign.status).toBe(403);
    expect(((await foreign.json()) as { error: { code: string } }).error.code).toBe('unknown_credential');
    const bad = await post(`/v1/authorize/reservations/${id}/release`, { api_key: agent.apiKey, estimated_cost: '1' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { details: { path: string }[] } }).error.details[0].path).toBe('');
    expect((await post(`/v1/authorize/reservations/${encodeURIComponent('bad id!')}/release`, { api_key: agent.apiKey })).status).toBe(400);
    expect((await decide({ api_key: agent.apiKey })).caps?.find((c) => c.cap_id === cap.id)).toMatchObject({ reserved: '0.7' });

    const released = await post(`/v1/authorize/reservations/${id}/release`, { api_key: agent.apiKey });
    expect(released.status).toBe(200);
    expect(await released.json()).toEqual({ id, released: true, caps_released: 1 });
    expect((await decide({ api_key: agent.apiKey })).caps?.find((c) => c.cap_id === cap.id)).toMatchObject({ reserved: '0', remaining: '1' });
    // Again: nothing left to release, same answer shape.
    const again = await post(`/v1/authorize/reservations/${id}/release`, { api_key: agent.apiKey });
    expect(await again.json()).toEqual({ id, released: false, caps_released: 0 });

    // A reservation made for an event is settled by that event; releasing it afterwards releases nothing and counts nothing twice.
    const event = priced(agent, 400_000_000n);
    const forEvent = await decide({ api_key: agent.apiKey, estimated_cost: '0.4', event_id: event.eventId });
    expect(forEvent.reservation?.id).toBe(event.eventId);
    await count(agent, [event]);
    let standing = (await decide({ api_key: agent.apiKey })).caps?.find((c) => c.cap_id === cap.id);
    const deadline = Date.now() + 5_000;
    while (standing?.reserved !== '0' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
      standing = (await decide({ api_key: agent.apiKey })).caps?.find((c) => c.cap_id === cap.id);
    }
    expect(standing).toMatchObject({ spent: '0.4', reserved: '0', remaining: '0.6' });
    expect(await (await post(`/v1/authorize/reservations/${event.eventId}/release`, { api_key: agent.apiKey })).json()).toMatchObject({ released: false });
    // And one released before its event comes: the event counts once, nothing stays held.
    const early = priced(agent, 100_000_000n);
    await decide({ api_key: agent.apiKey, estimated_cost: '0.3', event_id: early.eventId });
    expect(await (await post(`/v1/authorize/reservations/${early.eventId}/release`, { api_key: agent.apiKey })).json()).toMatchObject({ released: true });
    await count(agent, [early]);
    expect((await decide({ api_key: agent.apiKey })).caps?.find((c) => c.cap_id === cap.id)).toMatchObject({ spent: '0.5', reserved: '0' });
  });
});

describe('releasing another credential\'s reservation', () => {
  it('releases nothing: a cap shared by two agents of one customer keeps the reservation until its own caller releases it', async () => {
    const a = agentOf(1, 0);
    const b = agentOf(1, 1);
    // Added last: no test above sees this customer cap.
    const shared = await addCap({ scopeKind: 'customer', scopeId: a.customerId, period: 'day', limitNano: 1_000_000_000_000n, action: 'pause' });
    const held = await decide({ api_key: a.apiKey, estimated_cost: '0.7' });
    const id = held.reservation!.id;
    const byOther = await post(`/v1/authorize/reservations/${id}/release`, { api_key: b.apiKey });
    expect(byOther.status).toBe(200);
    expect(await byOther.json()).toEqual({ id, released: false, caps_released: 0 });
    expect((await decide({ api_key: a.apiKey })).caps?.find((c) => c.cap_id === shared.id)).toMatchObject({ reserved: '0.7' });
    expect(await (await post(`/v1/authorize/reservations/${id}/release`, { api_key: a.apiKey })).json()).toEqual({ id, released: true, caps_released: 1 });
    expect((await decide({ api_key: a.apiKey })).caps?.find((c) => c.cap_id === shared.id)).toMatchObject({ reserved: '0' });
  });
});
