import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Credential } from '../../domain/events.js';
import { customerPartitionKey } from '../../domain/flow.js';
import { eventsOfEntries } from '../../pipeline/blocks.js';
import type { Config } from '../../pipeline/config.js';
import { partitionedKey, partitionOf } from '../../pipeline/keys.js';
import type { SeededTenant } from '../../ops/seed.js';
import { AttributionResolver, type Resolution } from '../../store/attribution.js';
import { STREAMS } from '../../store/streams.js';
import { seedSmall, usageEvent } from '../../test/support/billing.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { CustomerPartitions } from './customer-partitions.js';
import { IngestWriter, ingestPartitionKey } from './writer.js';

const PARTITIONS = 7;
let iso: Isolated;
let tenant: SeededTenant;

beforeAll(async () => {
  iso = await isolated('customer-partitions');
  tenant = await seedSmall(iso.sql);
});
afterAll(() => iso?.cleanup());

const resolverOf = () => new AttributionResolver(iso.sql, iso.redis, iso.config.REDIS_PREFIX, 600);
const credentialOf = (keyHash: string): Credential => ({ kind: 'api_key', keyHash });
const customerPartition = (customerId: string) => partitionOf(customerPartitionKey(tenant.tenantId, customerId), PARTITIONS);
const ingestPartition = (credential: Credential) => partitionOf(ingestPartitionKey(tenant.tenantId, credential), PARTITIONS);

/** An agent whose customer's partition differs from the partition of its credential (so the guess shows). */
function movedAgent() {
  for (const customer of tenant.customers) {
    for (const team of customer.teams) {
      for (const agent of team.agents) {
        if (customerPartition(customer.id) !== ingestPartition(credentialOf(agent.keyHash))) return { customer, agent };
      }
    }
  }
  throw new Error('every agent of the seed lands in its customer partition: pick another PARTITIONS');
}

describe('CustomerPartitions', () => {
  it("places a credential's events in its customer's partition once looked up, by the credential before", async () => {
    const { customer, agent } = movedAgent();
    const placement = new CustomerPartitions((items) => resolverOf().resolveMany(items), PARTITIONS);
    const credential = credentialOf(agent.keyHash);
    expect(placement.partitionOf(tenant.tenantId, credential)).toBe(ingestPartition(credential));
    await placement.settled();
    expect(placement.partitionOf(tenant.tenantId, credential)).toBe(customerPartition(customer.id));
  });

  it('keeps the partition of the credential for one that does not resolve, and after a failed lookup', async () => {
    const unknown = credentialOf('f'.repeat(64));
    const placement = new CustomerPartitions((items) => resolverOf().resolveMany(items), PARTITIONS);
    placement.partitionOf(tenant.tenantId, unknown);
    await placement.settled();
    expect(placement.partitionOf(tenant.tenantId, unknown)).toBe(ingestPartition(unknown));

    const errors: unknown[] = [];
    const failing = new CustomerPartitions(() => Promise.reject(new Error('store down')), PARTITIONS, (err) => errors.push(err));
    const { agent } = movedAgent();
    const credential = credentialOf(agent.keyHash);
    failing.partitionOf(tenant.tenantId, credential);
    await failing.settled();
    expect(failing.partitionOf(tenant.tenantId, credential)).toBe(ingestPartition(credential));
    expect(errors).toHaveLength(1);
  });

  it('looks a credential up again after a while, using the partition it knows meanwhile; forgets it unused', async () => {
    const { agent } = movedAgent();
    const credential = credentialOf(agent.keyHash);
    let now = 1_000_000;
    let customer = 0;
    const asked: number[] = [];
    const resolve = async (items: unknown[]): Promise<Resolution[]> => {
      asked.push(items.length);
      return items.map(() => ({ ok: true, attribution: { customerId: `cus_${customer}`, teamId: 't', credentialId: 'c' } }));
    };
    const placement = new CustomerPartitions(resolve, PARTITIONS, undefined, () => now);
    const of = (c: number) => partitionOf(customerPartitionKey(tenant.tenantId, `cus_${c}`), PARTITIONS);
    let c1 = 1;
    while (of(c1) === of(0)) c1++;
    placement.partitionOf(tenant.tenantId, credential);
    await placement.settled();
    expect(placement.partitionOf(tenant.tenantId, credential)).toBe(of(0));
    expect(asked).toEqual([1]);
    // The credential moved to another customer: seen after the refresh, the old guess used until then.
    customer = c1;
    now += 31_000;
    expect(placement.partitionOf(tenant.tenantId, credential)).toBe(of(0));
    await placement.settled();
    expect(placement.partitionOf(tenant.tenantId, credential)).toBe(of(c1));
    expect(asked).toEqual([1, 1]);
    now += 301_000;
    expect(placement.partitionOf(tenant.tenantId, credential)).toBe(ingestPartition(credential));
  });

  it('with one partition, answers 0 and looks nothing up', async () => {
    const placement = new CustomerPartitions(() => Promise.reject(new Error('not called')), 1);
    expect(placement.partitionOf(tenant.tenantId, credentialOf('a'.repeat(64)))).toBe(0);
    await placement.settled();
  });

  it('IngestWriter writes to the guessed partition', async () => {
    const { customer, agent } = movedAgent();
    const config: Config = { ...iso.config, REDIS_PREFIX: `${iso.config.REDIS_PREFIX}writer:`, PARTITIONS };
    const placement = new CustomerPartitions((items) => resolverOf().resolveMany(items), PARTITIONS);
    const writer = new IngestWriter(iso.redis, config, undefined, placement);
    const eventsIn = async (partition: number) =>
      eventsOfEntries<{ eventId: string }>((await iso.redis.xrangeBuffer(partitionedKey(config.REDIS_PREFIX, STREAMS.ingested, partition), '-', '+')) as [Buffer, Buffer[]][]).map(
        (e) => e.payload.eventId,
      );
    const first = usageEvent(tenant.tenantId, agent);
    await writer.write([first]);
    await placement.settled();
    const second = usageEvent(tenant.tenantId, agent);
    await writer.write([second]);
    expect(await eventsIn(ingestPartition(credentialOf(agent.keyHash)))).toEqual([first.eventId]);
    expect(await eventsIn(customerPartition(customer.id))).toEqual([second.eventId]);
  });
});
