import { STREAMS } from '../../store/streams.js';
import { emit, type EntryResult, type StageDefinition } from '../../pipeline/stage.js';
import { getMany, scanKeys, type Redis } from '../../pipeline/redis.js';
import { CapBook } from '../../store/caps.js';
import type { Sql } from '../../pipeline/postgres.js';
import type { CheckedEvent, PricedEvent } from '../../domain/flow.js';
import { capCounters } from './limits.js';
import type { PauseRecord } from '../../store/pauses.js';

/** Records pauses in PostgreSQL (the live flag is the Redis key the ack script set). Idempotent. */
async function recordPauses(sql: Sql, pauses: PauseRecord[]): Promise<void> {
  if (pauses.length === 0) return;
  await sql`
    INSERT INTO cap_pauses ${sql(
      pauses.map((p) => ({
        tenant_id: p.tenantId,
        cap_id: p.capId,
        scope_kind: p.scopeKind,
        scope_id: p.scopeId,
        period_key: p.periodKey,
        event_id: p.eventId,
        limit_nano: p.limitNano,
        paused_at: new Date(p.pausedAt),
      })),
    )}
    ON CONFLICT DO NOTHING`;
}

/** Pause flags set by an ack whose PostgreSQL record was lost (a crash in between): recorded on start. */
async function reconcilePauses(redis: Redis, prefix: string, sql: Sql): Promise<number> {
  const records: PauseRecord[] = [];
  for await (const keys of scanKeys(redis, `${prefix}paused:*`)) {
    for (const value of await getMany(redis, keys)) if (value) records.push(JSON.parse(value) as PauseRecord);
  }
  await recordPauses(sql, records);
  return records.length;
}

export const capCheckStage: StageDefinition<PricedEvent> = {
  name: 'cap-check',
  input: STREAMS.priced,
  outputs: [STREAMS.checked],
  batchSize: 500,
  async setup({ config, redis, log, sql, onControl }) {
    const caps = new CapBook(sql);
    await onControl(async (message) => {
      if (message.type === 'caps.changed') await caps.reloadTenant(message.tenantId);
    });
    await caps.loadAll();
    const reconciled = await reconcilePauses(redis, config.REDIS_PREFIX, sql);
    if (reconciled) log.info({ reconciled }, 'pause flags checked against their records');
    const pausesInHand = new Map<string, PauseRecord[]>();
    return {
      async handle(batch) {
        await caps.ensureTenants(batch.map((e) => e.payload.tenantId));
        const now = Date.now();
        return batch.map(({ id, payload: event }): EntryResult => {
          const counters = capCounters(caps.capsFor(event.tenantId, event.attribution), event, now);
          const pauses = counters.flatMap((c) => (c.onLimit ? [JSON.parse(c.onLimit.value) as PauseRecord] : []));
          if (pauses.length) pausesInHand.set(id, pauses);
          const checked: CheckedEvent = { ...event, capCounters: counters.map((c) => ({ key: c.key, by: c.by })) };
          return { outputs: [emit(STREAMS.checked, checked)], counters };
        });
      },
      async afterAck(batch, results) {
        const crossed: PauseRecord[] = [];
        batch.forEach((entry, i) => {
          const tags = new Set(results[i].crossed);
          for (const pause of pausesInHand.get(entry.id) ?? []) if (tags.has(`cap:${pause.capId}`)) crossed.push(pause);
        });
        for (const entry of batch) pausesInHand.delete(entry.id);
        for (const pause of crossed) log.warn({ pause }, 'spend cap crossed: paused');
        await recordPauses(sql, crossed);
      },
    };
  },
};
