import { z } from 'zod';
import { subscriptionChange, subscriptionChanged, subscriptionCreate, subscriptionEnd, subscriptionOut } from '../../schemas/admin.js';
import type { Commitment, RatePlanPricing } from '../../domain/rating/plan-schema.js';
import { validateSubscriptionTerms } from '../../domain/rating/plan.js';
import { announce } from './announce.js';
import { presentRow, readEndpoints, type ReadSpec } from './crud.js';
import { findOwned, insertOwned, type Db, type Row } from './db.js';
import { endpoint, type AdminDeps, type Endpoint } from './endpoint.js';
import { ApiError, conflict, invalidPart, notFound, validationFailed } from '../errors.js';
import { iso } from './present.js';
import { validPricing } from './rate-plans.js';
import { unrateablePeriod } from '../../store/invoices.js';
import type { TransactionSql } from 'postgres';

/**
 * Subscriptions are immutable snapshots of who pays what, when. Nothing about one is ever
 * updated, except that an open one may be closed (effective_to set, never moved into the past):
 * a plan change closes the current one and opens its successor in one transaction. Two
 * subscriptions of one scope never overlap; the database refuses it (subscriptions_no_overlap).
 */

type Scope = { customer_id: string; team_id: string | null; agent_id: string | null; app_id: string | null };

type Terms = {
  overrides: Record<string, unknown>;
  commitment: Commitment | null;
  allocation: Record<string, number> | null;
};

function presentSubscription(row: Row) {
  return {
    id: row.id,
    customer_id: row.customer_id as string,
    team_id: row.team_id as string | null,
    agent_id: row.agent_id as string | null,
    app_id: row.app_id as string | null,
    rate_plan_id: row.rate_plan_id as string,
    rate_plan_version: row.version as number,
    rate_plan_version_id: row.rate_plan_version_id as string,
    currency: row.currency as string,
    effective_from: iso(row.effective_from)!,
    effective_to: iso(row.effective_to),
    overrides: row.overrides as Record<string, unknown>,
    commitment: row.commitment as Record<string, unknown> | null,
    allocation: row.allocation as Record<string, unknown> | null,
    supersedes: row.supersedes as string | null,
    billing_period: row.billing_period as 'calendar_month' | 'anniversary',
    billing_anchor: iso(row.billing_anchor ?? row.effective_from)!,
    created_at: iso(row.created_at)!,
  };
}

async function withPlanVersion(db: Db, tenantId: string, rows: Row[]): Promise<Row[]> {
  const versions = await db<{ id: string; rate_plan_id: string; version: number; currency: string }[]>`
    SELECT v.id, v.rate_plan_id, v.version, p.currency
    FROM rate_plan_versions v JOIN rate_plans p ON p.tenant_id = v.tenant_id AND p.id = v.rate_plan_id
    WHERE v.tenant_id = ${tenantId} AND v.id = ANY(${[...new Set(rows.map((r) => r.rate_plan_version_id as string))]})`;
  const byId = new Map(versions.map((v) => [v.id, v]));
  return rows.map((row) => {
    const version = byId.get(row.rate_plan_version_id as string)!;
    return { ...row, rate_plan_id: version.rate_plan_id, version: version.version, currency: version.currency };
  });
}

/** The team, agent or app a subscription names must belong to its customer. */
async function checkScope(db: Db, tenantId: string, scope: Scope): Promise<void> {
  await findOwned(db, 'customers', tenantId, scope.customer_id);
  const member =
    scope.team_id ? { table: 'teams' as const, id: scope.team_id, team: scope.team_id }
    : scope.agent_id ? { table: 'agents' as const, id: scope.agent_id }
    : scope.app_id ? { table: 'apps' as const, id: scope.app_id }
    : undefined;
  if (!member) return;
  const row = await findOwned(db, member.table, tenantId, member.id);
  const customerId = member.table === 'teams' ? row.customer_id : (await findOwned(db, 'teams', tenantId, row.team_id as string)).customer_id;
  if (customerId !== scope.customer_id) {
    throw validationFailed(`${member.table.slice(0, -1)} ${member.id} does not belong to customer ${scope.customer_id}`, [
      { path: `${member.table.slice(0, -1)}_id`, message: `belongs to another customer` },
    ]);
  }
}

/** The version a request names: `version` of the plan, or its latest. */
async function planVersion(db: Db, tenantId: string, ratePlanId: string, version?: number): Promise<Row> {
  await findOwned(db, 'rate_plans', tenantId, ratePlanId);
  const [row] = await db<Row[]>`
    SELECT * FROM rate_plan_versions
    WHERE tenant_id = ${tenantId} AND rate_plan_id = ${ratePlanId} ${version === undefined ? db`` : db`AND version = ${version}`}
    ORDER BY version DESC LIMIT 1`;
  if (!row) throw notFound('version', `${version ?? 'latest'} of rate plan ${ratePlanId}`);
  return row;
}

/**
 * Overrides replace top-level fields of the version's pricing; the result must be a valid plan.
 * The commitment (committed calls and price) replaces the plan's; the allocation gives agents of
 * the customer a share of the committed calls, at most the commitment in total.
 */
async function checkTerms(db: Db, tenantId: string, scope: Scope, version: Row, terms: Terms): Promise<Terms> {
  const base = version.pricing as RatePlanPricing;
  const pricing = validPricing({ ...base, ...terms.overrides }, 'overrides');
  const overrides = Object.fromEntries(Object.keys(terms.overrides).map((key) => [key, pricing[key as keyof RatePlanPricing]]));
  const checked = validateSubscriptionTerms({ commitment: terms.commitment, allocation: terms.allocation });
  if (!checked.ok) throw invalidPart('terms', checked.errors, '');
  const commitment = checked.terms.commitment ?? null;
  const allocation = checked.terms.allocation ?? null;
  if (pricing.billing_mode !== 'COMMITTED') {
    // The rating engine refuses them on any other plan (as the quote API does): bad input, said here.
    const stray = commitment ? 'commitment' : allocation && Object.keys(allocation).length > 0 ? 'allocation' : undefined;
    if (stray) {
      throw validationFailed(
        `${stray} applies to a COMMITTED plan only, and rate plan ${version.rate_plan_id} version ${version.version} is not one` +
          ' (a change carries the terms over: set commitment and allocation to null when moving off a COMMITTED plan)',
        [{ path: stray, message: 'the plan is not COMMITTED' }],
      );
    }
  }
  if (!allocation) return { overrides, commitment, allocation: null };
  const committedCalls = (commitment ?? pricing.commitment)?.committed_amount;
  if (committedCalls === undefined) {
    throw validationFailed('an allocation shares out a commitment, and neither the subscription nor its plan has one', [
      { path: 'allocation', message: 'needs a commitment' },
    ]);
  }
  const total = Object.values(allocation).reduce((sum, calls) => sum + calls, 0);
  if (total > committedCalls) {
    throw validationFailed(`the allocation gives out ${total} calls, more than the ${committedCalls} committed`, [
      { path: 'allocation', message: `sums to ${total}, above the committed ${committedCalls}` },
    ]);
  }
  const agents = await db<{ id: string }[]>`
    SELECT a.id FROM agents a JOIN teams t ON t.tenant_id = a.tenant_id AND t.id = a.team_id
    WHERE a.tenant_id = ${tenantId} AND t.customer_id = ${scope.customer_id} AND a.id = ANY(${Object.keys(allocation)})`;
  const known = new Set(agents.map((a) => a.id));
  const strangers = Object.keys(allocation).filter((id) => !known.has(id));
  if (strangers.length) {
    throw validationFailed(`not agents of customer ${scope.customer_id}: ${strangers.join(', ')}`, strangers.map((id) => ({ path: `allocation.${id}`, message: 'no such agent of this customer' })));
  }
  return { overrides, commitment, allocation: allocation };
}

/**
 * Refuses, with a 409 naming the subscription in the way, a period that overlaps another
 * subscription of the same scope. The exclusion constraint stays the guard against a
 * concurrent insert; this check only gives the better message.
 */
async function refuseOverlap(db: Db, tenantId: string, scope: Scope, from: Date, to: Date | null): Promise<void> {
  const [other] = await db<Row[]>`
    SELECT id, effective_from, effective_to FROM subscriptions
    WHERE tenant_id = ${tenantId} AND customer_id = ${scope.customer_id}
      AND team_id IS NOT DISTINCT FROM ${scope.team_id} AND agent_id IS NOT DISTINCT FROM ${scope.agent_id}
      AND app_id IS NOT DISTINCT FROM ${scope.app_id}
      AND tstzrange(effective_from, coalesce(effective_to, 'infinity')) && tstzrange(${from}::timestamptz, coalesce(${to}::timestamptz, 'infinity'))
    LIMIT 1`;
  if (!other) return;
  const until = other.effective_to ? `until ${iso(other.effective_to)}` : 'with no end';
  throw conflict(
    'subscription_overlap',
    `subscription ${other.id} of the same scope is in effect from ${iso(other.effective_from)} ${until}, overlapping this one; ` +
      `change or end it (POST /v1/admin/subscriptions/${other.id}/change or /end) rather than adding another`,
  );
}

/**
 * Refuses, with a 409 period_not_rateable, a subscription just written (in `tx`, which the
 * refusal rolls back) that leaves a billing period of its customer the rating engine cannot rate:
 * its draft invoice would answer 500 and its close fail every round. The period's members are
 * rated as the invoice rates them, with no usage (store/invoices.ts, unrateablePeriod); the reply
 * is the engine's reason and what to do instead.
 */
async function refuseUnrateable(tx: TransactionSql, tenantId: string, written: Row, change: boolean): Promise<void> {
  const found = await unrateablePeriod(tx, tenantId, written.customer_id as string, written.id);
  if (!found) return;
  const { period, error } = found;
  const start = new Date(period.start).toISOString();
  const end = new Date(period.end).toISOString();
  const instead = change
    ? `change at the end of that period instead ("at": "${end}"), so the new plan or terms start with the next invoice, or keep the period's currency and commitment terms`
    : 'start it at a period end after the subscriptions it cannot share an invoice with have ended (POST /v1/admin/subscriptions/{id}/end or /change, "at" a period end), or give it their currency and commitment terms';
  throw conflict(
    'period_not_rateable',
    `the billing period ${start} to ${end} of customer ${written.customer_id as string} could not be invoiced with this subscription (${written.id}, not kept): ${error.message}. ` +
      `One invoice bills one currency, and the subscriptions of one COMMITTED plan on it share one commitment, overage rate and allocation per agent: ${instead}`,
  );
}

async function insertSubscription(
  db: Db,
  tenantId: string,
  values: Scope &
    Terms & {
      rate_plan_version_id: string;
      effective_from: Date;
      effective_to: Date | null;
      supersedes?: string;
      billing_period: 'calendar_month' | 'anniversary';
      billing_anchor: Date;
    },
): Promise<Row> {
  await refuseOverlap(db, tenantId, values, values.effective_from, values.effective_to);
  return insertOwned(db, 'subscriptions', tenantId, values);
}

/**
 * Ends an open or later-ending subscription at `at` (now when omitted), which may not lie in
 * the past (events up to now may already be rated by it) nor before the subscription starts.
 */
async function close(db: Db, tenantId: string, id: string, at: Date | undefined): Promise<Row> {
  const current = await findOwned(db, 'subscriptions', tenantId, id, { forUpdate: true });
  const [successor] = await db<{ id: string }[]>`SELECT id FROM subscriptions WHERE tenant_id = ${tenantId} AND supersedes = ${id}`;
  if (successor) throw conflict('already_superseded', `subscription ${id} was already changed; change its successor ${successor.id}`);
  const now = new Date();
  if (at && at < now) {
    throw conflict('change_in_past', `${at.toISOString()} is in the past: history is never rewritten, so a subscription ends now or later`);
  }
  const end = at ?? now;
  if (end <= (current.effective_from as Date)) {
    throw conflict('change_before_start', `subscription ${id} starts at ${iso(current.effective_from)}; it can only end after that`);
  }
  const currentEnd = current.effective_to as Date | null;
  if (currentEnd && end >= currentEnd) throw conflict('already_ended', `subscription ${id} already ends at ${iso(currentEnd)}`);
  const [closed] = await db<Row[]>`
    UPDATE subscriptions SET effective_to = ${end} WHERE tenant_id = ${tenantId} AND id = ${id} RETURNING *`;
  return closed;
}

const SUBSCRIPTIONS: ReadSpec = {
  table: 'subscriptions',
  path: '/subscriptions',
  tag: 'Subscriptions',
  filters: {
    customer_id: z.string().min(1).max(128).optional(),
    team_id: z.string().min(1).max(128).optional(),
    agent_id: z.string().min(1).max(128).optional(),
    app_id: z.string().min(1).max(128).optional(),
    rate_plan_version_id: z.string().min(1).max(128).optional(),
  },
  out: subscriptionOut,
  present: presentSubscription,
  decorate: withPlanVersion,
};

const announceSubscriptions = (deps: AdminDeps, tenantId: string) => announce(deps, tenantId, { messages: [{ type: 'subscriptions.changed', tenantId }] });

const present = (deps: AdminDeps, tenantId: string, row: Row) => presentRow(SUBSCRIPTIONS, deps.sql, tenantId, row);

const scopeOf = (row: Row | z.output<typeof subscriptionCreate>): Scope => ({
  customer_id: row.customer_id as string,
  team_id: (row.team_id as string | undefined) ?? null,
  agent_id: (row.agent_id as string | undefined) ?? null,
  app_id: (row.app_id as string | undefined) ?? null,
});

export function subscriptionEndpoints(): Endpoint[] {
  return [
    endpoint({
      method: 'post',
      path: '/subscriptions',
      tag: 'Subscriptions',
      summary: 'Create a subscription',
      description:
        'Subscribes a customer, or one of its teams, agents or apps, to a rate plan version from effective_from. Refused with 409 subscription_overlap when another subscription of the same scope is in effect during part of the period, 409 period_not_rateable when a billing period of the customer could then not be invoiced (two currencies, or one COMMITTED plan with two commitments, overage rates or allocations of an agent), and 400 when commitment or allocation is given for a plan that is not COMMITTED.',
      body: subscriptionCreate,
      response: subscriptionOut,
      status: 201,
      async handle({ tenantId, body, deps }) {
        const scope = scopeOf(body);
        const row = await deps.sql.begin(async (tx) => {
          await checkScope(tx, tenantId, scope);
          const version = await planVersion(tx, tenantId, body.rate_plan_id, body.rate_plan_version);
          const terms = await checkTerms(tx, tenantId, scope, version, {
            overrides: body.overrides ?? {},
            commitment: (body.commitment as Terms['commitment']) ?? null,
            allocation: (body.allocation as Terms['allocation']) ?? null,
          });
          const inserted = await insertSubscription(tx, tenantId, {
            ...scope,
            ...terms,
            rate_plan_version_id: version.id,
            effective_from: new Date(body.effective_from),
            effective_to: body.effective_to ? new Date(body.effective_to) : null,
            billing_period: body.billing_period ?? 'calendar_month',
            billing_anchor: new Date(body.effective_from),
          });
          await refuseUnrateable(tx, tenantId, inserted, false);
          return inserted;
        });
        await announceSubscriptions(deps, tenantId);
        return present(deps, tenantId, row);
      },
    }),
    ...readEndpoints(SUBSCRIPTIONS),
    endpoint({
      method: 'post',
      path: '/subscriptions/:id/change',
      tag: 'Subscriptions',
      summary: 'Change plan or terms: close this subscription and open its successor',
      description:
        'In one transaction: this subscription ends at `at` (now by default, never in the past) and a new one for the same scope starts there, with the named plan version and terms; what is not named is carried over. Refused with 409 period_not_rateable when the period of the change could then not be invoiced (a change of currency, or of commitment, overage rate or allocation of a COMMITTED plan, within one period): change at the period end instead.',
      body: subscriptionChange,
      response: subscriptionChanged,
      status: 201,
      async handle({ tenantId, params, body, deps }) {
        const { closed, opened } = await deps.sql.begin(async (tx) => {
          const previousEnd = (await findOwned(tx, 'subscriptions', tenantId, params.id, { forUpdate: true })).effective_to as Date | null;
          const closed = await close(tx, tenantId, params.id, body.at ? new Date(body.at) : undefined);
          const at = closed.effective_to as Date;
          const scope = scopeOf(closed);
          const version = body.rate_plan_id
            ? await planVersion(tx, tenantId, body.rate_plan_id, body.rate_plan_version)
            : await findOwned(tx, 'rate_plan_versions', tenantId, closed.rate_plan_version_id as string);
          const terms = await checkTerms(tx, tenantId, scope, version, {
            overrides: body.overrides ?? (closed.overrides as Terms['overrides']),
            commitment: (body.commitment !== undefined ? body.commitment : closed.commitment) as Terms['commitment'],
            allocation: body.allocation !== undefined ? (body.allocation as Terms['allocation']) : (closed.allocation as Terms['allocation']),
          });
          const effectiveTo = body.effective_to === undefined ? previousEnd : body.effective_to === null ? null : new Date(body.effective_to);
          if (effectiveTo && effectiveTo <= at) {
            throw validationFailed('effective_to must be after the change', [{ path: 'effective_to', message: `must be after ${at.toISOString()}` }]);
          }
          const opened = await insertSubscription(tx, tenantId, {
            ...scope,
            ...terms,
            rate_plan_version_id: version.id,
            effective_from: at,
            effective_to: effectiveTo,
            supersedes: closed.id,
            billing_period: closed.billing_period as 'calendar_month' | 'anniversary',
            billing_anchor: (closed.billing_anchor ?? closed.effective_from) as Date,
          });
          await refuseUnrateable(tx, tenantId, opened, true);
          return { closed, opened };
        });
        await announceSubscriptions(deps, tenantId);
        return { closed: await present(deps, tenantId, closed), opened: await present(deps, tenantId, opened) };
      },
    }),
    endpoint({
      method: 'post',
      path: '/subscriptions/:id/end',
      tag: 'Subscriptions',
      summary: 'End a subscription',
      description: 'Sets its effective_to to `at` (now by default, never in the past). No successor is opened.',
      body: subscriptionEnd,
      response: subscriptionOut,
      async handle({ tenantId, params, body, deps }) {
        const closed = await deps.sql.begin((tx) => close(tx, tenantId, params.id, body.at ? new Date(body.at) : undefined));
        await announceSubscriptions(deps, tenantId);
        return present(deps, tenantId, closed);
      },
    }),
    endpoint({
      method: 'patch',
      path: '/subscriptions/:id',
      tag: 'Subscriptions',
      summary: 'Subscriptions are immutable',
      hidden: true,
      async handle() {
        throw new ApiError(405, 'immutable', 'subscriptions are immutable snapshots: POST /v1/admin/subscriptions/{id}/change to move to another plan or terms, /end to end one');
      },
    }),
  ];
}
