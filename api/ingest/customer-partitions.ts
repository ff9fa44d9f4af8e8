import type { Credential } from '../../domain/events.js';
import { customerPartitionKey } from '../../domain/flow.js';
import { partitionOf } from '../../pipeline/keys.js';
import type { Resolution } from '../../store/attribution.js';
import { ingestPartitionKey } from './writer.js';

/** How long a known partition is used before it is looked up again (it is still used meanwhile), and dropped unused. */
const REFRESH_MS = 30_000;
const EXPIRE_MS = 300_000;
/** Most credentials remembered (and waiting to be looked up) per process: past that, the map starts again. */
const MAX_KNOWN = 100_000;
const MAX_WAITING = 10_000;

interface Known {
  /** The customer's partition; undefined for a credential that does not resolve (its events are rejected where they land). */
  partition: number | undefined;
  refreshAt: number;
  expiresAt: number;
}

type Resolve = (items: { tenantId: string; credential: Credential }[]) => Promise<Resolution[]>;

/**
 * Ingest's guess of the partition key-resolve will put a credential's events in: its customer's
 * (customerPartitionKey, as key-resolve and authorize compute it), remembered briefly per
 * credential. Until the credential has been looked up (in the background, with the attribution
 * cache authorize and key-resolve use), and for a credential that does not resolve, it is the
 * partition of ingestPartitionKey. A guess only saves key-resolve a move to another partition:
 * key-resolve places every event by its own resolution, so a stale or missing guess costs a
 * move, never a wrong placement.
 */
export class CustomerPartitions {
  private readonly known = new Map<string, Known>();
  private readonly waiting = new Map<string, { tenantId: string; credential: Credential }>();
  private looking = false;

  constructor(
    private readonly resolve: Resolve,
    private readonly partitions: number,
    private readonly onError: (err: unknown) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {}

  partitionOf(tenantId: string, credential: Credential): number {
    const key = ingestPartitionKey(tenantId, credential);
    if (this.partitions <= 1) return 0;
    const now = this.now();
    const known = this.known.get(key);
    if (known && now < known.expiresAt) {
      if (now >= known.refreshAt) this.lookUp(key, tenantId, credential);
      if (known.partition !== undefined) return known.partition;
    } else {
      if (known) this.known.delete(key);
      this.lookUp(key, tenantId, credential);
    }
    return partitionOf(key, this.partitions);
  }

  /** Resolves once the lookups asked so far are done (tests). */
  async settled(): Promise<void> {
    while (this.looking || this.waiting.size) await new Promise((resolve) => setTimeout(resolve, 1));
  }

  private lookUp(key: string, tenantId: string, credential: Credential): void {
    if (this.waiting.has(key) || this.waiting.size >= MAX_WAITING) return;
    this.waiting.set(key, { tenantId, credential });
    if (!this.looking) {
      this.looking = true;
      // The misses of this turn go together.
      setImmediate(() => void this.lookUpWaiting());
    }
  }

  /** Looks up what waits, one batch at a time, until nothing waits. */
  private async lookUpWaiting(): Promise<void> {
    try {
      while (this.waiting.size) {
        const batch = [...this.waiting];
        this.waiting.clear();
        const items = batch.map(([, item]) => item);
        let resolutions: Resolution[];
        try {
          resolutions = await this.resolve(items);
        } catch (err) {
          this.onError(err);
          continue;
        }
        const now = this.now();
        if (this.known.size + batch.length > MAX_KNOWN) this.known.clear();
        batch.forEach(([key, item], i) => {
          const resolution = resolutions[i];
          const partition = resolution.ok ? partitionOf(customerPartitionKey(item.tenantId, resolution.attribution.customerId), this.partitions) : undefined;
          this.known.set(key, { partition, refreshAt: now + REFRESH_MS, expiresAt: now + EXPIRE_MS });
        });
      }
    } finally {
      this.looking = false;
    }
  }
}
