/**
 * Time-ordered event ids (ULID layout: 48 bits of milliseconds, then 80 random bits, in
 * Crockford base32), made on the client so that a retried batch carries the same ids and the
 * ledger bills each event once. Ids made in the same millisecond by one generator increase by
 * one in their random part, so they sort in the order they were made.
 */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
/** Random bytes drawn from Web Crypto at once, 10 per new millisecond (one call per 100 ids, not per id). */
const POOL_BYTES = 1_000;

export class EventIdGenerator {
  private lastTime = -1;
  private readonly random = new Uint8Array(10);
  private readonly pool = new Uint8Array(POOL_BYTES);
  private poolAt = POOL_BYTES;

  constructor(private readonly prefix = 'evt_') {}

  next(now = Date.now()): string {
    if (now > this.lastTime) {
      this.lastTime = now;
      if (this.poolAt === POOL_BYTES) {
        crypto.getRandomValues(this.pool);
        this.poolAt = 0;
      }
      this.random.set(this.pool.subarray(this.poolAt, this.poolAt + 10));
      this.poolAt += 10;
    } else {
      // Same (or an earlier: the clock stepped back) millisecond: keep the last time, add one.
      incrementBytes(this.random);
    }
    return this.prefix + encodeTime(this.lastTime) + encodeRandom(this.random);
  }
}

function encodeTime(ms: number): string {
  let out = '';
  let value = ms;
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[value % 32] + out;
    value = Math.floor(value / 32);
  }
  return out;
}

/** 80 bits as 16 base32 digits, 5 bits each, most significant first. */
function encodeRandom(bytes: Uint8Array): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET[(buffer >> bits) & 31];
    }
    buffer &= (1 << bits) - 1;
  }
  return out;
}

function incrementBytes(bytes: Uint8Array): void {
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] < 255) {
      bytes[i]++;
      return;
    }
    bytes[i] = 0;
  }
}

/** The millisecond an id was made (the first 10 characters after the prefix). */
export function eventIdTime(id: string, prefix = 'evt_'): number {
  const digits = id.slice(prefix.length, prefix.length + 10);
  let value = 0;
  for (const char of digits) {
    const digit = ALPHABET.indexOf(char);
    if (digit < 0) throw new Error(`not a time-ordered event id: ${id}`);
    value = value * 32 + digit;
  }
  return value;
}
