import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { PrefixMemoryPass } from './sampler.js';

let world: Isolated;
beforeAll(async () => {
  world = await isolated('sampler');
});
afterAll(async () => {
  await world?.cleanup();
});

describe('PrefixMemoryPass', () => {
  it('measures every key under the prefix a slice at a time, then starts the next pass over what is there then', async () => {
    const prefix = world.config.REDIS_PREFIX;
    const pipeline = world.redis.pipeline();
    for (let i = 0; i < 5_000; i++) pipeline.set(`${prefix}k:${i}`, 'x'.repeat(i % 50));
    await pipeline.exec();
    const pass = new PrefixMemoryPass(world.redis, prefix, 1);
    let steps = 0;
    let totals: { keys: number; bytes: number } | undefined;
    while (!totals && steps < 1_000) {
      totals = await pass.step();
      steps++;
    }
    expect(totals?.keys).toBe(5_000);
    expect(totals!.bytes).toBeGreaterThan(5_000 * 40);
    // One SCAN call's worth a step: 5,000 keys took several steps, not one burst.
    expect(steps).toBeGreaterThan(2);

    await world.redis.del(...Array.from({ length: 1_000 }, (_, i) => `${prefix}k:${i}`));
    let next: { keys: number; bytes: number } | undefined;
    for (let i = 0; !next && i < 1_000; i++) next = await pass.step();
    expect(next?.keys).toBe(4_000);
    expect(next!.bytes).toBeLessThan(totals!.bytes);
  });
});
