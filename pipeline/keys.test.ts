import { describe, expect, it } from 'vitest';
import { hashTag, limitFlagsChannel, partitionedKey } from './keys.js';
import { keySlot } from './redis.js';

describe('hashTag', () => {
  it('reads the tag as Redis does: the first { to the next }, when not empty', () => {
    expect(hashTag(partitionedKey('t:', 'paused:x', 3))).toBe('p3');
    expect(hashTag('foo{bar}baz{qux}')).toBe('bar');
    expect(hashTag('a{}b{c}')).toBeUndefined();
    expect(hashTag('x}{y')).toBeUndefined();
    expect(hashTag('nokey')).toBeUndefined();
  });

  it('gives keySlot the slots Redis gives (CLUSTER KEYSLOT on the local cluster, ops/services.sh cluster)', () => {
    // Values read from `redis-cli -p 7100 cluster keyslot <key>`.
    expect([keySlot('x:{p0}'), keySlot('a{}b'), keySlot('{}{x}'), keySlot('foo{bar}baz'), keySlot('nokey'), keySlot('x}{y')]).toEqual([
      15882, 13694, 3257, 5061, 11187, 9970,
    ]);
  });

  it('names the flag channel of a partitioned key after its tag, and none for a key without one', () => {
    expect(limitFlagsChannel(partitionedKey('t:', 'paused:x', 3))).toBe('agentmeter:limit-flags:{p3}');
    expect(limitFlagsChannel('paused:x')).toBeUndefined();
  });
});
