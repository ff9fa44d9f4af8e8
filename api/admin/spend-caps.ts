import { z } from 'zod';
import {
  CAP_PERIODS,
  CAP_SCOPES,
  costModelCreate,
  costModelOut,
  costModelUpdate,
  spendCapCreate,
  spendCapOut,
  spendCapUpdate,
} from '../../schemas/admin.js';
import { formatNano, parseNano } from '../../domain/money.js';
import { MAX_BIGINT } from '../../domain/validation.js';
import type { ControlMessage } from '../../pipeline/control.js';
import { announce } from './announce.js';
import { crudEndpoints } from './crud.js';
import { findOwned, type Row } from './db.js';
import type { AdminDeps, Endpoint } from './endpoint.js';
import { notFound, validationFailed } from '../errors.js';
import { liftPausesForCap, pauseIfOverLimit } from '../../store/pause-flags.js';
import type { SpendCap } from '../../store/caps.js';
import { basics, iso } from './present.js';

const SCOPE_TABLES = { app: 'apps', agent: 'agents', team: 'teams', customer: 'customers', plan: 'rate_plans' } as const;

function presentSpendCap(row: Row) {
  return {
    ...basics(row),
    scope_kind: row.scope_kind as (typeof CAP_SCOPES)[number],
    scope_id: row.scope_id as string,
    period: row.period as (typeof CAP_PERIODS)[number],
    window_seconds: (row.window_seconds as number | null) ?? null,
    limit: formatNano(BigInt(row.limit_nano as string)),
    action: row.action as 'pause' | 'alert',
    status: row.status as 'active' | 'disabled',
  };
}

function presentCostModel(row: Row) {
  return {
    ...basics(row),
    name: row.name as string,
    currency: row.currency as string,
    model: row.model as Record<string, unknown>,
    effective_from: iso(row.effective_from),
  };
}

function capOfRow(tenantId: string, row: Row): SpendCap & { status: 'active' | 'disabled' } {
  return {
    id: row.id as string,
    tenantId,
    scopeKind: row.scope_kind as SpendCap['scopeKind'],
    scopeId: row.scope_id as string,
    period: row.period as SpendCap['period'],
    ...(row.window_seconds ? { windowSeconds: row.window_seconds as number } : {}),
    limitNano: BigInt(row.limit_nano as string),
    action: row.action as SpendCap['action'],
    status: row.status as 'active' | 'disabled',
  };
}

/** A cap's limit arrives as a decimal string and is stored as integer nano-units. */
function limitNano(limit: unknown): string | undefined {
  if (limit === undefined) return undefined;
  const nano = parseNano(limit as string);
  if (nano > MAX_BIGINT) throw validationFailed('limit is too large', [{ path: 'limit', message: 'at most 9223372036.854775807' }]);
  return nano.toString();
}

const announceTo = (type: Extract<ControlMessage['type'], 'caps.changed' | 'cost-models.changed'>) => (deps: AdminDeps, tenantId: string) =>
  announce(deps, tenantId, { messages: [{ type, tenantId }] });

/**
 * Spend caps, hard (pause) or soft (alert), on an API key, app, agent, team, customer or session,
 * per session, day, month or rolling window; or on a rate plan, per session of its customers.
 */
export function spendCapEndpoints(): Endpoint[] {
  return crudEndpoints({
    table: 'spend_caps',
    path: '/spend-caps',
    tag: 'Spend caps',
    create: spendCapCreate,
    update: spendCapUpdate,
    filters: {
      scope_kind: z.enum(CAP_SCOPES).optional(),
      scope_id: z.string().min(1).max(128).optional(),
      period: z.enum(CAP_PERIODS).optional(),
      status: z.enum(['active', 'disabled']).optional(),
    },
    out: spendCapOut,
    present: presentSpendCap,
    async columns(db, tenantId, { limit, ...body }) {
      const scopeKind = body.scope_kind as (typeof CAP_SCOPES)[number] | undefined;
      if (scopeKind === 'api_key') {
        const [credential] = await db`
          SELECT id FROM api_keys WHERE tenant_id = ${tenantId} AND id = ${body.scope_id as string}
          UNION ALL SELECT id FROM client_credentials WHERE tenant_id = ${tenantId} AND id = ${body.scope_id as string}`;
        if (!credential) throw notFound('API key or client credential', body.scope_id as string);
      } else if (scopeKind && scopeKind !== 'session') {
        await findOwned(db, SCOPE_TABLES[scopeKind], tenantId, body.scope_id as string);
      }
      return { ...body, limit_nano: limitNano(limit) };
    },
    async announce(deps, tenantId, row, previous) {
      // A raised limit or a disabled cap lifts its pauses at once (authorize reads the flags), then every process reloads the cap.
      // A limit set under the running total pauses at once.
      const place = { prefix: deps.prefix, partitions: deps.partitions ?? 1 };
      const cap = capOfRow(tenantId, row);
      if (previous) await liftPausesForCap(deps.sql, deps.redis, place, cap);
      await pauseIfOverLimit(deps.sql, deps.redis, place, cap);
      await announceTo('caps.changed')(deps, tenantId);
    },
  });
}

/** What the tenant's own providers charge it (COGS), read by the cogs stage. */
export function costModelEndpoints(): Endpoint[] {
  return crudEndpoints({
    table: 'cost_models',
    path: '/cost-models',
    tag: 'Cost models',
    create: costModelCreate,
    update: costModelUpdate,
    filters: { currency: costModelCreate.shape.currency.optional() },
    out: costModelOut,
    present: presentCostModel,
    announce: announceTo('cost-models.changed'),
  });
}
