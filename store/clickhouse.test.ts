import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { insertJsonRows, type ClickHouseClient } from './clickhouse.js';

let world: Isolated;
let ch: ClickHouseClient;
beforeAll(async () => {
  world = await isolated('clickhouse-insert', { clickhouse: true });
  ch = world.clickhouse!;
  await ch.command({ query: 'CREATE TABLE rows_in (id UInt32, note String) ENGINE = Memory' });
});
afterAll(async () => {
  await world?.cleanup();
});

async function read(): Promise<{ id: number; note: string }[]> {
  const result = await ch.query({ query: 'SELECT id, note FROM rows_in ORDER BY id', format: 'JSONEachRow' });
  return (await result.json<{ id: number | string; note: string }>()).map((r) => ({ id: Number(r.id), note: r.note }));
}

describe('insertJsonRows', () => {
  it('inserts every row of a body streamed in many chunks, text that needs escaping included', async () => {
    // ~120 characters a row: 3,000 rows are more than five 64 KiB chunks, cut between rows.
    const rows = Array.from({ length: 3_000 }, (_, id) => ({ id, note: `row ${id} "quoted" \\ back\nslash, tab\t, é ✓ ${'x'.repeat(id % 90)}` }));
    await insertJsonRows(ch, 'rows_in', rows);
    expect(await read()).toEqual(rows);
  });

  it('inserts rows longer than a chunk, and characters of four UTF-8 bytes, as they were', async () => {
    await ch.command({ query: 'TRUNCATE TABLE rows_in' });
    const rows = [
      { id: 1, note: 'short' },
      { id: 2, note: `${'é✓'.repeat(30_000)} 🚀 end` },
      { id: 3, note: '😀'.repeat(40_000) },
      { id: 4, note: 'after' },
    ];
    await insertJsonRows(ch, 'rows_in', rows);
    expect(await read()).toEqual(rows);
  });

  it('takes the rows from a generator, read once as the body is sent', async () => {
    await ch.command({ query: 'TRUNCATE TABLE rows_in' });
    let built = 0;
    function* rows() {
      for (let id = 0; id < 5_000; id++) {
        built++;
        yield { id, note: `built ${id}` };
      }
    }
    await insertJsonRows(ch, 'rows_in', rows());
    expect(built).toBe(5_000);
    expect(await read()).toEqual(Array.from({ length: 5_000 }, (_, id) => ({ id, note: `built ${id}` })));
  });

  it("fails with the server's error, and inserts nothing, when a row is refused", async () => {
    await ch.command({ query: 'TRUNCATE TABLE rows_in' });
    const rows: object[] = Array.from({ length: 2_000 }, (_, id) => ({ id, note: 'fine' }));
    rows[1_500] = { id: 'not a number', note: 'bad' };
    await expect(insertJsonRows(ch, 'rows_in', rows)).rejects.toThrow(/not a number|Cannot parse|Code: \d+/);
    expect(await read()).toEqual([]);
  });
});
