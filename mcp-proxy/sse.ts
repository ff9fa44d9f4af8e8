/**
 * Reads Server-Sent Events as they stream through (the bytes themselves are forwarded
 * untouched): the `data` of each complete event, lines joined by "\n" as the spec says.
 */
export class SseReader {
  private readonly decoder = new TextDecoder();
  private buffer = '';

  /** The data of every event this chunk completes. */
  push(chunk: Uint8Array): string[] {
    this.buffer += this.decoder.decode(chunk, { stream: true });
    const out: string[] = [];
    for (;;) {
      const end = /\r\n\r\n|\n\n|\r\r/.exec(this.buffer);
      if (!end) break;
      const block = this.buffer.slice(0, end.index);
      this.buffer = this.buffer.slice(end.index + end[0].length);
      const data = dataOf(block);
      if (data !== undefined) out.push(data);
    }
    return out;
  }
}

function dataOf(block: string): string | undefined {
  const lines: string[] = [];
  for (const line of block.split(/\r\n|\n|\r/)) {
    if (line === 'data' || line.startsWith('data:')) lines.push(line.slice(5).replace(/^ /, ''));
  }
  return lines.length ? lines.join('\n') : undefined;
}

/** One SSE event carrying a JSON-RPC message, as an MCP server writes it. */
export function sseEvent(message: unknown): string {
  return `event: message\ndata: ${JSON.stringify(message)}\n\n`;
}
