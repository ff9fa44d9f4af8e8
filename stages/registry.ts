import type { AnyStage, Topology } from '../pipeline/stage.js';
import { analyticsDispatchStage } from './analytics-dispatch/index.js';
import { capCheckStage } from './cap-check/index.js';
import { cogsStage } from './cogs/index.js';
import { invoiceRollupStage } from './invoice-rollup/index.js';
import { keyResolveStage } from './key-resolve/index.js';
import { ledgerWriteStage } from './ledger-write/index.js';
import { priceStage } from './price/index.js';
import { sessionUpdateStage } from './session-update/index.js';
import { spendAlertsStage } from './spend-alerts/index.js';
import { subscriptionSnapshotStage } from './subscription-snapshot/index.js';

/**
 * The stream-consuming stages, in flow order. Ingest (stage 1) is the HTTP server
 * (api/main.ts), which writes the first stream.
 */
export const STAGES: readonly AnyStage[] = [
  keyResolveStage,
  subscriptionSnapshotStage,
  priceStage,
  capCheckStage,
  ledgerWriteStage,
  sessionUpdateStage,
  analyticsDispatchStage,
  cogsStage,
  invoiceRollupStage,
  spendAlertsStage,
];

/** Every (stream, consumer group) pair: each process creates all groups before anything is written. */
export const TOPOLOGY: Topology = STAGES.map((stage) => ({ stream: stage.input, group: stage.name }));

export function stageByName(name: string): AnyStage | undefined {
  return STAGES.find((stage) => stage.name === name);
}
