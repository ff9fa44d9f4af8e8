import { closePeriodsReply, closePeriodsRequest } from '../../schemas/billing.js';
import { closeDuePeriods } from '../../store/invoices.js';
import { PlanCache } from '../../store/rate-plans.js';
import { loadConfig } from '../../pipeline/config.js';
import { findOwned } from './db.js';
import { endpoint, type Endpoint } from './endpoint.js';
import { validationFailed } from '../errors.js';

const DAY_MS = 86_400_000;

/** The billing lifecycle's admin routes: closing periods now (beside the closer loop of npm start). */
export function billingEndpoints(): Endpoint[] {
  const defaults = loadConfig();
  let plans: PlanCache | undefined;
  return [
    endpoint({
      method: 'post',
      path: '/invoices/close',
      tag: 'Invoices',
      summary: 'Close due billing periods now',
      description:
        'Closes every billing period of the tenant (or of one customer) that ended more than the grace ago and has no invoice yet, as the period closer of `npm start` does every minute. Each closed period gets its invoice exactly once, however many closers run.',
      body: closePeriodsRequest,
      response: closePeriodsReply,
      async handle({ tenantId, body, deps }) {
        if (body.customer_id) await findOwned(deps.sql, 'customers', tenantId, body.customer_id);
        const now = body.at ? Date.parse(body.at) : Date.now();
        if (now > Date.now() + 1000) throw validationFailed('at may not be in the future', [{ path: 'at', message: 'must not be later than now' }]);
        plans ??= new PlanCache(deps.sql);
        const closed = await closeDuePeriods(deps.sql, plans, {
          now,
          graceMs: (body.grace_seconds ?? defaults.PERIOD_CLOSE_GRACE_SECONDS) * 1000,
          lookbackMs: (body.lookback_days ?? defaults.PERIOD_CLOSE_LOOKBACK_DAYS) * DAY_MS,
          tenantId,
          customerId: body.customer_id,
        });
        return { closed };
      },
    }),
  ];
}
