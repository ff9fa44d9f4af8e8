import type postgres from 'postgres';
import { z } from 'zod';
import { randomToken } from '../../store/credentials.js';
import { ApiError, notFound } from '../errors.js';

/** A connection or a transaction: every helper here runs in either. */
export type Db = postgres.ISql;

/** A piece of SQL built with a Db's tagged template, to go inside a query (`AND ...`). */
export type Fragment = postgres.PendingQuery<postgres.Row[]>;

/** The tenant-owned tables the admin API manages, with the id prefix and the noun used in messages. */
export const TABLES = {
  customers: { idPrefix: 'cus', noun: 'customer', json: ['metadata'] },
  teams: { idPrefix: 'team', noun: 'team', json: ['metadata'] },
  products: { idPrefix: 'prod', noun: 'product', json: [] },
  agents: { idPrefix: 'agt', noun: 'agent', json: ['metadata'] },
  apps: { idPrefix: 'app', noun: 'app', json: ['metadata'] },
  api_keys: { idPrefix: 'key', noun: 'API key', json: [] },
  client_credentials: { idPrefix: 'cred', noun: 'client credential', json: [] },
  mcp_servers: { idPrefix: 'mcp', noun: 'MCP server', json: [] },
  mcp_tools: { idPrefix: 'tool', noun: 'MCP tool', json: [] },
  rate_plans: { idPrefix: 'plan', noun: 'rate plan', json: [] },
  rate_plan_versions: { idPrefix: 'planv', noun: 'rate plan version', json: ['pricing'] },
  subscriptions: { idPrefix: 'sub', noun: 'subscription', json: ['overrides', 'commitment', 'allocation'] },
  spend_caps: { idPrefix: 'cap', noun: 'spend cap', json: [] },
  cost_models: { idPrefix: 'cost', noun: 'cost model', json: ['model'] },
  webhook_endpoints: { idPrefix: 'we', noun: 'webhook endpoint', json: [] },
  webhook_deliveries: { idPrefix: 'whd', noun: 'webhook delivery', json: [] },
} as const satisfies Record<string, { idPrefix: string; noun: string; json: readonly string[] }>;

export type Table = keyof typeof TABLES;

export type Row = Record<string, unknown> & { id: string; tenant_id: string };

/**
 * Ids that sort by creation time (eight base-36 digits of epoch milliseconds, then 16 random
 * characters), so that lists, which are ordered by id, come out oldest first.
 */
function sortableId(prefix: string, now = Date.now()): string {
  return `${prefix}_${now.toString(36).padStart(8, '0')}${randomToken(16)}`;
}

/** Column values as written: undefined keys are dropped (left to their defaults), jsonb values are sent as JSON. */
function columnValues(db: Db, table: Table, values: Record<string, unknown>): Record<string, unknown> {
  const json: readonly string[] = TABLES[table].json;
  const out: Record<string, unknown> = {};
  for (const [column, value] of Object.entries(values)) {
    if (value === undefined) continue;
    out[column] = json.includes(column) && value !== null ? db.json(value as postgres.JSONValue) : value;
  }
  return out;
}

/** The row of `table` with this id, owned by this tenant; 404 otherwise (another tenant's row included). */
export async function findOwned<R extends Row = Row>(
  db: Db,
  table: Table,
  tenantId: string,
  id: string,
  options: { forUpdate?: boolean } = {},
): Promise<R> {
  const [row] = await db<R[]>`
    SELECT * FROM ${db(table)} WHERE tenant_id = ${tenantId} AND id = ${id}
    ${options.forUpdate ? db`FOR UPDATE` : db``}`;
  if (!row) throw notFound(TABLES[table].noun, id);
  return row;
}

export async function insertOwned<R extends Row = Row>(db: Db, table: Table, tenantId: string, values: Record<string, unknown>): Promise<R> {
  const row = columnValues(db, table, { id: sortableId(TABLES[table].idPrefix), ...values, tenant_id: tenantId });
  const [inserted] = await db<R[]>`INSERT INTO ${db(table)} ${db(row)} RETURNING *`;
  return inserted;
}

/** Updates the named columns of one owned row (404 if it is not the tenant's) and bumps updated_at. */
export async function updateOwned<R extends Row = Row>(
  db: Db,
  table: Table,
  tenantId: string,
  id: string,
  values: Record<string, unknown>,
): Promise<R> {
  const changes = columnValues(db, table, values);
  if (Object.keys(changes).length === 0) return findOwned<R>(db, table, tenantId, id);
  const [row] = await db<R[]>`
    UPDATE ${db(table)} SET ${db(changes)}, updated_at = now()
    WHERE tenant_id = ${tenantId} AND id = ${id}
    RETURNING *`;
  if (!row) throw notFound(TABLES[table].noun, id);
  return row;
}

// --- Cursor pagination: stable order by id; the cursor is the last id of a page, opaque to callers.

const MAX_PAGE_SIZE = 200;

export const pageQuery = {
  limit: z.coerce.number().int().min(1).max(MAX_PAGE_SIZE).default(50).meta({ description: `Page size, 1 to ${MAX_PAGE_SIZE}.` }),
  cursor: z.string().min(1).max(200).optional().meta({ description: 'The `next_cursor` of the previous page.' }),
};

export interface Page<R> {
  data: R[];
  next_cursor: string | null;
}

function encodeCursor(lastId: string): string {
  return Buffer.from(JSON.stringify({ after: lastId }), 'utf8').toString('base64url');
}

function decodeCursor(cursor: string): string {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (parsed && typeof parsed === 'object' && typeof (parsed as { after?: unknown }).after === 'string') {
      return (parsed as { after: string }).after;
    }
  } catch {
    // fall through: any undecodable cursor is refused the same way
  }
  throw new ApiError(400, 'invalid_cursor', 'cursor is not one this API returned; pass next_cursor from the previous page unchanged', [
    { path: 'cursor', message: 'not a cursor of this API' },
  ]);
}

/**
 * One page of the tenant's rows of `table`, filtered by equality on the given columns
 * (undefined filters are ignored). Column names come from code, never from the request.
 */
export async function listOwned<R extends Row = Row>(
  db: Db,
  table: Table,
  tenantId: string,
  filters: Record<string, string | boolean | undefined>,
  page: { limit: number; cursor?: string },
  /** Conditions beyond columns equal to values, each `AND ...`. */
  more: Fragment[] = [],
): Promise<Page<R>> {
  const after = page.cursor === undefined ? undefined : decodeCursor(page.cursor);
  const conditions = Object.entries(filters)
    .filter(([, value]) => value !== undefined)
    .map(([column, value]) => db`AND ${db(column)} = ${value as string | boolean}`)
    .concat(more);
  const rows = await db<R[]>`
    SELECT * FROM ${db(table)}
    WHERE tenant_id = ${tenantId}
      ${conditions.reduce((all, condition) => db`${all} ${condition}`, db``)}
      ${after === undefined ? db`` : db`AND id > ${after}`}
    ORDER BY id
    LIMIT ${page.limit + 1}`;
  const data = rows.slice(0, page.limit);
  return { data, next_cursor: rows.length > page.limit ? encodeCursor(data[data.length - 1].id) : null };
}
