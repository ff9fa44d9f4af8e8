import { afterEach, describe, expect, it, vi } from 'vitest';
import { subscribeControl } from './control.js';
import { createLogger } from './logger.js';
import { connectRedis } from './redis.js';

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
