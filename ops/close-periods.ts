// Closes billing periods: every customer period whose end plus PERIOD_CLOSE_GRACE_SECONDS has
// passed gets its invoice, frozen exactly once (store/invoices.ts closePeriod).
//   npm run close-periods                         once, every tenant, then exits
//   npm run close-periods -- --tenant ten_... [--customer cus_...] [--lookback-days 400] [--json]
//   npm run close-periods -- --loop               every PERIOD_CLOSE_INTERVAL_MS, until SIGTERM; also
//                                                 writes off what expired prepaid credit grants have left
//                                                 (npm start runs this as the process `period-closer`)
import { loadConfig } from '../pipeline/config.js';
import { createLogger } from '../pipeline/logger.js';
import { connectPostgres } from '../pipeline/postgres.js';
import { expireGrants } from '../store/credits.js';
import { closeDuePeriods } from '../store/invoices.js';
import { PlanCache } from '../store/rate-plans.js';
import { isMain, numberFlag, parseArgs, runCli, stringFlag, UsageError } from './cli.js';

const USAGE = `usage: npm run close-periods -- [--tenant ID] [--customer ID] [--lookback-days N] [--json] [--loop]
  closes every billing period that ended more than PERIOD_CLOSE_GRACE_SECONDS ago (default 3 days)
  and has no invoice yet, looking back --lookback-days (PERIOD_CLOSE_LOOKBACK_DAYS, 62)
  --loop   keep closing every PERIOD_CLOSE_INTERVAL_MS (60 s) until SIGTERM`;

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['tenant', 'customer', 'lookback-days'], booleans: ['json', 'loop', 'help'] });
  if (args.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  if (args.positional.length) throw new UsageError(`unexpected argument ${args.positional[0]}`);
  const config = loadConfig();
  const log = createLogger('period-closer');
  // Two connections: the close's transaction and the plan cache's reads beside it.
  const sql = connectPostgres(config.DATABASE_URL, { max: 2, name: 'period-closer' });
  const plans = new PlanCache(sql);
  const options = () => ({
    now: Date.now(),
    graceMs: config.PERIOD_CLOSE_GRACE_SECONDS * 1000,
    lookbackMs: numberFlag(args, 'lookback-days', config.PERIOD_CLOSE_LOOKBACK_DAYS, { min: 1 }) * 86_400_000,
    tenantId: stringFlag(args, 'tenant'),
    customerId: stringFlag(args, 'customer'),
  });
  try {
    if (!args.flags.has('loop')) {
      const closed = await closeDuePeriods(sql, plans, options());
      if (args.flags.has('json')) console.log(JSON.stringify(closed, null, 2));
      else for (const d of closed) console.log(`${d.number}  ${d.customer_id}  ${d.period_start} .. ${d.period_end}  ${d.total} ${d.currency}`);
      if (!args.flags.has('json')) console.log(`closed ${closed.length} periods`);
      return 0;
    }
    let stopping = false;
    let wake: (() => void) | undefined;
    const stop = () => {
      stopping = true;
      wake?.();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    log.info({ graceSeconds: config.PERIOD_CLOSE_GRACE_SECONDS, intervalMs: config.PERIOD_CLOSE_INTERVAL_MS }, 'period closer started');
    while (!stopping) {
      try {
        const expired = await expireGrants(sql);
        if (expired) log.info({ expired }, 'prepaid credit grants expired');
        const closed = await closeDuePeriods(sql, plans, options(), (due, err) =>
          log.error({ err, tenant: due.tenantId, customer: due.customerId, period: new Date(due.period.start).toISOString() }, 'period cannot be closed; retrying next round'),
        );
        for (const d of closed) log.info({ invoice: d.number, customer: d.customer_id, period: d.period_start }, 'period closed');
      } catch (err) {
        // PostgreSQL away: the next round closes what this one could not (a close is one transaction).
        log.warn({ err }, 'closing periods failed; retrying next round');
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, config.PERIOD_CLOSE_INTERVAL_MS);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return 0;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

if (isMain(import.meta.url)) await runCli(USAGE, main);
