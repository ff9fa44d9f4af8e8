/**
 * Revocation propagation with the pipeline running as processes (two key-resolve workers):
 * a revoke through the admin API, or an agent's suspension, stops its credential at
 * `POST /v1/authorize` and in the pipeline within one second, not at cache expiry.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePayload } from '../../pipeline/codec.js';
import { createLogger } from '../../pipeline/logger.js';
import { STREAMS } from '../../store/streams.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { supervise, type Supervisor } from '../../pipeline/supervisor.js';
import { pipelineProcesses } from '../../ops/start.js';
import { seedTenant, type SeededAgent, type SeededTenant } from '../../ops/seed.js';
import type { RejectedEvent } from '../../domain/flow.js';
import { ARTICLE_PLAN } from '../support/billing.js';
import { isolated, type Isolated } from '../support/isolated.js';

let world: Isolated;
let tenant: SeededTenant;
let supervisor: Supervisor;
let baseUrl: string;
let sequence = 0;

beforeAll(async () => {
  world = await isolated('revocation', { clickhouse: true });
  tenant = await seedTenant(world.sql, { name: 'revocation', pricing: ARTICLE_PLAN, customers: 1, teamsPerCustomer: 1, agentsPerTeam: 3 });
  // Below the ephemeral range (32768+), where a client socket of any process could hold the port.
  const port = 20_000 + Math.floor(Math.random() * 12_000);
  baseUrl = `http://127.0.0.1:${port}`;
  const specs = pipelineProcesses({
    workers: { 'key-resolve': 2 },
    metricsBasePort: port + 1,
    env: { ...world.env, HTTP_PORT: String(port), BLOCK_MS: '500', LOG_LEVEL: 'error' },
  });
  supervisor = supervise(specs, createLogger('revocation-test', 'silent'));
  const stagePorts = specs.flatMap((spec) => (spec.env?.METRICS_PORT ? [spec.env.METRICS_PORT] : []));
  await until(async () => {
    const checks = [fetch(`${baseUrl}/readyz`), ...stagePorts.map((p) => fetch(`http://127.0.0.1:${p}/readyz`))];
    return (await Promise.all(checks.map((c) => c.then((r) => r.ok).catch(() => false)))).every(Boolean);
  }, 150_000);
}, 180_000);

afterAll(async () => {
  await supervisor?.stop();
  await world?.cleanup();
}, 60_000);

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return Date.now() - started;
}

async function call(path: string, token: string, body: unknown): Promise<{ status: number; json: any }> {
  const response = await fetch(`${baseUrl}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: await response.json() };
}

const authorize = (agent: SeededAgent) => call('/v1/authorize', tenant.ingestToken, { api_key: agent.apiKey, session_id: 'sess_r' });

async function sendEvent(agent: SeededAgent): Promise<string> {
  const eventId = `rev_${++sequence}`;
  const reply = await call('/v1/events', tenant.ingestToken, {
    event_id: eventId,
    event_type: 'mcp.tool_invoked',
    api_key: agent.apiKey,
    session_id: 'sess_r',
    tool_name: 'read_database',
    recorded_timestamp: new Date().toISOString(),
  });
  expect(reply.json.accepted).toBe(1);
  return eventId;
}

async function ledgered(eventId: string): Promise<boolean> {
  return (await world.sql`SELECT 1 FROM usage_ledger WHERE event_id = ${eventId}`).length === 1;
}

async function rejectedCode(eventId: string): Promise<string | undefined> {
  const entries = (await world.redis.xrangeBuffer(partitionedKey(world.config.REDIS_PREFIX, STREAMS.rejected, 0), '-', '+')) as [Buffer, Buffer[]][];
  for (const [, fields] of entries) {
    const rejected = decodePayload<RejectedEvent>(fields[1]);
    if (rejected.event.eventId === eventId) return rejected.code;
  }
  return undefined;
}

describe('revocation propagation', () => {
  it('a revoked key is denied by authorize and its next event rejected within one second', async () => {
    const agent = tenant.customers[0].teams[0].agents[0];
    // Warm every cache: the key resolves, is allowed, and its event is billed.
    expect((await authorize(agent)).json.allowed).toBe(true);
    const warm = await sendEvent(agent);
    await until(() => ledgered(warm), 10_000);

    const [{ id }] = await world.sql`SELECT id FROM api_keys WHERE key_hash = ${agent.keyHash}`;
    const revoke = await call(`/v1/admin/api-keys/${id}/revoke`, tenant.adminToken, {});
    expect(revoke.status).toBe(200);
    const revokedAt = Date.now();
    const denied = await authorize(agent);
    expect(denied.json).toMatchObject({ allowed: false, code: 'revoked' });
    const eventId = await sendEvent(agent);
    await until(async () => (await rejectedCode(eventId)) === 'revoked', 1_000);
    expect(Date.now() - revokedAt).toBeLessThan(1_000);
    expect(await ledgered(eventId)).toBe(false);
  });

  it("an agent's suspension stops its key the same way, and reactivation lets it back in", async () => {
    const agent = tenant.customers[0].teams[0].agents[1];
    const warm = await sendEvent(agent);
    await until(() => ledgered(warm), 10_000);
    expect((await authorize(agent)).json.allowed).toBe(true);

    const suspend = await call(`/v1/admin/agents/${agent.id}/suspend`, tenant.adminToken, {});
    expect(suspend.status).toBe(200);
    const suspendedAt = Date.now();
    expect((await authorize(agent)).json).toMatchObject({ allowed: false, code: 'suspended' });
    const eventId = await sendEvent(agent);
    await until(async () => (await rejectedCode(eventId)) === 'suspended', 1_000);
    expect(Date.now() - suspendedAt).toBeLessThan(1_000);

    expect((await call(`/v1/admin/agents/${agent.id}/reactivate`, tenant.adminToken, {})).status).toBe(200);
    expect((await authorize(agent)).json.allowed).toBe(true);
    const back = await sendEvent(agent);
    await until(() => ledgered(back), 5_000);
  });
});
