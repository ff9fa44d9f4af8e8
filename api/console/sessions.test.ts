/**
 * The console's sign-in sessions and the refusals of its routes, against the API as composed
 * (createApp) on a world of its own: a session lives in Redis (by the digest of its id), ends when
 * signed out of, when its time is up, or when the admin token it was signed in with is retired.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Hono } from 'hono';
import { createLogger } from '../../pipeline/logger.js';
import { Metrics } from '../../pipeline/metrics.js';
import { seedTenant, type SeededTenant } from '../../ops/seed.js';
import { consoleSessionKey } from '../../store/console-sessions.js';
import { sha256 } from '../../store/credentials.js';
import { TenantTokens } from '../../store/tenant-tokens.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { createApp } from '../server.js';
import { createConsoleRoutes } from './index.js';

let world: Isolated;
let api: ReturnType<typeof createApp>;
let tenant: SeededTenant;
const log = createLogger('console-sessions-test', 'silent');
const shape = { pricing: { tool_invocations: { '*': 0.01 } }, customers: 1, teamsPerCustomer: 1, agentsPerTeam: 1 };

beforeAll(async () => {
  world = await isolated('consolesessions', { clickhouse: true });
  tenant = await seedTenant(world.sql, { name: 'Console sessions', ...shape });
  api = createApp({ config: world.config, sql: world.sql, redis: world.redis, log, metrics: new Metrics('api') });
});

afterAll(async () => {
  await api?.close();
  await world?.cleanup();
});

type App = Pick<Hono, 'request'>;

async function signIn(app: App, adminToken: string): Promise<{ sessionId: string; setCookie: string }> {
  const response = await app.request('/console/login', { method: 'POST', body: new URLSearchParams({ token: adminToken }) });
  expect(response.status).toBe(303);
  const setCookie = response.headers.get('set-cookie') ?? '';
  const sessionId = /^am_console=([^;]*);/.exec(setCookie)?.[1] ?? '';
  return { sessionId, setCookie };
}

/** A console page with a session cookie: 'in' when it served the page signed in (with its sign-out button), 'out' for the login page (401). */
async function withCookie(app: App, sessionId: string, path = '/console'): Promise<'in' | 'out'> {
  const response = await app.request(path, { headers: { cookie: `am_console=${sessionId}` } });
  const text = await response.text();
  if (response.status === 200 && text.includes('action="/console/logout"')) return 'in';
  expect(response.status).toBe(401);
  expect(text).toContain('<form method="post" action="/console/login">');
  return 'out';
}

const rotateAdmin = async (adminToken: string, graceSeconds?: number): Promise<string> => {
  const response = await api.app.request('/v1/admin/tenant-tokens/rotate', {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ kind: 'admin', ...(graceSeconds === undefined ? {} : { grace_seconds: graceSeconds }) }),
  });
  expect(response.status).toBe(201);
  return ((await response.json()) as { token: string }).token;
};

describe('console sessions', () => {
  it('keep a random id in the cookie and only its digest in Redis, with the tenant and the token id', async () => {
    const { sessionId, setCookie } = await signIn(api.app, tenant.adminToken);
    expect(sessionId).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(setCookie).not.toContain(tenant.adminToken);
    expect(setCookie).toMatch(/^am_console=[A-Za-z0-9_-]{43}; Max-Age=43200; Path=\/console; HttpOnly; SameSite=Strict$/);
    const key = consoleSessionKey(world.config.REDIS_PREFIX, sessionId);
    expect(key).toBe(`${world.config.REDIS_PREFIX}console-session:${sha256(sessionId).toString('hex')}`);
    const ttl = await world.redis.ttl(key);
    expect(ttl).toBeGreaterThan(43_200 - 60);
    expect(ttl).toBeLessThanOrEqual(43_200);
    const [token] = await world.sql<{ id: string }[]>`SELECT id FROM tenant_tokens WHERE tenant_id = ${tenant.tenantId} AND kind = 'admin'`;
    expect(JSON.parse((await world.redis.get(key))!)).toMatchObject({ tenantId: tenant.tenantId, tokenId: token.id });
    // Neither the raw id nor the admin token anywhere in this world's keys or their values.
    const keys = await world.redis.keys(`${world.config.REDIS_PREFIX}*`);
    for (const k of keys) {
      expect(k).not.toContain(sessionId);
      if ((await world.redis.type(k)) === 'string') expect(await world.redis.get(k)).not.toContain(sessionId);
    }
    expect(JSON.stringify(await world.redis.get(key))).not.toContain(tenant.adminToken);
    expect(await withCookie(api.app, sessionId)).toBe('in');
    // Secure over HTTPS (behind a proxy too).
    const secure = await api.app.request('/console/login', { method: 'POST', headers: { 'x-forwarded-proto': 'https' }, body: new URLSearchParams({ token: tenant.adminToken }) });
    expect(secure.headers.get('set-cookie')).toMatch(/; Secure/);
  });

  it('end on sign-out: the same cookie replayed afterwards gets the login page, and the API 401', async () => {
    const { sessionId } = await signIn(api.app, tenant.adminToken);
    expect(await withCookie(api.app, sessionId)).toBe('in');
    const logout = await api.app.request('/console/logout', { method: 'POST', headers: { cookie: `am_console=${sessionId}` } });
    expect(logout.status).toBe(303);
    expect(logout.headers.get('set-cookie')).toMatch(/^am_console=; Max-Age=0; Path=\/console/);
    expect(await world.redis.exists(consoleSessionKey(world.config.REDIS_PREFIX, sessionId))).toBe(0);
    expect(await withCookie(api.app, sessionId)).toBe('out');
    expect(await withCookie(api.app, sessionId, '/console/fragment')).toBe('out');
    const usage = await api.app.request('/console/api/usage?query=totals&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z', { headers: { cookie: `am_console=${sessionId}` } });
    expect(usage.status).toBe(401);
    expect(await usage.json()).toMatchObject({ error: { code: 'unauthorized' } });
  });

  it('end when signing in again replaces them', async () => {
    const first = await signIn(api.app, tenant.adminToken);
    const again = await api.app.request('/console/login', { method: 'POST', headers: { cookie: `am_console=${first.sessionId}` }, body: new URLSearchParams({ token: tenant.adminToken }) });
    expect(again.status).toBe(303);
    const second = /^am_console=([^;]*);/.exec(again.headers.get('set-cookie') ?? '')?.[1] ?? '';
    expect(second).not.toBe(first.sessionId);
    expect(await withCookie(api.app, first.sessionId)).toBe('out');
    expect(await withCookie(api.app, second)).toBe('in');
  });

  it('end when their time is up, whatever the browser keeps', async () => {
    // The server's own TTL: a console whose sessions last a second.
    const brief = createConsoleRoutes({ config: world.config, sql: world.sql, redis: world.redis, tokens: new TenantTokens(world.sql), log, clickhouse: world.clickhouse, sessionSeconds: 1 });
    const { sessionId, setCookie } = await signIn(brief, tenant.adminToken);
    expect(setCookie).toContain('Max-Age=1;');
    expect(await withCookie(brief, sessionId)).toBe('in');
    await new Promise((resolve) => setTimeout(resolve, 2_100));
    expect(await withCookie(brief, sessionId)).toBe('out');
    // And the key of a 12-hour session, expired in Redis, ends it too.
    const long = await signIn(api.app, tenant.adminToken);
    expect(await withCookie(api.app, long.sessionId)).toBe('in');
    await world.redis.pexpire(consoleSessionKey(world.config.REDIS_PREFIX, long.sessionId), 1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await withCookie(api.app, long.sessionId)).toBe('out');
  });

  it('refuse made-up or malformed ids', async () => {
    for (const id of ['amt_nope_nope', 'A'.repeat(43), '', 'x'.repeat(5000)]) expect(await withCookie(api.app, id)).toBe('out');
    // A raw admin token as the cookie (what the cookie used to hold) is no session either.
    expect(await withCookie(api.app, tenant.adminToken)).toBe('out');
  });

  it('end when the admin token they were signed in with is rotated away (at once without grace, at the end of a grace)', async () => {
    const own = await seedTenant(world.sql, { name: 'Rotating admin', ...shape });
    const before = await signIn(api.app, own.adminToken);
    expect(await withCookie(api.app, before.sessionId)).toBe('in');
    // With a grace the old token, and its sessions, last until the grace is over.
    const next = await rotateAdmin(own.adminToken, 3600);
    expect(await withCookie(api.app, before.sessionId)).toBe('in');
    const during = await signIn(api.app, next);
    // Without grace: every admin token but the new one is retired now, and so are their sessions.
    const newest = await rotateAdmin(next);
    expect(await withCookie(api.app, before.sessionId)).toBe('out');
    expect(await withCookie(api.app, during.sessionId)).toBe('out');
    const after = await signIn(api.app, newest);
    expect(await withCookie(api.app, after.sessionId)).toBe('in');
    // Revoked outright (by hand in PostgreSQL): the session ends with it.
    await world.sql`UPDATE tenant_tokens SET status = 'revoked', revoked_at = now() WHERE tenant_id = ${own.tenantId} AND kind = 'admin'`;
    expect(await withCookie(api.app, after.sessionId)).toBe('out');
  });
});

describe('console routes', () => {
  const get = (path: string) => api.app.request(path, { headers: { authorization: `Bearer ${tenant.adminToken}` } });

  it('answer a name an object inherits (toString, constructor, __proto__) as any unknown range or spend kind', async () => {
    for (const range of ['toString', 'constructor', '__proto__', 'hasOwnProperty']) {
      for (const path of [`/console?range=${range}`, `/console/fragment?range=${range}`]) {
        const response = await get(path);
        expect({ path, status: response.status }).toEqual({ path, status: 400 });
      }
    }
    for (const kind of ['toString', 'constructor', '__proto__', 'valueOf']) {
      const response = await get(`/console/spend/${kind}`);
      expect({ kind, status: response.status }).toEqual({ kind, status: 404 });
    }
    expect((await get('/console?range=30d')).status).toBe(200);
    expect((await get('/console/spend/team')).status).toBe(200);
  });

  it('refuse usage ranges outside what ClickHouse keeps (it would wrap them around), naming from or to', async () => {
    const usage = async (from: string, to: string) => {
      const response = await get(`/console/api/usage?query=totals&from=${from}&to=${to}`);
      return { status: response.status, body: (await response.json()) as { error?: { code: string; details: { path: string }[] } } };
    };
    const paths = (answer: Awaited<ReturnType<typeof usage>>) => answer.body.error?.details.map((d) => d.path);
    const cases: [string, string, string[]][] = [
      ['1890-01-22T17:31:44Z', '1890-02-22T17:31:44Z', ['from', 'to']],
      ['2162-04-07T06:28:16Z', '2162-05-08T06:28:16Z', ['from', 'to']],
      ['1969-12-31T23:59:59Z', '1970-01-02T00:00:00Z', ['from']],
      ['1969-12-31T23:59:59.999Z', '1970-01-02T00:00:00Z', ['from']],
      ['2106-01-20T00:00:00Z', '2106-02-07T06:28:16Z', ['to']],
      ['2106-02-07T06:28:16Z', '2106-02-08T00:00:00Z', ['from', 'to']],
    ];
    for (const [from, to, expected] of cases) {
      const answer = await usage(from, to);
      expect({ from, to, status: answer.status, code: answer.body.error?.code, paths: paths(answer) }).toEqual({ from, to, status: 400, code: 'validation_failed', paths: expected });
    }
    // The edges themselves are answered.
    expect((await usage('1970-01-01T00:00:00Z', '1970-01-02T00:00:00Z')).status).toBe(200);
    expect((await usage('2106-01-20T00:00:00Z', '2106-02-07T06:28:15Z')).status).toBe(200);
    expect((await usage('2106-01-20T00:00:00Z', '2106-02-07T06:28:15.999Z')).status).toBe(200);
    // Less than a second apart is no range in ClickHouse's whole seconds (its end minus a second would wrap).
    const within = await usage('1970-01-01T00:00:00Z', '1970-01-01T00:00:00.500Z');
    expect({ status: within.status, paths: paths(within) }).toEqual({ status: 400, paths: ['from'] });
  });

  it('name an unknown usage parameter by its name', async () => {
    const response = await get('/console/api/usage?query=totals&from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z&x=1&y=2');
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: { code: 'validation_failed', details: [{ path: 'x', message: 'unknown query parameter' }, { path: 'y' }] } });
  });
});
