/**
 * The proxy's HTTP behaviour against upstreams that answer byte by byte as scripted (a real MCP
 * server through the proxy, against the real pipeline: test/e2e/sdk-mcp.test.ts), with a
 * scripted agentmeter API taking its authorize requests and events: the request target, an SSE
 * answer in any cut of its chunks, a silent upstream; and the command line (`npm run mcp-proxy`).
 */
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentMeter } from '@agentmeter/sdk';
import { acceptAll, json, scriptedServer } from '../sdk/src/testing/scripted-server.js';
import { startMcpProxy, type RunningProxy } from './proxy.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;

async function upstream(handler: Handler): Promise<{ url: string; seen: { method: string; url: string; host: string }[] }> {
  const seen: { method: string; url: string; host: string }[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', host: req.headers.host ?? '' });
      handler(req, Buffer.concat(chunks).toString(), res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise((r) => {
        server.close(r);
        server.closeAllConnections();
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`, seen };
}

/** A proxy in front of `upstreamUrl`, its meter talking to a scripted agentmeter that allows every call. */
async function proxyTo(upstreamUrl: string, options: { upstreamTimeoutMs?: number } = {}) {
  const api = await scriptedServer((seen, req, res) => (seen.path === '/v1/authorize' ? json(res, 200, { allowed: true }) : acceptAll(seen, req, res)));
  const meter = new AgentMeter({ baseUrl: api.url, ingestToken: 'amt_test', flushOnExit: false, flushIntervalMs: 20 });
  const proxy: RunningProxy = await startMcpProxy({ upstream: upstreamUrl, port: 0, meter, ...options });
  cleanups.push(() => api.close(), () => meter.close(), () => proxy.close());
  const events = async () => {
    await meter.flush();
    return api.seen.filter((s) => s.path === '/v1/events').flatMap((s) => s.body.events ?? []);
  };
  return { proxy, events };
}

const call = (id: number, tool = 'search_docs') => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: tool, arguments: {} } });
const post = (url: string, body: string) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'x-api-key': 'sk_live_test_key' }, body });

describe('the metering proxy', () => {
  it('sends every request to the upstream origin, the target as the client wrote it (an absolute URL goes nowhere else)', async () => {
    const up = await upstream((_req, _body, res) => res.writeHead(204).end());
    const { proxy } = await proxyTo(up.url);
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect(proxy.port, '127.0.0.1', () => socket.write('GET http://127.0.0.1:1/elsewhere?x=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n'));
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('end', () => resolve(Buffer.concat(chunks).toString()));
      socket.on('error', reject);
    });
    expect(reply).toMatch(/^HTTP\/1.1 204/);
    const host = new URL(up.url).host;
    expect(up.seen).toEqual([{ method: 'GET', url: 'http://127.0.0.1:1/elsewhere?x=1', host }]);
    await fetch(`${proxy.url}/mcp/sub?q=1`, { method: 'DELETE' });
    expect(up.seen[1]).toEqual({ method: 'DELETE', url: '/mcp/sub?q=1', host });
  });

  it('passes an SSE answer through byte for byte however the upstream cuts it, and meters the call from it', async () => {
    const answer = `event: message\r\nid: 7\r\ndata: {"jsonrpc":"2.0","id":1,\r\ndata: "result":{"content":[{"type":"text","text":"é✓"}],"_meta":{"agentmeter/usage":{"input_tokens":12,"output_tokens":3}}}}\r\n\r\n`;
    const bytes = Buffer.from(answer);
    let cut = 0;
    const up = await upstream(async (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // Two writes, apart in time, split at `cut` (inside a line, a character, the blank line...).
      res.write(bytes.subarray(0, cut));
      await new Promise((r) => setTimeout(r, 5));
      res.end(bytes.subarray(cut));
    });
    const { proxy, events } = await proxyTo(up.url);
    const cuts = [1, 30, bytes.indexOf('é') + 1, bytes.length - 3, bytes.length - 2, bytes.length - 1];
    for (cut of cuts) {
      const res = await post(`${proxy.url}/mcp`, call(1));
      expect(Buffer.from(await res.arrayBuffer()).equals(bytes), `cut at ${cut}`).toBe(true);
    }
    const tracked = await events();
    expect(tracked).toHaveLength(cuts.length);
    for (const event of tracked) expect(event).toMatchObject({ tool_name: 'search_docs', execution_status: 'SUCCESS', input_tokens: 12, output_tokens: 3, api_key: 'sk_live_test_key' });
  });

  it('answers 504 for an upstream silent past --upstream-timeout-ms, and meters the call TIMEOUT', async () => {
    const up = await upstream(() => {}); // never answers
    const { proxy, events } = await proxyTo(up.url, { upstreamTimeoutMs: 300 });
    const started = Date.now();
    const res = await post(`${proxy.url}/mcp`, call(5, 'transform_schema'));
    expect(res.status).toBe(504);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(await events()).toEqual([expect.objectContaining({ tool_name: 'transform_schema', execution_status: 'TIMEOUT', error_type: 'upstream_timeout' })]);
    expect(proxy.stats().toolCalls.TIMEOUT).toBe(1);
  });
});

describe('npm run mcp-proxy (mcp-proxy/main.ts)', () => {
  const main = fileURLToPath(new URL('./main.ts', import.meta.url));
  const run = (args: string[], env: Record<string, string>) =>
    spawn(process.execPath, ['--import', 'tsx', main, ...args], { env: { ...process.env, LOG_LEVEL: 'error', ...env }, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });

  it('refuses to start without its upstream, port and ingest token, saying what is missing', async () => {
    const child = run(['--listen', 'x'], { AGENTMETER_INGEST_TOKEN: '' });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((r) => child.on('exit', r));
    expect(code).toBe(2);
    expect(stderr).toMatch(/--upstream <url> is required/);
    expect(stderr).toMatch(/--listen <port> is required/);
    expect(stderr).toMatch(/AGENTMETER_INGEST_TOKEN is not set/);
  });

  it('serves (--listen 0: a free port, told to a parent process), meters through the SDK, and sends what it metered when stopped', async () => {
    const up = await upstream((_req, _body, res) => json(res, 200, { jsonrpc: '2.0', id: 3, result: { content: [{ type: 'text', text: 'ok' }] } }));
    const api = await scriptedServer((seen, req, res) => (seen.path === '/v1/authorize' ? json(res, 200, { allowed: true }) : acceptAll(seen, req, res)));
    cleanups.push(() => api.close());
    const child = run(['--upstream', up.url, '--listen', '0', '--mcp-server-id', 'mcp_docs'], { AGENTMETER_URL: api.url, AGENTMETER_INGEST_TOKEN: 'amt_test' });
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    const port = await new Promise<number>((resolve) => child.on('message', (m: { listening?: number }) => m.listening && resolve(m.listening)));
    const res = await post(`http://127.0.0.1:${port}/mcp`, call(3));
    expect(await res.json()).toMatchObject({ id: 3, result: { content: [{ text: 'ok' }] } });
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    const events = api.seen.filter((s) => s.path === '/v1/events').flatMap((s) => s.body.events ?? []);
    expect(events).toEqual([expect.objectContaining({ tool_name: 'search_docs', mcp_server_id: 'mcp_docs', execution_status: 'SUCCESS', api_key: 'sk_live_test_key' })]);
  });
});
