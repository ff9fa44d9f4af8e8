import type postgres from 'postgres';
import type { Sql } from '../../pipeline/postgres.js';
import type { LedgeredEvent } from '../../domain/flow.js';
import { claimBlocks } from '../../store/applied.js';
import { advanceSession, type SessionState, type SessionStatus } from './lifecycle.js';

/**
 * Applies ledgered events to mcp_sessions, exactly once per (tenant_id, event_id), in one
 * transaction per batch:
 *
 * 1. insert the batch's event ids into session_applied_events (ON CONFLICT DO NOTHING
 *    RETURNING): only the ids returned are new; a redelivered event returns nothing and moves
 *    nothing;
 * 2. lock the sessions those events touch (FOR UPDATE, in key order, so concurrent consumers
 *    cannot deadlock on them), advance each in memory with the lifecycle rules;
 * 3. write them back: UPDATE the rows that existed, INSERT the new ones. A session created
 *    meanwhile by another consumer makes our INSERT conflict; those sessions go round again,
 *    now locked and read as they are.
 *
 * Events without a session_id are not session events: they are skipped.
 */
export async function applySessionEvents(sql: Sql, events: LedgeredEvent[]): Promise<{ applied: number; sessions: number }> {
  const candidates = events.filter(inSession);
  if (candidates.length === 0) return { applied: 0, sessions: 0 };
  return sql.begin(async (tx) => advanceSessions(tx, await claimEvents(tx, candidates)));
}

/** A function of the module, not an arrow per call: see columns(). */
const inSession = (e: LedgeredEvent) => Boolean(e.sessionId);

/**
 * The same, exactly once per *block* of events (a block is redelivered whole, with the same
 * origin): one applied_blocks row per block that touches a session, instead of one row per
 * event. A block of one event (a retry split off its block) is claimed per event, as above.
 */
export async function applySessionBlocks(
  sql: Sql,
  stage: string,
  blocks: { origin: string; events: LedgeredEvent[] }[],
): Promise<{ applied: number; sessions: number }> {
  const touching = blocks
    .map((b) => ({ origin: b.origin, events: b.events.filter(inSession), single: b.events.length === 1 }))
    .filter((b) => b.events.length > 0);
  if (touching.length === 0) return { applied: 0, sessions: 0 };
  return sql.begin(async (tx) => {
    const whole = touching.filter((b) => !b.single);
    const fresh = await claimBlocks(tx, stage, whole.map((b) => ({ origin: b.origin, tenantId: b.events[0].tenantId })));
    const events = whole.filter((b) => fresh.has(b.origin)).flatMap((b) => b.events);
    const singles = touching.filter((b) => b.single).flatMap((b) => b.events);
    if (singles.length) events.push(...(await claimEvents(tx, singles)));
    return advanceSessions(tx, events);
  });
}

/** Advances the sessions of events already claimed as applied, in the caller's transaction. */
async function advanceSessions(tx: postgres.TransactionSql, fresh: LedgeredEvent[]): Promise<{ applied: number; sessions: number }> {
  if (fresh.length === 0) return { applied: 0, sessions: 0 };

  let pending = groupBySession(fresh);
  const touched = pending.size;
  for (let round = 0; pending.size > 0; round++) {
    if (round > 3) throw new Error('session rows kept appearing under concurrent inserts');
    const keys = [...pending.keys()].sort();
    const current = await lockSessions(tx, keys.map((k) => pending.get(k)![0]));
    const updates: SessionState[] = [];
    const inserts: SessionState[] = [];
    for (const key of keys) {
      const existing = current.get(key);
      const next = advanceSession(existing, pending.get(key)!);
      (existing ? updates : inserts).push(next);
    }
    if (updates.length) await updateSessions(tx, updates);
    const inserted = inserts.length ? await insertSessions(tx, inserts) : new Set<string>();
    const retry = new Map<string, LedgeredEvent[]>();
    for (const state of inserts) {
      const key = sessionKey(state.tenantId, state.sessionId);
      if (!inserted.has(key)) retry.set(key, pending.get(key)!);
    }
    pending = retry;
  }
  return { applied: fresh.length, sessions: touched };
}

function sessionKey(tenantId: string, sessionId: string): string {
  return `${tenantId}\u0000${sessionId}`;
}

function groupBySession(events: LedgeredEvent[]): Map<string, LedgeredEvent[]> {
  const groups = new Map<string, LedgeredEvent[]>();
  for (const event of events) {
    const key = sessionKey(event.tenantId, event.sessionId!);
    const group = groups.get(key);
    if (group) group.push(event);
    else groups.set(key, [event]);
  }
  return groups;
}

/** Records the events as applied; returns those not applied before (each once, even if the batch repeats one). */
async function claimEvents(tx: postgres.TransactionSql, events: LedgeredEvent[]): Promise<LedgeredEvent[]> {
  const byKey = new Map(events.map((e) => [`${e.tenantId}\u0000${e.eventId}`, e]));
  const keys = [...byKey.keys()].sort();
  const rows = await tx<{ tenant_id: string; event_id: string }[]>`
    INSERT INTO session_applied_events (tenant_id, event_id)
    SELECT * FROM unnest(${keys.map((k) => byKey.get(k)!.tenantId)}::text[], ${keys.map((k) => byKey.get(k)!.eventId)}::text[])
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, event_id`;
  return rows.map((r) => byKey.get(`${r.tenant_id}\u0000${r.event_id}`)!);
}

interface SessionRow {
  tenant_id: string;
  session_id: string;
  customer_id: string;
  team_id: string;
  agent_id: string | null;
  app_id: string | null;
  credential_id: string;
  status: SessionStatus;
  started_at: Date;
  last_event_at: Date;
  ended_at: Date | null;
  events: string;
  tool_calls: string;
  input_tokens: string;
  output_tokens: string;
  duration_ms: string;
  errors: string;
  cost_nano: string;
  late_events: string;
}

function sessionFromRow(row: SessionRow): SessionState {
  return {
    tenantId: row.tenant_id,
    sessionId: row.session_id,
    customerId: row.customer_id,
    teamId: row.team_id,
    agentId: row.agent_id,
    appId: row.app_id,
    credentialId: row.credential_id,
    status: row.status,
    startedAt: row.started_at.getTime(),
    lastEventAt: row.last_event_at.getTime(),
    endedAt: row.ended_at ? row.ended_at.getTime() : null,
    events: Number(row.events),
    toolCalls: Number(row.tool_calls),
    inputTokens: BigInt(row.input_tokens),
    outputTokens: BigInt(row.output_tokens),
    durationMs: BigInt(row.duration_ms),
    errors: Number(row.errors),
    costNano: BigInt(row.cost_nano),
    lateEvents: Number(row.late_events),
  };
}

/** Reads one session (undefined when it does not exist). */
export async function getSession(sql: Sql, tenantId: string, sessionId: string): Promise<SessionState | undefined> {
  const [row] = await sql<SessionRow[]>`SELECT * FROM mcp_sessions WHERE tenant_id = ${tenantId} AND session_id = ${sessionId}`;
  return row ? sessionFromRow(row) : undefined;
}

async function lockSessions(tx: postgres.TransactionSql, representatives: LedgeredEvent[]): Promise<Map<string, SessionState>> {
  const rows = await tx<SessionRow[]>`
    SELECT s.* FROM mcp_sessions s
    JOIN unnest(${representatives.map((e) => e.tenantId)}::text[], ${representatives.map((e) => e.sessionId!)}::text[]) AS k (tenant_id, session_id)
      ON s.tenant_id = k.tenant_id AND s.session_id = k.session_id
    ORDER BY s.tenant_id, s.session_id
    FOR UPDATE OF s`;
  return new Map(rows.map((row) => [sessionKey(row.tenant_id, row.session_id), sessionFromRow(row)]));
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/**
 * Column arrays for unnest, in the order of SESSION_COLUMNS: one loop, not an arrow per column.
 * V8 keeps a closure's optimized code only while an instance of it lives, so arrows made per
 * batch lost their code at every full collection of the heap and were compiled again
 * (BENCHMARKS.md, issue 13, forty-fourth session).
 */
function columns(states: SessionState[]) {
  const c = {
    tenant: [] as SessionState['tenantId'][],
    session: [] as SessionState['sessionId'][],
    customer: [] as SessionState['customerId'][],
    team: [] as SessionState['teamId'][],
    agent: [] as SessionState['agentId'][],
    app: [] as SessionState['appId'][],
    credential: [] as SessionState['credentialId'][],
    status: [] as SessionState['status'][],
    started: [] as (string | null)[],
    last: [] as (string | null)[],
    ended: [] as (string | null)[],
    events: [] as string[],
    toolCalls: [] as string[],
    input: [] as string[],
    output: [] as string[],
    duration: [] as string[],
    errors: [] as string[],
    cost: [] as string[],
    late: [] as string[],
  };
  for (const s of states) {
    c.tenant.push(s.tenantId);
    c.session.push(s.sessionId);
    c.customer.push(s.customerId);
    c.team.push(s.teamId);
    c.agent.push(s.agentId);
    c.app.push(s.appId);
    c.credential.push(s.credentialId);
    c.status.push(s.status);
    c.started.push(iso(s.startedAt));
    c.last.push(iso(s.lastEventAt));
    c.ended.push(iso(s.endedAt));
    c.events.push(String(s.events));
    c.toolCalls.push(String(s.toolCalls));
    c.input.push(s.inputTokens.toString());
    c.output.push(s.outputTokens.toString());
    c.duration.push(s.durationMs.toString());
    c.errors.push(String(s.errors));
    c.cost.push(s.costNano.toString());
    c.late.push(String(s.lateEvents));
  }
  return c;
}

async function updateSessions(tx: postgres.TransactionSql, states: SessionState[]): Promise<void> {
  const c = columns(states);
  await tx`
    UPDATE mcp_sessions s SET
      status = u.status, started_at = u.started_at, last_event_at = u.last_event_at, ended_at = u.ended_at,
      events = u.events, tool_calls = u.tool_calls, input_tokens = u.input_tokens, output_tokens = u.output_tokens,
      duration_ms = u.duration_ms, errors = u.errors, cost_nano = u.cost_nano, late_events = u.late_events,
      updated_at = now()
    FROM unnest(
      ${c.tenant}::text[], ${c.session}::text[], ${c.status}::text[],
      ${c.started}::timestamptz[], ${c.last}::timestamptz[], ${c.ended}::timestamptz[],
      ${c.events}::bigint[], ${c.toolCalls}::bigint[], ${c.input}::numeric[], ${c.output}::numeric[],
      ${c.duration}::numeric[], ${c.errors}::bigint[], ${c.cost}::numeric[], ${c.late}::bigint[]
    ) AS u (tenant_id, session_id, status, started_at, last_event_at, ended_at,
            events, tool_calls, input_tokens, output_tokens, duration_ms, errors, cost_nano, late_events)
    WHERE s.tenant_id = u.tenant_id AND s.session_id = u.session_id`;
}

/** Inserts new sessions; returns the keys inserted (a key another consumer created meanwhile is not). */
async function insertSessions(tx: postgres.TransactionSql, states: SessionState[]): Promise<Set<string>> {
  const c = columns(states);
  const rows = await tx<{ tenant_id: string; session_id: string }[]>`
    INSERT INTO mcp_sessions (
      tenant_id, session_id, customer_id, team_id, agent_id, app_id, credential_id, status,
      started_at, last_event_at, ended_at, events, tool_calls, input_tokens, output_tokens,
      duration_ms, errors, cost_nano, late_events)
    SELECT * FROM unnest(
      ${c.tenant}::text[], ${c.session}::text[], ${c.customer}::text[], ${c.team}::text[],
      ${c.agent}::text[], ${c.app}::text[], ${c.credential}::text[], ${c.status}::text[],
      ${c.started}::timestamptz[], ${c.last}::timestamptz[], ${c.ended}::timestamptz[],
      ${c.events}::bigint[], ${c.toolCalls}::bigint[], ${c.input}::numeric[], ${c.output}::numeric[],
      ${c.duration}::numeric[], ${c.errors}::bigint[], ${c.cost}::numeric[], ${c.late}::bigint[])
    ON CONFLICT (tenant_id, session_id) DO NOTHING
    RETURNING tenant_id, session_id`;
  return new Set(rows.map((r) => sessionKey(r.tenant_id, r.session_id)));
}
