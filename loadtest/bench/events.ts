/**
 * The benchmark's event mix: deterministic for a seed, so the pipeline run and the baseline
 * run see the same events. The four product kinds (MCP server and managed agents send tool
 * calls, standard and agentic API apps send requests), customers of skewed size, sessions of
 * varying length that end with a session event, tool popularity following a Zipf law (a few
 * tools take most calls), some failed, timed-out and rate-limited calls, parallel calls, and
 * about 1% of events sent again with the same event_id (sometimes in the same request,
 * usually in a later one).
 */

import { seededRandom } from '../../ops/demo-traffic.js';

export type ProductKind = 'standard_api' | 'agentic_api' | 'managed_agent' | 'mcp_server';

export interface BenchActor {
  kind: 'agent' | 'app';
  product: ProductKind;
  customer: number;
  apiKey: string;
  /** Agents also hold client credentials; some of their events identify by client_id. */
  clientId?: string;
}

/** What the orchestrator hands to each load generator. */
export interface BenchWorld {
  tenantId: string;
  ingestToken: string;
  actors: BenchActor[];
}

export type WireEventJson = Record<string, unknown> & { event_id: string };

export interface GeneratedBatch {
  events: WireEventJson[];
  /** The sequence number of each event (a repeat carries its original's). */
  seqs: number[];
}

/** Samples an index 0..n-1 with weight 1 / (i + 1)^s. */
export class Zipf {
  private readonly cumulative: Float64Array;

  constructor(n: number, s: number) {
    this.cumulative = new Float64Array(n);
    let total = 0;
    for (let i = 0; i < n; i++) this.cumulative[i] = total += 1 / (i + 1) ** s;
  }

  /** The share of the first k items. */
  share(k: number): number {
    return this.cumulative[Math.min(k, this.cumulative.length) - 1] / this.cumulative[this.cumulative.length - 1];
  }

  sample(random: () => number): number {
    const target = random() * this.cumulative[this.cumulative.length - 1];
    let lo = 0;
    let hi = this.cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.cumulative[mid] < target) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

export const MCP_TOOLS = [
  'read_database', 'transform_schema', 'search_docs', 'validate_credentials', 'execute_transform', 'fetch_url',
  'list_files', 'read_file', 'write_file', 'run_query', 'send_email', 'create_ticket', 'summarize', 'translate',
  'geocode', 'render_chart', 'post_message', 'upload_blob', 'resize_image', 'export_csv',
];
const AGENT_TOOLS = [
  'web_search', 'code_interpreter', 'read_database', 'call_llm', 'browse_page', 'read_file', 'write_file',
  'run_tests', 'open_pull_request', 'plan_task', 'memory_lookup', 'image_generation',
];
export const API_ENDPOINTS = [
  'POST /v1/search', 'GET /v1/items', 'POST /v1/completions', 'GET /v1/items/{id}', 'POST /v1/embeddings',
  'POST /v1/classify', 'GET /v1/reports', 'POST /v1/uploads', 'DELETE /v1/items/{id}', 'POST /v1/batch',
];
export const MODELS = ['claude-sonnet', 'claude-haiku', 'gpt-4o', 'gpt-4o-mini', 'llama-3-70b'];
const AGENT_TYPES = ['CLAUDE', 'GPT', 'LANGCHAIN', 'CREWAI', 'AUTOGEN', 'CUSTOM'];
const FAILURES = [
  { status: 'FAILED', type: 'UpstreamError', message: 'upstream returned 502', http: 502 },
  { status: 'FAILED', type: 'ValidationError', message: 'argument "query" is required', http: 400 },
  { status: 'TIMEOUT', type: 'Timeout', message: 'no reply within 30 s', http: 504 },
  { status: 'RATE_LIMITED', type: 'RateLimited', message: 'provider quota exceeded', http: 429 },
] as const;

export const MIX = {
  /** Share of events sent again with an event_id already sent. */
  repeatShare: 0.01,
  /** Of those, the share repeated inside the same request (the rest in a later one). */
  repeatSameBatch: 0.2,
  failedShare: 0.04,
  clientIdShare: 0.1,
  parallelShare: 0.1,
  /** Median and spread (log-normal sigma) of session length in tool calls. */
  sessionMedian: 12,
  sessionSigma: 1.1,
  toolZipf: 1.2,
  customerZipf: 0.9,
};

interface Session {
  id: string;
  left: number;
  lastEventId?: string;
}

export class EventMix {
  private readonly random: () => number;
  private readonly actorPick: { cumulative: Float64Array; total: number };
  private readonly sessions = new Map<number, Session>();
  private readonly toolZipf = new Zipf(MCP_TOOLS.length, MIX.toolZipf);
  private readonly agentToolZipf = new Zipf(AGENT_TOOLS.length, MIX.toolZipf);
  private readonly endpointZipf = new Zipf(API_ENDPOINTS.length, MIX.toolZipf);
  private readonly recent: { event: WireEventJson; seq: number }[] = [];
  private recentAt = 0;
  private sessionCount = 0;
  /** The next sequence number: also the number of distinct events made so far. */
  nextSeq = 0;

  constructor(
    private readonly actors: BenchActor[],
    private readonly idPrefix: string,
    seed: number,
  ) {
    this.random = seededRandom(seed);
    // Customers differ in size (Zipf over customer index); actors of a customer share its weight.
    const customers = Math.max(...actors.map((a) => a.customer)) + 1;
    const customerZipf = new Zipf(customers, MIX.customerZipf);
    const perCustomer = new Array<number>(customers).fill(0);
    for (const actor of actors) perCustomer[actor.customer]++;
    const cumulative = new Float64Array(actors.length);
    let total = 0;
    actors.forEach((actor, i) => {
      const customerWeight = customerZipf.share(actor.customer + 1) - (actor.customer ? customerZipf.share(actor.customer) : 0);
      cumulative[i] = total += customerWeight / perCustomer[actor.customer];
    });
    this.actorPick = { cumulative, total };
  }

  private pickActor(): number {
    const target = this.random() * this.actorPick.total;
    const c = this.actorPick.cumulative;
    let lo = 0;
    let hi = c.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (c[mid] < target) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private normal(): number {
    const u = 1 - this.random();
    const v = this.random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  private logNormal(median: number, sigma: number): number {
    return median * Math.exp(sigma * this.normal());
  }

  private remember(event: WireEventJson, seq: number): void {
    if (this.recent.length < 2000) this.recent.push({ event, seq });
    else this.recent[this.recentAt++ % 2000] = { event, seq };
  }

  /** One batch of `size` events, recorded at about `now` (epoch ms). */
  batch(size: number, now: number): GeneratedBatch {
    const events: WireEventJson[] = [];
    const seqs: number[] = [];
    const stamp = new Date(now).toISOString();
    for (let i = 0; i < size; i++) {
      if (this.random() < MIX.repeatShare && (this.recent.length > 0 || events.length > 0)) {
        const sameBatch = events.length > 0 && (this.random() < MIX.repeatSameBatch || this.recent.length === 0);
        if (sameBatch) {
          const j = Math.floor(this.random() * events.length);
          events.push(events[j]);
          seqs.push(seqs[j]);
        } else {
          const old = this.recent[Math.floor(this.random() * this.recent.length)];
          events.push(old.event);
          seqs.push(old.seq);
        }
        continue;
      }
      const seq = this.nextSeq++;
      const event = this.next(seq, stamp);
      events.push(event);
      seqs.push(seq);
    }
    // Remembered only after the batch is made, so a "later" repeat lands in another request.
    for (let i = 0; i < events.length; i++) this.remember(events[i], seqs[i]);
    return { events, seqs };
  }

  /**
   * Batches with one event per credential (every API key, every client_id): what a system that
   * has been running a while has already seen, so its caches are warm when the clock starts.
   */
  prime(size: number, now: number): GeneratedBatch[] {
    const stamp = new Date(now).toISOString();
    const all: { event: WireEventJson; seq: number }[] = [];
    this.actors.forEach((actor, index) => {
      for (const viaClient of actor.clientId ? [false, true] : [false]) {
        const seq = this.nextSeq++;
        all.push({ event: this.next(seq, stamp, { index, viaClient }), seq });
      }
    });
    const batches: GeneratedBatch[] = [];
    for (let i = 0; i < all.length; i += size) {
      const chunk = all.slice(i, i + size);
      batches.push({ events: chunk.map((c) => c.event), seqs: chunk.map((c) => c.seq) });
    }
    return batches;
  }

  private next(seq: number, recorded: string, forced?: { index: number; viaClient: boolean }): WireEventJson {
    const index = forced?.index ?? this.pickActor();
    const actor = this.actors[index];
    const eventId = `${this.idPrefix}-${seq}`;
    const base: WireEventJson = { event_id: eventId, recorded_timestamp: recorded };
    const viaClient = forced ? forced.viaClient : actor.kind === 'agent' && !!actor.clientId && this.random() < MIX.clientIdShare;
    if (viaClient) base.client_id = actor.clientId;
    else base.api_key = actor.apiKey;

    if (actor.kind === 'app') return this.apiRequest(base, actor);

    let session = this.sessions.get(index);
    if (!session) {
      const length = Math.max(1, Math.min(1000, Math.round(this.logNormal(MIX.sessionMedian, MIX.sessionSigma))));
      session = { id: `${this.idPrefix}-s${this.sessionCount++}`, left: length };
      this.sessions.set(index, session);
    }
    base.session_id = session.id;
    base.agent_type = AGENT_TYPES[index % AGENT_TYPES.length];
    if (session.left === 0) {
      // The session's last word: completed, or (5%) failed.
      this.sessions.delete(index);
      base.event_type = this.random() < 0.95 ? 'session.completed' : 'session.failed';
      if (base.event_type === 'session.failed') base.reason = 'agent gave up after repeated tool errors';
      return base;
    }
    session.left--;
    const mcp = actor.product === 'mcp_server';
    base.event_type = mcp ? 'mcp.tool_invoked' : 'agent.tool_invoked';
    base.tool_name = mcp ? MCP_TOOLS[this.toolZipf.sample(this.random)] : AGENT_TOOLS[this.agentToolZipf.sample(this.random)];
    if (mcp) base.mcp_server_id = `mcp-${actor.customer % 7}`;
    this.invocation(base, !mcp || this.random() < 0.3);
    if (session.lastEventId && this.random() < MIX.parallelShare) {
      base.is_parallel_call = true;
      base.parent_tool_invocation_id = session.lastEventId;
    }
    session.lastEventId = eventId;
    return base;
  }

  private apiRequest(base: WireEventJson, actor: BenchActor): WireEventJson {
    base.event_type = 'api.request';
    base.tool_name = API_ENDPOINTS[this.endpointZipf.sample(this.random)];
    const failure = this.invocation(base, actor.product === 'agentic_api');
    base.http_status = failure ? failure.http : this.random() < 0.97 ? 200 : 404;
    return base;
  }

  /** Fills the invocation fields; returns the failure when the call failed. */
  private invocation(event: WireEventJson, tokens: boolean): (typeof FAILURES)[number] | undefined {
    const failed = this.random() < MIX.failedShare;
    const failure = failed ? FAILURES[Math.floor(this.random() * FAILURES.length)] : undefined;
    event.execution_duration_ms = failure?.status === 'TIMEOUT' ? 30_000 : Math.round(this.logNormal(250, 1.2));
    event.execution_status = failure?.status ?? 'SUCCESS';
    if (failure) {
      event.error_type = failure.type;
      event.error_message = failure.message;
      event.retry_count = Math.floor(this.random() * 3);
    }
    if (tokens) {
      event.model = MODELS[Math.floor(this.random() * this.random() * MODELS.length)];
      event.input_tokens = Math.round(this.logNormal(1200, 1));
      event.output_tokens = failure ? 0 : Math.round(this.logNormal(300, 1));
    }
    if (this.random() < 0.05) event.metadata = { region: 'eu-west-1', sdk: 'python/1.4.2' };
    return failure;
  }
}
