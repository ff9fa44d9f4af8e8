-- One row per ledgered event, written by the analytics-dispatch stage in large batches.
-- ReplacingMergeTree keyed by (tenant_id, recorded_date, event_id): an event inserted twice
-- (a batch redelivered after a crash before its ack) has the same key in the same monthly
-- partition and replaces itself at merge time; readers use FINAL so that figures agree with
-- the ledger before the merge as well. Absent optional fields are '' (no Nullable).
-- Valid on ClickHouse 18.16 (no LowCardinality, no DateTime64) and on current releases.
CREATE TABLE IF NOT EXISTS {db}.invocations (
  tenant_id            String,
  event_id             String,
  event_type           String,
  customer_id          String,
  team_id              String,
  agent_id             String,
  app_id               String,
  credential_id        String,
  product_id           String,
  session_id           String,
  tool_name            String,
  priced_tool          String,
  mcp_server_id        String,
  model                String,
  execution_status     String,
  error_type           String,
  duration_ms          UInt64,
  input_tokens         UInt64,
  output_tokens        UInt64,
  total_tokens         UInt64,
  retry_count          UInt32,
  is_parallel          UInt8,
  cost_nano            Int64,
  currency             String,
  over_cap             UInt8,
  subscription_id      String,
  rate_plan_id         String,
  rate_plan_version_id String,
  rate_plan_version    UInt32,
  recorded_at          DateTime('UTC'),
  recorded_date        Date,
  ingested_at          DateTime('UTC')
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(recorded_date)
ORDER BY (tenant_id, recorded_date, event_id)
SETTINGS index_granularity = 8192;
