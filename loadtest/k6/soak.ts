// A soak: RATE events/s (default 500) for DURATION (default 2h), retrying on backpressure.
// Finds what only time shows: memory growth, slow leaks, latency creeping up, a queue that
// drains a little slower than it fills. Aborts early if errors pass ERROR_RATE.
//   k6 run -e RATE=2000 -e DURATION=8h loadtest/k6/soak.ts
import type { Options } from 'k6/options';
import { constantRate, sendBatch, settings, summaryTrendStats } from './lib/ingest.ts';

export { setup } from './lib/ingest.ts';

export const options: Options = {
  scenarios: {
    soak: constantRate(Number(__ENV.RATE ?? 500), settings.duration ?? '2h'),
  },
  thresholds: {
    ingest_errors: [{ threshold: `rate<${settings.errorRate}`, abortOnFail: true, delayAbortEval: '1m' }],
    accepted_latency: [`p(95)<${settings.p95Ms}`, `p(99)<${settings.p99Ms}`],
    backpressure: ['rate<0.01'],
    events_abandoned: ['count==0'],
    events_rejected: ['count==0'],
  },
  summaryTrendStats,
};

export default function (data: { runId: string }): void {
  sendBatch(data.runId, true);
}
