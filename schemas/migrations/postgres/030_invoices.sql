-- invoice-rollup: per subscription and billing period, the additive usage rows the rating
-- engine defines (domain/rating/usage-rows.ts), kept exactly once per event.
CREATE FUNCTION add_counters(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT coalesce(jsonb_object_agg(k, ((coalesce(a ->> k, '0'))::numeric + (coalesce(b ->> k, '0'))::numeric)::text), '{}'::jsonb)
  FROM (SELECT jsonb_object_keys(a) AS k UNION SELECT jsonb_object_keys(b)) AS names
$$;

-- Counters are integers kept as decimal strings in jsonb: {"calls": "12", "billable_nano": "3400000"}.
CREATE TABLE invoice_usage (
  tenant_id       text NOT NULL,
  subscription_id text NOT NULL,
  period_start    timestamptz NOT NULL,
  kind            text NOT NULL,
  key             text NOT NULL,
  counters        jsonb NOT NULL,
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, subscription_id, period_start, kind, key)
);

-- The position of the next event: calls already counted in the period, and in each session.
CREATE TABLE invoice_period_calls (
  tenant_id       text NOT NULL,
  subscription_id text NOT NULL,
  period_start    timestamptz NOT NULL,
  calls           bigint NOT NULL DEFAULT 0,
  cost_nano       numeric NOT NULL DEFAULT 0,
  events          bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, subscription_id, period_start)
);

CREATE TABLE invoice_session_calls (
  tenant_id       text NOT NULL,
  subscription_id text NOT NULL,
  session_id      text NOT NULL,
  calls           bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, subscription_id, session_id)
);

-- Events already applied (pruned after a day: a redelivery only happens while an entry is pending).
CREATE TABLE invoice_applied (
  tenant_id  text NOT NULL,
  event_id   text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX invoice_applied_at ON invoice_applied (applied_at);
