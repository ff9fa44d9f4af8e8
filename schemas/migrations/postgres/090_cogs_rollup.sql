-- COGS as aggregates (data path v2, issue 13): the cogs stage no longer writes a row per event
-- (cogs_ledger); it adds each block of events to running sums per tenant, hour (UTC), currency
-- and grouping key, exactly once per block (applied_blocks, migration 080), in the same
-- transaction. Per-event COGS stays in ClickHouse (invocations.cogs_nano).
--
-- An event is added three times, once per dimension /v1/cogs groups by: its tool ('tool', key
-- the tool name), its agent ('agent', key the agent id, null for an app's calls) and its
-- customer ('customer'). Three narrow sums instead of one per (tool x agent x customer): a batch
-- of events touches tools + agents + customers rows, not their product.
--   events       cogs rows the sums stand for: usage events and their correction rows (a void
--                adds its reversal, an amendment a reversal and the amended row), as cogs_ledger counted
--   costed       false for events no cost model covered (cogs 0)
--   with_session the events named a session (reconcile compares them with the session summary)
-- Amounts are integers of nano-units in the currency; the margin is price_nano - cogs_nano.
CREATE TABLE cogs_rollup (
  tenant_id     text NOT NULL,
  dimension     text NOT NULL CHECK (dimension IN ('tool', 'agent', 'customer')),
  hour          timestamptz NOT NULL,
  currency      text NOT NULL,
  key           text,
  with_session  boolean NOT NULL,
  costed        boolean NOT NULL,
  events        bigint NOT NULL,
  price_nano    numeric NOT NULL,
  cogs_nano     numeric NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX cogs_rollup_key ON cogs_rollup (tenant_id, dimension, hour, currency, key, with_session, costed) NULLS NOT DISTINCT;

-- The rows cogs_ledger already holds, summed once; cogs_ledger is no longer written.
INSERT INTO cogs_rollup (tenant_id, dimension, hour, currency, key, with_session, costed, events, price_nano, cogs_nano)
SELECT c.tenant_id, d.dimension, date_trunc('hour', c.recorded_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', c.currency,
       CASE d.dimension WHEN 'tool' THEN c.tool_name WHEN 'agent' THEN c.agent_id ELSE c.customer_id END,
       c.session_id IS NOT NULL AND c.session_id <> '', c.cost_model_id IS NOT NULL,
       count(*), sum(c.price_nano), sum(c.cogs_nano)
FROM cogs_ledger c CROSS JOIN (VALUES ('tool'), ('agent'), ('customer')) AS d (dimension)
GROUP BY 1, 2, 3, 4, 5, 6, 7;
