-- Sessions: one row per (tenant_id, session_id), kept by the session-update stage from the
-- events:ledgered stream (see stages/session-update). Counters move exactly once per event:
-- they are written in the same transaction as the event's row in session_applied_events.
--
-- status: ACTIVE (events arriving), IDLE (ACTIVE with no event for SESSION_IDLE_SECONDS),
-- PAUSED (session.paused), and the ended states COMPLETED (session.completed), FAILED
-- (session.failed), EXPIRED (no event for SESSION_EXPIRE_SECONDS; set by the sweep).
-- An ended session never reopens: events that arrive later still count toward its totals,
-- and late_events says how many did.
CREATE TABLE mcp_sessions (
  tenant_id      text NOT NULL,
  session_id     text NOT NULL,
  -- Attribution of the first event applied to the session.
  customer_id    text NOT NULL,
  team_id        text NOT NULL,
  agent_id       text,
  app_id         text,
  credential_id  text NOT NULL,
  status         text NOT NULL CHECK (status IN ('ACTIVE', 'IDLE', 'PAUSED', 'COMPLETED', 'FAILED', 'EXPIRED')),
  -- Event times (recorded_timestamp): the earliest and latest of the session's events, whatever their arrival order.
  started_at     timestamptz NOT NULL,
  last_event_at  timestamptz NOT NULL,
  -- COMPLETED/FAILED: the recorded time of the control event; EXPIRED: last_event_at when it expired.
  ended_at       timestamptz,
  -- Every event applied, session control events included.
  events         bigint NOT NULL DEFAULT 0,
  -- Usage events (tool, agent and API invocations) and their sums.
  tool_calls     bigint NOT NULL DEFAULT 0,
  input_tokens   bigint NOT NULL DEFAULT 0,
  output_tokens  bigint NOT NULL DEFAULT 0,
  -- Sum of the invocations' execution_duration_ms (wall-clock span: last_event_at - started_at).
  duration_ms    bigint NOT NULL DEFAULT 0,
  -- Usage events whose execution_status is not SUCCESS.
  errors         bigint NOT NULL DEFAULT 0,
  -- Sum of the priced cost of every event of the session (the ledger's cost_nano).
  cost_nano      bigint NOT NULL DEFAULT 0,
  -- Events applied after the session had ended (counted in the totals above all the same).
  late_events    bigint NOT NULL DEFAULT 0,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, session_id)
);
-- The sweep's work list: open sessions by last activity.
CREATE INDEX mcp_sessions_open ON mcp_sessions (last_event_at) WHERE status IN ('ACTIVE', 'IDLE', 'PAUSED');
CREATE INDEX mcp_sessions_agent ON mcp_sessions (tenant_id, agent_id, started_at);
CREATE INDEX mcp_sessions_customer ON mcp_sessions (tenant_id, customer_id, started_at);

-- The events session-update has applied. A redelivered entry finds its row here and moves
-- nothing. Rows older than a day are pruned by the sweep (a redelivery only happens while
-- the entry is pending in the stream).
CREATE TABLE session_applied_events (
  tenant_id   text NOT NULL,
  event_id    text NOT NULL,
  applied_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX session_applied_events_applied_at ON session_applied_events USING brin (applied_at);
