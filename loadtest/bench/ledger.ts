import { existsSync, readFileSync } from 'node:fs';
import type { Sql } from '../../pipeline/postgres.js';

export interface Percentiles {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Ingest-to-ledger latency (ledgered_at - ingested_at, in ms) of the rows ingested in [from, to]. */
export async function ledgerLatency(sql: Sql, table: string, from: Date, to: Date): Promise<Percentiles> {
  const [row] = await sql<{ n: number; q: number[] | null; max: number | null }[]>`
    SELECT count(*)::int AS n,
           percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY ms) AS q,
           max(ms) AS max
    FROM (SELECT (extract(epoch FROM (ledgered_at - ingested_at)) * 1000)::float8 AS ms
          FROM ${sql(table)} WHERE ingested_at >= ${from} AND ingested_at <= ${to}) s`;
  const q = row.q ?? [NaN, NaN, NaN];
  return { count: row.n, p50: r1(q[0]), p90: r1(q[1]), p99: r1(q[2]), max: r1(row.max ?? NaN) };
}

/** Rows that reached the table in [from, to), per second. */
export async function ledgerRate(sql: Sql, table: string, from: Date, to: Date): Promise<number> {
  const [row] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM ${sql(table)} WHERE ledgered_at >= ${from} AND ledgered_at < ${to}`;
  const seconds = (to.getTime() - from.getTime()) / 1000;
  return seconds > 0 ? Math.round(row.n / seconds) : NaN;
}

/** Rows per wall-clock second, and ingest-to-ledger p50/p99 per 5 s of ingest time. */
export async function ledgerSeries(sql: Sql, table: string, origin: number) {
  const perSecond = await sql<{ s: number; n: number }[]>`
    SELECT floor(extract(epoch FROM ledgered_at))::int8::float8 AS s, count(*)::int AS n FROM ${sql(table)} GROUP BY 1 ORDER BY 1`;
  const latency = await sql<{ b: number; n: number; q: number[] }[]>`
    SELECT floor(extract(epoch FROM ingested_at) / 5)::int8::float8 AS b, count(*)::int AS n,
           percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY (extract(epoch FROM (ledgered_at - ingested_at)) * 1000)::float8) AS q
    FROM ${sql(table)} GROUP BY 1 ORDER BY 1`;
  return {
    ledgerPerSecond: perSecond.map((r) => ({ t: Math.round(r.s - origin / 1000), rows: r.n })),
    latencyPer5s: latency.map((r) => ({ t: Math.round(r.b * 5 - origin / 1000), rows: r.n, p50: r1(r.q[0]), p99: r1(r.q[1]) })),
  };
}

export interface Exactness {
  /** Distinct events the server accepted (202), by the generators' bitsets. */
  sentDistinct: number;
  ledgerRows: number;
  /** Accepted but not in the table. */
  missing: number;
  /** In the table but neither accepted nor in doubt (or not the benchmark's). */
  extra: number;
  /**
   * In the table, never acknowledged to the client: their request failed on the network or was
   * still unanswered when the client gave up. Expected: the server had them; a client retry of
   * the same event_id would be recognized as a duplicate.
   */
  inDoubtLedgered: number;
  exact: boolean;
  missingSamples: string[];
}

function popcount(b: number): number {
  let n = 0;
  while (b) {
    b &= b - 1;
    n++;
  }
  return n;
}

/**
 * Compares the table's event ids with the accepted-event bitsets of the generators, id by id:
 * the ledger must hold exactly the distinct events accepted, no fewer and no more.
 */
export async function checkExactness(sql: Sql, table: string, generators: { prefix: string; bitsFile: string }[]): Promise<Exactness> {
  const sent = generators.map((g) => new Uint8Array(readFileSync(g.bitsFile)));
  const doubt = generators.map((g, i) => {
    const bytes = existsSync(`${g.bitsFile}.doubt`) ? new Uint8Array(readFileSync(`${g.bitsFile}.doubt`)) : new Uint8Array(0);
    const sized = new Uint8Array(sent[i].length);
    sized.set(bytes.subarray(0, sized.length));
    return sized;
  });
  const seen = sent.map((bits) => new Uint8Array(bits.length));
  const index = new Map(generators.map((g, i) => [g.prefix, i]));
  let ledgerRows = 0;
  let extra = 0;
  await sql<{ event_id: string }[]>`SELECT event_id FROM ${sql(table)}`.cursor(20_000, (rows) => {
    for (const { event_id: id } of rows) {
      ledgerRows++;
      const dash = id.lastIndexOf('-');
      const g = index.get(id.slice(0, dash));
      const seq = Number(id.slice(dash + 1));
      if (g === undefined || !Number.isInteger(seq) || seq < 0 || seq >>> 3 >= seen[g].length) {
        // Not the benchmark's, or beyond every sequence number the generator made.
        extra++;
        continue;
      }
      seen[g][seq >>> 3] |= 1 << (seq & 7);
    }
  });
  let sentDistinct = 0;
  let missing = 0;
  let inDoubtLedgered = 0;
  const missingSamples: string[] = [];
  sent.forEach((bits, g) => {
    for (let i = 0; i < bits.length; i++) {
      sentDistinct += popcount(bits[i]);
      const lost = bits[i] & ~seen[g][i];
      const unexpected = seen[g][i] & ~bits[i] & ~doubt[g][i];
      missing += popcount(lost);
      extra += popcount(unexpected);
      inDoubtLedgered += popcount(seen[g][i] & ~bits[i] & doubt[g][i]);
      if (lost && missingSamples.length < 5) {
        for (let b = 0; b < 8; b++) if (lost & (1 << b)) missingSamples.push(`${generators[g].prefix}-${i * 8 + b}`);
      }
    }
  });
  return {
    sentDistinct,
    ledgerRows,
    missing,
    extra,
    inDoubtLedgered,
    exact: missing === 0 && extra === 0 && sentDistinct + inDoubtLedgered === ledgerRows,
    missingSamples: missingSamples.slice(0, 5),
  };
}

function r1(value: number): number {
  return Number.isFinite(value) ? Math.round(value * 10) / 10 : NaN;
}
