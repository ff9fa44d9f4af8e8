// The pipeline at a glance: every stream and partition, every consumer group's lag, pending
// entries and consumers, dead letters per stage, rejected events per code, throughput and
// Redis memory.
//   npm run status                      one table (samples throughput over ~1 s)
//   npm run status -- --json            the same as one JSON object
//   npm run status -- --watch           redraws every second (with --json: one JSON line per second)
//   npm run status -- --drain 60        first waits up to 60 s until no group has lag or pending entries
import { loadConfig } from '../pipeline/config.js';
import { collectStatus, isDrained, sampleEntriesRead, type CollectOptions, type StatusSnapshot } from '../store/pipeline-status.js';
import { connectCliRedis, isMain, numberFlag, parseArgs, runCli, UsageError } from './cli.js';
import { formatBytes, formatDuration, oneLine, renderTable } from './table.js';

const USAGE = `usage: npm run status -- [--json] [--watch] [--drain SECONDS] [--rejected-scan N]
  --json             machine-readable output (with --watch: one JSON object per line)
  --watch            refresh every second until interrupted
  --drain SECONDS    first wait (up to SECONDS) until no consumer group has lag or pending entries
  --rejected-scan N  how many of the newest rejected entries to count by code (default 10000)`;

const rateText = (rate: number | null) => (rate === null ? null : rate.toFixed(1));

/** The snapshot as terminal tables. */
export function renderStatus(s: StatusSnapshot): string {
  const out: string[] = [];
  const limit = s.redis.maxMemory ? formatBytes(s.redis.maxMemory) : 'no limit';
  out.push(`agentmeter status  ${s.at}  prefix ${s.prefix}  partitions ${s.partitions}`);
  out.push(`redis ${s.redis.version}: ${formatBytes(s.redis.usedMemory)} used of ${limit}, maxmemory-policy ${s.redis.policy}`);
  if (s.redis.policy !== 'noeviction') out.push(`WARNING: maxmemory-policy is ${s.redis.policy}: Redis may evict stream entries (events). Set it to noeviction.`);
  out.push('');

  const streamRows: (string | number | null)[][] = [];
  for (const st of s.streams) {
    const name = s.partitions > 1 ? `${st.stream} p${st.partition}` : st.stream;
    if (st.groups.length === 0) streamRows.push([name, st.length, '-', null, null, null, null, null, null]);
    st.groups.forEach((g, i) => {
      const idle = g.consumerList.length ? Math.min(...g.consumerList.map((c) => c.idleMs)) : null;
      streamRows.push([
        i === 0 ? name : '',
        i === 0 ? st.length : '',
        g.exists ? (g.inTopology ? g.name : `${g.name} (not in topology)`) : `${g.name} (no group yet)`,
        g.lag,
        g.pending,
        rateText(g.rate),
        g.consumers,
        idle === null ? null : formatDuration(idle),
        g.exists ? g.lastDeliveredId : null,
      ]);
    });
  }
  out.push(
    renderTable(['STREAM', 'LENGTH', 'GROUP', 'LAG', 'PENDING', 'READ/s', 'CONSUMERS', 'MIN IDLE', 'LAST DELIVERED'], streamRows, {
      right: [1, 3, 4, 5, 6, 7],
    }),
  );
  out.push('');

  out.push(
    renderTable(
      ['STAGE', 'INPUT', 'READ/s', 'LAG', 'PENDING', 'CONSUMERS', 'DEAD LETTERS'],
      s.stages.map((st) => [st.stage, st.input, rateText(st.rate), st.lag, st.pending, st.consumers, st.deadLetters]),
      { right: [2, 3, 4, 5, 6] },
    ),
  );
  out.push('');

  const consumerRows: (string | number | null)[][] = [];
  for (const st of s.streams) {
    for (const g of st.groups) {
      for (const c of g.consumerList) {
        consumerRows.push([
          s.partitions > 1 ? `${g.name} p${st.partition}` : g.name,
          c.name,
          c.pending,
          formatDuration(c.idleMs),
          c.inactiveMs === null ? null : formatDuration(c.inactiveMs),
        ]);
      }
    }
  }
  if (consumerRows.length) {
    out.push(renderTable(['GROUP', 'CONSUMER', 'PENDING', 'IDLE', 'INACTIVE'], consumerRows, { right: [2, 3, 4] }));
  } else {
    out.push('no consumers registered yet (no stage worker has read anything)');
  }
  out.push('');

  const r = s.rejected;
  out.push(`rejected: ${r.length} entries${r.length ? ` (by code over the newest ${r.scanned})` : ''}`);
  if (r.byCode.length) out.push(renderTable(['STAGE', 'CODE', 'COUNT'], r.byCode.map((c) => [c.stage, oneLine(c.code, 60), c.count])));
  return out.join('\n');
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { booleans: ['json', 'watch', 'help'], values: ['drain', 'rejected-scan'] });
  if (args.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  if (args.positional.length) throw new UsageError(`unexpected argument ${args.positional[0]}`);
  const json = args.flags.has('json');
  const watch = args.flags.has('watch');
  const drainSeconds = numberFlag(args, 'drain', 0, { decimal: true });
  const rejectedScan = numberFlag(args, 'rejected-scan', 10_000);
  const config = loadConfig();
  // The registry pulls in every stage module; loaded only when the command really runs.
  const { TOPOLOGY } = await import('../stages/registry.js');
  const redis = await connectCliRedis(config.REDIS_URL, `${config.REDIS_PREFIX}ops:status`);
  const options: CollectOptions = { prefix: config.REDIS_PREFIX, partitions: config.PARTITIONS, topology: TOPOLOGY, rejectedScan };
  try {
    if (drainSeconds > 0) {
      const deadline = Date.now() + drainSeconds * 1000;
      const started = Date.now();
      for (;;) {
        const { snapshot } = await collectStatus(redis, { ...options, rejectedScan: 0 });
        if (isDrained(snapshot)) {
          console.error(`drained after ${formatDuration(Date.now() - started)}`);
          break;
        }
        if (Date.now() >= deadline) {
          console.error(`not drained after ${drainSeconds} s (some group still has lag or pending entries, or no worker created it)`);
          break;
        }
        await sleep(500);
      }
    }
    let previous = await sampleEntriesRead(redis, options);
    let stop = false;
    process.once('SIGINT', () => (stop = true));
    do {
      await sleep(Math.max(0, 1000 - (Date.now() - previous.at)));
      const { snapshot, sample } = await collectStatus(redis, { ...options, previous });
      previous = sample;
      const machine = { ...snapshot, redis: { ...snapshot.redis, usedMemoryHuman: formatBytes(snapshot.redis.usedMemory) } };
      if (json) console.log(watch ? JSON.stringify(machine) : JSON.stringify(machine, null, 2));
      else if (watch) process.stdout.write(`\x1b[H\x1b[2J${renderStatus(snapshot)}\n\n(refreshing every second; Ctrl-C to stop)\n`);
      else console.log(renderStatus(snapshot));
    } while (watch && !stop);
  } finally {
    redis.disconnect();
  }
  return 0;
}

if (isMain(import.meta.url)) await runCli(USAGE, main);
