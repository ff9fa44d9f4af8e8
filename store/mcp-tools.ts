import { buildToolRegistry, type ToolRegistry } from '../domain/rating/tool-registry.js';
import type { Sql } from '../pipeline/postgres.js';
import type { StageContext } from '../pipeline/stage.js';
import { invalidateOnControl, TenantCache } from './tenant-cache.js';

/**
 * Every tenant's MCP tool registry (aliases per server), held in memory like the cost models,
 * dropped on an `mcp-tools.changed` control message, reloaded after ttlMs in any case.
 */
export class ToolRegistryCache extends TenantCache<ToolRegistry> {
  constructor(sql: Sql, ttlMs = 5 * 60_000, clock: () => number = Date.now) {
    super(
      async (missing) => {
        const rows = await sql<{ tenant_id: string; mcp_server_id: string; name: string; aliases: string[] }[]>`
          SELECT tenant_id, mcp_server_id, name, aliases FROM mcp_tools
          WHERE tenant_id = ANY(${missing}::text[]) AND cardinality(aliases) > 0`;
        return new Map(
          missing.map((tenantId) => [
            tenantId,
            buildToolRegistry(rows.filter((row) => row.tenant_id === tenantId).map((row) => ({ mcpServerId: row.mcp_server_id, name: row.name, aliases: row.aliases }))),
          ]),
        );
      },
      ttlMs,
      clock,
    );
  }
}

/** A ToolRegistryCache that drops a tenant's registry on its `mcp-tools.changed` control message (the price stage). */
export function watchedToolRegistry(sql: Sql, onControl: StageContext['onControl']): Promise<ToolRegistryCache> {
  return invalidateOnControl(new ToolRegistryCache(sql), onControl, 'mcp-tools.changed');
}
