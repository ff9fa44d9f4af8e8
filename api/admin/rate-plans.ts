import { z } from 'zod';
import {
  ratePlanCreate,
  ratePlanCreated,
  ratePlanOut,
  ratePlanUpdate,
  ratePlanVersionCreate,
  ratePlanVersionCreated,
  ratePlanVersionOut,
} from '../../schemas/admin.js';
import type { RatePlanPricing } from '../../domain/rating/plan-schema.js';
import { validateRatePlan } from '../../domain/rating/plan.js';
import { announce } from './announce.js';
import { listEndpoint, presentRow, readEndpoints, updateEndpoint, type ReadSpec } from './crud.js';
import { findOwned, insertOwned, type Db, type Row } from './db.js';
import { endpoint, type AdminDeps, type Endpoint } from './endpoint.js';
import { ApiError, invalidPart, notFound } from '../errors.js';
import { basics, iso } from './present.js';

/** Pricing checked by the rate plan validator; its problems are reported under `pricing`. */
export function validPricing(pricing: unknown, field = 'pricing'): RatePlanPricing {
  return checkedPricing(pricing, field).plan;
}

/** The pricing (unwrapped from `{"dimensionPricing": ...}`) and what validation warns about, with paths under `field` like its errors. */
function checkedPricing(pricing: unknown, field = 'pricing'): { plan: RatePlanPricing; warnings: { path: string; message: string }[] } {
  const result = validateRatePlan(pricing);
  if (!result.ok) throw invalidPart(field, result.errors);
  return { plan: result.plan, warnings: result.warnings.map((warning) => ({ path: field + warning.path.replace(/^\$/, ''), message: warning.message })) };
}

function presentRatePlan(row: Row) {
  return { ...basics(row), name: row.name as string, currency: row.currency as string, latest_version: row.latest_version as number };
}

function presentRatePlanVersion(row: Row) {
  return {
    id: row.id,
    rate_plan_id: row.rate_plan_id as string,
    version: row.version as number,
    pricing: row.pricing as Record<string, unknown>,
    created_at: iso(row.created_at)!,
  };
}

async function withLatestVersion(db: Db, tenantId: string, rows: Row[]): Promise<Row[]> {
  const latest = await db<{ rate_plan_id: string; version: number }[]>`
    SELECT rate_plan_id, max(version) AS version FROM rate_plan_versions
    WHERE tenant_id = ${tenantId} AND rate_plan_id = ANY(${rows.map((r) => r.id)})
    GROUP BY rate_plan_id`;
  const byPlan = new Map(latest.map((r) => [r.rate_plan_id, r.version]));
  return rows.map((row) => ({ ...row, latest_version: byPlan.get(row.id) ?? 0 }));
}

/** Appends the next version of a plan; the plan row is locked so two writers cannot take one number. */
async function addVersion(db: Db, tenantId: string, ratePlanId: string, pricing: RatePlanPricing): Promise<Row> {
  await findOwned(db, 'rate_plans', tenantId, ratePlanId, { forUpdate: true });
  const [{ next }] = await db<{ next: number }[]>`
    SELECT coalesce(max(version), 0) + 1 AS next FROM rate_plan_versions WHERE tenant_id = ${tenantId} AND rate_plan_id = ${ratePlanId}`;
  return insertOwned(db, 'rate_plan_versions', tenantId, { rate_plan_id: ratePlanId, version: next, pricing });
}

const announceRatePlans = (deps: AdminDeps, tenantId: string) => announce(deps, tenantId, { messages: [{ type: 'rate-plans.changed', tenantId }] });

const PLANS: ReadSpec = {
  table: 'rate_plans',
  path: '/rate-plans',
  tag: 'Rate plans',
  filters: { currency: ratePlanCreate.shape.currency.optional() },
  out: ratePlanOut,
  present: presentRatePlan,
  decorate: withLatestVersion,
};

const VERSIONS: ReadSpec = {
  table: 'rate_plan_versions',
  path: '/rate-plans/:rate_plan_id/versions',
  parent: { table: 'rate_plans', column: 'rate_plan_id' },
  tag: 'Rate plans',
  out: ratePlanVersionOut,
  present: presentRatePlanVersion,
};

/**
 * Rate plans: a name and a currency, priced by numbered versions that never change once made.
 * A subscription names one version, so a price change is a new version plus a plan change of
 * the subscriptions that should move to it.
 */
export function ratePlanEndpoints(): Endpoint[] {
  return [
    endpoint({
      method: 'post',
      path: '/rate-plans',
      tag: 'Rate plans',
      summary: 'Create a rate plan with its first version',
      body: ratePlanCreate,
      response: ratePlanCreated,
      status: 201,
      async handle({ tenantId, body, deps }) {
        const { plan: pricing, warnings } = checkedPricing(body.pricing);
        const { plan, version } = await deps.sql.begin(async (tx) => {
          const plan = await insertOwned(tx, 'rate_plans', tenantId, { name: body.name, currency: body.currency });
          return { plan, version: await addVersion(tx, tenantId, plan.id, pricing) };
        });
        await announceRatePlans(deps, tenantId);
        return { ...(await presentRow(PLANS, deps.sql, tenantId, plan)), version: presentRatePlanVersion(version), warnings };
      },
    }),
    ...readEndpoints(PLANS),
    updateEndpoint({ ...PLANS, update: ratePlanUpdate, announce: announceRatePlans }),
    endpoint({
      method: 'post',
      path: '/rate-plans/:rate_plan_id/versions',
      tag: 'Rate plans',
      summary: 'Add a version to a rate plan',
      description: 'Versions are numbered 1, 2, 3... and immutable: existing subscriptions keep the version they name.',
      body: ratePlanVersionCreate,
      response: ratePlanVersionCreated,
      status: 201,
      async handle({ tenantId, params, body, deps }) {
        const { plan: pricing, warnings } = checkedPricing(body.pricing);
        const version = await deps.sql.begin((tx) => addVersion(tx, tenantId, params.rate_plan_id, pricing));
        await announceRatePlans(deps, tenantId);
        return { ...presentRatePlanVersion(version), warnings };
      },
    }),
    listEndpoint(VERSIONS),
    endpoint({
      method: 'get',
      path: '/rate-plans/:rate_plan_id/versions/:version',
      tag: 'Rate plans',
      summary: 'Read one version of a rate plan',
      async handle({ tenantId, params, deps }) {
        const number = z.coerce.number().int().min(1).max(2 ** 31 - 1).safeParse(params.version);
        await findOwned(deps.sql, 'rate_plans', tenantId, params.rate_plan_id);
        const [row] = number.success
          ? await deps.sql<Row[]>`
              SELECT * FROM rate_plan_versions
              WHERE tenant_id = ${tenantId} AND rate_plan_id = ${params.rate_plan_id} AND version = ${number.data}`
          : [];
        if (!row) throw notFound('version', `${params.version} of rate plan ${params.rate_plan_id}`);
        return presentRatePlanVersion(row);
      },
      response: ratePlanVersionOut,
    }),
    endpoint({
      method: 'patch',
      path: '/rate-plans/:rate_plan_id/versions/:version',
      tag: 'Rate plans',
      summary: 'Versions are immutable',
      hidden: true,
      async handle() {
        throw new ApiError(405, 'immutable', 'rate plan versions never change: POST /v1/admin/rate-plans/{id}/versions to add a new one');
      },
    }),
  ];
}
