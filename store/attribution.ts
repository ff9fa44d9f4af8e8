import type { Redis } from 'ioredis';
import type { Credential } from '../domain/events.js';
import type { Attribution } from '../domain/flow.js';
import type { Sql } from '../pipeline/postgres.js';
import { attributionCacheKey } from './attribution-keys.js';

export type Resolution =
  | { ok: true; attribution: Attribution }
  | { ok: false; code: 'unknown_credential' | 'revoked' | 'expired' | 'suspended'; reason: string };

export interface CacheCounters {
  hit(): void;
  miss(): void;
}

interface CredentialRow {
  credential: string;
  credential_id: string;
  status: string;
  expires_at: Date | null;
  agent_id: string | null;
  app_id: string | null;
  team_id: string;
  owner_status: string;
  product_id: string | null;
  product_kind: string | null;
  customer_id: string;
  customer_status: string;
}

interface Cached {
  resolution: Resolution;
  /** Epoch ms after which the answer changes by itself (a grace period ends). */
  changesAt?: number;
}

const NEGATIVE_TTL_SECONDS = 60;

/**
 * Resolves a credential (API key hash or client_id) to its full attribution: a Redis cache
 * with a TTL in front of PostgreSQL. Concurrent misses of one credential share a single
 * query, and the misses of a batch are looked up together. Answers for unknown credentials
 * are cached briefly too, so a flood of bad keys does not reach the database; the admin API
 * drops the cache entry of every credential it creates or changes.
 */
export class AttributionResolver {
  private readonly inFlight = new Map<string, Promise<Cached>>();

  constructor(
    private readonly sql: Sql,
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly ttlSeconds: number,
    private readonly counters?: CacheCounters,
  ) {}

  async resolve(tenantId: string, credential: Credential): Promise<Resolution> {
    return (await this.resolveMany([{ tenantId, credential }]))[0];
  }

  /** One resolution per item, in order. */
  async resolveMany(items: { tenantId: string; credential: Credential }[]): Promise<Resolution[]> {
    const keys = items.map((item) => attributionCacheKey(this.prefix, item.tenantId, item.credential));
    const firstItem = new Map<string, (typeof items)[number]>();
    for (const [i, key] of keys.entries()) if (!firstItem.has(key)) firstItem.set(key, items[i]);
    const distinct = [...firstItem.keys()];
    const cachedValues = distinct.length ? await this.redis.mget(...distinct) : [];
    const now = Date.now();
    const answers = new Map<string, Promise<Cached>>();
    const misses: { key: string; tenantId: string; credential: Credential }[] = [];
    distinct.forEach((key, i) => {
      const raw = cachedValues[i];
      if (raw) {
        const cached = JSON.parse(raw) as Cached;
        if (!cached.changesAt || cached.changesAt > now) {
          this.counters?.hit();
          answers.set(key, Promise.resolve(cached));
          return;
        }
      }
      this.counters?.miss();
      const shared = this.inFlight.get(key);
      if (shared) answers.set(key, shared);
      else {
        const item = firstItem.get(key)!;
        misses.push({ key, tenantId: item.tenantId, credential: item.credential });
      }
    });
    if (misses.length) {
      const lookup = this.lookup(misses);
      for (const miss of misses) {
        const one = lookup.then((found) => found.get(miss.key)!);
        this.inFlight.set(miss.key, one);
        answers.set(miss.key, one);
        void one.finally(() => this.inFlight.delete(miss.key)).catch(() => {});
      }
    }
    const resolved = new Map<string, Resolution>();
    for (const [key, answer] of answers) resolved.set(key, (await answer).resolution);
    return keys.map((key) => resolved.get(key)!);
  }

  private async lookup(misses: { key: string; tenantId: string; credential: Credential }[]): Promise<Map<string, Cached>> {
    const byTenant = new Map<string, { keyHashes: string[]; clientIds: string[] }>();
    for (const { tenantId, credential } of misses) {
      const wanted = byTenant.get(tenantId) ?? { keyHashes: [], clientIds: [] };
      if (credential.kind === 'api_key') wanted.keyHashes.push(credential.keyHash);
      else wanted.clientIds.push(credential.clientId);
      byTenant.set(tenantId, wanted);
    }
    const rows = new Map<string, CredentialRow>();
    for (const [tenantId, wanted] of byTenant) {
      for (const row of await this.queryCredentials(tenantId, wanted.keyHashes, wanted.clientIds)) {
        rows.set(`${tenantId}/${row.credential}`, row);
      }
    }
    const now = Date.now();
    const found = new Map<string, Cached>();
    const pipeline = this.redis.pipeline();
    for (const { key, tenantId, credential } of misses) {
      const id = credential.kind === 'api_key' ? `k:${credential.keyHash}` : `c:${credential.clientId}`;
      const cached = judge(rows.get(`${tenantId}/${id}`), now);
      found.set(key, cached);
      let ttl = cached.resolution.ok || cached.resolution.code !== 'unknown_credential' ? this.ttlSeconds : NEGATIVE_TTL_SECONDS;
      if (cached.changesAt) ttl = Math.max(1, Math.min(ttl, Math.ceil((cached.changesAt - now) / 1000)));
      pipeline.set(key, JSON.stringify(cached), 'EX', ttl);
    }
    await pipeline.exec();
    return found;
  }

  private queryCredentials(tenantId: string, keyHashes: string[], clientIds: string[]): Promise<CredentialRow[]> {
    return this.sql<CredentialRow[]>`
      WITH credential AS (
        SELECT 'k:' || key_hash AS credential, id, status, expires_at, agent_id, app_id
        FROM api_keys WHERE tenant_id = ${tenantId} AND key_hash = ANY(${keyHashes})
        UNION ALL
        SELECT 'c:' || client_id, id, status, expires_at, agent_id, NULL
        FROM client_credentials WHERE tenant_id = ${tenantId} AND client_id = ANY(${clientIds})
      )
      SELECT cr.credential, cr.id AS credential_id, cr.status, cr.expires_at, cr.agent_id, cr.app_id,
             t.id AS team_id, coalesce(a.status, ap.status) AS owner_status,
             coalesce(a.product_id, ap.product_id) AS product_id, p.kind AS product_kind,
             c.id AS customer_id, c.status AS customer_status
      FROM credential cr
      LEFT JOIN agents a ON a.tenant_id = ${tenantId} AND a.id = cr.agent_id
      LEFT JOIN apps ap ON ap.tenant_id = ${tenantId} AND ap.id = cr.app_id
      JOIN teams t ON t.tenant_id = ${tenantId} AND t.id = coalesce(a.team_id, ap.team_id)
      JOIN customers c ON c.tenant_id = ${tenantId} AND c.id = t.customer_id
      LEFT JOIN products p ON p.tenant_id = ${tenantId} AND p.id = coalesce(a.product_id, ap.product_id)`;
  }
}

/** The verdict on one credential row at time `now`, and when that verdict changes by itself. */
function judge(row: CredentialRow | undefined, now: number): Cached {
  if (!row) return { resolution: { ok: false, code: 'unknown_credential', reason: 'no such API key or client_id for this tenant' } };
  const expiresAt = row.expires_at?.getTime();
  const inGrace = expiresAt !== undefined && expiresAt > now;
  if (row.status === 'revoked' && !inGrace) {
    return { resolution: { ok: false, code: 'revoked', reason: `credential ${row.credential_id} is revoked` } };
  }
  if (row.status === 'active' && expiresAt !== undefined && !inGrace) {
    return { resolution: { ok: false, code: 'expired', reason: `credential ${row.credential_id} expired` } };
  }
  if (row.owner_status !== 'active') {
    const owner = row.agent_id ? `agent ${row.agent_id}` : `app ${row.app_id}`;
    return { resolution: { ok: false, code: 'suspended', reason: `${owner} is suspended` } };
  }
  if (row.customer_status !== 'active') {
    return { resolution: { ok: false, code: 'suspended', reason: `customer ${row.customer_id} is suspended` } };
  }
  const attribution: Attribution = {
    customerId: row.customer_id,
    teamId: row.team_id,
    credentialId: row.credential_id,
    ...(row.agent_id ? { agentId: row.agent_id } : {}),
    ...(row.app_id ? { appId: row.app_id } : {}),
    ...(row.product_id ? { productId: row.product_id } : {}),
    ...(row.product_kind ? { productKind: row.product_kind } : {}),
  };
  return { resolution: { ok: true, attribution }, ...(inGrace ? { changesAt: expiresAt } : {}) };
}
