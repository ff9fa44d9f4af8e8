/**
 * How long `POST /v1/authorize` takes: the Hono app in this process on a real port, against
 * the real Redis and a scratch PostgreSQL database (created, migrated and dropped here), with
 * one tenant, customer, team, agent and API key. The attribution cache is warmed first, then
 * N calls are fired at each concurrency; prints p50/p99 of the server's own time (from
 * Server-Timing) and of the round trip as this client sees it.
 *
 *   npx tsx loadtest/bench/authorize.bench.ts [--requests 20000] [--concurrency 1,16]
 *
 * Client and server share one event loop here: under concurrency the round trip includes
 * queueing behind the client's own work, the server time does not.
 */
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { TenantTokens } from '../../store/tenant-tokens.js';
import { createAuthorizeRoutes, type AuthorizeReply } from '../../api/authorize.js';
import { AttributionResolver } from '../../store/attribution.js';
import { issueApiKey, newId } from '../../store/credentials.js';
import { createTenant } from '../../store/tenants.js';
import { isolated } from '../../test/support/isolated.js';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '1,16' },
  },
});
const requests = Number(values.requests);
const concurrencies = values.concurrency.split(',').map(Number);

function percentile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

const world = await isolated('authbench');
const server = await (async () => {
  const { sql, redis, config } = world;
  const tenant = await createTenant(sql, 'Authorize bench');
  const [customerId, teamId, agentId] = [newId('cus'), newId('team'), newId('agt')];
  const key = issueApiKey();
  await sql`INSERT INTO customers (id, tenant_id, name) VALUES (${customerId}, ${tenant.tenantId}, 'Bench customer')`;
  await sql`INSERT INTO teams (id, tenant_id, customer_id, name) VALUES (${teamId}, ${tenant.tenantId}, ${customerId}, 'Bench team')`;
  await sql`INSERT INTO agents (id, tenant_id, team_id, name, agent_type) VALUES (${agentId}, ${tenant.tenantId}, ${teamId}, 'Bench agent', 'CLAUDE')`;
  await sql`
    INSERT INTO api_keys (id, tenant_id, agent_id, key_hash, prefix, last4)
    VALUES (${newId('key')}, ${tenant.tenantId}, ${agentId}, ${key.keyHash}, ${key.prefix}, ${key.last4})`;

  const resolver = new AttributionResolver(sql, redis, config.REDIS_PREFIX, config.KEY_CACHE_TTL_SECONDS);
  const app = createAuthorizeRoutes({ config, redis, resolver, tokens: new TenantTokens(sql, 60_000), sql }).app;
  const http = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => http.once('listening', () => resolve()));
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/v1/authorize`;
  // Every call names a session, so the MGET reads all four pause flags (agent, team, customer, session).
  const body = JSON.stringify({ api_key: key.secret, session_id: 'sess_bench', tool: 'transform_schema' });
  const headers = { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' };
  return { http, url, body, headers };
})();

async function call(): Promise<{ server: number; roundTrip: number }> {
  const start = performance.now();
  const res = await fetch(server.url, { method: 'POST', headers: server.headers, body: server.body });
  const reply = (await res.json()) as AuthorizeReply;
  const roundTrip = performance.now() - start;
  if (res.status !== 200 || !reply.allowed) throw new Error(`unexpected answer ${res.status}: ${JSON.stringify(reply)}`);
  const timing = /app;dur=([\d.]+)/.exec(res.headers.get('server-timing') ?? '');
  if (!timing) throw new Error('no Server-Timing header');
  return { server: Number(timing[1]), roundTrip };
}

try {
  for (let i = 0; i < 2000; i++) await call(); // warm the cache, the token check and the JIT
  console.log(`POST /v1/authorize, ${requests} calls per run (Redis cache warm, 4 pause flags read per call)`);
  for (const concurrency of concurrencies) {
    const serverMs = new Float64Array(requests);
    const roundTripMs = new Float64Array(requests);
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < requests) {
          const i = next++;
          const timing = await call();
          serverMs[i] = timing.server;
          roundTripMs[i] = timing.roundTrip;
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    serverMs.sort();
    roundTripMs.sort();
    const f = (ms: number) => `${ms.toFixed(3)} ms`;
    console.log(
      `concurrency ${String(concurrency).padStart(3)}: server p50 ${f(percentile(serverMs, 0.5))} p99 ${f(percentile(serverMs, 0.99))}` +
        ` | round trip p50 ${f(percentile(roundTripMs, 0.5))} p99 ${f(percentile(roundTripMs, 0.99))}` +
        ` | ${Math.round(requests / seconds)} calls/s`,
    );
  }
} finally {
  server.http.close();
  await world.cleanup();
}
