import type { Sql } from '../pipeline/postgres.js';
import { parseTenantToken, sameDigest, sha256 } from './credentials.js';

export type TokenKind = 'ingest' | 'admin';

interface CachedToken {
  tenantId: string;
  kind: TokenKind;
  digest: Buffer;
  validUntil: number;
}

/**
 * Verifies tenant bearer tokens: finds the row by the token's lookup id, compares SHA-256
 * digests in constant time, and remembers a verified token for a few seconds so the hot
 * ingest path costs one hash, not one query. A `tenant-tokens.changed` control message
 * forgets every remembered token at once.
 */
export class TenantTokens {
  private readonly cache = new Map<string, CachedToken>();

  constructor(
    private readonly sql: Sql,
    private readonly cacheMs = 5_000,
  ) {}

  async verify(token: string): Promise<{ tenantId: string; kind: TokenKind } | undefined> {
    const parsed = parseTenantToken(token);
    if (!parsed) return undefined;
    const digest = sha256(token);
    const now = Date.now();
    const cached = this.cache.get(parsed.lookupId);
    if (cached && cached.validUntil > now) {
      return sameDigest(cached.digest, digest) ? { tenantId: cached.tenantId, kind: cached.kind } : undefined;
    }
    const [row] = await this.sql<{ tenant_id: string; kind: TokenKind; token_hash: Buffer; expires_at: Date | null }[]>`
      SELECT tenant_id, kind, token_hash, expires_at FROM tenant_tokens
      WHERE lookup_id = ${parsed.lookupId}
        AND (status = 'active' OR (expires_at IS NOT NULL AND expires_at > now()))`;
    if (!row || !sameDigest(row.token_hash, digest)) return undefined;
    const expiresAt = row.expires_at ? row.expires_at.getTime() : Infinity;
    this.cache.set(parsed.lookupId, {
      tenantId: row.tenant_id,
      kind: row.kind,
      digest: row.token_hash,
      validUntil: Math.min(now + this.cacheMs, expiresAt),
    });
    return { tenantId: row.tenant_id, kind: row.kind };
  }

  forgetAll(): void {
    this.cache.clear();
  }
}
