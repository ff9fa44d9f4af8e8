import { expireMany, runPipelinePerKey, type Redis } from '../../pipeline/redis.js';
import { STREAMS } from '../../store/streams.js';
import type { AckResult, EntryResult, StageBlock, StageDefinition, StageEntry } from '../../pipeline/stage.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { AdvanceBatch } from '../../pipeline/advance-once.js';
import type { Sql } from '../../pipeline/postgres.js';
import { endsSession, isUsageEventType } from '../../domain/events.js';
import type { LedgeredEvent } from '../../domain/flow.js';
import { formatNano } from '../../domain/money.js';
import { CapBook, capCounterKey, capPeriod, type SpendCap } from '../../store/caps.js';
import { AlertSettingsCache, type AlertSettings } from '../../store/alert-settings.js';
import { CommitmentBook, type CommitmentOf } from '../../store/commitments.js';
import { enqueueWebhookEvent, type WebhookEventType } from '../../store/webhooks.js';

/**
 * Alerts before a cap stops anyone, sent as webhooks through the outbox:
 * - `cap.threshold_reached`: a cap's running total (the counter cap-check keeps) reached one of
 *   the tenant's thresholds (default 50, 80, 100 % of its limit);
 * - `commitment.threshold_reached`: the calls of a committed plan's period reached one of them
 *   of the committed calls;
 * - `spend.velocity_spike`: a customer's (or an agent's, team's or app's) spend in the last hour
 *   is above k x its trailing 7-day hourly average, and at least a minimum amount;
 * - `session.projection_exceeded`: a session's spend so far, carried ahead at its rate for the
 *   projection horizon, passes a per-session cap it has not reached yet; or, added to the running
 *   total of a day or month cap on it, passes that cap before the period ends.
 * Each alert is level-checked on every event (is the total at or past the mark now?) and
 * enqueued with a dedupe key naming the crossing (cap, period, limit, threshold; customer and
 * hour; cap and session; for a rolling cap, the window-long slot it is seen in): however many events, workers or redeliveries see the same crossing,
 * the outbox holds it once. It is enqueued before the entry is acked, so a crash cannot lose it.
 */

const HOUR_MS = 3_600_000;
const HOUR_MS_BIG = BigInt(HOUR_MS);
const TRAILING_HOURS = 168;
/** How long a block's applied marker lives while its entry may still be delivered again (pending, or dead-lettered and replayed). */
const APPLIED_TTL_SECONDS = 86_400;
/**
 * How long it lives once the entry is acked on its first delivery. Only a consumer that had
 * claimed the entry meanwhile (its first reader silent past CLAIM_IDLE_MS) could still apply it:
 * its handler reaches the marker within STAGE_HANDLER_TIMEOUT_MS unless a dependency outage keeps
 * it retrying. A day of markers was ~100 bytes per block: ~500 MB at 10,000 events/s.
 */
const ACKED_MARKER_TTL_SECONDS = 900;
const BUCKET_TTL_SECONDS = (TRAILING_HOURS + 2) * 3600;
/** A session's start and spend live this long from its first event, together (a longer session's projection starts over), or until shortly after it ends (closeSessions). */
const SESSION_START_TTL_SECONDS = 2 * 86_400;
/** How long they outlive the session's end: its calls that arrive after the end add to them. */
const ENDED_SESSION_TTL_SECONDS = 60;
/** The start of an ended session whose end came before its calls (both keys hold it): no projection. */
const ENDED_SESSION_START = '0';
/** A commitment's period is a calendar month; its count is kept a while past it. */
const COMMITMENT_TTL_SECONDS = 40 * 86_400;
/** A session younger than this has no meaningful rate yet. */
const MIN_PROJECTION_ELAPSED_MS = 60_000;
/** Dedupe keys already enqueued by this process: skipped without a round trip (the outbox dedupes anyway). */
const FIRED_MEMORY = 100_000;

/** The scopes whose hourly spend is kept for velocity alerts, in this order (an event may have no agent or no app). */
const VELOCITY_SCOPES = ['customer', 'agent', 'team', 'app'] as const;
type VelocityKind = (typeof VELOCITY_SCOPES)[number];

interface Alert {
  tenantId: string;
  type: WebhookEventType;
  dedupeKey: string;
  data: Record<string, unknown>;
}

/** A batch's alerts by `<tenant>|<dedupe key>`: the first event to reach a crossing names it (with its own figures). */
type BatchAlerts = Map<string, Alert>;
const alertKey = (tenantId: string, dedupeKey: string) => `${tenantId}|${dedupeKey}`;

/** A cap's running total (the counter cap-check keeps) in one period and partition, read once per batch. */
interface CapTotal {
  cap: SpendCap;
  periodKey: string;
  periodEndsAt: number;
  spent: bigint;
  /** Whether an event of the batch checked its thresholds already: every later one sees the same total. */
  thresholdsChecked: boolean;
}

/**
 * Where an event's running figures are in its partition's AdvanceBatch (slots, -1 when the event
 * has no such counter): its session's start (its spend in the slot after), its commitment's calls
 * this period, and two slots per velocity scope it has (this hour, the hour before), in
 * VELOCITY_SCOPES order. Each figure includes the event's own cost or call.
 */
interface SpendView {
  batch: AdvanceBatch;
  session: number;
  commitment: number;
  /** The event's commitment's counter and thresholds (with `commitment`). */
  commitmentKeys: CommitmentKeys | undefined;
  velocity: number;
  /** The hourly buckets of the velocity scopes the event has, in VELOCITY_SCOPES order (their slots from `velocity`, two each). */
  scopes: HourKeys[];
}

/** The session's first event time; undefined without a session, or for a session that ended before its calls came (ENDED_SESSION_START). */
const sessionStartOf = (view: SpendView): number | undefined => {
  const start = view.session < 0 ? 0 : Number(view.batch.view(view.session));
  return start > 0 ? start : undefined;
};
const sessionSpentOf = (view: SpendView): bigint | undefined => (view.session < 0 ? undefined : view.batch.view(view.session + 1));

const hourOf = (ms: number) => Math.floor(ms / HOUR_MS);
const commitmentKey = (e: LedgeredEvent, c: CommitmentOf) => `commit-calls:${e.tenantId}:${e.attribution.customerId}:${c.ratePlanId}:${e.subscription.periodStart}`;
/** Hourly spend of a scope: the customer (`spend-h:<tenant>:<customer>:<hour>`), or an agent, team or app (`spend-h:<tenant>:<kind>:<id>:<hour>`). */
type VelocityScope = { kind: VelocityKind; id: string };
const bucketKey = (e: LedgeredEvent, hour: number, scope: VelocityScope = { kind: 'customer', id: e.attribution.customerId }) =>
  scope.kind === 'customer' ? `spend-h:${e.tenantId}:${scope.id}:${hour}` : `spend-h:${e.tenantId}:${scope.kind}:${scope.id}:${hour}`;

/** The event's id in a velocity scope (an event may have no agent or no app). */
function scopeIdOf(e: LedgeredEvent, kind: VelocityKind): string | undefined {
  switch (kind) {
    case 'customer':
      return e.attribution.customerId;
    case 'agent':
      return e.attribution.agentId;
    case 'team':
      return e.attribution.teamId;
    case 'app':
      return e.attribution.appId;
  }
}

/**
 * The partitioned key names of a scope's hourly bucket and the one before it, and the dedupe key
 * of the scope's velocity alert in that hour (alone, and as alertKey): built once an hour, since
 * every event of the hour checks whether that alert fired already.
 */
interface HourKeys {
  hour: number;
  current: string;
  previous: string;
  scope: VelocityScope;
  dedupeKey: string;
  firedKey: string;
}

/** The partitioned key names of a session's start and spend. */
interface SessionKeys {
  start: string;
  spend: string;
}

/** A commitment's partitioned counter key in one period, with its thresholds and their dedupe keys. */
interface CommitmentKeys {
  periodStart: number;
  ratePlanId: string;
  customerId: string;
  committedCalls: bigint;
  /** The tenant's thresholds these were built for (a settings change gives a new array). */
  thresholdBps: number[];
  counter: string;
  /** Per threshold, the calls that reach it and its alert's dedupe key (alone, and as alertKey). */
  thresholds: { bps: number; calls: bigint; dedupeKey: string; firedKey: string }[];
}

/**
 * Values kept between batches by partition, tenant and id: a session's or a scope's counter key
 * names are built once (an hourly bucket's once an hour), not per event. Looked up by the id
 * alone, one Map lookup per event and scope (ids are unique in practice; one met again under
 * another tenant or partition is simply built anew). Cleared whole at MAX_KEPT values.
 */
class KeptPerId<V> {
  private static readonly MAX_KEPT = 100_000;
  private readonly byId = new Map<string, { partition: number; tenantId: string; value: V }>();

  find(partition: number, tenantId: string, id: string): V | undefined {
    const kept = this.byId.get(id);
    return kept !== undefined && kept.partition === partition && kept.tenantId === tenantId ? kept.value : undefined;
  }

  /** Keeps `value` for the id (in place of the one kept); returns it. */
  keep(partition: number, tenantId: string, id: string, value: V): V {
    if (this.byId.size >= KeptPerId.MAX_KEPT && !this.byId.has(id)) this.byId.clear();
    this.byId.set(id, { partition, tenantId, value });
    return value;
  }
}

const NO_CAPS: CapTotal[] = [];

/** ceil(limit x bps / 10000), exactly. */
function thresholdOf(limit: bigint, bps: number): bigint {
  const scaled = limit * BigInt(bps);
  return (scaled + 9_999n) / 10_000n;
}

export class SpendAlerts {
  private readonly caps: CapBook;
  private readonly settings: AlertSettingsCache;
  private readonly commitments: CommitmentBook;
  private readonly trailing = new Map<string, bigint>();
  private readonly fired = new Set<string>();
  private readonly hourKeys = VELOCITY_SCOPES.map(() => new KeptPerId<HourKeys>());
  private readonly sessionKeys = new KeptPerId<SessionKeys>();
  private readonly commitmentKeys = new KeptPerId<CommitmentKeys>();
  /** The applied marker of each usage event in hand, until its ack (afterAck). */
  private readonly markerKeys = new WeakMap<StageEntry<LedgeredEvent>, string>();

  constructor(
    private readonly sql: Sql,
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly now = () => Date.now(),
  ) {
    this.caps = new CapBook(sql);
    this.settings = new AlertSettingsCache(sql);
    this.commitments = new CommitmentBook(sql);
  }

  async load(): Promise<void> {
    await this.caps.loadAll();
  }

  reloadCaps(tenantId: string): Promise<void> {
    return this.caps.reloadTenant(tenantId);
  }

  /** Events handed one by one: each is applied once by its own marker (tests and tools). */
  async handle(batch: StageEntry<LedgeredEvent>[]): Promise<EntryResult[]> {
    const results = await this.handleBlocks(batch.map((entry) => ({ id: entry.id, origin: entry.id, events: [entry] })));
    return results.map((r) => r[0]);
  }

  /**
   * Blocks of events: a block is applied once by one marker (its origin, the same on every
   * redelivery), a block of one event (split off its block upstream) by the event's id.
   */
  async handleBlocks(blocks: StageBlock<LedgeredEvent>[]): Promise<EntryResult[][]> {
    const usage: StageEntry<LedgeredEvent>[] = [];
    const markerOf: string[] = [];
    const ended: StageEntry<LedgeredEvent>[] = [];
    for (const block of blocks) {
      const blockMarker = block.events.length === 1 ? undefined : `spend-applied-block:${block.origin}`;
      for (const e of block.events) {
        if (e.payload.sessionId && endsSession(e.payload.eventType)) ended.push(e);
        if (!isUsageEventType(e.payload.eventType)) continue;
        usage.push(e);
        markerOf.push(blockMarker ?? `spend-applied:${e.payload.tenantId}:${e.payload.eventId}`);
      }
    }
    if (usage.length) {
      const tenants = usage.map((e) => e.payload.tenantId);
      await this.caps.ensureTenants(tenants);
      const settings = await this.settings.load(tenants);
      const commitments = await this.commitmentsOf(usage);
      const views = await this.advanceBuckets(usage, markerOf, commitments, settings);
      const totals = await this.capTotals(usage);
      const alerts: BatchAlerts = new Map();
      for (let i = 0; i < usage.length; i++) {
        const tenantSettings = settings.get(usage[i].payload.tenantId)!;
        this.commitmentAlerts(alerts, usage[i].payload, commitments[i], views[i]);
        if (usage[i].payload.cost.total === 0n) continue;
        this.capAlerts(alerts, usage[i], tenantSettings, views[i], totals[i]);
        if (this.velocityToCheck(alerts, views[i])) await this.velocityAlert(alerts, usage[i], tenantSettings, views[i]);
      }
      await this.enqueue(alerts);
    }
    if (ended.length) await this.closeSessions(ended);
    return blocks.map((b) => b.events.map(() => ({})));
  }

  /**
   * Shortens the markers of the blocks acked on their first delivery to ACKED_MARKER_TTL_SECONDS.
   * A marker stays a day when any event under it was delivered before (another consumer may hold
   * it), was not acked by this call (it stays pending, or another consumer acked it first), or
   * when the call fails. One pipeline per hash slot (a partition's keys share one).
   */
  async afterAck(batch: StageEntry<LedgeredEvent>[], results: AckResult[]): Promise<void> {
    const shorten = new Map<string, boolean>();
    batch.forEach((entry, i) => {
      const key = this.markerKeys.get(entry);
      if (key === undefined) return;
      this.markerKeys.delete(entry);
      shorten.set(key, (shorten.get(key) ?? true) && results[i].acked && !entry.redelivered);
    });
    const keys = [...shorten].filter(([, yes]) => yes).map(([key]) => key);
    await expireMany(this.redis, keys, ACKED_MARKER_TTL_SECONDS);
  }

  /**
   * Lets the start and spend kept for sessions that ended (session.completed, session.failed) go
   * ENDED_SESSION_TTL_SECONDS after the end, once the batch's own events are counted: they would
   * otherwise stay for SESSION_START_TTL_SECONDS, two keys per session for two days. Not at once:
   * a session's last calls may reach this stage after its end (parallel calls, requests in
   * flight side by side), and a key deleted before them came back for two days. The bench ended
   * ~300 sessions a second and left ~100 a second that way. A session whose end comes first
   * gets its keys here (spend 0, start 0: ended, projected no further), so its late calls add
   * to keys that go too. One pipeline per hash slot (runPipelinePerKey); a redelivered
   * end does the same again, which is harmless.
   */
  private async closeSessions(ended: StageEntry<LedgeredEvent>[]): Promise<void> {
    const keys: string[] = [];
    for (const { partition, payload: e } of ended) {
      const session = this.sessionKeysOf(e.tenantId, e.sessionId!, partition);
      keys.push(session.start, session.spend);
    }
    await runPipelinePerKey(this.redis, keys, (pipeline, key) => {
      pipeline.set(key, ENDED_SESSION_START, 'EX', ENDED_SESSION_TTL_SECONDS, 'NX');
      pipeline.expire(key, ENDED_SESSION_TTL_SECONDS);
    });
  }

  /** The commitment of each event's subscription, looked up once per subscription of the batch. */
  private async commitmentsOf(entries: StageEntry<LedgeredEvent>[]): Promise<(CommitmentOf | undefined)[]> {
    const bySubscription = new Map<string, Promise<CommitmentOf | undefined>>();
    const lookups = entries.map(({ payload: e }) => {
      const key = `${e.tenantId}\u0000${e.subscription.subscriptionId}`;
      let lookup = bySubscription.get(key);
      if (!lookup) bySubscription.set(key, (lookup = this.commitments.forSubscription(e.tenantId, e.subscription.subscriptionId)));
      return lookup;
    });
    return Promise.all(lookups);
  }

  /**
   * True when this process already enqueued the alert, or an earlier event of the batch raised it:
   * it is not built again (the outbox would drop it anyway). `key` is alertKey(tenant, dedupe key).
   */
  private hasFired(out: BatchAlerts, key: string): boolean {
    return this.fired.has(key) || out.has(key);
  }

  private fire(out: BatchAlerts, alert: Alert): void {
    out.set(alertKey(alert.tenantId, alert.dedupeKey), alert);
  }

  /** A commitment's calls this period reaching a threshold of the committed calls: overage is near, or here. */
  private commitmentAlerts(out: BatchAlerts, e: LedgeredEvent, commitment: CommitmentOf | undefined, view: SpendView): void {
    const keys = view.commitmentKeys;
    if (!commitment || !keys) return;
    const calls = view.batch.view(view.commitment);
    for (const threshold of keys.thresholds) {
      if (calls < threshold.calls || this.hasFired(out, threshold.firedKey)) continue;
      this.fire(out, {
        tenantId: e.tenantId,
        type: 'commitment.threshold_reached',
        dedupeKey: threshold.dedupeKey,
        data: {
          customer_id: e.attribution.customerId,
          subscription_id: e.subscription.subscriptionId,
          rate_plan_id: commitment.ratePlanId,
          period_start: new Date(e.subscription.periodStart).toISOString(),
          period_end: new Date(e.subscription.periodEnd).toISOString(),
          committed_calls: commitment.committedCalls.toString(),
          calls: calls.toString(),
          threshold_percent: threshold.bps / 100,
          event_id: e.eventId,
        },
      });
    }
  }

  /**
   * Per event, the caps on it in their current period with the running total cap-check keeps:
   * one total per cap and period of the batch (shared by its events), one MGET per partition.
   */
  private async capTotals(entries: StageEntry<LedgeredEvent>[]): Promise<CapTotal[][]> {
    const now = this.now();
    const byPartition = new Map<number, { byCap: Map<SpendCap, Map<string, CapTotal>>; keys: string[]; list: CapTotal[] }>();
    const totals = entries.map(({ partition, payload: e }): CapTotal[] => {
      const caps = this.caps.capsFor(e.tenantId, e.attribution, e.sessionId, e.subscription.ratePlanId);
      if (caps.length === 0) return NO_CAPS;
      let place = byPartition.get(partition);
      if (!place) byPartition.set(partition, (place = { byCap: new Map(), keys: [], list: [] }));
      const mine: CapTotal[] = [];
      for (const cap of caps) {
        // A rolling total is counted at cap-check's clock (its window ends now); the others in the event's period.
        const period = capPeriod(cap, cap.period === 'rolling' ? { recordedAt: now } : e);
        if (!period) continue;
        let periods = place.byCap.get(cap);
        if (!periods) place.byCap.set(cap, (periods = new Map()));
        let total = periods.get(period.key);
        if (!total) {
          // periodEndsAt is read for day and month caps only, where it is the same for every event of the period.
          total = { cap, periodKey: period.key, periodEndsAt: period.endsAt, spent: 0n, thresholdsChecked: false };
          periods.set(period.key, total);
          place.keys.push(partitionedKey(this.prefix, capCounterKey(cap, period.key), partition));
          place.list.push(total);
        }
        mine.push(total);
      }
      return mine;
    });
    for (const { keys, list } of byPartition.values()) {
      if (keys.length === 0) continue;
      const values = await this.redis.mget(...keys);
      for (let k = 0; k < list.length; k++) list[k].spent = BigInt(values[k] ?? '0');
    }
    return totals;
  }

  /** A partitioned key name. */
  private key(name: string, partition: number): string {
    return partitionedKey(this.prefix, name, partition);
  }

  private sessionKeysOf(tenantId: string, sessionId: string, partition: number): SessionKeys {
    return { start: this.key(`session-start:${tenantId}:${sessionId}`, partition), spend: this.key(`session-spend:${tenantId}:${sessionId}`, partition) };
  }

  /**
   * Adds each event's cost to the hourly spend buckets of its customer, agent, team and app and
   * to its session's spend, and counts it toward its commitment, once: an applied marker per
   * block of events (per event for a block of one) makes a redelivery count nothing. Keeps the
   * earliest time seen per session. Returns per event where it finds what it sees, its own cost
   * included: the session's start and spend, the commitment's calls, and the current and previous
   * hour's totals of each scope. One script call per partition, each key of the batch in it once.
   */
  private async advanceBuckets(
    entries: StageEntry<LedgeredEvent>[],
    markerOf: string[],
    commitments: (CommitmentOf | undefined)[],
    settings: Map<string, AlertSettings>,
  ): Promise<SpendView[]> {
    const views: SpendView[] = new Array(entries.length);
    const batches = new Map<number, AdvanceBatch>();
    let marker: string | undefined;
    let markerPartition = -1;
    let markerKey = '';
    for (let i = 0; i < entries.length; i++) {
      const { partition, payload: e } = entries[i];
      let batch = batches.get(partition);
      if (!batch) batches.set(partition, (batch = new AdvanceBatch()));
      if (markerOf[i] !== marker || partition !== markerPartition) {
        marker = markerOf[i];
        markerPartition = partition;
        markerKey = this.key(marker, partition);
      }
      batch.item(markerKey);
      this.markerKeys.set(entries[i], markerKey);
      let session = -1;
      if (e.sessionId) {
        const keys =
          this.sessionKeys.find(partition, e.tenantId, e.sessionId) ??
          this.sessionKeys.keep(partition, e.tenantId, e.sessionId, this.sessionKeysOf(e.tenantId, e.sessionId, partition));
        session = batch.min(keys.start, BigInt(e.recordedAt), SESSION_START_TTL_SECONDS);
        batch.add(keys.spend, e.cost.total, SESSION_START_TTL_SECONDS);
      }
      let commitment = -1;
      let commitmentKeys: CommitmentKeys | undefined;
      const of = commitments[i];
      if (of) {
        const thresholdBps = settings.get(e.tenantId)!.thresholdBps;
        const kept = this.commitmentKeys.find(partition, e.tenantId, e.subscription.subscriptionId);
        commitmentKeys =
          kept &&
          kept.periodStart === e.subscription.periodStart &&
          kept.customerId === e.attribution.customerId &&
          kept.ratePlanId === of.ratePlanId &&
          kept.committedCalls === of.committedCalls &&
          kept.thresholdBps === thresholdBps
            ? kept
            : this.commitmentKeys.keep(partition, e.tenantId, e.subscription.subscriptionId, this.commitmentKeysOf(e, of, thresholdBps, partition));
        commitment = batch.add(commitmentKeys.counter, 1n, COMMITMENT_TTL_SECONDS);
      }
      const hour = hourOf(e.recordedAt);
      let velocity = -1;
      const scopes: HourKeys[] = [];
      for (let k = 0; k < VELOCITY_SCOPES.length; k++) {
        const kind = VELOCITY_SCOPES[k];
        const id = scopeIdOf(e, kind);
        if (!id) continue;
        let keys = this.hourKeys[k].find(partition, e.tenantId, id);
        if (keys?.hour !== hour) {
          const scope = { kind, id };
          const dedupeKey = kind === 'customer' ? `spend.velocity_spike:${id}:${hour}` : `spend.velocity_spike:${kind}:${id}:${hour}`;
          keys = this.hourKeys[k].keep(partition, e.tenantId, id, {
            hour,
            current: this.key(bucketKey(e, hour, scope), partition),
            previous: this.key(bucketKey(e, hour - 1, scope), partition),
            scope,
            dedupeKey,
            firedKey: alertKey(e.tenantId, dedupeKey),
          });
        }
        const slot = batch.add(keys.current, e.cost.total, BUCKET_TTL_SECONDS);
        batch.get(keys.previous);
        if (velocity < 0) velocity = slot;
        scopes.push(keys);
      }
      views[i] = { batch, session, commitment, commitmentKeys, velocity, scopes };
    }
    for (const batch of batches.values()) await batch.run(this.redis, APPLIED_TTL_SECONDS);
    return views;
  }

  /** A commitment's counter key in the event's period, and its thresholds' calls and dedupe keys under the tenant's settings. */
  private commitmentKeysOf(e: LedgeredEvent, commitment: CommitmentOf, thresholdBps: number[], partition: number): CommitmentKeys {
    return {
      periodStart: e.subscription.periodStart,
      customerId: e.attribution.customerId,
      ratePlanId: commitment.ratePlanId,
      committedCalls: commitment.committedCalls,
      thresholdBps,
      counter: this.key(commitmentKey(e, commitment), partition),
      thresholds: thresholdBps.map((bps) => {
        const dedupeKey = `commitment.threshold_reached:${e.attribution.customerId}:${commitment.ratePlanId}:${e.subscription.periodStart}:${commitment.committedCalls}:${bps}`;
        return { bps, calls: thresholdOf(commitment.committedCalls, bps), dedupeKey, firedKey: alertKey(e.tenantId, dedupeKey) };
      }),
    };
  }

  private capAlerts(out: BatchAlerts, entry: StageEntry<LedgeredEvent>, settings: AlertSettings, view: SpendView, totals: CapTotal[]): void {
    const e = entry.payload;
    for (const total of totals) {
      const { cap, periodKey, periodEndsAt, spent } = total;
      // Every event of the batch sees the same total: its thresholds are checked by the first.
      if (!total.thresholdsChecked) {
        total.thresholdsChecked = true;
        // A rolling cap has no period: a threshold fires at most once per window-long slot.
        const crossing = cap.period === 'rolling' && cap.windowSeconds ? `w${Math.floor(this.now() / (cap.windowSeconds * 1000))}` : periodKey;
        for (const bps of settings.thresholdBps) {
          if (spent < thresholdOf(cap.limitNano, bps)) continue;
          const dedupeKey = `cap.threshold_reached:${cap.id}:${crossing}:${cap.limitNano}:${bps}`;
          if (this.hasFired(out, alertKey(e.tenantId, dedupeKey))) continue;
          this.fire(out, {
            tenantId: e.tenantId,
            type: 'cap.threshold_reached',
            dedupeKey,
            data: { ...this.capData(cap, e, periodKey, spent), threshold_percent: bps / 100 },
          });
        }
      }
      if ((cap.period === 'day' || cap.period === 'month') && e.sessionId) {
        const alert = this.periodProjection(out, e, settings, view, cap, periodKey, periodEndsAt, spent);
        if (alert) this.fire(out, alert);
        continue;
      }
      const sessionStart = sessionStartOf(view);
      if (cap.period !== 'session' || !e.sessionId || sessionStart === undefined || spent >= cap.limitNano) continue;
      const elapsed = BigInt(Math.max(0, e.recordedAt - sessionStart));
      if (elapsed < BigInt(MIN_PROJECTION_ELAPSED_MS)) continue;
      const horizonMs = BigInt(settings.projectionHorizonSeconds) * 1000n;
      const projected = (spent * (elapsed + horizonMs)) / elapsed;
      if (projected < cap.limitNano) continue;
      const dedupeKey = `session.projection_exceeded:${cap.id}:${e.sessionId}:${cap.limitNano}`;
      if (this.hasFired(out, alertKey(e.tenantId, dedupeKey))) continue;
      this.fire(
        out,
        this.projectionAlert(e, cap, periodKey, spent, dedupeKey, sessionStart, {
          projected: formatNano(projected),
          horizon_seconds: settings.projectionHorizonSeconds,
        }),
      );
    }
  }

  /**
   * A running session against a day or month cap: the cap's total so far plus the session's
   * spend carried ahead at its rate for the horizon (or to the end of the period, when sooner)
   * passes the limit not reached yet. Once per cap, period and session.
   */
  private periodProjection(
    out: BatchAlerts,
    e: LedgeredEvent,
    settings: AlertSettings,
    view: SpendView,
    cap: SpendCap,
    periodKey: string,
    periodEndsAt: number,
    spent: bigint,
  ): Alert | undefined {
    // A period already over is past projecting: its late events (a redelivery, a backfill) can only report, not warn.
    if (spent >= cap.limitNano || periodEndsAt <= this.now()) return undefined;
    const sessionStart = sessionStartOf(view);
    const sessionSpent = sessionSpentOf(view);
    if (sessionStart === undefined || sessionSpent === undefined) return undefined;
    const elapsed = BigInt(Math.max(0, e.recordedAt - sessionStart));
    if (elapsed < BigInt(MIN_PROJECTION_ELAPSED_MS)) return undefined;
    const horizonMs = BigInt(Math.max(0, Math.min(settings.projectionHorizonSeconds * 1000, periodEndsAt - e.recordedAt)));
    const projected = spent + (sessionSpent * horizonMs) / elapsed;
    if (projected < cap.limitNano) return undefined;
    const dedupeKey = `session.projection_exceeded:${cap.id}:${periodKey}:${e.sessionId}:${cap.limitNano}`;
    if (this.hasFired(out, alertKey(e.tenantId, dedupeKey))) return undefined;
    return this.projectionAlert(e, cap, periodKey, spent, dedupeKey, sessionStart, {
      session_spent: formatNano(sessionSpent),
      projected: formatNano(projected),
      horizon_seconds: Number(horizonMs / 1000n),
    });
  }

  /** A `session.projection_exceeded` alert: the cap's data, the session, and how it was projected. */
  private projectionAlert(
    e: LedgeredEvent,
    cap: SpendCap,
    periodKey: string,
    spent: bigint,
    dedupeKey: string,
    sessionStart: number,
    projection: Record<string, unknown>,
  ): Alert {
    return {
      tenantId: e.tenantId,
      type: 'session.projection_exceeded',
      dedupeKey,
      data: {
        ...this.capData(cap, e, periodKey, spent),
        session_id: e.sessionId,
        session_started_at: new Date(sessionStart).toISOString(),
        ...projection,
      },
    };
  }

  private capData(cap: SpendCap, e: LedgeredEvent, periodKey: string, spent: bigint): Record<string, unknown> {
    return {
      cap_id: cap.id,
      scope_kind: cap.scopeKind,
      scope_id: cap.scopeId,
      period: cap.period,
      period_key: periodKey,
      action: cap.action,
      limit: formatNano(cap.limitNano),
      spent: formatNano(spent),
      currency: e.subscription.currency,
      customer_id: e.attribution.customerId,
      event_id: e.eventId,
    };
  }

  /** Whether a velocity alert of the event's scopes this hour has not fired yet (most events: every one did). */
  private velocityToCheck(out: BatchAlerts, view: SpendView): boolean {
    for (const keys of view.scopes) if (!this.hasFired(out, keys.firedKey)) return true;
    return false;
  }

  /** The last hour's spend (this hour, and the part of the previous hour still inside the hour) against the trailing week, of the customer, agent, team and app. */
  private async velocityAlert(out: BatchAlerts, entry: StageEntry<LedgeredEvent>, settings: AlertSettings, view: SpendView): Promise<void> {
    const e = entry.payload;
    // A late event says nothing about the rate now.
    if (this.now() - e.recordedAt > HOUR_MS) return;
    const hour = hourOf(e.recordedAt);
    // Below this, even this hour and the whole hour before together are under the minimum (most
    // events): they are skipped in floating point, without bigint arithmetic (a margin far wider
    // than the rounding keeps the skip exact; near the minimum the bigint test decides).
    const surelyBelow = Number(settings.velocityMinNano) * (1 - 1e-9);
    let intoHour: bigint | undefined;
    for (let s = 0; s < view.scopes.length; s++) {
      const { scope, dedupeKey, firedKey } = view.scopes[s];
      const current = view.velocity + 2 * s;
      if (this.hasFired(out, firedKey)) continue;
      const thisHour = view.batch.view(current);
      const hourBefore = view.batch.view(current + 1);
      if (Number(thisHour) + Number(hourBefore) < surelyBelow) continue;
      intoHour ??= BigInt(e.recordedAt - hour * HOUR_MS);
      const lastHour = thisHour + (hourBefore * (HOUR_MS_BIG - intoHour)) / HOUR_MS_BIG;
      if (lastHour < settings.velocityMinNano) continue;
      const average = await this.trailingAverage(entry, hour, scope);
      if (lastHour * 1000n <= average * BigInt(settings.velocityFactorMilli)) continue;
      this.fire(out, {
        tenantId: e.tenantId,
        type: 'spend.velocity_spike',
        dedupeKey,
        data: {
          scope_kind: scope.kind,
          scope_id: scope.id,
          customer_id: e.attribution.customerId,
          hour_start: new Date(hour * HOUR_MS).toISOString(),
          last_hour_spend: formatNano(lastHour),
          trailing_hourly_average: formatNano(average),
          factor: settings.velocityFactorMilli / 1000,
          currency: e.subscription.currency,
          event_id: e.eventId,
        },
      });
    }
  }

  /** The mean hourly spend of the 168 hours before this one, read once per scope and hour. */
  private async trailingAverage(entry: StageEntry<LedgeredEvent>, hour: number, scope: VelocityScope): Promise<bigint> {
    const e = entry.payload;
    const cacheKey = `${e.tenantId}/${scope.kind}/${scope.id}/${hour}`;
    const cached = this.trailing.get(cacheKey);
    if (cached !== undefined) return cached;
    const keys = Array.from({ length: TRAILING_HOURS }, (_, i) => partitionedKey(this.prefix, bucketKey(e, hour - 1 - i, scope), entry.partition));
    const values = await this.redis.mget(...keys);
    const average = values.reduce((sum, v) => sum + BigInt(v ?? '0'), 0n) / BigInt(TRAILING_HOURS);
    if (this.trailing.size > 10_000) this.trailing.clear();
    this.trailing.set(cacheKey, average);
    return average;
  }

  private async enqueue(alerts: BatchAlerts): Promise<void> {
    const fresh = [...alerts].filter(([key]) => !this.fired.has(key)).map(([, alert]) => alert);
    if (fresh.length === 0) return;
    // One order for every worker: two transactions taking the same dedupe keys never deadlock.
    fresh.sort((a, b) => (a.tenantId + a.dedupeKey < b.tenantId + b.dedupeKey ? -1 : 1));
    await this.sql.begin(async (tx) => {
      for (const alert of fresh) await enqueueWebhookEvent(tx, alert.tenantId, alert.type, alert.data, alert.dedupeKey);
    });
    if (this.fired.size + fresh.length > FIRED_MEMORY) this.fired.clear();
    for (const alert of fresh) this.fired.add(alertKey(alert.tenantId, alert.dedupeKey));
  }
}

export const spendAlertsStage: StageDefinition<LedgeredEvent> = {
  name: 'spend-alerts',
  input: STREAMS.ledgered,
  outputs: [],
  // Up to 5,000 events gathered for up to 250 ms: a batch's events share sessions, agents and
  // customers, so the larger it is the fewer distinct counter keys (and script arguments) per
  // event. Alerts are notices: the cap itself is enforced before the ledger, by cap-check.
  batchSize: 5000,
  lingerMs: 250,
  async setup({ sql, redis, config, onControl }) {
    const alerts = new SpendAlerts(sql, redis, config.REDIS_PREFIX);
    await onControl(async (message) => {
      if (message.type === 'caps.changed') await alerts.reloadCaps(message.tenantId);
    });
    await alerts.load();
    return {
      handle: (batch) => alerts.handle(batch),
      handleBlocks: (blocks) => alerts.handleBlocks(blocks),
      afterAck: (batch, results) => alerts.afterAck(batch, results),
    };
  },
};
