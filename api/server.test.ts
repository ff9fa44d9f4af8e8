import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../pipeline/metrics.js';
import { connectPostgres, type Sql } from '../pipeline/postgres.js';
import { createTenant, type CreatedTenant } from '../store/tenants.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { TcpProxy } from '../test/support/tcp-proxy.js';
import { createApp } from './server.js';

/** Issue 9, defect 8 (and 5 beyond ingest): inputs and outages that answered 500. */
let world: Isolated;
let tenant: CreatedTenant;
let proxy: TcpProxy;
let sql: Sql;
let app: ReturnType<typeof createApp>['app'];

beforeAll(async () => {
  world = await isolated('api-server');
  tenant = await createTenant(world.sql, 'Server tests');
  proxy = await TcpProxy.start({ port: Number(new URL(world.config.DATABASE_URL).port || 5432) });
  sql = connectPostgres(world.config.DATABASE_URL.replace(/:\d+\//, `:${proxy.port}/`), { max: 2 });
  app = createApp({ config: world.config, sql, redis: world.redis, log: pino({ level: 'silent' }), metrics: new Metrics('api-test') }).app;
});
afterAll(async () => {
  await sql?.end({ timeout: 1 });
  await proxy?.close();
  await world?.cleanup();
});

async function call(method: string, path: string, token: string, body?: string) {
  const response = await app.request(path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body }),
  });
  return { status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as { error?: { code: string } } };
}

describe('the API never answers 500 for bad input or an outage', () => {
  it('refuses an invoice period past year 9998 with 400', async () => {
    const customer = await call('POST', '/v1/admin/customers', tenant.adminToken, JSON.stringify({ name: 'Initech' }));
    const id = (customer.body as { id: string }).id;
    const reply = await call('GET', `/v1/customers/${id}/invoices/current?at=9999-12-31T23:59:59Z`, tenant.ingestToken);
    expect(reply.status).toBe(400);
    expect(reply.body.error?.code).toBe('validation_failed');
  });

  it('refuses a NUL in a customer name with 400', async () => {
    const reply = await call('POST', '/v1/admin/customers', tenant.adminToken, JSON.stringify({ name: 'a\u0000b' }));
    expect(reply.status).toBe(400);
  });

  it('answers 503 with Retry-After while PostgreSQL is unreachable', async () => {
    expect((await call('GET', '/v1/admin/customers', tenant.adminToken)).status).toBe(200);
    proxy.cut('reset');
    try {
      const reply = await call('GET', '/v1/admin/customers', tenant.adminToken);
      expect({ status: reply.status, retryAfter: reply.retryAfter, code: reply.body.error?.code }).toEqual({ status: 503, retryAfter: '2', code: 'unavailable' });
    } finally {
      proxy.restore();
    }
  });
});
