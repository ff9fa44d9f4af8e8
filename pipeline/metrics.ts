import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Metrics of one process, served at /metrics beside /healthz and /readyz. */
export class Metrics {
  readonly registry = new Registry();
  readonly eventsIn: Counter<'stage'>;
  readonly eventsOut: Counter<'stage' | 'stream'>;
  readonly batchSeconds: Histogram<'stage'>;
  readonly lag: Gauge<'stage' | 'stream'>;
  readonly pending: Gauge<'stage'>;
  readonly deadLetters: Counter<'stage'>;
  readonly errors: Counter<'stage' | 'kind'>;
  readonly paused: Gauge<'stage'>;
  readonly gateHeld: Counter<'stage' | 'bound'>;
  readonly cacheLookups: Counter<'cache' | 'result'>;
  readonly duplicates: Counter<'stage'>;

  constructor(processName: string) {
    this.registry.setDefaultLabels({ process: processName });
    collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.eventsIn = new Counter({ name: 'am_events_in_total', help: 'Entries read by a stage', labelNames: ['stage'], registers });
    this.eventsOut = new Counter({
      name: 'am_events_out_total',
      help: 'Entries forwarded by a stage, per output stream',
      labelNames: ['stage', 'stream'],
      registers,
    });
    this.batchSeconds = new Histogram({
      name: 'am_batch_duration_seconds',
      help: 'Time from reading a batch to its ack',
      labelNames: ['stage'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.lag = new Gauge({ name: 'am_stream_lag', help: 'Entries not yet delivered to a group', labelNames: ['stage', 'stream'], registers });
    this.pending = new Gauge({ name: 'am_pending', help: 'Entries delivered, not yet acked, of a stage group', labelNames: ['stage'], registers });
    this.deadLetters = new Counter({ name: 'am_dead_letters_total', help: 'Entries moved to a dead-letter stream', labelNames: ['stage'], registers });
    this.errors = new Counter({ name: 'am_errors_total', help: 'Errors by kind', labelNames: ['stage', 'kind'], registers });
    this.paused = new Gauge({ name: 'am_backpressure_paused', help: '1 while a stage waits for its output to drain', labelNames: ['stage'], registers });
    this.gateHeld = new Counter({
      name: 'am_gate_held_seconds_total',
      help: 'Time a backpressure gate was closed, by the bound that held it: queue (its marks), age, after (the stream after the queue)',
      labelNames: ['stage', 'bound'],
      registers,
    });
    this.duplicates = new Counter({
      name: 'am_duplicates_total',
      help: 'Second submissions of an event_id already in the ledger (counted, not billed)',
      labelNames: ['stage'],
      registers,
    });
    this.cacheLookups = new Counter({ name: 'am_cache_lookups_total', help: 'Cache lookups by result (hit, miss)', labelNames: ['cache', 'result'], registers });
  }

  /** A gate's `onHeld` for a stage (or the ingest): counts the ms each bound held it as seconds of am_gate_held_seconds_total. */
  gateHeldBy(stage: string): (bound: string, ms: number) => void {
    return (bound, ms) => this.gateHeld.inc({ stage, bound }, ms / 1000);
  }
}

export interface HealthState {
  ready(): boolean;
}

/** A small HTTP server for stage processes: /metrics, /healthz (alive), /readyz (serving). */
export function serveMetrics(metrics: Metrics, port: number, host: string, health: HealthState): Promise<Server> {
  const server = createServer(async (req, res) => {
    if (req.url === '/metrics') {
      res.setHeader('content-type', metrics.registry.contentType);
      res.end(await metrics.registry.metrics());
    } else if (req.url === '/healthz') {
      res.end('ok');
    } else if (req.url === '/readyz') {
      const ready = health.ready();
      res.statusCode = ready ? 200 : 503;
      res.end(ready ? 'ready' : 'not ready');
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
