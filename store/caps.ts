import type { Sql } from '../pipeline/postgres.js';
import type { PricedEvent } from '../domain/flow.js';
import { windowTotals, type WindowSpec } from '../pipeline/admission.js';
import { partitionedKey } from '../pipeline/keys.js';
import type { Redis } from '../pipeline/redis.js';

/** The tag a counter limit puts on an event while its cap is at or over the limit (`cap:<cap id>`). */
export const CAP_TAG_PREFIX = 'cap:';

/**
 * The scopes a cap can be set on, narrowest first (a session scope is one session id; a plan
 * scope is every customer on that rate plan, and takes only per-session caps: one total per session).
 */
type CapScope = 'api_key' | 'app' | 'agent' | 'team' | 'customer' | 'session' | 'plan';

export interface SpendCap {
  id: string;
  tenantId: string;
  scopeKind: CapScope;
  scopeId: string;
  period: 'session' | 'day' | 'month' | 'rolling';
  /** period 'rolling': the spend of the last this many seconds counts (a multiple of 60). */
  windowSeconds?: number;
  limitNano: bigint;
  action: 'pause' | 'alert';
}

interface CapRow {
  id: string;
  tenant_id: string;
  scope_kind: SpendCap['scopeKind'];
  scope_id: string;
  period: SpendCap['period'];
  limit_nano: string;
  action: SpendCap['action'];
  window_seconds: number | null;
}

export interface CapScopes {
  credentialId?: string;
  agentId?: string;
  appId?: string;
  teamId: string;
  customerId: string;
  /** The customer's rate plan, for caps on every session of a plan. */
  ratePlanId?: string;
}

/** A tenant's active caps by scope kind, then scope id. */
type Book = Map<string, Map<string, SpendCap[]>>;

/** No cap (shared: callers only read it). */
const NO_CAPS: readonly SpendCap[] = Object.freeze([]) as readonly SpendCap[];

/** A tenant the book has never seen is read from PostgreSQL at most this often. */
const UNKNOWN_TENANT_RETRY_MS = 1_000;

/**
 * Active spend caps in memory, by tenant and scope ("agent:<id>"); reloaded per tenant on
 * `caps.changed`. A tenant it has not seen (created after the book was loaded, without a control
 * message: a seed, a direct insert) is looked up the first time one of its events comes.
 */
export class CapBook {
  private tenants = new Map<string, Book>();
  private readonly triedAt = new Map<string, number>();
  private readonly loadedAt = new Map<string, number>();
  private withPlanCaps = new Set<string>();

  /**
   * `maxAgeMs`: a tenant's caps are read again when older than this (a process that does not
   * hear control messages still sees a change that soon); by default only control messages reload.
   */
  constructor(
    private readonly sql: Sql,
    private readonly maxAgeMs = Number.POSITIVE_INFINITY,
  ) {}

  async loadAll(): Promise<void> {
    const now = Date.now();
    this.tenants = index(await this.query());
    this.withPlanCaps = new Set();
    for (const [tenantId, book] of this.tenants) {
      this.loadedAt.set(tenantId, now);
      this.notePlanCaps(tenantId, book);
    }
  }

  async reloadTenant(tenantId: string): Promise<void> {
    const now = Date.now();
    const book: Book = index(await this.query(tenantId)).get(tenantId) ?? new Map();
    this.tenants.set(tenantId, book);
    this.loadedAt.set(tenantId, now);
    this.notePlanCaps(tenantId, book);
  }

  /** Loads the tenants of a batch that the book has not seen yet (or holds for longer than maxAgeMs). */
  async ensureTenants(tenantIds: Iterable<string>): Promise<void> {
    const now = Date.now();
    for (const tenantId of new Set(tenantIds)) {
      if (this.isFresh(tenantId, now) || now - (this.triedAt.get(tenantId) ?? 0) < UNKNOWN_TENANT_RETRY_MS) continue;
      this.triedAt.set(tenantId, now);
      await this.reloadTenant(tenantId);
    }
  }

  /** The tenant's caps were read less than maxAgeMs ago (ensureTenants has nothing to do for it). */
  isFresh(tenantId: string, now = Date.now()): boolean {
    return this.tenants.has(tenantId) && now - (this.loadedAt.get(tenantId) ?? 0) < this.maxAgeMs;
  }

  /**
   * Every active cap on a scope of this caller: its credential, app or agent, team, customer and
   * session, and its plan's caps on every session (`ratePlanId`, the scope's own by default).
   */
  capsFor(tenantId: string, scope: CapScopes, sessionId?: string, ratePlanId = scope.ratePlanId): readonly SpendCap[] {
    const book = this.tenants.get(tenantId);
    if (!book || book.size === 0) return NO_CAPS;
    // Looked up by kind, then id: no key string is built per event (cap-check and spend-alerts ask for every event).
    let caps: SpendCap[] | undefined;
    const add = (kind: string, id: string | undefined) => {
      const list = id === undefined || id === '' ? undefined : book.get(kind)?.get(id);
      if (list) (caps ??= []).push(...list);
    };
    add('api_key', scope.credentialId);
    add('agent', scope.agentId);
    add('app', scope.appId);
    add('team', scope.teamId);
    add('customer', scope.customerId);
    if (sessionId) {
      add('session', sessionId);
      add('plan', ratePlanId);
    }
    return caps ?? NO_CAPS;
  }

  /** Changes (by identity) whenever the tenant's caps are read again: what was built from them may be kept until then. */
  version(tenantId: string): object | undefined {
    return this.tenants.get(tenantId);
  }

  /** Whether the tenant has caps on plans (authorize then needs the caller's plan). */
  hasPlanCaps(tenantId: string): boolean {
    return this.withPlanCaps.has(tenantId);
  }

  private notePlanCaps(tenantId: string, book: Book): void {
    if (book.has('plan')) this.withPlanCaps.add(tenantId);
    else this.withPlanCaps.delete(tenantId);
  }

  private query(tenantId?: string): Promise<CapRow[]> {
    return this.sql<CapRow[]>`
      SELECT id, tenant_id, scope_kind, scope_id, period, limit_nano, action, window_seconds FROM spend_caps
      WHERE status = 'active' ${tenantId === undefined ? this.sql`` : this.sql`AND tenant_id = ${tenantId}`}`;
  }
}

/** The cap a spend_caps row holds (a reader scoped to one tenant need not select tenant_id). */
export function capOfRow(tenantId: string, row: Omit<CapRow, 'tenant_id'>): SpendCap {
  return {
    id: row.id,
    tenantId,
    scopeKind: row.scope_kind,
    scopeId: row.scope_id,
    period: row.period,
    limitNano: BigInt(row.limit_nano),
    action: row.action,
    ...(row.window_seconds ? { windowSeconds: row.window_seconds } : {}),
  };
}

function index(rows: CapRow[]): Map<string, Book> {
  const tenants = new Map<string, Book>();
  for (const row of rows) {
    let book = tenants.get(row.tenant_id);
    if (!book) tenants.set(row.tenant_id, (book = new Map()));
    let ids = book.get(row.scope_kind);
    if (!ids) book.set(row.scope_kind, (ids = new Map()));
    const list = ids.get(row.scope_id) ?? [];
    list.push(capOfRow(row.tenant_id, row));
    ids.set(row.scope_id, list);
  }
  return tenants;
}

export const DAY_SECONDS = 86_400;

/** A rolling window is counted in this many buckets (each a sixtieth of the window, whole seconds). */
const WINDOW_BUCKETS = 60;

/** The buckets of a rolling cap (undefined for a cap per session, day or month). */
export function capWindow(cap: Pick<SpendCap, 'period' | 'windowSeconds'>): WindowSpec | undefined {
  if (cap.period !== 'rolling' || !cap.windowSeconds) return undefined;
  return { bucketMs: (cap.windowSeconds * 1000) / WINDOW_BUCKETS, buckets: WINDOW_BUCKETS };
}

/**
 * The period of a cap that an event falls in, and when that period ends (epoch ms). A rolling
 * cap has one counter ('w'); its "end" is when all the spend counted now has left the window
 * (the latest it can be paused for; the exact time comes from the buckets).
 */
export function capPeriod(cap: SpendCap, event: Pick<PricedEvent, 'recordedAt' | 'sessionId'>): { key: string; endsAt: number } | undefined {
  if (cap.period === 'session') {
    return event.sessionId ? { key: `s:${event.sessionId}`, endsAt: event.recordedAt + DAY_SECONDS * 1000 } : undefined;
  }
  if (cap.period === 'rolling') return cap.windowSeconds ? { key: 'w', endsAt: event.recordedAt + cap.windowSeconds * 1000 } : undefined;
  const last = lastPeriod[cap.period];
  if (event.recordedAt >= last.startsAt && event.recordedAt < last.endsAt) return { key: last.key, endsAt: last.endsAt };
  const at = new Date(event.recordedAt);
  const y = at.getUTCFullYear();
  const m = at.getUTCMonth();
  const period =
    cap.period === 'day' ?
      { key: at.toISOString().slice(0, 10), startsAt: Date.UTC(y, m, at.getUTCDate()), endsAt: Date.UTC(y, m, at.getUTCDate() + 1) }
    : { key: at.toISOString().slice(0, 7), startsAt: Date.UTC(y, m, 1), endsAt: Date.UTC(y, m + 1, 1) };
  lastPeriod[cap.period] = period;
  return { key: period.key, endsAt: period.endsAt };
}

/** The day and month periods last computed: nearly every call of a busy process falls in the same one. */
const lastPeriod: Record<'day' | 'month', { key: string; startsAt: number; endsAt: number }> = {
  day: { key: '', startsAt: 0, endsAt: 0 },
  month: { key: '', startsAt: 0, endsAt: 0 },
};

export function capCounterKey(cap: SpendCap, periodKey: string): string {
  return `cap:${cap.tenantId}:${cap.id}:${periodKey}`;
}

/**
 * Set when a pause of this cap is lifted within its period (the total stays over the limit):
 * authorize then no longer refuses estimates against it until the period ends.
 */
export function capLiftedKey(tenantId: string, capId: string, periodKey: string): string {
  return `caplifted:${tenantId}:${capId}:${periodKey}`;
}

/**
 * Takes the spend that has left their windows out of these caps' rolling totals in one
 * partition (caps of other periods are skipped), so that a plain GET of their counters is exact
 * at `now`. Returns, per rolling cap id, when its total is under the limit again as old spend
 * leaves (undefined when nothing is counted).
 */
export async function settleWindows(redis: Redis, prefix: string, partition: number, caps: SpendCap[], now = Date.now()): Promise<Map<string, number | undefined>> {
  const rolling = caps.flatMap((cap) => {
    const window = capWindow(cap);
    return window ? [{ cap, window }] : [];
  });
  const freesAt = new Map<string, number | undefined>();
  if (rolling.length === 0) return freesAt;
  const totals = await windowTotals(
    redis,
    partitionedKey(prefix, 'authorize', partition),
    rolling.map(({ cap, window }) => ({ key: partitionedKey(prefix, capCounterKey(cap, 'w'), partition), window, limit: cap.limitNano })),
    now,
  );
  for (const [i, { cap }] of rolling.entries()) freesAt.set(cap.id, totals[i].freesAt);
  return freesAt;
}
