// Sends realistic usage to `POST /v1/events` for the demo tenant that seed-demo created:
// agents running sessions of MCP and agent tool calls (by API key, some by client id) that end
// completed or failed, apps making API requests, skewed tool popularity, tokens, durations,
// failed calls, a few repeated event ids and a few events with an unknown key.
//   npm run demo-traffic -- [--rate N] [--duration S] [--demo .demo/demo.json] [--base-url URL] [--seed N]
//   npm run seed-demo | npm run demo-traffic -- --duration 10
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { retryAfterOf } from '../sdk/src/retry.js';
import { CommandError, isMain, numberFlag, parseArgs, runCli, stringFlag, UsageError } from './cli.js';

const USAGE = `usage: npm run demo-traffic -- [options]
  --demo FILE        the JSON printed by seed-demo (default: stdin when piped, else .demo/demo.json)
  --rate N           events per second (default 200)
  --duration S       seconds to send for (default 30)
  --base-url URL     the API to send to (default: base_url from the demo JSON)
  --batch N          events per request, about (default 50)
  --duplicates R     share of events sent again with the same event_id (default 0.01)
  --unknown-keys R   share of events with an API key nobody issued (default 0.005)
  --seed N           seed of the random choices, for a reproducible run`;

export interface DemoAgent {
  agent_id: string;
  customer_id?: string;
  api_key: string;
  client_id?: string;
}

export interface DemoApp {
  app_id: string;
  customer_id?: string;
  api_key: string;
}

export interface DemoSeed {
  base_url: string;
  ingest_token: string;
  tenant_id?: string;
  agents: DemoAgent[];
  apps: DemoApp[];
}

/** Reads seed-demo's output, refusing anything without what the traffic needs. */
export function parseDemo(text: string, source: string): DemoSeed {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CommandError(`${source} is not JSON (${(err as Error).message}); it should be what \`npm run seed-demo\` prints`);
  }
  const seed = value as Partial<DemoSeed>;
  const missing = (['base_url', 'ingest_token'] as const).filter((k) => typeof seed?.[k] !== 'string');
  if (!Array.isArray(seed?.agents) || seed.agents.some((a) => typeof a?.api_key !== 'string' || typeof a?.agent_id !== 'string')) {
    missing.push('agents[].api_key' as never);
  }
  if (missing.length) throw new CommandError(`${source} lacks ${missing.join(', ')}; it should be what \`npm run seed-demo\` prints`);
  if (seed.agents!.length === 0) throw new CommandError(`${source} has no agents`);
  return { ...(seed as DemoSeed), apps: Array.isArray(seed.apps) ? seed.apps : [] };
}

/** mulberry32: a small, seedable PRNG, so a run can be reproduced. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Tool {
  name: string;
  server: string;
  /** Median execution time, ms. */
  ms: number;
  /** Median input and output tokens. */
  tokens: [number, number];
}

/** MCP tools by popularity (most called first); the demo plan prices the first four by name. */
export const MCP_TOOLS: readonly Tool[] = [
  { name: 'read_database', server: 'mcp_warehouse', ms: 120, tokens: [600, 150] },
  { name: 'validate_credentials', server: 'mcp_identity', ms: 40, tokens: [120, 20] },
  { name: 'search_docs', server: 'mcp_knowledge', ms: 300, tokens: [900, 300] },
  { name: 'transform_schema', server: 'mcp_etl', ms: 2_500, tokens: [2_400, 1_200] },
  { name: 'execute_transform', server: 'mcp_etl', ms: 900, tokens: [1_500, 400] },
  { name: 'fetch_url', server: 'mcp_web', ms: 650, tokens: [1_200, 200] },
  { name: 'summarize', server: 'mcp_knowledge', ms: 1_800, tokens: [3_000, 600] },
  { name: 'send_email', server: 'mcp_mail', ms: 350, tokens: [300, 120] },
];

const AGENT_TOOLS: readonly Tool[] = [
  { name: 'plan_step', server: '', ms: 1_200, tokens: [1_800, 500] },
  { name: 'write_code', server: '', ms: 4_000, tokens: [4_000, 2_000] },
  { name: 'reflect', server: '', ms: 800, tokens: [1_000, 250] },
];

const ENDPOINTS: readonly Tool[] = [
  { name: 'POST /v1/search', server: '', ms: 80, tokens: [0, 0] },
  { name: 'GET /v1/documents', server: '', ms: 30, tokens: [0, 0] },
  { name: 'POST /v1/embeddings', server: '', ms: 150, tokens: [500, 0] },
  { name: 'POST /v1/chat', server: '', ms: 1_400, tokens: [1_100, 350] },
];

const MODELS = ['claude-sonnet', 'gpt-4o', 'llama-3-70b'] as const;
const AGENT_TYPES = ['CLAUDE', 'GPT', 'LANGCHAIN', 'CREWAI', 'AUTOGEN', 'CUSTOM'] as const;

/** Zipf-like weights: the k-th most popular gets 1/k^s. */
function zipfWeights(n: number, s = 1.1): number[] {
  return Array.from({ length: n }, (_, k) => 1 / (k + 1) ** s);
}

export type WireEvent = Record<string, unknown> & { event_id: string; event_type: string };

interface Session {
  id: string;
  agent: DemoAgent;
  agentIndex: number;
  byClientId: boolean;
  model: string;
  left: number;
  paused: boolean;
  lastEventId?: string;
}

export interface TrafficCounts {
  byType: Record<string, number>;
  sessionsStarted: number;
  sessionsCompleted: number;
  sessionsFailed: number;
  repeatedSameBatch: number;
  repeatedLater: number;
  unknownKey: number;
}

export interface TrafficOptions {
  random: () => number;
  /** Makes event ids unique to this run, so a second run is not all duplicates. */
  runId: string;
  now?: () => number;
  duplicateRate?: number;
  unknownKeyRate?: number;
  /** Sessions open at once (default: two per agent). */
  concurrentSessions?: number;
  /** Share of events that are API requests from apps (default 0.2 when there are apps). */
  apiShare?: number;
}

/** Generates the traffic, one batch at a time; keeps sessions open across batches. */
export class TrafficModel {
  readonly counts: TrafficCounts = {
    byType: {},
    sessionsStarted: 0,
    sessionsCompleted: 0,
    sessionsFailed: 0,
    repeatedSameBatch: 0,
    repeatedLater: 0,
    unknownKey: 0,
  };
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly sessions: Session[] = [];
  private readonly agentWeights: number[];
  private readonly recent: WireEvent[] = [];
  private seq = 0;

  constructor(
    private readonly seed: DemoSeed,
    private readonly options: TrafficOptions,
  ) {
    this.random = options.random;
    this.now = options.now ?? Date.now;
    this.agentWeights = zipfWeights(seed.agents.length, 0.8);
  }

  /** About `size` events: session calls, session ends, API requests, and planted repeats. */
  batch(size: number): WireEvent[] {
    const out: WireEvent[] = [];
    const dupRate = this.options.duplicateRate ?? 0.01;
    while (out.length < size) {
      const roll = this.random();
      if (roll < dupRate / 2 && out.length > 0) {
        out.push(this.pick(out)); // same request: ingest reports it as a duplicate
        this.counts.repeatedSameBatch++;
      } else if (roll < dupRate && this.recent.length > 0) {
        out.push(this.pick(this.recent)); // a later request: accepted, then billed once by the ledger
        this.counts.repeatedLater++;
      } else {
        out.push(this.fresh());
      }
    }
    for (const event of out) {
      this.recent.push(event);
      if (this.recent.length > 500) this.recent.shift();
    }
    return out;
  }

  /** The closing event of every session still open (completed or failed). */
  closeAll(): WireEvent[] {
    const out = this.sessions.map((s) => this.endSession(s));
    this.sessions.length = 0;
    return out;
  }

  openSessions(): number {
    return this.sessions.length;
  }

  private fresh(): WireEvent {
    const apiShare = this.seed.apps.length ? (this.options.apiShare ?? 0.2) : 0;
    if (this.random() < apiShare) return this.apiRequest();
    const wanted = this.options.concurrentSessions ?? Math.max(2, this.seed.agents.length * 2);
    if (this.sessions.length < wanted) this.sessions.push(this.startSession());
    const index = Math.floor(this.random() * this.sessions.length);
    const session = this.sessions[index];
    if (session.left <= 0) {
      this.sessions.splice(index, 1);
      return this.endSession(session);
    }
    return this.sessionEvent(session);
  }

  private pick<T>(items: readonly T[], weights?: readonly number[]): T {
    if (!weights) return items[Math.floor(this.random() * items.length)];
    const total = weights.reduce((a, b) => a + b, 0);
    let r = this.random() * total;
    for (let i = 0; i < items.length; i++) {
      r -= weights[i];
      if (r < 0) return items[i];
    }
    return items[items.length - 1];
  }

  /** A log-normal amount around `median` (spread ~x2.7 at one sigma). */
  private around(median: number, sigma = 0.8): number {
    const u = Math.max(1e-9, this.random());
    const v = this.random();
    const normal = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    return Math.max(0, Math.round(median * Math.exp(sigma * normal)));
  }

  private id(kind: string): string {
    return `${kind}_${this.options.runId}_${(this.seq++).toString(36)}`;
  }

  private common(type: string, credential: Record<string, string>, extra: Record<string, unknown> = {}): WireEvent {
    const event = {
      event_id: this.id('evt'),
      event_type: type,
      ...credential,
      recorded_timestamp: new Date(this.now() - Math.floor(this.random() * 400)).toISOString(),
      ...extra,
    };
    this.counts.byType[type] = (this.counts.byType[type] ?? 0) + 1;
    return event;
  }

  private credentialOf(agent: DemoAgent, byClientId: boolean): Record<string, string> {
    if (this.random() < (this.options.unknownKeyRate ?? 0.005)) {
      this.counts.unknownKey++;
      return { api_key: `sk_live_unknown${randomBytes(12).toString('hex')}` };
    }
    return byClientId && agent.client_id ? { client_id: agent.client_id } : { api_key: agent.api_key };
  }

  private startSession(): Session {
    const agentIndex = this.seed.agents.indexOf(this.pick(this.seed.agents, this.agentWeights));
    const agent = this.seed.agents[agentIndex];
    // Mostly short sessions, a long tail: 1 + geometric with mean ~10, at most 80 calls.
    const left = Math.min(80, 1 + Math.floor(Math.log(Math.max(1e-9, this.random())) / Math.log(0.9)));
    this.counts.sessionsStarted++;
    return {
      id: this.id('ses'),
      agent,
      agentIndex,
      // Every third agent authenticates with its client id instead of its API key.
      byClientId: agentIndex % 3 === 2,
      model: this.pick(MODELS, [5, 3, 2]),
      left,
      paused: false,
    };
  }

  private endSession(session: Session): WireEvent {
    const failed = this.random() < 0.15;
    if (failed) this.counts.sessionsFailed++;
    else this.counts.sessionsCompleted++;
    return this.common(failed ? 'session.failed' : 'session.completed', this.credentialOf(session.agent, session.byClientId), {
      session_id: session.id,
      agent_id: session.agent.agent_id,
      ...(failed ? { reason: this.pick(['agent crashed', 'budget exhausted', 'user cancelled', 'upstream timeout']) } : {}),
    });
  }

  private sessionEvent(session: Session): WireEvent {
    const credential = this.credentialOf(session.agent, session.byClientId);
    if (session.paused || (session.left > 2 && this.random() < 0.004)) {
      session.paused = !session.paused;
      return this.common(session.paused ? 'session.paused' : 'session.resumed', credential, {
        session_id: session.id,
        agent_id: session.agent.agent_id,
        ...(session.paused ? { reason: 'waiting for human approval' } : {}),
      });
    }
    session.left--;
    const mcp = this.random() < 0.75;
    const tool = mcp ? this.pick(MCP_TOOLS, zipfWeights(MCP_TOOLS.length)) : this.pick(AGENT_TOOLS);
    const parallel = session.lastEventId !== undefined && this.random() < 0.1;
    const event = this.common(mcp ? 'mcp.tool_invoked' : 'agent.tool_invoked', credential, {
      agent_id: session.agent.agent_id,
      agent_type: AGENT_TYPES[session.agentIndex % AGENT_TYPES.length],
      session_id: session.id,
      tool_name: tool.name,
      ...(mcp ? { mcp_server_id: tool.server } : {}),
      model: session.model,
      ...this.outcome(tool),
      is_parallel_call: parallel,
      ...(parallel ? { parent_tool_invocation_id: session.lastEventId } : {}),
      metadata: { demo: true, step: this.seq },
    });
    session.lastEventId = event.event_id;
    return event;
  }

  /** Duration, tokens and status of one call: mostly fine, some failures, timeouts and rate limits, rare long runs. */
  private outcome(tool: Tool): Record<string, unknown> {
    const roll = this.random();
    const input = this.around(tool.tokens[0]);
    const output = this.around(tool.tokens[1]);
    if (roll < 0.05) {
      return {
        execution_status: 'FAILED',
        execution_duration_ms: this.around(tool.ms / 2),
        input_tokens: input,
        output_tokens: 0,
        error_type: this.pick(['ToolError', 'ValidationError', 'UpstreamError']),
        error_message: 'the tool returned an error',
      };
    }
    if (roll < 0.075) return { execution_status: 'TIMEOUT', execution_duration_ms: 30_000, input_tokens: input, output_tokens: 0, error_type: 'Timeout' };
    if (roll < 0.09) {
      return { execution_status: 'RATE_LIMITED', execution_duration_ms: this.around(20), input_tokens: 0, output_tokens: 0, retry_count: 1 + Math.floor(this.random() * 3) };
    }
    // About one call in a hundred runs for minutes (the plan's longer duration buckets).
    const ms = this.random() < 0.01 ? 60_000 + Math.floor(this.random() * 300_000) : this.around(tool.ms);
    return { execution_status: 'SUCCESS', execution_duration_ms: ms, input_tokens: input, output_tokens: output, retry_count: this.random() < 0.05 ? 1 : 0 };
  }

  private apiRequest(): WireEvent {
    const app = this.pick(this.seed.apps, zipfWeights(this.seed.apps.length, 0.7));
    const endpoint = this.pick(ENDPOINTS, zipfWeights(ENDPOINTS.length));
    const roll = this.random();
    const status = roll < 0.02 ? 500 : roll < 0.035 ? 429 : roll < 0.06 ? 400 : 200;
    const ok = status === 200;
    const unknown = this.random() < (this.options.unknownKeyRate ?? 0.005);
    if (unknown) this.counts.unknownKey++;
    return this.common('api.request', { api_key: unknown ? `sk_live_unknown${randomBytes(12).toString('hex')}` : app.api_key }, {
      tool_name: endpoint.name,
      http_status: status,
      execution_status: ok ? 'SUCCESS' : status === 429 ? 'RATE_LIMITED' : 'FAILED',
      execution_duration_ms: this.around(endpoint.ms, 0.6),
      input_tokens: ok ? this.around(endpoint.tokens[0]) : 0,
      output_tokens: ok ? this.around(endpoint.tokens[1]) : 0,
      ...(endpoint.tokens[0] ? { model: 'claude-sonnet' } : {}),
      ...(ok ? {} : { error_type: `HTTP ${status}` }),
    });
  }
}

export interface SendTotals {
  sent: number;
  accepted: number;
  rejected: number;
  duplicates: number;
  requests: number;
  retried: number;
  throttled: number;
  failed: number;
}

const emptyTotals = (): SendTotals => ({ sent: 0, accepted: 0, rejected: 0, duplicates: 0, requests: 0, retried: 0, throttled: 0, failed: 0 });

function addTotals(into: SendTotals, from: Partial<SendTotals>): void {
  for (const [k, v] of Object.entries(from)) into[k as keyof SendTotals] += v ?? 0;
}

export function formatSecondLine(second: number, s: SendTotals, total: SendTotals): string {
  const extra = [s.retried ? `retried ${s.retried} (429/503)` : '', s.failed ? `failed requests ${s.failed}` : ''].filter(Boolean).join('  ');
  return `[${String(second).padStart(3)}s] sent ${String(s.sent).padStart(5)}  accepted ${String(s.accepted).padStart(5)}  rejected ${s.rejected}  duplicates ${s.duplicates}${extra ? '  ' + extra : ''}  (total accepted ${total.accepted})`;
}

class Sender {
  readonly totals = emptyTotals();
  private window = emptyTotals();
  private pausedUntil = 0;
  /** When the API last answered; unreachable for 15 s is fatal (a supervisor restart takes less). */
  private lastAnswerAt = Date.now();
  fatal?: string;
  private lastError?: string;

  constructor(
    private readonly url: string,
    private readonly token: string,
  ) {}

  takeWindow(): SendTotals {
    const w = this.window;
    this.window = emptyTotals();
    return w;
  }

  private count(delta: Partial<SendTotals>): void {
    addTotals(this.totals, delta);
    addTotals(this.window, delta);
  }

  /** Posts one batch, retrying it (the same body) after 429/503 and network errors. */
  async send(events: WireEvent[]): Promise<void> {
    const body = JSON.stringify({ events });
    while (!this.fatal) {
      const wait = this.pausedUntil - Date.now();
      if (wait > 0) await sleep(wait);
      let response: Response;
      try {
        response = await fetch(this.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${this.token}` },
          body,
          signal: AbortSignal.timeout(30_000),
        });
      } catch (err) {
        this.note(`cannot reach ${this.url}: ${(err as Error).cause ?? (err as Error).message}`);
        if (Date.now() - this.lastAnswerAt > 15_000) this.fatal = `giving up after 15 s without an answer: ${this.lastError}`;
        this.count({ retried: 1 });
        this.pausedUntil = Math.max(this.pausedUntil, Date.now() + 500);
        continue;
      }
      this.lastAnswerAt = Date.now();
      if (response.status === 429 || response.status === 503) {
        await response.body?.cancel();
        this.count({ retried: 1, throttled: 1 });
        this.pausedUntil = Math.max(this.pausedUntil, Date.now() + (retryAfterOf(response.headers) ?? 1000));
        continue;
      }
      const text = await response.text();
      this.count({ requests: 1, sent: events.length });
      if (response.status !== 202) {
        this.count({ failed: 1 });
        this.note(`HTTP ${response.status}: ${text.slice(0, 300)}`);
        if (response.status === 401 || response.status === 403 || response.status === 404) this.fatal = `the API refused the request: ${this.lastError}`;
        return;
      }
      const reply = JSON.parse(text) as { accepted: number; duplicates: unknown[]; rejected: { errors?: unknown }[] };
      this.count({ accepted: reply.accepted, duplicates: reply.duplicates.length, rejected: reply.rejected.length });
      if (reply.rejected.length) this.note(`rejected by ingest: ${JSON.stringify(reply.rejected[0]).slice(0, 300)}`);
      return;
    }
  }

  private note(message: string): void {
    if (message !== this.lastError) console.error(`  ${message}`);
    this.lastError = message;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function loadSeed(path: string | undefined): Promise<DemoSeed> {
  if (path && path !== '-') {
    if (!existsSync(path)) throw new CommandError(`${path} does not exist; create it with: npm run seed-demo > ${path}`);
    return parseDemo(readFileSync(path, 'utf8'), path);
  }
  if (path === '-' || !process.stdin.isTTY) return parseDemo(await readStdin(), 'stdin');
  if (existsSync('.demo/demo.json')) return parseDemo(readFileSync('.demo/demo.json', 'utf8'), '.demo/demo.json');
  throw new UsageError('no demo JSON: pass --demo FILE or pipe `npm run seed-demo` in');
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, {
    booleans: ['help'],
    values: ['rate', 'duration', 'demo', 'base-url', 'batch', 'duplicates', 'unknown-keys', 'seed'],
  });
  if (args.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  if (args.positional.length) throw new UsageError(`unexpected argument ${args.positional[0]}`);
  const rate = numberFlag(args, 'rate', 200, { min: 1, decimal: true });
  const duration = numberFlag(args, 'duration', 30, { min: 1, decimal: true });
  const batchSize = numberFlag(args, 'batch', 50, { min: 1 });
  const duplicateRate = numberFlag(args, 'duplicates', 0.01, { decimal: true });
  const unknownKeyRate = numberFlag(args, 'unknown-keys', 0.005, { decimal: true });
  if (duplicateRate > 0.5 || unknownKeyRate > 1) throw new UsageError('--duplicates is at most 0.5 and --unknown-keys at most 1');
  const seedText = stringFlag(args, 'seed');
  const seedNumber = seedText === undefined ? randomBytes(4).readUInt32LE() : numberFlag(args, 'seed', 0);
  const demo = await loadSeed(stringFlag(args, 'demo'));
  const baseUrl = (stringFlag(args, 'base-url') ?? demo.base_url).replace(/\/+$/, '');

  const model = new TrafficModel(demo, {
    random: seededRandom(seedNumber),
    runId: randomBytes(4).toString('hex'),
    duplicateRate,
    unknownKeyRate,
  });
  const sender = new Sender(`${baseUrl}/v1/events`, demo.ingest_token);
  console.log(
    `sending ~${rate} events/s for ${duration} s to ${baseUrl}/v1/events (${demo.agents.length} agents, ${demo.apps.length} apps, seed ${seedNumber})`,
  );

  const inFlight = new Set<Promise<void>>();
  const launch = (events: WireEvent[]) => {
    const p = sender.send(events).finally(() => inFlight.delete(p));
    inFlight.add(p);
  };
  const started = Date.now();
  let generated = 0;
  let lastLaunch = 0;
  let second = 0;
  let stop = false;
  process.once('SIGINT', () => (stop = true));
  const ticker = setInterval(() => console.log(formatSecondLine(++second, sender.takeWindow(), sender.totals)), 1000);
  try {
    while (!stop && !sender.fatal && Date.now() - started < duration * 1000) {
      const due = Math.floor((rate * (Date.now() - started)) / 1000) - generated;
      // Full batches as soon as they are due; a partial one at least every 250 ms (low rates).
      const size = Math.round(batchSize * (0.8 + 0.4 * Math.random()));
      if (inFlight.size < 8 && (due >= size || (due > 0 && Date.now() - lastLaunch >= 250))) {
        const events = model.batch(Math.min(due, size));
        generated += events.length;
        lastLaunch = Date.now();
        launch(events);
        continue;
      }
      await sleep(inFlight.size >= 8 ? 5 : 10);
    }
    // End every open session, so the demo's sessions finish completed or failed.
    const closing = model.closeAll();
    for (let i = 0; i < closing.length && !sender.fatal; i += batchSize) launch(closing.slice(i, i + batchSize));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(inFlight), new Promise((resolve) => (timer = setTimeout(resolve, 60_000)))]);
    clearTimeout(timer);
  } finally {
    clearInterval(ticker);
  }
  const window = sender.takeWindow();
  if (window.sent || window.retried) console.log(formatSecondLine(second + 1, window, sender.totals));

  const t = sender.totals;
  const seconds = (Date.now() - started) / 1000;
  const c = model.counts;
  const types = Object.entries(c.byType)
    .sort((a, b) => b[1] - a[1])
    .map(([type, n]) => `${type} ${n}`)
    .join(', ');
  console.log(
    [
      '',
      `summary: ${t.sent} events in ${t.requests} requests over ${seconds.toFixed(1)} s (${(t.sent / seconds).toFixed(1)} events/s)`,
      `  accepted ${t.accepted}, duplicates ${t.duplicates} (repeated in the same request), rejected by ingest ${t.rejected}`,
      `  requests retried after 429/503 or a network error: ${t.retried}; failed requests: ${t.failed}`,
      `  by type: ${types}`,
      `  sessions: ${c.sessionsStarted} started, ${c.sessionsCompleted} completed, ${c.sessionsFailed} failed`,
      `  planted: ${c.repeatedSameBatch + c.repeatedLater} repeated event_ids (${c.repeatedSameBatch} in the same request, ${c.repeatedLater} in a later one: billed once),`,
      `           ${c.unknownKey} events with an unknown API key (the pipeline rejects them: npm run dlq -- rejected list)`,
    ].join('\n'),
  );
  if (sender.fatal) {
    console.error(`error: ${sender.fatal}`);
    return 1;
  }
  return 0;
}

if (isMain(import.meta.url)) await runCli(USAGE, main);
