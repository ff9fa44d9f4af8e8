import { Hono, type MiddlewareHandler } from 'hono';
import type { Redis } from '../pipeline/redis.js';
import { z } from 'zod';
import type { Config } from '../pipeline/config.js';
import type { Logger } from '../pipeline/logger.js';
import { partitionOf, partitionedKey } from '../pipeline/keys.js';
import type { Credential } from '../domain/events.js';
import { describeIssues } from '../domain/validation.js';
import { pauseKeysFor, type PauseRecord } from '../store/pauses.js';
import { ApiError, tooLarge, unavailable } from './errors.js';
import { readLimitedBody, redisDown } from './http.js';
import { customerPartitionKey, type Attribution } from '../domain/flow.js';
import type { AttributionResolver } from '../store/attribution.js';
import { hashApiKey, sameDigest, sha256 } from '../store/credentials.js';
import type { Sql } from '../pipeline/postgres.js';
import type { TenantTokens } from '../store/tenant-tokens.js';
import { requireTenant, type TenantAuthVariables } from './auth.js';

export interface AuthorizeDeps {
  config: Config;
  redis: Redis;
  resolver: AttributionResolver;
  tokens: TenantTokens;
  sql: Sql;
  log?: Logger;
}

/** The reply of `POST /v1/authorize` (always 200 once the request itself is valid). */
export interface AuthorizeReply {
  allowed: boolean;
  /** Why not: unknown_credential, revoked, expired, suspended, invalid_client_secret or paused. */
  code?: string;
  reason?: string;
  /** The pause flag that stopped the caller (code `paused`). */
  pause?: PauseRecord;
  /** Who the credential belongs to; absent when it did not resolve or its secret did not match. */
  attribution?: { customer_id: string; team_id: string; agent_id?: string; app_id?: string };
}

const MAX_BODY_BYTES = 16 * 1024;

/** The body of `POST /v1/authorize` (exported for the OpenAPI description). */
export const authorizeBodySchema = z
  .strictObject({
    api_key: z.string().min(8).max(256).optional().meta({ description: 'The raw API key an agent or app presents.' }),
    client_id: z.string().min(1).max(128).optional().meta({ description: 'The client_id of an agent, instead of an API key.' }),
    client_secret: z.string().min(1).max(256).optional().meta({ description: 'Checked in constant time when given with client_id.' }),
    session_id: z.string().min(1).max(128).optional().meta({ description: 'Also checks the pause flag of this session.' }),
    // Accepted for the caller's convenience; no pause is kept per tool today.
    tool: z.string().min(1).max(256).optional(),
  })
  .refine((body) => !body.api_key !== !body.client_id, { path: ['api_key'], message: 'exactly one of api_key or client_id is required' })
  .refine((body) => !body.client_secret || !!body.client_id, { path: ['client_secret'], message: 'client_secret goes with client_id, not api_key' })
  .meta({ description: 'The credential to check: exactly one of api_key or client_id.' });

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

function describePause(record: PauseRecord): string {
  return `${record.scopeKind} ${record.scopeId} is paused: spend cap ${record.capId} (${record.period} ${record.periodKey}) reached its limit`;
}

/**
 * `POST /v1/authorize`: may this API key or client (and session) act now? Answers from Redis:
 * the credential's cached attribution (PostgreSQL on a miss), then every pause flag that could
 * stop it, read with one MGET in its customer's partition.
 */
export function createAuthorizeRoutes(deps: AuthorizeDeps): Hono<{ Variables: TenantAuthVariables }> {
  const { config, redis, resolver } = deps;
  const secrets = new SecretDigests(deps.sql);
  const app = new Hono<{ Variables: TenantAuthVariables }>();

  app.post('/v1/authorize', serverTiming, requireTenant(deps.tokens, 'ingest'), async (c) => {
    const tenantId = c.get('tenantId');
    const bytes = await readLimitedBody(c.req.raw, MAX_BODY_BYTES);
    if (!bytes) throw tooLarge(MAX_BODY_BYTES);
    let raw: unknown;
    try {
      raw = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
    } catch (err) {
      throw new ApiError(400, 'invalid_body', `the body is not valid JSON: ${(err as Error).message}`);
    }
    const parsed = authorizeBodySchema.safeParse(raw);
    if (!parsed.success) {
      throw new ApiError(400, 'validation_failed', 'the request body is not a valid authorize request', describeIssues(parsed.error));
    }
    const body = parsed.data;
    const credential: Credential = body.api_key
      ? { kind: 'api_key', keyHash: hashApiKey(body.api_key) }
      : { kind: 'client_id', clientId: body.client_id! };

    try {
      if (redisDown(redis)) throw new Error(`Redis connection is ${redis.status}`);
      const resolution = await resolver.resolve(tenantId, credential);
      if (!resolution.ok) return c.json<AuthorizeReply>({ allowed: false, code: resolution.code, reason: resolution.reason });
      const attribution = resolution.attribution;

      if (body.client_secret !== undefined) {
        const stored = await secrets.get(tenantId, body.client_id!);
        if (!stored || !sameDigest(stored, sha256(body.client_secret))) {
          return c.json<AuthorizeReply>({ allowed: false, code: 'invalid_client_secret', reason: 'client_secret does not match this client_id' });
        }
      }

      const partition = partitionOf(customerPartitionKey(tenantId, attribution.customerId), config.PARTITIONS);
      const keys = pauseKeysFor(tenantId, attribution, body.session_id).map((key) => partitionedKey(config.REDIS_PREFIX, key, partition));
      const flags = await redis.mget(...keys);
      const flag = flags.find((value) => value !== null);
      if (flag) {
        let pause: PauseRecord | undefined;
        try {
          pause = JSON.parse(flag) as PauseRecord;
        } catch {
          pause = undefined;
        }
        return c.json<AuthorizeReply>({
          allowed: false,
          code: 'paused',
          reason: pause ? describePause(pause) : 'paused by a spend cap',
          ...(pause ? { pause } : {}),
          attribution: attributionReply(attribution),
        });
      }
      return c.json<AuthorizeReply>({ allowed: true, attribution: attributionReply(attribution) });
    } catch (err) {
      deps.log?.warn({ err, tenantId }, 'authorize: cannot resolve the credential or read pause flags');
      throw unavailable('unavailable', 'cannot decide now: the credential store is unreachable; retry shortly', 1);
    }
  });

  return app;
}
