import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
