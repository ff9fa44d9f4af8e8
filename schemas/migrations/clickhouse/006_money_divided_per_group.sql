-- The four summing rollups' views again (schema version 2 unchanged: same tables, columns and
-- figures), each dividing its money sums by 10^9 once per group rather than once per row: a
-- Decimal128 division per row and money column cost ClickHouse about 3.5 us of its ~20 us per
-- inserted row (npm run bench:clickhouse -- --rounds 3 --formats json@20000; BENCHMARKS.md,
-- forty-fifth session). toDecimal128(n, 9) holds n exactly, so the sum divided once is the sum of
-- the quotients, to the last nano. session_summary keeps its sumState of each quotient (a state
-- cannot be divided afterwards). A view is replaced by DROP and CREATE: run migrations before the
-- pipeline starts, as 002 says (npm run reconcile finds, and --repair mends, a row inserted in
-- between).

DROP TABLE IF EXISTS {db}.usage_hourly_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_hourly_mv TO {db}.usage_hourly AS
SELECT
  tenant_id, toStartOfHour(recorded_at) AS hour, currency, customer_id, team_id, agent_id, app_id, tool_name, model,
  toInt64(count()) AS events,
  toInt64(countIf(event_type NOT LIKE 'session.%')) AS calls,
  toInt64(countIf(event_type NOT LIKE 'session.%' AND execution_status != 'SUCCESS')) AS errors,
  toInt64(sum(input_tokens)) AS tokens_in,
  toInt64(sum(output_tokens)) AS tokens_out,
  toInt64(sum(duration_ms)) AS exec_ms,
  sum(toDecimal128(cost_nano, 9)) / 1000000000 AS cost,
  sum(toDecimal128(cogs_nano, 9)) / 1000000000 AS cogs
FROM {db}.invocations
GROUP BY tenant_id, hour, currency, customer_id, team_id, agent_id, app_id, tool_name, model;

DROP TABLE IF EXISTS {db}.usage_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_daily_mv TO {db}.usage_daily AS
SELECT
  tenant_id, recorded_date AS day, currency, customer_id, team_id, agent_id, app_id, tool_name, model,
  toInt64(count()) AS events,
  toInt64(countIf(event_type NOT LIKE 'session.%')) AS calls,
  toInt64(countIf(event_type NOT LIKE 'session.%' AND execution_status != 'SUCCESS')) AS errors,
  toInt64(sum(input_tokens)) AS tokens_in,
  toInt64(sum(output_tokens)) AS tokens_out,
  toInt64(sum(duration_ms)) AS exec_ms,
  sum(toDecimal128(cost_nano, 9)) / 1000000000 AS cost,
  sum(toDecimal128(cogs_nano, 9)) / 1000000000 AS cogs
FROM {db}.invocations
GROUP BY tenant_id, day, currency, customer_id, team_id, agent_id, app_id, tool_name, model;

DROP TABLE IF EXISTS {db}.spend_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.spend_daily_mv TO {db}.spend_daily AS
SELECT
  tenant_id, recorded_date AS day, currency, customer_id, team_id, agent_id, app_id,
  toInt64(count()) AS events,
  toInt64(countIf(event_type NOT LIKE 'session.%')) AS calls,
  toInt64(countIf(event_type NOT LIKE 'session.%' AND execution_status != 'SUCCESS')) AS errors,
  sum(toDecimal128(cost_nano, 9)) / 1000000000 AS cost,
  sum(toDecimal128(cogs_nano, 9)) / 1000000000 AS cogs
FROM {db}.invocations
GROUP BY tenant_id, day, currency, customer_id, team_id, agent_id, app_id;

DROP TABLE IF EXISTS {db}.tool_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.tool_daily_mv TO {db}.tool_daily AS
SELECT
  tenant_id, recorded_date AS day, currency, tool_name, model,
  toInt64(count()) AS events,
  toInt64(countIf(event_type NOT LIKE 'session.%')) AS calls,
  toInt64(countIf(event_type NOT LIKE 'session.%' AND execution_status != 'SUCCESS')) AS errors,
  toInt64(sum(input_tokens)) AS tokens_in,
  toInt64(sum(output_tokens)) AS tokens_out,
  sum(toDecimal128(cost_nano, 9)) / 1000000000 AS cost,
  sum(toDecimal128(cogs_nano, 9)) / 1000000000 AS cogs
FROM {db}.invocations
GROUP BY tenant_id, day, currency, tool_name, model;
