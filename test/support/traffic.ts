import { seededRandom } from '../../ops/demo-traffic.js';
import type { SeededTenant } from '../../ops/seed.js';

const TOOLS = ['transform_schema', 'read_database', 'validate_credentials', 'search_docs', 'execute_transform'];

/**
 * A day of traffic for a seeded tenant, as ingest receives it: every agent and app runs sessions
 * of a few calls spread over the last `hours` (never before the start of the current month, so
 * that "this month" holds all of it); most sessions end, each agent's last one stays open with
 * an event in the last minute; `heavy` agents also make `heavyCalls` expensive calls within the
 * last minute (today), enough to cross a daily cap of a few units.
 */
export function consoleTraffic(
  tenant: SeededTenant,
  options: { now?: number; hours?: number; seed?: number; heavy?: string[]; heavyCalls?: number } = {},
): Record<string, unknown>[] {
  const now = options.now ?? Date.now();
  const rand = seededRandom(options.seed ?? 1207);
  const monthStart = Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth(), 1);
  const dayStart = Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth(), new Date(now).getUTCDate());
  const earliest = Math.max(monthStart + 60_000, now - (options.hours ?? 18) * 3_600_000);
  const recent = (offsetMs: number) => new Date(Math.max(dayStart + 1000, now - offsetMs)).toISOString();
  const events: Record<string, unknown>[] = [];
  let n = 0;
  const call = (apiKey: string, sessionId: string, at: string, overrides: Record<string, unknown> = {}) => {
    const roll = rand();
    events.push({
      event_id: `con_${options.seed ?? 1207}_${n++}`,
      event_type: 'mcp.tool_invoked',
      api_key: apiKey,
      session_id: sessionId,
      tool_name: TOOLS[Math.floor(rand() * rand() * TOOLS.length)],
      input_tokens: Math.floor(rand() * 4000),
      output_tokens: Math.floor(rand() * 600),
      execution_duration_ms: roll < 0.7 ? Math.floor(rand() * 50_000) : roll < 0.95 ? 61_000 + Math.floor(rand() * 200_000) : 400_000,
      execution_status: rand() < 0.06 ? 'FAILED' : 'SUCCESS',
      ...(rand() < 0.5 ? { model: 'claude-sonnet' } : {}),
      recorded_timestamp: at,
      ...overrides,
    });
  };
  const actors = tenant.customers.flatMap((c) => c.teams.flatMap((t) => [...t.agents.map((a) => ({ id: a.id, key: a.apiKey, agent: true })), ...t.apps.map((a) => ({ id: a.id, key: a.apiKey, agent: false }))]));
  for (const actor of actors) {
    const sessions = 3 + Math.floor(rand() * 4);
    for (let s = 0; s < sessions; s++) {
      const sessionId = `cs_${actor.id}_${s}`;
      const last = s === sessions - 1;
      const start = earliest + rand() * (now - earliest - 600_000);
      const calls = 2 + Math.floor(rand() * 8);
      for (let i = 0; i < calls; i++) {
        const at = last && i === calls - 1 ? recent(30_000) : new Date(start + i * 20_000).toISOString();
        call(actor.key, sessionId, at, actor.agent ? {} : { event_type: 'api.request' });
      }
      if (!last && actor.agent) {
        events.push({
          event_id: `con_${options.seed ?? 1207}_${n++}`,
          event_type: rand() < 0.85 ? 'session.completed' : 'session.failed',
          api_key: actor.key,
          session_id: sessionId,
          recorded_timestamp: new Date(start + calls * 20_000).toISOString(),
        });
      }
    }
  }
  for (const agentId of options.heavy ?? []) {
    const agent = tenant.customers.flatMap((c) => c.teams.flatMap((t) => t.agents)).find((a) => a.id === agentId)!;
    for (let i = 0; i < (options.heavyCalls ?? 30); i++) {
      call(agent.apiKey, `cs_${agentId}_heavy`, recent(60_000 - i * 1000), { tool_name: 'transform_schema', execution_duration_ms: 400_000, execution_status: 'SUCCESS' });
    }
  }
  return events;
}

/** Sends events to POST /v1/events in batches, waiting out backpressure; fails on anything but all accepted. */
export async function sendEvents(baseUrl: string, ingestToken: string, events: Record<string, unknown>[], batch = 200): Promise<void> {
  for (let i = 0; i < events.length; i += batch) {
    for (;;) {
      const response = await fetch(`${baseUrl}/v1/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ingestToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(events.slice(i, i + batch)),
      });
      if (response.status === 429 || response.status === 503) {
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      const reply = (await response.json()) as { accepted?: number; rejected?: unknown[] };
      if (response.status !== 202 || (reply.rejected ?? []).length) throw new Error(`ingest answered ${response.status}: ${JSON.stringify(reply).slice(0, 500)}`);
      break;
    }
  }
}
