import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { pruneApplied } from './applied.js';

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
});
