import {
  closePeriodsReply,
  closePeriodsRequest,
  creditGrantCreate,
  creditGrantOut,
  creditMovementsOut,
  creditMovementsQuery,
  creditsOut,
  amendRequest,
  correctionOut,
  voidRequest,
} from '../../schemas/billing.js';
import { correctEvent, CorrectionRefused, type CorrectionRequest, type CorrectionResult } from '../../store/corrections.js';
import { CostModelCache } from '../../store/cost-model-cache.js';
import { formatNano, parseNano } from '../../domain/money.js';
import { creditBalances, grantCredits, liftCreditsPause } from '../../store/credits.js';
import { newId } from '../../store/credentials.js';
import { pausesNotLifted } from '../../store/pause-flags.js';
import { closeDuePeriods } from '../../store/invoices.js';
import { PlanCache } from '../../store/rate-plans.js';
import { loadConfig } from '../../pipeline/config.js';
import { findOwned, type Row } from './db.js';
import { endpoint, type Endpoint } from './endpoint.js';
import { ApiError, validationFailed } from '../errors.js';
import type { AdminDeps } from './endpoint.js';
import { iso } from './present.js';

const DAY_MS = 86_400_000;

/** The billing lifecycle's admin routes: closing periods now (beside the closer loop of npm start). */
export function billingEndpoints(): Endpoint[] {
  const defaults = loadConfig();
  let plans: PlanCache | undefined;
  let costModels: CostModelCache | undefined;
  const correct = async (deps: AdminDeps, tenantId: string, eventId: string, request: CorrectionRequest) => {
    plans ??= new PlanCache(deps.sql);
    // Read afresh each time (ttl 0): a correction is rare and must use the models in force.
    costModels ??= new CostModelCache(deps.sql, 0);
    try {
      const result = await correctEvent(
        { sql: deps.sql, redis: deps.redis, place: { prefix: deps.prefix, partitions: defaults.PARTITIONS }, plans, costModels },
        tenantId,
        eventId,
        request,
      );
      return presentCorrection(result);
    } catch (err) {
      if (!(err instanceof CorrectionRefused)) throw err;
      throw new ApiError(err.status, err.code, err.message, err.path ? [{ path: err.path, message: err.message }] : undefined);
    }
  };
  return [
    endpoint({
      method: 'post',
      path: '/events/:event_id/void',
      tag: 'Corrections',
      summary: 'Void a ledgered event',
      description:
        "Append-only: the ledger gets a reversing row (`<event_id>~revN`, every quantity and the cost negated) naming the event; invoice aggregates, the session, COGS, prepaid credits, spend-cap counters and ClickHouse follow. 404 for an event this tenant does not have, 409 `already_voided` the second time. A closed period's correction goes on the next invoice as an adjustment, or becomes a credit note with `settle: credit_note`.",
      body: voidRequest,
      response: correctionOut,
      status: 201,
      handle: ({ tenantId, params, body, deps }) => correct(deps, tenantId, params.event_id, { kind: 'void', reason: body.reason, settle: body.settle }),
    }),
    endpoint({
      method: 'post',
      path: '/events/:event_id/amend',
      tag: 'Corrections',
      summary: "Amend a ledgered event's quantities",
      description:
        'Append-only: a reversing row for the event as it stands and a new row (`<event_id>~amdN`) with the amended quantities, rated by its subscription\'s plan version; both name the event. Quantities are integers from 0 to 10^12 (400 with the JSON path otherwise). Amending again reverses the last amendment.',
      body: amendRequest,
      response: correctionOut,
      status: 201,
      handle: ({ tenantId, params, body, deps }) =>
        correct(deps, tenantId, params.event_id, { kind: 'amend', quantities: body.quantities, reason: body.reason, settle: body.settle }),
    }),
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
    endpoint({
      method: 'post',
      path: '/customers/:id/credit-grants',
      tag: 'Prepaid credits',
      summary: 'Grant prepaid credits to a customer',
      description:
        'A purchase or a promotion, in one currency, with an optional expiry and a priority. Rated usage draws from the grants as it is billed (lowest priority first, then the earliest expiry, then the oldest). A grant lifts the pause a zero balance set in its currency.',
      body: creditGrantCreate,
      response: creditGrantOut,
      status: 201,
      async handle({ tenantId, tokenId, params, body, deps }) {
        await findOwned(deps.sql, 'customers', tenantId, params.id);
        const id = newId('grant');
        await deps.sql.begin((tx) =>
          grantCredits(tx, {
            id,
            tenantId,
            customerId: params.id,
            currency: body.currency,
            amountNano: parseNano(body.amount),
            priority: body.priority ?? 100,
            source: body.source,
            expiresAt: body.expires_at ? new Date(body.expires_at) : null,
            description: body.description ?? null,
            hardCap: body.hard_cap,
          }),
        );
        await liftCreditsPause(
          deps.sql,
          deps.redis,
          { prefix: deps.prefix, partitions: defaults.PARTITIONS },
          { tenantId, customerId: params.id, currency: body.currency },
          { reason: `credits granted (${id})`, tokenId },
        );
        const [row] = await deps.sql<Row[]>`SELECT * FROM credit_grants WHERE tenant_id = ${tenantId} AND id = ${id}`;
        return presentGrant(row);
      },
    }),
    endpoint({
      method: 'get',
      path: '/customers/:id/credits',
      tag: 'Prepaid credits',
      summary: "A customer's credit balance per currency and its grants",
      description: 'The balance is what the live (not expired) grants have left; `paused` says whether a zero balance has paused the customer.',
      response: creditsOut,
      async handle({ tenantId, params, deps }) {
        await findOwned(deps.sql, 'customers', tenantId, params.id);
        const balances = await creditBalances(deps.sql, tenantId, params.id);
        const place = { prefix: deps.prefix, partitions: defaults.PARTITIONS };
        const pauses = await pausesNotLifted(deps.sql, deps.redis, place, tenantId, 1000, { scopeKind: 'customer', scopeId: params.id });
        const grants = await deps.sql<Row[]>`
          SELECT * FROM credit_grants WHERE tenant_id = ${tenantId} AND customer_id = ${params.id}
          ORDER BY currency, priority, expires_at NULLS LAST, created_at, id`;
        return {
          customer_id: params.id,
          balances: balances.map((b) => ({
            currency: b.currency,
            balance: formatNano(b.balanceNano),
            hard_cap: b.hardCap,
            paused: pauses.some((p) => p.capId === `credits:${b.currency}` && p.scopeId === params.id && p.inForce),
          })),
          grants: grants.map(presentGrant),
        };
      },
    }),
    endpoint({
      method: 'get',
      path: '/customers/:id/credits/movements',
      tag: 'Prepaid credits',
      summary: "The ledger of a customer's grant movements, oldest first",
      description: 'granted (+), consumed by rated usage (-, per grant, subscription period and batch), returned by a correction (+), expired (-).',
      query: creditMovementsQuery,
      response: creditMovementsOut,
      async handle({ tenantId, params, query, deps }) {
        await findOwned(deps.sql, 'customers', tenantId, params.id);
        const rows = await deps.sql<Row[]>`
          SELECT id::text, grant_id, kind, amount_nano::text, subscription_id, period_start, event_id, created_at FROM credit_movements
          WHERE tenant_id = ${tenantId} AND customer_id = ${params.id} ${query.cursor ? deps.sql`AND credit_movements.id > ${query.cursor}::bigint` : deps.sql``}
          ORDER BY credit_movements.id LIMIT ${query.limit}`;
        return {
          data: rows.map((r) => ({
            id: r.id as string,
            grant_id: r.grant_id as string,
            kind: r.kind as 'granted' | 'consumed' | 'returned' | 'expired',
            amount: formatNano(BigInt(r.amount_nano as string)),
            subscription_id: (r.subscription_id as string | null) ?? null,
            period_start: iso(r.period_start),
            event_id: (r.event_id as string | null) ?? null,
            created_at: iso(r.created_at)!,
          })),
          next_cursor: rows.length === query.limit ? (rows.at(-1)!.id as string) : null,
        };
      },
    }),
  ];
}

function presentGrant(row: Row) {
  return {
    id: row.id as string,
    customer_id: row.customer_id as string,
    currency: row.currency as string,
    amount: formatNano(BigInt(row.amount_nano as string)),
    remaining: formatNano(BigInt(row.remaining_nano as string)),
    priority: row.priority as number,
    source: row.source as 'purchase' | 'promotion',
    expires_at: iso(row.expires_at),
    description: (row.description as string | null) ?? null,
    created_at: iso(row.created_at)!,
  };
}

function presentCorrection(result: CorrectionResult) {
  return {
    id: result.id,
    event_id: result.event_id,
    kind: result.kind,
    reversal_event_id: result.reversal_event_id,
    amendment_event_id: result.amendment_event_id,
    delta: formatNano(result.delta_nano),
    subscription_id: result.subscription_id,
    period_start: result.period_start.toISOString(),
    closed_invoice: result.closed_invoice,
    credit_note: result.credit_note,
  };
}
