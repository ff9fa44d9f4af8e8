// The Redis keys of spend caps (running totals, pause flags) and the customer partition they live
// in, for readers outside cap-check (the console). TEMPORARY re-export: these live in stages/
// until issue 8 moves stages/cap-check/pauses.ts into store/ and stages/types.ts into domain/;
// then this file re-exports from there (or its importers import the moved modules directly).
export { capCounterKey, capPeriod } from '../stages/cap-check/limits.js';
export { pauseKey, type PauseRecord, type PauseScope } from '../stages/cap-check/pauses.js';
export { customerPartitionKey } from '../stages/types.js';
