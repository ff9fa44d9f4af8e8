import type { StageContext } from '../pipeline/stage.js';

interface Entry<V> {
  value: V;
  loadedAt: number;
}

/**
 * A per-tenant value held in memory: a tenant is loaded on its first use (one fetch for all the
 * tenants of a batch missing from memory), dropped by invalidate(), and reloaded after ttlMs in
 * any case, in case an invalidation was missed. `fetch` answers a value for every tenant asked.
 */
export class TenantCache<V> {
  private readonly entries = new Map<string, Entry<V>>();
  /** Bumped on invalidation: a load that started before it is used once but not kept. */
  private readonly generations = new Map<string, number>();

  constructor(
    private readonly fetch: (tenantIds: string[]) => Promise<Map<string, V>>,
    private readonly ttlMs: number,
    private readonly clock: () => number,
  ) {}

  async load(tenantIds: Iterable<string>): Promise<Map<string, V>> {
    const now = this.clock();
    const found = new Map<string, V>();
    const missing: string[] = [];
    for (const tenantId of new Set(tenantIds)) {
      const entry = this.entries.get(tenantId);
      if (entry && now - entry.loadedAt < this.ttlMs) found.set(tenantId, entry.value);
      else missing.push(tenantId);
    }
    if (missing.length === 0) return found;

    const generations = new Map(missing.map((t) => [t, this.generations.get(t) ?? 0]));
    const fetched = await this.fetch(missing);
    for (const tenantId of missing) {
      const value = fetched.get(tenantId)!;
      found.set(tenantId, value);
      if ((this.generations.get(tenantId) ?? 0) === generations.get(tenantId)) this.entries.set(tenantId, { value, loadedAt: now });
    }
    return found;
  }

  invalidate(tenantId: string): void {
    this.entries.delete(tenantId);
    this.generations.set(tenantId, (this.generations.get(tenantId) ?? 0) + 1);
  }
}

/** Drops a tenant's entry of `cache` on each control message of `type` for that tenant. */
export async function invalidateOnControl<C extends TenantCache<unknown>>(
  cache: C,
  onControl: StageContext['onControl'],
  type: 'cost-models.changed' | 'mcp-tools.changed',
): Promise<C> {
  await onControl((message) => {
    if (message.type === type) cache.invalidate(message.tenantId);
  });
  return cache;
}
