import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replaceIfUnchanged } from './scripts.js';
import { isolated, type Isolated } from '../test/support/isolated.js';

let world: Isolated;
beforeAll(async () => {
  world = await isolated('scripts');
});
afterAll(async () => {
  await world?.cleanup();
});

describe('replaceIfUnchanged (replaceIfUnchanged-1.lua)', () => {
  it('deletes or sets a key only while it holds the value read; an absent key is read as null', async () => {
    const key = `${world.config.REDIS_PREFIX}cas`;
    await world.redis.set(key, 'first');
    expect(await replaceIfUnchanged(world.redis, key, 'other')).toBe(false);
    expect(await world.redis.get(key)).toBe('first');
    expect(await replaceIfUnchanged(world.redis, key, null, { value: 'x', expiresAt: Date.now() + 60_000 })).toBe(false);
    expect(await world.redis.get(key)).toBe('first');

    const expiresAt = Date.now() + 60_000;
    expect(await replaceIfUnchanged(world.redis, key, 'first', { value: 'second', expiresAt })).toBe(true);
    expect(await world.redis.get(key)).toBe('second');
    expect(await world.redis.pexpiretime(key)).toBe(expiresAt);

    expect(await replaceIfUnchanged(world.redis, key, 'second')).toBe(true);
    expect(await world.redis.exists(key)).toBe(0);
    expect(await replaceIfUnchanged(world.redis, key, 'second')).toBe(false);

    expect(await replaceIfUnchanged(world.redis, key, null, { value: 'third', expiresAt })).toBe(true);
    expect(await world.redis.get(key)).toBe('third');
    await world.redis.del(key);
  });
});
