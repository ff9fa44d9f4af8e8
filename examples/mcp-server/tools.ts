/**
 * A small MCP server with three tools, as a vendor would write it: nothing here knows about
 * metering. Each tool reports the tokens it used in `_meta["agentmeter/usage"]`, which the
 * wrapper (and the proxy) bill; the wrapper removes it before the client sees the result.
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { z } from 'zod';

const DOCS = [
  'Rate plans price every tool call, token and second of a session.',
  'Spend caps pause an agent the moment it crosses its budget.',
  'Sessions end with session.completed, or expire after an hour of silence.',
  'Invoices are drafts until the period closes; each line is rounded once.',
];
const TABLES: Record<string, number> = { customers: 3, invoices: 12, sessions: 40 };

export interface DocsServerOptions {
  /** Called as each tool starts (the tests count the calls a refusal must not make). */
  onToolRun?: (tool: string) => void;
}

export function createDocsServer(options: DocsServerOptions = {}): McpServer {
  const server = new McpServer({ name: 'docs-toolkit', version: '1.0.0' });
  const ran = (tool: string) => options.onToolRun?.(tool);

  server.registerTool(
    'search_docs',
    { description: 'Full-text search over the documentation', inputSchema: { query: z.string().min(1) } },
    async ({ query }) => {
      ran('search_docs');
      const words = query.toLowerCase().split(/\s+/);
      const hits = DOCS.filter((doc) => words.some((w) => doc.toLowerCase().includes(w)));
      const text = hits.length ? hits.join('\n') : 'no match';
      return {
        content: [{ type: 'text', text }],
        _meta: { 'agentmeter/usage': { input_tokens: query.length * 4, output_tokens: text.length } },
      };
    },
  );

  server.registerTool(
    'transform_schema',
    {
      description: 'Rewrites a JSON schema for another dialect (an LLM does the work)',
      inputSchema: { schema: z.string(), dialect: z.enum(['draft-07', '2020-12']), work_ms: z.number().int().min(0).max(60_000).optional() },
    },
    async ({ schema, dialect, work_ms }, extra) => {
      ran('transform_schema');
      if (work_ms) await delay(work_ms, extra.signal);
      return {
        content: [{ type: 'text', text: JSON.stringify({ $schema: dialect, source: schema.slice(0, 200) }) }],
        _meta: { 'agentmeter/usage': { input_tokens: 2400, output_tokens: 150, model: 'claude-sonnet' } },
      };
    },
  );

  server.registerTool(
    'read_database',
    { description: 'Counts the rows of a table', inputSchema: { table: z.string() } },
    async ({ table }) => {
      ran('read_database');
      if (table === 'crash') throw new Error('the database connection was lost');
      const rows = TABLES[table];
      if (rows === undefined) return { content: [{ type: 'text', text: `no table ${table}` }], isError: true };
      return { content: [{ type: 'text', text: `${table}: ${rows} rows` }] };
    },
  );
  return server;
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
