import type { Redis } from '../pipeline/redis.js';
import { partitionedKey, partitionOf } from '../pipeline/keys.js';
import { capCounterKey, capOfRow, capPeriod, settleWindows } from './caps.js';
import { customerPartitionKey } from '../domain/flow.js';
import type { SpendCap } from './caps.js';
import type { RedisPlace } from './pause-flags.js';
import type { Sql } from '../pipeline/postgres.js';

/** What the console reads from PostgreSQL and Redis, every query scoped by tenant and bounded. */

export interface Directory {
  customers: Map<string, string>;
  teams: Map<string, { name: string; customerId: string }>;
  agents: Map<string, { name: string; teamId: string }>;
  apps: Map<string, { name: string; teamId: string }>;
}

/** The names of the tenant's customers, teams, agents and apps (to label the ids ClickHouse groups by). */
export async function tenantDirectory(sql: Sql, tenantId: string, limit = 10_000): Promise<Directory> {
  const [customers, teams, agents, apps] = await Promise.all([
    sql<{ id: string; name: string }[]>`SELECT id, name FROM customers WHERE tenant_id = ${tenantId} ORDER BY name, id LIMIT ${limit}`,
    sql<{ id: string; name: string; customer_id: string }[]>`SELECT id, name, customer_id FROM teams WHERE tenant_id = ${tenantId} LIMIT ${limit}`,
    sql<{ id: string; name: string; team_id: string }[]>`SELECT id, name, team_id FROM agents WHERE tenant_id = ${tenantId} LIMIT ${limit}`,
    sql<{ id: string; name: string; team_id: string }[]>`SELECT id, name, team_id FROM apps WHERE tenant_id = ${tenantId} LIMIT ${limit}`,
  ]);
  return {
    customers: new Map(customers.map((c) => [c.id, c.name])),
    teams: new Map(teams.map((t) => [t.id, { name: t.name, customerId: t.customer_id }])),
    agents: new Map(agents.map((a) => [a.id, { name: a.name, teamId: a.team_id }])),
    apps: new Map(apps.map((a) => [a.id, { name: a.name, teamId: a.team_id }])),
  };
}

export interface CapStatus {
  id: string;
  scopeKind: SpendCap['scopeKind'];
  scopeId: string;
  customerId: string | null;
  period: SpendCap['period'];
  action: SpendCap['action'];
  limitNano: bigint;
  /** period rolling: the window in seconds. */
  windowSeconds?: number;
  /** The current day or month ('2026-11-30', '2026-11'), 'w' for a rolling cap; null for per-session caps. */
  periodKey: string | null;
  /** The running total cap-check keeps for that period (what it pauses on); null for per-session caps. */
  spentNano: bigint | null;
}

/** The tenant's active caps with their running totals for the period containing `now`. */
export async function capStatuses(sql: Sql, redis: Redis, place: RedisPlace, tenantId: string, now: number, limit = 1000): Promise<CapStatus[]> {
  const rows = await sql<
    {
      id: string;
      scope_kind: SpendCap['scopeKind'];
      scope_id: string;
      period: SpendCap['period'];
      action: SpendCap['action'];
      limit_nano: string;
      window_seconds: number | null;
      customer_id: string | null;
    }[]
  >`
    SELECT c.id, c.scope_kind, c.scope_id, c.period, c.action, c.limit_nano, c.window_seconds,
           CASE c.scope_kind WHEN 'customer' THEN c.scope_id WHEN 'team' THEN t.customer_id ELSE at.customer_id END AS customer_id
    FROM spend_caps c
    LEFT JOIN teams t ON c.scope_kind = 'team' AND t.tenant_id = c.tenant_id AND t.id = c.scope_id
    LEFT JOIN agents a ON c.scope_kind = 'agent' AND a.tenant_id = c.tenant_id AND a.id = c.scope_id
    LEFT JOIN teams at ON at.tenant_id = a.tenant_id AND at.id = a.team_id
    WHERE c.tenant_id = ${tenantId} AND c.status = 'active'
    ORDER BY c.scope_kind, c.scope_id, c.period, c.id
    LIMIT ${limit}`;
  const caps: CapStatus[] = rows.map((r) => {
    const cap = capOfRow(tenantId, r);
    // capPeriod reads only the event's recorded time (and session, for per-session caps).
    const period = r.period === 'session' ? undefined : capPeriod(cap, { recordedAt: now } as Parameters<typeof capPeriod>[1]);
    return { ...cap, customerId: r.customer_id, periodKey: period?.key ?? null, spentNano: null };
  });
  // One MGET per partition: the keys of a partition share its hash tag, so this works on a Redis Cluster too.
  const byPartition = new Map<number, { cap: CapStatus; key: string }[]>();
  for (const cap of caps) {
    if (cap.periodKey === null || cap.customerId === null) continue;
    const partition = partitionOf(customerPartitionKey(tenantId, cap.customerId), place.partitions);
    const key = partitionedKey(place.prefix, capCounterKey({ tenantId, id: cap.id } as SpendCap, cap.periodKey), partition);
    byPartition.set(partition, [...(byPartition.get(partition) ?? []), { cap, key }]);
  }
  await Promise.all(
    [...byPartition].map(async ([partition, entries]) => {
      // Rolling totals: the spend that left the window is taken out first.
      await settleWindows(redis, place.prefix, partition, entries.map((e) => ({ ...e.cap, tenantId })), now);
      const totals = await redis.mget(...entries.map((e) => e.key));
      for (const [i, e] of entries.entries()) e.cap.spentNano = BigInt(totals[i] ?? 0);
    }),
  );
  return caps;
}

export interface SessionView {
  sessionId: string;
  status: string;
  customerId: string;
  teamId: string;
  agentId: string | null;
  appId: string | null;
  startedAt: Date;
  lastEventAt: Date;
  endedAt: Date | null;
  toolCalls: bigint;
  errors: bigint;
  costNano: bigint;
}

interface SessionRow {
  session_id: string;
  status: string;
  customer_id: string;
  team_id: string;
  agent_id: string | null;
  app_id: string | null;
  started_at: Date;
  last_event_at: Date;
  ended_at: Date | null;
  tool_calls: string;
  errors: string;
  cost_nano: string;
}

const sessionView = (r: SessionRow): SessionView => ({
  sessionId: r.session_id,
  status: r.status,
  customerId: r.customer_id,
  teamId: r.team_id,
  agentId: r.agent_id,
  appId: r.app_id,
  startedAt: r.started_at,
  lastEventAt: r.last_event_at,
  endedAt: r.ended_at,
  toolCalls: BigInt(r.tool_calls),
  errors: BigInt(r.errors),
  costNano: BigInt(r.cost_nano),
});

/** Open sessions (ACTIVE, IDLE, PAUSED) and ended ones (COMPLETED, FAILED, EXPIRED), each by last activity, newest first. */
export async function consoleSessions(sql: Sql, tenantId: string, limits: { open: number; recent: number }): Promise<{ open: SessionView[]; recent: SessionView[] }> {
  const [open, recent] = await Promise.all([
    sql<SessionRow[]>`
      SELECT session_id, status, customer_id, team_id, agent_id, app_id, started_at, last_event_at, ended_at, tool_calls, errors, cost_nano
      FROM mcp_sessions WHERE tenant_id = ${tenantId} AND status IN ('ACTIVE', 'IDLE', 'PAUSED')
      ORDER BY last_event_at DESC LIMIT ${limits.open}`,
    sql<SessionRow[]>`
      SELECT session_id, status, customer_id, team_id, agent_id, app_id, started_at, last_event_at, ended_at, tool_calls, errors, cost_nano
      FROM mcp_sessions WHERE tenant_id = ${tenantId} AND status IN ('COMPLETED', 'FAILED', 'EXPIRED')
      ORDER BY last_event_at DESC LIMIT ${limits.recent}`,
  ]);
  return { open: open.map(sessionView), recent: recent.map(sessionView) };
}
