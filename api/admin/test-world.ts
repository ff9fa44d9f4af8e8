import type { Hono } from 'hono';
import { afterAll, beforeAll } from 'vitest';
import { controlStreamKey } from '../../pipeline/keys.js';
import type { ControlMessage } from '../../pipeline/control.js';
import { createTenant, type CreatedTenant } from '../../store/tenants.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { createAdminRoutes } from './index.js';

interface Reply {
  status: number;
  /** Replies are JSON of many shapes; tests read them as such. */
  body: any;
}

export type Call = (method: string, path: string, body?: unknown) => Promise<Reply>;

export interface AdminWorld {
  world: Isolated;
  app: Hono;
  /** Two tenants: everything a test makes belongs to `a` unless it says otherwise; `b` tries to reach it. */
  a: CreatedTenant & { call: Call };
  b: CreatedTenant & { call: Call };
  /** Control messages published since the previous call. */
  takeControl(): Promise<ControlMessage[]>;
}

/**
 * A test file's own database and Redis prefix, the admin routes over them, and two tenants.
 * Registers its own beforeAll/afterAll; read the returned object inside tests.
 */
export function adminWorld(name: string): AdminWorld {
  const state = {} as AdminWorld;
  let lastControlId = '0-0';
  beforeAll(async () => {
    const world = await isolated(name);
    const app = createAdminRoutes({ sql: world.sql, redis: world.redis, prefix: world.config.REDIS_PREFIX }) as unknown as Hono;
    const caller = (token: string): Call => async (method, path, body) => {
      const init: RequestInit = { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } };
      if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
      const response = await app.request(path, init);
      const text = await response.text();
      return { status: response.status, body: text ? JSON.parse(text) : undefined };
    };
    const a = await createTenant(world.sql, 'Tenant A');
    const b = await createTenant(world.sql, 'Tenant B');
    Object.assign(state, {
      world,
      app,
      a: { ...a, call: caller(a.adminToken) },
      b: { ...b, call: caller(b.adminToken) },
      async takeControl() {
        const entries = await world.redis.xrange(controlStreamKey(world.config.REDIS_PREFIX), `(${lastControlId}`, '+');
        if (entries.length) lastControlId = entries[entries.length - 1][0];
        return entries.map(([, fields]) => JSON.parse(fields[fields.indexOf('m') + 1]) as ControlMessage);
      },
    });
  });
  afterAll(async () => {
    await state.world?.cleanup();
  });
  return state;
}

/** A customer with one team, an agent and an app in it, for tests that need a place to hang things. */
export async function seedHierarchy(call: Call, label = 'Seed') {
  const customer = await created(call, '/v1/admin/customers', { name: `${label} customer` });
  const team = await created(call, '/v1/admin/teams', { customer_id: customer.id, name: `${label} team` });
  const agent = await created(call, '/v1/admin/agents', { team_id: team.id, name: `${label} agent`, agent_type: 'CLAUDE' });
  const app = await created(call, '/v1/admin/apps', { team_id: team.id, name: `${label} app` });
  return { customer, team, agent, app };
}

/** POSTs and insists on 201, returning the body. */
export async function created(call: Call, path: string, body: unknown) {
  const reply = await call('POST', path, body);
  if (reply.status !== 201) throw new Error(`POST ${path} answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  return reply.body;
}

/** Every item of a list, following next_cursor page by page. */
export async function listAll(call: Call, path: string, limit: number) {
  const items = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const separator = path.includes('?') ? '&' : '?';
    const reply = await call('GET', `${path}${separator}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    if (reply.status !== 200) throw new Error(`GET ${path} answered ${reply.status}: ${JSON.stringify(reply.body)}`);
    items.push(...reply.body.data);
    cursor = reply.body.next_cursor;
    pages++;
  } while (cursor);
  return { items, pages };
}

export const SIMPLE_PRICING = { tool_invocations: { '*': '0.01', search: '0.05' } };
