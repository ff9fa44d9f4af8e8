/**
 * Metering where the calls happen, against the real pipeline (every stage a process, started
 * once for the file): the MCP wrapper over Streamable HTTP and stdio, the metering proxy in front
 * of an unmetered server (SSE and JSON answers, batches, a broken upstream), a paused agent
 * refused by both, CloudEvents sent with the cloudevents SDK, and last the SDK tracking 5,000
 * events through a SIGKILL of the API process. Each case checks the ledger rows and session
 * records the pipeline made of it. The 100,000-event version: `npm run bench:sdk-soak`.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CloudEvent, emitterFor, httpTransport, Mode } from 'cloudevents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentMeter } from '@agentmeter/sdk';
import { REFUSAL_META_KEY } from '@agentmeter/sdk/mcp';
import { startExampleHttpServer } from '../../examples/mcp-server/http.js';
import { runSdkSoak, seedSoakTenant } from '../../loadtest/bench/sdk-soak.js';
import { startMcpProxy, type RunningProxy } from '../../mcp-proxy/proxy.js';
import { seedTenant, type SeededAgent, type SeededTenant } from '../../ops/seed.js';
import { isolated, type Isolated } from '../support/isolated.js';
import { startPipeline, waitFor, type RunningPipeline } from '../support/pipeline.js';

const PLAN = {
  tool_invocations: { search_docs: '0.002', read_database: '0.004', transform_schema: '0.05', '*': '0.001' },
  token_multipliers: { input_tokens: '0.000001', output_tokens: '0.000002' },
  duration_buckets: [{ max_seconds: null, rate: '0' }],
};

let world: Isolated;
let tenant: SeededTenant;
let pipeline: RunningPipeline;
let agents: SeededAgent[];
const meters: AgentMeter[] = [];
const closers: (() => Promise<unknown>)[] = [];
const runs: Record<'metered' | 'plain', string[]> = { metered: [], plain: [] };
let metered: { url: string };
let proxy: RunningProxy;
let proxyJson: RunningProxy;

function newMeter(): AgentMeter {
  const meter = new AgentMeter({ baseUrl: pipeline.baseUrl, ingestToken: tenant.ingestToken, flushIntervalMs: 100, flushOnExit: false, authorize: { cacheTtlMs: 300 } });
  meters.push(meter);
  return meter;
}

beforeAll(async () => {
  world = await isolated('mcpmetering', { clickhouse: true });
  // agents[0] has a spend cap of one nano-unit per day: its first priced call pauses it.
  tenant = await seedTenant(world.sql, {
    name: 'mcp vendor',
    pricing: PLAN,
    customers: 1,
    teamsPerCustomer: 1,
    agentsPerTeam: 6,
    caps: [{ scope: 'agent', period: 'day', limitNano: 1n }],
  });
  agents = tenant.customers[0].teams[0].agents;
  pipeline = await startPipeline(world);

  const wrapped = await startExampleHttpServer({ port: 0, metering: { meter: newMeter(), timeoutMs: { transform_schema: 400 } }, onToolRun: (t) => runs.metered.push(t) });
  const plain = await startExampleHttpServer({ port: 0, onToolRun: (t) => runs.plain.push(t) });
  const plainJson = await startExampleHttpServer({ port: 0, jsonResponse: true, onToolRun: (t) => runs.plain.push(t) });
  proxy = await startMcpProxy({ upstream: plain.url, port: 0, meter: newMeter() });
  proxyJson = await startMcpProxy({ upstream: plainJson.url, port: 0, meter: newMeter() });
  metered = wrapped;
  closers.push(() => wrapped.close(), () => plain.close(), () => plainJson.close(), () => proxy.close(), () => proxyJson.close());
}, 300_000);

afterAll(async () => {
  for (const close of closers) await close().catch(() => {});
  for (const meter of meters) await meter.close();
  await pipeline?.stop();
  await world?.cleanup();
}, 60_000);

async function connect(url: string, apiKey: string): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { 'x-api-key': apiKey } } });
  const client = new Client({ name: 'e2e-agent', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

interface LedgerRow {
  event_id: string;
  event_type: string;
  tool_name: string | null;
  execution_status: string;
  input_tokens: string;
  output_tokens: string;
  duration_ms: string;
  model: string | null;
  session_id: string | null;
  cost_nano: string;
}

async function ledgerOf(where: { sessionId?: string; agentId?: string }, count: number): Promise<LedgerRow[]> {
  const query = () =>
    where.sessionId
      ? world.sql<LedgerRow[]>`SELECT * FROM usage_ledger WHERE tenant_id = ${tenant.tenantId} AND session_id = ${where.sessionId} ORDER BY recorded_at, event_id`
      : world.sql<LedgerRow[]>`SELECT * FROM usage_ledger WHERE tenant_id = ${tenant.tenantId} AND agent_id = ${where.agentId!} ORDER BY recorded_at, event_id`;
  await waitFor(async () => (await query()).length >= count, 30_000, `${count} ledger rows for ${JSON.stringify(where)}`);
  return query();
}

async function sessionRecord(sessionId: string, status: string) {
  const query = () => world.sql`SELECT * FROM mcp_sessions WHERE tenant_id = ${tenant.tenantId} AND session_id = ${sessionId}`;
  await waitFor(async () => (await query())[0]?.status === status, 30_000, `session ${sessionId} ${status}`);
  return (await query())[0];
}

const calls = (rows: LedgerRow[]) => rows.filter((r) => !r.event_type.startsWith('session.'));
const summary = (rows: LedgerRow[]) => calls(rows).map((r) => [r.tool_name, r.execution_status]);

/** Pauses agents[0] through the pipeline (its first priced call crosses its cap) and waits until authorize says so. */
async function pausedAgent(): Promise<SeededAgent> {
  const agent = agents[0];
  const authorize = async () =>
    (await (
      await fetch(`${pipeline.baseUrl}/v1/authorize`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tenant.ingestToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ api_key: agent.apiKey }),
      })
    ).json()) as { allowed: boolean; code?: string };
  if ((await authorize()).allowed) {
    const meter = newMeter();
    await meter.track({ event_type: 'mcp.tool_invoked', api_key: agent.apiKey, tool_name: 'search_docs' });
    await meter.flush();
    await waitFor(async () => (await authorize()).code === 'paused', 30_000, 'agents[0] paused');
    await new Promise((r) => setTimeout(r, 400)); // past the meters' authorize cache
  }
  return agent;
}

describe('the MCP wrapper', () => {
  it('meters every tools/call over Streamable HTTP: status, duration, tokens, session id, and the session from start to DELETE', async () => {
    const agent = agents[1];
    const { client, transport } = await connect(metered.url, agent.apiKey);
    const sessionId = transport.sessionId!;
    const search = await client.callTool({ name: 'search_docs', arguments: { query: 'spend caps' } });
    expect(search.isError).toBeFalsy();
    expect(search._meta?.['agentmeter/usage']).toBeUndefined(); // billed, not shown
    expect((await client.callTool({ name: 'read_database', arguments: { table: 'customers' } })).isError).toBeFalsy();
    expect((await client.callTool({ name: 'read_database', arguments: { table: 'nope' } })).isError).toBe(true);
    expect((await client.callTool({ name: 'read_database', arguments: { table: 'crash' } })).isError).toBe(true);
    const slow = await client.callTool({ name: 'transform_schema', arguments: { schema: '{}', dialect: '2020-12', work_ms: 3_000 } });
    expect(slow).toMatchObject({ isError: true, content: [{ type: 'text', text: expect.stringMatching(/timed out after 400 ms/) }] });
    await transport.terminateSession();
    await client.close();

    const rows = await ledgerOf({ sessionId }, 7);
    expect(rows.map((r) => r.event_type)).toEqual(['session.started', ...Array(5).fill('mcp.tool_invoked'), 'session.completed']);
    expect(summary(rows)).toEqual([
      ['search_docs', 'SUCCESS'],
      ['read_database', 'SUCCESS'],
      ['read_database', 'FAILED'],
      ['read_database', 'FAILED'],
      ['transform_schema', 'TIMEOUT'],
    ]);
    expect(rows[1]).toMatchObject({ input_tokens: String('spend caps'.length * 4), cost_nano: String(2_000_000 + 40 * 1_000 + Number(rows[1].output_tokens) * 2_000) });
    expect(Number(rows[5].duration_ms)).toBeGreaterThanOrEqual(400);
    expect(Number(rows[5].duration_ms)).toBeLessThan(3_000);
    const session = await sessionRecord(sessionId, 'COMPLETED');
    expect(session).toMatchObject({ agent_id: agent.id, tool_calls: '5', errors: '3' });
  });

  it('refuses a paused agent with an MCP error result, without running the tool or billing it', async () => {
    const agent = await pausedAgent();
    const { client, transport } = await connect(metered.url, agent.apiKey);
    const sessionId = transport.sessionId!;
    const before = runs.metered.length;
    const result = await client.callTool({ name: 'search_docs', arguments: { query: 'invoices' } });
    expect(result).toMatchObject({ isError: true, content: [{ type: 'text', text: expect.stringMatching(/agentmeter refused search_docs: paused/) }] });
    expect((result._meta as Record<string, { code: string }>)[REFUSAL_META_KEY].code).toBe('paused');
    expect(runs.metered.length).toBe(before);
    await transport.terminateSession();
    await client.close();
    const rows = await ledgerOf({ sessionId }, 2);
    await new Promise((r) => setTimeout(r, 500));
    expect((await ledgerOf({ sessionId }, 2)).map((r) => r.event_type)).toEqual(['session.started', 'session.completed']);
    expect(rows.every((r) => r.cost_nano === '0')).toBe(true);
  });

  it('meters a stdio server, its session ending when the client closes stdin', async () => {
    const agent = agents[2];
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: ['--import', 'tsx', fileURLToPath(new URL('../../examples/mcp-server/stdio.ts', import.meta.url))],
      env: { ...(process.env as Record<string, string>), AGENTMETER_URL: pipeline.baseUrl, AGENTMETER_INGEST_TOKEN: tenant.ingestToken, AGENTMETER_API_KEY: agent.apiKey },
      stderr: 'inherit',
    });
    const client = new Client({ name: 'e2e-stdio-agent', version: '1.0.0' });
    await client.connect(transport);
    await client.callTool({ name: 'search_docs', arguments: { query: 'rate plans' } });
    await client.callTool({ name: 'transform_schema', arguments: { schema: '{"type":"object"}', dialect: 'draft-07' } });
    await client.callTool({ name: 'read_database', arguments: { table: 'ghosts' } });
    await client.close();

    const rows = await ledgerOf({ agentId: agent.id }, 5);
    expect(rows.map((r) => r.event_type)).toEqual(['session.started', 'mcp.tool_invoked', 'mcp.tool_invoked', 'mcp.tool_invoked', 'session.completed']);
    expect(summary(rows)).toEqual([
      ['search_docs', 'SUCCESS'],
      ['transform_schema', 'SUCCESS'],
      ['read_database', 'FAILED'],
    ]);
    expect(rows[2]).toMatchObject({ input_tokens: '2400', output_tokens: '150', model: 'claude-sonnet' });
    const sessionId = rows[0].session_id!;
    expect(sessionId).toMatch(/^mcp_/);
    expect(new Set(rows.map((r) => r.session_id))).toEqual(new Set([sessionId]));
    expect(await sessionRecord(sessionId, 'COMPLETED')).toMatchObject({ tool_calls: '3', errors: '1', input_tokens: String(2400 + 'rate plans'.length * 4) });
  });
});

describe('the metering proxy', () => {
  async function post(url: string, body: unknown, headers: Record<string, string>): Promise<Response> {
    return fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
  }

  it('meters tools/call through to an unmetered server (SSE answers, a JSON-RPC batch), passing everything else untouched', async () => {
    const agent = agents[3];
    const { client, transport } = await connect(`${proxy.url}/mcp`, agent.apiKey);
    const sessionId = transport.sessionId!;
    expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(['read_database', 'search_docs', 'transform_schema']);
    const transform = await client.callTool({ name: 'transform_schema', arguments: { schema: '{}', dialect: 'draft-07' } });
    // Untouched: the upstream's usage report reaches the client as the server wrote it.
    expect(transform._meta?.['agentmeter/usage']).toEqual({ input_tokens: 2400, output_tokens: 150, model: 'claude-sonnet' });
    expect((await client.callTool({ name: 'read_database', arguments: { table: 'nope' } })).isError).toBe(true);

    const headers = { 'x-api-key': agent.apiKey, 'mcp-session-id': sessionId, 'mcp-protocol-version': transport.protocolVersion ?? '2025-06-18' };
    const batch = await post(`${proxy.url}/mcp`, [
      { jsonrpc: '2.0', id: 'b1', method: 'tools/call', params: { name: 'search_docs', arguments: { query: 'sessions' } } },
      { jsonrpc: '2.0', id: 'b2', method: 'tools/call', params: { name: 'read_database', arguments: { table: 'invoices' } } },
      { jsonrpc: '2.0', id: 'b3', method: 'tools/list' },
    ], headers);
    expect(batch.headers.get('content-type')).toMatch(/text\/event-stream/);
    const answered = (await batch.text()).split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)).id);
    expect(answered.sort()).toEqual(['b1', 'b2', 'b3']);
    await transport.terminateSession();
    await client.close();

    const rows = await ledgerOf({ sessionId }, 6);
    expect(rows[0].event_type).toBe('session.started');
    expect(rows.at(-1)!.event_type).toBe('session.completed');
    expect(summary(rows).sort()).toEqual([
      ['read_database', 'FAILED'],
      ['read_database', 'SUCCESS'],
      ['search_docs', 'SUCCESS'],
      ['transform_schema', 'SUCCESS'],
    ]);
    expect(calls(rows).find((r) => r.tool_name === 'transform_schema')).toMatchObject({ input_tokens: '2400', output_tokens: '150', model: 'claude-sonnet' });
    expect(await sessionRecord(sessionId, 'COMPLETED')).toMatchObject({ agent_id: agent.id, tool_calls: '4', errors: '1' });
  });

  it('refuses a paused agent before the upstream (JSON answers), also inside a batch, and bills nothing for it', async () => {
    const agent = await pausedAgent();
    const { client, transport } = await connect(`${proxyJson.url}/mcp`, agent.apiKey);
    const sessionId = transport.sessionId!;
    const before = runs.plain.length;
    const refused = await client.callTool({ name: 'read_database', arguments: { table: 'customers' } });
    expect(refused).toMatchObject({ isError: true, _meta: { [REFUSAL_META_KEY]: { code: 'paused' } } });
    const headers = { 'x-api-key': agent.apiKey, 'mcp-session-id': sessionId, 'mcp-protocol-version': transport.protocolVersion ?? '2025-06-18' };
    const mixed = await post(`${proxyJson.url}/mcp`, [
      { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'search_docs', arguments: { query: 'x' } } },
      { jsonrpc: '2.0', id: 8, method: 'tools/list' },
    ], headers);
    const answers = (await mixed.json()) as { id: number; result: { isError?: boolean; tools?: unknown[] } }[];
    expect(answers.map((a) => a.id).sort()).toEqual([7, 8]);
    expect(answers.find((a) => a.id === 7)!.result.isError).toBe(true);
    expect(answers.find((a) => a.id === 8)!.result.tools).toHaveLength(3);
    expect(runs.plain.length).toBe(before);
    expect(proxyJson.stats().refused).toBe(2);
    await transport.terminateSession();
    await client.close();
    await new Promise((r) => setTimeout(r, 500));
    const rows = await ledgerOf({ sessionId }, 2);
    expect(rows.map((r) => r.event_type)).toEqual(['session.started', 'session.completed']);
  });

  it('passes a broken upstream through as its failure, metered FAILED, refuses a body that is not JSON-RPC, and does not meter a call to an upstream it cannot reach', async () => {
    const agent = agents[4];
    const received: string[] = [];
    const broken: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        received.push(body);
        if (body.includes('"garbage"')) {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end('<html>502 from a load balancer</html>');
        } else if (body.includes('"midstream"')) {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('event: message\ndata: {"jsonrpc":"2.0","id":"midstream","res');
          setTimeout(() => res.socket?.destroy(), 50);
        } else {
          res.writeHead(400, { 'content-type': 'application/json' });
          res.end('{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}');
        }
      });
    });
    await new Promise<void>((r) => broken.listen(0, '127.0.0.1', r));
    const brokenProxy = await startMcpProxy({ upstream: `http://127.0.0.1:${(broken.address() as AddressInfo).port}/mcp`, port: 0, meter: newMeter(), maxBodyBytes: 10_000 });
    closers.push(() => brokenProxy.close(), () => new Promise((r) => broken.close(r)));
    const headers = { 'x-api-key': agent.apiKey };
    const call = (id: string) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'search_docs', arguments: { query: id } } });

    const garbage = await post(`${brokenProxy.url}/mcp`, call('garbage'), headers);
    expect(garbage.status).toBe(200);
    expect(await garbage.text()).toBe('<html>502 from a load balancer</html>');

    const midstream = await post(`${brokenProxy.url}/mcp`, call('midstream'), headers);
    expect(midstream.status).toBe(200);
    await expect(midstream.text()).rejects.toThrow();

    // Not JSON-RPC: refused by the proxy (400, a JSON-RPC parse error), never passed on unmetered.
    const malformed = await post(`${brokenProxy.url}/mcp`, '{"jsonrpc": "2.0", "method": "tools/call", ', headers);
    expect(malformed.status).toBe(400);
    expect(await malformed.json()).toMatchObject({ id: null, error: { code: -32700 } });
    expect(received).not.toContain('{"jsonrpc": "2.0", "method": "tools/call", ');

    // Too large to read: refused, never passed on unmetered.
    const sentBefore = received.length;
    const huge = await post(`${brokenProxy.url}/mcp`, { ...call('huge'), params: { name: 'search_docs', arguments: { query: 'x'.repeat(20_000) } } }, headers);
    expect(huge.status).toBe(413);
    expect(received.length).toBe(sentBefore);

    // Nothing listens there any more: the call never reached an upstream, so it is not metered.
    const gone = await startMcpProxy({ upstream: 'http://127.0.0.1:1/mcp', port: 0, meter: newMeter() });
    closers.push(() => gone.close());
    const unreachable = await post(`${gone.url}/mcp`, call('unreachable'), headers);
    expect(unreachable.status).toBe(502);
    expect(gone.stats()).toMatchObject({ notRun: 1, toolCalls: { FAILED: 0 } });

    // Still serving.
    expect((await post(`${brokenProxy.url}/mcp`, call('garbage'), headers)).status).toBe(200);
    expect(brokenProxy.stats()).toMatchObject({ malformedBodies: 1, toolCalls: { FAILED: 3, SUCCESS: 0 } });
    const rows = await ledgerOf({ agentId: agent.id }, 3);
    expect(rows.map((r) => [r.tool_name, r.execution_status])).toEqual(Array(3).fill(['search_docs', 'FAILED']));
  });
});

describe('CloudEvents at POST /v1/events', () => {
  it('takes events from the cloudevents SDK (structured and batch) into the ledger, and answers 400 with JSON paths for an invalid one', async () => {
    const agent = agents[5];
    const url = `${pipeline.baseUrl}/v1/events`;
    const auth = { authorization: `Bearer ${tenant.ingestToken}` };
    const emit = emitterFor(httpTransport(url), { mode: Mode.STRUCTURED });
    const time = new Date().toISOString();
    const event = (id: string, data: Record<string, unknown>) => new CloudEvent({ id, source: '//mcp.example.com', type: 'mcp.tool_invoked', time, apikey: agent.apiKey, data });
    const reply = (await emit(event('ce_e2e_1', { tool_name: 'search_docs', input_tokens: 10, session_id: 'ce_sess' }), { headers: auth })) as { body: string };
    expect(JSON.parse(reply.body)).toEqual({ accepted: 1, duplicates: [], rejected: [] });

    const batch = await fetch(url, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/cloudevents-batch+json' },
      body: JSON.stringify([event('ce_e2e_2', { tool_name: 'read_database', session_id: 'ce_sess' }), event('ce_e2e_3', { tool_name: 'transform_schema', session_id: 'ce_sess', output_tokens: 5 })]),
    });
    expect(await batch.json()).toEqual({ accepted: 2, duplicates: [], rejected: [] });

    const invalid = await fetch(url, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/cloudevents-batch+json' },
      body: JSON.stringify([event('ce_e2e_4', { tool_name: 'search_docs' }), event('ce_e2e_5', { tool_name: 'search_docs', execution_status: 'OK' })]),
    });
    expect(invalid.status).toBe(400);
    expect(((await invalid.json()) as { error: { details: { path: string }[] } }).error.details.map((d) => d.path)).toEqual(['$[1].data.execution_status']);

    const rows = await ledgerOf({ sessionId: 'ce_sess' }, 3);
    expect(rows.map((r) => [r.event_id, r.tool_name, r.cost_nano]).sort()).toEqual([
      ['ce_e2e_1', 'search_docs', String(2_000_000 + 10_000)],
      ['ce_e2e_2', 'read_database', '4000000'],
      ['ce_e2e_3', 'transform_schema', String(50_000_000 + 10_000)],
    ]);
    const [{ n }] = await world.sql`SELECT count(*)::int AS n FROM usage_ledger WHERE event_id IN ('ce_e2e_4', 'ce_e2e_5')`;
    expect(n).toBe(0);
  });
});

describe('the SDK through an API restart (last: it kills the API process)', () => {
  it('delivers 5,000 events through a SIGKILL of the API mid-batch: the ledger holds each once, to the nano-unit', async () => {
    const soakTenant = await seedSoakTenant(world.sql);
    const result = await runSdkSoak({ sql: world.sql, pipeline, tenant: soakTenant, events: 5_000, kills: 1 });
    expect(result.errors).toEqual([]);
    expect(result.kills).toBe(1);
    // The kill cost the client something to recover from: refused connections at least.
    expect(result.retries).toBeGreaterThan(0);
    expect({ rows: result.ledgerRows, missing: result.missing, extra: result.extra, failed: result.failed, dropped: result.dropped }).toEqual({
      rows: 5_000,
      missing: 0,
      extra: 0,
      failed: 0,
      dropped: 0,
    });
    expect(result.ledgerTotalNano).toBe(result.expectedTotalNano);
    expect(result.exact).toBe(true);
  }, 240_000);
});
