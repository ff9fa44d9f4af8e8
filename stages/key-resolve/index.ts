import { STREAMS } from '../../store/streams.js';
import { emit, type EntryResult, type StageDefinition, type StageEntry } from '../../pipeline/stage.js';
import type { UsageEvent } from '../../domain/events.js';
import { AttributionResolver } from '../../store/attribution.js';
import { customerPartitionKey, rejection, withPart, type ResolvedEvent } from '../../domain/flow.js';

/**
 * Attributes each event to its agent or app, team, customer and product; unknown credentials, and
 * credentials expired or revoked before the event was accepted, go to the rejected stream.
 */
export async function resolveBatch(resolver: AttributionResolver, batch: StageEntry<UsageEvent>[]): Promise<EntryResult[]> {
  // Each credential is judged as of the time its event was accepted, not now.
  const resolutions = await resolver.resolveMany(
    batch.map((e) => ({ tenantId: e.payload.tenantId, credential: e.payload.credential, at: e.payload.ingestedAt })),
  );
  return batch.map(({ payload: event }, i) => {
    const resolution = resolutions[i];
    if (!resolution.ok) {
      return { outputs: [emit(STREAMS.rejected, rejection('key-resolve', resolution.code, resolution.reason, event))] };
    }
    const resolved: ResolvedEvent = withPart(event, { attribution: resolution.attribution });
    return {
      outputs: [
        emit(STREAMS.resolved, resolved, customerPartitionKey(event.tenantId, resolution.attribution.customerId)),
      ],
    };
  });
}

export const keyResolveStage: StageDefinition<UsageEvent> = {
  name: 'key-resolve',
  sets: ['attribution'] satisfies (keyof ResolvedEvent)[],
  input: STREAMS.ingested,
  outputs: [STREAMS.resolved, STREAMS.rejected],
  batchSize: 500,
  async setup({ config, redis, metrics, sql }) {
    const resolver = new AttributionResolver(sql, redis, config.REDIS_PREFIX, config.KEY_CACHE_TTL_SECONDS, {
      hit: () => metrics.cacheLookups.inc({ cache: 'attribution', result: 'hit' }),
      miss: () => metrics.cacheLookups.inc({ cache: 'attribution', result: 'miss' }),
    });
    return { handle: (batch) => resolveBatch(resolver, batch) };
  },
};
