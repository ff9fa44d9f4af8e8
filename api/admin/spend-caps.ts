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
import type { ControlMessage } from '../../pipeline/control.js';
import { announce } from './announce.js';
import { crudEndpoints } from './crud.js';
import { findOwned, type Row } from './db.js';
import type { AdminDeps, Endpoint } from './endpoint.js';
import { validationFailed } from '../errors.js';
import { basics, iso } from './present.js';

const MAX_BIGINT = 2n ** 63n - 1n;
const SCOPE_TABLES = { agent: 'agents', team: 'teams', customer: 'customers' } as const;

function presentSpendCap(row: Row) {
  return {
    ...basics(row),
    scope_kind: row.scope_kind as (typeof CAP_SCOPES)[number],
    scope_id: row.scope_id as string,
    period: row.period as (typeof CAP_PERIODS)[number],
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

/** A cap's limit arrives as a decimal string and is stored as integer nano-units. */
function limitNano(limit: unknown): string | undefined {
  if (limit === undefined) return undefined;
  const nano = parseNano(limit as string);
  if (nano > MAX_BIGINT) throw validationFailed('limit is too large', [{ path: 'limit', message: 'at most 9223372036.854775807' }]);
  return nano.toString();
}

const announceTo = (type: Extract<ControlMessage['type'], 'caps.changed' | 'cost-models.changed'>) => (deps: AdminDeps, tenantId: string) =>
  announce(deps, tenantId, { messages: [{ type, tenantId }] });

/** Hard spend caps on an agent, team or customer per session, day or month. */
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
      if (typeof body.scope_kind === 'string') {
        await findOwned(db, SCOPE_TABLES[body.scope_kind as keyof typeof SCOPE_TABLES], tenantId, body.scope_id as string);
      }
      return { ...body, limit_nano: limitNano(limit) };
    },
    announce: announceTo('caps.changed'),
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
