// The MCP metering proxy, in front of any Streamable HTTP MCP server:
//   AGENTMETER_URL=http://127.0.0.1:8080 AGENTMETER_INGEST_TOKEN=amt_... \
//     npm run mcp-proxy -- --upstream http://127.0.0.1:3000/mcp --listen 8090
// Clients then use http://127.0.0.1:8090/mcp with their agentmeter API key in X-Api-Key (or
// Authorization: Bearer). See README "MCP metering proxy".
// `npm run mcp-proxy` runs it with `node --single-threaded-gc --max-semi-space-size=4`: on a
// machine whose cores are busy, short young-generation collections done by the main thread alone
// hold a response up less than the default ones (16 MiB, with helper threads that wait for a
// core); measured in BENCHMARKS.md (issue 15).
import { parseArgs } from 'node:util';
import { AgentMeter } from '@agentmeter/sdk';
import { createLogger } from '../pipeline/logger.js';
import { startMcpProxy } from './proxy.js';

const USAGE = `npm run mcp-proxy -- --upstream <url> --listen <port> [options]

  --upstream <url>          the MCP server (Streamable HTTP); every path is forwarded to its origin
  --listen <port>           port to listen on (0: any free port)
  --host <host>             address to listen on (default 127.0.0.1)
  --meter-url <url>         agentmeter's API (default $AGENTMETER_URL, else http://127.0.0.1:8080)
  --mcp-server-id <id>      agentmeter's id of this MCP server (tool aliases)
  --api-key-header <name>   header with the caller's API key (default x-api-key; else Authorization: Bearer)
  --client-id-header <name> header with an OAuth client id set by a gateway in front
  --no-authorize            do not ask /v1/authorize before tool calls
  --fail-closed             refuse tool calls while agentmeter cannot answer authorize (default: allow)
  --upstream-timeout-ms <n> longest upstream silence on one request before its calls are TIMEOUT (default 300000)
  --max-body-bytes <n>      larger request bodies get 413 (default 4194304)
The ingest token comes from $AGENTMETER_INGEST_TOKEN (never a flag: it would show in ps).`;

const { values } = parseArgs({
  options: {
    upstream: { type: 'string' },
    listen: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    'meter-url': { type: 'string' },
    'mcp-server-id': { type: 'string' },
    'api-key-header': { type: 'string' },
    'client-id-header': { type: 'string' },
    'no-authorize': { type: 'boolean', default: false },
    'fail-closed': { type: 'boolean', default: false },
    'upstream-timeout-ms': { type: 'string' },
    'max-body-bytes': { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});

const problems: string[] = [];
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
if (!values.upstream) problems.push('--upstream <url> is required');
if (values.listen === undefined || !/^\d+$/.test(values.listen)) problems.push('--listen <port> is required (a number)');
const ingestToken = process.env.AGENTMETER_INGEST_TOKEN;
if (!ingestToken) problems.push('AGENTMETER_INGEST_TOKEN is not set');
const number = (flag: string, value: string | undefined) => {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) <= 0) problems.push(`${flag} must be a positive integer, got ${value}`);
  return Number(value);
};
const upstreamTimeoutMs = number('--upstream-timeout-ms', values['upstream-timeout-ms']);
const maxBodyBytes = number('--max-body-bytes', values['max-body-bytes']);
if (problems.length) {
  for (const problem of problems) console.error(`mcp-proxy: ${problem}`);
  console.error(`\n${USAGE}`);
  process.exit(2);
}

const log = createLogger('mcp-proxy');
const meter = new AgentMeter({
  baseUrl: values['meter-url'] ?? process.env.AGENTMETER_URL ?? 'http://127.0.0.1:8080',
  ingestToken: ingestToken!,
  authorize: { failMode: values['fail-closed'] ? 'closed' : 'open' },
  flushOnExit: false,
  // Never `{ err }`: the events an error holds carry the callers' API keys (the SDK keeps them out
  // of the error's enumerable fields too); the count says enough.
  onError: (err) => log.error({ code: err.code, message: err.message, events: (err as { events?: readonly unknown[] }).events?.length ?? 0 }, 'mcp-proxy: metering error'),
});
const proxy = await startMcpProxy({
  upstream: values.upstream!,
  port: Number(values.listen),
  host: values.host,
  meter,
  mcpServerId: values['mcp-server-id'],
  apiKeyHeader: values['api-key-header'],
  clientIdHeader: values['client-id-header'],
  authorize: !values['no-authorize'],
  upstreamTimeoutMs,
  maxBodyBytes,
  log,
});
// The upstream's URL without a password it may carry.
const upstreamShown = new URL(values.upstream!);
if (upstreamShown.password) upstreamShown.password = '***';
log.info({ listen: proxy.url, upstream: upstreamShown.href }, 'mcp-proxy listening');
// For a parent process (tests, the benchmark) that asked for port 0.
if (process.send) process.send({ listening: proxy.port });

const statsTimer = setInterval(() => log.info({ stats: proxy.stats(), meter: meter.stats() }, 'mcp-proxy stats'), 60_000);
statsTimer.unref();
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  log.info({ stats: proxy.stats() }, 'mcp-proxy stopping: closing connections, sending what is metered');
  await proxy.close();
  await meter.close();
  log.info({ meter: meter.stats() }, 'mcp-proxy stopped');
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
