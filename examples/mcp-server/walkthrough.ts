/**
 * The example end to end, in one command, on a scratch world of its own (removed afterwards):
 * the whole pipeline, the docs toolkit metered by the wrapper, the same toolkit unmetered
 * behind the metering proxy, one agent session through each, then the ledger rows, the session
 * records and the customer's draft invoice they made. README "MCP servers: the SDK, the wrapper,
 * the proxy" shows its output.
 *
 *   npx tsx examples/mcp-server/walkthrough.ts
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { AgentMeter } from '@agentmeter/sdk';
import { createScratchWorld } from '../../loadtest/bench/world.js';
import { startMcpProxy } from '../../mcp-proxy/proxy.js';
import { seedTenant } from '../../ops/seed.js';
import { renderTable } from '../../ops/table.js';
import { startPipeline, waitFor } from '../../test/support/pipeline.js';
import { startExampleHttpServer } from './http.js';

const PLAN = {
  tool_invocations: { transform_schema: '0.10', read_database: '0.05', search_docs: '0.01', '*': '0.002' },
  token_multipliers: { input_tokens: '0.000001', output_tokens: '0.000002' },
  tool_multipliers: { transform_schema: '2' },
  duration_buckets: [
    { max_seconds: 60, rate: '0.01' },
    { max_seconds: null, rate: '0.25' },
  ],
  base_session_fee: '0.50',
  included_tool_count: 2,
};

const world = await createScratchWorld({ LOG_LEVEL: 'error' });
const stops: (() => Promise<unknown>)[] = [];
try {
  const tenant = await seedTenant(world.sql, { name: 'Docs toolkit vendor', pricing: PLAN, customers: 1, teamsPerCustomer: 1, agentsPerTeam: 2 });
  const [wrapperAgent, proxyAgent] = tenant.customers[0].teams[0].agents;
  const pipeline = await startPipeline(world, { LOG_LEVEL: 'error' });
  stops.push(() => pipeline.stop());
  const meter = new AgentMeter({ baseUrl: pipeline.baseUrl, ingestToken: tenant.ingestToken, flushIntervalMs: 200, flushOnExit: false });
  stops.push(() => meter.close());

  const metered = await startExampleHttpServer({ port: 0, metering: { meter, timeoutMs: { transform_schema: 30_000 } } });
  const plain = await startExampleHttpServer({ port: 0 });
  const proxy = await startMcpProxy({ upstream: plain.url, port: 0, meter });
  stops.push(() => metered.close(), () => plain.close(), () => proxy.close());

  const session = async (url: string, apiKey: string) => {
    const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { 'x-api-key': apiKey } } });
    const client = new Client({ name: 'walkthrough-agent', version: '1.0.0' });
    await client.connect(transport);
    await client.callTool({ name: 'search_docs', arguments: { query: 'spend caps' } });
    await client.callTool({ name: 'search_docs', arguments: { query: 'invoices' } });
    await client.callTool({ name: 'transform_schema', arguments: { schema: '{"type":"object"}', dialect: '2020-12' } });
    await client.callTool({ name: 'read_database', arguments: { table: 'sessions' } });
    await client.callTool({ name: 'read_database', arguments: { table: 'payments' } });
    await transport.terminateSession();
    await client.close();
  };
  await session(metered.url, wrapperAgent.apiKey);
  await session(`${proxy.url}/mcp`, proxyAgent.apiKey);
  await meter.flush();
  await waitFor(async () => {
    const [{ n }] = await world.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM mcp_sessions WHERE status = 'COMPLETED'`;
    return n === 2 && (await pipeline.drained());
  }, 60_000, 'both sessions completed');
  await new Promise((r) => setTimeout(r, 1_000)); // the invoice-rollup's last batch
  await waitFor(() => pipeline.drained(), 30_000);

  const via = (agentId: string | null) => (agentId === wrapperAgent.id ? 'wrapper' : 'proxy');
  const rows = await world.sql`
    SELECT agent_id, event_type, left(session_id, 12) AS session, tool_name, execution_status, input_tokens, output_tokens, model,
           duration_ms, cost_nano FROM usage_ledger ORDER BY agent_id = ${wrapperAgent.id} DESC, recorded_at, event_id`;
  console.log('usage_ledger\n');
  console.log(
    renderTable(
      ['via', 'event_type', 'session', 'tool', 'status', 'in', 'out', 'model', 'ms', 'cost'],
      rows.map((r) => [via(r.agent_id), r.event_type, `${r.session}…`, r.tool_name, r.execution_status, Number(r.input_tokens), Number(r.output_tokens), r.model, Number(r.duration_ms), (Number(r.cost_nano) / 1e9).toFixed(6)]),
      { right: [9] },
    ),
  );
  const sessions = await world.sql`SELECT agent_id, left(session_id, 12) AS session, status, tool_calls, errors, input_tokens, output_tokens, cost_nano FROM mcp_sessions ORDER BY agent_id = ${wrapperAgent.id} DESC`;
  console.log('\nmcp_sessions\n');
  console.log(
    renderTable(
      ['via', 'session', 'status', 'calls', 'errors', 'in', 'out', 'cost'],
      sessions.map((s) => [via(s.agent_id), `${s.session}…`, s.status, Number(s.tool_calls), Number(s.errors), Number(s.input_tokens), Number(s.output_tokens), (Number(s.cost_nano) / 1e9).toFixed(6)]),
      { right: [7] },
    ),
  );
  const invoice = (await (
    await fetch(`${pipeline.baseUrl}/v1/customers/${tenant.customers[0].id}/invoices/current`, { headers: { authorization: `Bearer ${tenant.ingestToken}` } })
  ).json()) as { lines: { step: number; code: string; amount: string; description: string }[]; subtotal: string; total: string; total_exact: string; currency: string };
  console.log('\nGET /v1/customers/{id}/invoices/current\n');
  console.log(renderTable(['step', 'code', 'amount', 'description'], invoice.lines.map((l) => [l.step, l.code, l.amount, l.description]), { right: [2] }));
  console.log(`subtotal ${invoice.subtotal}, total ${invoice.total} ${invoice.currency} (exact ${invoice.total_exact})`);
  console.log(`\nproxy: ${JSON.stringify(proxy.stats())}`);
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => {});
  await world.cleanup();
}
process.exit(0);
