/**
 * Flush on process exit, only where there is a Node-like `process` (edge runtimes have none or
 * a stub without `on`; there, call `close()` yourself, e.g. in `waitUntil`).
 *
 * One set of process listeners serves every client. `beforeExit` (the event loop ran dry)
 * flushes them, each for at most its close timeout (the client stays usable: an application may
 * schedule more work from there). SIGINT/SIGTERM close them (bounded by each client's close
 * timeout) and then, when no other listener of that signal exists, re-raise it so the process
 * ends the way it would have without us; an application with its own handler keeps control.
 * A client keeps the process alive while it flushes or closes, so a retry's backoff met then is
 * waited for (up to the close timeout) instead of the process ending in the middle of it.
 * `process.exit()` cannot wait for anything: call `await meter.close()` before it.
 */
export interface ExitHooks {
  /** Sends what is buffered, bounded by the client's close timeout; only called when something is. */
  flush(): Promise<unknown>;
  hasPending(): boolean;
  close(): Promise<void>;
}

interface ProcessLike {
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  off(event: string, listener: (...args: unknown[]) => void): unknown;
  listenerCount(event: string): number;
  kill(pid: number, signal: string): unknown;
  pid: number;
}

const clients = new Set<ExitHooks>();
let installed = false;
const SIGNALS = ['SIGINT', 'SIGTERM'] as const;

function nodeProcess(): ProcessLike | undefined {
  const candidate = (globalThis as { process?: Partial<ProcessLike> }).process;
  return candidate && typeof candidate.on === 'function' && typeof candidate.off === 'function' && typeof candidate.listenerCount === 'function'
    ? (candidate as ProcessLike)
    : undefined;
}

async function closeAll(): Promise<void> {
  await Promise.allSettled([...clients].map((client) => client.close()));
}

const onBeforeExit = () => {
  for (const client of clients) if (client.hasPending()) void client.flush().catch(() => {});
};

const onSignal = (signal: unknown) => {
  const proc = nodeProcess();
  void closeAll().finally(() => {
    if (!proc || typeof signal !== 'string') return;
    proc.off(signal, onSignal);
    if (proc.listenerCount(signal) === 0) proc.kill(proc.pid, signal);
  });
};

/** Registers a client to flush and close at process exit; returns its unregistration. */
export function flushOnExit(client: ExitHooks): () => void {
  const proc = nodeProcess();
  if (!proc) return () => {};
  clients.add(client);
  if (!installed) {
    installed = true;
    proc.on('beforeExit', onBeforeExit);
    for (const signal of SIGNALS) proc.on(signal, onSignal);
  }
  return () => {
    clients.delete(client);
    if (clients.size === 0 && installed) {
      installed = false;
      proc.off('beforeExit', onBeforeExit);
      for (const signal of SIGNALS) proc.off(signal, onSignal);
    }
  };
}
