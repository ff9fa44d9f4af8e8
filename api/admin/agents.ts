import { activeStatus, agentCreate, agentOut, agentUpdate, appCreate, appOut, appUpdate } from '../../schemas/admin.js';
import type { AGENT_TYPES } from '../../domain/events.js';
import { crudEndpoints } from './crud.js';
import type { Row } from './db.js';
import type { AdminDeps, Endpoint } from './endpoint.js';
import { announceHierarchyChange, customerOfTeam, placementColumns, statusEndpoints } from './hierarchy.js';
import { basics } from './present.js';

function placement(row: Row) {
  return {
    ...basics(row),
    team_id: row.team_id as string,
    product_id: row.product_id as string | null,
    name: row.name as string,
    status: row.status as 'active' | 'suspended',
    metadata: row.metadata as Record<string, unknown>,
  };
}

function presentAgent(row: Row) {
  return {
    ...placement(row),
    agent_type: row.agent_type as (typeof AGENT_TYPES)[number],
    max_concurrent_sessions: row.max_concurrent_sessions as number | null,
    rate_limit_per_minute: row.rate_limit_per_minute as number | null,
  };
}

const presentApp = placement;

const placementFilters = {
  team_id: agentCreate.shape.team_id.optional(),
  product_id: agentCreate.shape.product_id,
  status: activeStatus.optional(),
};

/** Agents: registered with a type and limits, placed in a team, suspended and reactivated. */
export function agentEndpoints(): Endpoint[] {
  const scopeOf = async (row: Row, deps: AdminDeps, tenantId: string) => ({
    scope: { agentId: row.id },
    agentIds: [row.id],
    customerIds: [await customerOfTeam(deps.sql, tenantId, row.team_id as string)],
  });
  return [
    ...crudEndpoints({
      table: 'agents',
      path: '/agents',
      tag: 'Agents',
      create: agentCreate,
      update: agentUpdate,
      filters: { ...placementFilters, agent_type: agentCreate.shape.agent_type.optional() },
      out: agentOut,
      present: presentAgent,
      columns: placementColumns,
      announce: async (deps, tenantId, row) => announceHierarchyChange(deps, tenantId, await scopeOf(row, deps, tenantId)),
    }),
    ...statusEndpoints({
      table: 'agents',
      path: '/agents',
      tag: 'Agents',
      out: agentOut,
      present: presentAgent,
      scopeOf,
    }),
  ];
}

/** Apps: the billing unit of standard and agentic APIs, placed in a team like agents. */
export function appEndpoints(): Endpoint[] {
  const scopeOf = async (row: Row, deps: AdminDeps, tenantId: string) => ({
    scope: { appId: row.id },
    customerIds: [await customerOfTeam(deps.sql, tenantId, row.team_id as string)],
  });
  return [
    ...crudEndpoints({
      table: 'apps',
      path: '/apps',
      tag: 'Apps',
      create: appCreate,
      update: appUpdate,
      filters: placementFilters,
      out: appOut,
      present: presentApp,
      columns: placementColumns,
      announce: async (deps, tenantId, row) => announceHierarchyChange(deps, tenantId, await scopeOf(row, deps, tenantId)),
    }),
    ...statusEndpoints({ table: 'apps', path: '/apps', tag: 'Apps', out: appOut, present: presentApp, scopeOf }),
  ];
}
