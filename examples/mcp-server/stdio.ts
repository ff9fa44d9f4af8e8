/**
 * The docs toolkit over stdio, metered with the wrapper. There is no HTTP request to take a
 * credential from, so the process is started with the agent's key:
 *
 *   AGENTMETER_URL=... AGENTMETER_INGEST_TOKEN=amt_... AGENTMETER_API_KEY=sk_live_... \
 *     npx tsx examples/mcp-server/stdio.ts
 *
 * When the client closes stdin the session ends: session.completed is tracked and everything
 * metered is sent before the process exits.
 */
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { AgentMeter } from '@agentmeter/sdk';
import { meterMcpServer } from '@agentmeter/sdk/mcp';
import { createDocsServer } from './tools.js';

const meter = new AgentMeter({
  baseUrl: process.env.AGENTMETER_URL ?? 'http://127.0.0.1:8080',
  ingestToken: process.env.AGENTMETER_INGEST_TOKEN ?? '',
  // stdout is the MCP channel: report problems on stderr only.
  onError: (err) => console.error(`agentmeter: ${err.message}`),
});
const server = createDocsServer();
meterMcpServer(server, { meter, credential: { apiKey: process.env.AGENTMETER_API_KEY ?? '' }, timeoutMs: { transform_schema: 30_000 } });
await server.connect(new StdioServerTransport());

process.stdin.on('end', async () => {
  await server.close();
  await meter.close();
  process.exit(0);
});
