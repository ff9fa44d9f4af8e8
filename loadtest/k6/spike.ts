// A spike: RATE events/s (default 1,000) for a minute, then SPIKE_FACTOR times that (default
// 5) for SPIKE_DURATION (default 1m), then back to RATE for two minutes of recovery. Above
// capacity the ingest must answer 429 with Retry-After, quickly; the client waits and re-sends
// the same events. Passes when nothing but 202/429/503 comes back, no event is abandoned
// after MAX_RETRIES refusals, and accepted requests stay under P95_MS.
//   k6 run -e RATE=3000 -e SPIKE_FACTOR=5 loadtest/k6/spike.ts
import type { Options } from 'k6/options';
import { requestRate, sendBatch, settings, summaryTrendStats, vusFor } from './lib/ingest.ts';

export { setup } from './lib/ingest.ts';

const base = requestRate(settings.rate);
const peak = requestRate(settings.rate * Number(__ENV.SPIKE_FACTOR ?? 5));
const spikeFor = __ENV.SPIKE_DURATION ?? '1m';

export const options: Options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: base,
      timeUnit: '1s',
      stages: [
        { target: base, duration: '1m' },
        { target: peak, duration: '10s' },
        { target: peak, duration: spikeFor },
        { target: base, duration: '10s' },
        { target: base, duration: '2m' },
      ],
      // Waiting on Retry-After holds a VU: allow many.
      ...vusFor(peak * 4),
    },
  },
  thresholds: {
    ingest_errors: [`rate<${settings.errorRate}`],
    events_abandoned: ['count==0'],
    events_rejected: ['count==0'],
    accepted_latency: [`p(95)<${settings.p95Ms}`],
    // A refusal must be quick: the point of backpressure is to shed load cheaply.
    'http_req_duration{status:429}': ['p(95)<50'],
  },
  summaryTrendStats,
};

export default function (data: { runId: string }): void {
  sendBatch(data.runId, true);
}
