-- Rollups for BI tools and the console (schema version 2, documented in docs/analytics-schema.md).
--
-- invocations gains the provider's cost of each call (cogs_nano, computed by analytics-dispatch
-- from the tenant's cost model, the same figure as cogs_ledger.cogs_nano). Three tables are kept
-- by materialized views on every insert into invocations:
--   usage_hourly, usage_daily  SummingMergeTree: sums per hour / day and tenant, currency,
--                              customer, team, agent, app, tool and model (for BI tools)
--   spend_daily                SummingMergeTree: per day and tenant, currency, customer, team,
--                              agent, app (no tool, no model: a few rows per agent and day, read
--                              by the console's spend tables and totals)
--   tool_daily                 SummingMergeTree: per day and tenant, currency, tool and model
--   session_summary            AggregatingMergeTree: one row per session and day of activity
-- A materialized view sees each inserted block once: analytics-dispatch inserts an event only
-- if invocations does not hold it yet, so a redelivered batch adds nothing (npm run reconcile
-- checks the rollups against the ledger and can repair them).
--
-- Money is Decimal128(9): exact amounts in the currency's major unit (nano precision), whose
-- sums cannot overflow (38 digits) where Int64 nano would past 9.2e9 units. Counters are Int64
-- (signed, so that a repair can insert a correction). Readers always aggregate (sum, or -Merge)
-- with GROUP BY: rows of one key are combined by background merges, at no set time.
-- Valid on ClickHouse 18.16 (no SimpleAggregateFunction, LowCardinality or IF NOT EXISTS on
-- ADD COLUMN) and on current releases. Aliases in the views never reuse a source column's name.

ALTER TABLE {db}.invocations ADD COLUMN cogs_nano Int64 DEFAULT 0 AFTER cost_nano;

CREATE TABLE IF NOT EXISTS {db}.usage_hourly (
  tenant_id    String,
  hour         DateTime('UTC'),
  currency     String,
  customer_id  String,
  team_id      String,
  agent_id     String,
  app_id       String,
  tool_name    String,
  model        String,
  events       Int64,
  calls        Int64,
  errors       Int64,
  tokens_in    Int64,
  tokens_out   Int64,
  exec_ms      Int64,
  cost         Decimal128(9),
  cogs         Decimal128(9)
) ENGINE = SummingMergeTree((events, calls, errors, tokens_in, tokens_out, exec_ms, cost, cogs))
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour, currency, customer_id, team_id, agent_id, app_id, tool_name, model);

CREATE TABLE IF NOT EXISTS {db}.usage_daily (
  tenant_id    String,
  day          Date,
  currency     String,
  customer_id  String,
  team_id      String,
  agent_id     String,
  app_id       String,
  tool_name    String,
  model        String,
  events       Int64,
  calls        Int64,
  errors       Int64,
  tokens_in    Int64,
  tokens_out   Int64,
  exec_ms      Int64,
  cost         Decimal128(9),
  cogs         Decimal128(9)
) ENGINE = SummingMergeTree((events, calls, errors, tokens_in, tokens_out, exec_ms, cost, cogs))
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, currency, customer_id, team_id, agent_id, app_id, tool_name, model);

CREATE TABLE IF NOT EXISTS {db}.spend_daily (
  tenant_id    String,
  day          Date,
  currency     String,
  customer_id  String,
  team_id      String,
  agent_id     String,
  app_id       String,
  events       Int64,
  calls        Int64,
  errors       Int64,
  cost         Decimal128(9),
  cogs         Decimal128(9)
) ENGINE = SummingMergeTree((events, calls, errors, cost, cogs))
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, currency, customer_id, team_id, agent_id, app_id);

CREATE TABLE IF NOT EXISTS {db}.tool_daily (
  tenant_id    String,
  day          Date,
  currency     String,
  tool_name    String,
  model        String,
  events       Int64,
  calls        Int64,
  errors       Int64,
  tokens_in    Int64,
  tokens_out   Int64,
  cost         Decimal128(9),
  cogs         Decimal128(9)
) ENGINE = SummingMergeTree((events, calls, errors, tokens_in, tokens_out, cost, cogs))
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, currency, tool_name, model);

CREATE TABLE IF NOT EXISTS {db}.session_summary (
  tenant_id    String,
  day          Date,
  session_id   String,
  customer     AggregateFunction(argMin, String, DateTime('UTC')),
  team         AggregateFunction(argMin, String, DateTime('UTC')),
  agent        AggregateFunction(argMin, String, DateTime('UTC')),
  app          AggregateFunction(argMin, String, DateTime('UTC')),
  currency_code AggregateFunction(argMin, String, DateTime('UTC')),
  started      AggregateFunction(min, DateTime('UTC')),
  last_seen    AggregateFunction(max, DateTime('UTC')),
  events       AggregateFunction(sum, Int64),
  calls        AggregateFunction(sum, Int64),
  errors       AggregateFunction(sum, Int64),
  completions  AggregateFunction(sum, Int64),
  failures     AggregateFunction(sum, Int64),
  tokens_in    AggregateFunction(sum, Int64),
  tokens_out   AggregateFunction(sum, Int64),
  exec_ms      AggregateFunction(sum, Int64),
  cost         AggregateFunction(sum, Decimal128(9)),
  cogs         AggregateFunction(sum, Decimal128(9))
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, session_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_hourly_mv TO {db}.usage_hourly AS
SELECT
  tenant_id, toStartOfHour(recorded_at) AS hour, currency, customer_id, team_id, agent_id, app_id, tool_name, model,
  toInt64(count()) AS events,
  toInt64(countIf(event_type NOT LIKE 'session.%')) AS calls,
  toInt64(countIf(event_type NOT LIKE 'session.%' AND execution_status != 'SUCCESS')) AS errors,
  toInt64(sum(input_tokens)) AS tokens_in,
  toInt64(sum(output_tokens)) AS tokens_out,
  toInt64(sum(duration_ms)) AS exec_ms,
  sum(toDecimal128(cost_nano, 9) / 1000000000) AS cost,
  sum(toDecimal128(cogs_nano, 9) / 1000000000) AS cogs
FROM {db}.invocations
GROUP BY tenant_id, hour, currency, customer_id, team_id, agent_id, app_id, tool_name, model;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_daily_mv TO {db}.usage_daily AS
SELECT
  tenant_id, recorded_date AS day, currency, customer_id, team_id, agent_id, app_id, tool_name, model,
  toInt64(count()) AS events,
  toInt64(countIf(event_type NOT LIKE 'session.%')) AS calls,
  toInt64(countIf(event_type NOT LIKE 'session.%' AND execution_status != 'SUCCESS')) AS errors,
  toInt64(sum(input_tokens)) AS tokens_in,
  toInt64(sum(output_tokens)) AS tokens_out,
  toInt64(sum(duration_ms)) AS exec_ms,
  sum(toDecimal128(cost_nano, 9) / 1000000000) AS cost,
  sum(toDecimal128(cogs_nano, 9) / 1000000000) AS cogs
FROM {db}.invocations
GROUP BY tenant_id, day, currency, customer_id, team_id, agent_id, app_id, tool_name, model;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.spend_daily_mv TO {db}.spend_daily AS
SELECT
  tenant_id, recorded_date AS day, currency, customer_id, team_id, agent_id, app_id,
  toInt64(count()) AS events,
  toInt64(countIf(event_type NOT LIKE 'session.%')) AS calls,
  toInt64(countIf(event_type NOT LIKE 'session.%' AND execution_status != 'SUCCESS')) AS errors,
  sum(toDecimal128(cost_nano, 9) / 1000000000) AS cost,
  sum(toDecimal128(cogs_nano, 9) / 1000000000) AS cogs
FROM {db}.invocations
GROUP BY tenant_id, day, currency, customer_id, team_id, agent_id, app_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.tool_daily_mv TO {db}.tool_daily AS
SELECT
  tenant_id, recorded_date AS day, currency, tool_name, model,
  toInt64(count()) AS events,
  toInt64(countIf(event_type NOT LIKE 'session.%')) AS calls,
  toInt64(countIf(event_type NOT LIKE 'session.%' AND execution_status != 'SUCCESS')) AS errors,
  toInt64(sum(input_tokens)) AS tokens_in,
  toInt64(sum(output_tokens)) AS tokens_out,
  sum(toDecimal128(cost_nano, 9) / 1000000000) AS cost,
  sum(toDecimal128(cogs_nano, 9) / 1000000000) AS cogs
FROM {db}.invocations
GROUP BY tenant_id, day, currency, tool_name, model;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.session_summary_mv TO {db}.session_summary AS
SELECT
  tenant_id, recorded_date AS day, session_id,
  argMinState(customer_id, recorded_at) AS customer,
  argMinState(team_id, recorded_at) AS team,
  argMinState(agent_id, recorded_at) AS agent,
  argMinState(app_id, recorded_at) AS app,
  argMinState(currency, recorded_at) AS currency_code,
  minState(recorded_at) AS started,
  maxState(recorded_at) AS last_seen,
  sumState(toInt64(1)) AS events,
  sumState(toInt64(event_type NOT LIKE 'session.%')) AS calls,
  sumState(toInt64(event_type NOT LIKE 'session.%' AND execution_status != 'SUCCESS')) AS errors,
  sumState(toInt64(event_type = 'session.completed')) AS completions,
  sumState(toInt64(event_type = 'session.failed')) AS failures,
  sumState(toInt64(input_tokens)) AS tokens_in,
  sumState(toInt64(output_tokens)) AS tokens_out,
  sumState(toInt64(duration_ms)) AS exec_ms,
  sumState(toDecimal128(cost_nano, 9) / 1000000000) AS cost,
  sumState(toDecimal128(cogs_nano, 9) / 1000000000) AS cogs
FROM {db}.invocations
WHERE session_id != ''
GROUP BY tenant_id, day, session_id;

-- Rows written before this migration: each is inserted once more, so that the views above see
-- it (ReplacingMergeTree keeps one copy; every read of invocations uses FINAL). Run migrations
-- before the pipeline starts, as the compose file does: a row the pipeline inserted in between
-- would be counted twice in the rollups (npm run reconcile finds it, --repair corrects it).
INSERT INTO {db}.invocations SELECT * FROM {db}.invocations FINAL;
