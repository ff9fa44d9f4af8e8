-- Cost of goods sold: what each usage event cost the tenant's own providers, from its cost
-- model (table cost_models), beside the price the event was billed at, written by the cogs
-- stage. One row per event (tenant_id, event_id), inserted with ON CONFLICT DO NOTHING, so a
-- redelivered event is recorded once. Session control events are not recorded (no call, no cost).
-- Amounts are integer nano-units in the event's currency (the subscription's).
CREATE TABLE cogs_ledger (
  tenant_id      text NOT NULL,
  event_id       text NOT NULL,
  event_type     text NOT NULL,
  customer_id    text NOT NULL,
  team_id        text NOT NULL,
  agent_id       text,
  app_id         text,
  session_id     text,
  tool_name      text,
  model          text,
  recorded_at    timestamptz NOT NULL,
  currency       text NOT NULL,
  price_nano     bigint NOT NULL,
  cogs_nano      bigint NOT NULL,
  -- price_nano - cogs_nano; negative when the call cost more than it was billed.
  margin_nano    bigint NOT NULL,
  -- Each part of cogs_nano as nano strings and the rates used: {"cost_model_id", "tool_rate",
  -- "model_rate", "tool_nano", "input_tokens_nano", "output_tokens_nano", "compute_nano"};
  -- without a cost model: {"cost_model_id": null, "reason": "..."} and cogs_nano 0.
  breakdown      jsonb NOT NULL,
  -- The cost model used; null when the tenant had none in the event's currency at its time.
  cost_model_id  text,
  created_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, event_id),
  CHECK (margin_nano = price_nano - cogs_nano)
);
CREATE INDEX cogs_ledger_recorded ON cogs_ledger (tenant_id, recorded_at);
