/**
 * The wrapper's hooks into the MCP SDK, in memory (real MCP client and server, an in-memory
 * transport, a scripted agentmeter API): metering set up before or after the tools, on
 * McpServer or the low-level Server, versions, reported usage, refusals, fail-open, the end
 * of the session at meter.close(). Over Streamable HTTP and stdio against the real pipeline:
 * test/e2e/sdk-mcp.test.ts.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { CallToolRequestSchema, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { AgentMeter } from './client.js';
import { credentialFromRequest, meterMcpServer, reportUsage, type MeterMcpOptions } from './mcp.js';
import { acceptAll, json, scriptedServer, type Seen } from './testing/scripted-server.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A scripted agentmeter: events accepted; authorize refuses the tools listed in `refuse`, or answers 503 for all. */
async function agentmeter(options: { refuse?: string[]; authorizeDown?: boolean } = {}) {
  const api = await scriptedServer((seen, req, res) => {
    if (seen.path === '/v1/authorize') {
      if (options.authorizeDown) return json(res, 503, { error: { code: 'unavailable', message: 'down' } });
      const refused = options.refuse?.includes(String(seen.body.tool));
      return json(res, 200, refused ? { allowed: false, code: 'paused', reason: 'agent agt_1 is paused' } : { allowed: true });
    }
    acceptAll(seen, req, res);
  });
  const meter = new AgentMeter({ baseUrl: api.url, ingestToken: 'amt_test', flushOnExit: false, flushIntervalMs: 50 });
  cleanups.push(() => api.close(), () => meter.close());
  const events = () => api.seen.filter((s) => s.path === '/v1/events').flatMap((s: Seen) => s.body.events ?? []);
  return { api, meter, events };
}

async function connected(server: McpServer | Server): Promise<Client> {
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await server.connect(serverSide);
  const client = new Client({ name: 'test-agent', version: '1.0.0' });
  await client.connect(clientSide);
  cleanups.push(() => client.close());
  return client;
}

function docsServer(meter: AgentMeter, options: Partial<MeterMcpOptions> = {}, meterFirst = false): McpServer {
  const server = new McpServer({ name: 'docs', version: '1.0.0' });
  const meterIt = () => meterMcpServer(server, { meter, credential: { apiKey: 'sk_live_stdio_key' }, ...options });
  if (meterFirst) meterIt();
  server.registerTool('search', { inputSchema: { q: z.string() } }, async ({ q }, extra) => {
    reportUsage(extra, { input_tokens: q.length, output_tokens: 3 });
    reportUsage(extra, { output_tokens: 4, model: 'claude-sonnet' });
    return { content: [{ type: 'text', text: `found ${q}` }] };
  });
  server.registerTool('explode', {}, async () => {
    throw new Error('boom');
  });
  if (!meterFirst) meterIt();
  return server;
}

describe('meterMcpServer', () => {
  it('meters calls whether it is set up before or after the tools, with versions and reported usage', async () => {
    for (const meterFirst of [true, false]) {
      const { meter, events } = await agentmeter();
      const client = await connected(docsServer(meter, { toolVersions: { search: '2' }, mcpServerId: 'mcp_docs' }, meterFirst));
      expect(await client.callTool({ name: 'search', arguments: { q: 'caps' } })).toMatchObject({ content: [{ text: 'found caps' }] });
      expect((await client.callTool({ name: 'explode', arguments: {} })).isError).toBe(true);
      await meter.flush();
      const [started, search, explode] = events();
      expect(started).toMatchObject({ event_type: 'session.started', api_key: 'sk_live_stdio_key', session_id: expect.stringMatching(/^mcp_/) });
      expect(search).toMatchObject({
        event_type: 'mcp.tool_invoked',
        tool_name: 'search@2',
        mcp_server_id: 'mcp_docs',
        session_id: started.session_id,
        execution_status: 'SUCCESS',
        input_tokens: 4,
        output_tokens: 7,
        model: 'claude-sonnet',
      });
      expect(explode).toMatchObject({ tool_name: 'explode', execution_status: 'FAILED', error_type: 'tool_error', error_message: expect.stringMatching(/boom/) });
      expect(Date.parse(search.recorded_timestamp)).toBeLessThanOrEqual(Date.parse(explode.recorded_timestamp));
    }
  });

  it('wraps a low-level Server whose tools/call handler is set after metering', async () => {
    const { meter, events } = await agentmeter();
    const server = new Server({ name: 'low', version: '1.0.0' }, { capabilities: { tools: {} } });
    meterMcpServer(server, { meter, credential: { clientId: 'cli_low' }, eventType: 'agent.tool_invoked' });
    server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: [{ name: 'echo', inputSchema: { type: 'object' } }] }));
    server.setRequestHandler(CallToolRequestSchema, async (request) => ({
      content: [{ type: 'text', text: String(request.params.name) }],
      _meta: { 'agentmeter/usage': { input_tokens: 11 } },
    }));
    const client = await connected(server);
    const result = await client.callTool({ name: 'echo', arguments: {} });
    expect(result._meta).toEqual({});
    await meter.flush();
    expect(events().find((e) => e.event_type === 'agent.tool_invoked')).toMatchObject({ client_id: 'cli_low', tool_name: 'echo', input_tokens: 11 });
  });

  it('refuses what authorize refuses, without running it; fails open when authorize is down', async () => {
    const { meter, events, api } = await agentmeter({ refuse: ['explode'] });
    const refusedRuns: string[] = [];
    const client = await connected(docsServer(meter, { onRefused: (tool, decision) => refusedRuns.push(`${tool}:${decision.code}`) }));
    const refused = await client.callTool({ name: 'explode', arguments: {} });
    expect(refused).toMatchObject({ isError: true, _meta: { 'agentmeter/refusal': { code: 'paused', reason: 'agent agt_1 is paused' } } });
    expect(refusedRuns).toEqual(['explode:paused']);
    await meter.flush();
    expect(events().filter((e) => e.event_type === 'mcp.tool_invoked')).toEqual([]);
    expect(api.seen.find((s) => s.path === '/v1/authorize')?.body).toMatchObject({ api_key: 'sk_live_stdio_key', tool: 'explode', session_id: expect.stringMatching(/^mcp_/) });

    const down = await agentmeter({ authorizeDown: true });
    const open = await connected(docsServer(down.meter));
    expect((await open.callTool({ name: 'search', arguments: { q: 'x' } })).isError).toBeFalsy();
  });

  it('ends the session at meter.close(), once', async () => {
    const { meter, events } = await agentmeter();
    const server = docsServer(meter);
    const client = await connected(server);
    await client.callTool({ name: 'search', arguments: { q: 'x' } });
    await meter.close();
    await server.close();
    expect(events().map((e) => e.event_type)).toEqual(['session.started', 'mcp.tool_invoked', 'session.completed']);
  });
});

describe('credentialFromRequest', () => {
  it('takes X-Api-Key, else the OAuth client of a validated token, else a bearer token', () => {
    const headers = (h: Record<string, string>) => ({ requestInfo: { headers: h } });
    expect(credentialFromRequest(headers({ 'x-api-key': 'sk_a', authorization: 'Bearer sk_b' }))).toEqual({ apiKey: 'sk_a' });
    expect(credentialFromRequest({ ...headers({ authorization: 'Bearer oauth_token' }), authInfo: { token: 'oauth_token', clientId: 'cli_oauth', scopes: [] } })).toEqual({ clientId: 'cli_oauth' });
    expect(credentialFromRequest(headers({ authorization: 'Bearer sk_b' }))).toEqual({ apiKey: 'sk_b' });
    expect(credentialFromRequest(headers({}))).toBeUndefined();
  });
});
