import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import type { Config } from '../pipeline/config.js';
import { connectRedis } from '../pipeline/redis.js';
import { partitionOf, partitionedKey } from '../pipeline/keys.js';
import { pauseKey, type PauseRecord, type PauseScope } from '../store/pauses.js';
import { customerPartitionKey } from '../domain/flow.js';
import { AttributionResolver } from '../store/attribution.js';
import { invalidateAttribution } from '../store/attribution-keys.js';
import { issueApiKey, issueClientSecret, newClientId, newId } from '../store/credentials.js';
import { createTenant, type CreatedTenant } from '../store/tenants.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { TenantTokens } from '../store/tenant-tokens.js';
import { TcpProxy } from '../test/support/tcp-proxy.js';
import { authorizeBodySchema, authorizeReply, createAuthorizeRoutes, plainAuthorizeBody, replyJson, type AuthorizeReply } from './authorize.js';
import type { AuthorizeDecision } from '../store/authorizer.js';
import type { SpendCap } from '../store/caps.js';

const PARTITIONS = 4;

let iso: Isolated;
let config: Config;
let tenant: CreatedTenant;
let routes: ReturnType<typeof createAuthorizeRoutes>;
let app: ReturnType<typeof createAuthorizeRoutes>['app'];

interface Owner {
  customerId: string;
  teamId: string;
  agentId: string;
  apiKey: string;
  keyHash: string;
  keyId: string;
}

/** A customer whose partition is not 0, so a reader that ignores the partition would miss its flags. */
async function seedOwner(): Promise<Owner> {
  let customerId = newId('cus');
  while (partitionOf(customerPartitionKey(tenant.tenantId, customerId), PARTITIONS) === 0) customerId = newId('cus');
  const teamId = newId('team');
  const agentId = newId('agt');
  const key = issueApiKey();
  const keyId = newId('key');
  await iso.sql`INSERT INTO customers (id, tenant_id, name) VALUES (${customerId}, ${tenant.tenantId}, 'Customer')`;
  await iso.sql`INSERT INTO teams (id, tenant_id, customer_id, name) VALUES (${teamId}, ${tenant.tenantId}, ${customerId}, 'Team')`;
  await iso.sql`INSERT INTO agents (id, tenant_id, team_id, name, agent_type) VALUES (${agentId}, ${tenant.tenantId}, ${teamId}, 'Agent', 'CLAUDE')`;
  await iso.sql`
    INSERT INTO api_keys (id, tenant_id, agent_id, key_hash, prefix, last4)
    VALUES (${keyId}, ${tenant.tenantId}, ${agentId}, ${key.keyHash}, ${key.prefix}, ${key.last4})`;
  return { customerId, teamId, agentId, apiKey: key.secret, keyHash: key.keyHash, keyId };
}

async function authorize(body: unknown, token: string | null = tenant.ingestToken): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  return app.request('/v1/authorize', { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

async function decide(body: unknown): Promise<AuthorizeReply> {
  const res = await authorize(body);
  expect(res.status).toBe(200);
  expect(res.headers.get('server-timing')).toMatch(/^app;dur=\d+\.\d{3}$/);
  return (await res.json()) as AuthorizeReply;
}

async function pause(owner: Owner, scope: PauseScope, id: string): Promise<{ key: string; record: PauseRecord }> {
  const record: PauseRecord = {
    tenantId: tenant.tenantId,
    capId: newId('cap'),
    scopeKind: scope,
    scopeId: id,
    period: 'month',
    periodKey: '2026-03',
    limitNano: '5000000000',
    eventId: 'evt_over',
    pausedAt: Date.now(),
  };
  const partition = partitionOf(customerPartitionKey(tenant.tenantId, owner.customerId), PARTITIONS);
  const key = partitionedKey(config.REDIS_PREFIX, pauseKey(tenant.tenantId, scope, id), partition);
  await iso.redis.set(key, JSON.stringify(record));
  return { key, record };
}

beforeAll(async () => {
  iso = await isolated('authorize');
  config = { ...iso.config, PARTITIONS };
  tenant = await createTenant(iso.sql, 'Acme MCP');
  const resolver = new AttributionResolver(iso.sql, iso.redis, config.REDIS_PREFIX, config.KEY_CACHE_TTL_SECONDS);
  routes = createAuthorizeRoutes({ config, redis: iso.redis, resolver, tokens: new TenantTokens(iso.sql), sql: iso.sql });
  app = routes.app;
});

afterAll(async () => {
  await iso?.cleanup();
});

describe('POST /v1/authorize', () => {
  it('allows an active key and names its attribution', async () => {
    const owner = await seedOwner();
    expect(await decide({ api_key: owner.apiKey, session_id: 'sess_1', tool: 'transform_schema' })).toEqual({
      allowed: true,
      attribution: { customer_id: owner.customerId, team_id: owner.teamId, agent_id: owner.agentId },
    });
  });

  it('allows a key of an app and names the app', async () => {
    const owner = await seedOwner();
    const appId = newId('app');
    const key = issueApiKey();
    await iso.sql`INSERT INTO apps (id, tenant_id, team_id, name) VALUES (${appId}, ${tenant.tenantId}, ${owner.teamId}, 'App')`;
    await iso.sql`
      INSERT INTO api_keys (id, tenant_id, app_id, key_hash, prefix, last4)
      VALUES (${newId('key')}, ${tenant.tenantId}, ${appId}, ${key.keyHash}, ${key.prefix}, ${key.last4})`;
    expect(await decide({ api_key: key.secret })).toEqual({
      allowed: true,
      attribution: { customer_id: owner.customerId, team_id: owner.teamId, app_id: appId },
    });
  });

  it('denies an unknown key', async () => {
    expect(await decide({ api_key: issueApiKey().secret })).toEqual({
      allowed: false,
      code: 'unknown_credential',
      reason: expect.any(String),
    });
  });

  it('denies a revoked key once its row is revoked and its cache entry dropped', async () => {
    const owner = await seedOwner();
    expect((await decide({ api_key: owner.apiKey })).allowed).toBe(true);
    await iso.sql`UPDATE api_keys SET status = 'revoked', revoked_at = now() WHERE key_hash = ${owner.keyHash}`;
    await invalidateAttribution(iso.redis, config.REDIS_PREFIX, tenant.tenantId, { keyHashes: [owner.keyHash] });
    // As the admin API's announce does: the control message drops what this process holds.
    await routes.applyControl({ type: 'credentials.changed', tenantId: tenant.tenantId, keyHashes: [owner.keyHash] });
    expect(await decide({ api_key: owner.apiKey })).toEqual({ allowed: false, code: 'revoked', reason: expect.stringMatching(/revoked/) });
  });

  it('denies the keys of a suspended agent and of a suspended customer', async () => {
    const owner = await seedOwner();
    expect((await decide({ api_key: owner.apiKey })).allowed).toBe(true);
    await iso.sql`UPDATE agents SET status = 'suspended' WHERE id = ${owner.agentId}`;
    await invalidateAttribution(iso.redis, config.REDIS_PREFIX, tenant.tenantId, { keyHashes: [owner.keyHash] });
    await routes.applyControl({ type: 'hierarchy.changed', tenantId: tenant.tenantId, agentIds: [owner.agentId] });
    expect(await decide({ api_key: owner.apiKey })).toMatchObject({ allowed: false, code: 'suspended', reason: expect.stringMatching(owner.agentId) });

    const other = await seedOwner();
    await iso.sql`UPDATE customers SET status = 'suspended' WHERE id = ${other.customerId}`;
    expect(await decide({ api_key: other.apiKey })).toMatchObject({ allowed: false, code: 'suspended', reason: expect.stringMatching(other.customerId) });
  });

  for (const scope of ['api_key', 'agent', 'team', 'customer'] as const) {
    it(`denies while the ${scope} is paused, with the pause record, and allows again once the flag is gone`, async () => {
      const owner = await seedOwner();
      const id = { api_key: owner.keyId, agent: owner.agentId, team: owner.teamId, customer: owner.customerId }[scope];
      const { key, record } = await pause(owner, scope, id);
      const denied = await decide({ api_key: owner.apiKey });
      expect(denied).toEqual({
        allowed: false,
        code: 'paused',
        reason: expect.stringContaining(`${scope} ${id} is paused`),
        cap: expect.objectContaining({ cap_id: record.capId, scope_kind: scope, scope_id: id, limit: '5', period_key: '2026-03' }),
        pause: record,
        attribution: { customer_id: owner.customerId, team_id: owner.teamId, agent_id: owner.agentId },
      });
      await iso.redis.del(key);
      expect((await decide({ api_key: owner.apiKey })).allowed).toBe(true);
    });
  }

  it('denies a paused session only when that session is named', async () => {
    const owner = await seedOwner();
    const { record } = await pause(owner, 'session', 'sess_runaway');
    expect(await decide({ api_key: owner.apiKey, session_id: 'sess_runaway' })).toMatchObject({ allowed: false, code: 'paused', pause: record });
    expect((await decide({ api_key: owner.apiKey, session_id: 'sess_other' })).allowed).toBe(true);
    expect((await decide({ api_key: owner.apiKey })).allowed).toBe(true);
  });

  it('verifies a client secret in constant time against the stored digest', async () => {
    const owner = await seedOwner();
    const clientId = newClientId();
    const secret = issueClientSecret();
    await iso.sql`
      INSERT INTO client_credentials (id, tenant_id, agent_id, client_id, secret_hash, prefix, last4)
      VALUES (${newId('cc')}, ${tenant.tenantId}, ${owner.agentId}, ${clientId}, ${secret.secretHash}, ${secret.prefix}, ${secret.last4})`;
    const attribution = { customer_id: owner.customerId, team_id: owner.teamId, agent_id: owner.agentId };
    expect(await decide({ client_id: clientId, client_secret: secret.secret })).toEqual({ allowed: true, attribution });
    expect(await decide({ client_id: clientId })).toEqual({ allowed: true, attribution });
    expect(await decide({ client_id: clientId, client_secret: issueClientSecret().secret })).toEqual({
      allowed: false,
      code: 'invalid_client_secret',
      reason: expect.any(String),
    });
    expect(await decide({ client_id: newClientId(), client_secret: secret.secret })).toMatchObject({ allowed: false, code: 'unknown_credential' });
  });

  it('answers 400 for a malformed body, naming the problem', async () => {
    const owner = await seedOwner();
    const cases: [unknown, string, string?][] = [
      ['{"api_key": ', 'invalid_body'],
      [{}, 'validation_failed', 'api_key'],
      [{ api_key: owner.apiKey, client_id: 'cli_1' }, 'validation_failed', 'api_key'],
      [{ api_key: owner.apiKey, client_secret: 'cs_x' }, 'validation_failed', 'client_secret'],
      [{ api_key: owner.apiKey, sesion_id: 's' }, 'validation_failed'],
      [{ api_key: 42 }, 'validation_failed', 'api_key'],
      [[owner.apiKey], 'validation_failed'],
    ];
    for (const [body, code, path] of cases) {
      const res = await authorize(body);
      expect(res.status).toBe(400);
      const reply = (await res.json()) as { error: { code: string; details?: { path: string }[] } };
      expect(reply.error.code).toBe(code);
      if (path) expect(reply.error.details?.map((d) => d.path)).toContain(path);
    }
  });

  it('refuses a session_id ingest would refuse (a brace would move its Redis keys) on authorize, the batch and release, naming its path', async () => {
    const owner = await seedOwner();
    const post = (path: string, body: unknown) =>
      app.request(path, { method: 'POST', headers: { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const cases: [string, unknown, string][] = [
      ['/v1/authorize', { api_key: owner.apiKey, session_id: 'a{b}c' }, 'session_id'],
      ['/v1/authorize', { api_key: owner.apiKey, session_id: 'two words' }, 'session_id'],
      ['/v1/authorize/batch', { requests: [{ api_key: owner.apiKey }, { api_key: owner.apiKey, session_id: '{x}' }] }, 'requests.1.session_id'],
      ['/v1/authorize/reservations/rsv_1/release', { api_key: owner.apiKey, session_id: 'a{b}' }, 'session_id'],
    ];
    for (const [path, body, at] of cases) {
      const res = await post(path, body);
      expect(res.status, path).toBe(400);
      const reply = (await res.json()) as { error: { code: string; details?: { path: string }[] } };
      expect(reply.error.code).toBe('validation_failed');
      expect(reply.error.details?.map((d) => d.path)).toContain(at);
    }
    // What ingest accepts still passes.
    expect((await decide({ api_key: owner.apiKey, session_id: 'sess_1:a/b@c.d-e' })).allowed).toBe(true);
  });

  it('answers 401 without a valid ingest token', async () => {
    const owner = await seedOwner();
    for (const token of [null, 'amt_AAAAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB', tenant.adminToken]) {
      const res = await authorize({ api_key: owner.apiKey }, token);
      expect(res.status).toBe(401);
      expect(res.headers.get('server-timing')).toMatch(/^app;dur=/);
    }
  });

  it('answers 503 with Retry-After when Redis cannot be reached', async () => {
    const owner = await seedOwner();
    const dead = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      const resolver = new AttributionResolver(iso.sql, dead, config.REDIS_PREFIX, 60);
      const down = createAuthorizeRoutes({ config, redis: dead, resolver, tokens: new TenantTokens(iso.sql), sql: iso.sql }).app;
      const res = await down.request('/v1/authorize', {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ api_key: owner.apiKey }),
      });
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
    } finally {
      dead.disconnect();
    }
  });

  it('answers 503 at once while the Redis connection is lost', async () => {
    const owner = await seedOwner();
    const lost = connectRedis('redis://127.0.0.1:1', 'authorize-test-lost');
    lost.on('error', () => {});
    try {
      while (lost.status !== 'reconnecting') await new Promise((r) => setTimeout(r, 10));
      const resolver = new AttributionResolver(iso.sql, lost, config.REDIS_PREFIX, 60);
      const down = createAuthorizeRoutes({ config, redis: lost, resolver, tokens: new TenantTokens(iso.sql), sql: iso.sql }).app;
      const started = Date.now();
      const res = await down.request('/v1/authorize', {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ api_key: owner.apiKey }),
      });
      expect(res.status).toBe(503);
      expect(Date.now() - started).toBeLessThan(1000);
    } finally {
      lost.disconnect();
    }
  });
});

describe('POST /v1/authorize served straight on Node (serveNode)', () => {
  it('answers as the Hono route does: allowed, 401, 400 with the path, 413, Server-Timing; other requests fall through', async () => {
    const owner = await seedOwner();
    const { createServer } = await import('node:http');
    const server = createServer((req, res) => {
      if (!routes.serveNode(req, res)) {
        res.writeHead(418);
        res.end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const post = (body: string, token: string | null = tenant.ingestToken) =>
      fetch(`${base}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }, body });
    try {
      const allowed = await post(JSON.stringify({ api_key: owner.apiKey }));
      expect(allowed.status).toBe(200);
      expect(allowed.headers.get('server-timing')).toMatch(/^app;dur=\d+\.\d{3}$/);
      expect(await allowed.json()).toEqual({ allowed: true, attribution: { customer_id: owner.customerId, team_id: owner.teamId, agent_id: owner.agentId } });
      const unauthorized = await post(JSON.stringify({ api_key: owner.apiKey }), tenant.adminToken);
      expect(unauthorized.status).toBe(401);
      expect(unauthorized.headers.get('www-authenticate')).toBe('Bearer');
      expect(((await unauthorized.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
      const invalid = await post(JSON.stringify({ api_key: owner.apiKey, estimated_cost: '-2' }));
      expect(invalid.status).toBe(400);
      expect(((await invalid.json()) as { error: { details: { path: string }[] } }).error.details.map((d) => d.path)).toEqual(['estimated_cost']);
      expect((await post('{"api_key": ')).status).toBe(400);
      expect((await post(JSON.stringify({ api_key: 'x'.repeat(20_000) }))).status).toBe(413);
      expect((await fetch(`${base}/v1/authorize/batch`, { method: 'POST', body: '{}' })).status).toBe(418);
    } finally {
      server.close();
    }
  });

  it('answers many callers at once each with its own answer (answers are written in groups)', async () => {
    const owners = [await seedOwner(), await seedOwner(), await seedOwner()];
    const { createServer } = await import('node:http');
    const server = createServer((req, res) => void routes.serveNode(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/v1/authorize`;
    try {
      const calls = Array.from({ length: 30 }, (_, i) => {
        const owner = owners[i % owners.length];
        // Every fifth call is refused (400), so refusals and answers are written in the same groups.
        const body = i % 5 === 4 ? { api_key: owner.apiKey, estimated_cost: '-1' } : { api_key: owner.apiKey };
        return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${tenant.ingestToken}` }, body: JSON.stringify(body) }).then(
          async (res) => ({ i, owner, status: res.status, body: (await res.json()) as AuthorizeReply & { error?: { details: { path: string }[] } } }),
        );
      });
      for (const { i, owner, status, body } of await Promise.all(calls)) {
        if (i % 5 === 4) {
          expect(status).toBe(400);
          expect(body.error!.details.map((d) => d.path)).toEqual(['estimated_cost']);
        } else {
          expect(status).toBe(200);
          expect(body).toEqual({ allowed: true, attribution: { customer_id: owner.customerId, team_id: owner.teamId, agent_id: owner.agentId } });
        }
      }
    } finally {
      server.close();
    }
  });

  it('answers 503 at the request deadline when Redis stops answering (a frozen peer), and serves again once it answers', async () => {
    const owner = await seedOwner();
    const proxy = await TcpProxy.start({ port: Number(new URL(config.REDIS_URL).port || 6379) });
    const frozen = connectRedis(`redis://127.0.0.1:${proxy.port}`, 'authorize-test-frozen');
    frozen.on('error', () => {});
    const { createServer } = await import('node:http');
    const timeoutMs = 300;
    const slow = createAuthorizeRoutes({
      config: { ...config, HTTP_REQUEST_TIMEOUT_MS: timeoutMs },
      redis: frozen,
      resolver: new AttributionResolver(iso.sql, frozen, config.REDIS_PREFIX, 60),
      tokens: new TenantTokens(iso.sql),
      sql: iso.sql,
    });
    const server = createServer((req, res) => void slow.serveNode(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/v1/authorize`;
    const post = () =>
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${tenant.ingestToken}` }, body: JSON.stringify({ api_key: owner.apiKey }) });
    try {
      expect((await post()).status).toBe(200);
      proxy.cut('blackhole');
      const started = performance.now();
      const answers = await Promise.all([post(), post()]);
      const took = performance.now() - started;
      for (const res of answers) {
        expect(res.status).toBe(503);
        expect(res.headers.get('retry-after')).toBe('2');
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe('timeout');
      }
      expect(took).toBeGreaterThanOrEqual(timeoutMs - 5);
      expect(took).toBeLessThan(timeoutMs + 700);
      proxy.restore();
      expect((await post()).status).toBe(200);
    } finally {
      server.close();
      frozen.disconnect();
      await proxy.close();
    }
  });
});

describe('replyJson', () => {
  const cap = (id: string, action: SpendCap['action'], period: SpendCap['period']): SpendCap => ({
    id,
    tenantId: 'ten_1',
    scopeKind: 'agent',
    scopeId: 'agt_1',
    period,
    ...(period === 'rolling' ? { windowSeconds: 120 } : {}),
    limitNano: 5_000_000_000n,
    action,
  });
  const standing = (c: SpendCap, spent: bigint, reserved: bigint) => ({
    cap: c,
    periodKey: '2026-12',
    resetsAt: Date.UTC(2027, 0, 1),
    spent,
    reserved,
    remaining: c.limitNano - spent - reserved,
  });
  const attribution = { customerId: 'cus_1', teamId: 'team_1', agentId: 'agt_1', credentialId: 'key_1' };

  it('writes what authorizeReply answers, field for field and in the same order, for every shape of decision', () => {
    const caps = [standing(cap('cap_a', 'pause', 'month'), 1_250_000_000n, 0n), standing(cap('cap_b', 'alert', 'rolling'), 7n, 3n)];
    const decisions: AuthorizeDecision[] = [
      { allowed: true, caps: [], attribution },
      { allowed: true, caps, remaining: caps[0].remaining, attribution, rate: { limit: 600, used: 17 }, sessions: { max: 4, active: 2 } },
      { allowed: true, caps, remaining: caps[0].remaining, attribution: { customerId: 'cus_"quoted"', teamId: 'team_1', appId: 'app_\\1', credentialId: 'key_2' }, rate: { limit: 600, used: 18 } },
      { allowed: true, caps, attribution, reservation: { id: 'rsv_1', amount: 1_000_000n, expiresAt: Date.UTC(2026, 11, 5) } },
      { allowed: false, refusal: { code: 'rate_limited', reason: 'too many', retryAfterMs: 250 }, caps, attribution, rate: { limit: 600, used: 600 } },
      { allowed: false, refusal: { code: 'revoked', reason: 'revoked' }, caps: [] },
    ];
    for (const decision of decisions) {
      expect(replyJson(decision)).toBe(JSON.stringify(authorizeReply(decision)));
      // The pieces kept per standings array and per attribution give the same text the second time.
      expect(replyJson(decision)).toBe(JSON.stringify(authorizeReply(decision)));
    }
  });
});

describe('plainAuthorizeBody', () => {
  it('parses the common body as authorizeBodySchema does, and leaves everything else to it', () => {
    const bodies: unknown[] = [
      { api_key: 'sk_live_abcdefgh' },
      { api_key: 'sk_live_abcdefgh', session_id: 's1', tool: 'search', event_id: 'evt_1:a/b@c.d-e' },
      { client_id: 'cli_1', client_secret: 'secret' },
      { client_id: 'cli_1', session_id: 'x'.repeat(128) },
      { api_key: 'sk_live_abcdefgh', estimated_cost: '0.25' },
      { api_key: 'short' },
      { api_key: 'x'.repeat(257) },
      { api_key: 'sk_live_abcdefgh', client_id: 'cli_1' },
      {},
      { client_secret: 'secret' },
      { api_key: 'sk_live_abcdefgh', client_secret: 'secret' },
      { api_key: 'sk_live_abcdefgh', session_id: '' },
      { api_key: 'sk_live_abcdefgh', session_id: 'x'.repeat(129) },
      { api_key: 'sk_live_abcdefgh', event_id: 'bad id' },
      { api_key: 'sk_live_abcdefgh', session_id: 'a{b}' },
      { api_key: 'sk_live_abcdefgh', tool: 7 },
      { api_key: 'sk_live_abcdefgh', extra: 'x' },
      JSON.parse('{"api_key":"sk_live_abcdefgh","__proto__":"x"}'),
      JSON.parse('{"api_key":"sk_live_abcdefgh","constructor":"x"}'),
      [],
      null,
      'sk_live_abcdefgh',
    ];
    for (const body of bodies) {
      const zod = authorizeBodySchema.safeParse(body);
      const plain = plainAuthorizeBody(body);
      if (plain !== undefined) expect(zod).toMatchObject({ success: true, data: plain });
      if (plain !== undefined) expect(Object.keys(plain).sort()).toEqual(Object.keys(zod.data!).sort());
      // Whatever zod refuses is never taken by the fast path; the plain bodies above it takes.
      if (!zod.success) expect(plain).toBeUndefined();
    }
    expect(bodies.slice(0, 4).map((b) => plainAuthorizeBody(b) !== undefined)).toEqual([true, true, true, true]);
  });
});
