import { z } from 'zod';
import {
  PRODUCT_KINDS,
  mcpServerCreate,
  mcpServerOut,
  mcpServerUpdate,
  mcpToolCreate,
  mcpToolOut,
  mcpToolUpdate,
  productCreate,
  productOut,
  productUpdate,
} from '../../schemas/admin.js';
import { crudEndpoints } from './crud.js';
import { findOwned, type Db, type Row } from './db.js';
import type { AdminDeps, Endpoint } from './endpoint.js';
import { conflict } from '../errors.js';
import { announceHierarchyChange } from './hierarchy.js';
import { announce } from './announce.js';
import { basics } from './present.js';

function presentProduct(row: Row) {
  return { ...basics(row), name: row.name as string, kind: row.kind as (typeof PRODUCT_KINDS)[number] };
}

function presentMcpServer(row: Row) {
  return { ...basics(row), name: row.name as string, product_id: row.product_id as string | null };
}

function presentMcpTool(row: Row) {
  return {
    ...basics(row),
    mcp_server_id: row.mcp_server_id as string,
    name: row.name as string,
    aliases: row.aliases as string[],
    version: row.version as string | null,
    deprecated: row.deprecated as boolean,
  };
}

/**
 * A tool is billed under its name whichever of its names an event uses, so on one server no
 * name or alias may stand for two tools. The server row is locked so two concurrent writes
 * cannot both pass the check.
 */
async function toolColumns(db: Db, tenantId: string, body: Record<string, unknown>, current?: Row, serverId?: string) {
  await findOwned(db, 'mcp_servers', tenantId, serverId!, { forUpdate: true });
  const name = (body.name ?? current?.name) as string;
  const aliases = (body.aliases ?? current?.aliases ?? []) as string[];
  if (aliases.includes(name)) throw conflict('alias_conflict', `alias ${name} is the tool's own name`);
  const others = await db<{ name: string; aliases: string[] }[]>`
    SELECT name, aliases FROM mcp_tools
    WHERE tenant_id = ${tenantId} AND mcp_server_id = ${serverId!} AND id <> ${current?.id ?? ''}`;
  for (const other of others) {
    const taken = new Set([other.name, ...other.aliases]);
    const clash = [name, ...aliases].find((n) => taken.has(n));
    if (clash !== undefined) {
      throw conflict('alias_conflict', `${clash} already names tool ${other.name} on this MCP server`);
    }
  }
  return body;
}

export function productEndpoints(): Endpoint[] {
  const announceCatalog = (deps: AdminDeps, tenantId: string, row: Row, previous?: Row) =>
    announceHierarchyChange(deps, tenantId, previous ? { scope: { productId: row.id } } : {});
  return [
    ...crudEndpoints({
      table: 'products',
      path: '/products',
      tag: 'Products',
      create: productCreate,
      update: productUpdate,
      filters: { kind: z.enum(PRODUCT_KINDS).optional() },
      out: productOut,
      present: presentProduct,
      announce: announceCatalog,
    }),
    ...crudEndpoints({
      table: 'mcp_servers',
      path: '/mcp-servers',
      tag: 'MCP servers',
      create: mcpServerCreate,
      update: mcpServerUpdate,
      filters: { product_id: mcpServerCreate.shape.product_id },
      out: mcpServerOut,
      present: presentMcpServer,
      async columns(db, tenantId, body) {
        if (typeof body.product_id === 'string') await findOwned(db, 'products', tenantId, body.product_id);
        return body;
      },
      announce: (deps, tenantId) => announceHierarchyChange(deps, tenantId, {}),
    }),
    ...crudEndpoints({
      table: 'mcp_tools',
      path: '/mcp-servers/:mcp_server_id/tools',
      parent: { table: 'mcp_servers', column: 'mcp_server_id' },
      tag: 'MCP servers',
      create: mcpToolCreate,
      update: mcpToolUpdate,
      filters: { deprecated: z.enum(['true', 'false']).transform((v) => v === 'true').optional() },
      out: mcpToolOut,
      present: presentMcpTool,
      columns: toolColumns,
      announce: async (deps, tenantId) => {
        await announceHierarchyChange(deps, tenantId, {});
        // The price stage holds each tenant's tool aliases in memory.
        await announce(deps, tenantId, { messages: [{ type: 'mcp-tools.changed', tenantId }] });
      },
    }),
  ];
}
