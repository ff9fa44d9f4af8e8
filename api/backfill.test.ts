import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../pipeline/config.js';
import { partitionedKey, partitionOf } from '../pipeline/keys.js';
import type { Redis } from '../pipeline/redis.js';
import { hashApiKey } from '../store/credentials.js';
import { STREAMS } from '../store/streams.js';
import { TenantTokens } from '../store/tenant-tokens.js';
import type { SeededTenant } from '../ops/seed.js';
import { closePeriod, pendingAdjustments } from '../store/invoices.js';
import { PlanCache } from '../store/rate-plans.js';
import { ARTICLE_PLAN, seedSmall } from '../test/support/billing.js';
import { startInProcessPipeline, type InProcessPipeline } from '../test/support/in-process-pipeline.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { createBackfillRoutes } from './backfill.js';
import { ingestPartitionKey } from './ingest/writer.js';

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

describe('backfill: refusals', () => {
  // Routes on a key prefix of their own: what they accept never reaches the pipeline of the test above.
  let routes = 0;
  function backfill(overrides: Partial<Config> = {}, redis: Redis = world.redis) {
    const config: Config = { ...world.config, REDIS_PREFIX: `${world.config.REDIS_PREFIX}refusals${++routes}:`, ...overrides };
    const app = createBackfillRoutes({ config, redis, tokens: new TenantTokens(world.sql), log: pino({ level: 'silent' }) });
    const send = (body: string | ReadableStream<Uint8Array>, headers: Record<string, string> = {}) =>
      app.request('/v1/backfill/events', {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.adminToken}`, 'content-type': 'application/json', ...headers },
        body,
        ...(body instanceof ReadableStream ? { duplex: 'half' } : {}),
      } as RequestInit);
    return { config, send, post: (events: unknown[]) => send(JSON.stringify(events)), key: (p = 0) => partitionedKey(config.REDIS_PREFIX, STREAMS.ingested, p) };
  }
  const agentKey = () => tenant.customers[0].teams[0].agents[0].apiKey;
  const event = (overrides: Record<string, unknown> = {}) => ({
    event_id: `bfr_${Math.random().toString(36).slice(2)}`,
    event_type: 'mcp.tool_invoked',
    api_key: agentKey(),
    tool_name: 'transform_schema',
    recorded_timestamp: '2020-01-01T00:00:00Z',
    ...overrides,
  });
  type Refusal = { error: { code: string; message: string; details?: { index: number; errors: { field: string; message: string }[] }[] } };

  it('refuses recorded times before 1970-01-01T00:00:00Z (ClickHouse would store another time), by field, and takes 1970 itself', async () => {
    const b = backfill();
    for (const recorded_timestamp of ['1969-12-31T23:59:59.999Z', '0000-01-01T00:00:00Z', '1930-06-01T00:00:00+02:00']) {
      const res = await b.post([event({ recorded_timestamp })]);
      expect(res.status).toBe(400);
      const body = (await res.json()) as Refusal;
      expect(body.error.details?.[0].errors).toEqual([{ field: 'recorded_timestamp', message: expect.stringMatching(/before 1970-01-01T00:00:00.000Z/) }]);
    }
    expect(await world.redis.exists(b.key())).toBe(0);
    expect((await b.post([event({ recorded_timestamp: '1970-01-01T00:00:00Z' })])).status).toBe(202);
  });

  it('refuses a Content-Encoding other than identity with 415', async () => {
    const res = await backfill().send(JSON.stringify([event()]), { 'content-encoding': 'gzip' });
    expect(res.status).toBe(415);
    expect(((await res.json()) as Refusal).error.code).toBe('unsupported_content_encoding');
  });

  it('answers a failed write as ingest does: store_full when Redis is out of memory, and says so when another partition was written', async () => {
    const oom = new Error("OOM command not allowed when used memory > 'maxmemory'.");
    const full = new Proxy(world.redis, {
      get(target, prop) {
        if (prop === 'xadd') return () => Promise.reject(oom);
        const value = Reflect.get(target, prop, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const refused = await backfill({}, full).post([event()]);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('5');
    expect(((await refused.json()) as Refusal).error).toMatchObject({ code: 'store_full', message: expect.stringMatching(/store is full; nothing was accepted/) });

    const b = backfill({ PARTITIONS: 2 });
    const keys: Record<number, string> = {};
    for (let i = 0; Object.keys(keys).length < 2; i++) {
      const key = `sk_live_backfill_partition_${i}`;
      keys[partitionOf(ingestPartitionKey(tenant.tenantId, { kind: 'api_key', keyHash: hashApiKey(key) }), 2)] ??= key;
    }
    await world.redis.set(b.key(1), 'not a stream');
    const partial = await b.post([event({ api_key: keys[0] }), event({ api_key: keys[1] })]);
    expect(partial.status).toBe(503);
    const body = (await partial.json()) as Refusal;
    expect(body.error.message).toMatch(/some events may have been accepted.*retry the same request/);
    expect(await world.redis.xlen(b.key(0))).toBe(1);
  });

  it('stops reading a body that has not arrived by the request deadline (503 timeout)', async () => {
    const b = backfill({ HTTP_REQUEST_TIMEOUT_MS: 200 });
    const stalled = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('[{"event_id": "slow'));
      },
    });
    const res = await Promise.race([b.send(stalled), new Promise<undefined>((r) => setTimeout(() => r(undefined), 2000))]);
    expect(res?.status).toBe(503);
    expect(((await res!.json()) as Refusal).error.code).toBe('timeout');
  });
});
