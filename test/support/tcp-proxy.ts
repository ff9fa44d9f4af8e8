import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy in front of a real service (PostgreSQL, ClickHouse, Redis), to cut it off the way
 * a network fault would, with the service itself left running:
 * - `cut('reset')`: every connection is reset and new ones are reset at once (refused service);
 * - `cut('blackhole')`: connections stay open but nothing passes either way (a partition or a
 *   frozen peer: the client hangs until its own timeouts fire);
 * - `restore()`: traffic flows again (a blackholed connection resumes where it stopped).
 */
export class TcpProxy {
  private mode: 'open' | 'reset' | 'blackhole' = 'open';
  private readonly pairs = new Set<[Socket, Socket]>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(target: { host?: string; port: number }, listenPort = 0): Promise<TcpProxy> {
    const host = target.host ?? '127.0.0.1';
    let proxy!: TcpProxy;
    const server = createServer((client) => {
      client.on('error', () => {});
      if (proxy.mode === 'reset') {
        client.resetAndDestroy();
        return;
      }
      const upstream = createConnection({ host, port: target.port });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
      const pair: [Socket, Socket] = [client, upstream];
      proxy.pairs.add(pair);
      const forget = () => proxy.pairs.delete(pair);
      client.on('close', () => {
        forget();
        upstream.destroy();
      });
      upstream.on('close', () => {
        forget();
        client.destroy();
      });
      if (proxy.mode === 'blackhole') {
        client.pause();
        upstream.pause();
      } else {
        client.pipe(upstream);
        upstream.pipe(client);
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(listenPort, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    proxy = new TcpProxy(server, typeof address === 'object' && address ? address.port : listenPort);
    return proxy;
  }

  get url(): string {
    return `127.0.0.1:${this.port}`;
  }

  cut(mode: 'reset' | 'blackhole' = 'reset'): void {
    if (this.mode === 'blackhole' && mode === 'blackhole') return;
    this.mode = mode;
    for (const [client, upstream] of this.pairs) {
      if (mode === 'reset') {
        client.resetAndDestroy();
        upstream.destroy();
      } else {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    }
    if (mode === 'reset') this.pairs.clear();
  }

  restore(): void {
    if (this.mode !== 'blackhole') {
      this.mode = 'open';
      return;
    }
    this.mode = 'open';
    for (const [client, upstream] of this.pairs) {
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
      upstream.resume();
    }
  }

  async close(): Promise<void> {
    this.cut('reset');
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
