import { getMany, setManyWithTtl, type Redis } from '../pipeline/redis.js';
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
  revoked_at: Date | null;
  agent_id: string | null;
  app_id: string | null;
  team_id: string;
  owner_status: string;
  product_id: string | null;
  product_kind: string | null;
  customer_id: string;
  customer_status: string;
}

/**
 * What is known of one credential: the answer for events accepted before `until` (epoch ms; the
 * credential's expiry, or the end of its rotation grace, or its revocation) and, from `until`
 * on, `after` (expired or revoked). A credential is judged as of the time its event was
 * accepted (ingestedAt), not when key-resolve gets to it: an event sent while its key was valid
 * is billed even if key-resolve reads it after the key lapsed.
 */
interface Cached {
  resolution: Resolution;
  until?: number;
  after?: Resolution;
}

function answerAt(cached: Cached, at: number): Resolution {
  return cached.until !== undefined && at >= cached.until ? cached.after! : cached.resolution;
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

  /** The credential's verdict at `at` (epoch ms; now by default). */
  async resolve(tenantId: string, credential: Credential, at = Date.now()): Promise<Resolution> {
    return (await this.resolveMany([{ tenantId, credential, at }]))[0];
  }

  /** One resolution per item, in order, each as of its `at` (an event's acceptance time; now by default). */
  async resolveMany(items: { tenantId: string; credential: Credential; at?: number }[]): Promise<Resolution[]> {
    const keys = items.map((item) => attributionCacheKey(this.prefix, item.tenantId, item.credential));
    const firstItem = new Map<string, (typeof items)[number]>();
    for (const [i, key] of keys.entries()) if (!firstItem.has(key)) firstItem.set(key, items[i]);
    const distinct = [...firstItem.keys()];
    const cachedValues = distinct.length ? await getMany(this.redis, distinct) : [];
    const answers = new Map<string, Promise<Cached>>();
    const misses: { key: string; tenantId: string; credential: Credential }[] = [];
    distinct.forEach((key, i) => {
      const raw = cachedValues[i];
      if (raw) {
        this.counters?.hit();
        answers.set(key, Promise.resolve(JSON.parse(raw) as Cached));
        return;
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
    const known = new Map<string, Cached>();
    for (const [key, answer] of answers) known.set(key, await answer);
    const now = Date.now();
    return keys.map((key, i) => answerAt(known.get(key)!, items[i].at ?? now));
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
    const found = new Map<string, Cached>();
    const writes: { key: string; value: string; ttlSeconds: number }[] = [];
    for (const { key, tenantId, credential } of misses) {
      const id = credential.kind === 'api_key' ? `k:${credential.keyHash}` : `c:${credential.clientId}`;
      const cached = judge(rows.get(`${tenantId}/${id}`));
      found.set(key, cached);
      const ttl = cached.resolution.ok || cached.resolution.code !== 'unknown_credential' ? this.ttlSeconds : NEGATIVE_TTL_SECONDS;
      writes.push({ key, value: JSON.stringify(cached), ttlSeconds: ttl });
    }
    // Keys of many hash slots: one pipeline per slot on a cluster.
    await setManyWithTtl(this.redis, writes);
    return found;
  }

  private queryCredentials(tenantId: string, keyHashes: string[], clientIds: string[]): Promise<CredentialRow[]> {
    return this.sql<CredentialRow[]>`
      WITH credential AS (
        SELECT 'k:' || key_hash AS credential, id, status, expires_at, revoked_at, agent_id, app_id
        FROM api_keys WHERE tenant_id = ${tenantId} AND key_hash = ANY(${keyHashes})
        UNION ALL
        SELECT 'c:' || client_id, id, status, expires_at, revoked_at, agent_id, NULL
        FROM client_credentials WHERE tenant_id = ${tenantId} AND client_id = ANY(${clientIds})
      )
      SELECT cr.credential, cr.id AS credential_id, cr.status, cr.expires_at, cr.revoked_at, cr.agent_id, cr.app_id,
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

/**
 * What one credential row says, for any acceptance time: usable until its expiry (the end of a
 * rotation grace), or, once revoked, until its expiry or else its revocation; after that,
 * expired or revoked. Suspension of its owner or customer is judged as it stands now.
 */
function judge(row: CredentialRow | undefined): Cached {
  if (!row) return { resolution: { ok: false, code: 'unknown_credential', reason: 'no such API key or client_id for this tenant' } };
  // A revocation pulls a later expiry back to its own time, so a revoked row with an expiry ahead is in a rotation grace.
  const until = row.status === 'revoked' ? (row.expires_at ?? row.revoked_at)?.getTime() ?? 0 : row.expires_at?.getTime();
  const after: Resolution | undefined =
    until === undefined
      ? undefined
      : row.status === 'revoked'
        ? { ok: false, code: 'revoked', reason: `credential ${row.credential_id} is revoked` }
        : { ok: false, code: 'expired', reason: `credential ${row.credential_id} expired` };
  const lapse = until === undefined ? {} : { until, after };
  if (row.owner_status !== 'active') {
    const owner = row.agent_id ? `agent ${row.agent_id}` : `app ${row.app_id}`;
    return { resolution: { ok: false, code: 'suspended', reason: `${owner} is suspended` }, ...lapse };
  }
  if (row.customer_status !== 'active') {
    return { resolution: { ok: false, code: 'suspended', reason: `customer ${row.customer_id} is suspended` }, ...lapse };
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
  return { resolution: { ok: true, attribution }, ...lapse };
}
