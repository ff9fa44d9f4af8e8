/**
 * The docs toolkit over Streamable HTTP (one MCP session per client, one server per session),
 * metered with the wrapper, or plain (`--plain`) to put it behind the metering proxy.
 *
 *   AGENTMETER_URL=http://127.0.0.1:8080 AGENTMETER_INGEST_TOKEN=amt_... \
 *     npx tsx examples/mcp-server/http.ts --port 3000            # metered by the wrapper
 *   npx tsx examples/mcp-server/http.ts --port 3001 --plain       # not metered: run the proxy in front
 *
 * Clients send their agentmeter API key in X-Api-Key (or Authorization: Bearer).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { AgentMeter } from '@agentmeter/sdk';
import { meterMcpServer, type MeterMcpOptions } from '@agentmeter/sdk/mcp';
import { createDocsServer, type DocsServerOptions } from './tools.js';

export interface ExampleHttpOptions extends DocsServerOptions {
  port: number;
  /** Meter with the wrapper (omit for a plain server). */
  metering?: Omit<MeterMcpOptions, 'meter'> & { meter: AgentMeter };
  /** Answer POSTs with one JSON body instead of an SSE stream. */
  jsonResponse?: boolean;
}

export async function startExampleHttpServer(options: ExampleHttpOptions): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const server = createServer(async (req, res) => {
    if (new URL(req.url ?? '/', 'http://x').pathname !== '/mcp') {
      res.writeHead(404).end();
      return;
    }
    const sessionId = req.headers['mcp-session-id'];
    let transport = typeof sessionId === 'string' ? transports.get(sessionId) : undefined;
    if (!transport) {
      if (typeof sessionId === 'string') {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32001, message: 'session not found' } }));
        return;
      }
      const created = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        enableJsonResponse: options.jsonResponse ?? false,
        onsessioninitialized: (id) => void transports.set(id, created),
        onsessionclosed: (id) => void transports.delete(id),
      });
      const mcp = createDocsServer(options);
      if (options.metering) meterMcpServer(mcp, options.metering);
      await mcp.connect(created);
      transport = created;
    }
    await transport.handleRequest(req, res);
    if (!transport.sessionId) await transport.close();
  });
  await new Promise<void>((resolve) => server.listen(options.port, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  return {
    url,
    server,
    async close() {
      for (const transport of transports.values()) await transport.close();
      await new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      });
    },
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({ options: { port: { type: 'string', default: '3000' }, plain: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } } });
  const meter = values.plain
    ? undefined
    : new AgentMeter({ baseUrl: process.env.AGENTMETER_URL ?? 'http://127.0.0.1:8080', ingestToken: process.env.AGENTMETER_INGEST_TOKEN ?? '', onError: (err) => console.error(err) });
  const running = await startExampleHttpServer({
    port: Number(values.port),
    jsonResponse: values.json,
    ...(meter ? { metering: { meter, timeoutMs: { transform_schema: 30_000 } } } : {}),
  });
  console.log(`docs-toolkit MCP server ${meter ? 'metered by the wrapper' : 'not metered'} at ${running.url}`);
}
