import { describe, expect, it } from 'vitest';
import type { CheckedEvent, PricedEvent } from '../domain/flow.js';
import { emit, type StageDefinition } from '../pipeline/stage.js';
import { STREAMS } from './streams.js';

// These lines are checked by `npm run typecheck`: each @ts-expect-error fails the check the day
// the mistake below it stops being a type error.
const handler = { handle: async () => [] };

const readsWhatItDeclares: StageDefinition<PricedEvent> = { name: 'ok', input: STREAMS.priced, outputs: [STREAMS.checked], batchSize: 1, setup: async () => handler };

const readsTheWrongStream: StageDefinition<CheckedEvent> = {
  name: 'wrong',
  // @ts-expect-error events:priced carries PricedEvent, which has no capCounters
  input: STREAMS.priced,
  outputs: [],
  batchSize: 1,
  setup: async () => handler,
};

function emitsTheWrongPayload(event: PricedEvent) {
  // @ts-expect-error events:checked carries CheckedEvent, not PricedEvent
  return emit(STREAMS.checked, event);
}

describe('STREAMS', () => {
  it('are the handles stages declare and emit to', () => {
    expect(readsWhatItDeclares.input).toBe('events:priced');
    expect(readsTheWrongStream.input).toBe('events:priced');
    expect(emitsTheWrongPayload).toBeTypeOf('function');
  });

  it('names every stream of the flow once', () => {
    const names = Object.values(STREAMS);
    expect(new Set(names).size).toBe(names.length);
    expect(names.every((name) => name.startsWith('events:'))).toBe(true);
  });
});
