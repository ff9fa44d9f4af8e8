import { activeStatus, customerCreate, customerOut, customerUpdate, teamCreate, teamOut, teamUpdate } from '../../schemas/admin.js';
import { crudEndpoints } from './crud.js';
import { findOwned, type Row } from './db.js';
import type { Endpoint } from './endpoint.js';
import { announceHierarchyChange, statusEndpoints } from './hierarchy.js';
import { basics } from './present.js';

function presentCustomer(row: Row) {
  return {
    ...basics(row),
    name: row.name as string,
    external_ref: row.external_ref as string | null,
    status: row.status as 'active' | 'suspended',
    metadata: row.metadata as Record<string, unknown>,
  };
}

function presentTeam(row: Row) {
  return { ...basics(row), customer_id: row.customer_id as string, name: row.name as string, metadata: row.metadata as Record<string, unknown> };
}

export function customerEndpoints(): Endpoint[] {
  return [
    ...crudEndpoints({
      table: 'customers',
      path: '/customers',
      tag: 'Customers',
      create: customerCreate,
      update: customerUpdate,
      filters: { status: activeStatus.optional(), external_ref: customerCreate.shape.external_ref },
      out: customerOut,
      present: presentCustomer,
      announce: (deps, tenantId, row) => announceHierarchyChange(deps, tenantId, { customerIds: [row.id] }),
    }),
    ...statusEndpoints({
      table: 'customers',
      path: '/customers',
      tag: 'Customers',
      out: customerOut,
      present: presentCustomer,
      scopeOf: async (row) => ({ scope: { customerId: row.id }, customerIds: [row.id] }),
    }),
  ];
}

export function teamEndpoints(): Endpoint[] {
  return crudEndpoints({
    table: 'teams',
    path: '/teams',
    tag: 'Teams',
    create: teamCreate,
    update: teamUpdate,
    filters: { customer_id: teamCreate.shape.customer_id.optional() },
    out: teamOut,
    present: presentTeam,
    async columns(db, tenantId, body) {
      if (typeof body.customer_id === 'string') await findOwned(db, 'customers', tenantId, body.customer_id);
      return body;
    },
    announce: (deps, tenantId, row) => announceHierarchyChange(deps, tenantId, { customerIds: [row.customer_id as string] }),
  });
}
