import type { Sql } from '../pipeline/postgres.js';
import { settleWithin, TransientError } from '../pipeline/errors.js';
import { parseTenantToken, sameDigest, sha256 } from './credentials.js';

export type TokenKind = 'ingest' | 'admin';

interface CachedToken {
  /** tenant_tokens.id: which of the tenant's tokens it is (an admin action is recorded with it). */
  tokenId: string;
  tenantId: string;
  kind: TokenKind;
  digest: Buffer;
  /** Until then the token is trusted without a look at PostgreSQL. */
  freshUntil: number;
  /** The token's own expiry (Infinity when none): never trusted past it, PostgreSQL down or not. */
  expiresAt: number;
}

/** How long a lookup may take before the request is answered without it. */
const DEFAULT_LOOKUP_TIMEOUT_MS = 2_000;
/** After a failed lookup, PostgreSQL is taken as down for this long: no request waits on it meanwhile. */
const RETRY_AFTER_FAILURE_MS = 1_000;
/** Digests of presented tokens kept at most (a flood of made-up tokens empties the map, nothing more). */
const MAX_DIGESTS = 10_000;

/**
 * Verifies tenant bearer tokens: finds the row by the token's lookup id, compares SHA-256
 * digests in constant time, and remembers a verified token for a few seconds so the hot
 * ingest path costs one hash, not one query. A `tenant-tokens.changed` control message
 * forgets every remembered token at once.
 *
 * While PostgreSQL cannot be reached (refused, reset, or no answer within the lookup timeout),
 * a token verified before keeps being trusted (up to its own expiry), so ingest goes on
 * accepting events; a token never seen makes verify throw a TransientError (the API answers 503
 * with Retry-After). No request waits more than the lookup timeout, and for a second after a
 * failure none waits at all.
 */
export class TenantTokens {
  private readonly cache = new Map<string, CachedToken>();
  private readonly inFlight = new Map<string, Promise<CachedToken | undefined>>();
  private downUntil = 0;

  constructor(
    private readonly sql: Sql,
    private readonly cacheMs = 5_000,
    private readonly lookupTimeoutMs = DEFAULT_LOOKUP_TIMEOUT_MS,
  ) {}

  async verify(token: string): Promise<{ tenantId: string; kind: TokenKind; tokenId: string } | undefined> {
    const parsed = parseTenantToken(token);
    if (!parsed) return undefined;
    const digest = this.digestOf(token);
    const now = Date.now();
    const cached = this.cache.get(parsed.lookupId);
    const answer = (entry: CachedToken | undefined) =>
      entry && sameDigest(entry.digest, digest) ? { tenantId: entry.tenantId, kind: entry.kind, tokenId: entry.tokenId } : undefined;
    if (cached && cached.freshUntil > now) return answer(cached);

    let found: CachedToken | undefined;
    try {
      if (now < this.downUntil) throw new TransientError('PostgreSQL was unreachable a moment ago');
      found = await this.lookupOnce(parsed.lookupId);
    } catch (err) {
      this.downUntil = Math.max(this.downUntil, Date.now() + RETRY_AFTER_FAILURE_MS);
      if (cached && cached.expiresAt > now && answer(cached)) {
        cached.freshUntil = Math.min(now + RETRY_AFTER_FAILURE_MS, cached.expiresAt);
        return answer(cached);
      }
      throw err instanceof TransientError ? err : new TransientError('cannot verify the token: PostgreSQL is unreachable', { cause: err });
    }
    if (!found) {
      this.cache.delete(parsed.lookupId);
      return undefined;
    }
    return answer(found);
  }

  /**
   * The SHA-256 of a presented token, remembered: a client sends the same token with every
   * request, and hashing it each time showed in the authorize profile. The comparison with the
   * stored digest stays constant-time.
   */
  private digestOf(token: string): Buffer {
    let digest = this.digests.get(token);
    if (!digest) {
      digest = sha256(token);
      if (this.digests.size >= MAX_DIGESTS) this.digests.clear();
      this.digests.set(token, digest);
    }
    return digest;
  }

  private readonly digests = new Map<string, Buffer>();

  forgetAll(): void {
    this.cache.clear();
  }

  /** One query per lookup id at a time, bounded by the lookup timeout. */
  private lookupOnce(lookupId: string): Promise<CachedToken | undefined> {
    let pending = this.inFlight.get(lookupId);
    if (!pending) {
      pending = this.lookup(lookupId).finally(() => this.inFlight.delete(lookupId));
      this.inFlight.set(lookupId, pending);
    }
    return settleWithin(pending, this.lookupTimeoutMs, () => new TransientError(`no answer from PostgreSQL within ${this.lookupTimeoutMs} ms`));
  }

  private async lookup(lookupId: string): Promise<CachedToken | undefined> {
    const [row] = await this.sql<{ id: string; tenant_id: string; kind: TokenKind; token_hash: Buffer; expires_at: Date | null }[]>`
      SELECT id, tenant_id, kind, token_hash, expires_at FROM tenant_tokens
      WHERE lookup_id = ${lookupId}
        AND (status = 'active' OR (expires_at IS NOT NULL AND expires_at > now()))`;
    if (!row) return undefined;
    const expiresAt = row.expires_at ? row.expires_at.getTime() : Infinity;
    const entry: CachedToken = {
      tokenId: row.id,
      tenantId: row.tenant_id,
      kind: row.kind,
      digest: row.token_hash,
      freshUntil: Math.min(Date.now() + this.cacheMs, expiresAt),
      expiresAt,
    };
    this.cache.set(lookupId, entry);
    return entry;
  }
}
