import { tenantTokenRotate, tenantTokenRotated } from '../../schemas/admin.js';
import { rotateTenantToken } from '../../store/tenants.js';
import { announce } from './announce.js';
import { endpoint, type Endpoint } from './endpoint.js';

/** The tenant's own bearer tokens: rotating one retires the others of its kind. */
export function tenantTokenEndpoints(): Endpoint[] {
  return [
    endpoint({
      method: 'post',
      path: '/tenant-tokens/rotate',
      tag: 'Tenant tokens',
      summary: "Rotate the tenant's ingest or admin token",
      description:
        'Issues a new token of the kind, shown this once, and retires the current ones at once or after grace_seconds. Rotating the admin token with no grace ends the session of the token making the call.',
      body: tenantTokenRotate,
      response: tenantTokenRotated,
      status: 201,
      async handle({ tenantId, body, deps }) {
        const rotated = await rotateTenantToken(deps.sql, tenantId, body.kind, { graceSeconds: body.grace_seconds });
        deps.tokens?.forgetAll();
        await announce(deps, tenantId, { messages: [{ type: 'tenant-tokens.changed', tenantId }] });
        return { kind: body.kind, token: rotated.token, retired_token_ids: rotated.retiredTokenIds };
      },
    }),
  ];
}
