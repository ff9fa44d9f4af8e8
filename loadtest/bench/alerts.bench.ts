// npm run bench:alerts [-- --smoke]: what the alerts and webhooks add, measured on this machine.
//  1. the spend-alerts stage handler: ledgered events per second through one SpendAlerts (one
//     Node thread, real Redis and PostgreSQL), each event under three caps, a committed plan and
//     the velocity check, its CPU per event, and Redis's time in its scripts per event;
//     then the counters' script (advanceOnce) alone on a batch of the pipeline's shape;
//  2. the webhook worker: deliveries per second to a local receiver answering 200, one worker.
// A benchmark, not a test: figures vary with the machine and its load (print `uptime` with them).
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { newWebhookSecret } from '../../domain/webhooks.js';
import type { LedgeredEvent } from '../../domain/flow.js';
import { loadConfig } from '../../pipeline/config.js';
import { createLogger } from '../../pipeline/logger.js';
import type { StageEntry } from '../../pipeline/stage.js';
import { AdvanceBatch } from '../../pipeline/advance-once.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { startWebhookWorker } from '../../ops/webhook-worker.js';
import { seedTenant } from '../../ops/seed.js';
import { SpendAlerts } from '../../stages/spend-alerts/index.js';
import { ledgeredEvent } from '../../stages/testing.js';
import { enqueueWebhookEvent, sealSecret } from '../../store/webhooks.js';
import { isolated } from '../../test/support/isolated.js';
import { redisCommandStats } from './sampler.js';

const smoke = process.argv.includes('--smoke');
const EVENTS = smoke ? 2_000 : 50_000;
const BATCH = 500;
const BLOCK = 100;
const DELIVERIES = smoke ? 200 : 3_000;

const world = await isolated('bench-alerts');

/** EVALSHA's calls and microseconds so far, from Redis's INFO commandstats. */
async function redisScriptTime(): Promise<{ calls: number; usec: number }> {
  return (await redisCommandStats(world.redis)).get('evalsha') ?? { calls: 0, usec: 0 };
}
try {
  const seeded = await seedTenant(world.sql, {
    name: 'bench alerts',
    pricing: { billing_mode: 'COMMITTED', commitment: { committed_amount: 10_000_000, committed_price: '1000' }, tool_invocations: { '*': '0.01' } },
    customers: 1,
    teamsPerCustomer: 1,
    agentsPerTeam: 1,
    // Far above what the run spends: the thresholds are checked on every event, none is crossed.
    caps: [
      { scope: 'agent', period: 'month', limitNano: 10n ** 15n, action: 'alert' },
      { scope: 'team', period: 'day', limitNano: 10n ** 15n, action: 'alert' },
      { scope: 'customer', period: 'month', limitNano: 10n ** 15n, action: 'pause' },
    ],
  });
  const customer = seeded.customers[0];
  const team = customer.teams[0];
  const now = Date.now();
  const entries: StageEntry<LedgeredEvent>[] = Array.from({ length: EVENTS }, (_, i) => ({
    id: `${now}-${i}`,
    partition: 0,
    tags: [],
    payload: ledgeredEvent({
      tenantId: seeded.tenantId,
      recordedAt: now - 1_000 + (i % 1_000),
      sessionId: `sess_${i % 200}`,
      attribution: { customerId: customer.id, teamId: team.id, agentId: team.agents[0].id },
      subscription: { subscriptionId: customer.subscriptionId, ratePlanId: seeded.ratePlanId },
      cost: { total: 10_000_000n },
    }),
  }));
  const alerts = new SpendAlerts(world.sql, world.redis, world.config.REDIS_PREFIX);
  await alerts.load();
  // As the pipeline hands them: batches of BATCH events in blocks of BLOCK (one ingest request each).
  const blocksOf = (from: number) =>
    Array.from({ length: BATCH / BLOCK }, (_, b) => {
      const events = entries.slice(from + b * BLOCK, from + (b + 1) * BLOCK);
      return { id: events[0].id, origin: `blk_${now}_${from + b * BLOCK}`, events };
    });
  await alerts.handleBlocks(blocksOf(0)); // warm: caches, plan, script
  const scriptsBefore = await redisScriptTime();
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  for (let i = BATCH; i < entries.length; i += BATCH) await alerts.handleBlocks(blocksOf(i));
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const scriptsAfter = await redisScriptTime();
  const handled = entries.length - BATCH;
  console.log(
    JSON.stringify({
      bench: 'spend-alerts handler',
      events: handled,
      batch: BATCH,
      block: BLOCK,
      events_per_second: Math.round(handled / seconds),
      cpu_us_per_event: Number(((cpu.user + cpu.system) / handled).toFixed(1)),
      // Redis's own time in scripts (the counters' advanceOnce), server-wide: meaningful on an otherwise idle Redis.
      redis_script_us_per_event: Number(((scriptsAfter.usec - scriptsBefore.usec) / handled).toFixed(2)),
      redis_script_calls: scriptsAfter.calls - scriptsBefore.calls,
    }),
  );

  // The counters' script alone on a batch shaped like the pipeline's at --rate max (a 5,000-event
  // batch of spend-alerts: 50 blocks, ~1,800 distinct keys): Redis's time per call.
  const SCRIPT_CALLS = smoke ? 10 : 200;
  const hour = Math.floor(now / 3_600_000);
  const counterKey = (name: string) => partitionedKey(world.config.REDIS_PREFIX, name, 0);
  const advanceCall = async (call: number) => {
    const batch = new AdvanceBatch();
    for (let i = 0; i < 800; i++) {
      batch.item(counterKey(`bench-marker:${call}:${i % 50}`));
      if (i < 100) batch.min(counterKey(`bench-session-start:${i}`), BigInt(now + call), 172_800);
      batch.add(counterKey(`bench-spend-h:agent:${i}:${hour}`), 10_000_000n + BigInt(i), 612_000);
      batch.get(counterKey(`bench-spend-h:agent:${i}:${hour - 1}`));
    }
    await batch.run(world.redis, 86_400);
  };
  await advanceCall(0);
  const advanceBefore = await redisScriptTime();
  const advanceStarted = performance.now();
  for (let call = 1; call <= SCRIPT_CALLS; call++) await advanceCall(call);
  const advanceMs = performance.now() - advanceStarted;
  const advanceAfter = await redisScriptTime();
  console.log(
    JSON.stringify({
      bench: 'advanceOnce script',
      calls: SCRIPT_CALLS,
      keys_per_call: 50 + 100 + 800 + 800,
      redis_us_per_call: Math.round((advanceAfter.usec - advanceBefore.usec) / (advanceAfter.calls - advanceBefore.calls)),
      round_trip_ms_per_call: Number((advanceMs / SCRIPT_CALLS).toFixed(2)),
    }),
  );

  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200).end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  const secret = newWebhookSecret();
  await world.sql`
    INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret_sealed, secret_prefix)
    VALUES ('we_bench', ${seeded.tenantId}, ${url}, ${['cap.paused']}::text[], ${sealSecret(secret)}, ${secret.slice(0, 12)})`;
  for (let i = 0; i < DELIVERIES; i += 500) {
    await world.sql.begin(async (tx) => {
      for (let j = i; j < Math.min(i + 500, DELIVERIES); j++) await enqueueWebhookEvent(tx, seeded.tenantId, 'cap.paused', { n: j }, `bench:${j}`);
    });
  }
  const config = loadConfig({ ...process.env, ...world.env, WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true', WEBHOOK_POLL_INTERVAL_MS: '20' });
  const deliveredAt = performance.now();
  const worker = startWebhookWorker(world.sql, config, createLogger('bench-webhooks', 'silent'));
  for (;;) {
    const [row] = await world.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM webhook_deliveries WHERE status = 'succeeded'`;
    if (row.n >= DELIVERIES) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const deliverySeconds = (performance.now() - deliveredAt) / 1000;
  await worker.stop();
  server.close();
  console.log(
    JSON.stringify({
      bench: 'webhook worker',
      deliveries: DELIVERIES,
      concurrency: config.WEBHOOK_CONCURRENCY,
      deliveries_per_second: Math.round(DELIVERIES / deliverySeconds),
    }),
  );
} finally {
  await world.cleanup();
}
