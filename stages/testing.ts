import type { Redis } from '../pipeline/redis.js';
import { loadConfig } from '../pipeline/config.js';
import { createLogger } from '../pipeline/logger.js';
import { Metrics } from '../pipeline/metrics.js';
import { StageServices } from '../pipeline/harness.js';
import { deepFreeze } from '../pipeline/blocks.js';
import type { StageContext, StageEntry } from '../pipeline/stage.js';
import type { Attribution, EventCost, LedgeredEvent, SubscriptionSnapshot } from '../domain/flow.js';

/**
 * Test helpers for stage handlers: realistic pipeline payloads built by hand, so a handler's
 * batch function can be called directly against real databases without running the harness.
 */

let sequence = 0;

/** What a test may override: top-level fields whole, and the nested parts field by field. */
export type LedgeredEventOverrides = Partial<Omit<LedgeredEvent, 'attribution' | 'subscription' | 'cost'>> & {
  attribution?: Partial<Attribution>;
  subscription?: Partial<SubscriptionSnapshot>;
  /** A breakdown given here is the whole breakdown: dimensions it leaves out are 0. */
  cost?: Partial<Omit<EventCost, 'breakdown'>> & { breakdown?: Partial<EventCost['breakdown']> };
};

const MARCH_2026 = Date.UTC(2026, 2, 1);
const APRIL_2026 = Date.UTC(2026, 3, 1);

/**
 * A ledgered `mcp.tool_invoked` event as ledger-write forwards it: attributed to an agent,
 * rated by a subscription snapshot for March 2026, priced at 0.0125 (12_500_000 nano), no cap
 * counters advanced, not over a cap.
 * Each call gets a fresh event id and ingest nonce unless overridden.
 */
export function ledgeredEvent(overrides: LedgeredEventOverrides = {}): LedgeredEvent {
  sequence++;
  const { attribution, subscription, cost, ...top } = overrides;
  const recordedAt = top.recordedAt ?? Date.UTC(2026, 2, 31, 14, 26, 59, 45);
  return {
    tenantId: 'ten_test',
    eventId: `evt_${process.pid}_${sequence}`,
    eventType: 'mcp.tool_invoked',
    credential: { kind: 'api_key', keyHash: 'f'.repeat(64) },
    ingestNonce: `nonce_${sequence}`,
    recordedAt,
    ingestedAt: recordedAt + 1078,
    reportedAgentId: undefined,
    sessionId: 'sess_test',
    toolName: 'transform_schema',
    mcpServerId: 'mcp_test',
    model: 'gpt-4o',
    durationMs: 847,
    status: 'SUCCESS',
    inputTokens: 2400,
    outputTokens: 150,
    retryCount: 0,
    isParallel: false,
    capCounters: [],
    overCap: false,
    ...top,
    attribution: {
      customerId: 'cus_test',
      teamId: 'team_test',
      agentId: 'agt_test',
      credentialId: 'key_test',
      productId: 'prod_test',
      productKind: 'mcp_server',
      ...attribution,
    },
    subscription: {
      subscriptionId: 'sub_test',
      ratePlanId: 'rp_test',
      ratePlanVersionId: 'rpv_test',
      ratePlanVersion: 1,
      currency: 'USD',
      periodStart: MARCH_2026,
      periodEnd: APRIL_2026,
      ...subscription,
    },
    cost: {
      total: cost?.total ?? 12_500_000n,
      tool: cost?.tool ?? top.toolName ?? 'transform_schema',
      breakdown: cost?.breakdown
        ? { tool: 0n, input_tokens: 0n, output_tokens: 0n, duration: 0n, ...cost.breakdown }
        : { tool: 10_000_000n, input_tokens: 2_400_000n, output_tokens: 100_000n, duration: 0n },
    },
  };
}

/** Wraps payloads as the harness hands them to a handler (ids in stream order, partition 0; frozen, as decodeEntry hands them out under vitest). */
export function stageEntries<T>(payloads: T[], firstId = Date.now()): StageEntry<T>[] {
  payloads.forEach(deepFreeze);
  return payloads.map((payload, i) => ({ id: `${firstId}-${i}`, partition: 0, payload, tags: [] }));
}

/**
 * What the harness hands a stage's setup, for a test world: the configuration from its
 * environment (isolated().env) plus overrides, a silent logger, fresh metrics, and the stage's
 * PostgreSQL pool and control reader, which close() ends (after the handler's own close).
 */
export function testStageContext(
  stage: string,
  world: { env: Record<string, string>; redis: Redis },
  env: Record<string, string> = {},
): StageContext & { close(): Promise<void> } {
  const config = loadConfig({ ...process.env, ...world.env, ...env });
  const log = createLogger(`${stage}-test`, 'silent');
  const services = new StageServices(stage, config, log);
  return {
    stage,
    config,
    log,
    metrics: new Metrics(`${stage}-test`),
    redis: world.redis,
    sql: services.sql,
    onControl: (listener) => services.onControl(listener),
    close: () => services.close(),
  };
}
