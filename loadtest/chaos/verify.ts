import type { Redis } from '../../pipeline/redis.js';
import type { ClickHouseClient } from '@clickhouse/client';
import { eventsOfEntries } from '../../pipeline/blocks.js';
import { deadLetterKey, partitionedKey } from '../../pipeline/keys.js';
import type { Sql } from '../../pipeline/postgres.js';
import type { RejectedEvent } from '../../domain/events.js';
import type { SeededTenant } from '../../ops/seed.js';
import { STAGES } from '../../stages/registry.js';
import { STREAMS } from '../../store/streams.js';

export async function clickHouseTotals(clickhouse: ClickHouseClient, tenantId: string): Promise<{ rows: number; cost: bigint }> {
  const result = await clickhouse.query({
    query: `SELECT count() AS rows, toString(sum(intDiv(cost_nano, 1000000000))) AS hi, toString(sum(cost_nano % 1000000000)) AS lo
            FROM invocations FINAL WHERE tenant_id = '${tenantId.replace(/[^A-Za-z0-9_]/g, '')}'`,
    format: 'JSONEachRow',
  });
  const [row] = (await result.json()) as { rows: string; hi: string; lo: string }[];
  return { rows: Number(row.rows), cost: BigInt(row.hi) * 1_000_000_000n + BigInt(row.lo) };
}

async function eventIds(redis: Redis, key: string, pick: (payload: unknown) => { eventId?: string } | undefined): Promise<Set<string>> {
  const ids = new Set<string>();
  // An entry is one event or a block of them (pipeline/blocks.ts).
  for (const { payload } of eventsOfEntries<unknown>((await redis.xrangeBuffer(key, '-', '+')) as [Buffer, Buffer[]][])) {
    const id = pick(payload)?.eventId;
    if (id) ids.add(id);
  }
  return ids;
}

export interface Verdict {
  accepted: number;
  ledgered: number;
  missing: number;
  missingSamples: string[];
  extra: number;
  rejected: number;
  deadLetters: number;
  duplicatesRecognized: number;
  /** Per sink: rows or counts beyond the ledger's (billed twice) and short of it (lost on the way). */
  sinks: { name: string; over: number; short: number; detail: string }[];
  ledgerCost: bigint;
  clickhouse: { rows: number; cost: bigint };
}

/**
 * Compares what the client was told (accepted event ids) with the ledger, and every aggregate
 * kept from the ledger (sessions, invoice aggregates, COGS, cap counters, ClickHouse) with it.
 */
export async function verify(
  sql: Sql,
  redis: Redis,
  prefix: string,
  clickhouse: ClickHouseClient,
  tenant: SeededTenant,
  accepted: ReadonlySet<string>,
): Promise<Verdict> {
  const t = tenant.tenantId;
  const ledgerIds = new Set((await sql<{ event_id: string }[]>`SELECT event_id FROM usage_ledger WHERE tenant_id = ${t}`).map((r) => r.event_id));
  const rejected = await eventIds(redis, partitionedKey(prefix, STREAMS.rejected, 0), (p) => (p as RejectedEvent).event);
  const dead = new Set<string>();
  for (const stage of STAGES) for (const id of await eventIds(redis, deadLetterKey(prefix, stage.name, 0), (p) => p as { eventId?: string })) dead.add(id);
  const missing = [...accepted].filter((id) => !ledgerIds.has(id) && !rejected.has(id) && !dead.has(id));
  const extra = [...ledgerIds].filter((id) => !accepted.has(id));
  const [{ n: duplicatesRecognized }] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM ledger_duplicates WHERE tenant_id = ${t}`;

  const sinks: Verdict['sinks'] = [];
  const compare = (name: string, ledger: bigint, sink: bigint, unit = 'rows') =>
    sinks.push({ name, over: Number(sink > ledger ? sink - ledger : 0n), short: Number(ledger > sink ? ledger - sink : 0n), detail: `${sink} ${unit} vs ledger ${ledger}` });

  const [ledger] = await sql<{ rows: string; usage: string; cost: string; usage_cost: string }[]>`
    SELECT count(*)::text AS rows, count(*) FILTER (WHERE event_type NOT LIKE 'session.%')::text AS usage,
           coalesce(sum(cost_nano), 0)::text AS cost, coalesce(sum(cost_nano) FILTER (WHERE event_type NOT LIKE 'session.%'), 0)::text AS usage_cost
    FROM usage_ledger WHERE tenant_id = ${t}`;

  // Invoices: per subscription and period, events and cost.
  const [invoices] = await sql<{ events: string; cost: string; mismatched: number }[]>`
    WITH l AS (SELECT subscription_id, period_start, count(*) AS events, sum(cost_nano) AS cost FROM usage_ledger WHERE tenant_id = ${t} GROUP BY 1, 2)
    SELECT coalesce((SELECT sum(events) FROM invoice_period_calls WHERE tenant_id = ${t}), 0)::text AS events,
           coalesce((SELECT sum(cost_nano) FROM invoice_period_calls WHERE tenant_id = ${t}), 0)::text AS cost,
           (SELECT count(*)::int FROM l FULL JOIN (SELECT * FROM invoice_period_calls WHERE tenant_id = ${t}) p
              ON p.subscription_id = l.subscription_id AND p.period_start = l.period_start
            WHERE l.events IS DISTINCT FROM p.events OR l.cost IS DISTINCT FROM p.cost_nano) AS mismatched`;
  compare('invoice aggregates (events)', BigInt(ledger.rows), BigInt(invoices.events), 'events');
  compare('invoice aggregates (cost)', BigInt(ledger.cost), BigInt(invoices.cost), 'nano');

  // Sessions: events and cost per session.
  const [sessions] = await sql<{ ledger_events: string; events: string; ledger_cost: string; cost: string }[]>`
    SELECT (SELECT count(*) FROM usage_ledger WHERE tenant_id = ${t} AND session_id IS NOT NULL)::text AS ledger_events,
           (SELECT coalesce(sum(events), 0) FROM mcp_sessions WHERE tenant_id = ${t})::text AS events,
           (SELECT coalesce(sum(cost_nano), 0) FROM usage_ledger WHERE tenant_id = ${t} AND session_id IS NOT NULL)::text AS ledger_cost,
           (SELECT coalesce(sum(cost_nano), 0) FROM mcp_sessions WHERE tenant_id = ${t})::text AS cost`;
  compare('sessions (events)', BigInt(sessions.ledger_events), BigInt(sessions.events), 'events');
  compare('sessions (cost)', BigInt(sessions.ledger_cost), BigInt(sessions.cost), 'nano');

  // COGS: every usage event summed once (per customer), at the ledger's price.
  const [cogs] = await sql<{ rows: string; price: string }[]>`
    SELECT coalesce(sum(events), 0)::text AS rows, coalesce(sum(price_nano), 0)::text AS price FROM cogs_rollup WHERE tenant_id = ${t} AND dimension = 'customer'`;
  compare('COGS (rows)', BigInt(ledger.usage), BigInt(cogs.rows));
  compare('COGS (price)', BigInt(ledger.usage_cost), BigInt(cogs.price), 'nano');

  // Spend caps: every running total in Redis equals the ledger's sum for its scope and period.
  let capLedger = 0n;
  let capRedis = 0n;
  for (const cap of tenant.caps) {
    const column = cap.scopeKind === 'agent' ? sql`agent_id` : cap.scopeKind === 'team' ? sql`team_id` : sql`customer_id`;
    const periodOf = cap.period === 'day' ? sql`to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')` : sql`to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM')`;
    const sums = await sql<{ period_key: string; total: string }[]>`
      SELECT ${periodOf} AS period_key, sum(cost_nano)::text AS total FROM usage_ledger
      WHERE tenant_id = ${t} AND ${column} = ${cap.scopeId} AND cost_nano > 0 GROUP BY 1`;
    for (const { period_key, total } of sums) {
      capLedger += BigInt(total);
      capRedis += BigInt((await redis.get(partitionedKey(prefix, `cap:${t}:${cap.id}:${period_key}`, 0))) ?? '0');
    }
  }
  compare('spend-cap counters', capLedger, capRedis, 'nano');

  const clickhouseNow = await clickHouseTotals(clickhouse, t);
  compare('ClickHouse (rows)', BigInt(ledger.rows), BigInt(clickhouseNow.rows));
  compare('ClickHouse (cost)', BigInt(ledger.cost), clickhouseNow.cost, 'nano');
  if (invoices.mismatched) sinks.push({ name: 'invoice aggregates (per period)', over: 0, short: invoices.mismatched, detail: `${invoices.mismatched} periods differ` });

  return {
    accepted: accepted.size,
    ledgered: [...accepted].filter((id) => ledgerIds.has(id)).length,
    missing: missing.length,
    missingSamples: missing.slice(0, 10),
    extra: extra.length,
    rejected: rejected.size,
    deadLetters: dead.size,
    duplicatesRecognized,
    sinks,
    ledgerCost: BigInt(ledger.cost),
    clickhouse: clickhouseNow,
  };
}
