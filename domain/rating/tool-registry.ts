/**
 * The tool registry of a tenant's MCP servers (`/v1/admin/mcp-servers/{id}/tools`): per server,
 * every alias of a tool -> the tool's name. Rating prices an event by the name the registry
 * gives it, so a renamed or aliased tool bills as the tool it stands for.
 */
export type ToolRegistry = ReadonlyMap<string, ReadonlyMap<string, string>>;

export interface RegisteredTool {
  mcpServerId: string;
  name: string;
  aliases: readonly string[];
}

export function buildToolRegistry(tools: Iterable<RegisteredTool>): ToolRegistry {
  const registry = new Map<string, Map<string, string>>();
  for (const tool of tools) {
    let server = registry.get(tool.mcpServerId);
    if (!server) registry.set(tool.mcpServerId, (server = new Map()));
    for (const alias of tool.aliases) server.set(alias, tool.name);
  }
  return registry;
}

/** The canonical name of the tool an event of this MCP server calls (the name itself when it is no alias). */
export function registeredToolName(registry: ToolRegistry | undefined, mcpServerId: string | undefined, toolName: string | undefined): string | undefined {
  if (!registry || mcpServerId === undefined || toolName === undefined) return toolName;
  return registry.get(mcpServerId)?.get(toolName) ?? toolName;
}
