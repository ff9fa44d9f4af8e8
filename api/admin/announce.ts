import { publishControl, type ControlMessage } from '../../pipeline/control.js';
import { invalidateAttribution } from '../../store/attribution-keys.js';
import type { Db } from './db.js';
import type { AdminDeps } from './endpoint.js';
import { ApiError } from '../errors.js';

/** The credentials whose cached attribution a change makes stale. */
export interface Credentials {
  keyHashes: string[];
  clientIds: string[];
}

export type HierarchyScope = { customerId: string } | { teamId: string } | { agentId: string } | { appId: string } | { productId: string };

/** Every live API key and client id under a customer, team, agent or app, or of the agents and apps of a product. */
export async function credentialsUnder(db: Db, tenantId: string, scope: HierarchyScope): Promise<Credentials> {
  const keyScope =
    'customerId' in scope ? db`t.customer_id = ${scope.customerId}`
    : 'teamId' in scope ? db`t.id = ${scope.teamId}`
    : 'agentId' in scope ? db`k.agent_id = ${scope.agentId}`
    : 'appId' in scope ? db`k.app_id = ${scope.appId}`
    : db`coalesce(ag.product_id, ap.product_id) = ${scope.productId}`;
  const keys = await db<{ key_hash: string }[]>`
    SELECT k.key_hash FROM api_keys k
    LEFT JOIN agents ag ON ag.tenant_id = k.tenant_id AND ag.id = k.agent_id
    LEFT JOIN apps ap ON ap.tenant_id = k.tenant_id AND ap.id = k.app_id
    JOIN teams t ON t.tenant_id = k.tenant_id AND t.id = coalesce(ag.team_id, ap.team_id)
    WHERE k.tenant_id = ${tenantId} AND k.status = 'active' AND ${keyScope}`;
  if ('appId' in scope) return { keyHashes: keys.map((r) => r.key_hash), clientIds: [] };
  const clientScope =
    'customerId' in scope ? db`t.customer_id = ${scope.customerId}`
    : 'teamId' in scope ? db`t.id = ${scope.teamId}`
    : 'agentId' in scope ? db`c.agent_id = ${scope.agentId}`
    : db`ag.product_id = ${scope.productId}`;
  const clients = await db<{ client_id: string }[]>`
    SELECT c.client_id FROM client_credentials c
    JOIN agents ag ON ag.tenant_id = c.tenant_id AND ag.id = c.agent_id
    JOIN teams t ON t.tenant_id = c.tenant_id AND t.id = ag.team_id
    WHERE c.tenant_id = ${tenantId} AND c.status = 'active' AND ${clientScope}`;
  return { keyHashes: keys.map((r) => r.key_hash), clientIds: clients.map((r) => r.client_id) };
}

/**
 * A resolver that read PostgreSQL just before the change committed can write its stale answer
 * to the cache just after the first delete; a second delete, this much later, removes it.
 */
export const SECOND_INVALIDATION_MS = 500;

/**
 * Makes a committed change visible to the pipeline at once: drops the cached attribution of
 * every affected credential, then announces the change on the control stream, which every
 * process applies to what it holds in memory. Call only after the transaction has committed,
 * so nothing can re-read and cache the old state afterwards.
 */
export async function announce(
  deps: AdminDeps,
  tenantId: string,
  change: { credentials?: Credentials; messages?: ControlMessage[] },
): Promise<void> {
  const keyHashes = change.credentials?.keyHashes ?? [];
  const clientIds = change.credentials?.clientIds ?? [];
  const messages: ControlMessage[] = [];
  if (keyHashes.length || clientIds.length) messages.push({ type: 'credentials.changed', tenantId, keyHashes, clientIds });
  messages.push(...(change.messages ?? []));
  try {
    await invalidateAttribution(deps.redis, deps.prefix, tenantId, { keyHashes, clientIds });
    for (const message of messages) await publishControl(deps.redis, deps.prefix, message);
    if (keyHashes.length || clientIds.length) {
      setTimeout(() => {
        invalidateAttribution(deps.redis, deps.prefix, tenantId, { keyHashes, clientIds }).catch(() => {
          // Best effort: the first delete and the control message already went out.
        });
      }, SECOND_INVALIDATION_MS).unref();
    }
  } catch (err) {
    throw new ApiError(
      503,
      'propagation_failed',
      `the change is saved, but announcing it to the pipeline failed (${(err as Error).message}); retry the request, or it takes effect when cached entries expire`,
    );
  }
}
