/**
 * The metering proxy's added latency: tools/call at a fixed rate (500/s by default, open model:
 * requests leave on schedule) to the example MCP server directly and through the proxy,
 * interleaved per call: every 1/rate s one direct and one proxied call leave together, in a random
 * order, from the same client to the same upstream, so a stall of the machine hits both paths
 * alike. Added latency: the proxied percentile minus the direct one over the same window, and the
 * distribution of the per-pair differences. (`--interleave blocks`: the former alternating
 * 2-second blocks, one path at a time.)
 *
 *   npm run bench:mcp-proxy                              # 500 calls/s, 30 s each way
 *   npm run bench:mcp-proxy -- --rate 500 --duration 60 --upstream-mode json
 *   npm run bench:mcp-proxy -- --renice=-5      # on a busy shared machine: client, upstream and proxy first
 *   npm run bench:mcp-proxy -- --stages stopped # billing afterwards: the stage workers stopped while measuring
 *   npm run bench:mcp-proxy -- --profile        # the proxy under node --cpu-prof, summarized at the end
 *   npm run bench:mcp-proxy -- --bare           # a bare pass-through proxy in its place: the floor (nothing metered)
 *
 * Everything is real and on this machine: a scratch world with the whole pipeline (the proxy
 * asks /v1/authorize and sends its events there; its stage workers at nice 10 by default,
 * `--renice-stages`, so they bill in the spare time of the two cores), the upstream (examples/mcp-server/http.ts
 * --plain) and the proxy (`npm run mcp-proxy`) as processes of their own. With `--stages stopped`
 * the stage workers are stopped (SIGSTOP) for the measured blocks and resumed (SIGCONT) before the
 * ledger check: the proxy still authorizes every call against the API and sends every event to it
 * (the API takes them onto its stream, its backpressure bounds raised so it holds them), and the
 * billing of those events runs afterwards instead of on the same two cores. The client is a
 * keep-alive node:http agent sending one JSON-RPC tools/call per request and reading the whole
 * answer. Afterwards the ledger must hold one row per proxied call.
 * Bars (issue 15): added p50 <= 1 ms, p99 <= 5 ms (paired: as quantile difference and as the
 * per-pair p99 both).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'node:http';
import { cpus, loadavg, setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { seedTenant } from '../../ops/seed.js';
import { startPipeline, freePortRange, waitFor, type RunningPipeline } from '../../test/support/pipeline.js';
import { formatProfile, summarizeProfile } from './profile.js';
import { cpuTicks, withDescendants } from './sampler.js';
import { createScratchWorld } from './world.js';

const { values } = parseArgs({
  options: {
    rate: { type: 'string', default: '500' },
    duration: { type: 'string', default: '30' },
    'upstream-mode': { type: 'string', default: 'sse' },
    interleave: { type: 'string', default: 'pairs' },
    block: { type: 'string', default: '2' },
    renice: { type: 'string', default: '0' },
    'renice-stages': { type: 'string', default: '10' },
    stages: { type: 'string', default: 'nice' },
    profile: { type: 'boolean', default: false },
    bare: { type: 'boolean', default: false },
    monitor: { type: 'boolean', default: false },
    'proxy-node-flags': { type: 'string' },
    'upstream-node-flags': { type: 'string', default: '' },
  },
});
const RATE = Number(values.rate);
const SECONDS_EACH = Number(values.duration);
const BLOCK_MS = Number(values.block) * 1000;
const JSON_MODE = values['upstream-mode'] === 'json';
const STAGES_STOPPED = values.stages === 'stopped';
const BARE = values.bare === true;
/** --monitor: event-loop delay and GC pauses of the client, the upstream and the proxy over the measured seconds. */
const MONITOR = values.monitor === true;
const PAIRS = values.interleave === 'pairs';
if (!['pairs', 'blocks'].includes(values.interleave!)) throw new Error(`--interleave pairs|blocks, got ${values.interleave}`);
const WARMUP = 200;
if (!['nice', 'stopped'].includes(values.stages!)) throw new Error(`--stages nice|stopped, got ${values.stages}`);
const PLAN = { tool_invocations: { search_docs: '0.002', '*': '0.001' }, duration_buckets: [{ max_seconds: null, rate: '0' }] };
const root = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));
/**
 * The Node flags of the proxy process: those `npm run mcp-proxy` runs it with (its GC settings),
 * read from package.json so that the benchmark measures the proxy as it is run; `--proxy-node-flags`
 * replaces them (`--proxy-node-flags=` for none).
 */
const scriptFlags = (JSON.parse(readFileSync(root('package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts['mcp-proxy'].split(' ').filter((word) => /^--[a-z-]+(=\S+)?$/.test(word) && word !== '--import');
const PROXY_NODE_FLAGS = values['proxy-node-flags'] === undefined ? scriptFlags : values['proxy-node-flags'].split(' ').filter(Boolean);

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function post(url: string, body: unknown, headers: Record<string, string>): Promise<Answer> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'content-length': Buffer.byteLength(payload), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** initialize + notifications/initialized: the session id and the headers of later requests. */
async function openSession(url: string, apiKey: string): Promise<Record<string, string>> {
  const init = await post(url, { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bench', version: '1' } } }, { 'x-api-key': apiKey });
  const sessionId = init.headers['mcp-session-id'];
  if (init.status !== 200 || typeof sessionId !== 'string') throw new Error(`initialize at ${url} answered ${init.status}: ${init.body.slice(0, 200)}`);
  const headers = { 'x-api-key': apiKey, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-06-18' };
  await post(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, headers);
  return headers;
}

function startChild(name: string, args: string[], env: Record<string, string>, nodeFlags: string[] = []): ChildProcess {
  const monitor = MONITOR ? ['--import', root('loadtest/bench/stall-monitor.ts')] : [];
  const child = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', ...monitor, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
  child.on('exit', (code, signal) => {
    if (!stopping) console.error(`bench: ${name} exited (${code ?? signal})`);
  });
  return child;
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

const fmt = (ms: number) => ms.toFixed(3);
let stopping = false;

if (MONITOR) await import('./stall-monitor.js');
const world = await createScratchWorld({ LOG_LEVEL: 'error' });
let pipeline: RunningPipeline | undefined;
let profileDir: string | undefined;
let signalStages: ((signal: NodeJS.Signals) => void) | undefined;
const children: ChildProcess[] = [];
let exitCode = 1;
try {
  const tenant = await seedTenant(world.sql, { name: 'proxy-bench', pricing: PLAN, customers: 1, teamsPerCustomer: 1, agentsPerTeam: 1 });
  const apiKey = tenant.customers[0].teams[0].agents[0].apiKey;
  console.log(`bench: scratch world ${world.dbName}; starting the pipeline`);
  // Stopped stages: the API keeps taking events onto its stream (no backpressure from the lag or
  // the age of what waits there) until the stages resume and bill them.
  // The stage workers bill the proxied calls in the machine's spare time (STAGE_NICE; the API,
  // which answers authorize and takes the events, keeps its priority): the figures are the
  // proxy's, not those of a billing pipeline sharing its two cores. The ledger is checked once
  // they have drained.
  const reniceStages = Number(values['renice-stages']);
  pipeline = await startPipeline(world, {
    LOG_LEVEL: 'error',
    STAGE_NICE: String(reniceStages),
    ...(STAGES_STOPPED ? { INGEST_MAX_QUEUE_MS: '0', INGEST_MAX_QUEUE_EVENTS: '1000000', BACKPRESSURE_HIGH: '1000000', BACKPRESSURE_LOW: '500000' } : {}),
  });
  const stagePids = () => [...pipeline!.supervisor.children()].flatMap(([name, child]) => (name !== 'api' && child.pid ? [child.pid] : []));
  signalStages = (signal) => {
    for (const pid of stagePids()) process.kill(pid, signal);
  };

  const base = await freePortRange(2);
  profileDir = values.profile ? mkdtempSync(join(tmpdir(), 'mcp-proxy-prof-')) : undefined;
  const upstream = `http://127.0.0.1:${base}/mcp`;
  const proxied = `http://127.0.0.1:${base + 1}/mcp`;
  // --upstream-node-flags: a diagnostic (e.g. the proxy's GC flags on the upstream too, to see how much of the tails its pauses make); none by default.
  const upstreamFlags = values['upstream-node-flags']!.split(' ').filter(Boolean);
  children.push(startChild('upstream', [root('examples/mcp-server/http.ts'), '--plain', '--port', String(base), ...(JSON_MODE ? ['--json'] : [])], {}, upstreamFlags));
  const profileFlags = [...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []), ...PROXY_NODE_FLAGS];
  children.push(
    BARE
      ? startChild('bare proxy', [root('loadtest/bench/bare-proxy.ts'), upstream, String(base + 1)], {}, profileFlags)
      : startChild('mcp-proxy', [root('mcp-proxy/main.ts'), '--upstream', upstream, '--listen', String(base + 1)], {
          AGENTMETER_URL: pipeline.baseUrl,
          AGENTMETER_INGEST_TOKEN: tenant.ingestToken,
          LOG_LEVEL: 'warn',
        }, profileFlags),
  );
  // --renice=-N: on a machine shared with other work, give the client, the upstream and the proxy
  // the same head start (the pipeline keeps its priority); direct and proxied calls gain alike.
  const renice = Number(values.renice);
  if (renice !== 0) for (const pid of [process.pid, ...children.map((c) => c.pid!)]) setPriority(pid, renice);
  await waitFor(async () => (await openSession(upstream, apiKey).then(() => true, () => false)) && (await openSession(proxied, apiKey).then(() => true, () => false)), 60_000, 'upstream and proxy up');

  const sessions = { direct: await openSession(upstream, apiKey), proxy: await openSession(proxied, apiKey) };
  const urls = { direct: upstream, proxy: proxied };
  const latencies: Record<'direct' | 'proxy', number[]> = { direct: [], proxy: [] };
  /** --interleave pairs: per scheduled pair, proxied minus direct latency (both answered). */
  const pairDiffs: number[] = [];
  const failures: Record<'direct' | 'proxy', number> = { direct: 0, proxy: 0 };
  const reasons = new Map<string, number>();
  const failed = (mode: 'direct' | 'proxy', reason: string) => {
    failures[mode]++;
    reasons.set(`${mode}: ${reason}`, (reasons.get(`${mode}: ${reason}`) ?? 0) + 1);
  };
  let id = 1;
  /** One tools/call; its latency in ms (also recorded), or undefined when it failed. */
  const call = async (mode: 'direct' | 'proxy'): Promise<number | undefined> => {
    const started = performance.now();
    try {
      const answer = await post(urls[mode], { jsonrpc: '2.0', id: id++, method: 'tools/call', params: { name: 'search_docs', arguments: { query: 'spend caps' } } }, sessions[mode]);
      const elapsed = performance.now() - started;
      if (answer.status !== 200 || !answer.body.includes('"result"')) failed(mode, `${answer.status} ${answer.body.slice(0, 80)}`);
      else {
        latencies[mode].push(elapsed);
        return elapsed;
      }
    } catch (err) {
      failed(mode, (err as Error).message);
    }
    return undefined;
  };
  /** A direct and a proxied call leaving together, in a random order: the same client, upstream and moment. */
  const pair = async () => {
    const proxyFirst = Math.random() < 0.5;
    const first = call(proxyFirst ? 'proxy' : 'direct');
    const second = call(proxyFirst ? 'direct' : 'proxy');
    const [a, b] = await Promise.all([first, second]);
    const [proxyMs, directMs] = proxyFirst ? [a, b] : [b, a];
    if (proxyMs !== undefined && directMs !== undefined) pairDiffs.push(proxyMs - directMs);
  };

  // Warm up both paths (JIT, connections, the proxy's authorize cache).
  for (let i = 0; i < WARMUP; i++) await Promise.all([call('direct'), call('proxy')]);
  latencies.direct.length = latencies.proxy.length = 0;
  failures.direct = failures.proxy = 0;
  reasons.clear();

  const loadBefore = loadavg()[0];
  const [upstreamChild, proxyChild] = children;
  const ticksOf = (pids: number[]) => pids.reduce((sum, pid) => sum + (cpuTicks(pid) ?? 0), 0);
  const apiPids = () => withDescendants(pipeline!.supervisor.children().get('api')!.pid!);
  if (STAGES_STOPPED) signalStages('SIGSTOP');
  const monitored = MONITOR ? [process.pid, ...children.map((c) => c.pid!)] : [];
  for (const pid of monitored) process.kill(pid, 'SIGUSR2');
  const clientCpuBefore = process.cpuUsage();
  const cpuBefore = { upstream: cpuTicks(upstreamChild.pid!) ?? 0, proxy: cpuTicks(proxyChild.pid!) ?? 0, api: ticksOf(apiPids()), stages: ticksOf(stagePids()) };
  console.log(`bench: the proxy runs with node ${PROXY_NODE_FLAGS.join(' ') || '(no flags)'}${upstreamFlags.length ? `, the upstream with node ${upstreamFlags.join(' ')}` : ''}`);
  console.log(
    PAIRS
      ? `bench: ${RATE} tools/call per second through the proxy and ${RATE} direct, for ${SECONDS_EACH} s, interleaved per call (each ${1000 / RATE} ms one direct and one proxied call leave together in a random order; ${JSON_MODE ? 'JSON' : 'SSE'} answers)`
      : `bench: ${RATE} tools/call per second, ${SECONDS_EACH} s direct and ${SECONDS_EACH} s through the proxy, in ${BLOCK_MS / 1000} s blocks (${JSON_MODE ? 'JSON' : 'SSE'} answers)`,
  );
  const interval = 1000 / RATE;
  const inFlight = new Set<Promise<unknown>>();
  // Pairs: one stretch of SECONDS_EACH, each slot a pair. Blocks: direct and proxied blocks in turn.
  const blockMs = PAIRS ? SECONDS_EACH * 1000 : BLOCK_MS;
  const blocks = PAIRS ? 1 : Math.ceil((SECONDS_EACH * 1000) / BLOCK_MS) * 2;
  let late = 0;
  for (let block = 0; block < blocks; block++) {
    const mode = block % 2 === 0 ? 'direct' : 'proxy';
    const blockStart = performance.now();
    // Each timer tick sends every request that has come due (no busy waiting: it would take a core).
    for (let n = 0; n * interval < blockMs; ) {
      const now = performance.now();
      while (n * interval < blockMs && blockStart + n * interval <= now) {
        if (now - (blockStart + n * interval) > 5) late++;
        const running: Promise<unknown> = (PAIRS ? pair() : call(mode)).finally(() => inFlight.delete(running));
        inFlight.add(running);
        n++;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all(inFlight);
    if (!PAIRS) process.stdout.write(`\rbench: block ${block + 1}/${blocks} (${mode})   `);
  }
  if (!PAIRS) process.stdout.write('\n');
  const clientCpu = process.cpuUsage(clientCpuBefore);
  for (const pid of monitored) process.kill(pid, 'SIGUSR2');
  const apiTicks = ticksOf(apiPids()) - cpuBefore.api;
  const stageTicks = ticksOf(stagePids()) - cpuBefore.stages;
  if (STAGES_STOPPED) signalStages('SIGCONT');
  agent.destroy();
  // CPU time per call (10 ms ticks over thousands of calls): what the proxy costs whatever the machine's load.
  const cpuMsPerCall = (pid: number, before: number, calls: number) => (((cpuTicks(pid) ?? before) - before) * 10) / Math.max(1, calls);
  const proxyCpu = cpuMsPerCall(proxyChild.pid!, cpuBefore.proxy, latencies.proxy.length);
  const upstreamCpu = cpuMsPerCall(upstreamChild.pid!, cpuBefore.upstream, latencies.proxy.length + latencies.direct.length);

  const direct = [...latencies.direct].sort((a, b) => a - b);
  const proxy = [...latencies.proxy].sort((a, b) => a - b);
  const row = (name: string, s: number[]) => `${name.padEnd(8)} ${String(s.length).padStart(7)} ${fmt(percentile(s, 0.5)).padStart(8)} ${fmt(percentile(s, 0.9)).padStart(8)} ${fmt(percentile(s, 0.99)).padStart(8)} ${fmt(s[s.length - 1]).padStart(9)}`;
  const added50 = percentile(proxy, 0.5) - percentile(direct, 0.5);
  const added99 = percentile(proxy, 0.99) - percentile(direct, 0.99);

  // The ledger: one mcp.tool_invoked row per proxied call (warm-up included), once the pipeline drained.
  const proxiedCalls = BARE ? 0 : WARMUP + proxy.length + failures.proxy;
  const count = async () =>
    (await world.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM usage_ledger WHERE tenant_id = ${tenant.tenantId} AND event_type = 'mcp.tool_invoked'`)[0].n;
  await waitFor(async () => (await count()) >= proxiedCalls, 120_000, 'every proxied call in the ledger').catch(() => {});
  const ledgered = await count();

  console.log(`\nmode       calls   p50 ms   p90 ms   p99 ms    max ms`);
  console.log(row('direct', direct));
  console.log(row('proxy', proxy));
  if (BARE) console.log('\nthe proxy: a bare pass-through (--bare), nothing authorized or metered: the floor under the metering proxy');
  console.log(`\nadded by the proxy (its percentile minus the direct one, same window): p50 ${fmt(added50)} ms (bar 1 ms), p99 ${fmt(added99)} ms (bar 5 ms)`);
  if (PAIRS) {
    const diffs = pairDiffs.sort((a, b) => a - b);
    console.log(
      `per pair, proxied minus direct (${diffs.length} pairs): p1 ${fmt(percentile(diffs, 0.01))}, p10 ${fmt(percentile(diffs, 0.1))}, p50 ${fmt(percentile(diffs, 0.5))}, p90 ${fmt(percentile(diffs, 0.9))}, p99 ${fmt(percentile(diffs, 0.99))}, max ${fmt(diffs[diffs.length - 1])} ms`,
    );
  }
  const allCalls = latencies.proxy.length + latencies.direct.length;
  console.log(`CPU per call: proxy ${fmt(proxyCpu)} ms (${BARE ? 'passing bytes through, nothing else' : 'metering, authorize and sending events included'}), upstream MCP server ${fmt(upstreamCpu)} ms`);
  console.log(
    `CPU per call of all calls: client ${fmt((clientCpu.user + clientCpu.system) / 1000 / Math.max(1, allCalls))} ms, API ${fmt((apiTicks * 10) / Math.max(1, allCalls))} ms, stage workers ${fmt((stageTicks * 10) / Math.max(1, allCalls))} ms (${STAGES_STOPPED ? 'stopped while measuring: they billed afterwards' : `at nice ${reniceStages}`})`,
  );
  console.log(
    `machine: ${cpus().length} cores, load average (1 min) ${loadBefore.toFixed(1)} before, ${loadavg()[0].toFixed(1)} after: the machine is shared, so read the figures with it${renice ? `; client, upstream and proxy at nice ${renice}` : ''}; stage workers ${STAGES_STOPPED ? 'stopped while measuring' : `at nice ${reniceStages}`}`,
  );
  console.log(`failed requests: direct ${failures.direct}, proxy ${failures.proxy}${reasons.size ? ` (${[...reasons].map(([r, n]) => `${n}x ${r}`).join('; ')})` : ''}; requests sent more than 5 ms late: ${late}`);
  console.log(`ledger: ${ledgered} mcp.tool_invoked rows for ${proxiedCalls} proxied calls (${ledgered === proxiedCalls ? 'exact' : 'MISMATCH'})`);
  // Paired: the per-pair p99 must hold too (two tails of 80 ms can differ by 3 ms and say nothing).
  const pairs99 = PAIRS ? percentile(pairDiffs, 0.99) : 0;
  const pass = added50 <= 1 && added99 <= 5 && pairs99 <= 5 && failures.proxy === 0 && ledgered === proxiedCalls;
  console.log(pass ? 'bench: PASS' : 'bench: FAIL');
  exitCode = pass ? 0 : 1;
} finally {
  stopping = true;
  if (STAGES_STOPPED) signalStages?.('SIGCONT');
  for (const child of children) child.kill('SIGTERM');
  await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
  await pipeline?.stop();
  await world.cleanup();
  if (profileDir) {
    for (const file of readdirSync(profileDir).filter((f) => f.endsWith('.cpuprofile'))) console.log(formatProfile(`proxy profile ${file}`, summarizeProfile(join(profileDir, file), 25)));
    rmSync(profileDir, { recursive: true, force: true });
  }
}
process.exit(exitCode);
