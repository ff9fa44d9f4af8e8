import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { pruneApplied, pruneAppliedBlocks, pruneAppliedEvery } from './applied.js';

let world: Isolated;
beforeAll(async () => {
  world = await isolated('applied');
});
afterAll(() => world.cleanup());

describe('pruneApplied', () => {
  it('deletes only rows applied before the bound, in chunks, and leaves what exceeds its rounds to the next pass', async () => {
    const { sql } = world;
    const old = new Date(Date.now() - 2 * 86_400_000);
    for (let i = 0; i < 7; i++) await sql`INSERT INTO invoice_applied (tenant_id, event_id, applied_at) VALUES ('t', ${`old${i}`}, ${old})`;
    for (let i = 0; i < 3; i++) await sql`INSERT INTO invoice_applied (tenant_id, event_id) VALUES ('t', ${`new${i}`})`;
    const bound = new Date(Date.now() - 86_400_000);
    expect(await pruneApplied(sql, 'invoice_applied', bound, 2, 2)).toBe(4);
    expect(await pruneApplied(sql, 'invoice_applied', bound, 2)).toBe(3);
    const left = await sql`SELECT event_id FROM invoice_applied ORDER BY event_id`;
    expect(left.map((r) => r.event_id)).toEqual(['new0', 'new1', 'new2']);
  });

  it("prunes one stage's applied_blocks rows, in chunks, and never another stage's", async () => {
    const { sql } = world;
    const old = new Date(Date.now() - 2 * 86_400_000);
    for (const stage of ['session-update', 'cogs', 'invoice-rollup']) {
      for (let i = 0; i < 5; i++) await sql`INSERT INTO applied_blocks (stage, tenant_id, origin, applied_at) VALUES (${stage}, 't', ${`old${i}`}, ${old})`;
      await sql`INSERT INTO applied_blocks (stage, tenant_id, origin) VALUES (${stage}, 't', 'new')`;
    }
    const bound = new Date(Date.now() - 86_400_000);
    expect(await pruneAppliedBlocks(sql, 'cogs', bound, 2, 2)).toBe(4);
    expect(await pruneAppliedBlocks(sql, 'cogs', bound, 2)).toBe(1);
    const left = await sql<{ stage: string; n: string }[]>`SELECT stage, count(*) AS n FROM applied_blocks GROUP BY stage ORDER BY stage`;
    expect(left.map((r) => [r.stage, Number(r.n)])).toEqual([
      ['cogs', 1],
      ['invoice-rollup', 6],
      ['session-update', 6],
    ]);
  });

  it("prunes on a timer a stage's applied_blocks rows and its own table's, older than a day, until stopped", async () => {
    const { sql } = world;
    const old = new Date(Date.now() - 2 * 86_400_000);
    for (const stage of ['timer-a', 'timer-b']) {
      await sql`INSERT INTO applied_blocks (stage, tenant_id, origin, applied_at) VALUES (${stage}, 't', 'old', ${old})`;
      await sql`INSERT INTO applied_blocks (stage, tenant_id, origin) VALUES (${stage}, 't', 'new')`;
    }
    await sql`INSERT INTO invoice_applied (tenant_id, event_id, applied_at) VALUES ('t', 'timer-old', ${old})`;
    const errors: unknown[] = [];
    const stop = pruneAppliedEvery(sql, 'timer-a', (err) => errors.push(err), 'invoice_applied', 20);
    const rowsOf = async () => (await sql<{ stage: string; origin: string }[]>`SELECT stage, origin FROM applied_blocks WHERE stage LIKE 'timer-%' ORDER BY 1, 2`).map((r) => `${r.stage}/${r.origin}`);
    const deadline = Date.now() + 5_000;
    const oldInvoiceRow = () => sql`SELECT 1 FROM invoice_applied WHERE event_id = 'timer-old'`;
    while (((await rowsOf()).length > 3 || (await oldInvoiceRow()).length > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    stop();
    expect(await rowsOf()).toEqual(['timer-a/new', 'timer-b/new', 'timer-b/old']);
    expect(await oldInvoiceRow()).toHaveLength(0);
    expect(errors).toEqual([]);
  });

  it('finds the old rows of one stage through the (stage, applied_at) index', async () => {
    const { sql } = world;
    // A few rows: without seqscan off the planner would read the table through; with it, the index it picks.
    const plan = await sql.begin(async (tx) => {
      await tx`SET LOCAL enable_seqscan = off`;
      return tx<{ 'QUERY PLAN': string }[]>`
        EXPLAIN SELECT ctid FROM applied_blocks WHERE stage = 'cogs' AND applied_at < ${new Date()} LIMIT 10`;
    });
    expect(plan.map((r) => r['QUERY PLAN']).join('\n')).toContain('applied_blocks_stage_applied_at');
  });
});
