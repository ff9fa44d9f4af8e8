-- The usage ledger: one row per distinct event (tenant_id, event_id), the source of truth
-- for invoices. Costs are integer nano-units; the breakdown keeps every dimension's share.
CREATE TABLE usage_ledger (
  tenant_id            text NOT NULL,
  event_id             text NOT NULL,
  ingest_nonce         text NOT NULL,
  event_type           text NOT NULL,
  recorded_at          timestamptz NOT NULL,
  ingested_at          timestamptz NOT NULL,
  ledgered_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
  customer_id          text NOT NULL,
  team_id              text NOT NULL,
  agent_id             text,
  app_id               text,
  credential_id        text NOT NULL,
  product_id           text,
  subscription_id      text NOT NULL,
  rate_plan_id         text NOT NULL,
  rate_plan_version_id text NOT NULL,
  rate_plan_version    integer NOT NULL,
  period_start         timestamptz NOT NULL,
  session_id           text,
  tool_name            text,
  priced_tool          text,
  mcp_server_id        text,
  model                text,
  execution_status     text NOT NULL,
  duration_ms          bigint NOT NULL,
  input_tokens         bigint NOT NULL,
  output_tokens        bigint NOT NULL,
  retry_count          integer NOT NULL,
  cost_nano            bigint NOT NULL,
  -- Per dimension, integer nano-units as strings: {"tool": "100000000", "input_tokens": "2400000", ...}
  cost_breakdown       jsonb NOT NULL,
  currency             text NOT NULL,
  over_cap             boolean NOT NULL DEFAULT false,
  PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX usage_ledger_subscription_period ON usage_ledger (tenant_id, subscription_id, period_start);
CREATE INDEX usage_ledger_customer_recorded ON usage_ledger (tenant_id, customer_id, recorded_at);

-- A second submission of an event_id already in the ledger: counted, not billed.
CREATE TABLE ledger_duplicates (
  tenant_id     text NOT NULL,
  event_id      text NOT NULL,
  ingest_nonce  text NOT NULL,
  seen_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, event_id, ingest_nonce)
);

-- Pauses set when a hard spend cap is crossed (the live pause is a Redis key; this is the record).
CREATE TABLE cap_pauses (
  tenant_id    text NOT NULL,
  cap_id       text NOT NULL,
  scope_kind   text NOT NULL,
  scope_id     text NOT NULL,
  period_key   text NOT NULL,
  event_id     text NOT NULL,
  limit_nano   bigint NOT NULL,
  paused_at    timestamptz NOT NULL,
  lifted_at    timestamptz,
  PRIMARY KEY (tenant_id, cap_id, scope_id, period_key)
);
