import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { customerCreate } from '../schemas/admin.js';
import { adminEndpoints } from './admin/index.js';
import { WEBHOOK_EVENT_TYPES } from '../domain/webhooks.js';
import { createOpenApiRoutes, openApiDocument } from './openapi.js';

type Doc = {
  openapi: string;
  paths: Record<string, Record<string, { operationId: string; parameters: { name: string; in: string }[]; requestBody?: { content: Record<string, { schema: unknown }> } }>>;
  components: { schemas: Record<string, unknown> };
};

describe('openApiDocument', () => {
  const doc = openApiDocument() as unknown as Doc;

  it('is OpenAPI 3.1 with every admin route and the public endpoints', () => {
    expect(doc.openapi).toBe('3.1.0');
    for (const endpoint of adminEndpoints().filter((e) => !e.hidden)) {
      const path = '/v1/admin' + endpoint.path.replace(/:([A-Za-z_]+)/g, '{$1}');
      expect(doc.paths[path]?.[endpoint.method], `${endpoint.method} ${path}`).toBeDefined();
    }
    expect(doc.paths['/v1/events'].post).toBeDefined();
    expect(doc.paths['/v1/authorize'].post).toBeDefined();
    expect(doc.paths['/v1/rate-plans/quote'].post).toBeDefined();
    expect(doc.paths['/v1/customers/{id}/invoices/current'].get).toBeDefined();
    expect(doc.paths['/v1/admin/subscriptions/{id}']?.patch).toBeUndefined();
  });

  it('documents request bodies with the very schemas that validate them', () => {
    const documented = doc.paths['/v1/admin/customers'].post.requestBody!.content['application/json'].schema;
    const { $schema: _ignored, ...expected } = z.toJSONSchema(customerCreate, { io: 'input' }) as Record<string, unknown>;
    expect(documented).toEqual(expected);
  });

  it("documents a rate plan's pricing with the rate plan schema that validates it", () => {
    type Pricing = { anyOf: { properties: Record<string, unknown> }[] };
    const body = doc.paths['/v1/admin/rate-plans'].post.requestBody!.content['application/json'].schema as { properties: { pricing: Pricing } };
    const [plain, wrapped] = body.properties.pricing.anyOf;
    expect(Object.keys(plain.properties)).toEqual(expect.arrayContaining(['tool_invocations', 'duration_buckets', 'commitment', 'mcp_servers']));
    expect(wrapped.properties.dimensionPricing).toEqual(plain);
  });

  it('documents the usage read routes with the admin token, their query parameters and replies', () => {
    const summary = doc.paths['/v1/usage/summary'].get as unknown as { security: unknown[]; parameters: { name: string; in: string }[]; responses: Record<string, unknown> };
    expect(summary.security).toEqual([{ adminToken: [] }]);
    expect(summary.parameters.map((p) => p.name)).toEqual(['group_by', 'from', 'to', 'customer_id']);
    expect(Object.keys(summary.responses)).toEqual(expect.arrayContaining(['200', '400', '404']));
    expect(doc.paths['/v1/usage/events/{event_id}/charge'].get).toBeDefined();
    expect(doc.paths['/v1/usage/customers/{id}/commitment'].get).toBeDefined();
  });

  it('declares every path parameter, has unique operation ids and resolvable references', () => {
    const ids = new Set<string>();
    for (const [path, operations] of Object.entries(doc.paths)) {
      const names = [...path.matchAll(/\{([^}]+)\}/g)].map(([, name]) => name);
      for (const operation of Object.values(operations)) {
        expect(ids.has(operation.operationId), operation.operationId).toBe(false);
        ids.add(operation.operationId);
        const declared = operation.parameters.filter((p) => p.in === 'path').map((p) => p.name);
        expect(declared).toEqual(names);
      }
    }
    const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)].map(([, name]) => name);
    expect(refs.length).toBeGreaterThan(0);
    for (const name of refs) expect(doc.components.schemas[name], name).toBeDefined();
  });

  it('documents every webhook event type in the webhooks section, with the Standard Webhooks headers', () => {
    const webhooks = (doc as unknown as { webhooks: Record<string, { post: { parameters: { name: string }[]; requestBody: { content: Record<string, { schema: { properties: Record<string, unknown> } }> } } }> }).webhooks;
    expect(Object.keys(webhooks).sort()).toEqual([...WEBHOOK_EVENT_TYPES].sort());
    for (const hook of Object.values(webhooks)) {
      expect(hook.post.parameters.map((p) => p.name)).toEqual(['webhook-id', 'webhook-timestamp', 'webhook-signature']);
      expect(Object.keys(hook.post.requestBody.content['application/json'].schema.properties)).toEqual(['type', 'timestamp', 'data']);
    }
    expect(doc.paths['/v1/admin/webhook-endpoints'].post.requestBody).toBeDefined();
    expect(doc.paths['/v1/admin/webhook-deliveries/{id}/redeliver'].post).toBeDefined();
  });

  it('lists pagination parameters on list routes', () => {
    const names = doc.paths['/v1/admin/agents'].get.parameters.map((p) => p.name);
    expect(names).toEqual(expect.arrayContaining(['limit', 'cursor', 'team_id', 'status']));
  });

  it('is served at GET /openapi.json', async () => {
    const response = await createOpenApiRoutes().request('/openapi.json');
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual(JSON.parse(JSON.stringify(doc)));
  });
});
