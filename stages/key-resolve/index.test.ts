import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { STREAMS } from '../../store/streams.js';
import { AttributionResolver } from '../../store/attribution.js';
import { invalidateAttribution } from '../../store/attribution-keys.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { seedSmall, usageEvent } from '../../test/support/billing.js';
import type { SeededTenant } from '../../ops/seed.js';
import { stageEntries } from '../testing.js';
import { customerPartitionKey, type RejectedEvent, type ResolvedEvent } from '../../domain/flow.js';
import { resolveBatch } from './index.js';

let world: Isolated;
let tenant: SeededTenant;

beforeAll(async () => {
  world = await isolated('key-resolve');
  tenant = await seedSmall(world.sql);
});
afterAll(() => world.cleanup());

function resolver(counters = { hit: vi.fn(), miss: vi.fn() }) {
  return { resolver: new AttributionResolver(world.sql, world.redis, world.config.REDIS_PREFIX, 600, counters), counters };
}

describe('key-resolve', () => {
  it('attributes an API key to its agent, team, customer and product, routed to the customer partition', async () => {
    const { resolver: r } = resolver();
    const customer = tenant.customers[1];
    const agent = customer.teams[1].agents[0];
    const [result] = await resolveBatch(r, stageEntries([usageEvent(tenant.tenantId, agent)]));
    const output = result.outputs![0];
    expect(output.stream).toBe(STREAMS.resolved);
    expect(output.partitionKey).toBe(customerPartitionKey(tenant.tenantId, customer.id));
    const resolved = output.payload as ResolvedEvent;
    expect(resolved.attribution).toMatchObject({
      customerId: customer.id,
      teamId: customer.teams[1].id,
      agentId: agent.id,
      productKind: expect.stringMatching(/mcp_server|managed_agent/),
    });
  });

  it('attributes a client_id and an app key', async () => {
    const { resolver: r } = resolver();
    const team = tenant.customers[0].teams[0];
    const byClient = usageEvent(tenant.tenantId, team.agents[1], { credential: { kind: 'client_id', clientId: team.agents[1].clientId } });
    const results = await resolveBatch(r, stageEntries([byClient]));
    expect((results[0].outputs![0].payload as ResolvedEvent).attribution.agentId).toBe(team.agents[1].id);
  });

  it('sends unknown and revoked keys to the rejected stream with the reason', async () => {
    const { resolver: r } = resolver();
    const agent = tenant.customers[0].teams[1].agents[1];
    const unknown = usageEvent(tenant.tenantId, { ...agent, keyHash: 'a'.repeat(64) });
    const otherTenant = usageEvent('ten_other', agent);
    await world.sql`UPDATE api_keys SET status = 'revoked', revoked_at = now() WHERE key_hash = ${agent.keyHash}`;
    await invalidateAttribution(world.redis, world.config.REDIS_PREFIX, tenant.tenantId, { keyHashes: [agent.keyHash] });
    const revoked = usageEvent(tenant.tenantId, agent, { ingestedAt: Date.now() + 1 });
    const results = await resolveBatch(r, stageEntries([unknown, otherTenant, revoked]));
    const rejected = results.map((res) => res.outputs![0]);
    expect(rejected.map((o) => o.stream)).toEqual([STREAMS.rejected, STREAMS.rejected, STREAMS.rejected]);
    expect(rejected.map((o) => (o.payload as RejectedEvent).code)).toEqual(['unknown_credential', 'unknown_credential', 'revoked']);
    expect((rejected[2].payload as RejectedEvent).event.eventId).toBe(revoked.eventId);
  });

  it('rejects a suspended agent, and a key in its rotation grace period still resolves until it ends', async () => {
    const { resolver: r } = resolver();
    const [suspendedAgent, graceAgent] = tenant.customers[1].teams[0].agents;
    await world.sql`UPDATE agents SET status = 'suspended' WHERE id = ${suspendedAgent.id}`;
    await world.sql`UPDATE api_keys SET status = 'revoked', expires_at = now() + interval '2 seconds' WHERE key_hash = ${graceAgent.keyHash}`;
    const results = await resolveBatch(r, stageEntries([usageEvent(tenant.tenantId, suspendedAgent), usageEvent(tenant.tenantId, graceAgent)]));
    expect((results[0].outputs![0].payload as RejectedEvent).code).toBe('suspended');
    expect(results[1].outputs![0].stream).toBe(STREAMS.resolved);
    await new Promise((resolve) => setTimeout(resolve, 2100));
    const later = await resolveBatch(r, stageEntries([usageEvent(tenant.tenantId, graceAgent, { ingestedAt: Date.now() })]));
    expect((later[0].outputs![0].payload as RejectedEvent).code).toBe('revoked');
  });

  it('answers repeat lookups from the cache and shares one query among concurrent misses', async () => {
    const { resolver: r, counters } = resolver();
    const agent = tenant.customers[0].teams[0].agents[0];
    await invalidateAttribution(world.redis, world.config.REDIS_PREFIX, tenant.tenantId, { keyHashes: [agent.keyHash] });
    const query = vi.spyOn(r as unknown as { queryCredentials: () => unknown }, 'queryCredentials');
    const batch = stageEntries([usageEvent(tenant.tenantId, agent), usageEvent(tenant.tenantId, agent)]);
    await Promise.all([resolveBatch(r, batch), resolveBatch(r, batch), resolveBatch(r, batch)]);
    expect(query).toHaveBeenCalledTimes(1);
    await resolveBatch(r, batch);
    expect(query).toHaveBeenCalledTimes(1);
    expect(counters.hit).toHaveBeenCalled();
  });

  it('judges a key as of the time its event was accepted, not when key-resolve reads it (issue 9, defect 6)', async () => {
    const { resolver: r } = resolver();
    const [rotated, revokedNow] = tenant.customers[0].teams[1].agents;
    // Key-resolve is behind: these events were accepted a minute ago, while both keys were valid.
    const acceptedAt = Date.now() - 60_000;
    const early = (agent: typeof rotated) => usageEvent(tenant.tenantId, agent, { recordedAt: acceptedAt - 100, ingestedAt: acceptedAt });
    const late = (agent: typeof rotated) => usageEvent(tenant.tenantId, agent, { ingestedAt: Date.now() + 1 });
    // A rotation whose short grace ended 30 s ago, and a revocation without grace 30 s ago.
    await world.sql`UPDATE api_keys SET expires_at = now() - interval '30 seconds' WHERE key_hash = ${rotated.keyHash}`;
    await world.sql`UPDATE api_keys SET status = 'revoked', revoked_at = now() - interval '30 seconds' WHERE key_hash = ${revokedNow.keyHash}`;
    await invalidateAttribution(world.redis, world.config.REDIS_PREFIX, tenant.tenantId, { keyHashes: [rotated.keyHash, revokedNow.keyHash] });
    const results = await resolveBatch(r, stageEntries([early(rotated), early(revokedNow), late(rotated), late(revokedNow)]));
    expect(results.map((res) => res.outputs![0].stream)).toEqual([STREAMS.resolved, STREAMS.resolved, STREAMS.rejected, STREAMS.rejected]);
    expect(results.slice(2).map((res) => (res.outputs![0].payload as RejectedEvent).code)).toEqual(['expired', 'revoked']);
    // The same answers from the cache.
    const again = await resolveBatch(r, stageEntries([early(rotated), late(rotated)]));
    expect(again.map((res) => res.outputs![0].stream)).toEqual([STREAMS.resolved, STREAMS.rejected]);
  });
});
