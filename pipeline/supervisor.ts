import { spawn, type ChildProcess } from 'node:child_process';
import { setPriority } from 'node:os';
import type { Logger } from './logger.js';

export interface ChildSpec {
  /** Unique per process, e.g. "price#1". */
  name: string;
  command: string;
  args: string[];
  env?: Record<string, string>;
  /** Niceness (-20 to 19; below the parent's needs root or CAP_SYS_NICE): higher yields the CPU to the others when it is short. */
  nice?: number;
}

export interface Supervisor {
  /** Sends SIGTERM to every child, waits for them (SIGKILL after graceMs), resolves when all exited. */
  stop(): Promise<void>;
  children(): ReadonlyMap<string, ChildProcess>;
}

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10_000;
const STABLE_AFTER_MS = 30_000;

/** Runs each child, restarting it with backoff whenever it exits unasked. */
export function supervise(specs: ChildSpec[], log: Logger, graceMs = 35_000): Supervisor {
  const running = new Map<string, ChildProcess>();
  const exited = new Map<string, Promise<void>>();
  let stopping = false;

  const launch = (spec: ChildSpec, backoff: number) => {
    const startedAt = Date.now();
    const child = spawn(spec.command, spec.args, { env: { ...process.env, ...spec.env }, stdio: 'inherit' });
    running.set(spec.name, child);
    if (spec.nice && child.pid !== undefined) {
      try {
        setPriority(child.pid, spec.nice);
      } catch (err) {
        log.warn({ child: spec.name, err }, 'cannot set the niceness of the child; it runs at its parent\'s');
      }
    }
    exited.set(
      spec.name,
      new Promise((resolve) => {
        child.on('exit', (code, signal) => {
          running.delete(spec.name);
          resolve();
          if (stopping) return;
          const next = Date.now() - startedAt > STABLE_AFTER_MS ? MIN_BACKOFF_MS : Math.min(backoff * 2, MAX_BACKOFF_MS);
          log.warn({ child: spec.name, code, signal, restartInMs: next }, 'child exited; restarting');
          setTimeout(() => !stopping && launch(spec, next), next);
        });
      }),
    );
    log.info({ child: spec.name, pid: child.pid }, 'child started');
  };

  for (const spec of specs) launch(spec, MIN_BACKOFF_MS / 2);

  return {
    children: () => running,
    async stop() {
      stopping = true;
      for (const child of running.values()) child.kill('SIGTERM');
      const killer = setTimeout(() => {
        for (const child of running.values()) child.kill('SIGKILL');
      }, graceMs);
      await Promise.all(exited.values());
      clearTimeout(killer);
    },
  };
}
