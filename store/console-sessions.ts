import { randomBytes } from 'node:crypto';
import type { Redis } from '../pipeline/redis.js';
import type { Sql } from '../pipeline/postgres.js';
import { sha256 } from './credentials.js';

/** Who a console session is for: the tenant, and the admin token it was signed in with (tenant_tokens.id). */
export interface ConsoleSession {
  tenantId: string;
  tokenId: string;
}

/** A session id as the cookie holds it: 32 random bytes, base64url (43 characters, no padding). */
const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

/**
 * Where a console session lives in Redis: under the deployment's prefix, named by the SHA-256 of
 * its id (hex), so that what Redis holds (a dump, a replica, MONITOR) cannot be replayed as a cookie.
 */
export function consoleSessionKey(prefix: string, sessionId: string): string {
  return `${prefix}console-session:${sha256(sessionId).toString('hex')}`;
}

/**
 * Console sign-in sessions, kept in Redis with a TTL: the server ends a session when its time is up
 * or when it is signed out of, whatever the browser does with its cookie. The raw id is only ever
 * in the cookie; Redis holds its digest as the key and the tenant and token ids as the value.
 */
export class ConsoleSessions {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    /** How long a session lasts from sign-in (not extended by use). */
    readonly ttlSeconds: number,
  ) {}

  /** Starts a session; returns its id (for the cookie only: it is not stored). */
  async start(session: ConsoleSession): Promise<string> {
    const id = randomBytes(32).toString('base64url');
    const value = JSON.stringify({ tenantId: session.tenantId, tokenId: session.tokenId, startedAt: new Date().toISOString() });
    // NX: an id is never handed out twice (with 256 random bits, a refusal here means a broken generator).
    const stored = await this.redis.set(consoleSessionKey(this.prefix, id), value, 'EX', this.ttlSeconds, 'NX');
    if (stored !== 'OK') throw new Error('console session id already in use');
    return id;
  }

  /** The session of an id, or undefined when it never existed, has expired or was ended. */
  async find(sessionId: string): Promise<ConsoleSession | undefined> {
    if (!SESSION_ID.test(sessionId)) return undefined;
    const value = await this.redis.get(consoleSessionKey(this.prefix, sessionId));
    if (value === null) return undefined;
    const parsed = JSON.parse(value) as Partial<ConsoleSession>;
    return typeof parsed.tenantId === 'string' && typeof parsed.tokenId === 'string' ? { tenantId: parsed.tenantId, tokenId: parsed.tokenId } : undefined;
  }

  /** Ends a session (signing out): its id stops working at once, on every API process. */
  async end(sessionId: string): Promise<void> {
    if (SESSION_ID.test(sessionId)) await this.redis.del(consoleSessionKey(this.prefix, sessionId));
  }
}

/**
 * Whether the admin token a session was signed in with is still valid: the tenant's admin token,
 * before its expiry when it has one (a token rotated with a grace), active when it has none. One
 * primary-key read, on every console request made with a session, so a rotation or revocation
 * ends the sessions of the tokens it retires at once, on every process (no cache to forget).
 */
export async function adminTokenStillValid(sql: Sql, session: ConsoleSession): Promise<boolean> {
  const rows = await sql`
    SELECT 1 FROM tenant_tokens
    WHERE id = ${session.tokenId} AND tenant_id = ${session.tenantId} AND kind = 'admin'
      AND coalesce(expires_at > now(), status = 'active')`;
  return rows.length > 0;
}
