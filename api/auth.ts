import type { MiddlewareHandler } from 'hono';
import { isTransient } from '../pipeline/errors.js';
import { ApiError, unavailable } from './errors.js';
import type { TenantTokens, TokenKind } from '../store/tenant-tokens.js';

export interface TenantAuthVariables {
  tenantId: string;
  tokenKind: TokenKind;
  /** The id of the token that made the request (tenant_tokens.id). */
  tokenId: string;
}

/**
 * The tenant of a bearer token of the given kind, from an `Authorization` header; throws the
 * ApiError to answer otherwise (401, or 503 while the token store is unreachable).
 */
export async function verifyBearer(tokens: TenantTokens, kind: TokenKind, header: string): Promise<{ tenantId: string; kind: TokenKind; tokenId: string }> {
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  let verified: Awaited<ReturnType<TenantTokens['verify']>>;
  try {
    verified = match ? await tokens.verify(match[1]) : undefined;
  } catch (err) {
    // PostgreSQL unreachable and the token not verified before: the client keeps its request and retries.
    if (isTransient(err)) throw unavailable('unavailable', 'cannot verify the token now: the tenant store is unreachable; retry later', 2);
    throw err;
  }
  if (!verified || verified.kind !== kind) {
    throw new ApiError(401, 'unauthorized', `a valid ${kind} token is required: Authorization: Bearer <token>`, undefined, {
      'WWW-Authenticate': 'Bearer',
    });
  }
  return verified;
}

/** Hono middleware: requires a bearer token of the given kind and sets `tenantId` (and `tokenKind`, `tokenId`). */
export function requireTenant(tokens: TenantTokens, kind: TokenKind): MiddlewareHandler<{ Variables: TenantAuthVariables }> {
  return async (c, next) => {
    // Under @hono/node-server the Node request is at hand: reading its header skips building a WHATWG Headers.
    const nodeHeaders = (c.env as { incoming?: { headers?: Record<string, string | string[] | undefined> } } | undefined)?.incoming?.headers;
    const fromNode = nodeHeaders?.authorization;
    const header = (typeof fromNode === 'string' ? fromNode : c.req.header('authorization')) ?? '';
    const verified = await verifyBearer(tokens, kind, header);
    c.set('tenantId', verified.tenantId);
    c.set('tokenKind', verified.kind);
    c.set('tokenId', verified.tokenId);
    await next();
  };
}
