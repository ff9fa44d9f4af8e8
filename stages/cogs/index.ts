import { STREAMS } from '../../store/streams.js';
import type { EntryResult, StageBlock, StageDefinition, StageEntry } from '../../pipeline/stage.js';
import { isUsageEventType } from '../../domain/events.js';
import type { TransactionSql } from 'postgres';
import type { Sql } from '../../pipeline/postgres.js';
import type { LedgeredEvent } from '../../domain/flow.js';
import { AGGREGATE_BATCH_EVENTS, AGGREGATE_LINGER_MS, claimBlocks, claimEventOrigins, pruneAppliedEvery } from '../../store/applied.js';
import { CogsSums, writeCogs } from '../../store/cogs-rollup.js';
import { type CostModelCache, watchedCostModels } from '../../store/cost-model-cache.js';
import { eventCogsNano, InvalidCostModelError } from '../../store/cost-model.js';

const STAGE = 'cogs';

/** A block of events as the cogs stage applies it: whole (one claim), or event by event. */
interface CogsBlock {
  origin: string;
  events: LedgeredEvent[];
}

/** The marker of a block applied event by event (some of its events failed when it was first applied). */
const partialOrigin = (origin: string) => `p/${origin}`;

/** A block with its usage events costed: by index in the block, the event's COGS (null when no cost model covers it, undefined for no usage event or a failed one). */
interface CostedBlock {
  block: CogsBlock;
  /** The block's index in the batch (its results). */
  b: number;
  cogs: (bigint | null | undefined)[];
  count: number;
  failed: { i: number; error: InvalidCostModelError }[];
  single: boolean;
}

/**
 * Adds the COGS and margin of each usage event to the hourly sums of cogs_rollup (per tool, per
 * agent, per customer; store/cogs-rollup.ts), exactly once, in one transaction for all the blocks
 * of a batch, with one upsert per row of sums. Per-event COGS is not kept in PostgreSQL: it is in
 * ClickHouse (invocations.cogs_nano). Session control events add nothing.
 *
 * Exactly once: a block is recorded in applied_blocks by its origin (the same on every
 * redelivery); a redelivered block finds itself there and adds nothing. An event whose cost model
 * does not validate fails alone (retried, then dead-lettered with the reason) rather than being
 * costed at 0: a block with such events, the first time it is applied, is marked partial and its
 * other events are claimed one by one (origin `e/<tenant>/<event>`), as is a block of one event
 * (a retry split off its block). A partial block delivered again applies, one by one, only the
 * events not claimed yet, so an event that failed is added once when it succeeds.
 */
export async function recordCogsBlocks(sql: Sql, models: CostModelCache, blocks: CogsBlock[]): Promise<EntryResult[][]> {
  const results: EntryResult[][] = blocks.map((b) => b.events.map(() => ({})));
  const usageTenants = new Set<string>();
  for (const b of blocks) for (const e of b.events) if (isUsageEventType(e.eventType)) usageTenants.add(e.tenantId);
  if (usageTenants.size === 0) return results;
  const loaded = await models.load([...usageTenants]);

  // Each block's usage events, costed (or failed), before the transaction.
  const costedBlocks = blocks.map((block, b): CostedBlock => {
    const cogs: (bigint | null | undefined)[] = new Array(block.events.length);
    const failed: { i: number; error: InvalidCostModelError }[] = [];
    let count = 0;
    for (let i = 0; i < block.events.length; i++) {
      const event = block.events[i];
      if (!isUsageEventType(event.eventType)) continue;
      const c = eventCogsNano(loaded.get(event.tenantId) ?? [], event);
      if (c instanceof InvalidCostModelError) {
        failed.push({ i, error: c });
        continue;
      }
      cogs[i] = c;
      count++;
    }
    return { block, b, cogs, count, failed, single: block.events.length === 1 };
  });
  const touching = costedBlocks.filter((c) => c.count + c.failed.length > 0);
  if (touching.length === 0) return results;

  // The transaction's body is a function of the module, not a closure made per batch: V8 dropped such a closure's
  // optimized code at every full collection and compiled it again (as invoice-rollup's applyOnce says).
  await sql.begin((tx) => applyCogs(tx, touching, results));
  return results;
}

/** recordCogsBlocks' transaction: claims the blocks (and the events applied one by one), adds what is new to the sums, writes them; marks the events that failed. */
async function applyCogs(tx: TransactionSql, touching: CostedBlock[], results: EntryResult[][]): Promise<void> {
  const whole = touching.filter((c) => !c.single);
  const fresh = await claimBlocks(tx, STAGE, whole.map((c) => ({ origin: c.block.origin, tenantId: c.block.events[0].tenantId })));
  const again = whole.filter((c) => !fresh.has(c.block.origin));
  const partialBefore = new Set(
    again.length
      ? (
          await tx<{ origin: string }[]>`
            SELECT origin FROM applied_blocks WHERE stage = ${STAGE} AND origin = ANY(${again.map((c) => partialOrigin(c.block.origin))}::text[])`
        ).map((r) => r.origin)
      : [],
  );
  const sums = new CogsSums();
  const oneByOne = touching.filter((c) => c.single);
  const partialNow: typeof touching = [];
  for (const c of whole) {
    if (fresh.has(c.block.origin)) {
      if (c.failed.length) partialNow.push(c);
      else for (let i = 0; i < c.block.events.length; i++) addEvent(sums, c.block.events[i], c.cogs[i]);
    } else if (partialBefore.has(partialOrigin(c.block.origin))) oneByOne.push(c);
    // else: applied whole before; nothing to add, nothing failed.
  }
  await claimBlocks(tx, STAGE, partialNow.map((c) => ({ origin: partialOrigin(c.block.origin), tenantId: c.block.events[0].tenantId })));
  oneByOne.push(...partialNow);
  const claimed = await claimEventOrigins(
    tx,
    STAGE,
    oneByOne.flatMap((c) =>
      c.block.events.flatMap((event, i) => (c.cogs[i] === undefined ? [] : [{ tenantId: event.tenantId, eventId: event.eventId, event, cogs: c.cogs[i] }])),
    ),
  );
  for (const x of claimed) addEvent(sums, x.event, x.cogs);
  await writeCogs(tx, sums);
  // Only the events this delivery applies may fail: the others were applied (or failed) before.
  for (const c of oneByOne) for (const f of c.failed) results[c.b][f.i] = { error: f.error };
}

/** Adds a costed usage event (cogs: its COGS, null uncosted) to the sums; nothing for undefined (no usage event, or failed). */
function addEvent(sums: CogsSums, event: LedgeredEvent, cogs: bigint | null | undefined): void {
  if (cogs === undefined) return;
  sums.add(
    event.tenantId,
    event.recordedAt,
    event.subscription.currency,
    event.toolName ?? null,
    event.attribution.agentId ?? null,
    event.attribution.customerId,
    !!event.sessionId,
    cogs !== null,
    event.cost.total,
    cogs ?? 0n,
  );
}

/** The same for events handed one by one (each claimed on its own): tests and tools. */
export async function recordCogsBatch(sql: Sql, models: CostModelCache, batch: StageEntry<LedgeredEvent>[]): Promise<EntryResult[]> {
  const results = await recordCogsBlocks(
    sql,
    models,
    batch.map((entry) => ({ origin: entry.id, events: [entry.payload] })),
  );
  return results.map((r) => r[0]);
}

export const cogsStage: StageDefinition<LedgeredEvent> = {
  name: STAGE,
  input: STREAMS.ledgered,
  outputs: [],
  batchSize: AGGREGATE_BATCH_EVENTS,
  lingerMs: AGGREGATE_LINGER_MS,
  async setup({ sql, onControl, log }) {
    const models = await watchedCostModels(sql, onControl);
    const stopPruning = pruneAppliedEvery(sql, cogsStage.name, (err) => log.warn({ err }, 'pruning applied rows failed'));
    return {
      async close() {
        stopPruning();
      },
      handle: (batch) => recordCogsBatch(sql, models, batch),
      handleBlocks: (blocks: StageBlock<LedgeredEvent>[]) =>
        recordCogsBlocks(
          sql,
          models,
          blocks.map((b) => ({ origin: b.origin, events: b.events.map((e) => e.payload) })),
        ),
    };
  },
};
