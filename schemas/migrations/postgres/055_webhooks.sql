-- Webhooks (Standard Webhooks): endpoints per tenant, the events to send (written in the same
-- transaction as the fact they report), one delivery per event and endpoint (the outbox the
-- delivery workers claim with FOR UPDATE SKIP LOCKED) and the log of every attempt.

CREATE TABLE webhook_endpoints (
  id                 text PRIMARY KEY,
  tenant_id          text NOT NULL REFERENCES tenants(id),
  url                text NOT NULL,
  description        text,
  event_types        text[] NOT NULL,
  status             text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
  disabled_reason    text,
  -- The signing secret, sealed (AES-256-GCM when WEBHOOK_SECRET_KEY is set): it must be read to sign.
  secret_sealed      text NOT NULL,
  secret_prefix      text NOT NULL,
  -- After a rotation with a grace period, deliveries are signed with both secrets until then.
  previous_secret_sealed     text,
  previous_secret_expires_at timestamptz,
  -- The first failure since the last success: the endpoint is disabled when this is too old.
  failing_since      timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id)
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id) WHERE status = 'enabled';

-- One fact to announce. dedupe_key makes a second enqueue of the same fact a no-op, even from
-- concurrent transactions (the unique index serialises them).
CREATE TABLE webhook_events (
  id          text PRIMARY KEY,
  tenant_id   text NOT NULL REFERENCES tenants(id),
  type        text NOT NULL,
  dedupe_key  text NOT NULL,
  -- The body as delivered, byte for byte on every attempt: {"type", "timestamp", "data"}.
  payload     text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, dedupe_key)
);
CREATE INDEX webhook_events_tenant ON webhook_events (tenant_id, created_at);

CREATE TABLE webhook_deliveries (
  id               text PRIMARY KEY,
  tenant_id        text NOT NULL,
  event_id         text NOT NULL REFERENCES webhook_events(id),
  endpoint_id      text NOT NULL REFERENCES webhook_endpoints(id),
  status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
  attempts         integer NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  last_attempt_at  timestamptz,
  last_error       text,
  completed_at     timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (tenant_id, endpoint_id, id);

CREATE TABLE webhook_attempts (
  delivery_id      text NOT NULL REFERENCES webhook_deliveries(id),
  attempt          integer NOT NULL,
  tenant_id        text NOT NULL,
  started_at       timestamptz NOT NULL,
  duration_ms      integer NOT NULL,
  response_status  integer,
  error            text,
  succeeded        boolean NOT NULL,
  PRIMARY KEY (delivery_id, attempt)
);

-- Alert settings of a tenant (absent: the defaults in code).
CREATE TABLE alert_settings (
  tenant_id                     text PRIMARY KEY REFERENCES tenants(id),
  -- Thresholds in basis points of a cap's limit (5000 = 50 %).
  threshold_bps                 integer[] NOT NULL,
  -- Velocity: the last hour's spend above factor x the trailing 7-day hourly average, and at least the minimum.
  velocity_factor_milli         integer NOT NULL,
  velocity_min_nano             bigint NOT NULL,
  -- Session projection: the session's spend rate carried this many seconds ahead.
  projection_horizon_seconds    integer NOT NULL,
  updated_at                    timestamptz NOT NULL DEFAULT now()
);
