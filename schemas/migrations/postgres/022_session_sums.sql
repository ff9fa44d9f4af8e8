-- A session's sums grow with every event it ever gets: held as numeric, so no session, however
-- long, can overflow a bigint (and stop session-update on the event that would).
ALTER TABLE mcp_sessions
  ALTER COLUMN input_tokens TYPE numeric,
  ALTER COLUMN output_tokens TYPE numeric,
  ALTER COLUMN duration_ms TYPE numeric,
  ALTER COLUMN cost_nano TYPE numeric;
