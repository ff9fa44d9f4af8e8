/**
 * Issue 9, defect 7: the analytics store held billing hostage. A ClickHouse outage stopped
 * ledger-write after ~50 s at 200 events/s (the slowest group of events:ledgered gated it) and
 * ingest after ~300 s. Here ClickHouse is cut off (through a proxy) while five times the
 * high-water mark of events flows: every event must be ledgered meanwhile, ingest must keep room,
 * analytics-dispatch must not fall behind on events:ledgered (what ClickHouse cannot take waits in
 * PostgreSQL's analytics_backlog, not in Redis), and once ClickHouse is back it must agree with the
 * ledger to the nano-unit, the backlog empty.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IngestWriter } from '../../api/ingest/writer.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { backlogSize } from '../../store/analytics-backlog.js';
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
    ANALYTICS_BACKLOG_INTERVAL_MS: '100',
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

const backlog = () => backlogSize(world.sql);
const ledgerCount = async () => Number((await world.sql`SELECT count(*)::int AS n FROM usage_ledger`)[0].n);

describe('a ClickHouse outage', () => {
  it('never stops the ledger or ingest; analytics waits in the PostgreSQL backlog, not in Redis, and catches up exactly', async () => {
    proxy.cut('reset');
    const writer = new IngestWriter(world.redis, pipeline.config);
    const agents = tenant.customers.flatMap((c) => c.teams.flatMap((t) => t.agents));
    const events = Array.from({ length: EVENTS }, (_, i) => usageEvent(tenant.tenantId, agents[i % agents.length], { inputTokens: i }));
    for (let i = 0; i < EVENTS; i += 100) {
      await until(() => writer.hasRoom(), 60_000, 'ingest has room');
      await writer.write(events.slice(i, i + 100));
    }
    await until(async () => (await ledgerCount()) === EVENTS, 90_000, 'every event ledgered while ClickHouse is down');
    // analytics-dispatch keeps up with the ledger: what ClickHouse could not take waits in PostgreSQL, not in Redis; ingest is open.
    await until(async () => (await backlog()).waiting === EVENTS, 30_000, 'every event waits in the analytics backlog');
    // (A gate that closed during the burst answers closed at once while its next read of the queues is under way: ask until it has read.)
    await until(() => writer.hasRoom(), 30_000, 'ingest has room while ClickHouse is still down');
    const groups = (await world.redis.xinfo('GROUPS', partitionedKey(pipeline.config.REDIS_PREFIX, 'events:ledgered', 0))) as unknown[][];
    const group = groups.find((g) => g[g.indexOf('name') + 1] === 'analytics-dispatch')!;
    expect(Number(group[group.indexOf('lag') + 1])).toBeLessThanOrEqual(2 * HIGH);
    expect(Number(group[group.indexOf('pending') + 1])).toBeLessThanOrEqual(2 * HIGH);

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
    await until(async () => (await backlog()).waiting === 0, 30_000, 'the backlog drained');
    expect(await backlog()).toEqual({ waiting: 0, parked: 0 });
  }, 240_000);
});
