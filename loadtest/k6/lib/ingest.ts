// Shared by the k6 scripts: posting a batch to POST /v1/events, the custom metrics, and the
// settings every script takes from the environment.
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import http from 'k6/http';
import { Counter, Rate, Trend } from 'k6/metrics';
import type { ConstantArrivalRateScenario } from 'k6/options';
import { EventMix, loadWorld, type World } from './events.ts';

export const settings = {
  /** Events per second offered (the request rate is this over BATCH). */
  rate: Number(__ENV.RATE ?? 1000),
  batch: Number(__ENV.BATCH ?? 50),
  duration: __ENV.DURATION,
  p95Ms: Number(__ENV.P95_MS ?? 200),
  p99Ms: Number(__ENV.P99_MS ?? 500),
  errorRate: Number(__ENV.ERROR_RATE ?? 0.01),
  maxRetries: Number(__ENV.MAX_RETRIES ?? 6),
  repeatShare: Number(__ENV.REPEAT_SHARE ?? 0.01),
};

/** Requests per second for an event rate at the configured batch size. */
export function requestRate(eventsPerSecond: number): number {
  return Math.max(1, Math.round(eventsPerSecond / settings.batch));
}

/** VUs to pre-allocate for a request rate: enough for requests of up to ~250 ms. */
export function vusFor(requestsPerSecond: number): { preAllocatedVUs: number; maxVUs: number } {
  return { preAllocatedVUs: Math.max(5, Math.ceil(requestsPerSecond / 4)), maxVUs: Math.max(50, requestsPerSecond * 4) };
}

/** A constant-arrival-rate scenario offering `eventsPerSecond` in batches of BATCH. */
export function constantRate(eventsPerSecond: number, duration: string): ConstantArrivalRateScenario {
  const rps = requestRate(eventsPerSecond);
  return { executor: 'constant-arrival-rate', rate: rps, timeUnit: '1s', duration, ...vusFor(rps) };
}

const eventsSent = new Counter('events_sent');
const eventsAccepted = new Counter('events_accepted');
const eventsDuplicate = new Counter('events_duplicate');
const eventsRejected = new Counter('events_rejected');
/** Events a client gave up on after MAX_RETRIES refusals: lost from the client's side. */
const eventsAbandoned = new Counter('events_abandoned');
/** Share of requests answered 429 (backpressure) or 503 (store unavailable). */
const backpressure = new Rate('backpressure');
/** Share of requests answered anything but 202, 429 or 503: real errors. */
const ingestErrors = new Rate('ingest_errors');
/** Latency of accepted requests only (a 429 is answered fast and would flatter http_req_duration). */
const acceptedLatency = new Trend('accepted_latency', true);

const world: World = loadWorld();
const url = `${world.baseUrl.replace(/\/$/, '')}/v1/events`;
const headers = { 'content-type': 'application/json', authorization: `Bearer ${world.ingestToken}` };
// 429 and 503 are the server asking the client to come back: expected, not failures of the request.
const expected = http.expectedStatuses(202, 429, 503);
let mix: EventMix | undefined;

interface IngestReply {
  accepted: number;
  duplicates: unknown[];
  rejected: { index: number; errors: { field: string; message: string }[] }[];
}

/**
 * Sends one batch of the event mix. With `retry`, a 429 or 503 is honoured like a well-behaved
 * client: wait Retry-After-Ms, else Retry-After (doubling on each refusal) and send the same events again.
 */
export function sendBatch(runId: string, retry: boolean): void {
  mix ??= new EventMix(world, `k6-${runId}-${exec.vu.idInTest}`, { repeatShare: settings.repeatShare, failedShare: 0.04 });
  const body = JSON.stringify({ events: mix.batch(settings.batch) });
  eventsSent.add(settings.batch);
  for (let attempt = 0; ; attempt++) {
    const res = http.post(url, body, { headers, responseCallback: expected, tags: { name: 'POST /v1/events' } });
    const refused = res.status === 429 || res.status === 503;
    backpressure.add(refused);
    ingestErrors.add(!refused && res.status !== 202);
    check(res, { 'answered 202 (or 429/503 with Retry-After)': (r) => r.status === 202 || (refused && !!r.headers['Retry-After']) });
    if (res.status === 202) {
      acceptedLatency.add(res.timings.duration);
      const reply = JSON.parse(res.body as string) as IngestReply;
      eventsAccepted.add(reply.accepted);
      eventsDuplicate.add(reply.duplicates.length);
      eventsRejected.add(reply.rejected.length);
      check(reply, { 'no event rejected': (r) => r.rejected.length === 0 });
      return;
    }
    if (!refused || !retry || attempt >= settings.maxRetries) {
      if (refused) eventsAbandoned.add(settings.batch);
      return;
    }
    const retryAfterSeconds = Number(res.headers['Retry-After-Ms']) / 1000 || Number(res.headers['Retry-After'] ?? 1);
    sleep(retryAfterSeconds * 2 ** Math.min(attempt, 4) * (0.8 + 0.4 * Math.random()));
  }
}

/** setup() of every script: a run id shared by every VU (setup runs once; its result is handed to each iteration). */
export function setup(): { runId: string } {
  return { runId: `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}` };
}

/** The latency statistics the end-of-test summary shows. */
export const summaryTrendStats = ['avg', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'];
