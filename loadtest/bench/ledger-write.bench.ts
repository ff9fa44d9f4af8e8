// npm run bench:ledger-write [-- --events 60000 --batches 100,300,1000 --rows 250,all --rounds 3 --repeats 0.01]
// What ledger-write's insert costs per event, by batch size and rows per INSERT statement: the
// stage's writeLedger against a scratch PostgreSQL database, one connection, fresh events each
// time (every row new, unless --repeats: that share of events is an earlier event of the round
// submitted again, with another ingest nonce, as `npm run bench`'s mix sends ~1%). Prints per
// event the CPU of this Node process, of its PostgreSQL backend (/proc/<pid>/stat) and both
// together, and the page faults of each (costly on some VMs: a string or Buffer over V8's 128 KiB
// large-object size is a fresh mapping faulted in page by page).
// Variants alternate, each round starting one later. A benchmark, not a test.
import { parseArgs } from 'node:util';
import { connectPostgres } from '../../pipeline/postgres.js';
import type { CheckedEvent } from '../../domain/flow.js';
import { writeLedger } from '../../stages/ledger-write/index.js';
import { ledgeredEvent, stageEntries } from '../../stages/testing.js';
import { isolated } from '../../test/support/isolated.js';
import { processTimes } from './sampler.js';

/** CPU ms and minor page faults of a process so far. */
function usage(pid: number | 'self'): { cpuMs: number; faults: number } {
  const t = processTimes(pid);
  return { cpuMs: (t.user + t.system) / 1000, faults: t.minorFaults };
}

const { values: args } = parseArgs({
  options: {
    events: { type: 'string', default: '60000' },
    batches: { type: 'string', default: '100,300,1000' },
    rows: { type: 'string', default: '250,all' },
    rounds: { type: 'string', default: '3' },
    repeats: { type: 'string', default: '0' },
  },
});
const EVENTS = Number(args.events);
const ROUNDS = Number(args.rounds);
const REPEATS = Number(args.repeats);

/** `count` events, a REPEATS share of them (evenly spread) a second submission of one of the 2,000 before it. */
function roundEvents(count: number): CheckedEvent[] {
  const events: CheckedEvent[] = [];
  for (let i = 0; i < count; i++) {
    const repeat = i > 0 && Math.floor((i + 1) * REPEATS) > Math.floor(i * REPEATS);
    if (!repeat) {
      events.push({ ...ledgeredEvent(), capCounters: [] });
      continue;
    }
    const back = 1 + (i % Math.min(i, 2_000)); // 1..min(i, 2,000) events back
    events.push({ ...events[i - back], ingestNonce: `again-${i}` });
  }
  return events;
}
const variants = args.batches.split(',').flatMap((batch) =>
  args.rows.split(',').map((rows) => ({ batch: Number(batch), rows: rows === 'all' ? Number.MAX_SAFE_INTEGER : Number(rows), name: `batch ${batch}, rows/statement ${rows}` })),
);

const world = await isolated('bench-ledger-write');
const sql = connectPostgres(world.config.DATABASE_URL, { max: 1 });
try {
  const [{ pid: backend }] = await sql<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
  const totals = new Map<string, { events: number; nodeMs: number; pgMs: number; nodeFaults: number; pgFaults: number; ms: number }>();
  // Round 0 warms up (JIT, the statement cache, the table's first pages) and is not counted.
  for (let round = 0; round <= ROUNDS; round++) {
    for (let v = 0; v < variants.length; v++) {
      const variant = variants[(v + round) % variants.length];
      const events = roundEvents(round === 0 ? Math.min(EVENTS, 5_000) : EVENTS);
      const node0 = usage('self');
      const pg0 = usage(backend);
      const t0 = performance.now();
      for (let start = 0; start < events.length; start += variant.batch) {
        await writeLedger(sql, stageEntries(events.slice(start, start + variant.batch)), undefined, variant.rows);
      }
      const ms = performance.now() - t0;
      const node1 = usage('self');
      const pg1 = usage(backend);
      if (round === 0) continue;
      const total = totals.get(variant.name) ?? { events: 0, nodeMs: 0, pgMs: 0, nodeFaults: 0, pgFaults: 0, ms: 0 };
      total.events += events.length;
      total.nodeMs += node1.cpuMs - node0.cpuMs;
      total.pgMs += pg1.cpuMs - pg0.cpuMs;
      total.nodeFaults += node1.faults - node0.faults;
      total.pgFaults += pg1.faults - pg0.faults;
      total.ms += ms;
      totals.set(variant.name, total);
      console.log(`round ${round} ${variant.name.padEnd(34)} ${Math.round((events.length / ms) * 1000)} events/s`);
    }
    await sql`TRUNCATE usage_ledger`;
  }
  console.log(`\n${ROUNDS} rounds of ${EVENTS} events; per event: CPU in us (Node, PostgreSQL, both) and page faults (Node, PostgreSQL)`);
  for (const [name, t] of totals) {
    const us = (ms: number) => ((ms * 1000) / t.events).toFixed(1).padStart(6);
    const per = (n: number) => (n / t.events).toFixed(3).padStart(6);
    console.log(`${name.padEnd(34)} ${String(Math.round((t.events / t.ms) * 1000)).padStart(7)} events/s | CPU ${us(t.nodeMs)} ${us(t.pgMs)} ${us(t.nodeMs + t.pgMs)} | faults ${per(t.nodeFaults)} ${per(t.pgFaults)}`);
  }
} finally {
  await sql.end();
  await world.cleanup();
}
