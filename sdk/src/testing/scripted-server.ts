import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { WireEvent } from '../events.js';

/** One request the scripted server received. */
export interface Seen {
  path: string;
  at: number;
  body: { events?: (WireEvent & Record<string, any>)[] } & Record<string, unknown>;
}

export type Script = (seen: Seen, req: IncomingMessage, res: ServerResponse) => void;

/**
 * An HTTP server answering each request by `script`, for the SDK's own tests of its HTTP
 * behaviour (statuses on demand); `seen` lists the requests in arrival order.
 */
export async function scriptedServer(script: Script): Promise<{ url: string; seen: Seen[]; server: Server; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const entry: Seen = { path: req.url ?? '', at: Date.now(), body: JSON.parse(Buffer.concat(chunks).toString() || '{}') };
      seen.push(entry);
      script(entry, req, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    server,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

export function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

/** The ingest API's 202 for every event of the request. */
export function acceptAll(seen: Seen, _req: IncomingMessage, res: ServerResponse): void {
  json(res, 202, { accepted: seen.body.events?.length ?? 0, duplicates: [], rejected: [] });
}
