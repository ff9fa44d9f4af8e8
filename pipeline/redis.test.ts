import { afterEach, describe, expect, it, vi } from 'vitest';
import { createHash } from 'node:crypto';
import { subscribeControl } from './control.js';
import { createLogger } from './logger.js';
import { connectRedis, deleteKeysWithPrefix } from './redis.js';

afterEach(() => vi.restoreAllMocks());

describe('Redis connections during an outage', () => {
  it('print no "[ioredis] Unhandled error event" line per reconnect attempt (issue 9, defect 8: 147 lines in 5 s)', async () => {
    const printed = vi.spyOn(console, 'error').mockImplementation(() => {});
    const log = createLogger('redis-test', 'silent');
    const warned = vi.spyOn(log, 'warn');
    const stage = connectRedis('redis://127.0.0.1:1', 'outage-test', { log });
    const reader = connectRedis('redis://127.0.0.1:1', 'outage-reader', { blocking: true, log });
    const control = subscribeControl('redis://127.0.0.1:1', 'outage:', () => {}, log);
    try {
      await new Promise((r) => setTimeout(r, 2_000));
      const lines = printed.mock.calls.filter((args) => String(args[0]).includes('Unhandled error event'));
      expect(lines).toEqual([]);
      // One line per connection for the outage, not one per attempt.
      const connectionLines = warned.mock.calls.filter((args) => String(args[1]).includes('Redis connection failing'));
      expect(connectionLines.length).toBeLessThanOrEqual(3);
      expect(connectionLines.length).toBeGreaterThan(0);
    } finally {
      stage.disconnect();
      reader.disconnect();
      await control.close();
    }
  });
});

describe('arguments written in parts (patches/ioredis+5.9.3.patch)', () => {
  const prefix = `t:parts:${process.pid}:${Date.now()}:`;
  const big = Buffer.alloc(40_000, 'a');
  const tail = Buffer.from('-layer');
  const joined = Buffer.concat([big, tail]);

  /** Buffers of 16 KiB or more that ioredis made while `work` ran: a command joined in memory shows up here. */
  async function largeBuffersDuring(work: () => Promise<unknown>): Promise<number> {
    const allocUnsafe = vi.spyOn(Buffer, 'allocUnsafe');
    const concat = vi.spyOn(Buffer, 'concat');
    try {
      await work();
      const sizes = [...allocUnsafe.mock.calls.map(([size]) => size), ...concat.mock.results.map((r) => (r.value as Buffer).length)];
      return sizes.filter((size) => size >= 16 * 1024).length;
    } finally {
      allocUnsafe.mockRestore();
      concat.mockRestore();
    }
  }

  it('store the parts one after the other, in a command, a script call and a pipeline, without joining them first', async () => {
    const redis = connectRedis('redis://127.0.0.1:6379', 'parts-test');
    try {
      expect(await largeBuffersDuring(() => redis.call('SET', `${prefix}a`, { bulkParts: [big, tail] } as never))).toBe(0);
      expect((await redis.getBuffer(`${prefix}a`))!.equals(joined)).toBe(true);

      // A long command of plain Buffers is written in pieces too; a short one as before.
      expect(await largeBuffersDuring(() => redis.set(`${prefix}b`, big))).toBe(0);
      expect((await redis.getBuffer(`${prefix}b`))!.equals(big)).toBe(true);
      await redis.call('SET', `${prefix}c`, { bulkParts: [Buffer.from('ab'), Buffer.from('cd')] } as never);
      expect(await redis.get(`${prefix}c`)).toBe('abcd');

      // The script sees one argument: the parts joined.
      const seen = (await redis.call('EVAL', 'return {string.len(ARGV[1]), redis.sha1hex(ARGV[1]), ARGV[2]}', 0, { bulkParts: [big, tail] } as never, 'after')) as [number, string, string];
      expect(seen).toEqual([joined.length, createHash('sha1').update(joined).digest('hex'), 'after']);

      const replies = await redis
        .pipeline()
        .set(`${prefix}d`, 'x')
        .call('SET', `${prefix}e`, { bulkParts: [tail, big] } as never)
        .set(`${prefix}f`, big)
        .get(`${prefix}d`)
        .exec();
      expect(replies!.map(([err, value]) => err ?? value)).toEqual(['OK', 'OK', 'OK', 'x']);
      expect((await redis.getBuffer(`${prefix}e`))!.equals(Buffer.concat([tail, big]))).toBe(true);
      expect((await redis.getBuffer(`${prefix}f`))!.equals(big)).toBe(true);
    } finally {
      await deleteKeysWithPrefix(redis, prefix);
      redis.disconnect();
    }
  });
});
