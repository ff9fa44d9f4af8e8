import type { Redis } from '../pipeline/redis.js';

/**
 * Reads a request body of at most `limit` bytes. A Content-Length over the limit is refused
 * before anything is read; a body without one (chunked) is counted as it streams and dropped
 * the moment it passes the limit. Returns undefined when the body is too large.
 */
export async function readLimitedBody(request: Request, limit: number): Promise<Uint8Array | undefined> {
  const declared = request.headers.get('content-length');
  if (declared !== null && Number(declared) > limit) return undefined;
  const stream = request.body;
  if (!stream) return new Uint8Array(0);
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      return undefined;
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  return Buffer.concat(chunks, size);
}

/**
 * True while the connection is lost (reconnecting or closed). Connections made by connectRedis
 * queue commands until Redis is back, up to their command timeout; an HTTP request should hear
 * 503 at once instead of holding its body in memory that long.
 */
export function redisDown(redis: Redis): boolean {
  return redis.status === 'reconnecting' || redis.status === 'close' || redis.status === 'end';
}
