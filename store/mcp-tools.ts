import { buildToolRegistry, type ToolRegistry } from '../domain/rating/tool-registry.js';
import type { Sql } from '../pipeline/postgres.js';
import type { StageContext } from '../pipeline/stage.js';

interface Entry {
  registry: ToolRegistry;
  loadedAt: number;
}

/**
 * Every tenant's MCP tool registry (aliases per server), held in memory like the cost models: a
 * tenant is loaded on its first event (one query for all the tenants of a batch missing from
 * memory), dropped on an `mcp-tools.changed` control message, and reloaded after ttlMs in any
 * case, in case a message was missed.
 */
export class ToolRegistryCache {
  private readonly entries = new Map<string, Entry>();
  /** Bumped on invalidation: a load that started before it is used once but not kept. */
  private readonly generations = new Map<string, number>();

  constructor(
    private readonly sql: Sql,
    private readonly ttlMs = 5 * 60_000,
    private readonly clock: () => number = Date.now,
  ) {}

  async load(tenantIds: Iterable<string>): Promise<Map<string, ToolRegistry>> {
    const now = this.clock();
    const found = new Map<string, ToolRegistry>();
    const missing: string[] = [];
    for (const tenantId of new Set(tenantIds)) {
      const entry = this.entries.get(tenantId);
      if (entry && now - entry.loadedAt < this.ttlMs) found.set(tenantId, entry.registry);
      else missing.push(tenantId);
    }
    if (missing.length === 0) return found;

    const generations = new Map(missing.map((t) => [t, this.generations.get(t) ?? 0]));
    const rows = await this.sql<{ tenant_id: string; mcp_server_id: string; name: string; aliases: string[] }[]>`
      SELECT tenant_id, mcp_server_id, name, aliases FROM mcp_tools
      WHERE tenant_id = ANY(${missing}::text[]) AND cardinality(aliases) > 0`;
    for (const tenantId of missing) {
      const registry = buildToolRegistry(
        rows.filter((row) => row.tenant_id === tenantId).map((row) => ({ mcpServerId: row.mcp_server_id, name: row.name, aliases: row.aliases })),
      );
      found.set(tenantId, registry);
      if ((this.generations.get(tenantId) ?? 0) === generations.get(tenantId)) this.entries.set(tenantId, { registry, loadedAt: now });
    }
    return found;
  }

  invalidate(tenantId: string): void {
    this.entries.delete(tenantId);
    this.generations.set(tenantId, (this.generations.get(tenantId) ?? 0) + 1);
  }
}

/** A ToolRegistryCache that drops a tenant's registry on its `mcp-tools.changed` control message (the price stage). */
export async function watchedToolRegistry(sql: Sql, onControl: StageContext['onControl']): Promise<ToolRegistryCache> {
  const registry = new ToolRegistryCache(sql);
  await onControl((message) => {
    if (message.type === 'mcp-tools.changed') registry.invalidate(message.tenantId);
  });
  return registry;
}
