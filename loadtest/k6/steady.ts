// A steady rate: RATE events/s (default 1,000) in batches of BATCH (default 50) for DURATION
// (default 5m), after a warm-up rising from nothing to RATE over WARMUP (default 20s; 0s for none),
// as `npm run bench` ramps up before its clock: freshly started stage processes refuse load for
// their first seconds that the warm pipeline takes (BENCHMARKS.md, forty-ninth session). Passes
// when the ingest keeps up after the warm-up: p95/p99 latency under P95_MS/P99_MS, under
// ERROR_RATE errors, no backpressure; nothing rejected in the whole run.
//   npm run seed-demo > .bench/k6-world.json
//   k6 run -e WORLD=$PWD/.bench/k6-world.json -e RATE=2000 -e BATCH=100 loadtest/k6/steady.ts
import type { Options, Scenario } from 'k6/options';
import { constantRate, requestRate, sendBatch, settings, summaryTrendStats, vusFor } from './lib/ingest.ts';

export { setup } from './lib/ingest.ts';

const warmUpFor = __ENV.WARMUP ?? '20s';
const warmingUp = !/^0+[a-z]*$/.test(warmUpFor);
const scenarios: Record<string, Scenario> = {
  steady: { ...constantRate(settings.rate, settings.duration ?? '5m'), ...(warmingUp ? { startTime: warmUpFor } : {}) },
};
if (warmingUp) {
  const rps = requestRate(settings.rate);
  // Refused requests are sent again (Retry-After), so the warm-up loses nothing either.
  scenarios.warmUp = { executor: 'ramping-arrival-rate', startRate: 0, timeUnit: '1s', stages: [{ target: rps, duration: warmUpFor }], exec: 'warmUp', ...vusFor(rps) };
}

export const options: Options = {
  scenarios,
  thresholds: {
    'http_req_duration{scenario:steady}': [`p(95)<${settings.p95Ms}`, `p(99)<${settings.p99Ms}`],
    'http_req_failed{scenario:steady}': [`rate<${settings.errorRate}`],
    'ingest_errors{scenario:steady}': [`rate<${settings.errorRate}`],
    // At a rate the system sustains, it should never push back.
    'backpressure{scenario:steady}': ['rate<0.001'],
    events_rejected: ['count==0'],
    'checks{scenario:steady}': ['rate>0.99'],
  },
  summaryTrendStats,
};

export default function (data: { runId: string }): void {
  sendBatch(data.runId, false);
}

export function warmUp(data: { runId: string }): void {
  sendBatch(data.runId, true);
}
