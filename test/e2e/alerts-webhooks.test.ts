/**
 * Alerts to webhooks through the whole pipeline as processes (`npm start`'s layout): events over
 * HTTP cross a spend cap's thresholds, the spend-alerts stage writes the alerts to the outbox,
 * the webhook worker delivers them to a receiver started here that fails at first. The API, the
 * process running spend-alerts and the webhook worker are SIGKILLed on the way; every alert
 * still arrives, once per crossing, signed so that the standardwebhooks package verifies it.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedTenant, type SeededTenant } from '../../ops/seed.js';
import { ARTICLE_PLAN } from '../support/billing.js';
import { isolated, type Isolated } from '../support/isolated.js';
import { startPipeline, type RunningPipeline } from '../support/pipeline.js';
import { sendEvents } from '../support/traffic.js';

let world: Isolated;
let tenant: SeededTenant;
let pipeline: RunningPipeline;
let server: Server;
let receiverUrl: string;
const received: { headers: IncomingHttpHeaders; body: string }[] = [];

beforeAll(async () => {
  world = await isolated('alerts-e2e', { clickhouse: true });
  tenant = await seedTenant(world.sql, {
    name: 'alerts',
    pricing: ARTICLE_PLAN,
    customers: 1,
    teamsPerCustomer: 1,
    agentsPerTeam: 1,
    caps: [{ scope: 'agent', period: 'month', limitNano: 3_000_000_000n, action: 'alert' }],
  });
  // Fails the first three requests, then takes everything.
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(received.length <= 3 ? 500 : 200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiverUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
  pipeline = await startPipeline(world, {
    WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
    WEBHOOK_RETRY_BASE_MS: '200',
    WEBHOOK_RETRY_MAX_DELAY_MS: '2000',
    WEBHOOK_POLL_INTERVAL_MS: '100',
    WEBHOOK_TIMEOUT_MS: '2000',
  });
}, 240_000);

afterAll(async () => {
  await pipeline?.stop();
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  await world?.cleanup();
}, 60_000);

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

let sequence = 0;
function events(count: number) {
  const agent = tenant.customers[0].teams[0].agents[0];
  return Array.from({ length: count }, () => ({
    event_id: `alert_${++sequence}`,
    event_type: 'mcp.tool_invoked',
    api_key: agent.apiKey,
    session_id: 'sess_alerts',
    tool_name: 'read_database',
    execution_duration_ms: 100,
    recorded_timestamp: new Date().toISOString(),
  }));
}

async function admin(method: string, path: string, body?: unknown) {
  const response = await fetch(`${pipeline.baseUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${tenant.adminToken}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json()) as any };
}

describe('alerts as webhooks through the pipeline', () => {
  it('delivers each threshold crossing once, signed, across SIGKILLs of the API, the alerting stage and the webhook worker', async () => {
    const endpoint = await admin('POST', '/v1/admin/webhook-endpoints', { url: receiverUrl, event_types: ['cap.threshold_reached'] });
    expect(endpoint.status).toBe(201);

    // 0.15 an event (0.05 the tool, 0.10 its duration) against a cap of 3: 50 % at the 10th event, 80 % at the 16th, 100 % at the 20th.
    await sendEvents(pipeline.baseUrl, tenant.ingestToken, events(12), 4);
    const children = pipeline.supervisor.children();
    children.get('webhooks#0')?.kill('SIGKILL');
    children.get('from-ledger#0')?.kill('SIGKILL');
    pipeline.killApi('SIGKILL');
    await pipeline.waitReady(120_000);
    await sendEvents(pipeline.baseUrl, tenant.ingestToken, events(14), 4);
    pipeline.supervisor.children().get('webhooks#0')?.kill('SIGKILL');

    const distinct = () => new Set(received.filter((r) => r.headers['webhook-id']).map((r) => r.headers['webhook-id'])).size;
    await until('three alerts delivered', async () => {
      const [row] = await world.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM webhook_deliveries WHERE status = 'succeeded'`;
      return row.n === 3 && distinct() === 3;
    }, 120_000);

    const byId = new Map(received.map((r) => [r.headers['webhook-id'], r]));
    const alerts = [...byId.values()].map((r) => new Webhook(endpoint.body.secret).verify(r.body, r.headers as Record<string, string>) as any);
    expect(alerts.map((a) => a.type)).toEqual(['cap.threshold_reached', 'cap.threshold_reached', 'cap.threshold_reached']);
    expect(alerts.map((a) => a.data.threshold_percent).sort((a: number, b: number) => a - b)).toEqual([50, 80, 100]);
    for (const a of alerts) expect(a.data).toMatchObject({ cap_id: tenant.caps[0].id, limit: '3', scope_kind: 'agent', currency: 'USD' });
    // The receiver's three failures were retried: more requests than alerts, nothing beyond the three alerts.
    expect(received.length).toBeGreaterThanOrEqual(6);
    const [outbox] = await world.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM webhook_events`;
    expect(outbox.n).toBe(3);
    const log = await admin('GET', `/v1/admin/webhook-endpoints/${endpoint.body.id}/deliveries`);
    expect(log.body.data.map((d: { status: string }) => d.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);
  }, 240_000);
});
