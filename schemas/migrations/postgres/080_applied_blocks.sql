-- Exactly-once per block, not per event (data path v2, issue 13): a consumer downstream of the
-- ledger records the origin id of each block of events it applied (pipeline/blocks.ts: the
-- same on every redelivery), in the same transaction as the grouped writes of the block, so a
-- block redelivered after a crash moves nothing. One row per block instead of one per event.
-- Single events (a block of one: a retry split off its block) keep the per-event tables.
-- Rows are only needed while a block can still be redelivered: pruned like the per-event ones.
-- A block holds the events of one ingest request, so of one tenant.
CREATE TABLE applied_blocks (
  stage       text NOT NULL,
  tenant_id   text NOT NULL,
  origin      text NOT NULL,
  applied_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (stage, origin)
);
CREATE INDEX applied_blocks_applied_at ON applied_blocks (applied_at);
