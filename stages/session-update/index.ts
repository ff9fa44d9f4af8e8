import { STREAMS } from '../../store/streams.js';
import type { EntryResult, StageDefinition, StageEntry } from '../../pipeline/stage.js';
import type { Sql } from '../../pipeline/postgres.js';
import type { LedgeredEvent } from '../../domain/flow.js';
import { AGGREGATE_BATCH_EVENTS, AGGREGATE_LINGER_MS } from '../../store/applied.js';
import { applySessionBlocks, applySessionEvents } from './store.js';
import { DEFAULT_APPLIED_RETENTION_SECONDS, SessionSweeper } from './sweep.js';

/**
 * Advances the session of each ledgered event (see store.ts for the exactly-once mechanism and
 * lifecycle.ts for the status rules). Events without a session are acked without effect. A
 * database outage fails the whole batch with a connection error, which the harness treats as
 * transient: the batch waits in hand and nothing is acked.
 */
export async function sessionUpdateBatch(sql: Sql, batch: StageEntry<LedgeredEvent>[]): Promise<EntryResult[]> {
  await applySessionEvents(
    sql,
    batch.map((e) => e.payload),
  );
  return batch.map(() => ({}));
}

export const sessionUpdateStage: StageDefinition<LedgeredEvent> = {
  name: 'session-update',
  input: STREAMS.ledgered,
  outputs: [],
  batchSize: AGGREGATE_BATCH_EVENTS,
  lingerMs: AGGREGATE_LINGER_MS,
  async setup({ config, log, sql }) {
    const sweeper = new SessionSweeper(
      sql,
      {
        idleSeconds: config.SESSION_IDLE_SECONDS,
        expireSeconds: config.SESSION_EXPIRE_SECONDS,
        appliedRetentionSeconds: DEFAULT_APPLIED_RETENTION_SECONDS,
        chunk: 5000,
      },
      config.SESSION_SWEEP_INTERVAL_MS,
      log.child({ component: 'session-sweep' }),
    );
    sweeper.start();
    return {
      handle: (batch) => sessionUpdateBatch(sql, batch),
      async handleBlocks(blocks) {
        await applySessionBlocks(
          sql,
          'session-update',
          blocks.map((b) => ({ origin: b.origin, events: b.events.map((e) => e.payload) })),
        );
        return blocks.map((b) => b.events.map(() => ({})));
      },
      async close() {
        await sweeper.stop();
      },
    };
  },
};
