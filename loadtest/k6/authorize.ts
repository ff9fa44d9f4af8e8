// POST /v1/authorize as an agent platform asks it before every tool call: VUS callers (default 16)
// each calling again as soon as it is answered, for DURATION (default 1m), going round the world's
// API keys, each with a session of its own. Passes at issue 14's bars: at least MIN_RATE calls/s
// (default 10,000) and the server's own time (its Server-Timing header) p99 under SERVER_P99_MS
// (default 1). Run k6 on another machine than the API, or its own CPU is what it measures.
//   npm run seed-demo > .bench/k6-world.json
//   k6 run -e WORLD=$PWD/.bench/k6-world.json -e VUS=16 loadtest/k6/authorize.ts
// npm run bench:authorize measures the same on one machine without k6 (BENCHMARKS.md, "Authorize").
import http from 'k6/http';
import { check } from 'k6';
import { Trend } from 'k6/metrics';
import type { Options } from 'k6/options';
import { loadWorld } from './lib/events.ts';

const world = loadWorld();
const env = __ENV;
const vus = Number(env.VUS ?? 16);
const minRate = Number(env.MIN_RATE ?? 10_000);
const serverP99Ms = Number(env.SERVER_P99_MS ?? 1);

/** The server's own time per call, from `Server-Timing: app;dur=<ms>`. */
const serverTime = new Trend('authorize_server_ms', true);

export const options: Options = {
  scenarios: {
    callers: { executor: 'constant-vus', vus, duration: env.DURATION ?? '1m' },
  },
  thresholds: {
    http_reqs: [`rate>=${minRate}`],
    authorize_server_ms: [`p(99)<${serverP99Ms}`],
    http_req_failed: ['rate<0.001'],
    checks: ['rate>0.999'],
  },
  summaryTrendStats: ['avg', 'p(50)', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
};

const headers = { authorization: `Bearer ${world.ingestToken}`, 'content-type': 'application/json' };
const bodies = world.actors.map((actor, i) => JSON.stringify({ api_key: actor.apiKey, session_id: `k6_${__VU}_${i}`, tool: 'read_database' }));
let next = __VU;

export default function (): void {
  const res = http.post(`${world.baseUrl}/v1/authorize`, bodies[next++ % bodies.length], { headers });
  const timing = /app;dur=([\d.]+)/.exec(String(res.headers['Server-Timing'] ?? ''));
  if (timing) serverTime.add(Number(timing[1]));
  check(res, {
    'status 200': (r) => r.status === 200,
    'answered allowed or refused with a code': (r) => {
      const body = r.json() as { allowed?: boolean; code?: string } | null;
      return body !== null && (body.allowed === true || typeof body.code === 'string');
    },
    'Server-Timing present': () => timing !== null,
  });
}
