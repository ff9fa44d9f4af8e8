import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from './config.js';
import { settleWithin } from './errors.js';
import { connectPostgres, type Sql } from './postgres.js';
import { TcpProxy } from '../test/support/tcp-proxy.js';

/**
 * postgres.js 3.4.9 as published loses its place on a connection reset inside a transaction:
 * the transaction's ROLLBACK, written to the dying socket, stays in the connection's queue of
 * sent queries across the reconnect. The next query answers; every one after it is matched
 * with the reply of the one before, or waits for ever. In the chaos run that made
 * session-update ack a batch its transaction never committed (160 events missing from
 * mcp_sessions). patches/postgres+3.4.9.patch (applied by npm's postinstall) rejects every
 * query still queued when a connection closes, and refuses queries on a closed connection.
 *
 * It also reserves a transaction's connection whenever its BEGIN is written: as published, a
 * BEGIN that filled the connection's pipeline (max_pipeline, 100 by default) went to
 * PostgreSQL without the reservation, sql.begin failed with UNSAFE_TRANSACTION, and the
 * connection went back to the pool inside the open transaction, where later autocommit writes
 * would never commit (porsager/postgres#1189).
 */
describe('the PostgreSQL client across a connection reset', () => {
  const databaseUrl = loadConfig({}).DATABASE_URL;
  let proxy: TcpProxy;
  let sql: Sql;

  beforeAll(async () => {
    const url = new URL(databaseUrl);
    proxy = await TcpProxy.start({ port: Number(url.port || 5432) });
    url.host = proxy.url;
    // One connection, so every query after the reset goes to the connection that was reset.
    sql = connectPostgres(url.toString(), { max: 1, name: 'test-pg-reset' });
  });

  afterAll(async () => {
    await sql.end({ timeout: 1 });
    await proxy.close();
  });

  const within = <T>(work: Promise<T>, what: string) => settleWithin(work, 5_000, () => new Error(`${what}: no answer within 5 s`));

  it('fails the transaction it cut, then answers every later query with its own reply', async () => {
    await sql`SELECT 1`;
    const transaction = sql
      .begin(async (tx) => {
        await tx`SELECT pg_sleep(0.5)`;
        await tx`SELECT 2`;
      })
      .then(
        () => 'committed',
        (error: Error) => `failed: ${error.message}`,
      );
    await new Promise((resolve) => setTimeout(resolve, 200));
    proxy.cut('reset');
    expect(await within(transaction, 'the transaction cut')).toMatch(/^failed: .*(CONNECTION_CLOSED|ECONNRESET)/);
    await new Promise((resolve) => setTimeout(resolve, 200));
    proxy.restore();

    const answers: unknown[] = [];
    for (let i = 0; i < 4; i++) {
      answers.push(await within(sql<{ tag: string }[]>`SELECT ${`query ${i}`}::text AS tag`.then((rows) => rows[0].tag), `query ${i}`));
    }
    expect(answers).toEqual(['query 0', 'query 1', 'query 2', 'query 3']);

    // And a transaction after it commits.
    const [{ n }] = await within(
      sql.begin((tx) => tx<{ n: number }[]>`SELECT 3 AS n`),
      'the transaction after it',
    );
    expect(n).toBe(3);
  });

  it('reserves the connection of a transaction whose BEGIN fills the pipeline', async () => {
    // max_pipeline 0: every query fills it, BEGIN included. One connection, so a transaction left
    // open on it would take in every later query.
    const options = { max: 1, max_pipeline: 0, onnotice: () => {} }; // max_pipeline: an option the typings leave out
    const edge = postgres(databaseUrl, options);
    try {
      const inside = await edge.begin(async (tx) => (await tx<{ xid: string }[]>`SELECT txid_current()::text AS xid`)[0].xid);
      const [{ status }] = await edge<{ status: string }[]>`SELECT txid_status(${inside}::bigint) AS status`;
      expect(status).toBe('committed');
      // Two statements after it, two transactions: the connection is not inside one left open.
      const [{ first }] = await edge<{ first: string }[]>`SELECT txid_current()::text AS first`;
      const [{ second }] = await edge<{ second: string }[]>`SELECT txid_current()::text AS second`;
      expect(second).not.toBe(first);
    } finally {
      await edge.end({ timeout: 1 });
    }
  });
});

/**
 * patches/postgres+3.4.9.patch also spares each message two copies: bytes.js builds every message
 * in one buffer kept from message to message (up to 1 MiB) and hands out a copy at its size,
 * where it began each one in a fresh 256-byte buffer and grew it through a new Buffer at every
 * parameter that did not fit; and a message is written as handed out, not copied again first.
 * Fewer Buffers: in the stage processes, Buffers are what made V8 collect (BENCHMARKS.md, issue
 * 13, thirty-third session).
 */
describe('the PostgreSQL client building its messages', () => {
  const databaseUrl = loadConfig({}).DATABASE_URL;

  it('answers large and small statements in flight together with their own values, without copying a message again', async () => {
    const sql = connectPostgres(databaseUrl, { max: 1, name: 'test-pg-messages' });
    const from = vi.spyOn(Buffer, 'from');
    try {
      const words = Array.from({ length: 3_000 }, (_, i) => `word-${i}-${'x'.repeat(i % 17)}`);
      const huge = 'h'.repeat(1_500_000); // beyond the 1 MiB kept: the buffer after it starts small again
      const [many, small, big, after] = await Promise.all([
        sql<{ n: number; last: string }[]>`SELECT cardinality(${words}::text[]) AS n, (${words}::text[])[3000] AS last`,
        sql<{ v: string }[]>`SELECT ${'small'}::text AS v`,
        sql<{ n: number }[]>`SELECT length(${huge}::text) AS n`,
        sql<{ v: string }[]>`SELECT ${'after'}::text || ${words[7]}::text AS v`,
      ]);
      expect(many[0]).toEqual({ n: 3_000, last: words[2_999] });
      expect(small[0].v).toBe('small');
      expect(big[0].n).toBe(1_500_000);
      expect(after[0].v).toBe(`after${words[7]}`);
      const copiedMessages = from.mock.calls.filter(([value]) => Buffer.isBuffer(value) && value.length >= 16 * 1024);
      expect(copiedMessages).toEqual([]);
    } finally {
      from.mockRestore();
      await sql.end({ timeout: 1 });
    }
  });
});
