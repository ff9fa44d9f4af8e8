import { randomBytes } from 'node:crypto';
import type { UsageEvent } from '../../domain/events.js';
import type { Sql } from '../../pipeline/postgres.js';
import { seedTenant, type SeedSpec, type SeededAgent, type SeededTenant } from '../../ops/seed.js';

/** The article's per-tool plan: tool rates with a default, token rates, three duration buckets. */
export const ARTICLE_PLAN = {
  tool_invocations: { transform_schema: 0.1, validate_credentials: 0.001, read_database: 0.05, '*': 0.002 },
  token_multipliers: { input_tokens: 0.000001, output_tokens: 0.000002 },
  duration_buckets: [
    { max_seconds: 60, rate: 0.1 },
    { max_seconds: 300, rate: 0.3 },
    { max_seconds: null, rate: 1.5 },
  ],
};

export function seedSmall(sql: Sql, overrides: Partial<SeedSpec> = {}): Promise<SeededTenant> {
  return seedTenant(sql, {
    name: 'test tenant',
    pricing: ARTICLE_PLAN,
    customers: 2,
    teamsPerCustomer: 2,
    agentsPerTeam: 2,
    appsPerTeam: 1,
    ...overrides,
  });
}

let sequence = 0;

/** A usage event as ingest writes it, for a seeded agent's API key. */
export function usageEvent(tenantId: string, agent: SeededAgent, overrides: Partial<UsageEvent> = {}): UsageEvent {
  sequence++;
  const recordedAt = overrides.recordedAt ?? Date.now() - 1000;
  return {
    tenantId,
    eventId: `evt_${process.pid}_${sequence}_${randomBytes(3).toString('hex')}`,
    eventType: 'mcp.tool_invoked',
    credential: { kind: 'api_key', keyHash: agent.keyHash },
    ingestNonce: randomBytes(8).toString('hex'),
    recordedAt,
    ingestedAt: recordedAt + 500,
    sessionId: 'sess_1',
    toolName: 'transform_schema',
    mcpServerId: 'mcp_1',
    durationMs: 847,
    status: 'SUCCESS',
    inputTokens: 2400,
    outputTokens: 150,
    retryCount: 0,
    isParallel: false,
    ...overrides,
  };
}
