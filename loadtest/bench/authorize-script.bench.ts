/**
 * What Redis spends inside authorize's script (pipeline/lua/authorize-1.lua), per decision: the
 * requests authorize.bench.ts makes (64 agents of 8 customers; 5 pause flags, the sliding rate
 * window, the sessions in use, 2 hard caps with their override keys), decided `--per-call` at a
 * time through `admit` (pipeline/admission.ts), 4 script calls in flight, no HTTP and no other
 * load, each `--per-call` on agents of its own (a rate window holds every call of the last minute,
 * so a run's windows grow with it: ~700 members each at the end of 45,000 decisions). From INFO commandstats, read before and after: the time inside EVALSHA, of which in the
 * commands the script calls (ZADD, ZREMRANGEBYSCORE, ZCARD, PEXPIRE, MGET); the rest is the
 * script itself (decoding its arguments, Lua, `redis.call`, encoding its reply).
 *
 *   npm run bench:authorize-script -- [--decisions 40000] [--per-call 1,4,16]
 */
import { parseArgs } from 'node:util';
import { admit, type AdmissionRequest } from '../../pipeline/admission.js';
import { partitionedKey } from '../../pipeline/keys.js';
import { isolated } from '../../test/support/isolated.js';
import { redisCommandStats } from './sampler.js';

const { values } = parseArgs({
  options: {
    decisions: { type: 'string', default: '40000' },
    'per-call': { type: 'string', default: '1,4,16' },
  },
});
const decisions = Number(values.decisions);
const perCalls = values['per-call'].split(',').map(Number);
const IN_FLIGHT = 4;
const AGENTS = 64;

const world = await isolated('authscript');
const key = (name: string) => partitionedKey(world.config.REDIS_PREFIX, name, 0);

/** Agent i's request (of the agents of run `ns`), as authorize builds it for an API key of that agent naming session `sess_<i % 16>`. */
function requestOf(ns: string, i: number, member: string): AdmissionRequest {
  const agent = `agt_${ns}_${i}`;
  const customer = `cus_${i % 8}`;
  const session = `sess_${i % 16}`;
  return {
    flagKeys: ['api_key:key_' + i, `agent:${agent}`, `team:team_${i % 16}`, `customer:${customer}`, `session:${session}`].map((s) => key(`paused:${s}`)),
    rate: { key: key(`ratewin:agent:${agent}`), limit: 1_000_000_000, windowMs: 60_000, member },
    sessions: { key: key(`sessions-in-use:agent:${agent}`), max: 1000, session, idleMs: 600_000 },
    budgets: [`cap_agent_${i}`, `cap_customer_${i % 8}`].map((cap, b) => ({
      counterKey: key(`cap:${cap}:2026-12`),
      limit: b === 0 ? 100_000_000_000_000_000n : 1_000_000_000_000_000_000n,
      hard: true,
      overrideKey: key(`caplifted:${cap}:2026-12`),
    })),
  };
}

const INNER = ['zadd', 'zremrangebyscore', 'zcard', 'pexpire', 'mget'];
let seq = 0;

/** Each run its own agents, so every run starts from empty rate windows and finds the same sizes. */
async function run(ns: string, perCall: number, total: number): Promise<{ wallUs: number; scriptUs: number; commandsUs: number; commands: number }> {
  let next = 0;
  const anchor = key('authorize');
  const before = await redisCommandStats(world.redis);
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < total) {
        const batch = Array.from({ length: Math.min(perCall, total - next) }, () => requestOf(ns, next++ % AGENTS, `m${seq++}`));
        const replies = await admit(world.redis, anchor, batch);
        if (replies.some((r) => r.verdict.kind !== 'ok')) throw new Error(`a decision was not ok: ${JSON.stringify(replies.find((r) => r.verdict.kind !== 'ok'))}`);
      }
    }),
  );
  const wallUs = Number(process.hrtime.bigint() - started) / 1000;
  const after = await redisCommandStats(world.redis);
  const delta = (name: string) => {
    const a = after.get(name);
    const b = before.get(name);
    return { calls: (a?.calls ?? 0) - (b?.calls ?? 0), usec: (a?.usec ?? 0) - (b?.usec ?? 0) };
  };
  let commandsUs = 0;
  let commands = 0;
  for (const name of INNER) {
    const d = delta(name);
    commandsUs += d.usec;
    commands += d.calls;
  }
  return { wallUs, scriptUs: delta('evalsha').usec + delta('eval').usec, commandsUs, commands };
}

try {
  console.log(`authorize-1.lua: ${decisions} decisions per run, ${IN_FLIGHT} script calls in flight, Redis alone (no HTTP); us per decision`);
  for (const perCall of perCalls) {
    const ns = `r${perCall}_${seq}`;
    await run(ns, perCall, Math.min(decisions, 5_000)); // warm: the keys exist, the windows hold members
    const r = await run(ns, perCall, decisions);
    const per = (us: number) => (us / decisions).toFixed(2);
    console.log(
      `${String(perCall).padStart(2)} per call: in the script ${per(r.scriptUs)}, of which its ${(r.commands / decisions).toFixed(1)} commands ${per(r.commandsUs)} and the rest ${per(r.scriptUs - r.commandsUs)} | wall ${per(r.wallUs)}`,
    );
  }
} finally {
  await world.cleanup();
}
