// Inspects, replays and drops dead letters (entries a stage failed MAX_DELIVERIES times),
// and lists and replays rejected events (unknown or revoked keys, no subscription).
//   npm run dlq -- list [--stage S] [--limit N]
//   npm run dlq -- show <stage> <id>
//   npm run dlq -- replay <stage> <id>... | --all
//   npm run dlq -- drop <stage> <id>... | --all
//   npm run dlq -- rejected list [--stage S] [--code C] [--limit N]
//   npm run dlq -- rejected show <id>
//   npm run dlq -- rejected replay <id>... | --all [--stage S] [--code C]
import { keySlot, type Redis } from '../pipeline/redis.js';
import { forwardOnce } from '../pipeline/move.js';
import { scripted } from '../pipeline/scripts.js';
import { loadConfig } from '../pipeline/config.js';
import { decodePayload, decodeSequence, encodePayload } from '../pipeline/codec.js';
import { decodeEntry, FIELD } from '../pipeline/blocks.js';
import { STREAMS } from '../store/streams.js';
import { compareIds, deadLetterKey, partitionOf, partitionedKey } from '../pipeline/keys.js';
import type { Topology } from '../pipeline/stage.js';
import type { UsageEvent } from '../domain/events.js';
import { ingestPartitionKey } from '../api/ingest/writer.js';
import type { RejectedEvent } from '../domain/flow.js';
import { CommandError, connectCliRedis, isMain, numberFlag, parseArgs, runCli, stringFlag, toJson, UsageError, type ParsedArgs } from './cli.js';
import { fieldText, readRange, readRangeReverse, stagesOf, walkStream, withDeadLetterStages, type RawEntry } from '../store/stream-info.js';
import { oneLine, renderTable } from './table.js';

const USAGE = `usage: npm run dlq -- <command>
  list [--stage S] [--limit N]              dead letters, oldest first (default limit 50)
  show <stage> <id>                         one dead letter with its decoded payload, as JSON
  replay <stage> <id>... | --all [--limit N]
                                            put dead letters back on the stage's input stream
                                            (and remove them from the dead-letter stream)
  drop <stage> <id>... | --all              delete dead letters for good
  rejected list [--stage S] [--code C] [--limit N]
                                            rejected events, newest first (default limit 50)
  rejected show <id>                        one rejected event, as JSON
  rejected replay <id>... | --all [--stage S] [--code C] [--limit N]
                                            re-send the original events to events:ingested
                                            (after fixing the cause, e.g. a missing subscription)
                                            and remove them from the rejected stream
  add --json to list, replay and drop for machine-readable output`;

export interface DlqContext {
  prefix: string;
  partitions: number;
  /** Every stage and its input stream (from the topology). */
  stages: { stage: string; input: string }[];
}

export interface DeadLetter {
  stage: string;
  partition: number;
  id: string;
  /** The stream and entry id it was read from when it failed. */
  source: string;
  sourceId: string;
  deliveries: number;
  error: string;
  tags: string[];
  /** A block of events (`b`), dead-lettered whole because it could not be decoded or split. */
  block?: DeadBlock;
  eventId?: string;
  tenantId?: string;
  /** The event's payload; for a block, the array of its events' payloads. */
  payload?: unknown;
}

interface DeadBlock {
  /** Size of its `b` field. */
  bytes: number;
  origin?: string;
  /** How many events it holds, when it can be decoded. */
  events?: number;
  /** When it cannot be decoded: why, and how many events its first value (before the layers) holds, if that much decodes. */
  error?: string;
  eventsWritten?: number;
}

export interface Rejected {
  partition: number;
  id: string;
  stage: string;
  code: string;
  reason: string;
  at?: number;
  eventId?: string;
  tenantId?: string;
  payload?: RejectedEvent;
}

const ENTRY_ID = /^\d+-\d+$/;
const ALL_PARTITIONS = (ctx: DlqContext) => Array.from({ length: ctx.partitions }, (_, p) => p);

export function contextFrom(prefix: string, partitions: number, topology: Topology): DlqContext {
  return { prefix, partitions, stages: stagesOf(topology) };
}

function decodeOrError(data: Buffer | undefined): { value?: unknown; error?: string } {
  if (!data) return { error: 'no payload field' };
  try {
    return { value: decodePayload<unknown>(data) };
  } catch (err) {
    return { error: `undecodable payload: ${(err as Error).message}` };
  }
}

const eventIdentity = (value: unknown): { eventId?: string; tenantId?: string } => {
  const event = (value ?? {}) as { eventId?: unknown; tenantId?: unknown };
  return {
    eventId: typeof event.eventId === 'string' ? event.eventId : undefined,
    tenantId: typeof event.tenantId === 'string' ? event.tenantId : undefined,
  };
};

/** A dead-lettered block: its size, origin and events, or why it cannot be decoded (never throws). */
function decodeDeadBlock(entry: RawEntry, bytes: Buffer): { block: DeadBlock; value?: unknown[]; error?: string } {
  const block: DeadBlock = { bytes: bytes.length, origin: fieldText(entry, FIELD.origin) };
  const fields: Buffer[] = [];
  for (const name of [FIELD.block, FIELD.origin, FIELD.tags]) {
    const value = entry.fields.get(name);
    if (value) fields.push(Buffer.from(name), value);
  }
  try {
    const events = decodeEntry<unknown>(entry.id, fields).events.map((e) => e.payload);
    block.events = events.length;
    return { block, value: events };
  } catch (err) {
    block.error = `undecodable block: ${(err as Error).message}`;
    try {
      const [base] = decodeSequence(bytes);
      if (Array.isArray(base)) block.eventsWritten = base.length;
    } catch {
      // not even its first value decodes
    }
    return { block, error: block.error };
  }
}

/** The event id of a block of one event, and the tenant all its events share. */
function blockIdentity(events: unknown[] | undefined): { eventId?: string; tenantId?: string } {
  if (!events?.length) return {};
  const identities = events.map(eventIdentity);
  const tenant = identities[0].tenantId;
  return {
    eventId: identities.length === 1 ? identities[0].eventId : undefined,
    tenantId: identities.every((i) => i.tenantId === tenant) ? tenant : undefined,
  };
}

export function toDeadLetter(stage: string, partition: number, entry: RawEntry, withPayload: boolean): DeadLetter {
  const blockBytes = entry.fields.get(FIELD.block);
  const dead = blockBytes ? decodeDeadBlock(entry, blockBytes) : undefined;
  const decoded = dead ?? decodeOrError(entry.fields.get(FIELD.single));
  const identity = dead ? blockIdentity(dead.value) : eventIdentity(decoded.value);
  return {
    stage,
    partition,
    id: entry.id,
    source: fieldText(entry, 'source') ?? '?',
    sourceId: fieldText(entry, 'source_id') ?? '?',
    deliveries: Number(fieldText(entry, 'deliveries') ?? 0),
    error: fieldText(entry, 'error') ?? '',
    // A block's tags are one line per event.
    tags: (fieldText(entry, 't') ?? '').split(/[,\n]/).filter(Boolean),
    ...(dead ? { block: dead.block } : {}),
    ...identity,
    ...(withPayload ? { payload: decoded.error ? { error: decoded.error } : decoded.value } : {}),
  };
}

export function toRejected(partition: number, entry: RawEntry, withPayload: boolean): Rejected {
  const decoded = decodeOrError(entry.fields.get('d'));
  const payload = decoded.value as RejectedEvent | undefined;
  return {
    partition,
    id: entry.id,
    stage: payload?.stage ?? '?',
    code: payload?.code ?? (decoded.error ? '(undecodable)' : '?'),
    reason: payload?.reason ?? decoded.error ?? '',
    at: payload?.at,
    ...eventIdentity(payload?.event),
    ...(withPayload ? { payload } : {}),
  };
}

/** The stages one may name: the topology's, plus any with a dead-letter stream left in Redis. */
export async function knownStages(redis: Redis, ctx: DlqContext): Promise<string[]> {
  return withDeadLetterStages(redis, ctx.prefix, ctx.stages.map((s) => s.stage));
}

async function requireStage(redis: Redis, ctx: DlqContext, stage: string | undefined): Promise<string> {
  const stages = await knownStages(redis, ctx);
  if (!stage) throw new UsageError(`name a stage: ${stages.join(', ')}`);
  if (!stages.includes(stage)) throw new UsageError(`unknown stage "${stage}"; stages: ${stages.join(', ')}`);
  return stage;
}

function requireIds(ids: string[]): string[] {
  const bad = ids.find((id) => !ENTRY_ID.test(id));
  if (bad) throw new UsageError(`"${bad}" is not a stream entry id (like 1712345678901-0)`);
  return ids;
}

/** Finds an entry by id in whichever partition holds it. */
async function locate(redis: Redis, ctx: DlqContext, keyOf: (p: number) => string, id: string): Promise<{ partition: number; entry: RawEntry } | undefined> {
  for (const partition of ALL_PARTITIONS(ctx)) {
    const [entry] = await readRange(redis, keyOf(partition), id, id, 1);
    if (entry) return { partition, entry };
  }
  return undefined;
}

export async function listDeadLetters(redis: Redis, ctx: DlqContext, options: { stage?: string; limit: number }): Promise<{ shown: DeadLetter[]; total: number }> {
  const stages = options.stage ? [options.stage] : await knownStages(redis, ctx);
  const shown: DeadLetter[] = [];
  let total = 0;
  for (const stage of stages) {
    for (const p of ALL_PARTITIONS(ctx)) {
      const key = deadLetterKey(ctx.prefix, stage, p);
      total += await redis.xlen(key);
      const room = options.limit - shown.length;
      if (room > 0) for (const entry of await readRange(redis, key, '-', '+', room)) shown.push(toDeadLetter(stage, p, entry, false));
    }
  }
  return { shown, total };
}

export async function showDeadLetter(redis: Redis, ctx: DlqContext, stage: string, id: string): Promise<DeadLetter | undefined> {
  const found = await locate(redis, ctx, (p) => deadLetterKey(ctx.prefix, stage, p), id);
  return found && toDeadLetter(stage, found.partition, found.entry, true);
}

/**
 * Moves one entry to another stream in a single MULTI: XADD there, XDEL here. WATCH on the
 * source makes a concurrent replay or drop of the same entry abort the transaction (then it
 * is looked up again), so an entry is never re-added twice.
 */
/** How long a replay between slots remembers an entry it moved: a replay run again within a day moves nothing twice. */
const REPLAY_MARKER_TTL_SECONDS = 86_400;

export async function moveEntry(
  redis: Redis,
  fromKey: string,
  id: string,
  target: (entry: RawEntry) => { key: string; fields: (string | Buffer)[] },
): Promise<{ entry: RawEntry; key: string; newId: string } | undefined> {
  for (let attempt = 0; attempt < 20; attempt++) {
    await redis.watch(fromKey);
    const [entry] = await readRange(redis, fromKey, id, id, 1);
    if (!entry) {
      await redis.unwatch();
      return undefined;
    }
    let to: { key: string; fields: (string | Buffer)[] };
    try {
      to = target(entry);
    } catch (err) {
      await redis.unwatch();
      throw err;
    }
    if (keySlot(to.key) !== keySlot(fromKey)) {
      // Another slot (another node of a cluster): no MULTI spans both. Append once (the marker,
      // in the target's slot, names the source entry), then delete the source (pipeline/move.ts).
      await redis.unwatch();
      const marker = `${to.key}:moved:${fromKey.replace(/[{}]/g, '')}:${id}`;
      const [appended] = await forwardOnce(scripted(redis), to.key, [{ marker, fields: to.fields }], REPLAY_MARKER_TTL_SECONDS);
      await redis.xdel(fromKey, id);
      // undefined: a run that died between the two steps appended it already (its id is not known here).
      return { entry, key: to.key, newId: appended ?? 'appended-before' };
    }
    const reply = await redis.multi().xadd(to.key, '*', ...to.fields).xdel(fromKey, id).exec();
    if (reply === null) continue; // the source stream changed meanwhile: look again
    const failed = reply.find(([err]) => err);
    if (failed) throw failed[0];
    return { entry, key: to.key, newId: String(reply[0][1]) };
  }
  throw new CommandError(`${fromKey} keeps changing; could not move ${id} (try again)`);
}

/** Ids of a stream's entries, oldest first, at most `limit`, those `keep` accepts. */
async function idsOf(redis: Redis, key: string, limit: number, keep: (entry: RawEntry) => boolean = () => true): Promise<string[]> {
  const ids: string[] = [];
  if (limit <= 0) return ids;
  await walkStream(redis, key, Number.MAX_SAFE_INTEGER, async (entry) => {
    if (keep(entry)) ids.push(entry.id);
    return ids.length < limit;
  });
  return ids;
}

export interface Moved {
  id: string;
  partition: number;
  stream: string;
  newId: string;
  eventId?: string;
  tenantId?: string;
}

export interface MoveReport {
  moved: Moved[];
  missing: string[];
  /** Entries that could not be moved (left where they were), with why; the others were moved all the same. */
  failed: { id: string; error: string }[];
}

/** One entry done: reported as it happens (the command line prints each), before the whole report. */
export type MoveStep = { kind: 'moved'; moved: Moved } | { kind: 'missing'; id: string } | { kind: 'failed'; id: string; error: string };

/**
 * Moves each target in turn, `move` returning undefined when the entry is gone: an entry that
 * cannot be moved (its error) is reported as failed and the next one moved all the same, so
 * that a bad entry in the middle of --all neither hides what was moved before it nor stops
 * the ones after it.
 */
async function moveEach(
  redis: Redis,
  targets: { partition: number; id: string }[],
  missing: string[],
  move: (target: { partition: number; id: string }) => Promise<Moved | undefined>,
  onStep?: (step: MoveStep) => void,
): Promise<MoveReport> {
  const report: MoveReport = { moved: [], missing: [], failed: [] };
  const step = (s: MoveStep) => {
    if (s.kind === 'moved') report.moved.push(s.moved);
    else if (s.kind === 'missing') report.missing.push(s.id);
    else report.failed.push({ id: s.id, error: s.error });
    onStep?.(s);
  };
  for (const id of missing) step({ kind: 'missing', id });
  for (const target of targets) {
    let done: Moved | undefined;
    try {
      done = await move(target);
    } catch (err) {
      // A failure between WATCH and EXEC must not leave the next entry's MULTI watching this one's stream.
      await redis.unwatch().catch(() => undefined);
      step({ kind: 'failed', id: target.id, error: err instanceof Error ? err.message : String(err) });
      continue;
    }
    step(done ? { kind: 'moved', moved: done } : { kind: 'missing', id: target.id });
  }
  return report;
}

/** The ids to act on: the given ones (located in their partition), or every entry of every partition with --all. */
async function selection(
  redis: Redis,
  ctx: DlqContext,
  keyOf: (p: number) => string,
  which: string[] | { all: true; limit: number; keep?: (entry: RawEntry) => boolean },
): Promise<{ targets: { partition: number; id: string }[]; missing: string[] }> {
  const targets: { partition: number; id: string }[] = [];
  const missing: string[] = [];
  if (Array.isArray(which)) {
    for (const id of which) {
      const found = await locate(redis, ctx, keyOf, id);
      if (found) targets.push({ partition: found.partition, id });
      else missing.push(id);
    }
  } else {
    // At most `limit` over all the partitions together.
    for (const partition of ALL_PARTITIONS(ctx)) {
      const room = which.limit - targets.length;
      if (room <= 0) break;
      for (const id of await idsOf(redis, keyOf(partition), room, which.keep)) targets.push({ partition, id });
    }
  }
  return { targets, missing };
}

/** The stage's input stream: from the topology, else the stream the dead letter names as its source. */
function inputOf(ctx: DlqContext, stage: string, entry: RawEntry): string {
  const input = ctx.stages.find((s) => s.stage === stage)?.input ?? fieldText(entry, 'source');
  if (!input || input === '?') throw new CommandError(`cannot tell the input stream of stage ${stage}`);
  return input;
}

/**
 * The fields a dead letter goes back with: its payload fields as they were (`d`, or `b` and `o`
 * of a block, byte for byte; a block without `o` had its entry id as origin, so it gets that),
 * its tags, and `g` naming the stage's consumer group (the dead-letter stream's stage: group and
 * stage share the name), kept when the entry had one. The input stream may be read by several
 * groups (events:ledgered by five); only the group that failed the entry handles it again.
 */
function replayFields(stage: string, entry: RawEntry): (string | Buffer)[] {
  const single = entry.fields.get(FIELD.single);
  const block = entry.fields.get(FIELD.block);
  const fields: (string | Buffer)[] = [];
  if (single?.length) fields.push(FIELD.single, single);
  if (block?.length) {
    fields.push(FIELD.block, block);
    const origin = entry.fields.get(FIELD.origin) ?? fieldText(entry, 'source_id');
    if (origin?.length && origin !== '?') fields.push(FIELD.origin, origin);
  }
  if (fields.length === 0) throw new CommandError(`dead letter ${entry.id} of ${stage} has no payload; drop it instead`);
  const tags = entry.fields.get(FIELD.tags);
  if (tags?.length) fields.push(FIELD.tags, tags);
  const group = entry.fields.get(FIELD.forGroup);
  fields.push(FIELD.forGroup, group?.length ? group : stage);
  return fields;
}

/**
 * Re-adds dead letters (payload and tags, for the stage's group only) to the stage's input
 * stream in their partition, removing each from the dead-letter stream. One that cannot be
 * replayed is reported in `failed` and left; `onStep` hears of each entry as it is done.
 */
export async function replayDeadLetters(
  redis: Redis,
  ctx: DlqContext,
  stage: string,
  which: string[] | { all: true; limit: number },
  onStep?: (step: MoveStep) => void,
): Promise<MoveReport> {
  const keyOf = (p: number) => deadLetterKey(ctx.prefix, stage, p);
  const { targets, missing } = await selection(redis, ctx, keyOf, which);
  return moveEach(
    redis,
    targets,
    missing,
    async ({ partition, id }) => {
      let stream = '';
      const done = await moveEntry(redis, keyOf(partition), id, (entry) => {
        stream = inputOf(ctx, stage, entry);
        return { key: partitionedKey(ctx.prefix, stream, partition), fields: replayFields(stage, entry) };
      });
      if (!done) return undefined;
      const { eventId, tenantId } = toDeadLetter(stage, partition, done.entry, false);
      return { id, partition, stream, newId: done.newId, eventId, tenantId };
    },
    onStep,
  );
}

export async function dropDeadLetters(
  redis: Redis,
  ctx: DlqContext,
  stage: string,
  which: string[] | { all: true; limit: number },
): Promise<{ dropped: string[]; missing: string[] }> {
  const keyOf = (p: number) => deadLetterKey(ctx.prefix, stage, p);
  const { targets, missing } = await selection(redis, ctx, keyOf, which);
  const dropped: string[] = [];
  for (const { partition, id } of targets) {
    if ((await redis.xdel(keyOf(partition), id)) === 1) dropped.push(id);
    else missing.push(id);
  }
  return { dropped, missing };
}

export interface RejectedFilter {
  stage?: string;
  code?: string;
}

function matches(r: Rejected, filter: RejectedFilter): boolean {
  return (!filter.stage || r.stage === filter.stage) && (!filter.code || r.code === filter.code);
}

export async function listRejected(
  redis: Redis,
  ctx: DlqContext,
  options: RejectedFilter & { limit: number },
): Promise<{ shown: Rejected[]; total: number }> {
  const found: Rejected[] = [];
  let total = 0;
  for (const p of ALL_PARTITIONS(ctx)) {
    const key = partitionedKey(ctx.prefix, STREAMS.rejected, p);
    total += await redis.xlen(key);
    let end = '+';
    let taken = 0;
    while (taken < options.limit) {
      const page = await readRangeReverse(redis, key, end, '-', 500);
      if (page.length === 0) break;
      for (const entry of page) {
        const rejected = toRejected(p, entry, false);
        if (matches(rejected, options) && taken < options.limit) {
          found.push(rejected);
          taken++;
        }
      }
      end = `(${page[page.length - 1].id}`;
    }
  }
  // Newest first over every partition.
  return { shown: found.sort((a, b) => compareIds(b.id, a.id)).slice(0, options.limit), total };
}

export async function showRejected(redis: Redis, ctx: DlqContext, id: string): Promise<Rejected | undefined> {
  const found = await locate(redis, ctx, (p) => partitionedKey(ctx.prefix, STREAMS.rejected, p), id);
  return found && toRejected(found.partition, found.entry, true);
}

/** The fields the stages add to an event on its way; a replayed event goes back as ingest wrote it. */
const STAGE_FIELDS = ['attribution', 'subscription', 'cost', 'capCounters', 'overCap'] as const;

export function originalEvent(rejected: RejectedEvent): UsageEvent {
  const event = { ...(rejected.event as unknown as Record<string, unknown>) };
  for (const field of STAGE_FIELDS) delete event[field];
  const e = event as unknown as UsageEvent;
  if (typeof e.tenantId !== 'string' || typeof e.eventId !== 'string' || !e.credential) {
    throw new CommandError('the rejected entry holds no usable event (tenantId, eventId and credential are required)');
  }
  return e;
}

/**
 * Re-sends rejected events to `events:ingested`, into the partition ingest would have chosen,
 * each removed from the rejected stream in the same MULTI. The event keeps its ingest nonce:
 * should it already be in the ledger, it counts as a redelivery, not a second submission.
 */
export async function replayRejected(
  redis: Redis,
  ctx: DlqContext,
  which: string[] | ({ all: true; limit: number } & RejectedFilter),
  onStep?: (step: MoveStep) => void,
): Promise<MoveReport> {
  const keyOf = (p: number) => partitionedKey(ctx.prefix, STREAMS.rejected, p);
  const filtered = Array.isArray(which) ? which : { ...which, keep: (entry: RawEntry) => matches(toRejected(0, entry, false), which) };
  const { targets, missing } = await selection(redis, ctx, keyOf, filtered);
  return moveEach(
    redis,
    targets,
    missing,
    async ({ partition, id }) => {
      let event: UsageEvent | undefined;
      let target = -1;
      const done = await moveEntry(redis, keyOf(partition), id, (entry) => {
        const payload = toRejected(partition, entry, true).payload;
        if (!payload) throw new CommandError(`rejected entry ${id} has no decodable payload`);
        event = originalEvent(payload);
        target = partitionOf(ingestPartitionKey(event.tenantId, event.credential), ctx.partitions);
        return { key: partitionedKey(ctx.prefix, STREAMS.ingested, target), fields: ['d', encodePayload(event)] };
      });
      if (!done || !event) return undefined;
      return { id, partition: target, stream: STREAMS.ingested, newId: done.newId, eventId: event.eventId, tenantId: event.tenantId };
    },
    onStep,
  );
}

// --- the command line ------------------------------------------------------------------

function which(args: ParsedArgs, ids: string[], defaultLimit: number): string[] | { all: true; limit: number } {
  const all = args.flags.has('all');
  if (all && ids.length) throw new UsageError('give entry ids or --all, not both');
  if (!all && ids.length === 0) throw new UsageError('give one or more entry ids, or --all');
  return all ? { all: true, limit: numberFlag(args, 'limit', defaultLimit, { min: 1 }) } : requireIds(ids);
}

const time = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString().replace('T', ' ').slice(0, 19));

function blockLabel(block: DeadBlock): string {
  if (block.events !== undefined) return `(block of ${block.events} event${block.events === 1 ? '' : 's'})`;
  return `(undecodable block, ${block.bytes} bytes)`;
}

export function renderDeadLetters(list: { shown: DeadLetter[]; total: number }, partitions: number): string {
  if (list.total === 0) return 'no dead letters';
  const rows = list.shown.map((d) => [
    d.id,
    partitions > 1 ? `${d.stage} p${d.partition}` : d.stage,
    d.deliveries,
    d.eventId ?? (d.block ? blockLabel(d.block) : null),
    d.tenantId ?? null,
    oneLine(d.error, 100),
  ]);
  const table = renderTable(['ID', 'STAGE', 'DELIVERIES', 'EVENT', 'TENANT', 'ERROR'], rows);
  return `${table}\n${list.shown.length} shown of ${list.total} dead letter${list.total === 1 ? '' : 's'}`;
}

export function renderRejected(list: { shown: Rejected[]; total: number }): string {
  if (list.shown.length === 0) return list.total === 0 ? 'no rejected events' : `none of the ${list.total} rejected events match`;
  const rows = list.shown.map((r) => [r.id, r.stage, r.code, r.eventId ?? null, r.tenantId ?? null, time(r.at), oneLine(r.reason, 100)]);
  const table = renderTable(['ID', 'STAGE', 'CODE', 'EVENT', 'TENANT', 'AT', 'REASON'], rows);
  return `${table}\n${list.shown.length} shown of ${list.total} rejected event${list.total === 1 ? '' : 's'}`;
}

function renderStep(what: string, step: MoveStep): string {
  if (step.kind === 'missing') return `not found: ${what} ${step.id} (already replayed or dropped?)`;
  if (step.kind === 'failed') return `failed: ${what} ${step.id}: ${oneLine(step.error, 200)} (left where it is)`;
  const m = step.moved;
  return `replayed ${what} ${m.id} -> ${m.stream}${m.partition > 0 ? ` p${m.partition}` : ''} ${m.newId} (event ${m.eventId ?? '?'}, tenant ${m.tenantId ?? '?'})`;
}

/** The last line of a replay: how many moved, not found, failed. */
function renderMoveSummary(what: string, report: MoveReport): string {
  return `replayed ${report.moved.length} ${what} entr${report.moved.length === 1 ? 'y' : 'ies'}${report.missing.length ? `, ${report.missing.length} not found` : ''}${report.failed.length ? `, ${report.failed.length} failed` : ''}`;
}

/** A whole report: each entry, then the summary. */
export function renderMoves(what: string, report: MoveReport): string {
  const lines = [
    ...report.moved.map((moved) => renderStep(what, { kind: 'moved', moved })),
    ...report.missing.map((id) => renderStep(what, { kind: 'missing', id })),
    ...report.failed.map((f) => renderStep(what, { kind: 'failed', ...f })),
    renderMoveSummary(what, report),
  ];
  return lines.join('\n');
}

/**
 * Prints each entry of a replay as it is done (a long --all shows its progress, and what was
 * moved is on screen even if the command is stopped); with --json on stderr, the report on stdout.
 */
function printSteps(what: string, json: boolean): (step: MoveStep) => void {
  return (step) => (json ? console.error : console.log)(renderStep(what, step));
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { booleans: ['all', 'help', 'json'], values: ['stage', 'limit', 'code'] });
  const [command, ...rest] = args.positional;
  if (args.flags.has('help') || command === 'help') {
    console.log(USAGE);
    return 0;
  }
  if (!command) throw new UsageError('no command given');
  if (!['list', 'show', 'replay', 'drop', 'rejected'].includes(command)) throw new UsageError(`unknown command "${command}"`);
  const config = loadConfig();
  const { TOPOLOGY } = await import('../stages/registry.js');
  const ctx = contextFrom(config.REDIS_PREFIX, config.PARTITIONS, TOPOLOGY);
  const redis = await connectCliRedis(config.REDIS_URL, `${config.REDIS_PREFIX}ops:dlq`);
  const json = args.flags.has('json');
  const print = (value: unknown, text: () => string) => console.log(json ? toJson(value, 2) : text());
  try {
    switch (command) {
      case 'list': {
        if (rest.length) throw new UsageError(`list takes no arguments (got ${rest[0]}); filter with --stage`);
        const stage = stringFlag(args, 'stage');
        if (stage) await requireStage(redis, ctx, stage);
        const list = await listDeadLetters(redis, ctx, { stage, limit: numberFlag(args, 'limit', 50, { min: 1 }) });
        print(list, () => renderDeadLetters(list, ctx.partitions));
        return 0;
      }
      case 'show': {
        if (rest.length !== 2) throw new UsageError('show takes a stage and an entry id');
        const stage = await requireStage(redis, ctx, rest[0]);
        const [id] = requireIds([rest[1]]);
        const entry = await showDeadLetter(redis, ctx, stage, id);
        if (!entry) throw new CommandError(`no dead letter ${id} in stage ${stage}`);
        console.log(toJson(entry, 2));
        return 0;
      }
      case 'replay': {
        const stage = await requireStage(redis, ctx, rest[0]);
        const what = `dead:${stage}`;
        const report = await replayDeadLetters(redis, ctx, stage, which(args, rest.slice(1), Number.MAX_SAFE_INTEGER), printSteps(what, json));
        print(report, () => renderMoveSummary(what, report));
        return report.missing.length || report.failed.length ? 1 : 0;
      }
      case 'drop': {
        const stage = await requireStage(redis, ctx, rest[0]);
        const report = await dropDeadLetters(redis, ctx, stage, which(args, rest.slice(1), Number.MAX_SAFE_INTEGER));
        print(report, () =>
          [
            ...report.dropped.map((id) => `dropped dead:${stage} ${id}`),
            ...report.missing.map((id) => `not found: dead:${stage} ${id}`),
            `dropped ${report.dropped.length} dead letter${report.dropped.length === 1 ? '' : 's'} of ${stage}`,
          ].join('\n'),
        );
        return report.missing.length ? 1 : 0;
      }
      case 'rejected': {
        const [sub, ...ids] = rest;
        const filter: RejectedFilter = { stage: stringFlag(args, 'stage'), code: stringFlag(args, 'code') };
        if (sub === 'list') {
          if (ids.length) throw new UsageError('rejected list takes no arguments; filter with --stage and --code');
          const list = await listRejected(redis, ctx, { ...filter, limit: numberFlag(args, 'limit', 50, { min: 1 }) });
          print(list, () => renderRejected(list));
          return 0;
        }
        if (sub === 'show') {
          if (ids.length !== 1) throw new UsageError('rejected show takes one entry id');
          const entry = await showRejected(redis, ctx, requireIds(ids)[0]);
          if (!entry) throw new CommandError(`no rejected entry ${ids[0]}`);
          console.log(toJson(entry, 2));
          return 0;
        }
        if (sub === 'replay') {
          const selected = which(args, ids, Number.MAX_SAFE_INTEGER);
          if (Array.isArray(selected) && (filter.stage || filter.code)) throw new UsageError('--stage and --code filter --all only');
          const report = await replayRejected(redis, ctx, Array.isArray(selected) ? selected : { ...selected, ...filter }, printSteps('rejected', json));
          print(report, () => renderMoveSummary('rejected', report));
          return report.missing.length || report.failed.length ? 1 : 0;
        }
        throw new UsageError(sub ? `unknown rejected command "${sub}"` : 'rejected needs list, show or replay');
      }
    }
  } finally {
    redis.disconnect();
  }
  return 0;
}

if (isMain(import.meta.url)) await runCli(USAGE, main);
