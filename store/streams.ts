import type { LedgeredEvent, PricedEvent, CheckedEvent, AttributedEvent, ResolvedEvent, RejectedEvent } from '../domain/flow.js';
import type { UsageEvent } from '../domain/events.js';
import { stream } from '../pipeline/stage.js';

/**
 * The streams of the flow and what each carries. Each event stream is read by the next stage's
 * consumer group (`events:ledgered` by the five stages after the ledger); the key adds the prefix
 * and partition (pipeline/keys.ts).
 */
export const STREAMS = {
  ingested: stream<UsageEvent>('events:ingested'),
  resolved: stream<ResolvedEvent>('events:resolved'),
  attributed: stream<AttributedEvent>('events:attributed'),
  priced: stream<PricedEvent>('events:priced'),
  checked: stream<CheckedEvent>('events:checked'),
  ledgered: stream<LedgeredEvent>('events:ledgered'),
  rejected: stream<RejectedEvent>('events:rejected'),
} as const;

/** The streams an event waits on before it is in the ledger, in order (ledger-write reads the last). */
export const BEFORE_LEDGER = [STREAMS.ingested, STREAMS.resolved, STREAMS.attributed, STREAMS.priced, STREAMS.checked] as const;
