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
 * Issues a new token of one kind and retires the tenant's other tokens of that kind still valid
 * (active, or retired earlier and still in their grace), at once or after `graceSeconds`: a grace
 * never outlasts the one a token already had, so a rotation without grace ends every old token
 * now (they stay valid until their expires_at, as TenantTokens reads it). Rotations of a tenant
 * take turns (its row is locked): two at once would each miss the token the other inserted, and
 * both would stay active. Processes holding verified tokens in memory forget them on a
 * `tenant-tokens.changed` control message, which the caller publishes.
 */
export async function rotateTenantToken(
  sql: Sql,
  tenantId: string,
  kind: TokenKind,
  options: { graceSeconds?: number } = {},
): Promise<{ token: string; retiredTokenIds: string[] }> {
  const graceSeconds = options.graceSeconds ?? 0;
  return sql.begin(async (tx) => {
    await tx`SELECT 1 FROM tenants WHERE id = ${tenantId} FOR UPDATE`;
    const retired = await tx<{ id: string }[]>`
      UPDATE tenant_tokens
      SET status = 'revoked', revoked_at = coalesce(revoked_at, now()),
          expires_at = CASE WHEN ${graceSeconds}::int > 0
            THEN least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => ${graceSeconds})) END
      WHERE tenant_id = ${tenantId} AND kind = ${kind}
        AND (status = 'active' OR (expires_at IS NOT NULL AND expires_at > now()))
      RETURNING id`;
    const issued = await insertToken(tx, tenantId, kind);
    return { token: issued.token, retiredTokenIds: retired.map((r) => r.id) };
  });
}
