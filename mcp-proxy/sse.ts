/**
 * Reads Server-Sent Events as they stream through (the bytes themselves are forwarded
 * untouched): the `data` of each complete event, lines joined by "\n" as the spec says.
 * Works on the bytes: only a complete event is decoded (its end is ASCII, so a multi-byte
 * character split between chunks is whole by then), and a chunk that completes no event costs
 * a scan of its bytes and nothing else.
 */
export class SseReader {
  /** Bytes of an event not complete yet. */
  private rest: Uint8Array | undefined;

  /** The data of every event this chunk completes. */
  push(chunk: Uint8Array): string[] {
    let bytes = chunk;
    let from = 0;
    if (this.rest) {
      bytes = new Uint8Array(this.rest.length + chunk.length);
      bytes.set(this.rest);
      bytes.set(chunk, this.rest.length);
      // The end may straddle the two: look again from a few bytes back.
      from = Math.max(0, this.rest.length - 3);
      this.rest = undefined;
    }
    const out: string[] = [];
    let start = 0;
    for (;;) {
      const end = eventEnd(bytes, Math.max(start, from));
      if (end < 0) break;
      const data = dataOf(DECODER.decode(bytes.subarray(start, end)));
      if (data !== undefined) out.push(data);
      start = end + (bytes[end] === 0x0d && bytes[end + 1] === 0x0a ? 4 : 2);
    }
    if (start < bytes.length) this.rest = bytes.slice(start);
    return out;
  }
}

const DECODER = new TextDecoder();

/**
 * Where the first blank line (the end of an event) starts at or after `from`: "\r\n\r\n", "\n\n"
 * or "\r\r", the earliest; -1 when there is none yet.
 */
function eventEnd(bytes: Uint8Array, from: number): number {
  for (let i = from; i < bytes.length - 1; i++) {
    const c = bytes[i];
    if (c === 0x0a) {
      if (bytes[i + 1] === 0x0a) return i;
    } else if (c === 0x0d) {
      const next = bytes[i + 1];
      if (next === 0x0d) return i;
      if (next === 0x0a && bytes[i + 2] === 0x0d && bytes[i + 3] === 0x0a) return i;
    }
  }
  return -1;
}

function dataOf(block: string): string | undefined {
  let data: string | undefined;
  for (const line of block.split(/\r\n|\n|\r/)) {
    if (line !== 'data' && !line.startsWith('data:')) continue;
    const value = line.charCodeAt(5) === 0x20 ? line.slice(6) : line.slice(5);
    data = data === undefined ? value : `${data}\n${value}`;
  }
  return data;
}

/** One SSE event carrying a JSON-RPC message, as an MCP server writes it. */
export function sseEvent(message: unknown): string {
  return `event: message\ndata: ${JSON.stringify(message)}\n\n`;
}
