// A small event generator for the k6 scripts: the four product kinds (MCP server and managed
// agents send tool calls, standard and agentic API apps send requests), sessions of varying
// length ending with a session event, Zipf-skewed tool popularity (a few tools take most
// calls), some failed calls, and a share of events sent again with the same event_id.
// No Node APIs: it runs inside k6 (goja/sobek).

interface Actor {
  kind: 'agent' | 'app';
  apiKey: string;
  clientId?: string;
  /** Agents alternate between MCP server and managed-agent products; apps between standard and agentic API. */
  flavour: number;
}

export interface World {
  baseUrl: string;
  ingestToken: string;
  actors: Actor[];
}

export type WireEvent = Record<string, unknown> & { event_id: string };

interface SeedDemoOutput {
  base_url?: string;
  ingest_token?: string;
  agents?: { api_key: string; client_id?: string }[];
  apps?: { api_key: string }[];
}

/**
 * The tenant to load: the JSON `npm run seed-demo` prints (file WORLD, default ./world.json next
 * to the script), or INGEST_TOKEN + API_KEYS (comma-separated) + BASE_URL from the environment.
 * Call it in the init context (k6's open() is only available there).
 */
export function loadWorld(): World {
  const env = __ENV;
  if (env.INGEST_TOKEN && env.API_KEYS) {
    const keys = env.API_KEYS.split(',').filter(Boolean);
    return {
      baseUrl: env.BASE_URL ?? 'http://127.0.0.1:8080',
      ingestToken: env.INGEST_TOKEN,
      actors: keys.map((apiKey, i) => ({ kind: 'agent', apiKey, flavour: i })),
    };
  }
  const seed = JSON.parse(open(env.WORLD ?? './world.json')) as SeedDemoOutput;
  if (!seed.ingest_token || !seed.agents?.length) {
    throw new Error('WORLD must be the JSON `npm run seed-demo` prints (ingest_token, agents[].api_key), or set INGEST_TOKEN and API_KEYS');
  }
  return {
    baseUrl: env.BASE_URL ?? seed.base_url ?? 'http://127.0.0.1:8080',
    ingestToken: seed.ingest_token,
    actors: [
      ...seed.agents.map((a, i): Actor => ({ kind: 'agent', apiKey: a.api_key, clientId: a.client_id, flavour: i })),
      ...(seed.apps ?? []).map((a, i): Actor => ({ kind: 'app', apiKey: a.api_key, flavour: i })),
    ],
  };
}

const MCP_TOOLS = ['read_database', 'transform_schema', 'search_docs', 'validate_credentials', 'execute_transform', 'fetch_url', 'list_files', 'write_file', 'run_query', 'send_email'];
const AGENT_TOOLS = ['web_search', 'code_interpreter', 'read_database', 'call_llm', 'browse_page', 'read_file', 'plan_task', 'memory_lookup'];
const ENDPOINTS = ['POST /v1/search', 'GET /v1/items', 'POST /v1/completions', 'GET /v1/items/{id}', 'POST /v1/embeddings', 'POST /v1/classify'];
const MODELS = ['claude-sonnet', 'claude-haiku', 'gpt-4o', 'gpt-4o-mini'];

/** Index 0..n-1 with weight 1/(i+1)^s: a few items take most draws. */
function zipf(n: number, s = 1.2): () => number {
  const cumulative: number[] = [];
  let total = 0;
  for (let i = 0; i < n; i++) cumulative.push((total += 1 / (i + 1) ** s));
  return () => {
    const target = Math.random() * total;
    let i = 0;
    while (cumulative[i] < target) i++;
    return i;
  };
}

const pickMcp = zipf(MCP_TOOLS.length);
const pickAgentTool = zipf(AGENT_TOOLS.length);
const pickEndpoint = zipf(ENDPOINTS.length);

function logNormal(median: number, sigma: number): number {
  const u = 1 - Math.random();
  const v = Math.random();
  return median * Math.exp(sigma * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v));
}

export interface MixOptions {
  /** Share of events re-sent with an event_id already sent (default 0.01). */
  repeatShare: number;
  /** Share of calls that fail, time out or are rate limited (default 0.04). */
  failedShare: number;
}

/** Makes batches for one VU; event ids are unique per run (runId), VU and sequence. */
export class EventMix {
  private seq = 0;
  private readonly sessions = new Map<number, { id: string; left: number }>();
  private readonly recent: WireEvent[] = [];

  constructor(
    private readonly world: World,
    private readonly prefix: string,
    private readonly options: MixOptions = { repeatShare: 0.01, failedShare: 0.04 },
  ) {}

  batch(size: number): WireEvent[] {
    const events: WireEvent[] = [];
    const now = new Date().toISOString();
    for (let i = 0; i < size; i++) {
      if (this.recent.length && Math.random() < this.options.repeatShare) {
        events.push(this.recent[Math.floor(Math.random() * this.recent.length)]);
        continue;
      }
      const event = this.next(now);
      events.push(event);
      if (this.recent.length < 500) this.recent.push(event);
      else this.recent[this.seq % 500] = event;
    }
    return events;
  }

  private next(recorded: string): WireEvent {
    const index = Math.floor(Math.random() * this.world.actors.length);
    const actor = this.world.actors[index];
    const event: WireEvent = { event_id: `${this.prefix}-${this.seq++}`, recorded_timestamp: recorded };
    if (actor.clientId && Math.random() < 0.1) event.client_id = actor.clientId;
    else event.api_key = actor.apiKey;

    if (actor.kind === 'app') {
      event.event_type = 'api.request';
      event.tool_name = ENDPOINTS[pickEndpoint()];
      const failed = this.invocation(event, actor.flavour % 2 === 1);
      event.http_status = failed ? 502 : 200;
      return event;
    }
    let session = this.sessions.get(index);
    if (!session) {
      session = { id: `${this.prefix}-s${this.seq}`, left: Math.max(1, Math.min(500, Math.round(logNormal(12, 1.1)))) };
      this.sessions.set(index, session);
    }
    event.session_id = session.id;
    if (session.left-- === 0) {
      this.sessions.delete(index);
      event.event_type = 'session.completed';
      return event;
    }
    const mcp = actor.flavour % 2 === 0;
    event.event_type = mcp ? 'mcp.tool_invoked' : 'agent.tool_invoked';
    event.tool_name = mcp ? MCP_TOOLS[pickMcp()] : AGENT_TOOLS[pickAgentTool()];
    if (mcp) event.mcp_server_id = 'mcp-main';
    this.invocation(event, !mcp);
    return event;
  }

  private invocation(event: WireEvent, tokens: boolean): boolean {
    const failed = Math.random() < this.options.failedShare;
    event.execution_duration_ms = Math.round(logNormal(250, 1.2));
    event.execution_status = failed ? (Math.random() < 0.5 ? 'FAILED' : 'TIMEOUT') : 'SUCCESS';
    if (failed) {
      event.error_type = 'UpstreamError';
      event.error_message = 'upstream returned 502';
    }
    if (tokens) {
      event.model = MODELS[Math.floor(Math.random() * MODELS.length)];
      event.input_tokens = Math.round(logNormal(1200, 1));
      event.output_tokens = failed ? 0 : Math.round(logNormal(300, 1));
    }
    return failed;
  }
}
