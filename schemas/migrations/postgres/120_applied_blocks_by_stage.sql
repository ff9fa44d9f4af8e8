-- applied_blocks is shared by the stages that claim blocks (session-update, cogs,
-- invoice-rollup), and each prunes only its own rows (store/applied.ts, pruneAppliedBlocks): a
-- stage down or behind for longer than another's retention must still find the blocks it applied.
-- Pruning reads `stage = $1 AND applied_at < $2`: one index on both, replacing the one on
-- applied_at alone, which nothing reads any more (it would walk the other stages' old rows).
CREATE INDEX applied_blocks_stage_applied_at ON applied_blocks (stage, applied_at);
DROP INDEX applied_blocks_applied_at;
