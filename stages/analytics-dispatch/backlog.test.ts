import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { entryFields, newOrigin } from '../../pipeline/blocks.js';
import { loadConfig } from '../../pipeline/config.js';
import { createLogger } from '../../pipeline/logger.js';
import { Metrics } from '../../pipeline/metrics.js';
import { partitionedKey } from '../../pipeline/keys.js';
import type { AnalyticsEvent, CheckedEvent } from '../../domain/flow.js';
import { connectClickHouse } from '../../store/clickhouse.js';
import { enqueueForAnalytics, takeBacklog } from '../../store/analytics-backlog.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { writeLedger } from '../ledger-write/index.js';
import { ledgeredEvent, stageEntries } from '../testing.js';
import { BacklogDrainer, handOverFromLedgerExport } from './backlog.js';
import { invocationsBy, invocationTotals } from './queries.js';

let world: Isolated;
let run = 0;
beforeAll(async () => {
  world = await isolated('analytics-backlog', { clickhouse: true });
});
afterAll(() => world?.cleanup());

const log = createLogger('analytics-backlog-test', 'silent');
const config = () => loadConfig({ ...process.env, ...world.env });
const drainer = (pageSize?: number) => new BacklogDrainer(world.sql, world.clickhouse!, config(), log, undefined, { pageSize });
const newTenant = () => `ten_bl${++run}`;

function checked(tenantId: string, overrides: Parameters<typeof ledgeredEvent>[0] = {}): CheckedEvent {
  const { overCap: _ignored, ...event } = ledgeredEvent({ tenantId, ...overrides });
  return event;
}

async function ledger(events: CheckedEvent[]): Promise<void> {
  await writeLedger(world.sql, stageEntries(events));
}

async function waitUntil(check: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function drainAll(d: BacklogDrainer): Promise<void> {
  while ((await d.drainOnce()) > 0);
}

const keysOf = (events: { tenantId: string; eventId: string }[]) => events.map(({ tenantId, eventId }) => ({ tenantId, eventId }));

async function backlogOf(tenant: string) {
  return world.sql<{ event_id: string; parked: boolean; last_error: string | null }[]>`
    SELECT event_id, parked_at IS NOT NULL AS parked, last_error FROM analytics_backlog WHERE tenant_id = ${tenant} ORDER BY id`;
}

describe('the analytics backlog', () => {
  it('reads back every field as the ledger holds it, text that needs escaping and times to the millisecond included', async () => {
    const tenant = newTenant();
    const awkward = 'quote " backslash \\ newline \n tab \t ünïcödé 🤖 \u2028';
    const event = checked(tenant, {
      recordedAt: Date.UTC(2026, 2, 31, 23, 59, 59, 999),
      ingestedAt: Date.UTC(2026, 3, 1, 0, 0, 0, 1),
      toolName: awkward,
      sessionId: `ses_${awkward}`,
      errorType: 'Timeout',
      durationMs: 2 ** 40,
      inputTokens: 2 ** 33,
      outputTokens: 7,
      retryCount: 2,
      isParallel: true,
      cost: { total: 2n ** 63n - 1n, tool: awkward },
    });
    const plain = checked(tenant, { attribution: { agentId: undefined, appId: 'app_1' }, model: undefined });
    await ledger([event, plain]);
    await enqueueForAnalytics(world.sql, keysOf([event, plain]));
    const items = await world.sql.begin((tx) => takeBacklog(tx, 1_000));
    const read = items.map((item) => item.event).filter((e): e is AnalyticsEvent => e?.tenantId === tenant);
    expect(read[0]).toEqual({
      tenantId: tenant,
      eventId: event.eventId,
      eventType: event.eventType,
      recordedAt: event.recordedAt,
      ingestedAt: event.ingestedAt,
      sessionId: event.sessionId,
      toolName: awkward,
      mcpServerId: event.mcpServerId,
      model: event.model,
      durationMs: 2 ** 40,
      status: event.status,
      inputTokens: 2 ** 33,
      outputTokens: 7,
      retryCount: 2,
      isParallel: true,
      errorType: 'Timeout',
      overCap: false,
      attribution: {
        customerId: event.attribution.customerId,
        teamId: event.attribution.teamId,
        agentId: event.attribution.agentId,
        credentialId: event.attribution.credentialId,
        productId: event.attribution.productId,
      },
      subscription: {
        subscriptionId: event.subscription.subscriptionId,
        ratePlanId: event.subscription.ratePlanId,
        ratePlanVersionId: event.subscription.ratePlanVersionId,
        ratePlanVersion: event.subscription.ratePlanVersion,
        currency: event.subscription.currency,
      },
      cost: { total: 2n ** 63n - 1n, tool: awkward },
    });
    expect(read[1].attribution).toMatchObject({ appId: 'app_1' });
    expect(read[1].attribution.agentId).toBeUndefined();
    expect(read[1].model).toBeUndefined();
    // Read, not taken: the transaction ended without removing them.
    await drainAll(drainer());
    expect(await backlogOf(tenant)).toEqual([]);
  });

  it('inserts what waits into ClickHouse once, leaving out what ClickHouse has already, and empties', async () => {
    const tenant = newTenant();
    const events = Array.from({ length: 30 }, (_, i) => checked(tenant, { cost: { total: BigInt(i + 1) * 1_000_000_007n } }));
    await ledger(events);
    // Ten of them reached ClickHouse before (an insert whose answer was lost), and all are enqueued, five twice.
    await drainAll(drainer());
    await enqueueForAnalytics(world.sql, keysOf(events.slice(0, 10)));
    await drainAll(drainer());
    await enqueueForAnalytics(world.sql, keysOf([...events, ...events.slice(25)]));
    await drainAll(drainer(7)); // pages smaller than what waits
    expect(await backlogOf(tenant)).toEqual([]);
    const [{ total }] = await world.sql`SELECT sum(cost_nano)::text AS total FROM usage_ledger WHERE tenant_id = ${tenant}`;
    expect(await invocationTotals(world.clickhouse!, tenant)).toMatchObject({ events: 30, costNano: BigInt(total) });
    // The rollups (materialized views) saw each event once: the raw table has no duplicate to replace.
    const raw = await world.clickhouse!.query({ query: `SELECT count() AS n FROM invocations WHERE tenant_id = '${tenant}'`, format: 'JSONEachRow' });
    expect(Number((await raw.json<{ n: string }>())[0].n)).toBe(30);
    const byAgent = await invocationsBy(world.clickhouse!, tenant, 'agent');
    expect(byAgent.reduce((sum, row) => sum + row.events, 0)).toBe(30);
  });

  it('keeps every row while ClickHouse is down, and drains them once it is back', async () => {
    const tenant = newTenant();
    const events = [checked(tenant), checked(tenant)];
    await ledger(events);
    await enqueueForAnalytics(world.sql, keysOf(events));
    const down = connectClickHouse({ url: 'http://127.0.0.1:9', database: world.env.CLICKHOUSE_DATABASE, requestTimeoutMs: 2_000 });
    try {
      const cut = new BacklogDrainer(world.sql, down, config(), log);
      await expect(cut.drainOnce()).rejects.toThrow();
      expect((await backlogOf(tenant)).map((r) => r.event_id)).toEqual(events.map((e) => e.eventId));
    } finally {
      await down.close();
    }
    await drainAll(drainer());
    expect(await backlogOf(tenant)).toEqual([]);
    expect((await invocationTotals(world.clickhouse!, tenant)).events).toBe(2);
  });

  it('parks a row ClickHouse refuses for its data, with the reason, and inserts the rest', async () => {
    const tenant = newTenant();
    const good = Array.from({ length: 9 }, () => checked(tenant));
    // PostgreSQL holds a negative retry count; ClickHouse's UInt32 refuses it (Code 72).
    const bad = checked(tenant, { retryCount: -1 });
    await ledger([...good.slice(0, 4), bad, ...good.slice(4)]);
    await enqueueForAnalytics(world.sql, keysOf([...good.slice(0, 4), bad, ...good.slice(4)]));
    await drainAll(drainer());
    const left = await backlogOf(tenant);
    expect(left).toEqual([{ event_id: bad.eventId, parked: true, last_error: expect.stringContaining('Code: 72') }]);
    expect((await invocationTotals(world.clickhouse!, tenant)).events).toBe(9);
    // A parked row is not tried again on its own.
    expect(await drainer().drainOnce()).toBe(0);
    await world.sql`DELETE FROM analytics_backlog WHERE tenant_id = ${tenant}`;
  });

  it('reports the rows waiting as am_analytics_backlog_rows while it runs, during an outage and after', async () => {
    const tenant = newTenant();
    const events = [checked(tenant), checked(tenant), checked(tenant)];
    await ledger(events);
    await enqueueForAnalytics(world.sql, keysOf(events));
    const metrics = new Metrics('analytics-backlog-test');
    const gauge = async () => (await metrics.registry.getSingleMetricAsString('am_analytics_backlog_rows')).split('\n').at(-1) ?? '';
    const fast = loadConfig({ ...process.env, ...world.env, ANALYTICS_BACKLOG_INTERVAL_MS: '20' });
    const down = connectClickHouse({ url: 'http://127.0.0.1:9', database: world.env.CLICKHOUSE_DATABASE, requestTimeoutMs: 2_000 });
    const cut = new BacklogDrainer(world.sql, down, fast, log, metrics);
    cut.start();
    try {
      await waitUntil(async () => (await gauge()).endsWith(' 3'), 'the gauge shows the three rows while ClickHouse is down');
    } finally {
      await cut.stop();
      await down.close();
    }
    const live = new BacklogDrainer(world.sql, world.clickhouse!, fast, log, metrics);
    live.start();
    try {
      await waitUntil(async () => (await gauge()).endsWith(' 0'), 'the gauge falls to 0 once drained');
    } finally {
      await live.stop();
    }
    expect(await backlogOf(tenant)).toEqual([]);
    expect((await invocationTotals(world.clickhouse!, tenant)).events).toBe(3);
  });

  it('drops a row that names no ledger row', async () => {
    const tenant = newTenant();
    await enqueueForAnalytics(world.sql, [{ tenantId: tenant, eventId: 'never_ledgered' }]);
    await drainAll(drainer());
    expect(await backlogOf(tenant)).toEqual([]);
  });

  it('lets several drainers work at once, each row inserted once', async () => {
    const tenant = newTenant();
    const events = Array.from({ length: 200 }, () => checked(tenant));
    await ledger(events);
    await enqueueForAnalytics(world.sql, keysOf(events));
    const racers = [drainer(25), drainer(25), drainer(25)];
    for (let round = 0; round < 6; round++) await Promise.all(racers.map((r) => r.drainOnce()));
    await drainAll(drainer());
    expect(await backlogOf(tenant)).toEqual([]);
    const raw = await world.clickhouse!.query({ query: `SELECT count() AS n FROM invocations WHERE tenant_id = '${tenant}'`, format: 'JSONEachRow' });
    expect(Number((await raw.json<{ n: string }>())[0].n)).toBe(200);
  });

  it('takes over from the ledger export: what it appended and what lay after its cursor reach ClickHouse, then its keys are gone', async () => {
    const tenant = newTenant();
    const prefix = `${world.env.REDIS_PREFIX}handover${run}:`;
    const exported = [checked(tenant), checked(tenant)];
    const unread = [checked(tenant), checked(tenant), checked(tenant)];
    await ledger(exported);
    // The export's cursor after the two exported rows (its JSON text), and its stream holding them, not yet inserted.
    const [last] = await world.sql<{ xid: string; event_id: string }[]>`
      SELECT ledger_xid::text AS xid, event_id FROM usage_ledger WHERE tenant_id = ${tenant} ORDER BY ledger_xid DESC, event_id DESC LIMIT 1`;
    const cursorKey = partitionedKey(prefix, 'export:analytics:cursor', 0);
    const streamKey = partitionedKey(prefix, 'events:analytics', 0);
    await world.redis.set(cursorKey, JSON.stringify([last.xid, tenant, last.event_id]));
    const block = exported.map((e) => ({ ...e, overCap: false }));
    await world.redis.xadd(streamKey, '*', ...entryFields(block, newOrigin()));
    await ledger(unread);
    await handOverFromLedgerExport(world.sql, world.redis, prefix, log);
    expect(await world.redis.exists(cursorKey, streamKey)).toBe(0);
    await drainAll(drainer());
    expect(await backlogOf(tenant)).toEqual([]);
    expect((await invocationTotals(world.clickhouse!, tenant)).events).toBe(5);
    // Run again at the next start: nothing to hand over.
    await handOverFromLedgerExport(world.sql, world.redis, prefix, log);
    expect(await backlogOf(tenant)).toEqual([]);
  });
});
