// ClickHouse against the ledger, per tenant and day: prints every figure that differs and exits 1
// when one does (0 when all agree).
//   npm run reconcile                              the last 35 days, every tenant
//   npm run reconcile -- --from 2026-11-01 --to 2026-11-30 --tenant ten_... [--json]
//   npm run reconcile -- --repair                  insert the ledger rows ClickHouse lacks, rebuild the
//                                                  rollups of the days that differ, then check again
import { formatNano } from '../domain/money.js';
import { loadConfig } from '../pipeline/config.js';
import { connectClickHouse } from '../store/clickhouse.js';
import { connectPostgres } from '../pipeline/postgres.js';
import { reconcile, repairRollups, type Difference, type ReconcileOptions } from '../store/reconcile.js';
import { enqueueLedgerDay } from '../store/analytics-backlog.js';
import { drainBacklog } from '../stages/analytics-dispatch/backlog.js';
import { CommandError, isMain, numberFlag, parseArgs, runCli, stringFlag, UsageError } from './cli.js';
import { renderTable } from './table.js';

const USAGE = `usage: npm run reconcile -- [--from YYYY-MM-DD] [--to YYYY-MM-DD] [--days N] [--tenant ID] [--json] [--repair]
  --from, --to   the days to compare, inclusive (UTC); default: the last --days days (35) up to today
  --tenant ID    one tenant only
  --json         machine-readable output
  --repair       first insert the ledger rows ClickHouse lacks (each tenant and day with fewer events
                 in invocations than in the ledger: the day's rows go through analytics_backlog,
                 those ClickHouse has left out), then rebuild the ClickHouse rollups (usage_daily,
                 usage_hourly, spend_daily, tool_daily, session_summary) of each tenant and day whose
                 rollups differ from invocations, then compare again. Run it for past days or with
                 analytics-dispatch stopped. Rows ClickHouse has and the ledger does not are reported,
                 never removed.
exit code: 0 when ClickHouse agrees with the ledger, 1 when something differs, 2 on bad usage`;

const DAY = /^\d{4}-\d{2}-\d{2}$/;

export function describeDifference(d: Difference): (string | number)[] {
  const show = (v: bigint) => (d.figure.endsWith('_nano') ? formatNano(v) : v.toString());
  return [d.tenantId, d.day, d.source, d.figure.replace('_nano', ''), show(d.ledger), show(d.clickhouse), show(d.clickhouse - d.ledger)];
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['from', 'to', 'days', 'tenant'], booleans: ['json', 'repair', 'help'] });
  if (args.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  if (args.positional.length) throw new UsageError(`unexpected argument ${args.positional[0]}`);
  const days = numberFlag(args, 'days', 35, { min: 1 });
  const today = new Date().toISOString().slice(0, 10);
  const options: ReconcileOptions = {
    to: stringFlag(args, 'to') ?? today,
    from: stringFlag(args, 'from') ?? new Date(Date.now() - (days - 1) * 86_400_000).toISOString().slice(0, 10),
    tenantId: stringFlag(args, 'tenant'),
  };
  for (const flag of ['from', 'to'] as const) if (!DAY.test(options[flag])) throw new UsageError(`--${flag} must be a day, YYYY-MM-DD`);
  if (options.from > options.to) throw new UsageError('--from must not be after --to');

  const config = loadConfig();
  const sql = connectPostgres(config.DATABASE_URL, { max: 2, name: 'reconcile' });
  const clickhouse = connectClickHouse({ url: config.CLICKHOUSE_URL, database: config.CLICKHOUSE_DATABASE, username: config.CLICKHOUSE_USER, password: config.CLICKHOUSE_PASSWORD });
  try {
    let result = await reconcile(sql, clickhouse, options).catch((error: unknown) => {
      const message = String((error as Error)?.message ?? error);
      if (/doesn't exist|does not exist|Code: (60|81)\b/.test(message)) {
        throw new CommandError(`${message.split('\n')[0]}: run npm run migrate first (this needs the rollups of schemas/migrations/clickhouse/002)`);
      }
      throw error;
    });
    if (args.flags.has('repair')) {
      const missingDays = new Map<string, { tenantId: string; day: string }>();
      for (const d of result.differences) if (d.source === 'invocations' && d.figure === 'events' && d.clickhouse < d.ledger) missingDays.set(`${d.tenantId} ${d.day}`, d);
      if (missingDays.size) {
        for (const { tenantId, day } of missingDays.values()) {
          const enqueued = await enqueueLedgerDay(sql, tenantId, day);
          console.error(`ClickHouse lacks ledger rows of ${tenantId} on ${day}: ${enqueued} rows enqueued in analytics_backlog`);
        }
        const drained = await drainBacklog(sql, clickhouse, config);
        console.error(`analytics backlog drained: ${drained} rows, those ClickHouse lacked inserted`);
        result = await reconcile(sql, clickhouse, options);
      }
      const rollupDays = new Map<string, { tenantId: string; day: string }>();
      for (const d of result.differences) if (d.source !== 'invocations') rollupDays.set(`${d.tenantId} ${d.day}`, d);
      for (const { tenantId, day } of rollupDays.values()) {
        console.error(`repairing the rollups of ${tenantId} on ${day}`);
        await repairRollups(clickhouse, tenantId, day);
      }
      if (rollupDays.size) result = await reconcile(sql, clickhouse, options);
    }
    const { compared, differences } = result;
    if (args.flags.has('json')) {
      console.log(JSON.stringify({ ...options, compared, differences: differences.map((d) => ({ ...d, ledger: d.ledger.toString(), clickhouse: d.clickhouse.toString() })) }, null, 2));
    } else {
      console.log(`compared ${compared} tenant-days from ${options.from} to ${options.to}${options.tenantId ? ` of ${options.tenantId}` : ''}: ${differences.length} differences`);
      if (differences.length) {
        console.log(renderTable(['TENANT', 'DAY', 'CLICKHOUSE TABLE', 'FIGURE', 'LEDGER', 'CLICKHOUSE', 'DIFFERENCE'], differences.map(describeDifference), { right: [4, 5, 6] }));
      }
    }
    return differences.length ? 1 : 0;
  } finally {
    await sql.end({ timeout: 5 });
    await clickhouse.close();
  }
}

if (isMain(import.meta.url)) await runCli(USAGE, main);
