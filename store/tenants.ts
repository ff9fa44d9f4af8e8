import type postgres from 'postgres';
import type { Sql } from '../pipeline/postgres.js';
import { issueTenantToken, newId } from './credentials.js';
import type { TokenKind } from './tenant-tokens.js';

export interface CreatedTenant {
  tenantId: string;
  /** Raw bearer tokens: returned once, only their digests are stored. */
  ingestToken: string;
  adminToken: string;
}

async function insertToken(sql: postgres.ISql, tenantId: string, kind: TokenKind): Promise<{ id: string; token: string }> {
  const issued = issueTenantToken();
  const id = newId('tok');
  await sql`
    INSERT INTO tenant_tokens (id, tenant_id, kind, lookup_id, token_hash, prefix, last4)
    VALUES (${id}, ${tenantId}, ${kind}, ${issued.lookupId}, ${issued.tokenHash}, ${issued.prefix}, ${issued.last4})`;
  return { id, token: issued.secret };
}

/** Creates a tenant with one ingest and one admin token. */
export async function createTenant(sql: Sql, name: string): Promise<CreatedTenant> {
  const tenantId = newId('ten');
  return sql.begin(async (tx) => {
    await tx`INSERT INTO tenants (id, name) VALUES (${tenantId}, ${name})`;
    const ingest = await insertToken(tx, tenantId, 'ingest');
    const admin = await insertToken(tx, tenantId, 'admin');
    return { tenantId, ingestToken: ingest.token, adminToken: admin.token };
  });
}

/**
 * Issues a new token of one kind and retires the tenant's other active tokens of that kind,
 * at once or after `graceSeconds` (they stay valid until their expires_at, as TenantTokens reads
 * it). Processes holding verified tokens in memory forget them on a `tenant-tokens.changed`
 * control message, which the caller publishes.
 */
export async function rotateTenantToken(
  sql: Sql,
  tenantId: string,
  kind: TokenKind,
  options: { graceSeconds?: number } = {},
): Promise<{ token: string; retiredTokenIds: string[] }> {
  const graceSeconds = options.graceSeconds ?? 0;
  return sql.begin(async (tx) => {
    const retired = await tx<{ id: string }[]>`
      UPDATE tenant_tokens
      SET status = 'revoked', revoked_at = now(),
          expires_at = CASE WHEN ${graceSeconds}::int > 0 THEN now() + make_interval(secs => ${graceSeconds}) END
      WHERE tenant_id = ${tenantId} AND kind = ${kind} AND status = 'active'
      RETURNING id`;
    const issued = await insertToken(tx, tenantId, kind);
    return { token: issued.token, retiredTokenIds: retired.map((r) => r.id) };
  });
}
