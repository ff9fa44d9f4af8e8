import { STREAMS } from '../../store/streams.js';
import { emit, type AckResult, type EntryResult, type StageDefinition, type StageEntry } from '../../pipeline/stage.js';
import { getMany, runPipeline, scanKeys, type Redis } from '../../pipeline/redis.js';
import { CapBook } from '../../store/caps.js';
import type { Sql } from '../../pipeline/postgres.js';
import { withPart, type CheckedEvent, type PricedEvent } from '../../domain/flow.js';
import { endsSession } from '../../domain/events.js';
import { capCounterKeys, capCounters } from './limits.js';
import { pauseKey, type PauseRecord } from '../../store/pauses.js';
import { reconcilePauseFlags, recordPauses, recordRolledOverPauses } from '../../store/pause-flags.js';
import { releaseReservations } from '../../pipeline/admission.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { sessionsInUseKey } from '../../store/authorizer.js';

/** A rolling pause lasts until enough spend leaves the window: the script set its flag's expiry, the record takes it. */
async function endWithFlag(redis: Redis, flagKey: string, pause: PauseRecord): Promise<void> {
  if (pause.period !== 'rolling') return;
  const ttl = await redis.pttl(flagKey);
  if (ttl > 0) pause.endsAt = Date.now() + ttl;
}

/**
 * Pause flags checked against their records on start: one set by an ack whose PostgreSQL record
 * was lost (a crash in between) is recorded, with its cap.paused webhook; one left by a lift cut
 * short before Redis is settled (reconcilePauseFlags holds the rule).
 */
async function reconcilePauses(redis: Redis, prefix: string, sql: Sql): Promise<{ recorded: number; settled: number }> {
  const flags: { key: string; value: string; record: PauseRecord }[] = [];
  for await (const keys of scanKeys(redis, `${prefix}paused:*`)) {
    const values = await getMany(redis, keys);
    for (const [i, value] of values.entries()) {
      if (!value) continue;
      const record = JSON.parse(value) as PauseRecord;
      await endWithFlag(redis, keys[i], record);
      flags.push({ key: keys[i], value, record });
    }
  }
  return reconcilePauseFlags(sql, redis, flags);
}

export const capCheckStage: StageDefinition<PricedEvent> = {
  name: 'cap-check',
  sets: ['capCounters'] satisfies (keyof CheckedEvent)[],
  input: STREAMS.priced,
  outputs: [STREAMS.checked],
  batchSize: 500,
  async setup({ config, redis, log, sql, onControl }) {
    const caps = new CapBook(sql);
    await onControl(async (message) => {
      if (message.type === 'caps.changed') await caps.reloadTenant(message.tenantId);
    });
    await caps.loadAll();
    const { recorded, settled } = await reconcilePauses(redis, config.REDIS_PREFIX, sql);
    if (recorded || settled) log.info({ recorded, settled }, 'pause flags checked against their records');
    const pausesInHand = new Map<string, PauseRecord[]>();
    // The counter keys of the caps each entry falls under (those it advances, or for an event that costs
    // nothing those it would): their reservations under the event's id are released after the ack.
    const countersInHand = new Map<string, readonly string[]>();
    const sweepRollovers = () =>
      recordRolledOverPauses(sql).catch((err: unknown) => log.warn({ err }, 'cannot record the pauses lifted by a period roll-over; retrying later'));
    await sweepRollovers();
    const sweeper = setInterval(() => void sweepRollovers(), config.CAP_ROLLOVER_SWEEP_INTERVAL_MS);
    sweeper.unref();
    return {
      async close() {
        clearInterval(sweeper);
      },
      async handle(batch) {
        await caps.ensureTenants(batch.map((e) => e.payload.tenantId));
        const now = Date.now();
        return batch.map(({ id, payload: event }): EntryResult => {
          const pauses: PauseRecord[] = [];
          const applying = caps.capsFor(event.tenantId, event.attribution, event.sessionId, event.subscription.ratePlanId);
          const counters = capCounters(applying, event, now, pauses);
          if (pauses.length) pausesInHand.set(id, pauses);
          // A free (or failed) call counts nothing but settles its reservations as a priced one does.
          const reservedOn = counters.length ? counters.map((c) => c.key) : capCounterKeys(applying, event);
          if (reservedOn.length) countersInHand.set(id, reservedOn);
          const checked: CheckedEvent = withPart(event, { capCounters: counters.map((c) => ({ key: c.key, by: c.by, ...(c.window ? { window: c.window } : {}) })) });
          return { outputs: [emit(STREAMS.checked, checked)], counters };
        });
      },
      async afterAck(batch, results) {
        const crossed: PauseRecord[] = [];
        const rolling: { pause: PauseRecord; partition: number }[] = [];
        batch.forEach((entry, i) => {
          const tags = new Set(results[i].crossed);
          for (const pause of pausesInHand.get(entry.id) ?? []) {
            if (!tags.has(`cap:${pause.capId}`)) continue;
            crossed.push(pause);
            if (pause.period === 'rolling') rolling.push({ pause, partition: entry.partition });
          }
        });
        for (const { pause, partition } of rolling) {
          await endWithFlag(redis, partitionedKey(config.REDIS_PREFIX, pauseKey(pause.tenantId, pause.scopeKind, pause.scopeId), partition), pause);
        }
        for (const entry of batch) pausesInHand.delete(entry.id);
        for (const pause of crossed) log.warn({ pause }, 'spend cap crossed: paused');
        await recordPauses(sql, crossed);
        const counterKeys = batch.map((entry) => countersInHand.get(entry.id) ?? []);
        for (const entry of batch) countersInHand.delete(entry.id);
        await settleAuthorizations(redis, config.REDIS_PREFIX, batch, results, counterKeys);
      },
    };
  },
};

/**
 * Takes ended sessions out of their agents' sets in use: one ZREM per set, all in one pipeline
 * (one socket write, where a command per session was a write each). The keys of one partition
 * share its hash tag, so on a cluster the pipeline goes to one node.
 */
async function freeSessions(redis: Redis, ended: Map<string, string[]>): Promise<void> {
  if (ended.size === 0) return;
  await runPipeline(redis, (pipeline) => {
    for (const [key, sessions] of ended) pipeline.zrem(key, ...sessions);
  });
}

/**
 * What authorize held for events now counted: the reservation each made under its event id
 * (released once its cost is in the running total, on every cap that applies to the event, an
 * event that costs nothing included; one never settled expires by itself), and
 * the session a completed or failed session event frees for max_concurrent_sessions. One
 * round trip per partition; a crash before it only leaves reservations to expire.
 */
async function settleAuthorizations(
  redis: Redis,
  prefix: string,
  batch: StageEntry<PricedEvent>[],
  results: AckResult[],
  counterKeys: (readonly string[])[],
): Promise<void> {
  const byPartition = new Map<number, { releases: { counterKey: string; id: string }[]; ended: Map<string, string[]> }>();
  batch.forEach((entry, i) => {
    if (!results[i].acked) return;
    const event = entry.payload;
    const counters = counterKeys[i];
    const ends = endsSession(event.eventType) && event.sessionId !== undefined;
    if (counters.length === 0 && !ends) return;
    const work = byPartition.get(entry.partition) ?? { releases: [], ended: new Map<string, string[]>() };
    for (const key of counters) work.releases.push({ counterKey: partitionedKey(prefix, key, entry.partition), id: event.eventId });
    if (ends) {
      const owner = event.attribution.agentId ? `agent:${event.attribution.agentId}` : `app:${event.attribution.appId}`;
      const key = partitionedKey(prefix, sessionsInUseKey(event.tenantId, owner), entry.partition);
      const sessions = work.ended.get(key);
      if (sessions) sessions.push(event.sessionId!);
      else work.ended.set(key, [event.sessionId!]);
    }
    byPartition.set(entry.partition, work);
  });
  await Promise.all(
    [...byPartition].map(async ([partition, work]) => {
      await Promise.all([releaseReservations(redis, partitionedKey(prefix, 'authorize', partition), work.releases), freeSessions(redis, work.ended)]);
    }),
  );
}
