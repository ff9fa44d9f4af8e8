import type { LedgeredEvent, PricedEvent, CheckedEvent, AttributedEvent, ResolvedEvent, RejectedEvent } from '../domain/flow.js';
import type { UsageEvent } from '../domain/events.js';
import { stream } from '../pipeline/stage.js';

/**
 * The streams of the flow and what each carries. Each event stream is read by the next stage's
 * consumer group (`events:ledgered` by four); the key adds the prefix and partition (pipeline/keys.ts).
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
