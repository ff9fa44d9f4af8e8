// The baselines the pipeline is compared with: the plain approach, synchronous PostgreSQL
// INSERT ... ON CONFLICT DO NOTHING inside the HTTP handler, into a table of the ledger's shape:
// one INSERT per event (BASELINE_MODE=per-event, what a first hand-made handler does) or one
// multi-row INSERT per request (per-request, the stronger one). It parses and validates each event with the same code as the real ingest
// (normalizeBatch: schema, time window, API key hash), attributes it from an in-memory map
// loaded at start, and neither rates nor checks caps (cost 0): a generous baseline, so the
// ratio the benchmark reports is, if anything, an under-statement of the pipeline's gain.
//   env: DATABASE_URL, BASELINE_PORT, BASELINE_POOL, BASELINE_PROCESSES, BASELINE_TOKEN, BASELINE_TENANT,
//        BASELINE_MODE, BASELINE_TABLE
import cluster from 'node:cluster';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { connectPostgres, type Sql } from '../../pipeline/postgres.js';
import { decodeBody, eventsOf, normalizeBatch } from '../../api/ingest/normalize.js';
import type { UsageEvent } from '../../domain/events.js';

export type BaselineMode = 'per-event' | 'per-request';

/** Each baseline writes a table of its own. */
export const BASELINE_TABLES: Record<BaselineMode, string> = { 'per-event': 'baseline_ledger', 'per-request': 'baseline_batch_ledger' };

/** Creates a baseline's table: the ledger's columns, defaults, constraints and indexes. */
export async function createBaselineTable(sql: Sql, mode: BaselineMode): Promise<void> {
  await sql.unsafe(`CREATE TABLE IF NOT EXISTS ${BASELINE_TABLES[mode]} (LIKE usage_ledger INCLUDING ALL)`);
}

interface Owner {
  customerId: string;
  teamId: string;
  agentId: string | null;
  appId: string | null;
  credentialId: string;
  productId: string | null;
}

async function loadOwners(sql: Sql, tenantId: string) {
  const keys = await sql<(Owner & { keyHash: string })[]>`
    SELECT k.key_hash AS "keyHash", k.id AS "credentialId", k.agent_id AS "agentId", k.app_id AS "appId",
           t.id AS "teamId", t.customer_id AS "customerId", coalesce(a.product_id, p.product_id) AS "productId"
    FROM api_keys k
    LEFT JOIN agents a ON a.id = k.agent_id
    LEFT JOIN apps p ON p.id = k.app_id
    JOIN teams t ON t.id = coalesce(a.team_id, p.team_id)
    WHERE k.tenant_id = ${tenantId}`;
  const clients = await sql<(Owner & { clientId: string })[]>`
    SELECT c.client_id AS "clientId", c.id AS "credentialId", c.agent_id AS "agentId", NULL AS "appId",
           t.id AS "teamId", t.customer_id AS "customerId", a.product_id AS "productId"
    FROM client_credentials c JOIN agents a ON a.id = c.agent_id JOIN teams t ON t.id = a.team_id
    WHERE c.tenant_id = ${tenantId}`;
  const subscriptions = await sql<{ customer_id: string; id: string; rate_plan_version_id: string; rate_plan_id: string; currency: string }[]>`
    SELECT s.customer_id, s.id, s.rate_plan_version_id, v.rate_plan_id, p.currency
    FROM subscriptions s JOIN rate_plan_versions v ON v.id = s.rate_plan_version_id JOIN rate_plans p ON p.id = v.rate_plan_id
    WHERE s.tenant_id = ${tenantId}`;
  return {
    byKey: new Map(keys.map((k) => [k.keyHash, k])),
    byClient: new Map(clients.map((c) => [c.clientId, c])),
    subscriptionOf: new Map(subscriptions.map((s) => [s.customer_id, s])),
  };
}

function monthStart(ms: number): Date {
  const d = new Date(ms);
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1));
}

async function serveBaseline(): Promise<void> {
  const port = Number(process.env.BASELINE_PORT);
  const token = process.env.BASELINE_TOKEN!;
  const tenantId = process.env.BASELINE_TENANT!;
  const mode: BaselineMode = process.env.BASELINE_MODE === 'per-request' ? 'per-request' : 'per-event';
  const table = BASELINE_TABLES[mode];
  const sql = connectPostgres(process.env.DATABASE_URL!, { max: Number(process.env.BASELINE_POOL ?? 10), name: 'bench-baseline' });
  const owners = await loadOwners(sql, tenantId);
  const app = new Hono();

  const row = (event: UsageEvent) => {
    const owner = event.credential.kind === 'api_key' ? owners.byKey.get(event.credential.keyHash) : owners.byClient.get(event.credential.clientId);
    if (!owner) throw new Error(`baseline: unknown credential for event ${event.eventId}`);
    const subscription = owners.subscriptionOf.get(owner.customerId)!;
    return {
      tenant_id: event.tenantId,
      event_id: event.eventId,
      ingest_nonce: event.ingestNonce,
      event_type: event.eventType,
      recorded_at: new Date(event.recordedAt),
      ingested_at: new Date(event.ingestedAt),
      customer_id: owner.customerId,
      team_id: owner.teamId,
      agent_id: owner.agentId,
      app_id: owner.appId,
      credential_id: owner.credentialId,
      product_id: owner.productId,
      subscription_id: subscription.id,
      rate_plan_id: subscription.rate_plan_id,
      rate_plan_version_id: subscription.rate_plan_version_id,
      rate_plan_version: 1,
      period_start: monthStart(event.recordedAt),
      session_id: event.sessionId ?? null,
      tool_name: event.toolName ?? null,
      priced_tool: null,
      mcp_server_id: event.mcpServerId ?? null,
      model: event.model ?? null,
      execution_status: event.status,
      duration_ms: event.durationMs,
      input_tokens: event.inputTokens,
      output_tokens: event.outputTokens,
      retry_count: event.retryCount,
      cost_nano: 0,
      cost_breakdown: sql.json({}),
      currency: subscription.currency,
      over_cap: false,
    };
  };
  const insert = async (events: UsageEvent[]) => {
    await sql`INSERT INTO ${sql(table)} ${sql(events.map(row))} ON CONFLICT (tenant_id, event_id) DO NOTHING`;
  };

  app.post('/v1/events', async (c) => {
    if (c.req.header('authorization') !== `Bearer ${token}`) return c.json({ error: { code: 'unauthorized' } }, 401);
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    const body = decodeBody(bytes, c.req.header('content-type'));
    if (!body.ok) return c.json({ error: { code: body.code, message: body.message } }, body.status);
    const events = eventsOf(body.value, 1000);
    if (!events.ok) return c.json({ error: { code: events.code, message: events.message } }, events.status);
    const batch = normalizeBatch(tenantId, events.value, { now: Date.now(), maxFutureSeconds: 300, maxAgeDays: 35 });
    // The plain approach: synchronous inserts before answering, one per event in order, or one per request.
    if (mode === 'per-request') {
      // In key order: two requests holding some of the same event ids (resent duplicates) in
      // another order would deadlock each other (PostgreSQL 40P01), as they did in this bench.
      const byKey = [...batch.accepted].sort((a, b) => (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0));
      if (byKey.length) await insert(byKey);
    } else {
      for (const event of batch.accepted) await insert([event]);
    }
    return c.json({ accepted: batch.accepted.length, duplicates: batch.duplicates, rejected: batch.rejected }, 202);
  });
  app.get('/healthz', (c) => c.text('ok'));

  const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' });
  const stop = async () => {
    server.close();
    await sql.end({ timeout: 5 });
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}

if (process.env.BASELINE_PORT) {
  const processes = Math.max(1, Number(process.env.BASELINE_PROCESSES ?? 1));
  if (processes > 1 && cluster.isPrimary) {
    for (let i = 0; i < processes; i++) cluster.fork();
    const stop = () => {
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
      const wait = setInterval(() => Object.keys(cluster.workers ?? {}).length === 0 && process.exit(0), 50);
      wait.unref();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  } else {
    await serveBaseline();
  }
}
