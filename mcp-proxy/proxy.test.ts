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
import { gzipSync } from 'node:zlib';
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

/** A proxy in front of `upstreamUrl`, its meter talking to a scripted agentmeter that allows every call (or answers `decision`). */
async function proxyTo(upstreamUrl: string, options: { upstreamTimeoutMs?: number } = {}, decision: Record<string, unknown> = { allowed: true }) {
  const api = await scriptedServer((seen, req, res) => (seen.path === '/v1/authorize' ? json(res, 200, decision) : acceptAll(seen, req, res)));
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
const post = (url: string, body: string | Buffer, headers: Record<string, string> = {}) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'x-api-key': 'sk_live_test_key', ...headers }, body });
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

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

describe('what the proxy cannot read is never forwarded', () => {
  it('answers 400 to a body that is not JSON-RPC, 415 to a compressed one and 405 to a method MCP does not use; a BOM is removed and the call authorized like any other', async () => {
    const bodies: Buffer[] = [];
    const up = await upstream((_req, body, res) => {
      bodies.push(Buffer.from(body));
      json(res, 200, { jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: 'ran' }] } });
    });
    // This caller is paused: every tools/call must be refused by the proxy, whatever its body looks like.
    const { proxy, events } = await proxyTo(up.url, {}, { allowed: false, code: 'paused', reason: 'spend cap' });

    const bom = await post(`${proxy.url}/mcp`, Buffer.concat([BOM, Buffer.from(call(1))]));
    expect(await bom.json()).toMatchObject({ id: 1, result: { isError: true, _meta: { 'agentmeter/refusal': { code: 'paused' } } } });
    const identity = await post(`${proxy.url}/mcp`, call(2), { 'content-encoding': 'Identity' });
    expect(await identity.json()).toMatchObject({ id: 2, result: { isError: true } });

    const gzip = await post(`${proxy.url}/mcp`, gzipSync(call(3)), { 'content-encoding': 'gzip' });
    expect(gzip.status).toBe(415);
    expect(await gzip.json()).toMatchObject({ jsonrpc: '2.0', id: null, error: { message: expect.stringMatching(/Content-Encoding gzip/) } });

    const refusals: [string | Buffer, number][] = [
      ['{"jsonrpc": "2.0", "id": 4, "method": "tools/call", ', -32700],
      [Buffer.concat([BOM, BOM, Buffer.from(call(5))]), -32700],
      [Buffer.from(call(6), 'utf16le'), -32700],
      ['{}', -32600],
      ['[]', -32600],
      [JSON.stringify({ id: 7, method: 'tools/call', params: { name: 'search_docs' } }), -32600],
      // One element of a batch that is not JSON-RPC: a lax upstream might run it, unmetered.
      [`[${call(8)},${JSON.stringify({ id: 9, method: 'tools/call', params: { name: 'search_docs' } })}]`, -32600],
    ];
    for (const [body, code] of refusals) {
      const res = await post(`${proxy.url}/mcp`, body);
      expect(res.status, String(body)).toBe(400);
      expect(await res.json()).toMatchObject({ jsonrpc: '2.0', id: null, error: { code } });
    }
    // A method MCP does not use: an upstream that took a PUT as a POST would run its calls unmetered.
    const put = await fetch(`${proxy.url}/mcp`, { method: 'PUT', headers: { 'content-type': 'application/json', 'x-api-key': 'sk_live_test_key' }, body: call(10) });
    expect(put.status).toBe(405);
    expect(put.headers.get('allow')).toBe('GET, POST, DELETE, HEAD, OPTIONS');
    expect(bodies).toEqual([]);
    expect(proxy.stats()).toMatchObject({ refused: 2, malformedBodies: refusals.length, encodedBodies: 1, otherMethods: 1, toolCalls: { SUCCESS: 0, FAILED: 0 } });
    expect(await events()).toEqual([]);
  });

  it('forwards a BOM-prefixed body without the BOM, the call metered as any other', async () => {
    const bodies: string[] = [];
    const up = await upstream((_req, body, res) => {
      bodies.push(body);
      json(res, 200, { jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: 'ran' }] } });
    });
    const { proxy, events } = await proxyTo(up.url);
    const res = await post(`${proxy.url}/mcp`, Buffer.concat([BOM, Buffer.from(call(1))]));
    expect(await res.json()).toMatchObject({ id: 1, result: { content: [{ text: 'ran' }] } });
    expect(bodies).toEqual([call(1)]);
    expect(await events()).toEqual([expect.objectContaining({ tool_name: 'search_docs', execution_status: 'SUCCESS', api_key: 'sk_live_test_key' })]);
  });
});

describe('a call the upstream never ran', () => {
  it('is not metered when the upstream refused it with a 4xx and no response for it, or could not be reached; a 5xx or a reset after sending stays FAILED', async () => {
    const up = await upstream((req, body, res) => {
      const { id } = JSON.parse(body) as { id: number };
      if (id === 1) return json(res, 404, { jsonrpc: '2.0', id: null, error: { code: -32001, message: 'Session not found' } });
      if (id === 2) return json(res, 400, { jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Bad Request: Server not initialized' } });
      if (id === 3) return res.writeHead(406, { 'content-type': 'text/plain' }).end('Not Acceptable');
      if (id === 4) return json(res, 401, { jsonrpc: '2.0', id: 4, error: { code: -32001, message: 'unauthorized' } });
      if (id === 5) return json(res, 500, { jsonrpc: '2.0', id: null, error: { code: -32603, message: 'Internal error' } });
      if (id === 6) return req.socket.destroy(); // read the request, then the connection drops: it may have run
      json(res, 200, { jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'ran' }] } });
    });
    const { proxy, events } = await proxyTo(up.url);
    const statuses: number[] = [];
    for (let id = 1; id <= 7; id++) {
      const res = await post(`${proxy.url}/mcp`, call(id, `tool_${id}`), { 'mcp-session-id': 'expired' });
      statuses.push(res.status);
      await res.arrayBuffer();
    }
    expect(statuses).toEqual([404, 400, 406, 401, 500, 502, 200]);
    expect((await events()).map((e) => [e.tool_name, e.execution_status, e.error_type])).toEqual([
      // A response for the call itself, even in a 4xx, is the upstream's answer to it.
      ['tool_4', 'FAILED', 'jsonrpc_-32001'],
      ['tool_5', 'FAILED', 'upstream_no_response'],
      ['tool_6', 'FAILED', 'upstream_unreachable'],
      ['tool_7', 'SUCCESS', undefined],
    ]);
    expect(proxy.stats()).toMatchObject({ notRun: 3, toolCalls: { SUCCESS: 1, FAILED: 3 } });

    // Nothing listens there: the connection is refused before any byte of the request left.
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const down = await proxyTo(`http://127.0.0.1:${port}/mcp`);
    const res = await post(`${down.proxy.url}/mcp`, call(8));
    expect(res.status).toBe(502);
    expect(await res.json()).toMatchObject({ id: null, error: { message: expect.stringMatching(/upstream unreachable: connect ECONNREFUSED/) } });
    expect(await down.events()).toEqual([]);
    expect(down.proxy.stats()).toMatchObject({ notRun: 1, upstreamFailures: 1, toolCalls: { FAILED: 0 } });
  });
});

describe('npm run mcp-proxy (mcp-proxy/main.ts)', () => {
  const main = fileURLToPath(new URL('./main.ts', import.meta.url));
  const run = (args: string[], env: Record<string, string>) =>
    spawn(process.execPath, ['--import', 'tsx', main, ...args], { env: { ...process.env, LOG_LEVEL: 'error', ...env }, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  /** Starts the proxy in front of an upstream answering every call, with `api` as agentmeter; makes one call, then SIGTERM. */
  const callThenStop = async (api: { url: string }) => {
    const up = await upstream((_req, _body, res) => json(res, 200, { jsonrpc: '2.0', id: 3, result: { content: [{ type: 'text', text: 'ok' }] } }));
    const child = run(['--upstream', up.url, '--listen', '0'], { AGENTMETER_URL: api.url, AGENTMETER_INGEST_TOKEN: 'amt_test' });
    let stdout = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    const port = await new Promise<number>((resolve) => child.on('message', (m: { listening?: number }) => m.listening && resolve(m.listening)));
    const res = await post(`http://127.0.0.1:${port}/mcp`, call(3));
    expect(await res.json()).toMatchObject({ id: 3, result: { content: [{ text: 'ok' }] } });
    child.kill('SIGTERM');
    const code = await exited;
    return { code, stdout };
  };

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

  it('when stopped, waits for a retry of what it metered (the API answering 503 once) before it exits', async () => {
    let ingests = 0;
    const api = await scriptedServer((seen, req, res) => {
      if (seen.path === '/v1/authorize') return json(res, 200, { allowed: true });
      if (++ingests === 1) return json(res, 503, { error: { code: 'unavailable', message: 'restarting' } });
      acceptAll(seen, req, res);
    });
    cleanups.push(() => api.close());
    const { code, stdout } = await callThenStop(api);
    expect(code).toBe(0);
    const sent = api.seen.filter((s) => s.path === '/v1/events');
    expect(sent.map((s) => s.body.events!.map((e) => e.tool_name))).toEqual([['search_docs'], ['search_docs']]);
    expect(stdout).toBe('');
  });

  it('logs a metering error by its code, message and count of events, never the events (they hold the API keys)', async () => {
    const api = await scriptedServer((seen, _req, res) =>
      seen.path === '/v1/authorize' ? json(res, 200, { allowed: true }) : json(res, 401, { error: { code: 'unauthorized', message: 'a valid ingest token is required' } }),
    );
    cleanups.push(() => api.close());
    const { code, stdout } = await callThenStop(api);
    expect(code).toBe(0);
    const lines = stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines).toEqual([expect.objectContaining({ msg: 'mcp-proxy: metering error', code: 'unauthorized', message: 'a valid ingest token is required', events: 1 })]);
    expect(stdout).not.toContain('sk_live');
  });
});
