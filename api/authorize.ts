import { Hono, type Context, type MiddlewareHandler } from 'hono';
import type { Redis } from '../pipeline/redis.js';
import { z } from 'zod';
import type { Config } from '../pipeline/config.js';
import type { Logger } from '../pipeline/logger.js';
import type { Credential } from '../domain/events.js';
import { formatNano, parseNano } from '../domain/money.js';
import { describeIssues } from '../domain/validation.js';
import type { PauseRecord } from '../store/pauses.js';
import { ApiError, tooLarge, unavailable } from './errors.js';
import { BatchedAnswers, readLimitedNodeBody, redisDown, RequestDeadlines } from './http.js';
import type { Attribution } from '../domain/flow.js';
import type { AttributionResolver } from '../store/attribution.js';
import { Authorizer, type AuthorizeAsk, type AuthorizeDecision, type CapStanding } from '../store/authorizer.js';
import { hashApiKey, sameDigest, sha256 } from '../store/credentials.js';
import type { Sql } from '../pipeline/postgres.js';
import type { TenantTokens } from '../store/tenant-tokens.js';
import type { ControlMessage } from '../pipeline/control.js';
import { requireTenant, verifyBearer, type TenantAuthVariables } from './auth.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isTransient } from '../pipeline/errors.js';
import { WIRE_ID, WIRE_ID_MESSAGE } from '../schemas/events.js';

export interface AuthorizeDeps {
  config: Config;
  redis: Redis;
  resolver: AttributionResolver;
  tokens: TenantTokens;
  sql: Sql;
  log?: Logger;
  /** How long a reservation (estimated_cost) waits for its event; 5 minutes by default. */
  reservationTtlMs?: number;
  /** How long admissions granted ahead are answered from memory (store/authorizer.ts); 0: every call asks Redis. */
  leaseMs?: number;
}

/** One cap on the caller as it stands in its current period (decimal amounts in the plan's currency). */
interface CapStandingReply {
  cap_id: string;
  scope_kind: string;
  scope_id: string;
  action: 'pause' | 'alert';
  period: string;
  /** period rolling: the window, in seconds (resets_at is then when enough spend has left it for what was asked to fit). */
  window_seconds?: number;
  period_key: string;
  spent: string;
  reserved: string;
  limit: string;
  remaining: string;
  resets_at: string;
}

/** The reply of `POST /v1/authorize` (always 200 once the request itself is valid). */
export interface AuthorizeReply {
  allowed: boolean;
  /**
   * Why not: unknown_credential, revoked, expired, suspended, invalid_client_secret, paused,
   * rate_limited, too_many_sessions or insufficient_budget.
   */
  code?: string;
  reason?: string;
  /** The cap that refused the call (paused, insufficient_budget): spent, limit, when it resets. */
  cap?: CapStandingReply;
  /** The pause flag that stopped the caller (code `paused`). */
  pause?: PauseRecord;
  /** rate_limited: when a slot of the window frees. */
  retry_after_ms?: number;
  /** The least any hard cap on the caller leaves this period (absent when none applies). */
  remaining?: string;
  /** Every cap on the caller's scopes, in its current period. */
  caps?: CapStandingReply[];
  rate_limit?: { limit: number; used: number };
  sessions?: { max: number; active: number };
  /** estimated_cost given and allowed: held against every hard cap until the event is counted, or until expires_at. */
  reservation?: { id: string; amount: string; expires_at: string };
  /** Who the credential belongs to; absent when it did not resolve or its secret did not match. */
  attribution?: { customer_id: string; team_id: string; agent_id?: string; app_id?: string };
}

const MAX_BODY_BYTES = 16 * 1024;

const MAX_ESTIMATE_NANO = 2n ** 63n - 1n;
const MAX_BATCH = 100;
/** Ids as ingest accepts them (schemas/events.ts): a session id also names Redis keys, so no `{`. */
const EVENT_ID = WIRE_ID;

/** Positive, exact to the nano-unit, at most what one event may cost (an int64 of nano-units). */
const estimatedCost = z
  .union([z.number(), z.string().max(40)])
  .transform((value, ctx) => {
    let nano: bigint;
    try {
      nano = parseNano(value);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
    if (nano <= 0n || nano > MAX_ESTIMATE_NANO) {
      ctx.addIssue({ code: 'custom', message: `must be greater than zero and at most 9223372036.854775807, got ${String(value)}` });
      return z.NEVER;
    }
    return nano;
  })
  .meta({
    description:
      'What the caller expects this call to cost (decimal, major unit): refused with insufficient_budget when it does not fit under a hard cap, otherwise reserved until the event is counted.',
    examples: ['0.25'],
  });

const authorizeFields = {
  api_key: z.string().min(8).max(256).optional().meta({ description: 'The raw API key an agent or app presents.' }),
  client_id: z.string().min(1).max(128).optional().meta({ description: 'The client_id of an agent, instead of an API key.' }),
  client_secret: z.string().min(1).max(256).optional().meta({ description: 'Checked in constant time when given with client_id.' }),
  session_id: z
    .string()
    .min(1)
    .max(128)
    .regex(EVENT_ID, WIRE_ID_MESSAGE)
    .optional()
    .meta({ description: 'Also checks the pause flag and caps of this session, and counts it against max_concurrent_sessions.' }),
  // Accepted for the caller's convenience; no pause is kept per tool today.
  tool: z.string().min(1).max(256).optional(),
  estimated_cost: estimatedCost.optional(),
  event_id: z
    .string()
    .min(1)
    .max(128)
    .regex(EVENT_ID, WIRE_ID_MESSAGE)
    .optional()
    .meta({ description: 'The event_id the caller will send for this call: its reservation is released when that event is counted.' }),
};

/** The body of `POST /v1/authorize` (exported for the OpenAPI description). */
export const authorizeBodySchema = z
  .strictObject(authorizeFields)
  .refine((body) => !body.api_key !== !body.client_id, { path: ['api_key'], message: 'exactly one of api_key or client_id is required' })
  .refine((body) => !body.client_secret || !!body.client_id, { path: ['client_secret'], message: 'client_secret goes with client_id, not api_key' })
  .meta({ description: 'The credential to check: exactly one of api_key or client_id.' });

/** The body of `POST /v1/authorize/batch` (exported for the OpenAPI description). */
export const authorizeBatchSchema = z
  .strictObject({ requests: z.array(authorizeBodySchema).min(1).max(MAX_BATCH) })
  .meta({ description: `Up to ${MAX_BATCH} authorize requests answered together (a gateway asking for many callers).` });

type AuthorizeBody = z.output<typeof authorizeBodySchema>;

/** The string fields the common body carries, with their [min, max] lengths read from authorizeFields. */
const PLAIN_FIELDS: Record<string, [number, number]> = Object.fromEntries(
  (['api_key', 'client_id', 'client_secret', 'session_id', 'tool', 'event_id'] as const).map((name) => {
    const field = authorizeFields[name].unwrap();
    return [name, [field.minLength ?? 0, field.maxLength ?? Number.POSITIVE_INFINITY]];
  }),
);

/**
 * The body as authorizeBodySchema parses it, for the body nearly every caller sends (string
 * fields within their bounds, no estimated_cost), checked without zod; undefined for anything
 * else, which zod then parses (and explains, when it is wrong). Tested against zod.
 */
export function plainAuthorizeBody(raw: unknown): AuthorizeBody | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const body: Record<string, string> = {};
  for (const key of Object.keys(raw)) {
    const bounds = PLAIN_FIELDS[key];
    const value = (raw as Record<string, unknown>)[key];
    if (bounds === undefined || !Object.hasOwn(PLAIN_FIELDS, key) || typeof value !== 'string' || value.length < bounds[0] || value.length > bounds[1]) return undefined;
    if ((key === 'event_id' || key === 'session_id') && !EVENT_ID.test(value)) return undefined;
    body[key] = value;
  }
  if (!body.api_key === !body.client_id || (body.client_secret !== undefined && body.client_id === undefined)) return undefined;
  return body as AuthorizeBody;
}

/** The body of `POST /v1/authorize/reservations/{id}/release`: the caller that made the reservation (exported for the OpenAPI description). */
export const releaseBodySchema = z
  .strictObject({
    api_key: authorizeFields.api_key,
    client_id: authorizeFields.client_id,
    client_secret: authorizeFields.client_secret,
    session_id: authorizeFields.session_id.meta({ description: 'The session_id given to authorize, if any: its caps held the reservation too.' }),
  })
  .refine((body) => !body.api_key !== !body.client_id, { path: ['api_key'], message: 'exactly one of api_key or client_id is required' })
  .refine((body) => !body.client_secret || !!body.client_id, { path: ['client_secret'], message: 'client_secret goes with client_id, not api_key' })
  .meta({ description: 'The credential (and session) the reservation was made for.' });

/** A reservation id as authorize returns it: the event_id given, or rsv_... */
const reservationId = z
  .string()
  .min(1)
  .max(128)
  .regex(EVENT_ID, WIRE_ID_MESSAGE);

/** Adds `Server-Timing: app;dur=<ms>` to every reply: the server's own time, token check included. */
const serverTiming: MiddlewareHandler = async (c, next) => {
  const start = performance.now();
  await next();
  c.res.headers.set('Server-Timing', `app;dur=${(performance.now() - start).toFixed(3)}`);
};

/**
 * Remembers client secret digests for half a second, so a caller that sends its secret on every
 * call costs no database round trip; a changed or revoked secret is seen within that time (a
 * revoked credential is refused by the resolver before its secret is even looked at).
 */
class SecretDigests {
  private readonly cache = new Map<string, { digest: Buffer | undefined; until: number }>();

  constructor(
    private readonly sql: Sql,
    private readonly ttlMs = 500,
  ) {}

  async get(tenantId: string, clientId: string): Promise<Buffer | undefined> {
    const key = `${tenantId}/${clientId}`;
    const now = Date.now();
    const cached = this.cache.get(key);
    if (cached && cached.until > now) return cached.digest;
    const [row] = await this.sql<{ secret_hash: Buffer }[]>`
      SELECT secret_hash FROM client_credentials WHERE tenant_id = ${tenantId} AND client_id = ${clientId}`;
    if (this.cache.size >= 10_000) this.cache.clear();
    this.cache.set(key, { digest: row?.secret_hash, until: now + this.ttlMs });
    return row?.secret_hash;
  }
}

function attributionReply(attribution: Attribution): NonNullable<AuthorizeReply['attribution']> {
  return {
    customer_id: attribution.customerId,
    team_id: attribution.teamId,
    ...(attribution.agentId ? { agent_id: attribution.agentId } : {}),
    ...(attribution.appId ? { app_id: attribution.appId } : {}),
  };
}

/** A cap's limit as text, once per cap object (the caps are read again at most every second). */
const limitTexts = new WeakMap<CapStanding['cap'], string>();
/** Period ends as ISO text: nearly every answer names the same few. */
const isoTimes = new Map<number, string>();

function limitText(cap: CapStanding['cap']): string {
  let text = limitTexts.get(cap);
  if (text === undefined) limitTexts.set(cap, (text = formatNano(cap.limitNano)));
  return text;
}

function isoTime(ms: number): string {
  let text = isoTimes.get(ms);
  if (text === undefined) {
    if (isoTimes.size >= 1_000) isoTimes.clear();
    isoTimes.set(ms, (text = new Date(ms).toISOString()));
  }
  return text;
}

function standingReply(s: CapStanding): CapStandingReply {
  return {
    cap_id: s.cap.id,
    scope_kind: s.cap.scopeKind,
    scope_id: s.cap.scopeId,
    action: s.cap.action,
    period: s.cap.period,
    ...(s.cap.windowSeconds ? { window_seconds: s.cap.windowSeconds } : {}),
    period_key: s.periodKey,
    spent: formatNano(s.spent),
    reserved: formatNano(s.reserved),
    limit: limitText(s.cap),
    remaining: formatNano(s.remaining),
    resets_at: isoTime(s.resetsAt),
  };
}

/** The cap a pause flag names, as it stands now; from the flag itself when the cap is no longer active. */
function pausedCapReply(pause: PauseRecord, caps: CapStanding[]): CapStandingReply {
  const standing = caps.find((s) => s.cap.id === pause.capId);
  if (standing) return standingReply(standing);
  return {
    cap_id: pause.capId,
    scope_kind: pause.scopeKind,
    scope_id: pause.scopeId,
    action: 'pause',
    period: pause.period,
    period_key: pause.periodKey,
    spent: formatNano(BigInt(pause.limitNano)),
    reserved: '0',
    limit: formatNano(BigInt(pause.limitNano)),
    remaining: '0',
    resets_at: new Date(pause.endsAt ?? pause.pausedAt).toISOString(),
  };
}

/** The answer to one decision, as `POST /v1/authorize` sends it. */
export function authorizeReply(decision: AuthorizeDecision): AuthorizeReply {
  const out: AuthorizeReply = { allowed: decision.allowed };
  const refusal = decision.refusal;
  if (refusal) {
    out.code = refusal.code;
    out.reason = refusal.reason;
    if (refusal.code === 'paused' && refusal.pause) {
      out.cap = pausedCapReply(refusal.pause, decision.caps);
      out.pause = refusal.pause;
    }
    if (refusal.code === 'insufficient_budget') out.cap = standingReply(refusal.standing);
    if (refusal.code === 'rate_limited') out.retry_after_ms = refusal.retryAfterMs;
  }
  if (decision.remaining !== undefined) out.remaining = formatNano(decision.remaining);
  if (decision.caps.length) out.caps = decision.caps.map(standingReply);
  if (decision.rate) out.rate_limit = decision.rate;
  if (decision.sessions) out.sessions = decision.sessions;
  if (decision.reservation) {
    const r = decision.reservation;
    out.reservation = { id: r.id, amount: formatNano(r.amount), expires_at: new Date(r.expiresAt).toISOString() };
  }
  if (decision.attribution) out.attribution = attributionReply(decision.attribution);
  return out;
}

/** The JSON of an allowed answer's standings (and the remaining budget they leave), once per standings array (store/authorizer.ts keeps one per grant). */
const standingsJson = new WeakMap<CapStanding[], string>();
/** The JSON of an attribution, once per credential's chain. */
const attributionJson = new WeakMap<Attribution, string>();

/**
 * The JSON of `authorizeReply(decision)`, field for field in the same order. An allowed answer without a
 * reservation (nearly every call) is written from pieces kept per grant and per credential: what
 * changes from one call to the next is the rate window's count.
 */
export function replyJson(decision: AuthorizeDecision): string {
  if (!decision.allowed || decision.refusal || decision.reservation || !decision.attribution) return JSON.stringify(authorizeReply(decision));
  let text = '{"allowed":true';
  if (decision.caps.length > 0 || decision.remaining !== undefined) {
    let kept = standingsJson.get(decision.caps);
    if (kept === undefined) {
      kept = '';
      if (decision.remaining !== undefined) kept += `,"remaining":${JSON.stringify(formatNano(decision.remaining))}`;
      if (decision.caps.length) kept += `,"caps":${JSON.stringify(decision.caps.map(standingReply))}`;
      standingsJson.set(decision.caps, kept);
    }
    text += kept;
  }
  if (decision.rate) text += `,"rate_limit":{"limit":${decision.rate.limit},"used":${decision.rate.used}}`;
  if (decision.sessions) text += `,"sessions":{"max":${decision.sessions.max},"active":${decision.sessions.active}}`;
  let attribution = attributionJson.get(decision.attribution);
  if (attribution === undefined) attributionJson.set(decision.attribution, (attribution = JSON.stringify(attributionReply(decision.attribution))));
  return `${text},"attribution":${attribution}}`;
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw new ApiError(400, 'invalid_body', `the body is not valid JSON: ${(err as Error).message}`);
  }
}

async function readJson(c: Context, maxBytes: number): Promise<unknown> {
  const bytes = await readLimitedNodeBody(c.env, c.req.raw, maxBytes);
  if (!bytes) throw tooLarge(maxBytes);
  return parseJson(bytes);
}

/** API key digests of recent callers (an agent sends the same key with every call). */
const keyHashes = new Map<string, string>();
const MAX_KEY_HASHES = 50_000;

function keyHashOf(apiKey: string): string {
  let hash = keyHashes.get(apiKey);
  if (hash === undefined) {
    hash = hashApiKey(apiKey);
    if (keyHashes.size >= MAX_KEY_HASHES) keyHashes.clear();
    keyHashes.set(apiKey, hash);
  }
  return hash;
}

function askOf(tenantId: string, body: AuthorizeBody): AuthorizeAsk {
  const credential: Credential = body.api_key ? { kind: 'api_key', keyHash: keyHashOf(body.api_key) } : { kind: 'client_id', clientId: body.client_id! };
  return {
    tenantId,
    credential,
    ...(body.session_id ? { sessionId: body.session_id } : {}),
    ...(body.estimated_cost !== undefined ? { estimate: body.estimated_cost } : {}),
    ...(body.event_id ? { eventId: body.event_id } : {}),
  };
}

export interface AuthorizeRoutes {
  app: Hono<{ Variables: TenantAuthVariables }>;
  /** Applies a control message to the process's caches (caps, credentials). */
  applyControl(message: ControlMessage): Promise<void>;
  /**
   * `POST /v1/authorize` served straight on Node's request and response, without the Hono
   * layers (routing, middleware, WHATWG Request/Response): the same checks, answers and errors.
   * Returns false for any other request, which the caller hands to the app.
   */
  serveNode(req: IncomingMessage, res: ServerResponse): boolean;
  /** Stops authorize's background work (its flag subscription); for a process that shuts down. */
  close(): Promise<void>;
}

/**
 * `POST /v1/authorize` and `POST /v1/authorize/batch`: may this API key or client (and session)
 * act now, and spend this much? The enforcement point: pause flags, hard caps with estimates,
 * rate_limit_per_minute and max_concurrent_sessions, decided in one Redis round trip (see
 * store/authorizer.ts).
 */
export function createAuthorizeRoutes(deps: AuthorizeDeps): AuthorizeRoutes {
  const { config, redis } = deps;
  const secrets = new SecretDigests(deps.sql);
  const authorizer = new Authorizer(deps.sql, redis, deps.resolver, {
    prefix: config.REDIS_PREFIX,
    partitions: config.PARTITIONS,
    sessionIdleMs: config.SESSION_IDLE_SECONDS * 1000,
    ...(deps.reservationTtlMs ? { reservationTtlMs: deps.reservationTtlMs } : {}),
    ...(deps.leaseMs !== undefined ? { leaseMs: deps.leaseMs } : {}),
    ...(deps.log ? { log: deps.log } : {}),
  });
  const app = new Hono<{ Variables: TenantAuthVariables }>();

  /**
   * A client_secret that does not match refuses the call before anything is counted (a client
   * that does not resolve is refused for that, first).
   */
  async function secretRefusal(tenantId: string, body: AuthorizeBody): Promise<AuthorizeReply | undefined> {
    if (body.client_secret === undefined) return undefined;
    const stored = await secrets.get(tenantId, body.client_id!);
    if (stored && sameDigest(stored, sha256(body.client_secret))) return undefined;
    const resolution = await deps.resolver.resolve(tenantId, { kind: 'client_id', clientId: body.client_id! });
    if (!resolution.ok) return { allowed: false, code: resolution.code, reason: resolution.reason };
    return { allowed: false, code: 'invalid_client_secret', reason: 'client_secret does not match this client_id' };
  }

  /** Fails at once while the Redis connection is lost, rather than queueing the call behind a reconnect. */
  function requireRedis(): void {
    if (redisDown(redis)) throw new Error(`Redis connection is ${redis.status}`);
  }

  function storeUnreachable(err: unknown, tenantId: string): ApiError {
    deps.log?.warn({ err, tenantId }, 'authorize: cannot resolve the credential or read pause flags');
    return unavailable('unavailable', 'cannot decide now: the credential store is unreachable; retry shortly', 1);
  }

  async function decideAll(tenantId: string, bodies: AuthorizeBody[]): Promise<AuthorizeReply[]> {
    try {
      requireRedis();
      const replies: (AuthorizeReply | undefined)[] = await Promise.all(bodies.map((body) => secretRefusal(tenantId, body)));
      const asked = bodies.flatMap((body, i) => (replies[i] ? [] : [{ i, ask: askOf(tenantId, body) }]));
      const decisions = await authorizer.authorizeMany(asked.map((a) => a.ask));
      for (const [j, { i }] of asked.entries()) replies[i] = authorizeReply(decisions[j]);
      return replies as AuthorizeReply[];
    } catch (err) {
      throw storeUnreachable(err, tenantId);
    }
  }

  /** One request, its answer as JSON: the batch's steps without its arrays (the path an agent takes before every tool call). */
  async function answerOne(tenantId: string, raw: unknown): Promise<string> {
    let body = plainAuthorizeBody(raw);
    if (!body) {
      const parsed = authorizeBodySchema.safeParse(raw);
      if (!parsed.success) {
        throw new ApiError(400, 'validation_failed', 'the request body is not a valid authorize request', describeIssues(parsed.error));
      }
      body = parsed.data;
    }
    try {
      requireRedis();
      const refused = body.client_secret === undefined ? undefined : await secretRefusal(tenantId, body);
      return refused ? JSON.stringify(refused) : replyJson(await authorizer.authorize(askOf(tenantId, body)));
    } catch (err) {
      throw storeUnreachable(err, tenantId);
    }
  }

  app.post('/v1/authorize', serverTiming, requireTenant(deps.tokens, 'ingest'), async (c) => {
    return c.body(await answerOne(c.get('tenantId'), await readJson(c, MAX_BODY_BYTES)), 200, { 'content-type': 'application/json' });
  });

  const timeoutMs = config.HTTP_REQUEST_TIMEOUT_MS;
  const deadlines = new RequestDeadlines(timeoutMs);

  /**
   * Answers once: with the decision, or with 503 when it takes longer than the request deadline
   * (whichever comes first; the other is dropped). One timer for all calls and no promise race:
   * this runs before every tool call of every agent.
   */
  const answers = new BatchedAnswers((err, res) => {
    deps.log?.error({ err }, 'authorize: cannot write the answer');
    res.destroy();
  });

  function serveAuthorize(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const start = performance.now();
    let answered = false;
    const answer = (status: number, json: string, headers?: Record<string, string>) => {
      if (answered) return;
      answered = true;
      deadlines.settle(deadline);
      answers.write(res, status, json, headers, start);
    };
    const refuse = (err: unknown) => {
      const refusal =
        err instanceof ApiError ? err
        : isTransient(err) ? unavailable('unavailable', 'a store this request needs is unreachable; retry later', 2)
        : undefined;
      if (!refusal) deps.log?.error({ err, path: '/v1/authorize' }, 'unexpected error');
      const error = refusal ?? new ApiError(500, 'internal', 'an unexpected error occurred; it has been logged');
      answer(error.status, JSON.stringify(error.body()), error.headers);
    };
    const deadline = deadlines.track(() => refuse(unavailable('timeout', `no answer within ${timeoutMs} ms: a store is slow or unreachable; retry later`, 2)));
    return decideRequest(req).then((payload) => answer(200, payload), refuse);
  }

  async function decideRequest(req: IncomingMessage): Promise<string> {
    const { tenantId } = await verifyBearer(deps.tokens, 'ingest', req.headers.authorization ?? '');
    const bytes = await readLimitedNodeBody({ incoming: req }, undefined as never, MAX_BODY_BYTES);
    if (!bytes) throw tooLarge(MAX_BODY_BYTES);
    return answerOne(tenantId, parseJson(bytes));
  }

  /**
   * Releases a reservation (estimated_cost) before its event comes: the call was cancelled or
   * will not be metered. Scoped by the ingest token's tenant and by the caller that made it (the
   * same credential and session_id); idempotent: 200 with released false when there is nothing
   * left to release (already released, settled by its event, expired, or never made).
   */
  app.post('/v1/authorize/reservations/:id/release', serverTiming, requireTenant(deps.tokens, 'ingest'), async (c) => {
    const tenantId = c.get('tenantId');
    const id = reservationId.safeParse(c.req.param('id'));
    if (!id.success) throw new ApiError(400, 'validation_failed', 'the reservation id is not valid', describeIssues(id.error).map((d) => ({ ...d, path: 'id' })));
    const raw = await readJson(c, MAX_BODY_BYTES);
    const parsed = releaseBodySchema.safeParse(raw);
    if (!parsed.success) throw new ApiError(400, 'validation_failed', 'the request body is not a valid release request', describeIssues(parsed.error));
    const body = parsed.data;
    let outcome: Awaited<ReturnType<Authorizer['release']>>;
    try {
      requireRedis();
      const refused = await secretRefusal(tenantId, body);
      if (refused) throw new ApiError(403, refused.code!, refused.reason!);
      const { credential } = askOf(tenantId, body);
      outcome = await authorizer.release({ tenantId, credential, ...(body.session_id ? { sessionId: body.session_id } : {}), reservationId: id.data });
    } catch (err) {
      if (err instanceof ApiError) throw err;
      deps.log?.warn({ err, tenantId }, 'authorize: cannot release a reservation');
      throw unavailable('unavailable', 'cannot release now: a store is unreachable; retry shortly', 1);
    }
    if ('refusal' in outcome) throw new ApiError(403, outcome.refusal.code, outcome.refusal.reason);
    return c.json({ id: id.data, released: outcome.released > 0, caps_released: outcome.released });
  });

  app.post('/v1/authorize/batch', serverTiming, requireTenant(deps.tokens, 'ingest'), async (c) => {
    const tenantId = c.get('tenantId');
    const parsed = authorizeBatchSchema.safeParse(await readJson(c, MAX_BODY_BYTES * MAX_BATCH));
    if (!parsed.success) {
      throw new ApiError(400, 'validation_failed', 'the request body is not a valid authorize batch', describeIssues(parsed.error));
    }
    return c.json({ results: await decideAll(tenantId, parsed.data.requests) });
  });

  return {
    app,
    applyControl: (message) => authorizer.applyControl(message),
    close: () => authorizer.close(),
    serveNode(req, res) {
      if (req.method !== 'POST' || req.url !== '/v1/authorize') return false;
      void serveAuthorize(req, res).catch((err: unknown) => {
        deps.log?.error({ err }, 'authorize: cannot write the answer');
        res.destroy();
      });
      return true;
    },
  };
}
