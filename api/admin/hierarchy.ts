import type { ControlMessage } from '../../pipeline/control.js';
import { announce, credentialsUnder, type HierarchyScope } from './announce.js';
import { TABLES, findOwned, updateOwned, type Db, type Row, type Table } from './db.js';
import { endpoint, type AdminDeps, type Endpoint } from './endpoint.js';
import { ApiError } from '../errors.js';

/**
 * Checks the team and product an agent or app is placed under. An agent or app may move to
 * another team of its customer, not to another customer: its subscriptions, ledger rows and
 * caps belong to the customer it was created under.
 */
export async function placementColumns(db: Db, tenantId: string, body: Record<string, unknown>, current?: Row): Promise<Record<string, unknown>> {
  if (typeof body.team_id === 'string' && body.team_id !== current?.team_id) {
    const team = await findOwned(db, 'teams', tenantId, body.team_id);
    if (current) {
      const from = await findOwned(db, 'teams', tenantId, current.team_id as string);
      if (from.customer_id !== team.customer_id) {
        throw new ApiError(
          409,
          'cross_customer_move',
          `team ${team.id} belongs to another customer; an agent or app can only move between teams of customer ${String(from.customer_id)}`,
        );
      }
    }
  }
  if (typeof body.product_id === 'string') await findOwned(db, 'products', tenantId, body.product_id);
  return body;
}

export async function customerOfTeam(db: Db, tenantId: string, teamId: string): Promise<string> {
  return (await findOwned(db, 'teams', tenantId, teamId)).customer_id as string;
}

/** The pipeline's view of a change under a customer: the credentials below `scope` lose their cached attribution. */
export async function announceHierarchyChange(
  deps: AdminDeps,
  tenantId: string,
  change: { scope?: HierarchyScope; agentIds?: string[]; customerIds?: string[] },
): Promise<void> {
  const message: ControlMessage = { type: 'hierarchy.changed', tenantId };
  if (change.agentIds) message.agentIds = change.agentIds;
  if (change.customerIds) message.customerIds = change.customerIds;
  const credentials = change.scope ? await credentialsUnder(deps.sql, tenantId, change.scope) : undefined;
  await announce(deps, tenantId, { credentials, messages: [message] });
}

/**
 * Suspend and reactivate: a suspended customer, agent or app stops authenticating in the
 * pipeline and at /v1/authorize within a second; reactivating restores it. Both are idempotent.
 */
export function statusEndpoints(options: {
  table: Extract<Table, 'customers' | 'agents' | 'apps'>;
  path: string;
  tag: string;
  out: Endpoint['response'];
  present(row: Row): unknown;
  scopeOf(row: Row, deps: AdminDeps, tenantId: string): Promise<{ scope: HierarchyScope; agentIds?: string[]; customerIds: string[] }>;
}): Endpoint[] {
  const noun = TABLES[options.table].noun;
  return (['suspend', 'reactivate'] as const).map((action) =>
    endpoint({
      method: 'post',
      path: `${options.path}/:id/${action}`,
      tag: options.tag,
      summary: action === 'suspend' ? `Suspend a ${noun}` : `Reactivate a ${noun}`,
      description:
        action === 'suspend'
          ? `Its credentials stop authenticating everywhere within a second. Idempotent.`
          : `Its credentials authenticate again within a second. Idempotent.`,
      response: options.out,
      async handle({ tenantId, params, deps }) {
        const status = action === 'suspend' ? 'suspended' : 'active';
        const row = await updateOwned(deps.sql, options.table, tenantId, params.id, { status });
        await announceHierarchyChange(deps, tenantId, await options.scopeOf(row, deps, tenantId));
        return options.present(row);
      },
    }),
  );
}
