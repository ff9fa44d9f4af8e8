// A steady rate: RATE events/s (default 1,000) in batches of BATCH (default 50) for DURATION
// (default 5m). Passes when the ingest keeps up: p95/p99 latency under P95_MS/P99_MS, under
// ERROR_RATE errors, no backpressure and nothing rejected.
//   npm run seed-demo > .bench/k6-world.json
//   k6 run -e WORLD=$PWD/.bench/k6-world.json -e RATE=2000 -e BATCH=100 loadtest/k6/steady.ts
import type { Options } from 'k6/options';
import { constantRate, sendBatch, settings, summaryTrendStats } from './lib/ingest.ts';

export { setup } from './lib/ingest.ts';

export const options: Options = {
  scenarios: {
    steady: constantRate(settings.rate, settings.duration ?? '5m'),
  },
  thresholds: {
    http_req_duration: [`p(95)<${settings.p95Ms}`, `p(99)<${settings.p99Ms}`],
    http_req_failed: [`rate<${settings.errorRate}`],
    ingest_errors: [`rate<${settings.errorRate}`],
    // At a rate the system sustains, it should never push back.
    backpressure: ['rate<0.001'],
    events_rejected: ['count==0'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats,
};

export default function (data: { runId: string }): void {
  sendBatch(data.runId, false);
}
