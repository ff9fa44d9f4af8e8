import type { Redis } from '../pipeline/redis.js';
import type { Credential } from '../domain/events.js';
import { formatNano } from '../domain/money.js';
import { customerPartitionKey, type Attribution } from '../domain/flow.js';
import { AdmissionBatcher, AdmissionIds, admissionArg, admissionPrefix, releaseReservations, type AdmissionReply, type AdmissionRequest } from '../pipeline/admission.js';
import { AdmissionLeases } from '../pipeline/admission-leases.js';
import type { Logger } from '../pipeline/logger.js';
import type { ControlMessage } from '../pipeline/control.js';
import { partitionedKey, partitionOf } from '../pipeline/keys.js';
import type { Sql } from '../pipeline/postgres.js';
import type { AttributionResolver, Resolution } from './attribution.js';
import { CapBook, capCounterKey, capLiftedKey, capPeriod, capWindow, type SpendCap } from './caps.js';
import { SubscriptionBook } from './subscriptions.js';
import { pauseKeysFor, type PauseRecord } from './pauses.js';

/** What the caller asks: may this credential (in this session) act now, and spend this much? */
export interface AuthorizeAsk {
  tenantId: string;
  credential: Credential;
  sessionId?: string;
  /** Nano-units the caller expects to spend: reserved against every hard cap until the event settles it. */
  estimate?: bigint;
  /** The event id the caller will send for this call: its reservation is released when cap-check counts it. */
  eventId?: string;
}

/** One cap as authorize saw it, in its current period. */
export interface CapStanding {
  cap: SpendCap;
  periodKey: string;
  resetsAt: number;
  spent: bigint;
  reserved: bigint;
  /** limit - spent - reserved, never below zero. */
  remaining: bigint;
}

type AuthorizeRefusal =
  | { code: 'unknown_credential' | 'revoked' | 'expired' | 'suspended'; reason: string }
  | { code: 'paused'; reason: string; pause?: PauseRecord }
  | { code: 'rate_limited'; reason: string; retryAfterMs: number }
  | { code: 'too_many_sessions'; reason: string; active: number; max: number }
  | { code: 'insufficient_budget'; reason: string; standing: CapStanding };

export interface AuthorizeDecision {
  allowed: boolean;
  refusal?: AuthorizeRefusal;
  attribution?: Attribution;
  caps: CapStanding[];
  /** The least any hard cap leaves (absent when no hard cap applies). */
  remaining?: bigint;
  rate?: { limit: number; used: number };
  sessions?: { max: number; active: number };
  reservation?: { id: string; amount: bigint; expiresAt: number };
}

/** What authorize keeps of one credential in memory: who it is, and the agent's own limits. */
interface ScopeChain {
  resolution: Resolution;
  ratePerMinute?: number;
  maxSessions?: number;
  until: number;
}

/**
 * What authorize sends for one caller (a credential's chain, a session, a rate plan) and the caps
 * it answers with: the same on every call until the chain is refreshed, the tenant's caps are read
 * again or a day or month period ends, so it is built once and kept with the chain.
 */
interface CallerPlan {
  ratePlanId: string | undefined;
  capsVersion: object | undefined;
  /** The end of the first day or month period among the caps (their counter keys change then). */
  until: number;
  anchorKey: string;
  caps: { cap: SpendCap; periodKey: string; resetsAt: number }[];
  /** Some cap is per session: its resets_at moves with the clock. */
  sessionCaps: boolean;
  /** Without the per-call fields (the rate window's member, a reservation). */
  request: AdmissionRequest;
  prefix: string;
}

/** Plans kept per chain (one per session id seen): beyond this many the chain's plans are dropped. */
const MAX_PLANS_PER_CHAIN = 1_000;

const RATE_WINDOW_MS = 60_000;
/**
 * Admissions granted ahead are answered from memory for this long (AdmissionLeases): a pause
 * announced reaches this process at once, this bounds one whose announcement was lost, and the
 * running totals an answer from a lease reports are at most this old.
 */
const DEFAULT_LEASE_MS = 100;
const MAX_CHAINS = 50_000;
/** Without a control message, an agent's limits are read again after this long. */
const AGENT_LIMITS_TTL_MS = 30_000;

export interface AuthorizerOptions {
  prefix: string;
  partitions: number;
  /** A session unseen for this long no longer counts against max_concurrent_sessions. */
  sessionIdleMs: number;
  /** How long a credential's scope chain is trusted without a look at the shared cache (control messages drop it sooner). */
  chainTtlMs?: number;
  /** How long caps are trusted without a reload (caps.changed reloads them at once). */
  capsTtlMs?: number;
  /** How long a reservation waits for its event. */
  reservationTtlMs?: number;
  /** How long admissions granted ahead may be answered from memory (AdmissionLeases); 0 asks Redis on every call. */
  leaseMs?: number;
  log?: Logger;
}

/**
 * The enforcement point behind `POST /v1/authorize`. What can be cached is kept in this process
 * (credential -> attribution and agent limits, the tenant's caps), dropped by control messages
 * and otherwise trusted for a second; what must be exact (pause flags, running totals,
 * reservations, the rate window, the sessions in use) is read and written in one Redis script
 * call in the customer's partition: one round trip per call, or per partition for a batch.
 * A busy caller's script call also grants its next few calls ahead (pipeline/admission-leases.ts):
 * counted in its rate window and sessions at once, answered here without a round trip for up to
 * DEFAULT_LEASE_MS, dropped the moment a pause flag of the caller is announced. Calls with an
 * estimate (a reservation) always go to Redis.
 */
export class Authorizer {
  private readonly chains = new Map<string, ScopeChain>();
  private readonly limits = new Map<string, { limits: Pick<ScopeChain, 'ratePerMinute' | 'maxSessions'>; until: number }>();
  private readonly caps: CapBook;
  /** Read only for tenants with caps on plans (the caller's plan picks them). */
  private readonly subscriptions: SubscriptionBook;
  private readonly batcher: AdmissionBatcher;
  private readonly leases: AdmissionLeases | undefined;
  private readonly ids = new AdmissionIds();
  private readonly chainTtlMs: number;
  private readonly reservationTtlMs: number;

  constructor(
    private readonly sql: Sql,
    private readonly redis: Redis,
    private readonly resolver: AttributionResolver,
    private readonly options: AuthorizerOptions,
  ) {
    this.caps = new CapBook(sql, options.capsTtlMs ?? 1_000);
    this.subscriptions = new SubscriptionBook(sql);
    // Two script calls in flight per partition: what waits is split between them, so under load
    // Redis decides one while this process answers or sends the other (server p50 0.67-0.73 ->
    // 0.57-0.59 ms at c=16 in the bench, BENCHMARKS.md issue-14c).
    this.batcher = new AdmissionBatcher(redis, { maxInFlight: 2 });
    const leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
    this.leases = leaseMs > 0 ? new AdmissionLeases(redis, this.batcher, { leaseMs, name: `${options.prefix}authorize-flags:${process.pid}`, log: options.log }) : undefined;
    this.chainTtlMs = options.chainTtlMs ?? 1_000;
    this.reservationTtlMs = options.reservationTtlMs ?? 5 * 60_000;
  }

  /** Stops what runs in the background (the leases' flag subscription) and takes back unused admissions. */
  async close(): Promise<void> {
    await this.leases?.close();
  }

  /** Applies a control message to what is held in memory. */
  async applyControl(message: ControlMessage): Promise<void> {
    switch (message.type) {
      case 'caps.changed':
        await this.caps.reloadTenant(message.tenantId);
        break;
      case 'subscriptions.changed':
        if (this.caps.hasPlanCaps(message.tenantId)) await this.subscriptions.reloadTenant(message.tenantId);
        break;
      case 'credentials.changed':
      case 'hierarchy.changed':
        this.generation++;
        for (const key of this.chains.keys()) if (key.startsWith(`${message.tenantId}/`)) this.chains.delete(key);
        if (message.type === 'hierarchy.changed') for (const key of this.limits.keys()) if (key.startsWith(`${message.tenantId}/`)) this.limits.delete(key);
        break;
      default:
    }
  }

  /**
   * One decision (concurrent calls share script calls: see AdmissionBatcher). The path every
   * agent takes before each tool call: with its chain, caps and plan in memory it awaits nothing
   * but the script call.
   */
  async authorize(ask: AuthorizeAsk): Promise<AuthorizeDecision> {
    const now = Date.now();
    const chain =
      this.keptChain(ask.tenantId, ask.credential, now) ?? (await this.loadChain(chainKey(ask.tenantId, ask.credential), ask.tenantId, ask.credential, now));
    if (!this.caps.isFresh(ask.tenantId, now)) await this.caps.ensureTenants([ask.tenantId]);
    const ratePlanId = this.needsPlan(ask) ? (await this.plansOf([ask], [chain], now))[0] : undefined;
    return this.admitOne(ask, chain, ratePlanId, now);
  }

  /**
   * One decision per ask, in order. The admission requests go through the process's batcher: the
   * asks of one partition, and those of every other caller in the same turn or while that
   * partition's previous call is in flight, share one script call.
   */
  async authorizeMany(asks: AuthorizeAsk[]): Promise<AuthorizeDecision[]> {
    const now = Date.now();
    const chains = await Promise.all(asks.map((ask) => this.chainOf(ask.tenantId, ask.credential, now)));
    await this.caps.ensureTenants(asks.map((ask) => ask.tenantId));
    const plans = await this.plansOf(asks, chains, now);
    return Promise.all(asks.map((ask, index) => this.admitOne(ask, chains[index], plans[index], now)));
  }

  private admitOne(ask: AuthorizeAsk, chain: ScopeChain, ratePlanId: string | undefined, now: number): AuthorizeDecision | Promise<AuthorizeDecision> {
    if (!chain.resolution.ok) return { allowed: false, refusal: { code: chain.resolution.code, reason: chain.resolution.reason }, caps: [] };
    const attribution = chain.resolution.attribution;
    const plan = this.planOf(ask, chain, attribution, ratePlanId, now);
    const caps =
      plan.sessionCaps ?
        plan.caps.map((c) => (c.cap.period === 'session' ? { ...c, resetsAt: capPeriod(c.cap, { recordedAt: now, sessionId: ask.sessionId })!.endsAt } : c))
      : plan.caps;
    const estimate = ask.estimate !== undefined && ask.estimate > 0n ? ask.estimate : undefined;
    if (estimate === undefined && this.leases) {
      const leased = this.leases.take(plan, now);
      if (leased) return decide(attribution, chain, caps, leased, undefined, now);
      return this.leases.admit(plan).then(({ reply, now: at }) => decide(attribution, chain, caps, reply, undefined, at));
    }
    // The caller's lease would not show the reservation: its next answer reads it from Redis.
    this.leases?.forget(plan);
    // Held for the credential that asked: only it may release the reservation (release below).
    const reservation =
      estimate !== undefined ? { estimate, id: ask.eventId ?? this.ids.next('rsv_'), ttlMs: this.reservationTtlMs, owner: reservationOwner(attribution) } : undefined;
    const arg = admissionArg(plan.prefix, { member: plan.request.rate ? this.ids.next() : undefined, reservation });
    return this.batcher.admitArg(plan.anchorKey, arg).then(({ reply, now: at }) => decide(attribution, chain, caps, reply, reservation, at));
  }

  /** Whether the caller's plan must be looked up (its tenant caps by rate plan and it names a session). */
  private needsPlan(ask: AuthorizeAsk): boolean {
    return ask.sessionId !== undefined && this.caps.hasPlanCaps(ask.tenantId);
  }

  private readonly plansByChain = new WeakMap<ScopeChain, Map<string, CallerPlan>>();

  /** The caller's plan: kept with its chain while its caps and their periods hold (see CallerPlan). */
  private planOf(ask: Pick<AuthorizeAsk, 'tenantId' | 'sessionId'>, chain: ScopeChain, attribution: Attribution, ratePlanId: string | undefined, now: number): CallerPlan {
    let plans = this.plansByChain.get(chain);
    if (!plans) this.plansByChain.set(chain, (plans = new Map()));
    const sessionKey = ask.sessionId ?? '';
    const capsVersion = this.caps.version(ask.tenantId);
    const kept = plans.get(sessionKey);
    if (kept && kept.capsVersion === capsVersion && kept.ratePlanId === ratePlanId && now < kept.until) return kept;

    const partition = partitionOf(customerPartitionKey(ask.tenantId, attribution.customerId), this.options.partitions);
    const key = (name: string) => partitionedKey(this.options.prefix, name, partition);
    let until = Number.POSITIVE_INFINITY;
    const caps = this.caps.capsFor(ask.tenantId, ratePlanId ? { ...attribution, ratePlanId } : attribution, ask.sessionId).flatMap((cap) => {
      const period = capPeriod(cap, { recordedAt: now, sessionId: ask.sessionId });
      if (!period) return [];
      if (cap.period === 'day' || cap.period === 'month') until = Math.min(until, period.endsAt);
      return [{ cap, periodKey: period.key, resetsAt: period.endsAt }];
    });
    const owner = attribution.agentId ? `agent:${attribution.agentId}` : `app:${attribution.appId}`;
    const request: AdmissionRequest = {
      flagKeys: pauseKeysFor(ask.tenantId, attribution, ask.sessionId).map(key),
      budgets: caps.map(({ cap, periodKey }) => ({
        counterKey: key(capCounterKey(cap, periodKey)),
        limit: cap.limitNano,
        hard: cap.action === 'pause',
        overrideKey: key(capLiftedKey(ask.tenantId, cap.id, periodKey)),
        ...(capWindow(cap) ? { window: capWindow(cap) } : {}),
      })),
      ...(chain.ratePerMinute ? { rate: { key: key(rateWindowKey(ask.tenantId, owner)), limit: chain.ratePerMinute, windowMs: RATE_WINDOW_MS, member: '' } } : {}),
      ...(chain.maxSessions
        ? { sessions: { key: key(sessionsInUseKey(ask.tenantId, owner)), max: chain.maxSessions, ...(ask.sessionId ? { session: ask.sessionId } : {}), idleMs: this.options.sessionIdleMs } }
        : {}),
    };
    const plan: CallerPlan = {
      ratePlanId,
      capsVersion,
      until,
      anchorKey: key('authorize'),
      caps,
      sessionCaps: caps.some((c) => c.cap.period === 'session'),
      request,
      prefix: admissionPrefix(request),
    };
    if (plans.size >= MAX_PLANS_PER_CHAIN) plans.clear();
    plans.set(sessionKey, plan);
    return plan;
  }

  /**
   * The rate plan of each caller that names a session, for tenants with caps on plans (one lookup
   * in memory per caller; the subscriptions are read when the tenant is first seen or misses).
   */
  private async plansOf(asks: AuthorizeAsk[], chains: ScopeChain[], now: number): Promise<(string | undefined)[]> {
    // The common case (no plan caps) costs one scan of the asks, no await per ask.
    if (!asks.some((ask) => this.needsPlan(ask))) return [];
    return Promise.all(
      asks.map(async (ask, i) => {
        const resolution = chains[i].resolution;
        if (!this.needsPlan(ask) || !resolution.ok) return undefined;
        return (await this.subscriptions.findOrReload(ask.tenantId, resolution.attribution, now))?.ratePlanId;
      }),
    );
  }

  /**
   * Releases a reservation made by `authorize` with an estimate, before its event comes (the call
   * was cancelled, or cost nothing): the same caller (credential, session) names it by id. The
   * amount stops counting against every cap it was held on at once. Idempotent: a reservation
   * released, settled by its event or expired releases nothing; nor does one another credential
   * made (the script compares the owner recorded with it). Returns how many caps held it,
   * or the refusal when the credential does not resolve.
   */
  async release(ask: Omit<AuthorizeAsk, 'estimate' | 'eventId'> & { reservationId: string }): Promise<{ released: number } | { refusal: AuthorizeRefusal }> {
    const now = Date.now();
    const chain = await this.chainOf(ask.tenantId, ask.credential, now);
    if (!chain.resolution.ok) return { refusal: { code: chain.resolution.code, reason: chain.resolution.reason } };
    await this.caps.ensureTenants([ask.tenantId]);
    const [ratePlanId] = await this.plansOf([ask], [chain], now);
    const plan = this.planOf(ask, chain, chain.resolution.attribution, ratePlanId, now);
    this.leases?.forget(plan);
    const owner = reservationOwner(chain.resolution.attribution);
    const releases = plan.request.budgets.map((budget) => ({ counterKey: budget.counterKey, id: ask.reservationId, owner }));
    return { released: await releaseReservations(this.redis, plan.anchorKey, releases) };
  }

  /**
   * An agent's rate_limit_per_minute and max_concurrent_sessions: read from PostgreSQL at most
   * every AGENT_LIMITS_TTL_MS per agent (a change announces hierarchy.changed, which drops them).
   */
  private async agentLimits(tenantId: string, agentId: string, now: number): Promise<Pick<ScopeChain, 'ratePerMinute' | 'maxSessions'>> {
    const key = `${tenantId}/${agentId}`;
    const cached = this.limits.get(key);
    if (cached && cached.until > now) return cached.limits;
    const [row] = await this.sql<{ rate_limit_per_minute: number | null; max_concurrent_sessions: number | null }[]>`
      SELECT rate_limit_per_minute, max_concurrent_sessions FROM agents WHERE tenant_id = ${tenantId} AND id = ${agentId}`;
    const limits: Pick<ScopeChain, 'ratePerMinute' | 'maxSessions'> = {};
    if (row?.rate_limit_per_minute) limits.ratePerMinute = row.rate_limit_per_minute;
    if (row?.max_concurrent_sessions) limits.maxSessions = row.max_concurrent_sessions;
    if (this.limits.size >= MAX_CHAINS) this.limits.clear();
    this.limits.set(key, { limits, until: now + AGENT_LIMITS_TTL_MS });
    return limits;
  }

  /**
   * A credential's scope chain: from memory while younger than chainTtlMs. In the last quarter of
   * that time the first call that sees it starts a refresh and is answered from memory meanwhile,
   * so under steady traffic no call waits for the shared cache; no answer rests on a chain read
   * longer ago than chainTtlMs plus one lookup.
   */
  private async chainOf(tenantId: string, credential: Credential, now: number): Promise<ScopeChain> {
    return this.keptChain(tenantId, credential, now) ?? this.loadChain(chainKey(tenantId, credential), tenantId, credential, now);
  }

  /** The chain in memory, when it is young enough (starting its refresh near the end of its time); undefined otherwise. */
  private keptChain(tenantId: string, credential: Credential, now: number): ScopeChain | undefined {
    const cacheKey = chainKey(tenantId, credential);
    const cached = this.chains.get(cacheKey);
    if (!cached || cached.until <= now) return undefined;
    if (cached.until - now < this.chainTtlMs / 4 && !this.refreshing.has(cacheKey)) {
      this.refreshing.add(cacheKey);
      this.loadChain(cacheKey, tenantId, credential, now).then(
        () => this.refreshing.delete(cacheKey),
        () => this.refreshing.delete(cacheKey), // the entry runs out and the next call looks it up itself, failing loudly
      );
    }
    return cached;
  }

  private readonly refreshing = new Set<string>();

  /** Bumped by every credentials or hierarchy change: a lookup that began before one does not fill the cache. */
  private generation = 0;

  private async loadChain(cacheKey: string, tenantId: string, credential: Credential, now: number): Promise<ScopeChain> {
    const generation = this.generation;
    const resolution = await this.resolver.resolve(tenantId, credential, now);
    const chain: ScopeChain = { resolution, until: now + this.chainTtlMs };
    if (resolution.ok && resolution.attribution.agentId) Object.assign(chain, await this.agentLimits(tenantId, resolution.attribution.agentId, now));
    if (generation !== this.generation) return chain;
    if (this.chains.size >= MAX_CHAINS) this.chains.clear();
    this.chains.set(cacheKey, chain);
    return chain;
  }

}

/** Who holds a reservation: the credential (api_keys or client_credentials row) that made it. */
function reservationOwner(attribution: Attribution): string {
  return `cred:${attribution.credentialId}`;
}

function chainKey(tenantId: string, credential: Credential): string {
  return `${tenantId}/${credential.kind === 'api_key' ? `k:${credential.keyHash}` : `c:${credential.clientId}`}`;
}

/** The sliding window of an agent's admitted calls (a ZSET of the last minute). */
function rateWindowKey(tenantId: string, owner: string): string {
  return `ratewin:${tenantId}:${owner}`;
}

/** The sessions an agent holds open (a ZSET: session id -> last authorize), for max_concurrent_sessions. */
export function sessionsInUseKey(tenantId: string, owner: string): string {
  return `sessions-in-use:${tenantId}:${owner}`;
}

function describePause(record: PauseRecord): string {
  return `${record.scopeKind} ${record.scopeId} is paused: spend cap ${record.capId} (${record.period} ${record.periodKey}) reached its limit`;
}

interface Standings {
  standings: CapStanding[];
  /** The least any hard cap leaves. */
  remaining: bigint | undefined;
}

/**
 * Per budgets read (one grant's, the same on every answer from its lease) and the caps they were
 * read for: the standings of the answers before, the same objects (api/authorize.ts serializes
 * them once per grant). Not kept with a rolling cap, whose reset time may be the clock's.
 */
const standingsByBudgets = new WeakMap<AdmissionReply['budgets'], Standings & { caps: readonly PlannedCap[] }>();

type PlannedCap = { cap: SpendCap; periodKey: string; resetsAt: number };

function standingsOf(caps: readonly PlannedCap[], budgets: AdmissionReply['budgets'], now: number): Standings {
  const kept = standingsByBudgets.get(budgets);
  if (kept && kept.caps === caps) return kept;
  let rolling = false;
  const standings: CapStanding[] = caps.map(({ cap, periodKey, resetsAt }, i) => {
    const { spent, reserved, freesAt } = budgets[i];
    const left = cap.limitNano - spent - reserved;
    if (cap.period === 'rolling') rolling = true;
    // A rolling cap resets as its spend leaves the window: when what is asked fits again (now, when nothing is counted).
    const resets = cap.period === 'rolling' ? (freesAt ?? now) : resetsAt;
    return { cap, periodKey, resetsAt: resets, spent, reserved, remaining: left > 0n ? left : 0n };
  });
  let remaining: bigint | undefined;
  for (const s of standings) if (s.cap.action === 'pause' && (remaining === undefined || s.remaining < remaining)) remaining = s.remaining;
  if (!rolling) standingsByBudgets.set(budgets, { caps, standings, remaining });
  return { standings, remaining };
}

function decide(
  attribution: Attribution,
  chain: ScopeChain,
  caps: { cap: SpendCap; periodKey: string; resetsAt: number }[],
  reply: AdmissionReply,
  reservation: AdmissionRequest['reservation'],
  now: number,
): AuthorizeDecision {
  const { standings, remaining } = standingsOf(caps, reply.budgets, now);
  const decision: AuthorizeDecision = {
    allowed: reply.verdict.kind === 'ok',
    attribution,
    caps: standings,
    ...(remaining !== undefined ? { remaining } : {}),
    ...(chain.ratePerMinute ? { rate: { limit: chain.ratePerMinute, used: reply.rateUsed } } : {}),
    ...(chain.maxSessions ? { sessions: { max: chain.maxSessions, active: reply.sessionsActive } } : {}),
  };
  const verdict = reply.verdict;
  switch (verdict.kind) {
    case 'ok':
      if (reservation) decision.reservation = { id: reservation.id, amount: reservation.estimate, expiresAt: now + reservation.ttlMs };
      break;
    case 'flag': {
      let pause: PauseRecord | undefined;
      try {
        pause = JSON.parse(verdict.value) as PauseRecord;
      } catch {
        pause = undefined;
      }
      decision.refusal = { code: 'paused', reason: pause ? describePause(pause) : 'paused by a spend cap', ...(pause ? { pause } : {}) };
      // A session cap's period moves with the clock (now + its length), but its pause ends where
      // the flag does: at the crossing event's time + the session's length (pause.endsAt).
      const endsAt = pause?.endsAt;
      if (pause && typeof endsAt === 'number' && standings.some((s) => s.cap.id === pause.capId && s.cap.period === 'session')) {
        decision.caps = standings.map((s) => (s.cap.id === pause.capId && s.cap.period === 'session' ? { ...s, resetsAt: endsAt } : s));
      }
      break;
    }
    case 'rate':
      decision.refusal = {
        code: 'rate_limited',
        reason: `agent ${attribution.agentId} reached rate_limit_per_minute ${chain.ratePerMinute}`,
        retryAfterMs: verdict.retryAfterMs,
      };
      break;
    case 'sessions':
      decision.refusal = {
        code: 'too_many_sessions',
        reason: `agent ${attribution.agentId} already holds ${verdict.active} sessions open (max_concurrent_sessions ${chain.maxSessions})`,
        active: verdict.active,
        max: chain.maxSessions!,
      };
      break;
    case 'budget': {
      const standing = standings[verdict.index];
      decision.refusal = {
        code: 'insufficient_budget',
        reason: `spend cap ${standing.cap.id} on ${standing.cap.scopeKind} ${standing.cap.scopeId} leaves ${formatNano(standing.remaining)} of ${formatNano(standing.cap.limitNano)} ${standing.cap.period === 'rolling' ? `in the last ${standing.cap.windowSeconds} s` : `this ${standing.cap.period}`}: the estimate does not fit`,
        standing,
      };
      break;
    }
  }
  return decision;
}
