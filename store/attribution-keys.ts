import { deleteMany, type Redis } from '../pipeline/redis.js';
import type { Credential } from '../domain/events.js';

/** Redis key of the cached attribution of one credential of one tenant (TTL: KEY_CACHE_TTL_SECONDS). */
export function attributionCacheKey(prefix: string, tenantId: string, credential: Credential): string {
  return credential.kind === 'api_key'
    ? `${prefix}keycache:${tenantId}:k:${credential.keyHash}`
    : `${prefix}keycache:${tenantId}:c:${credential.clientId}`;
}

/** Drops cached attributions so the next event or authorize call reads PostgreSQL again. */
export async function invalidateAttribution(
  redis: Redis,
  prefix: string,
  tenantId: string,
  which: { keyHashes?: string[]; clientIds?: string[] },
): Promise<void> {
  const keys = [
    ...(which.keyHashes ?? []).map((keyHash) => attributionCacheKey(prefix, tenantId, { kind: 'api_key', keyHash })),
    ...(which.clientIds ?? []).map((clientId) => attributionCacheKey(prefix, tenantId, { kind: 'client_id', clientId })),
  ];
  await deleteMany(redis, keys);
}
