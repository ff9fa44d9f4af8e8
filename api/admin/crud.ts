import { z } from 'zod';
import { pageOf } from '../../schemas/admin.js';
import { TABLES, findOwned, insertOwned, listOwned, pageQuery, updateOwned, type Db, type Fragment, type Row, type Table } from './db.js';
import { endpoint, type AdminDeps, type Endpoint } from './endpoint.js';
import { notFound } from '../errors.js';

type Body = Record<string, unknown>;
type Filter = string | boolean | undefined;

export interface ReadSpec {
  table: Table;
  /** Collection path under /v1/admin, e.g. `/customers`, or `/mcp-servers/:mcp_server_id/tools` under a parent. */
  path: string;
  /** A nested collection: the parent's table; its id is the path parameter named like the column that holds it. */
  parent?: { table: Table; column: string };
  tag: string;
  /** List filters: each must equal the column of the same name, unless `conditions` says what it means. */
  filters?: z.ZodRawShape;
  /** Filters that are not a column's value (a state worked out from several columns): the condition each stands for. */
  conditions?: Record<string, (db: Db, value: string) => Fragment>;
  out: z.ZodType;
  present(row: Row): object;
  /** Adds to rows what present() needs from other tables, in one query per page. */
  decorate?(db: Db, tenantId: string, rows: Row[]): Promise<Row[]>;
}

/** The reply for rows of a spec: decorated, then presented. */
async function presentRows(spec: ReadSpec, db: Db, tenantId: string, rows: Row[]): Promise<object[]> {
  const decorated = spec.decorate ? await spec.decorate(db, tenantId, rows) : rows;
  return decorated.map((row) => spec.present(row));
}

export async function presentRow(spec: ReadSpec, db: Db, tenantId: string, row: Row): Promise<object> {
  return (await presentRows(spec, db, tenantId, [row]))[0];
}

export interface CrudSpec extends ReadSpec {
  create: z.ZodType<Body>;
  update?: z.ZodType<Body>;
  /**
   * Column values from a parsed body, checking inside the transaction that whatever it refers
   * to belongs to the tenant. `current` is the row being updated (locked), absent on create.
   */
  columns?(db: Db, tenantId: string, body: Body, current?: Row, parentId?: string): Promise<Body>;
  /** After commit: make the change visible to the pipeline (cache invalidation, control stream). */
  announce(deps: AdminDeps, tenantId: string, row: Row, previous?: Row): Promise<void>;
}

/** The parent's id from the path (404 unless the tenant owns it), as the column values that pin a row to it. */
async function pinned(spec: ReadSpec, db: Db, tenantId: string, params: Record<string, string>): Promise<Body> {
  if (!spec.parent) return {};
  const parentId = params[spec.parent.column];
  await findOwned(db, spec.parent.table, tenantId, parentId);
  return { [spec.parent.column]: parentId };
}

/** The row named by the path: the tenant's, and under the parent the path names. */
async function findFromPath(spec: ReadSpec, db: Db, tenantId: string, params: Record<string, string>, forUpdate = false): Promise<Row> {
  const row = await findOwned(db, spec.table, tenantId, params.id, { forUpdate });
  if (spec.parent && row[spec.parent.column] !== params[spec.parent.column]) throw notFound(TABLES[spec.table].noun, params.id);
  return row;
}

/** The cursor-paginated, filtered list of one tenant-owned resource. */
export function listEndpoint(spec: ReadSpec): Endpoint {
  const noun = TABLES[spec.table].noun;
  return endpoint({
    method: 'get',
    path: spec.path,
    tag: spec.tag,
    summary: `List ${noun}s`,
    description: 'Ordered by id; pass `next_cursor` back as `cursor` for the next page.',
    query: z.strictObject({ ...pageQuery, ...(spec.filters ?? {}) }),
    response: pageOf(spec.out),
    async handle({ tenantId, params, query, deps }) {
      const { limit, cursor, ...filters } = query as { limit: number; cursor?: string } & Record<string, Filter>;
      const pin = (await pinned(spec, deps.sql, tenantId, params)) as Record<string, string>;
      const columns: Record<string, Filter> = {};
      const conditions: Fragment[] = [];
      for (const [name, value] of Object.entries(filters)) {
        const condition = spec.conditions?.[name];
        if (!condition) columns[name] = value;
        else if (value !== undefined) conditions.push(condition(deps.sql, String(value)));
      }
      const page = await listOwned(deps.sql, spec.table, tenantId, { ...columns, ...pin }, { limit, cursor }, conditions);
      return { data: await presentRows(spec, deps.sql, tenantId, page.data), next_cursor: page.next_cursor };
    },
  });
}

/** List (cursor-paginated, filtered) and read of one tenant-owned resource. */
export function readEndpoints(spec: ReadSpec): Endpoint[] {
  const noun = TABLES[spec.table].noun;
  return [
    listEndpoint(spec),
    endpoint({
      method: 'get',
      path: `${spec.path}/:id`,
      tag: spec.tag,
      summary: `Read a ${noun}`,
      response: spec.out,
      async handle({ tenantId, params, deps }) {
        return presentRow(spec, deps.sql, tenantId, await findFromPath(spec, deps.sql, tenantId, params));
      },
    }),
  ];
}

const parentIdIn = (spec: ReadSpec, params: Record<string, string>) => spec.parent && params[spec.parent.column];

const bodyAsColumns = async (_db: Db, _tenantId: string, body: Body) => body;

function createEndpoint(spec: CrudSpec): Endpoint {
  const columns = spec.columns ?? bodyAsColumns;
  return endpoint({
    method: 'post',
    path: spec.path,
    tag: spec.tag,
    summary: `Create a ${TABLES[spec.table].noun}`,
    body: spec.create,
    response: spec.out,
    status: 201,
    async handle({ tenantId, params, body, deps }) {
      const row = await deps.sql.begin(async (tx) => {
        const pin = await pinned(spec, tx, tenantId, params);
        const values = await columns(tx, tenantId, body, undefined, parentIdIn(spec, params));
        return insertOwned(tx, spec.table, tenantId, { ...values, ...pin });
      });
      await spec.announce(deps, tenantId, row);
      return presentRow(spec, deps.sql, tenantId, row);
    },
  });
}

export function updateEndpoint(spec: Omit<CrudSpec, 'create'> & { update: z.ZodType<Body> }): Endpoint {
  const columns = spec.columns ?? bodyAsColumns;
  return endpoint({
    method: 'patch',
    path: `${spec.path}/:id`,
    tag: spec.tag,
    summary: `Update a ${TABLES[spec.table].noun}`,
    body: spec.update,
    response: spec.out,
    async handle({ tenantId, params, body, deps }) {
      const { row, previous } = await deps.sql.begin(async (tx) => {
        const previous = await findFromPath(spec, tx, tenantId, params, true);
        const values = await columns(tx, tenantId, body, previous, parentIdIn(spec, params));
        return { row: await updateOwned(tx, spec.table, tenantId, params.id, values), previous };
      });
      await spec.announce(deps, tenantId, row, previous);
      return presentRow(spec, deps.sql, tenantId, row);
    },
  });
}

/** Create, list, read and update of one tenant-owned resource. */
export function crudEndpoints(spec: CrudSpec): Endpoint[] {
  const update = spec.update;
  return [createEndpoint(spec), ...readEndpoints(spec), ...(update ? [updateEndpoint({ ...spec, update })] : [])];
}
