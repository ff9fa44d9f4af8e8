-- The ledger read back in commit order by the ClickHouse export (analytics-dispatch, see
-- store/ledger-export.ts): every row carries the id of the transaction that wrote it, and the
-- export reads rows by (ledger_xid, tenant_id, event_id) below the oldest transaction of this
-- database still in progress, so no row is skipped however transactions interleave. It also keeps
-- the two fields of an event that analytics shows and the ledger did not hold yet.
ALTER TABLE usage_ledger
  ADD COLUMN ledger_xid  xid8 NOT NULL DEFAULT pg_current_xact_id(),
  ADD COLUMN error_type  text,
  ADD COLUMN is_parallel boolean NOT NULL DEFAULT false;
CREATE INDEX usage_ledger_export ON usage_ledger (ledger_xid, tenant_id, event_id);
