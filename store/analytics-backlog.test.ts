import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectPostgres } from '../pipeline/postgres.js';
import { writeLedger } from '../stages/ledger-write/index.js';
import { ledgeredEvent, stageEntries } from '../stages/testing.js';
import { isolated, type Isolated } from '../test/support/isolated.js';
import { enqueueLedgerDay } from './analytics-backlog.js';

let world: Isolated;
beforeAll(async () => {
  world = await isolated('analytics-backlog');
});
afterAll(() => world.cleanup());

describe('enqueueLedgerDay', () => {
  it('queues the ledger rows of a UTC day, whatever the TimeZone of the session', async () => {
    const database = new URL(world.config.DATABASE_URL).pathname.slice(1);
    await world.sql.unsafe(`ALTER DATABASE "${database}" SET timezone TO 'America/New_York'`);
    const times = [Date.UTC(2026, 2, 9, 23, 59, 59), Date.UTC(2026, 2, 10, 2), Date.UTC(2026, 2, 10, 12), Date.UTC(2026, 2, 10, 23), Date.UTC(2026, 2, 11)];
    const events = times.map((recordedAt) => {
      const { overCap: _overCap, ...event } = ledgeredEvent({ tenantId: 'ten_tz', recordedAt });
      return event;
    });
    await writeLedger(world.sql, stageEntries(events as never[]));
    const newYork = connectPostgres(world.config.DATABASE_URL, { max: 1 });
    try {
      expect((await newYork<{ tz: string }[]>`SELECT current_setting('TimeZone') AS tz`)[0].tz).toBe('America/New_York');
      expect(await enqueueLedgerDay(newYork, 'ten_tz', '2026-03-10')).toBe(3);
      const queued = await newYork<{ recorded_at: Date }[]>`
        SELECT l.recorded_at FROM analytics_backlog b JOIN usage_ledger l USING (tenant_id, event_id) ORDER BY l.recorded_at`;
      expect(queued.map((r) => r.recorded_at.getTime())).toEqual(times.slice(1, 4));
    } finally {
      await newYork.end({ timeout: 5 });
    }
  });
});
