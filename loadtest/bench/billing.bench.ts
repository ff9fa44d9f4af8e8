// npm run bench:billing: the billing lifecycle against a scratch PostgreSQL database.
//   1. invoice-rollup with and without prepaid credits (every customer has a grant in the second
//      run): the cost of drawing credits as usage is applied, in events per second and in the
//      Node CPU per event;
//   2. closing a month for every customer (closeDuePeriods), in invoices per second.
// Run it alone (flock -x /work/wt/cpu.lock); --customers N (1000), --events N per customer (40).
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { seedTenant } from '../../ops/seed.js';
import { rollUp } from '../../stages/invoice-rollup/index.js';
import { ledgeredEvent, stageEntries } from '../../stages/testing.js';
import { grantCredits } from '../../store/credits.js';
import { closeDuePeriods } from '../../store/invoices.js';
import { PlanCache } from '../../store/rate-plans.js';
import { isolated } from '../../test/support/isolated.js';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const CUSTOMERS = arg('customers', 1000);
const EVENTS = arg('events', 40);
const BATCH = 1000;
const MARCH = Date.UTC(2026, 2, 1);
const APRIL = Date.UTC(2026, 3, 1);
const MAY = Date.UTC(2026, 4, 1);

const uptime = () => `load average: ${loadavg().map((l) => l.toFixed(2)).join(', ')}`;
console.log(`before: ${uptime()}`);
const world = await isolated('bench-billing');
try {
  const tenant = await seedTenant(world.sql, {
    name: 'bench billing',
    pricing: { tool_invocations: { '*': '0.01' }, token_multipliers: { input_tokens: '0.000001' }, base_session_fee: '0.5', included_tool_count: 5 },
    customers: CUSTOMERS,
    teamsPerCustomer: 1,
    agentsPerTeam: 1,
    subscriptionsFrom: new Date(MARCH),
  });
  const plans = new PlanCache(world.sql);
  const eventsOf = (periodStart: number, periodEnd: number) =>
    tenant.customers.flatMap((customer) =>
      Array.from({ length: EVENTS }, (_, i) =>
        ledgeredEvent({
          tenantId: tenant.tenantId,
          sessionId: `s_${customer.id}_${i % 4}`,
          recordedAt: periodStart + 86_400_000 + i,
          inputTokens: 1000,
          attribution: { customerId: customer.id, teamId: customer.teams[0].id, agentId: customer.teams[0].agents[0].id },
          subscription: { subscriptionId: customer.subscriptionId, ratePlanVersionId: tenant.ratePlanVersionId, periodStart, periodEnd },
          cost: { total: 11_000_000n, tool: '*', breakdown: { tool: 10_000_000n, input_tokens: 1_000_000n } },
        }),
      ),
    );
  const rollAll = async (events: ReturnType<typeof eventsOf>) => {
    // Interleave customers as the stream would: batches of 1000 across many customers.
    events.sort((a, b) => (a.recordedAt - b.recordedAt) || (a.attribution.customerId < b.attribution.customerId ? -1 : 1));
    const started = performance.now();
    const cpuBefore = process.cpuUsage();
    for (let i = 0; i < events.length; i += BATCH) await rollUp(world.sql, plans, stageEntries(events.slice(i, i + BATCH)));
    const cpu = process.cpuUsage(cpuBefore);
    return { perSecond: events.length / ((performance.now() - started) / 1000), cpuUsPerEvent: (cpu.user + cpu.system) / events.length };
  };

  const plain = await rollAll(eventsOf(MARCH, APRIL));
  await world.sql.begin(async (tx) => {
    for (const customer of tenant.customers) {
      await grantCredits(tx, {
        id: `grant_${customer.id}`, tenantId: tenant.tenantId, customerId: customer.id, currency: 'USD', amountNano: 1_000_000_000_000n,
        priority: 100, source: 'purchase', expiresAt: null, description: null,
      });
    }
  });
  const withCredits = await rollAll(eventsOf(APRIL, MAY));

  const started = performance.now();
  const closed = await closeDuePeriods(world.sql, plans, { now: MAY + 86_400_000, graceMs: 0, lookbackMs: 400 * 86_400_000, tenantId: tenant.tenantId });
  const seconds = (performance.now() - started) / 1000;
  console.log(`${CUSTOMERS} customers x ${EVENTS} events per month`);
  // The stage's own CPU (this process: building, rating and merging the rows), PostgreSQL's apart.
  console.log(`invoice-rollup without credits: ${Math.round(plain.perSecond)} events/s, ${plain.cpuUsPerEvent.toFixed(1)} us of Node CPU per event`);
  console.log(
    `invoice-rollup with a grant per customer (credits drawn): ${Math.round(withCredits.perSecond)} events/s, ${withCredits.cpuUsPerEvent.toFixed(1)} us of Node CPU per event`,
  );
  console.log(`period close: ${closed.length} invoices (March and April) in ${seconds.toFixed(2)} s = ${Math.round(closed.length / seconds)} invoices/s`);
} finally {
  await world.cleanup();
  console.log(`after: ${uptime()}`);
}
