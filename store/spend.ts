import type { Redis } from '../pipeline/redis.js';
import { customerPartitionKey } from '../domain/flow.js';
import { partitionedKey, partitionOf } from '../pipeline/keys.js';
import type { Sql } from '../pipeline/postgres.js';
import { capCounterKey, capOfRow, capPeriod, settleWindows, type SpendCap } from './caps.js';
import type { RedisPlace } from './pause-flags.js';
import { pauseKey } from './pauses.js';

export type SpendScope = 'agent' | 'team' | 'customer';

/** The recent rate the projection extrapolates: the last six hours (or the period so far, when shorter). */
const RECENT_WINDOW_MS = 6 * 3_600_000;

export interface SpendReport {
  scope: SpendScope;
  id: string;
  customerId: string;
  periodStart: number;
  periodEnd: number;
  at: number;
  /** Ledgered spend this period, per currency (a customer's plans may bill in more than one). */
  spend: { currency: string; totalNano: bigint; events: number; byDimension: Record<string, bigint>; byTool: { tool: string; nano: bigint }[] }[];
  /** Spend so far plus the recent rate carried to the end of the period, per currency. */
  projected: { currency: string; endOfPeriodNano: bigint; recentNano: bigint; recentWindowMs: number }[];
  caps: { cap: SpendCap; periodKey: string | null; resetsAt: number | null; spentNano: bigint | null; reservedNano: bigint | null; remainingNano: bigint | null; paused: boolean }[];
  sessions: { sessionId: string; status: string; agentId: string | null; startedAt: Date; lastEventAt: Date; toolCalls: number; costNano: bigint }[];
}

/**
 * Where the money of an agent, team or customer is going this calendar month (UTC): ledgered
 * spend by pricing dimension and by tool, the end of period projected from the last hours'
 * rate, every cap on the scope with the running total cap-check enforces (Redis), and the open
 * sessions with their live cost. Undefined when the tenant has no such agent, team or customer.
 */
export async function spendReport(sql: Sql, redis: Redis, place: RedisPlace, tenantId: string, scope: SpendScope, id: string, at = Date.now()): Promise<SpendReport | undefined> {
  const [owner] = await sql<{ customer_id: string }[]>`
    ${
      scope === 'customer'
        ? sql`SELECT id AS customer_id FROM customers WHERE tenant_id = ${tenantId} AND id = ${id}`
        : scope === 'team'
          ? sql`SELECT customer_id FROM teams WHERE tenant_id = ${tenantId} AND id = ${id}`
          : sql`SELECT t.customer_id FROM agents a JOIN teams t ON t.tenant_id = a.tenant_id AND t.id = a.team_id WHERE a.tenant_id = ${tenantId} AND a.id = ${id}`
    }`;
  if (!owner) return undefined;
  const customerId = owner.customer_id;
  const now = new Date(at);
  const periodStart = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1);
  const periodEnd = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
  const recentFrom = Math.max(periodStart, at - RECENT_WINDOW_MS);
  const column = scope === 'customer' ? sql`customer_id` : scope === 'team' ? sql`team_id` : sql`agent_id`;
  // The customer's index bounds the scan; the scope's own column narrows it.
  const inScope = sql`tenant_id = ${tenantId} AND customer_id = ${customerId} AND ${column} = ${id}
    AND recorded_at >= ${new Date(periodStart)} AND recorded_at < ${new Date(periodEnd)}`;

  const [totals, dimensions, tools, sessions] = await Promise.all([
    sql<{ currency: string; total: string; events: string; recent: string }[]>`
      SELECT currency, sum(cost_nano)::text AS total, count(*)::text AS events,
             coalesce(sum(cost_nano) FILTER (WHERE recorded_at >= ${new Date(recentFrom)}), 0)::text AS recent
      FROM usage_ledger WHERE ${inScope} GROUP BY currency ORDER BY currency`,
    sql<{ currency: string; dimension: string; nano: string }[]>`
      SELECT currency, d.key AS dimension, sum(d.value::numeric)::text AS nano
      FROM usage_ledger, jsonb_each_text(cost_breakdown) d
      WHERE ${inScope} GROUP BY currency, d.key ORDER BY currency, d.key`,
    sql<{ currency: string; tool: string; nano: string }[]>`
      SELECT currency, coalesce(priced_tool, tool_name, event_type) AS tool, sum(cost_nano)::text AS nano
      FROM usage_ledger WHERE ${inScope}
      GROUP BY 1, 2 ORDER BY sum(cost_nano) DESC LIMIT 20`,
    sql<{ session_id: string; status: string; agent_id: string | null; started_at: Date; last_event_at: Date; tool_calls: string; cost_nano: string }[]>`
      SELECT session_id, status, agent_id, started_at, last_event_at, tool_calls::text, cost_nano::text
      FROM mcp_sessions
      WHERE tenant_id = ${tenantId} AND customer_id = ${customerId} AND ${column} = ${id} AND status IN ('ACTIVE', 'IDLE', 'PAUSED')
      ORDER BY last_event_at DESC LIMIT 100`,
  ]);

  const elapsedRecent = Math.max(1, at - recentFrom);
  const spend = totals.map((t) => ({
    currency: t.currency,
    totalNano: BigInt(t.total),
    events: Number(t.events),
    byDimension: Object.fromEntries(dimensions.filter((d) => d.currency === t.currency).map((d) => [d.dimension, BigInt(d.nano)])),
    byTool: tools.filter((x) => x.currency === t.currency).map((x) => ({ tool: x.tool, nano: BigInt(x.nano) })),
  }));
  const projected = totals.map((t) => ({
    currency: t.currency,
    recentNano: BigInt(t.recent),
    recentWindowMs: elapsedRecent,
    endOfPeriodNano: BigInt(t.total) + (BigInt(t.recent) * BigInt(Math.max(0, periodEnd - at))) / BigInt(elapsedRecent),
  }));

  return { scope, id, customerId, periodStart, periodEnd, at, spend, projected, caps: await capsOf(sql, redis, place, tenantId, scope, id, customerId, at), sessions: sessions.map((s) => ({
    sessionId: s.session_id,
    status: s.status,
    agentId: s.agent_id,
    startedAt: s.started_at,
    lastEventAt: s.last_event_at,
    toolCalls: Number(s.tool_calls),
    costNano: BigInt(s.cost_nano),
  })) };
}

async function capsOf(sql: Sql, redis: Redis, place: RedisPlace, tenantId: string, scope: SpendScope, id: string, customerId: string, at: number): Promise<SpendReport['caps']> {
  const rows = await sql<
    { id: string; scope_kind: SpendCap['scopeKind']; scope_id: string; period: SpendCap['period']; limit_nano: string; action: SpendCap['action']; window_seconds: number | null }[]
  >`
    SELECT id, scope_kind, scope_id, period, limit_nano, action, window_seconds FROM spend_caps
    WHERE tenant_id = ${tenantId} AND scope_kind = ${scope} AND scope_id = ${id} AND status = 'active' ORDER BY id`;
  if (rows.length === 0) return [];
  const partition = partitionOf(customerPartitionKey(tenantId, customerId), place.partitions);
  const caps = rows.map((r) => {
    const cap = capOfRow(tenantId, r);
    // A per-session cap has a total per session: the sessions list carries their costs.
    const period = cap.period === 'session' ? undefined : capPeriod(cap, { recordedAt: at });
    return { cap, period };
  });
  // Rolling totals: the spend that left the window is taken out first; resets_at is when the total is under the limit again.
  const freesAt = await settleWindows(redis, place.prefix, partition, caps.map((c) => c.cap), at);
  const keys = caps.flatMap(({ cap, period }) => (period ? [partitionedKey(place.prefix, capCounterKey(cap, period.key), partition)] : []));
  const flagKey = partitionedKey(place.prefix, pauseKey(tenantId, scope, id), partition);
  const values = keys.length ? await redis.mget(...keys.flatMap((k) => [k, `${k}:rs`]), flagKey) : [await redis.get(flagKey)];
  const flag = values.at(-1);
  let paused: string | undefined;
  try {
    paused = flag ? (JSON.parse(flag) as { capId: string }).capId : undefined;
  } catch {
    paused = undefined;
  }
  let i = 0;
  return caps.map(({ cap, period }) => {
    if (!period) return { cap, periodKey: null, resetsAt: null, spentNano: null, reservedNano: null, remainingNano: null, paused: paused === cap.id };
    const spent = BigInt(values[i * 2] ?? '0');
    const reserved = BigInt(values[i * 2 + 1] ?? '0');
    i++;
    const left = cap.limitNano - spent - (reserved > 0n ? reserved : 0n);
    const resetsAt = cap.period === 'rolling' ? (freesAt.get(cap.id) ?? at) : period.endsAt;
    return { cap, periodKey: period.key, resetsAt, spentNano: spent, reservedNano: reserved, remainingNano: left > 0n ? left : 0n, paused: paused === cap.id };
  });
}
