import type { Context, Hono } from 'hono';
import type { Redis } from '../../pipeline/redis.js';
import type { z } from 'zod';
import type { TenantTokens } from '../../store/tenant-tokens.js';
import type { TenantAuthVariables } from '../auth.js';
import type { Sql } from '../../pipeline/postgres.js';
import { describeIssues, unstorableTextIn } from '../../domain/validation.js';
import { ApiError, validationFailed } from '../errors.js';

export interface AdminDeps {
  sql: Sql;
  redis: Redis;
  /** The Redis key prefix of this deployment (REDIS_PREFIX). */
  prefix: string;
  /** PARTITIONS of this deployment (1 when omitted): where a customer's pause flags live. */
  partitions?: number;
  /** The process's verified-token cache, forgotten at once when the tenant's tokens rotate. */
  tokens?: TenantTokens;
  /** Webhook endpoint rules of this deployment; absent: private networks forbidden, secrets sealed without a key. */
  webhooks?: WebhookSettings;
}

interface WebhookSettings {
  /** WEBHOOK_ALLOW_PRIVATE_NETWORKS */
  allowPrivateNetworks: boolean;
  /** WEBHOOK_SECRET_KEY: seals signing secrets at rest. */
  secretKey?: string;
}

export type AdminEnv = { Variables: TenantAuthVariables };

export type Method = 'get' | 'post' | 'patch' | 'put' | 'delete';

export interface RequestContext<Body, Query> {
  tenantId: string;
  /** The admin token making the request (tenant_tokens.id): which admin acted, where that is recorded. */
  tokenId: string;
  params: Record<string, string>;
  body: Body;
  query: Query;
  deps: AdminDeps;
}

type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

/**
 * One route of the admin API, described once: Hono serves it with these schemas validating
 * the request, and the OpenAPI document is generated from the very same objects.
 */
export interface Endpoint {
  method: Method;
  /** Hono path, `:name` for parameters. */
  path: string;
  summary: string;
  description?: string;
  tag: string;
  body?: z.ZodType;
  query?: z.ZodType;
  /** Schema of a successful reply, for the document. */
  response?: z.ZodType;
  status: 200 | 201;
  /** Served but left out of the document (routes that only explain a refusal). */
  hidden?: boolean;
  handle(ctx: RequestContext<unknown, unknown>): Promise<unknown>;
}

export function endpoint<BodySchema extends z.ZodType | undefined = undefined, QuerySchema extends z.ZodType | undefined = undefined>(def: {
  method: Method;
  path: string;
  summary: string;
  description?: string;
  tag: string;
  body?: BodySchema;
  query?: QuerySchema;
  response?: z.ZodType;
  status?: 200 | 201;
  hidden?: boolean;
  handle(ctx: RequestContext<Out<BodySchema>, Out<QuerySchema>>): Promise<unknown>;
}): Endpoint {
  return { ...def, status: def.status ?? 200, handle: def.handle as Endpoint['handle'] };
}

async function readJsonBody(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, 'invalid_json', 'the request body is not valid JSON');
  }
}

function parseWith(schema: z.ZodType, input: unknown, what: string): unknown {
  const unstorable = unstorableTextIn(input);
  if (unstorable) throw validationFailed(`invalid ${what}: ${unstorable.path ? `${unstorable.path}: ` : ''}${unstorable.message}`, [unstorable]);
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const details = describeIssues(parsed.error);
  const first = details[0];
  throw validationFailed(`invalid ${what}: ${first.path ? `${first.path}: ` : ''}${first.message}`, details);
}

export function mountEndpoints(app: Hono<AdminEnv>, basePath: string, endpoints: Endpoint[], deps: AdminDeps): void {
  for (const route of endpoints) {
    app.on(route.method.toUpperCase(), basePath + route.path, async (c) => {
      const query = route.query ? parseWith(route.query, c.req.query(), 'query') : undefined;
      const body = route.body ? parseWith(route.body, await readJsonBody(c), 'body') : undefined;
      const result = await route.handle({ tenantId: c.get('tenantId'), tokenId: c.get('tokenId'), params: c.req.param() as Record<string, string>, body, query, deps });
      return c.json(result as object, route.status);
    });
  }
}
