/**
 * Issue 9, defect 7: the analytics store held billing hostage. A ClickHouse outage stopped
 * ledger-write after ~50 s at 200 events/s (the slowest group of events:ledgered gated it) and
 * ingest after ~300 s. Here ClickHouse is cut off (through a proxy) while five times the
 * high-water mark of events flows: every event must be ledgered meanwhile, ingest must keep room,
 * Redis must hold no more than about the mark for analytics, and once ClickHouse is back it must
 * agree with the ledger to the nano-unit.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IngestWriter } from '../../api/ingest/writer.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { seedSmall, usageEvent } from '../support/billing.js';
import { startInProcess, type InProcessPipeline } from '../support/in-process.js';
import { isolated, type Isolated } from '../support/isolated.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import type { SeededTenant } from '../../ops/seed.js';

const EVENTS = 1_000;
const HIGH = 200;

let world: Isolated;
let tenant: SeededTenant;
let proxy: TcpProxy;
let pipeline: InProcessPipeline;

beforeAll(async () => {
  world = await isolated('ch-outage', { clickhouse: true });
  tenant = await seedSmall(world.sql);
  proxy = await TcpProxy.start({ port: Number(new URL(world.config.CLICKHOUSE_URL).port || 8123) });
  pipeline = await startInProcess(world, {
    CLICKHOUSE_URL: `http://${proxy.url}`,
    BACKPRESSURE_HIGH: String(HIGH),
    BACKPRESSURE_LOW: String(HIGH / 2),
    ANALYTICS_FLUSH_MS: '200',
    LEDGER_EXPORT_INTERVAL_MS: '100',
  });
}, 120_000);

afterAll(async () => {
  await pipeline?.stop();
  await proxy?.close();
  await world?.cleanup();
}, 60_000);

async function until(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const ledgerCount = async () => Number((await world.sql`SELECT count(*)::int AS n FROM usage_ledger`)[0].n);

describe('a ClickHouse outage', () => {
  it('never stops the ledger or ingest; analytics falls behind in bounded memory and catches up exactly', async () => {
    proxy.cut('reset');
    const writer = new IngestWriter(world.redis, pipeline.config);
    const agents = tenant.customers.flatMap((c) => c.teams.flatMap((t) => t.agents));
    const events = Array.from({ length: EVENTS }, (_, i) => usageEvent(tenant.tenantId, agents[i % agents.length], { inputTokens: i }));
    for (let i = 0; i < EVENTS; i += 100) {
      await until(() => writer.hasRoom(), 60_000, 'ingest has room');
      await writer.write(events.slice(i, i + 100));
    }
    await until(async () => (await ledgerCount()) === EVENTS, 90_000, 'every event ledgered while ClickHouse is down');
    // Ingest is open, and what waits for ClickHouse in Redis is bounded by the mark (plus a page and a batch in hand).
    expect(await writer.hasRoom()).toBe(true);
    const [group] = (await world.redis.xinfo('GROUPS', partitionedKey(pipeline.config.REDIS_PREFIX, 'events:analytics', 0))) as unknown[][];
    expect(Number(group[group.indexOf('lag') + 1])).toBeLessThanOrEqual(2 * HIGH);

    proxy.restore();
    const analytics = async () => {
      const result = await world.clickhouse!.query({
        query: `SELECT count() AS rows, toString(sum(cost_nano)) AS total FROM invocations FINAL`,
        format: 'JSONEachRow',
      });
      const [row] = (await result.json()) as { rows: string; total: string }[];
      return { rows: Number(row.rows), total: row.total };
    };
    await until(async () => (await analytics()).rows === EVENTS, 90_000, 'ClickHouse caught up');
    const [ledger] = await world.sql`SELECT count(*)::int AS rows, sum(cost_nano)::text AS total FROM usage_ledger`;
    expect(await analytics()).toEqual({ rows: ledger.rows, total: ledger.total });
  }, 240_000);
});
