import { describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { enqueueWebhookEvent } from '../../store/webhooks.js';
import { createAdminRoutes } from './index.js';
import { adminWorld, created, listAll } from './test-world.js';

const t = adminWorld('admin-webhooks');

const PUBLIC_URL = 'https://hooks.example.com/agentmeter';

describe('webhook endpoints', () => {
  it('creates an endpoint with a Standard Webhooks secret shown once, lists, reads and updates it', async () => {
    const endpoint = await created(t.a.call, '/v1/admin/webhook-endpoints', {
      url: PUBLIC_URL,
      event_types: ['cap.threshold_reached', 'spend.velocity_spike'],
      description: 'ops pager',
    });
    expect(endpoint).toMatchObject({ url: PUBLIC_URL, status: 'enabled', description: 'ops pager', failing_since: null });
    expect(endpoint.secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(endpoint.secret.startsWith(endpoint.secret_prefix)).toBe(true);
    // A secret the standardwebhooks library accepts as is.
    expect(() => new Webhook(endpoint.secret)).not.toThrow();

    const read = await t.a.call('GET', `/v1/admin/webhook-endpoints/${endpoint.id}`);
    expect(read.status).toBe(200);
    expect(read.body.secret).toBeUndefined();
    expect(JSON.stringify(read.body)).not.toContain(endpoint.secret.slice(12));
    const [stored] = await t.world.sql<{ secret_sealed: string }[]>`SELECT secret_sealed FROM webhook_endpoints WHERE id = ${endpoint.id}`;
    expect(stored.secret_sealed).toBe(`plain:${endpoint.secret}`);

    const updated = await t.a.call('PATCH', `/v1/admin/webhook-endpoints/${endpoint.id}`, { event_types: ['cap.paused'], description: null });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ event_types: ['cap.paused'], description: null, url: PUBLIC_URL });

    const { items } = await listAll(t.a.call, '/v1/admin/webhook-endpoints?status=enabled', 1);
    expect(items.map((e: { id: string }) => e.id)).toContain(endpoint.id);
  });

  it('rotates the secret, signing with both during the grace period', async () => {
    const endpoint = await created(t.a.call, '/v1/admin/webhook-endpoints', { url: PUBLIC_URL, event_types: ['cap.paused'] });
    const rotated = await t.a.call('POST', `/v1/admin/webhook-endpoints/${endpoint.id}/rotate-secret`, { grace_seconds: 3600 });
    expect(rotated.status).toBe(201);
    expect(rotated.body.secret).not.toBe(endpoint.secret);
    const [row] = await t.world.sql<{ previous_secret_sealed: string; previous_secret_expires_at: Date }[]>`
      SELECT previous_secret_sealed, previous_secret_expires_at FROM webhook_endpoints WHERE id = ${endpoint.id}`;
    expect(row.previous_secret_sealed).toBe(`plain:${endpoint.secret}`);
    expect(row.previous_secret_expires_at.getTime()).toBeGreaterThan(Date.now() + 3500_000);
    const again = await t.a.call('POST', `/v1/admin/webhook-endpoints/${endpoint.id}/rotate-secret`, {});
    expect(again.status).toBe(201);
    const [after] = await t.world.sql<{ previous_secret_sealed: string | null }[]>`SELECT previous_secret_sealed FROM webhook_endpoints WHERE id = ${endpoint.id}`;
    expect(after.previous_secret_sealed).toBeNull();
  });

  it('refuses a URL that is not http(s), a private-network URL, and unknown event types, with the JSON path', async () => {
    const refused = async (body: unknown) => {
      const reply = await t.a.call('POST', '/v1/admin/webhook-endpoints', body);
      expect(reply.status, JSON.stringify(body)).toBe(400);
      expect(reply.body.error.code).toBe('validation_failed');
      return reply.body.error.details.map((d: { path: string }) => d.path);
    };
    for (const url of ['ftp://hooks.example.com/x', 'javascript:alert(1)', 'file:///etc/passwd', 'not a url', 'https://user:pw@hooks.example.com/']) {
      expect(await refused({ url, event_types: ['cap.paused'] })).toEqual(['url']);
    }
    for (const url of ['http://127.0.0.1:8080/hook', 'http://localhost/hook', 'https://10.1.2.3/', 'http://192.168.0.10/', 'http://[::1]:9000/', 'http://169.254.169.254/latest/meta-data']) {
      expect(await refused({ url, event_types: ['cap.paused'] })).toEqual(['url']);
    }
    expect(await refused({ url: PUBLIC_URL, event_types: ['cap.paused', 'invoice.exploded'] })).toEqual(['event_types.1']);
    expect(await refused({ url: PUBLIC_URL, event_types: [] })).toEqual(['event_types']);
    expect(await refused({ url: PUBLIC_URL, event_types: ['cap.paused'], secret: 'mine' })).toEqual(['']);
    const endpoint = await created(t.a.call, '/v1/admin/webhook-endpoints', { url: PUBLIC_URL, event_types: ['cap.paused'] });
    const patched = await t.a.call('PATCH', `/v1/admin/webhook-endpoints/${endpoint.id}`, { url: 'gopher://x' });
    expect(patched.status).toBe(400);
    expect(patched.body.error.details[0].path).toBe('url');
  });

  it('takes private-network URLs when the operator allows them', async () => {
    const app = createAdminRoutes({ sql: t.world.sql, redis: t.world.redis, prefix: t.world.config.REDIS_PREFIX, webhooks: { allowPrivateNetworks: true } });
    const reply = await app.request('/v1/admin/webhook-endpoints', {
      method: 'POST',
      headers: { authorization: `Bearer ${t.a.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ url: 'http://127.0.0.1:9/hook', event_types: ['cap.paused'] }),
    });
    expect(reply.status).toBe(201);
  });

  it("keeps another tenant's endpoints and deliveries out of reach", async () => {
    const endpoint = await created(t.a.call, '/v1/admin/webhook-endpoints', { url: PUBLIC_URL, event_types: ['cap.lifted'] });
    await enqueueWebhookEvent(t.world.sql, t.a.tenantId, 'cap.lifted', { cap_id: 'cap_1' }, `isolation:${endpoint.id}`);
    const deliveries = await t.a.call('GET', `/v1/admin/webhook-endpoints/${endpoint.id}/deliveries`);
    expect(deliveries.body.data).toHaveLength(1);
    const deliveryId = deliveries.body.data[0].id;
    for (const [method, path] of [
      ['GET', `/v1/admin/webhook-endpoints/${endpoint.id}`],
      ['PATCH', `/v1/admin/webhook-endpoints/${endpoint.id}`],
      ['POST', `/v1/admin/webhook-endpoints/${endpoint.id}/rotate-secret`],
      ['GET', `/v1/admin/webhook-endpoints/${endpoint.id}/deliveries`],
      ['GET', `/v1/admin/webhook-deliveries/${deliveryId}`],
      ['POST', `/v1/admin/webhook-deliveries/${deliveryId}/redeliver`],
    ]) {
      const reply = await t.b.call(method, path, method === 'PATCH' ? { description: 'theirs' } : method === 'POST' ? {} : undefined);
      expect(reply.status, `${method} ${path}`).toBe(404);
    }
    expect((await t.b.call('GET', '/v1/admin/webhook-endpoints')).body.data).toEqual([]);
  });
});

describe('test events', () => {
  it('sends a webhook.test event to one endpoint whatever its types, and refuses a disabled one', async () => {
    const endpoint = await created(t.a.call, '/v1/admin/webhook-endpoints', { url: `${PUBLIC_URL}/test`, event_types: ['cap.paused'] });
    const sent = await t.a.call('POST', `/v1/admin/webhook-endpoints/${endpoint.id}/test`);
    expect(sent.status).toBe(201);
    expect(sent.body).toMatchObject({ endpoint_id: endpoint.id, event_type: 'webhook.test', status: 'pending', payload: { type: 'webhook.test', data: { endpoint_id: endpoint.id } } });
    const [deliveries] = await t.world.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM webhook_deliveries WHERE event_id = ${sent.body.event_id}`;
    expect(deliveries.n).toBe(1);
    expect((await t.b.call('POST', `/v1/admin/webhook-endpoints/${endpoint.id}/test`)).status).toBe(404);
    await t.a.call('PATCH', `/v1/admin/webhook-endpoints/${endpoint.id}`, { status: 'disabled' });
    expect((await t.a.call('POST', `/v1/admin/webhook-endpoints/${endpoint.id}/test`)).status).toBe(409);
  });
});

describe('the outbox contract', () => {
  it('enqueues one delivery per enabled endpoint wanting the type, once per dedupe key, and nothing when the transaction rolls back', async () => {
    const wants = await created(t.a.call, '/v1/admin/webhook-endpoints', { url: `${PUBLIC_URL}/1`, event_types: ['spend.velocity_spike'] });
    const other = await created(t.a.call, '/v1/admin/webhook-endpoints', { url: `${PUBLIC_URL}/2`, event_types: ['cap.paused'] });
    const off = await created(t.a.call, '/v1/admin/webhook-endpoints', { url: `${PUBLIC_URL}/3`, event_types: ['spend.velocity_spike'] });
    await t.a.call('PATCH', `/v1/admin/webhook-endpoints/${off.id}`, { status: 'disabled' });
    const theirs = await created(t.b.call, '/v1/admin/webhook-endpoints', { url: `${PUBLIC_URL}/4`, event_types: ['spend.velocity_spike'] });

    await Promise.all(
      Array.from({ length: 8 }, () =>
        t.world.sql.begin((tx) => enqueueWebhookEvent(tx, t.a.tenantId, 'spend.velocity_spike', { customer_id: 'cus_1' }, 'velocity:cus_1:1')),
      ),
    );
    await t.world.sql
      .begin(async (tx) => {
        await enqueueWebhookEvent(tx, t.a.tenantId, 'spend.velocity_spike', { customer_id: 'cus_1' }, 'velocity:cus_1:2');
        throw new Error('the fact was not written');
      })
      .catch(() => {});

    const count = async (endpointId: string) => (await t.a.call('GET', `/v1/admin/webhook-endpoints/${endpointId}/deliveries`)).body.data?.length;
    expect(await count(wants.id)).toBe(1);
    expect(await count(other.id)).toBe(0);
    expect(await count(off.id)).toBe(0);
    expect((await t.b.call('GET', `/v1/admin/webhook-endpoints/${theirs.id}/deliveries`)).body.data).toHaveLength(0);
    const [events] = await t.world.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM webhook_events WHERE dedupe_key LIKE 'velocity:cus_1:%'`;
    expect(events.n).toBe(1);

    const delivery = (await t.a.call('GET', `/v1/admin/webhook-endpoints/${wants.id}/deliveries`)).body.data[0];
    expect(delivery).toMatchObject({ event_type: 'spend.velocity_spike', status: 'pending', attempts: 0, endpoint_id: wants.id });
    const detail = await t.a.call('GET', `/v1/admin/webhook-deliveries/${delivery.id}`);
    expect(detail.body.payload).toMatchObject({ type: 'spend.velocity_spike', data: { customer_id: 'cus_1' } });
    expect(detail.body.attempt_log).toEqual([]);
  });
});

describe('alert settings', () => {
  it('defaults to 50/80/100 %, takes changes, and refuses negative or absurd values with the JSON path', async () => {
    expect((await t.a.call('GET', '/v1/admin/alert-settings')).body).toEqual({
      threshold_percents: [50, 80, 100],
      velocity_factor: 3,
      velocity_min_amount: '10',
      projection_horizon_seconds: 3600,
    });
    const changed = await t.a.call('PATCH', '/v1/admin/alert-settings', { threshold_percents: [90, 25.5], velocity_factor: 5, velocity_min_amount: '2.5' });
    expect(changed.status).toBe(200);
    expect(changed.body).toEqual({ threshold_percents: [25.5, 90], velocity_factor: 5, velocity_min_amount: '2.5', projection_horizon_seconds: 3600 });
    expect((await t.b.call('GET', '/v1/admin/alert-settings')).body.threshold_percents).toEqual([50, 80, 100]);

    for (const [body, path] of [
      [{ threshold_percents: [-10] }, 'threshold_percents.0'],
      [{ threshold_percents: [50, 0] }, 'threshold_percents.1'],
      [{ threshold_percents: [1e9] }, 'threshold_percents.0'],
      [{ threshold_percents: [33.333] }, 'threshold_percents.0'],
      [{ threshold_percents: [50, 50] }, 'threshold_percents'],
      [{ velocity_factor: 0.5 }, 'velocity_factor'],
      // Kept in thousandths: 2.0005 would be stored as 2 without a word.
      [{ velocity_factor: 2.0005 }, 'velocity_factor'],
      [{ velocity_min_amount: '-1' }, 'velocity_min_amount'],
      // Kept in nano-units in a bigint.
      [{ velocity_min_amount: '9223372037' }, 'velocity_min_amount'],
      [{ projection_horizon_seconds: 5 }, 'projection_horizon_seconds'],
    ] as const) {
      const reply = await t.a.call('PATCH', '/v1/admin/alert-settings', body);
      expect(reply.status, JSON.stringify(body)).toBe(400);
      expect(reply.body.error.details[0].path).toBe(path);
    }
  });
});
