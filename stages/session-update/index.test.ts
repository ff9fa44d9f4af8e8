import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventType } from '../../domain/events.js';
import { connectPostgres } from '../../pipeline/postgres.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { ledgeredEvent, stageEntries, testStageContext, type LedgeredEventOverrides } from '../testing.js';
import { sessionUpdateBatch, sessionUpdateStage } from './index.js';
import { claimBlocks } from '../../store/applied.js';
import { applySessionBlocks, getSession } from './store.js';
import { sweepSessions, type SweepPolicy } from './sweep.js';

let world: Isolated;
beforeAll(async () => {
  world = await isolated('session-update');
});
afterAll(async () => {
  await world?.cleanup();
});

const T0 = Date.UTC(2026, 2, 31, 14, 0, 0);
const at = (minutes: number) => T0 + minutes * 60_000;
let tenantSeq = 0;
const newTenant = () => `ten_sess_${++tenantSeq}`;

function event(tenantId: string, sessionId: string | undefined, type: EventType, minute: number, overrides: LedgeredEventOverrides = {}) {
  return ledgeredEvent({ tenantId, sessionId, eventType: type, recordedAt: at(minute), ...overrides });
}

const policy: SweepPolicy = { idleSeconds: 600, expireSeconds: 3600, appliedRetentionSeconds: 86_400, chunk: 2 };

describe('sessionUpdateBatch', () => {
  it('sums a session exactly past the range of bigint and of a double (issue 9, defect 4: the summed durations overflowed)', async () => {
    const tenant = newTenant();
    const big = Number.MAX_SAFE_INTEGER;
    const batch = stageEntries(
      Array.from({ length: 1100 }, (_, i) =>
        event(tenant, 'sLong', 'mcp.tool_invoked', 1 + (i % 50), { durationMs: big, inputTokens: big, outputTokens: 1, cost: { total: 2n ** 63n - 1n } }),
      ),
    );
    await sessionUpdateBatch(world.sql, batch);
    expect(await getSession(world.sql, tenant, 'sLong')).toMatchObject({
      toolCalls: 1100,
      durationMs: 1100n * BigInt(big),
      inputTokens: 1100n * BigInt(big),
      outputTokens: 1100n,
      costNano: 1100n * (2n ** 63n - 1n),
    });
  });

  it('keeps one row per session with its counters, skipping events without a session', async () => {
    const tenant = newTenant();
    const batch = stageEntries([
      event(tenant, 'sA', 'mcp.tool_invoked', 3),
      event(tenant, 'sA', 'mcp.tool_invoked', 1, { status: 'FAILED', inputTokens: 10, outputTokens: 5, durationMs: 100 }),
      event(tenant, 'sB', 'agent.tool_invoked', 2, { attribution: { agentId: undefined, appId: 'app_1' }, cost: { total: 7n } }),
      event(tenant, undefined, 'mcp.tool_invoked', 2),
    ]);
    const results = await sessionUpdateBatch(world.sql, batch);
    expect(results).toEqual([{}, {}, {}, {}]);

    const a = await getSession(world.sql, tenant, 'sA');
    expect(a).toMatchObject({
      status: 'ACTIVE',
      startedAt: at(1),
      lastEventAt: at(3),
      endedAt: null,
      events: 2,
      toolCalls: 2,
      inputTokens: 2410n,
      outputTokens: 155n,
      durationMs: 947n,
      errors: 1,
      costNano: 25_000_000n,
      customerId: 'cus_test',
      teamId: 'team_test',
      agentId: 'agt_test',
      credentialId: 'key_test',
    });
    expect(await getSession(world.sql, tenant, 'sB')).toMatchObject({ toolCalls: 1, costNano: 7n, agentId: null, appId: 'app_1' });
    const [{ n }] = await world.sql<{ n: string }[]>`SELECT count(*) AS n FROM mcp_sessions WHERE tenant_id = ${tenant}`;
    expect(Number(n)).toBe(2);
  });

  it('moves nothing when the same batch is delivered again, or partly again', async () => {
    const tenant = newTenant();
    const first = stageEntries([event(tenant, 's1', 'mcp.tool_invoked', 0), event(tenant, 's1', 'mcp.tool_invoked', 1), event(tenant, 's2', 'api.request', 1)]);
    await sessionUpdateBatch(world.sql, first);
    const once = await getSession(world.sql, tenant, 's1');

    await sessionUpdateBatch(world.sql, first);
    expect(await getSession(world.sql, tenant, 's1')).toEqual({ ...once });

    const extra = event(tenant, 's1', 'mcp.tool_invoked', 2);
    await sessionUpdateBatch(world.sql, stageEntries([first[1].payload, extra, first[0].payload, extra]));
    const after = await getSession(world.sql, tenant, 's1');
    expect(after).toMatchObject({ events: 3, toolCalls: 3, costNano: 3n * 12_500_000n, lastEventAt: at(2) });
    expect(await getSession(world.sql, tenant, 's2')).toMatchObject({ events: 1, toolCalls: 1 });
    const [{ n }] = await world.sql<{ n: string }[]>`SELECT count(*) AS n FROM session_applied_events WHERE tenant_id = ${tenant}`;
    expect(Number(n)).toBe(4);
  });

  it('applies control events: pause, resume, complete; late events count but do not reopen', async () => {
    const tenant = newTenant();
    await sessionUpdateBatch(world.sql, stageEntries([event(tenant, 's', 'mcp.tool_invoked', 0), event(tenant, 's', 'session.paused', 1, { cost: { total: 0n } })]));
    expect((await getSession(world.sql, tenant, 's'))?.status).toBe('PAUSED');
    await sessionUpdateBatch(world.sql, stageEntries([event(tenant, 's', 'mcp.tool_invoked', 2)]));
    expect((await getSession(world.sql, tenant, 's'))?.status).toBe('ACTIVE');
    await sessionUpdateBatch(world.sql, stageEntries([event(tenant, 's', 'session.completed', 3, { cost: { total: 0n } })]));
    await sessionUpdateBatch(world.sql, stageEntries([event(tenant, 's', 'mcp.tool_invoked', 4), event(tenant, 's', 'session.resumed', 5)]));
    expect(await getSession(world.sql, tenant, 's')).toMatchObject({
      status: 'COMPLETED',
      endedAt: at(3),
      lastEventAt: at(5),
      events: 6,
      toolCalls: 3,
      lateEvents: 2,
      costNano: 3n * 12_500_000n + 12_500_000n,
    });
  });

  it('counts every event once when consumers race to create the same session', async () => {
    const tenant = newTenant();
    const events = Array.from({ length: 40 }, (_, i) => event(tenant, 'race', 'mcp.tool_invoked', i % 7));
    const slices = [0, 1, 2, 3].map((k) => events.filter((_, i) => i % 4 === k));
    // Each slice is also delivered twice, as a claimed redelivery would be. All eight transactions
    // wait behind a table lock and are let go together, so they look for the session at once.
    const pool = connectPostgres(world.config.DATABASE_URL, { max: 8 });
    try {
      let running: Promise<unknown> = Promise.resolve();
      await world.sql.begin(async (gate) => {
        await gate`LOCK TABLE session_applied_events IN SHARE MODE`;
        running = Promise.all([...slices, ...slices].map((slice) => sessionUpdateBatch(pool, stageEntries(slice))));
        await new Promise((r) => setTimeout(r, 300));
      });
      await running;
    } finally {
      await pool.end();
    }
    expect(await getSession(world.sql, tenant, 'race')).toMatchObject({ events: 40, toolCalls: 40, costNano: 40n * 12_500_000n, startedAt: at(0), lastEventAt: at(6) });
  });
});

describe('applySessionBlocks', () => {
  it('applies a block once (one applied_blocks row, no row per event) and moves nothing when the block is delivered again', async () => {
    const tenant = newTenant();
    const block = {
      origin: `blk_${tenant}`,
      events: [event(tenant, 's1', 'mcp.tool_invoked', 0), event(tenant, 's1', 'mcp.tool_invoked', 1), event(tenant, undefined, 'api.request', 1), event(tenant, 's2', 'api.request', 2)],
    };
    const single = { origin: `one_${tenant}`, events: [event(tenant, 's1', 'mcp.tool_invoked', 3)] };
    expect(await applySessionBlocks(world.sql, 'session-update', [block, single])).toEqual({ applied: 4, sessions: 2 });
    const once = await getSession(world.sql, tenant, 's1');
    expect(once).toMatchObject({ events: 3, toolCalls: 3, lastEventAt: at(3) });

    // Redelivered (a crash after the commit, before the ack): same origin, nothing moves.
    expect(await applySessionBlocks(world.sql, 'session-update', [block, single])).toEqual({ applied: 0, sessions: 0 });
    expect(await getSession(world.sql, tenant, 's1')).toEqual(once);
    expect(await getSession(world.sql, tenant, 's2')).toMatchObject({ events: 1 });

    const [{ blocks }] = await world.sql<{ blocks: string }[]>`SELECT count(*) AS blocks FROM applied_blocks WHERE tenant_id = ${tenant}`;
    const [{ events }] = await world.sql<{ events: string }[]>`SELECT count(*) AS events FROM session_applied_events WHERE tenant_id = ${tenant}`;
    // The block is one row; the block of one event (a retry split off its block) is claimed per event.
    expect([Number(blocks), Number(events)]).toEqual([1, 1]);
  });
});

describe('sweepSessions', () => {
  it('marks ACTIVE sessions IDLE after the idle time and open ones EXPIRED after the expiry, in event time', async () => {
    const tenant = newTenant();
    await sessionUpdateBatch(
      world.sql,
      stageEntries([
        event(tenant, 'fresh', 'mcp.tool_invoked', 55),
        event(tenant, 'quiet', 'mcp.tool_invoked', 45),
        event(tenant, 'paused', 'session.paused', 45),
        event(tenant, 'gone', 'mcp.tool_invoked', -10),
        event(tenant, 'gonePaused', 'session.paused', -10),
        event(tenant, 'done', 'mcp.tool_invoked', -10),
        event(tenant, 'done', 'session.completed', -9),
      ]),
    );
    await sweepSessions(world.sql, at(60), policy);
    const status = async (id: string) => (await getSession(world.sql, tenant, id))!;
    expect((await status('fresh')).status).toBe('ACTIVE');
    expect((await status('quiet')).status).toBe('IDLE');
    expect((await status('paused')).status).toBe('PAUSED');
    expect(await status('gone')).toMatchObject({ status: 'EXPIRED', endedAt: at(-10) });
    expect(await status('gonePaused')).toMatchObject({ status: 'EXPIRED', endedAt: at(-10) });
    expect(await status('done')).toMatchObject({ status: 'COMPLETED', endedAt: at(-9) });

    // An IDLE session expires later; a new event before that makes it ACTIVE again.
    await sessionUpdateBatch(world.sql, stageEntries([event(tenant, 'quiet', 'mcp.tool_invoked', 61)]));
    expect((await status('quiet')).status).toBe('ACTIVE');
    await sweepSessions(world.sql, at(61 + 61), policy);
    expect(await status('quiet')).toMatchObject({ status: 'EXPIRED', endedAt: at(61) });
  });

  it('changes each session once when several processes sweep at the same time', async () => {
    await world.sql`UPDATE mcp_sessions SET status = 'COMPLETED' WHERE status IN ('ACTIVE', 'IDLE', 'PAUSED')`;
    const tenant = newTenant();
    await sessionUpdateBatch(world.sql, stageEntries(Array.from({ length: 25 }, (_, i) => event(tenant, `s${i}`, 'mcp.tool_invoked', i % 2 ? -100 : 50))));
    const results = await Promise.all([1, 2, 3].map(() => sweepSessions(world.sql, at(60), policy)));
    expect(results.reduce((n, r) => n + r.expired, 0)).toBe(12);
    expect(results.reduce((n, r) => n + r.idled, 0)).toBe(13);
  });

  it('prunes applied-event rows older than the retention', async () => {
    const tenant = newTenant();
    const old = event(tenant, 'p', 'mcp.tool_invoked', 0);
    await sessionUpdateBatch(world.sql, stageEntries([old, event(tenant, 'p', 'mcp.tool_invoked', 1)]));
    await world.sql`UPDATE session_applied_events SET applied_at = now() - interval '2 days' WHERE tenant_id = ${tenant} AND event_id = ${old.eventId}`;
    const result = await sweepSessions(world.sql, Date.now(), policy);
    expect(result.pruned).toBeGreaterThanOrEqual(1);
    const rows = await world.sql<{ event_id: string }[]>`SELECT event_id FROM session_applied_events WHERE tenant_id = ${tenant}`;
    expect(rows.map((r) => r.event_id)).not.toContain(old.eventId);
    expect(rows).toHaveLength(1);
  });

  it("prunes only its own applied_blocks rows: another stage's old claims outlive session-update's retention", async () => {
    const tenant = newTenant();
    const blocks = ['old', 'new'].map((name) => ({
      origin: `blk_${name}_${tenant}`,
      events: [event(tenant, name, 'mcp.tool_invoked', 0), event(tenant, name, 'mcp.tool_invoked', 1)],
    }));
    // Claimed under the stage's own name, as its handleBlocks does.
    await applySessionBlocks(world.sql, sessionUpdateStage.name, blocks);
    // The same block committed by invoice-rollup and cogs, which may then stay down for days before their ack.
    const others = ['invoice-rollup', 'cogs'];
    await world.sql.begin(async (tx) => {
      for (const stage of others) await claimBlocks(tx, stage, [{ origin: blocks[0].origin, tenantId: tenant }]);
    });
    await world.sql`UPDATE applied_blocks SET applied_at = now() - interval '2 days' WHERE tenant_id = ${tenant} AND origin = ${blocks[0].origin}`;

    const result = await sweepSessions(world.sql, Date.now(), policy);
    expect(result.pruned).toBeGreaterThanOrEqual(1);
    const left = await world.sql<{ stage: string; origin: string }[]>`
      SELECT stage, origin FROM applied_blocks WHERE tenant_id = ${tenant} ORDER BY stage, origin`;
    expect(left).toEqual([
      { stage: 'cogs', origin: blocks[0].origin },
      { stage: 'invoice-rollup', origin: blocks[0].origin },
      { stage: 'session-update', origin: blocks[1].origin },
    ]);
    // Redelivered to invoice-rollup after its outage: still claimed, so applied (and billed) once.
    const again = await world.sql.begin((tx) => claimBlocks(tx, 'invoice-rollup', [{ origin: blocks[0].origin, tenantId: tenant }]));
    expect(again.size).toBe(0);
  });
});

describe('sessionUpdateStage', () => {
  it('runs the sweep on a timer from setup and stops it on close', async () => {
    expect(sessionUpdateStage).toMatchObject({ name: 'session-update', input: 'events:ledgered', outputs: [] });
    const context = testStageContext('session-update', world, { SESSION_SWEEP_INTERVAL_MS: '100' });
    const handler = await sessionUpdateStage.setup(context);
    const tenant = newTenant();
    await handler.handle(stageEntries([event(tenant, 'timer', 'mcp.tool_invoked', 0)]));
    const deadline = Date.now() + 5_000;
    while ((await getSession(world.sql, tenant, 'timer'))?.status !== 'EXPIRED' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((await getSession(world.sql, tenant, 'timer'))?.status).toBe('EXPIRED');
    await handler.close?.();
    await context.close();
  });
});
