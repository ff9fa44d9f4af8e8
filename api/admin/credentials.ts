import { z } from 'zod';
import {
  apiKeyCreate,
  apiKeyIssued,
  apiKeyOut,
  apiKeyRotated,
  clientCredentialCreate,
  clientCredentialIssued,
  clientCredentialOut,
  clientCredentialRotated,
  credentialRotate,
  credentialStatus,
} from '../../schemas/admin.js';
import { issueApiKey, issueClientSecret, newClientId } from '../../store/credentials.js';
import { announce, type Credentials } from './announce.js';
import { readEndpoints, type ReadSpec } from './crud.js';
import { TABLES, findOwned, insertOwned, type Db, type Row } from './db.js';
import { endpoint, type Endpoint } from './endpoint.js';
import { conflict, notFound } from '../errors.js';
import { iso } from './present.js';

/**
 * API keys and client credentials share one life: issued with a CSPRNG and shown once, stored
 * as a digest with a visible prefix and last four, rotated (new one issued, old one revoked at
 * once or after a grace period) and revoked. A credential authenticates while
 * `status = 'active' AND (expires_at IS NULL OR expires_at > now())`; a rotation with grace
 * leaves the old one active with expires_at at the end of the grace.
 */
interface CredentialKind extends ReadSpec {
  table: 'api_keys' | 'client_credentials';
  create: z.ZodType<Record<string, unknown>>;
  issued: z.ZodType;
  rotated: z.ZodType;
  /** Columns a rotation copies from the old credential to the new one. */
  inherited: string[];
  /** Checks the owner named in a create body; returns its columns. */
  owner(db: Db, tenantId: string, body: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** A new secret: the columns to store and the fields shown to the caller once. */
  issue(): { columns: Record<string, unknown>; shown: Record<string, string> };
  /** What identifies the credential in the pipeline's attribution cache. */
  credentialOf(row: Row): Credentials;
}

type CredentialState = 'active' | 'expired' | 'revoked';

function credentialState(row: Row, now = Date.now()): CredentialState {
  if (row.status === 'revoked') return 'revoked';
  return row.expires_at instanceof Date && row.expires_at.getTime() <= now ? 'expired' : 'active';
}

function credentialFields(row: Row) {
  return {
    id: row.id,
    prefix: row.prefix as string,
    last4: row.last4 as string,
    status: credentialState(row),
    expires_at: iso(row.expires_at),
    rotated_from: row.rotated_from as string | null,
    created_at: iso(row.created_at)!,
    revoked_at: iso(row.revoked_at),
  };
}

function presentApiKey(row: Row) {
  return { ...credentialFields(row), agent_id: row.agent_id as string | null, app_id: row.app_id as string | null, name: row.name as string | null };
}

function presentClientCredential(row: Row) {
  return { ...credentialFields(row), agent_id: row.agent_id as string, client_id: row.client_id as string };
}

const ownerFilter = z.string().min(1).max(128).optional();

/** `?status=` as credentialState reads it, not the column alone. */
const statusCondition = (db: Db, status: string) =>
  status === 'revoked'
    ? db`AND status = 'revoked'`
    : status === 'expired'
      ? db`AND status <> 'revoked' AND expires_at <= now()`
      : db`AND status <> 'revoked' AND (expires_at IS NULL OR expires_at > now())`;

const API_KEYS: CredentialKind = {
  table: 'api_keys',
  path: '/api-keys',
  tag: 'API keys',
  filters: { agent_id: ownerFilter, app_id: ownerFilter, status: credentialStatus.optional() },
  conditions: { status: statusCondition },
  out: apiKeyOut,
  issued: apiKeyIssued,
  rotated: apiKeyRotated,
  create: apiKeyCreate,
  present: presentApiKey,
  inherited: ['agent_id', 'app_id', 'name'],
  async owner(db, tenantId, body) {
    if (typeof body.agent_id === 'string') await findOwned(db, 'agents', tenantId, body.agent_id);
    if (typeof body.app_id === 'string') await findOwned(db, 'apps', tenantId, body.app_id);
    return { agent_id: body.agent_id, app_id: body.app_id, name: body.name };
  },
  issue() {
    const key = issueApiKey();
    return { columns: { key_hash: key.keyHash, prefix: key.prefix, last4: key.last4 }, shown: { key: key.secret } };
  },
  credentialOf: (row) => ({ keyHashes: [row.key_hash as string], clientIds: [] }),
};

const CLIENT_CREDENTIALS: CredentialKind = {
  table: 'client_credentials',
  path: '/client-credentials',
  tag: 'Client credentials',
  filters: { agent_id: ownerFilter, status: credentialStatus.optional() },
  conditions: { status: statusCondition },
  out: clientCredentialOut,
  issued: clientCredentialIssued,
  rotated: clientCredentialRotated,
  create: clientCredentialCreate,
  present: presentClientCredential,
  inherited: ['agent_id'],
  async owner(db, tenantId, body) {
    await findOwned(db, 'agents', tenantId, body.agent_id as string);
    return { agent_id: body.agent_id };
  },
  issue() {
    const secret = issueClientSecret();
    const clientId = newClientId();
    return {
      columns: { client_id: clientId, secret_hash: secret.secretHash, prefix: secret.prefix, last4: secret.last4 },
      shown: { client_id: clientId, client_secret: secret.secret },
    };
  },
  credentialOf: (row) => ({ keyHashes: [], clientIds: [row.client_id as string] }),
};

/**
 * Revocation, at once. A future expires_at is pulled back to now: the pipeline's resolver reads
 * a revoked row whose expires_at lies ahead as still within a rotation grace period.
 */
function revokedNow(db: Db) {
  return db`status = 'revoked', revoked_at = coalesce(revoked_at, now()),
    expires_at = CASE WHEN expires_at > now() THEN now() ELSE expires_at END`;
}

function both(kind: CredentialKind, rows: Row[]): Credentials {
  const all = rows.map(kind.credentialOf);
  return { keyHashes: all.flatMap((c) => c.keyHashes), clientIds: all.flatMap((c) => c.clientIds) };
}

function credentialEndpoints(kind: CredentialKind): Endpoint[] {
  const noun = TABLES[kind.table].noun;
  return [
    endpoint({
      method: 'post',
      path: kind.path,
      tag: kind.tag,
      summary: `Issue a ${noun}`,
      description: 'The reply carries the raw secret this once; only its digest is stored.',
      body: kind.create,
      response: kind.issued,
      status: 201,
      async handle({ tenantId, body, deps }) {
        const issued = kind.issue();
        const row = await deps.sql.begin(async (tx) =>
          insertOwned(tx, kind.table, tenantId, { ...(await kind.owner(tx, tenantId, body)), ...issued.columns, expires_at: body.expires_at }),
        );
        // A resolver may have cached "unknown" for this credential; drop that too.
        await announce(deps, tenantId, { credentials: kind.credentialOf(row) });
        return { ...kind.present(row), ...issued.shown };
      },
    }),
    ...readEndpoints(kind),
    endpoint({
      method: 'post',
      path: `${kind.path}/:id/rotate`,
      tag: kind.tag,
      summary: `Rotate a ${noun}`,
      description:
        'Issues a new one for the same owner and revokes this one: at once, or after `grace_seconds` during which both work. The new secret is shown this once.',
      body: credentialRotate,
      response: kind.rotated,
      status: 201,
      async handle({ tenantId, params, body, deps }) {
        const issued = kind.issue();
        const graceSeconds = body.grace_seconds ?? 0;
        const { fresh, previous } = await deps.sql.begin(async (tx) => {
          const old = await findOwned(tx, kind.table, tenantId, params.id, { forUpdate: true });
          const state = credentialState(old);
          if (state !== 'active') throw conflict(`credential_${state}`, `${noun} ${old.id} is ${state}; issue a new one instead`);
          const inherited = Object.fromEntries(kind.inherited.map((column) => [column, old[column]]));
          const fresh = await insertOwned(tx, kind.table, tenantId, { ...inherited, ...issued.columns, rotated_from: old.id });
          const [previous] = await tx<Row[]>`
            UPDATE ${tx(kind.table)} SET ${
              graceSeconds === 0
                ? revokedNow(tx)
                : tx`expires_at = least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => ${graceSeconds}))`
            }
            WHERE tenant_id = ${tenantId} AND id = ${old.id}
            RETURNING *`;
          return { fresh, previous };
        });
        await announce(deps, tenantId, { credentials: both(kind, [previous, fresh]) });
        return { ...kind.present(fresh), ...issued.shown, previous: kind.present(previous) };
      },
    }),
    endpoint({
      method: 'post',
      path: `${kind.path}/:id/revoke`,
      tag: kind.tag,
      summary: `Revoke a ${noun}`,
      description: 'It stops authenticating in the pipeline and at /v1/authorize within a second. Idempotent.',
      response: kind.out,
      async handle({ tenantId, params, deps }) {
        const [row] = await deps.sql<Row[]>`
          UPDATE ${deps.sql(kind.table)} SET ${revokedNow(deps.sql)}
          WHERE tenant_id = ${tenantId} AND id = ${params.id}
          RETURNING *`;
        if (!row) throw notFound(noun, params.id);
        await announce(deps, tenantId, { credentials: kind.credentialOf(row) });
        return kind.present(row);
      },
    }),
  ];
}

export function apiKeyEndpoints(): Endpoint[] {
  return credentialEndpoints(API_KEYS);
}

export function clientCredentialEndpoints(): Endpoint[] {
  return credentialEndpoints(CLIENT_CREDENTIALS);
}
