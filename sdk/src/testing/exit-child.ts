// A process that tracks three events and never flushes them itself: `idle` then runs out of
// work (beforeExit must flush), `wait` keeps running until SIGTERM (the signal must flush, then
// end the process by the same signal).
import { AgentMeter } from '../client.js';

const [url, mode] = process.argv.slice(2);
const meter = new AgentMeter({ baseUrl: url, ingestToken: 'amt_test', flushIntervalMs: 60_000 });
for (let i = 0; i < 3; i++) void meter.track({ event_type: 'mcp.tool_invoked', api_key: 'sk_live_test_key', tool_name: mode });
if (mode === 'wait') {
  setInterval(() => {}, 1_000);
  process.stdout.write('ready\n');
}
