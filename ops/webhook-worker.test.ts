import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { newWebhookSecret, retryDelayMs, type WebhookEventType } from '../domain/webhooks.js';
import { createAdminRoutes } from '../api/admin/index.js';
import { loadConfig, type Config } from '../pipeline/config.js';
import { createLogger } from '../pipeline/logger.js';
import { createTenant, type CreatedTenant } from '../store/tenants.js';
import { enqueueWebhookEvent, pruneWebhookHistory, recordAttempt, sealSecret, type RetryPolicy } from '../store/webhooks.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { attemptDelivery, retryPolicy, startWebhookWorker, type WebhookWorker } from './webhook-worker.js';

/**
 * What the worker's own resolution of a name (the one it checks) answers, per name, where a test
 * says so; the system's answer otherwise. The connection itself is never given these answers, so a
 * name here answers differently to the check and to a second resolution, as a rebinding DNS does.
 */
const checkedDns = vi.hoisted(() => new Map<string, { address: string; family: number }[] | 'never'>());
vi.mock('node:dns/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:dns/promises')>();
  const lookup = ((host: string, options: import('node:dns').LookupOptions) => {
    const answer = checkedDns.get(host);
    if (answer === 'never') return new Promise(() => {});
    return answer ? Promise.resolve(answer) : actual.lookup(host, options);
  }) as typeof actual.lookup;
  return { ...actual, default: { ...actual, lookup }, lookup };
});

/**
 * The delivery worker against real HTTP receivers started here: one that answers 200, one that
 * fails, one that never answers (times out), one that answers slowly. Signatures are checked
 * with the standardwebhooks package, not with our code.
 */

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

interface Receiver {
  url: string;
  received: Received[];
  close(): Promise<void>;
}

type Behaviour = (n: number) => { status: number; delayMs?: number; headers?: Record<string, string> } | 'hang';

async function receiver(behaviour: Behaviour): Promise<Receiver> {
  const received: Received[] = [];
  const hanging = new Set<import('node:http').ServerResponse>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() });
      const answer = behaviour(received.length);
      if (answer === 'hang') {
        hanging.add(res);
        return;
      }
      setTimeout(() => res.writeHead(answer.status, answer.headers).end('ok'), answer.delayMs ?? 0);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of hanging) res.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const SECRET_KEY = randomBytes(32).toString('base64');

const WORKER_ENV = {
  WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
  WEBHOOK_SECRET_KEY: SECRET_KEY,
  // Far above any answer here: a process's first fetch loads its HTTP client (undici), over 100 ms,
  // and on a loaded 2-core machine that alone passed 400 ms. Tests of timeouts set their own.
  WEBHOOK_TIMEOUT_MS: '5000',
  WEBHOOK_RETRY_BASE_MS: '100',
  WEBHOOK_RETRY_MAX_DELAY_MS: '1000',
  WEBHOOK_POLL_INTERVAL_MS: '50',
  WEBHOOK_CONCURRENCY: '8',
};

let world: Isolated;
let tenant: CreatedTenant;
const receivers: Receiver[] = [];
const workers: WebhookWorker[] = [];

function workerConfig(overrides: Record<string, string> = {}): Config {
  return loadConfig({ ...process.env, ...world.env, ...WORKER_ENV, ...overrides });
}

function startWorker(overrides: Record<string, string> = {}): WebhookWorker {
  const worker = startWebhookWorker(world.sql, workerConfig(overrides), createLogger('test-webhooks', 'silent'));
  workers.push(worker);
  return worker;
}

async function stopWorkers(): Promise<void> {
  await Promise.all(workers.splice(0).map((w) => w.stop()));
}

async function endpointFor(url: string, types: WebhookEventType[] = ['cap.threshold_reached']): Promise<{ id: string; secret: string }> {
  const secret = newWebhookSecret();
  const id = `we_${randomBytes(6).toString('hex')}`;
  await world.sql`
    INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret_sealed, secret_prefix)
    VALUES (${id}, ${tenant.tenantId}, ${url}, ${types}::text[], ${sealSecret(secret, SECRET_KEY)}, ${secret.slice(0, 12)})`;
  return { id, secret };
}

async function track(r: Promise<Receiver>): Promise<Receiver> {
  const started = await r;
  receivers.push(started);
  return started;
}

async function until<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const deliveriesOf = (endpointId: string) =>
  world.sql<{ id: string; status: string; attempts: number; event_id: string }[]>`
    SELECT id, status, attempts, event_id FROM webhook_deliveries WHERE endpoint_id = ${endpointId} ORDER BY id`;
const attemptsOf = (deliveryId: string) =>
  world.sql<{ attempt: number; response_status: number | null; error: string | null; succeeded: boolean }[]>`
    SELECT attempt, response_status, error, succeeded FROM webhook_attempts WHERE delivery_id = ${deliveryId} ORDER BY attempt`;
/**
 * An endpoint at `url`, the only one enabled, given one event by a worker that forbids private
 * networks: its id, and its attempts once there are two or one went through (the worker stopped).
 */
async function attemptsWithPrivateForbidden(url: string, dedupeKey: string) {
  await world.sql`UPDATE webhook_endpoints SET status = 'disabled'`;
  const { id } = await endpointFor(url);
  await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.threshold_reached', { n: 1 }, dedupeKey);
  startWorker({ WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'false' });
  const [delivery] = await deliveriesOf(id);
  const attempts = await twoAttemptsOrSuccess(delivery.id);
  await stopWorkers();
  return { id, attempts };
}

/** The attempts of a delivery once there are two, or one went through (a refused one is retried). */
const twoAttemptsOrSuccess = (deliveryId: string) =>
  until('two attempts, or one that went through', async () => {
    const rows = await attemptsOf(deliveryId);
    return (rows.length >= 2 || rows.some((a) => a.succeeded)) && rows;
  });

beforeAll(async () => {
  world = await isolated('webhook-worker');
  tenant = await createTenant(world.sql, 'Webhooks');
});

afterAll(async () => {
  await stopWorkers();
  await Promise.all(receivers.map((r) => r.close()));
  await world?.cleanup();
});

describe('webhook delivery', () => {
  it('signs each delivery per Standard Webhooks: the standardwebhooks library verifies it (a slow receiver too)', async () => {
    const fast = await track(receiver(() => ({ status: 200 })));
    const slow = await track(receiver(() => ({ status: 204, delayMs: 250 })));
    const a = await endpointFor(fast.url);
    const b = await endpointFor(slow.url);
    await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.threshold_reached', { cap_id: 'cap_1', spent: '5' }, 'signed:1');
    startWorker();
    await until('both deliveries', async () => fast.received.length === 1 && slow.received.length === 1);
    await stopWorkers();

    for (const [r, secret] of [
      [fast, a.secret],
      [slow, b.secret],
    ] as const) {
      const { headers, body } = r.received[0];
      const verified = new Webhook(secret).verify(body, headers as Record<string, string>) as { type: string; data: unknown };
      expect(verified).toMatchObject({ type: 'cap.threshold_reached', data: { cap_id: 'cap_1', spent: '5' } });
      expect(headers['webhook-id']).toMatch(/^msg_/);
      // A tampered body or another secret does not verify.
      expect(() => new Webhook(secret).verify(body.replace('"5"', '"6"'), headers as Record<string, string>)).toThrow();
      expect(() => new Webhook(newWebhookSecret()).verify(body, headers as Record<string, string>)).toThrow();
    }
    expect(fast.received[0].headers['webhook-id']).toBe(slow.received[0].headers['webhook-id']);
    for (const d of [...(await deliveriesOf(a.id)), ...(await deliveriesOf(b.id))]) expect(d).toMatchObject({ status: 'succeeded', attempts: 1 });
    const [sealed] = await world.sql<{ secret_sealed: string }[]>`SELECT secret_sealed FROM webhook_endpoints WHERE id = ${a.id}`;
    expect(sealed.secret_sealed.startsWith('v1:')).toBe(true);
    expect(sealed.secret_sealed).not.toContain(a.secret.slice(6));
  });

  it('signs with both secrets during a rotation grace period, each verifying on its own', async () => {
    const r = await track(receiver(() => ({ status: 200 })));
    const { id, secret: oldSecret } = await endpointFor(r.url);
    const newSecret = newWebhookSecret();
    await world.sql`
      UPDATE webhook_endpoints SET previous_secret_sealed = secret_sealed, previous_secret_expires_at = now() + interval '1 hour',
        secret_sealed = ${sealSecret(newSecret, SECRET_KEY)} WHERE id = ${id}`;
    await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.threshold_reached', { n: 1 }, 'rotation:1');
    startWorker();
    await until('the delivery', async () => r.received.length === 1);
    await stopWorkers();
    const { headers, body } = r.received[0];
    expect(String(headers['webhook-signature']).split(' ')).toHaveLength(2);
    expect(() => new Webhook(newSecret).verify(body, headers as Record<string, string>)).not.toThrow();
    expect(() => new Webhook(oldSecret).verify(body, headers as Record<string, string>)).not.toThrow();
  });

  it('retries a failing receiver with exponential backoff, logging every attempt, until it succeeds', async () => {
    const r = await track(receiver((n) => ({ status: n <= 3 ? 503 : 200 })));
    const { id } = await endpointFor(r.url);
    await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.threshold_reached', { n: 2 }, 'retry:1');
    startWorker();
    const [delivery] = await until('success after three failures', async () => {
      const rows = await deliveriesOf(id);
      return rows[0]?.status === 'succeeded' && rows;
    });
    await stopWorkers();
    expect(delivery.attempts).toBe(4);
    expect(await attemptsOf(delivery.id)).toEqual([
      { attempt: 1, response_status: 503, error: 'HTTP 503', succeeded: false },
      { attempt: 2, response_status: 503, error: 'HTTP 503', succeeded: false },
      { attempt: 3, response_status: 503, error: 'HTTP 503', succeeded: false },
      { attempt: 4, response_status: 200, error: null, succeeded: true },
    ]);
    // Each wait is at least the backoff scheduled for it (100, 200, 400 ms): lower bounds, whatever the machine's load.
    const gaps = r.received.slice(1).map((x, i) => x.at - r.received[i].at);
    for (const [i, gap] of gaps.entries()) expect(gap).toBeGreaterThanOrEqual(100 * 2 ** i - 5);
    // Every attempt carries the same webhook-id, so the receiver can tell a retry.
    expect(new Set(r.received.map((x) => x.headers['webhook-id'])).size).toBe(1);
    const [endpoint] = await world.sql<{ failing_since: Date | null; status: string }[]>`SELECT failing_since, status FROM webhook_endpoints WHERE id = ${id}`;
    expect(endpoint).toEqual({ failing_since: null, status: 'enabled' });
  });

  it('gives up a receiver that never answers after the retry window, each attempt ending at the request timeout', async () => {
    const r = await track(receiver(() => 'hang'));
    const { id } = await endpointFor(r.url);
    await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.threshold_reached', { n: 3 }, 'timeout:1');
    startWorker({ WEBHOOK_RETRY_WINDOW_SECONDS: '2', WEBHOOK_TIMEOUT_MS: '400' });
    const [delivery] = await until('the delivery given up', async () => {
      const rows = await deliveriesOf(id);
      return rows[0]?.status === 'failed' && rows;
    });
    await stopWorkers();
    const attempts = await attemptsOf(delivery.id);
    expect(attempts.length).toBeGreaterThanOrEqual(2);
    expect(attempts.length).toBe(delivery.attempts);
    for (const a of attempts) expect(a).toMatchObject({ succeeded: false, response_status: null, error: 'no answer within 400 ms' });
    expect(r.received.length).toBe(attempts.length);
  });

  it('refuses at delivery time a host that resolves to a private-network address when the operator forbids them, and retries it like any failure', async () => {
    const r = await track(receiver(() => ({ status: 200 })));
    // localhost resolves to loopback. Written here, past the admin API's check of the URL: a name that
    // was public when the endpoint was made and resolves to a private address now.
    const { id, attempts } = await attemptsWithPrivateForbidden(r.url.replace('127.0.0.1', 'localhost'), 'private:1');
    expect(r.received).toHaveLength(0);
    for (const a of attempts) {
      expect(a).toMatchObject({
        succeeded: false,
        response_status: null,
        error: expect.stringMatching(/^localhost resolves to (127\.0\.0\.1|::1), a private-network address, which this deployment forbids$/),
      });
    }
    // Still pending: the name may resolve to a public address by the next attempt.
    expect((await deliveriesOf(id))[0].status).toBe('pending');
    const [endpoint] = await world.sql<{ failing_since: Date | null }[]>`SELECT failing_since FROM webhook_endpoints WHERE id = ${id}`;
    expect(endpoint.failing_since).not.toBeNull();
    // The workers of the tests below allow private networks: they must not deliver it.
    await world.sql`UPDATE webhook_endpoints SET status = 'disabled' WHERE id = ${id}`;
  });

  it('refuses at delivery time an IPv6 literal that embeds a private IPv4 address (::ffff:7f00:1 is 127.0.0.1), connecting to nothing; delivers to it when the operator allows private networks', async () => {
    const r = await track(receiver(() => ({ status: 200 })));
    await world.sql`UPDATE webhook_endpoints SET status = 'disabled'`;
    // As the admin API stored such a URL before its check knew the notation: the URL parser writes
    // http://[::ffff:127.0.0.1]:port/ as http://[::ffff:7f00:1]:port/.
    const url = new URL(r.url.replace('127.0.0.1', '[::ffff:127.0.0.1]')).href;
    expect(url).toContain('[::ffff:7f00:1]');
    const { id, attempts } = await attemptsWithPrivateForbidden(url, 'mapped:1');
    expect(r.received).toHaveLength(0);
    for (const a of attempts) {
      expect(a).toMatchObject({ succeeded: false, response_status: null, error: '::ffff:7f00:1 resolves to ::ffff:7f00:1, a private-network address, which this deployment forbids' });
    }
    // Allowed, the same URL reaches the local receiver.
    startWorker({ WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true' });
    await until('the delivery', async () => (await deliveriesOf(id))[0]?.status === 'succeeded');
    await stopWorkers();
    expect(r.received).toHaveLength(1);
    await world.sql`UPDATE webhook_endpoints SET status = 'disabled' WHERE id = ${id}`;
  });

  it('connects to the address it checked, never to what a second resolution of the name returns (DNS rebinding)', async () => {
    const r = await track(receiver(() => ({ status: 200 })));
    await world.sql`UPDATE webhook_endpoints SET status = 'disabled'`;
    // The check's resolution of localhost answers a public address; any other resolution (the
    // system's) answers loopback, where the receiver listens.
    checkedDns.set('localhost', [{ address: '203.0.113.10', family: 4 }]);
    try {
      const { id } = await endpointFor(r.url.replace('127.0.0.1', 'localhost'));
      await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.threshold_reached', { n: 7 }, 'rebind:1');
      startWorker({ WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'false', WEBHOOK_TIMEOUT_MS: '1000' });
      const [delivery] = await deliveriesOf(id);
      const attempts = await twoAttemptsOrSuccess(delivery.id);
      await stopWorkers();
      // The attempts went to 203.0.113.10 (refused or unanswered there), not to the receiver on loopback.
      expect(r.received).toHaveLength(0);
      for (const a of attempts) expect(a).toMatchObject({ succeeded: false, response_status: null });
      await world.sql`UPDATE webhook_endpoints SET status = 'disabled' WHERE id = ${id}`;
    } finally {
      checkedDns.delete('localhost');
    }
  });

  it('gives the name of an endpoint the attempt\'s timeout to resolve: a resolver that never answers fails the attempt at the timeout', async () => {
    checkedDns.set('hooks.never-resolves.test', 'never');
    try {
      const config = { ...loadConfig(), WEBHOOK_ALLOW_PRIVATE_NETWORKS: false, WEBHOOK_TIMEOUT_MS: 200 };
      const delivery = {
        id: 'whd_dns', tenantId: 'ten_dns', endpointId: 'we_dns', attempt: 1, url: 'https://hooks.never-resolves.test/hook',
        messageId: 'msg_dns', payload: '{}', secretsSealed: [sealSecret(newWebhookSecret(), config.WEBHOOK_SECRET_KEY)], createdAt: new Date(),
      };
      const started = Date.now();
      const outcome = await attemptDelivery(delivery, config);
      expect(outcome).toMatchObject({ succeeded: false, error: 'hooks.never-resolves.test did not resolve within 200 ms' });
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      checkedDns.delete('hooks.never-resolves.test');
    }
  });

  it('never follows a redirect: a 3xx is a failed attempt, and its Location gets nothing', async () => {
    const target = await track(receiver(() => ({ status: 200 })));
    const redirecting = await track(receiver(() => ({ status: 307, headers: { location: target.url } })));
    await world.sql`UPDATE webhook_endpoints SET status = 'disabled'`;
    const { id } = await endpointFor(redirecting.url);
    await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.threshold_reached', { n: 8 }, 'redirect:1');
    startWorker();
    const [delivery] = await deliveriesOf(id);
    const [attempt] = await until('an attempt', async () => {
      const rows = await attemptsOf(delivery.id);
      return rows.length >= 1 && rows;
    });
    await stopWorkers();
    expect(attempt).toMatchObject({ succeeded: false, response_status: 307, error: 'HTTP 307' });
    expect(redirecting.received.length).toBeGreaterThanOrEqual(1);
    expect(target.received).toHaveLength(0);
    await world.sql`UPDATE webhook_endpoints SET status = 'disabled' WHERE id = ${id}`;
  });

  it('keeps delivering to other endpoints while one hangs until its timeout', async () => {
    const hanging = await track(receiver(() => 'hang'));
    const fine = await track(receiver(() => ({ status: 200 })));
    await world.sql`UPDATE webhook_endpoints SET status = 'disabled'`;
    const stuck = await endpointFor(hanging.url, ['cap.lifted']);
    await endpointFor(fine.url, ['cap.lifted']);
    for (let i = 0; i < 12; i++) await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.lifted', { i }, `hol:${i}`);
    startWorker({ WEBHOOK_TIMEOUT_MS: '15000', WEBHOOK_CONCURRENCY: '4', WEBHOOK_ENDPOINT_CONCURRENCY: '2' });
    await until('every delivery to the answering endpoint', async () => fine.received.length === 12, 14_000);
    // The hanging endpoint's first attempts are still in flight, two at most: the other endpoint did not wait for them.
    expect(hanging.received.length).toBeGreaterThanOrEqual(1);
    expect(hanging.received.length).toBeLessThanOrEqual(2);
    const [attempts] = await world.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.endpoint_id = ${stuck.id}`;
    expect(attempts.n).toBe(0);
    await hanging.close();
    await stopWorkers();
  });

  it('disables an endpoint failing for longer than WEBHOOK_DISABLE_AFTER_SECONDS, and stops delivering to it', async () => {
    const r = await track(receiver(() => ({ status: 500 })));
    const { id } = await endpointFor(r.url);
    await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.threshold_reached', { n: 4 }, 'disable:1');
    startWorker({ WEBHOOK_DISABLE_AFTER_SECONDS: '1', WEBHOOK_RETRY_MAX_DELAY_MS: '300' });
    await until('the endpoint disabled', async () => {
      const [row] = await world.sql<{ status: string }[]>`SELECT status FROM webhook_endpoints WHERE id = ${id}`;
      return row.status === 'disabled';
    });
    const [row] = await world.sql<{ disabled_reason: string }[]>`SELECT disabled_reason FROM webhook_endpoints WHERE id = ${id}`;
    expect(row.disabled_reason).toMatch(/^failing since \d{4}-/);
    const seen = r.received.length;
    await new Promise((resolve) => setTimeout(resolve, 800));
    await stopWorkers();
    expect(r.received.length).toBe(seen);
    const [delivery] = await deliveriesOf(id);
    expect(delivery.status).toBe('pending');
  });

  it('shares the outbox between several workers: every event delivered once, none twice', async () => {
    const r = await track(receiver(() => ({ status: 200, delayMs: 5 })));
    const { id } = await endpointFor(r.url);
    const total = 150;
    for (let i = 0; i < total; i++) await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.threshold_reached', { i }, `many:${i}`);
    for (let i = 0; i < 3; i++) startWorker();
    await until('every delivery', async () => r.received.length >= total, 60_000);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await stopWorkers();
    const ids = r.received.map((x) => x.headers['webhook-id']);
    expect(ids.length).toBe(total);
    expect(new Set(ids).size).toBe(total);
    expect((await deliveriesOf(id)).every((d) => d.status === 'succeeded' && d.attempts === 1)).toBe(true);
  });

  it('redelivers through the admin API with the same webhook-id, and refuses for a disabled endpoint', async () => {
    const r = await track(receiver(() => ({ status: 200 })));
    const { id } = await endpointFor(r.url, ['spend.velocity_spike']);
    await enqueueWebhookEvent(world.sql, tenant.tenantId, 'spend.velocity_spike', { customer_id: 'cus_9' }, 'redeliver:1');
    startWorker();
    await until('the first delivery', async () => r.received.length === 1);
    const [delivery] = await until('recorded', async () => {
      const rows = await deliveriesOf(id);
      return rows[0]?.status === 'succeeded' && rows;
    });
    const admin = createAdminRoutes({ sql: world.sql, redis: world.redis, prefix: world.config.REDIS_PREFIX });
    const call = (method: string, path: string, body?: unknown) =>
      admin.request(path, {
        method,
        headers: { authorization: `Bearer ${tenant.adminToken}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    const again = await call('POST', `/v1/admin/webhook-deliveries/${delivery.id}/redeliver`);
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ status: 'pending', attempts: 1 });
    await until('the redelivery', async () => r.received.length === 2);
    const detail = await until('recorded', async () => {
      const body = (await (await call('GET', `/v1/admin/webhook-deliveries/${delivery.id}`)).json()) as { status: string; attempt_log: unknown[] };
      return body.status === 'succeeded' && body.attempt_log.length === 2 && body;
    });
    expect(detail.attempt_log).toMatchObject([{ attempt: 1, succeeded: true }, { attempt: 2, succeeded: true, response_status: 200 }]);
    expect(r.received[1].headers['webhook-id']).toBe(r.received[0].headers['webhook-id']);
    await stopWorkers();

    await call('PATCH', `/v1/admin/webhook-endpoints/${id}`, { status: 'disabled' });
    const refused = await call('POST', `/v1/admin/webhook-deliveries/${delivery.id}/redeliver`);
    expect(refused.status).toBe(409);
  });

  it('loses nothing when the worker process is SIGKILLed mid-delivery: the claims run out and another worker delivers', async () => {
    const r = await track(receiver(() => ({ status: 200, delayMs: 150 })));
    const { id } = await endpointFor(r.url);
    const total = 40;
    for (let i = 0; i < total; i++) await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.threshold_reached', { i }, `kill:${i}`);
    const spawnWorker = (): ChildProcess =>
      spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./webhook-worker.ts', import.meta.url))], {
        // A short timeout keeps the killed worker's claims short (twice the timeout and 5 s).
        env: { ...process.env, ...world.env, ...WORKER_ENV, WEBHOOK_TIMEOUT_MS: '400', WEBHOOK_CONCURRENCY: '4', LOG_LEVEL: 'silent' },
        stdio: 'ignore',
      });
    const first = spawnWorker();
    await until('a few deliveries', async () => r.received.length >= 4, 30_000);
    first.kill('SIGKILL');
    await new Promise((resolve) => first.once('exit', resolve));
    // Claimed by the killed worker and never recorded.
    const inFlight = await world.sql<{ event_id: string }[]>`
      SELECT event_id FROM webhook_deliveries WHERE endpoint_id = ${id} AND status = 'pending' AND attempts > 0`;
    const second = spawnWorker();
    try {
      await until('every delivery recorded as succeeded', async () => (await deliveriesOf(id)).every((d) => d.status === 'succeeded'), 60_000);
    } finally {
      second.kill('SIGTERM');
      await new Promise((resolve) => second.once('exit', resolve));
    }
    const received = new Set(r.received.map((x) => x.headers['webhook-id']));
    expect(received.size).toBe(total);
    // What the killed worker had in hand went out again under the same webhook-id (at least once, as the spec has it).
    for (const { event_id } of inFlight) expect(r.received.filter((x) => x.headers['webhook-id'] === event_id).length).toBeGreaterThanOrEqual(1);
    expect((await deliveriesOf(id)).filter((d) => d.attempts >= 2).length).toBeGreaterThanOrEqual(inFlight.length);
  });
});

describe('pruneWebhookHistory', () => {
  it('forgets finished deliveries, their attempts and events past the retention, never a pending one', async () => {
    // Only this endpoint takes the events below.
    await world.sql`UPDATE webhook_endpoints SET status = 'disabled'`;
    const { id } = await endpointFor('https://hooks.example.com/prune');
    for (const key of ['prune:old-done', 'prune:old-pending', 'prune:new-done']) await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.threshold_reached', {}, key);
    const idOf = async (key: string) =>
      (await world.sql<{ id: string; event_id: string }[]>`
        SELECT d.id, d.event_id FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id WHERE e.dedupe_key = ${key} AND d.endpoint_id = ${id}`)[0];
    const oldDone = await idOf('prune:old-done');
    const oldPending = await idOf('prune:old-pending');
    const newDone = await idOf('prune:new-done');
    await world.sql`UPDATE webhook_events SET created_at = now() - interval '50 days' WHERE id IN (${oldDone.event_id}, ${oldPending.event_id})`;
    await world.sql`UPDATE webhook_deliveries SET status = 'succeeded', completed_at = now() - interval '50 days', attempts = 1 WHERE id = ${oldDone.id}`;
    await world.sql`UPDATE webhook_deliveries SET status = 'failed', completed_at = now(), attempts = 1 WHERE id = ${newDone.id}`;
    await world.sql`UPDATE webhook_deliveries SET next_attempt_at = now() + interval '1 day' WHERE id = ${oldPending.id}`;
    for (const d of [oldDone, newDone]) {
      await world.sql`INSERT INTO webhook_attempts (delivery_id, attempt, tenant_id, started_at, duration_ms, succeeded) VALUES (${d.id}, 1, ${tenant.tenantId}, now(), 5, true)`;
    }
    expect(await pruneWebhookHistory(world.sql, new Date(Date.now() - 45 * 86_400_000))).toBe(2);
    const left = await world.sql<{ id: string }[]>`SELECT id FROM webhook_deliveries WHERE id IN (${oldDone.id}, ${oldPending.id}, ${newDone.id}) ORDER BY id`;
    expect(left.map((r) => r.id).sort()).toEqual([oldPending.id, newDone.id].sort());
    expect(await world.sql`SELECT 1 FROM webhook_events WHERE id = ${oldDone.event_id}`).toHaveLength(0);
    expect(await world.sql`SELECT 1 FROM webhook_attempts WHERE delivery_id = ${oldDone.id}`).toHaveLength(0);
    expect(await world.sql`SELECT 1 FROM webhook_attempts WHERE delivery_id = ${newDone.id}`).toHaveLength(1);
    // Its dedupe key went with it: the same fact would be enqueued again (why the retention outlives MAX_EVENT_AGE_DAYS).
    expect(() => loadConfig({ MAX_EVENT_AGE_DAYS: '50' })).toThrow(/WEBHOOK_RETENTION_DAYS=45: must be above MAX_EVENT_AGE_DAYS=50/);
  });
});

describe('retryDelayMs', () => {
  it('doubles from the base up to the cap, with at most 10 % jitter', () => {
    expect([1, 2, 3, 4, 5].map((n) => retryDelayMs(n, 5_000, 3_600_000, () => 0))).toEqual([5_000, 10_000, 20_000, 40_000, 80_000]);
    expect(retryDelayMs(30, 5_000, 3_600_000, () => 0)).toBe(3_600_000);
    expect(retryDelayMs(1, 5_000, 3_600_000, () => 0.999)).toBeLessThanOrEqual(5_500);
  });
});

describe('the default policy (pipeline/config.ts): retries with exponential backoff for 24 h, disabling after 5 days', () => {
  const policy = retryPolicy(loadConfig({}));
  const DAY_MS = 86_400_000;

  /**
   * A delivery of an endpoint of its own, whose attempts are recorded as failed by hand (no worker
   * runs), each as if `sinceEventMs` had passed since its event when it was claimed. Resolves with
   * what became of it and, when it is to be tried again, how long after its event.
   */
  async function failingDelivery(name: string) {
    const { id: endpointId } = await endpointFor(`https://hooks.example.com/${name}`);
    await enqueueWebhookEvent(world.sql, tenant.tenantId, 'cap.threshold_reached', {}, name);
    const [{ id }] = await deliveriesOf(endpointId);
    return {
      id,
      endpointId,
      async fail(attempt: number, sinceEventMs: number, withPolicy: RetryPolicy = policy) {
        const claimedAt = new Date();
        const createdAt = new Date(claimedAt.getTime() - sinceEventMs);
        // What a claim does to the row.
        await world.sql`UPDATE webhook_deliveries SET attempts = ${attempt}, last_attempt_at = ${claimedAt} WHERE id = ${id}`;
        const claimed = { id, tenantId: tenant.tenantId, endpointId, attempt, url: '', messageId: '', payload: '', secretsSealed: [], createdAt };
        const result = await recordAttempt(world.sql, claimed, { startedAt: claimedAt, durationMs: 5, responseStatus: 503, error: 'HTTP 503', succeeded: false }, withPolicy);
        const [row] = await world.sql<{ next_attempt_at: Date }[]>`SELECT next_attempt_at FROM webhook_deliveries WHERE id = ${id}`;
        return { result, nextSinceEventMs: row.next_attempt_at.getTime() - createdAt.getTime() };
      },
    };
  }

  it('keeps retrying a failing delivery with doubling waits until 24 h after its event, the last attempt at 24 h, and gives it up after that one', async () => {
    const delivery = await failingDelivery('default-window');
    const waits: number[] = [];
    const watched: RetryPolicy = {
      ...policy,
      delayMs: (n) => {
        const ms = policy.delayMs(n);
        waits.push(ms);
        return ms;
      },
    };
    const attemptsAtMs = [0];
    for (;;) {
      const { result, nextSinceEventMs } = await delivery.fail(attemptsAtMs.length, attemptsAtMs[attemptsAtMs.length - 1], watched);
      if (result !== 'retrying') {
        expect(result).toBe('failed');
        break;
      }
      attemptsAtMs.push(nextSinceEventMs);
    }
    expect(await deliveriesOf(delivery.endpointId)).toMatchObject([{ status: 'failed', attempts: attemptsAtMs.length }]);
    // Exponential: each wait twice the one before (10 % jitter either way) until they reach an hour.
    const early = waits.filter((ms) => ms < 3_600_000);
    expect(early.length).toBeGreaterThanOrEqual(5);
    for (const [i, ms] of early.slice(1).entries()) {
      expect(ms / early[i]).toBeGreaterThanOrEqual(2 / 1.1);
      expect(ms / early[i]).toBeLessThanOrEqual(2.2);
    }
    // Each attempt came after the wait before it (cut short only to fall on the window's end)...
    for (const [i, at] of attemptsAtMs.slice(1).entries()) {
      expect(at - attemptsAtMs[i]).toBeGreaterThan(0);
      expect(at - attemptsAtMs[i]).toBeLessThanOrEqual(waits[i] + 1_000);
    }
    // ...the last one exactly 24 h after the event, the one before within the window: given up then, not before.
    expect(attemptsAtMs[attemptsAtMs.length - 1]).toBe(DAY_MS);
    expect(attemptsAtMs[attemptsAtMs.length - 2]).toBeLessThan(DAY_MS);
    expect(attemptsAtMs[attemptsAtMs.length - 2] + waits[waits.length - 2]).toBeGreaterThanOrEqual(DAY_MS);
  });

  it('gives up at once an attempt claimed after the window (a redelivery of an old delivery): one attempt, no more', async () => {
    const delivery = await failingDelivery('default-late');
    expect((await delivery.fail(3, DAY_MS + 60_000)).result).toBe('failed');
    expect(await deliveriesOf(delivery.endpointId)).toMatchObject([{ status: 'failed', attempts: 3 }]);
  });

  it('cuts the last wait short so that an attempt falls on the window\'s end', async () => {
    const delivery = await failingDelivery('default-straddle');
    // Claimed 1 s before the end: the 3 h wait after attempt 20 is cut to that second.
    const { result, nextSinceEventMs } = await delivery.fail(20, DAY_MS - 1_000);
    expect(result).toBe('retrying');
    expect(nextSinceEventMs).toBe(DAY_MS);
  });

  it('disables an endpoint failing for 5 days, not a minute before', async () => {
    const delivery = await failingDelivery('default-disable');
    const statusOf = async () =>
      (await world.sql<{ status: string }[]>`SELECT status FROM webhook_endpoints WHERE id = ${delivery.endpointId}`)[0].status;
    await world.sql`UPDATE webhook_endpoints SET failing_since = now() - interval '5 days' + interval '1 minute' WHERE id = ${delivery.endpointId}`;
    expect((await delivery.fail(1, 0)).result).toBe('retrying');
    expect(await statusOf()).toBe('enabled');
    await world.sql`UPDATE webhook_endpoints SET failing_since = now() - interval '5 days' - interval '1 minute' WHERE id = ${delivery.endpointId}`;
    await delivery.fail(2, 0);
    expect(await statusOf()).toBe('disabled');
  });
});
