// Preloaded into a benchmark child (`node --import ./stall-monitor.ts`, `bench:mcp-proxy --monitor`):
// what stalls its event loop. SIGUSR2 once: start counting (the measured seconds begin); SIGUSR2
// again: print to stderr the event-loop delay (sampled every 5 ms) and the GC pauses since.
import { getHeapSpaceStatistics } from 'node:v8';
import { monitorEventLoopDelay, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';

const loop = monitorEventLoopDelay({ resolution: 5 });
const gc = new Map<string, { count: number; totalMs: number; maxMs: number; over2ms: number }>();
const GC_KINDS: Record<number, string> = { 1: 'scavenge', 2: 'mark-compact', 4: 'incremental', 8: 'weak-callbacks', 16: 'scavenge (minor mc)' };
let counting = false;
new PerformanceObserver((list) => {
  if (!counting) return;
  for (const entry of list.getEntries() as (PerformanceEntry & { detail?: { kind?: number } })[]) {
    const kind = GC_KINDS[entry.detail?.kind ?? 0] ?? String(entry.detail?.kind);
    const line = gc.get(kind) ?? { count: 0, totalMs: 0, maxMs: 0, over2ms: 0 };
    line.count++;
    line.totalMs += entry.duration;
    line.maxMs = Math.max(line.maxMs, entry.duration);
    if (entry.duration > 2) line.over2ms++;
    gc.set(kind, line);
  }
}).observe({ entryTypes: ['gc'] });

process.on('SIGUSR2', () => {
  if (!counting) {
    counting = true;
    gc.clear();
    loop.reset();
    loop.enable();
    return;
  }
  counting = false;
  loop.disable();
  const ms = (ns: number) => (ns / 1e6).toFixed(2);
  const newSpace = getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.space_size ?? 0;
  const gcs = [...gc].map(([kind, l]) => `${kind} ${l.count}x total ${l.totalMs.toFixed(1)} ms max ${l.maxMs.toFixed(2)} ms (${l.over2ms} over 2 ms)`).join('; ');
  process.stderr.write(
    `stall-monitor ${process.argv[1]?.split('/').pop()}: event-loop delay (5 ms sampling) p50 ${ms(loop.percentile(50))} p90 ${ms(loop.percentile(90))} p99 ${ms(loop.percentile(99))} max ${ms(loop.max)} ms over ${loop.count} samples; new space ${(newSpace / 2 ** 20).toFixed(0)} MiB; GC: ${gcs || 'none'}\n`,
  );
});
