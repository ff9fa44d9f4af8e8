-- ClickHouse follows events:ledgered (analytics-dispatch is one more consumer group of it) instead
-- of a ledger export reading every row back from PostgreSQL. What ClickHouse could not take when
-- it was asked waits here, by key, and is read back joined to the ledger when ClickHouse is back
-- (stages/analytics-dispatch/backlog.ts): a batch ClickHouse refused during an outage, ledger rows
-- written outside the pipeline (corrections), and, once, what the old export had not exported.
-- A row ClickHouse refuses for its data is parked with the server's error, never dropped.
CREATE TABLE analytics_backlog (
  id          bigserial PRIMARY KEY,
  tenant_id   text NOT NULL,
  event_id    text NOT NULL,
  enqueued_at timestamptz NOT NULL DEFAULT now(),
  parked_at   timestamptz,
  last_error  text
);
CREATE INDEX analytics_backlog_waiting ON analytics_backlog (id) WHERE parked_at IS NULL;

-- Nothing reads the ledger in commit order any more: one index fewer for every ledger INSERT.
-- ledger_xid stays (a column costs little) for the one-time hand-over from the export's cursor.
DROP INDEX usage_ledger_export;
