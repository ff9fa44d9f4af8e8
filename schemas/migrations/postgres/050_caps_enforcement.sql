-- Caps on every scope a caller has (API key or client, app, agent, team, customer, session),
-- and pauses that are lifted on the record: by whom or what, and why.
ALTER TABLE spend_caps DROP CONSTRAINT IF EXISTS spend_caps_scope_kind_check;
ALTER TABLE spend_caps ADD CONSTRAINT spend_caps_scope_kind_check
  CHECK (scope_kind IN ('api_key', 'app', 'agent', 'team', 'customer', 'session'));

-- The customer a pause belongs to (its flag lives in that customer's Redis partition), and
-- when its period ends: a pause not lifted by then is recorded as lifted by the roll-over.
ALTER TABLE cap_pauses ADD COLUMN customer_id text;
ALTER TABLE cap_pauses ADD COLUMN period_ends_at timestamptz;
-- admin (the lift route or the console), cap_raised, cap_disabled, period_rollover.
ALTER TABLE cap_pauses ADD COLUMN lifted_by text;
ALTER TABLE cap_pauses ADD COLUMN lift_reason text;
ALTER TABLE cap_pauses ADD CONSTRAINT cap_pauses_lifted_by_check
  CHECK (lifted_by IS NULL OR lifted_by IN ('admin', 'cap_raised', 'cap_disabled', 'period_rollover'));
CREATE INDEX cap_pauses_period_end ON cap_pauses (period_ends_at) WHERE lifted_at IS NULL;
CREATE INDEX cap_pauses_cap ON cap_pauses (tenant_id, cap_id) WHERE lifted_at IS NULL;

-- Every pause and every lift, in order: cap_pauses holds one row per (cap, scope, period), which a
-- pause after a lift in the same period (a raised cap crossed again) reopens; this log keeps both.
CREATE TABLE cap_pause_log (
  id          bigserial PRIMARY KEY,
  tenant_id   text NOT NULL,
  cap_id      text NOT NULL,
  scope_kind  text NOT NULL,
  scope_id    text NOT NULL,
  period_key  text NOT NULL,
  kind        text NOT NULL CHECK (kind IN ('paused', 'lifted')),
  at          timestamptz NOT NULL,
  event_id    text,
  lifted_by   text,
  reason      text
);
CREATE INDEX cap_pause_log_scope ON cap_pause_log (tenant_id, scope_kind, scope_id, at);
