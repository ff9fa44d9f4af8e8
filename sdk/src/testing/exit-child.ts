// A process that tracks three events and never flushes them itself: `idle` then runs out of
// work (beforeExit must flush), `wait` keeps running until SIGTERM (the signal must flush, then
// end the process by the same signal), `stop` keeps running until SIGTERM, where its own handler
// stops its work (the SDK closes the client, and the process ends when nothing is left). An optional third argument is the client's closeTimeoutMs;
// every error the client reports is written to stdout as `error <code> <message>`.
import { AgentMeter } from '../client.js';

const [url, mode, closeTimeoutMs] = process.argv.slice(2);
const meter = new AgentMeter({
  baseUrl: url,
  ingestToken: 'amt_test',
  flushIntervalMs: 60_000,
  retry: { initialDelayMs: 200, maxDelayMs: 200 },
  ...(closeTimeoutMs ? { closeTimeoutMs: Number(closeTimeoutMs) } : {}),
  onError: (err) => process.stdout.write(`error ${err.code} ${err.message}\n`),
});
for (let i = 0; i < 3; i++) void meter.track({ event_type: 'mcp.tool_invoked', api_key: 'sk_live_test_key', tool_name: mode });
if (mode === 'wait' || mode === 'stop') {
  const work = setInterval(() => {}, 1_000);
  if (mode === 'stop') process.on('SIGTERM', () => clearInterval(work));
  process.stdout.write('ready\n');
}
