/**
 * The SDK against the real pipeline: 5,000 events tracked while the HTTP server process is
 * SIGKILLed twice mid-batch and restarted; no event lost, none billed twice, the ledger's total
 * exact. The 100,000-event run of the same code is `npm run bench:sdk-soak`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSdkSoak, seedSoakTenant } from '../../loadtest/bench/sdk-soak.js';
import type { SeededTenant } from '../../ops/seed.js';
import { isolated, type Isolated } from '../support/isolated.js';
import { startPipeline, type RunningPipeline } from '../support/pipeline.js';

let world: Isolated;
let tenant: SeededTenant;
let pipeline: RunningPipeline;

beforeAll(async () => {
  world = await isolated('sdkrestart', { clickhouse: true });
  tenant = await seedSoakTenant(world.sql);
  pipeline = await startPipeline(world);
}, 180_000);

afterAll(async () => {
  await pipeline?.stop();
  await world?.cleanup();
}, 60_000);

describe('the SDK through API restarts', () => {
  it('delivers 5,000 events through two SIGKILLs of the API: the ledger holds each once, to the nano-unit', async () => {
    const result = await runSdkSoak({ sql: world.sql, pipeline, tenant, events: 5_000, kills: 2 });
    expect(result.errors).toEqual([]);
    expect(result.kills).toBe(2);
    // The kills cost the client something to recover from: refused connections at least.
    expect(result.retries).toBeGreaterThan(0);
    expect({ rows: result.ledgerRows, missing: result.missing, extra: result.extra, failed: result.failed, dropped: result.dropped }).toEqual({
      rows: 5_000,
      missing: 0,
      extra: 0,
      failed: 0,
      dropped: 0,
    });
    expect(result.ledgerTotalNano).toBe(result.expectedTotalNano);
    expect(result.exact).toBe(true);
  }, 240_000);
});
