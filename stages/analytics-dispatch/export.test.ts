import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventsOfEntries } from '../../pipeline/blocks.js';
import { loadConfig } from '../../pipeline/config.js';
import { createLogger } from '../../pipeline/logger.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { connectPostgres } from '../../pipeline/postgres.js';
import type { CheckedEvent } from '../../domain/flow.js';
import type { AnalyticsEvent } from '../../domain/flow.js';
import { STREAMS } from '../../store/streams.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { writeLedger } from '../ledger-write/index.js';
import { ledgeredEvent, stageEntries } from '../testing.js';
import { LedgerExport } from './export.js';
import { dispatchBatch } from './index.js';
import { invocationTotals } from './queries.js';

let world: Isolated;
let run = 0;
beforeAll(async () => {
  world = await isolated('ledger-export', { clickhouse: true });
});
afterAll(() => world?.cleanup());

const log = createLogger('ledger-export-test', 'silent');

/** An export with a key prefix of its own, so each test reads its own stream and cursor. */
function exporter(overrides: Record<string, string> = {}) {
  const config = loadConfig({ ...process.env, ...world.env, REDIS_PREFIX: `${world.env.REDIS_PREFIX}x${++run}:`, ...overrides });
  const key = partitionedKey(config.REDIS_PREFIX, STREAMS.analytics, 0);
  return {
    exporter: new LedgerExport(world.sql, world.redis, config, log),
    config,
    async exported(): Promise<AnalyticsEvent[]> {
      const entries = (await world.redis.xrangeBuffer(key, '-', '+')) as [Buffer, Buffer[]][];
      return eventsOfEntries<AnalyticsEvent>(entries).map((e) => e.payload);
    },
  };
}

function checked(tenantId: string, overrides: Parameters<typeof ledgeredEvent>[0] = {}): CheckedEvent {
  const { overCap: _ignored, ...event } = ledgeredEvent({ tenantId, ...overrides });
  return event;
}

async function ledger(events: CheckedEvent[]): Promise<void> {
  await writeLedger(world.sql, stageEntries(events));
}

async function drain(e: LedgerExport): Promise<void> {
  while ((await e.exportOnce()) > 0);
}

describe('the ledger export', () => {
  it('copies every ledger row once, in commit order, with what ClickHouse shows', async () => {
    const tenant = `ten_x${run}`;
    const events = [
      checked(tenant, { errorType: 'Timeout', isParallel: true, retryCount: 3 }),
      checked(tenant, { cost: { total: 2n ** 63n - 1n }, attribution: { agentId: undefined, appId: 'app_1' }, model: undefined }),
    ];
    await ledger(events);
    const x = exporter();
    await drain(x.exporter);
    const exported = (await x.exported()).filter((e) => e.tenantId === tenant);
    expect(exported.map((e) => e.eventId)).toEqual(events.map((e) => e.eventId));
    expect(exported[0]).toMatchObject({ errorType: 'Timeout', isParallel: true, retryCount: 3, overCap: false, inputTokens: 2400 });
    expect(exported[1]).toMatchObject({ cost: { total: 2n ** 63n - 1n, tool: 'transform_schema' }, attribution: { appId: 'app_1' } });
    expect(exported[1].attribution.agentId).toBeUndefined();
    expect(exported[1].model).toBeUndefined();
    // Nothing new: nothing appended.
    expect(await x.exporter.exportOnce()).toBe(0);
  });

  it('carries every field as the ledger holds it, text that needs escaping and times to the millisecond included', async () => {
    const tenant = `ten_x${run}_fields`;
    const awkward = 'quote " backslash \\ newline \n tab \t ünïcödé 🤖 \u2028';
    const { overCap: _overCap, ...event } = ledgeredEvent({
      tenantId: tenant,
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
    await ledger([event]);
    const x = exporter();
    await drain(x.exporter);
    const [exported] = (await x.exported()).filter((e) => e.tenantId === tenant);
    expect(exported).toEqual({
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
  });

  it('never skips a row of a transaction that commits after later ones (the horizon holds the cursor back)', async () => {
    const tenant = `ten_x${run}_slow`;
    const x = exporter();
    await drain(x.exporter);
    const before = (await x.exported()).length;
    const slow = checked(tenant, { eventId: 'slow' });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let inserted!: () => void;
    const insertedYet = new Promise<void>((r) => (inserted = r));
    // A writer that inserts first (smaller transaction id) and commits last.
    const writer = connectPostgres(world.config.DATABASE_URL, { max: 1 });
    const slowTx = writer.begin(async (tx) => {
      await tx`
        INSERT INTO usage_ledger (tenant_id, event_id, ingest_nonce, event_type, recorded_at, ingested_at, customer_id, team_id,
          credential_id, subscription_id, rate_plan_id, rate_plan_version_id, rate_plan_version, period_start, execution_status,
          duration_ms, input_tokens, output_tokens, retry_count, cost_nano, cost_breakdown, currency)
        VALUES (${tenant}, ${slow.eventId}, ${slow.ingestNonce}, ${slow.eventType}, now(), now(), 'cus', 'team', 'key', 'sub', 'rp',
          'rpv', 1, now(), 'SUCCESS', 1, 2, 3, 0, 5, '{}', 'USD')`;
      inserted();
      await held;
    });
    await insertedYet;
    const fast = [checked(tenant, { eventId: 'fast1' }), checked(tenant, { eventId: 'fast2' })];
    await ledger(fast);
    await drain(x.exporter);
    // The fast rows have larger transaction ids than the open one: they wait too.
    expect((await x.exported()).slice(before).filter((e) => e.tenantId === tenant)).toEqual([]);
    release();
    await slowTx;
    await writer.end();
    await drain(x.exporter);
    expect((await x.exported()).slice(before).filter((e) => e.tenantId === tenant).map((e) => e.eventId)).toEqual(['slow', 'fast1', 'fast2']);
  });

  it('is not held back by a transaction open in another database of the cluster', async () => {
    const tenant = `ten_x${run}_other`;
    const x = exporter();
    await drain(x.exporter);
    const other = connectPostgres(world.config.DATABASE_URL.replace(/\/[^/]+$/, '/postgres'), { max: 1 });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let open!: () => void;
    const isOpen = new Promise<void>((r) => (open = r));
    const elsewhere = other.begin(async (tx) => {
      await tx`SELECT pg_current_xact_id()`; // takes a transaction id, as a writer would
      open();
      await held;
    });
    try {
      await isOpen;
      await ledger([checked(tenant)]);
      await drain(x.exporter);
      expect((await x.exported()).filter((e) => e.tenantId === tenant)).toHaveLength(1);
    } finally {
      release();
      await elsewhere;
      await other.end();
    }
  });

  it('appends each page once when several exporters race on one cursor', async () => {
    const tenant = `ten_x${run}_race`;
    await ledger(Array.from({ length: 50 }, () => checked(tenant)));
    const config = exporter().config;
    const shared = { ...process.env, ...world.env, REDIS_PREFIX: config.REDIS_PREFIX };
    const racers = [1, 2, 3].map(() => new LedgerExport(world.sql, world.redis, loadConfig(shared), log));
    for (let round = 0; round < 5; round++) await Promise.all(racers.map((r) => r.exportOnce()));
    const key = partitionedKey(config.REDIS_PREFIX, STREAMS.analytics, 0);
    const entries = (await world.redis.xrangeBuffer(key, '-', '+')) as [Buffer, Buffer[]][];
    const ids = eventsOfEntries<AnalyticsEvent>(entries).map((e) => e.payload).filter((e) => e.tenantId === tenant).map((e) => e.eventId);
    expect(ids.length).toBe(50);
    expect(new Set(ids).size).toBe(50);
  });

  it('stops filling the stream at its high-water mark and goes on once it drains (a ClickHouse outage costs bounded memory)', async () => {
    const tenant = `ten_x${run}_mark`;
    const x = exporter({ BACKPRESSURE_HIGH: '100', BACKPRESSURE_LOW: '50' });
    const key = partitionedKey(x.config.REDIS_PREFIX, STREAMS.analytics, 0);
    await ledger(Array.from({ length: 150 }, () => checked(tenant)));
    // No consumer group yet: the lag is the stream's length.
    await drain(x.exporter);
    const filled = (await x.exported()).length;
    expect(filled).toBeGreaterThan(100);
    expect(filled).toBeLessThanOrEqual(200); // a page is at most the mark
    // Over the mark: new rows wait in the ledger.
    await ledger(Array.from({ length: 10 }, () => checked(tenant)));
    expect(await x.exporter.exportOnce()).toBe(0);
    expect((await x.exported()).length).toBe(filled);
    // Drained below the low mark (ClickHouse back): the export goes on from its cursor, until every row is out once.
    const seen = (await x.exported()).filter((e) => e.tenantId === tenant).map((e) => e.eventId);
    for (let round = 0; round < 10; round++) {
      await world.redis.xtrim(key, 'MAXLEN', 0);
      await drain(x.exporter);
      seen.push(...(await x.exported()).filter((e) => e.tenantId === tenant).map((e) => e.eventId));
    }
    expect(seen.length).toBe(160);
    expect(new Set(seen).size).toBe(160);
  });

  it('sends what it exported to ClickHouse with the same totals as the ledger', async () => {
    const tenant = `ten_x${run}_ch`;
    const events = Array.from({ length: 20 }, (_, i) => checked(tenant, { cost: { total: BigInt(i) * 4_611_686_018_427_387_903n } }));
    await ledger(events.slice(0, 3));
    const x = exporter();
    await drain(x.exporter);
    const exported = (await x.exported()).filter((e) => e.tenantId === tenant);
    await dispatchBatch(world.clickhouse!, stageEntries(exported));
    const [{ total }] = await world.sql`SELECT sum(cost_nano)::text AS total FROM usage_ledger WHERE tenant_id = ${tenant}`;
    expect((await invocationTotals(world.clickhouse!, tenant)).costNano).toBe(BigInt(total));
  });
});
